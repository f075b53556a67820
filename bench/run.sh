#!/usr/bin/env bash
# bench/run.sh — build the benchmark and run it against private redis-servers
# (five, for the Redlock comparison) on free loopback ports, stopped on exit.
# Usage: bench/run.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
dlock_configure build-bench -DCMAKE_BUILD_TYPE=Release -DDLOCK_BUILD_TESTS=OFF >/dev/null
dlock_compile build-bench dlock_bench >/dev/null
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM
ports=()
for i in 1 2 3 4 5; do
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir -p "$tmp/$i"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$tmp/$i" \
    --logfile "$tmp/$i/log" >/dev/null &
  pids+=($!)
  ports+=("$port")
done
for p in "${ports[@]}"; do
  for _ in $(seq 100); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.05; done
done
others=$(IFS=,; echo "${ports[*]:1}")
echo "machine: $(nproc) cores, $(uname -sr), $(redis-server --version | cut -d' ' -f3)"
build-bench/dlock_bench 127.0.0.1 "${ports[0]}" "$@" --redlock "$others"
