#!/usr/bin/env bash
# scripts/demo.sh — see the locking patterns work, across real processes.
#
# Installs what is missing, builds build/ (the `dlock` tool and the examples),
# starts a private redis-server on a free loopback port (never 6379; no
# persistence; in a temporary directory; stopped on exit, failure or Ctrl-C),
# then runs each pattern with several processes and prints one line per
# pattern saying what it proved. Every line is checked: if what happened is
# not what should have, the line says FAIL and the script exits non-zero.
#
# The `sh -c '...'` scripts below expand their variables in the child shell:
# shellcheck disable=SC2016

# shellcheck source=SCRIPTDIR/common.sh disable=SC1091
source "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

BUILD=build
DLOCK=$BUILD/dlock
EX=$BUILD/examples
TMP=$(mktemp -d "${TMPDIR:-/tmp}/dlock-demo.XXXXXX")
REDIS_PID=""
BG_PIDS=()        # background processes to stop on exit
CHECKS=0
START=$SECONDS

# The demo must not pick up the caller's settings.
unset DLOCK_PASSWORD DLOCK_PREFIX DLOCK_ID

# stop PID...: SIGTERM, then SIGKILL whatever is still there after 5 s.
stop() {
    local pid i
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "$@"; do
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

cleanup() {
    local rc=$?
    trap - EXIT
    trap '' INT TERM    # finish cleaning up even if signalled again
    [ "${#BG_PIDS[@]}" -eq 0 ] || stop "${BG_PIDS[@]}"
    [ -z "$REDIS_PID" ] || stop "$REDIS_PID"
    rm -rf -- "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ok() { CHECKS=$((CHECKS + 1)); printf '%s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*"; exit 1; }
indent() { sed 's/^/    /'; }
now_ms() { local t=${EPOCHREALTIME//[.,]/}; echo $((t / 1000)); }

# wait_for_file FILE PID: until FILE exists (10 s at most, and only while PID lives).
wait_for_file() {
    local i
    for ((i = 0; i < 100; i++)); do
        [ -s "$1" ] && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# ---- build ------------------------------------------------------------------
printf 'building %s/ (log in %s/build.log) ...\n' "$BUILD" "$TMP"
if ! { dlock_configure "$BUILD" -DDLOCK_BUILD_EXAMPLES=ON &&
       dlock_compile "$BUILD" dlock_cli example_mutex_counter example_trylock \
           example_timeout example_with_fn; } >"$TMP/build.log" 2>&1; then
    cat "$TMP/build.log"
    fail "build: the build failed (output above)"
fi

# ---- a private redis-server --------------------------------------------------
# A random port in 20000-52767; skip any that answers a connect, and retry if
# the server could not bind it (someone took it in between).
PORT=""
for ((try = 0; try < 20; try++)); do
    port=$((20000 + RANDOM))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$TMP" --logfile "$TMP/redis.log" --daemonize no &
    REDIS_PID=$!
    for ((i = 0; i < 50; i++)); do
        if [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ]; then
            PORT=$port
            break 2
        fi
        kill -0 "$REDIS_PID" 2>/dev/null || break
        sleep 0.1
    done
    stop "$REDIS_PID"
    REDIS_PID=""
done
[ -n "$PORT" ] || fail "redis: could not start a private redis-server ($(tail -n 3 "$TMP/redis.log" 2>/dev/null))"
URL="redis://127.0.0.1:$PORT"
export DLOCK_URL=$URL
printf 'private redis-server on 127.0.0.1:%s (pid %s)\n\n' "$PORT" "$REDIS_PID"

# Every command below is bounded, so a broken build cannot hang the demo.
# --foreground keeps it in our process group, so Ctrl-C reaches it at once.
T=(timeout --foreground --kill-after=5 30)

# ---- mutex: 6 processes x 50 read-modify-write increments -------------------
COUNTER=$TMP/counter
pids=()
for ((i = 0; i < 6; i++)); do
    "${T[@]}" "$EX/mutex_counter" "$URL" "$COUNTER" 50 &
    pids+=("$!")
    BG_PIDS+=("$!")
done
bad=0
for pid in "${pids[@]}"; do wait "$pid" || bad=$((bad + 1)); done
value=$(cat "$COUNTER" 2>/dev/null || echo none)
[ "$bad" -eq 0 ] || fail "mutex: $bad of 6 mutex_counter processes failed (counter = $value)"
[ "$value" = 300 ] || fail "mutex: counter = $value (expected 300)"
ok "mutex:    6 processes x 50 increments under the lock, counter = $value (expected 300)"

# ---- A holds job:7 for the next patterns ------------------------------------
# A's command writes its fencing token, then waits until we create a.release.
"${T[@]}" "$DLOCK" -u "$URL" --id demo-A run job:7 -- sh -c '
    printf "%s\n" "$DLOCK_FENCING_TOKEN" >"$1"
    i=0; while [ ! -e "$2" ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i + 1)); done
' sh "$TMP/a.held" "$TMP/a.release" 2>"$TMP/a.err" &
A_PID=$!
BG_PIDS+=("$A_PID")
wait_for_file "$TMP/a.held" "$A_PID" || fail "holder A: \`dlock run job:7\` did not start its command"
A_TOKEN=$(cat "$TMP/a.held")

# ---- try-lock: busy is an answer ---------------------------------------------
rc=0
"${T[@]}" "$DLOCK" -u "$URL" --id demo-B run --no-wait job:7 -- touch "$TMP/b.ran" 2>"$TMP/b.err" || rc=$?
[ "$rc" -eq 75 ] || fail "try-lock: B's --no-wait attempt exited $rc (expected 75): $(cat "$TMP/b.err")"
[ ! -e "$TMP/b.ran" ] || fail "try-lock: B's command ran although A holds job:7"
ok "try-lock: while A holds job:7, B's --no-wait attempt exits 75 (busy) and does not run"

rc=0
out=$("${T[@]}" "$EX/trylock" "$URL" job:7) || rc=$?
{ [ "$rc" -eq 75 ] && grep -q busy <<<"$out"; } ||
    fail "try-lock: examples/trylock exited $rc saying '$out' (expected 75, busy)"
ok "try-lock: examples/trylock says \"$out\", exit 75"

# ---- timeout: wait at most 500 ms --------------------------------------------
rc=0
t0=$(now_ms)
"${T[@]}" "$DLOCK" -u "$URL" --id demo-B run --wait 500ms job:7 -- touch "$TMP/b.ran" 2>"$TMP/b.err" || rc=$?
ms=$(($(now_ms) - t0))
secs=$(printf '%d.%02d' $((ms / 1000)) $((ms % 1000 / 10)))
[ "$rc" -eq 75 ] || fail "timeout: B's --wait 500ms attempt exited $rc (expected 75): $(cat "$TMP/b.err")"
[ ! -e "$TMP/b.ran" ] || fail "timeout: B's command ran although A holds job:7"
{ [ "$ms" -ge 450 ] && [ "$ms" -le 3000 ]; } ||
    fail "timeout: B gave up after ${secs}s (expected about 0.5s)"
ok "timeout:  B waited --wait 500ms and gave up with exit 75 after ${secs}s"

rc=0
out=$("${T[@]}" "$EX/timeout" "$URL" job:7 300) || rc=$?
{ [ "$rc" -eq 75 ] && grep -q 'gave up' <<<"$out"; } ||
    fail "timeout: examples/timeout exited $rc saying '$out' (expected 75, gave up)"
ok "timeout:  examples/timeout says \"$out\", exit 75"

# ---- status while held, then released ----------------------------------------
rc=0
out=$("${T[@]}" "$DLOCK" -u "$URL" status job:7 2>&1) || rc=$?
{ [ "$rc" -eq 0 ] && grep -q demo-A <<<"$out"; } ||
    fail "status: \`dlock status job:7\` exited $rc without naming holder demo-A: $out"
ok "CLI: \`dlock status job:7\` while held:"
indent <<<"$out"

# ---- FIFO: waiters queue behind A and get the lock in arrival order ---------
# Each waiter joins only once the previous one shows in the queue, so the
# arrival order is known; each one's command appends its name to a file.
waiters_now() {
    "${T[@]}" "$DLOCK" -u "$URL" status --json job:7 2>/dev/null |
        sed -n 's/.*"waiters": *\([0-9]*\).*/\1/p' | head -n 1
}
W_PIDS=()
n=0
for w in B C D; do
    "${T[@]}" "$DLOCK" -u "$URL" --id "demo-$w" run --wait 20s job:7 -- \
        sh -c 'printf "%s\n" "$1" >>"$2"' sh "$w" "$TMP/order" 2>>"$TMP/w.err" &
    W_PIDS+=("$!")
    BG_PIDS+=("$!")
    n=$((n + 1))
    for ((i = 0; i < 100; i++)); do
        [ "$(waiters_now)" = "$n" ] && break
        sleep 0.05
    done
    [ "$(waiters_now)" = "$n" ] || fail "fifo: \`dlock status\` does not show $n waiter(s) on job:7"
done

touch "$TMP/a.release"
rc=0
wait "$A_PID" || rc=$?
[ "$rc" -eq 0 ] || fail "holder A: \`dlock run\` exited $rc after its command exited 0 (expected 0): $(cat "$TMP/a.err")"
for pid in "${W_PIDS[@]}"; do
    rc=0
    wait "$pid" || rc=$?
    [ "$rc" -eq 0 ] || fail "fifo: a waiter's \`dlock run --wait 20s\` exited $rc: $(cat "$TMP/w.err")"
done
order=$(tr '\n' ' ' <"$TMP/order")
[ "$order" = "B C D " ] || fail "fifo: waiters ran in the order ${order}(expected B C D)"
ok "fifo:     B, C, D queued behind A (status: waiters 3); when A released, they ran in arrival order: ${order% }"

out=$("${T[@]}" "$DLOCK" -u "$URL" status job:7 2>&1) || fail "status: exited non-zero on a free key: $out"
grep -qi free <<<"$out" || fail "status: job:7 not free after all holders exited: $out"
ok "CLI: every \`dlock run\` exited 0 and released: \`dlock status job:7\` says \"$out\""

# ---- unlock --force: the holder finds out and stops its command ---------------
"${T[@]}" "$DLOCK" -u "$URL" --id demo-E run --ttl 3s job:9 -- sh -c '
    printf "%s\n" "$$" >"$1"; i=0; while [ $i -lt 400 ]; do sleep 0.05; i=$((i + 1)); done
' sh "$TMP/e.held" 2>"$TMP/e.err" &
E_PID=$!
BG_PIDS+=("$E_PID")
wait_for_file "$TMP/e.held" "$E_PID" || fail "holder E: \`dlock run job:9\` did not start its command"
out=$("${T[@]}" "$DLOCK" -u "$URL" unlock --force job:9 2>&1) ||
    fail "unlock: \`dlock unlock --force job:9\` failed: $out"
t0=$(now_ms)
rc=0
wait "$E_PID" || rc=$?
ms=$(($(now_ms) - t0))
[ "$rc" -eq 79 ] || fail "unlock: E's \`dlock run\` exited $rc after its lock was removed (expected 79): $(cat "$TMP/e.err")"
ok "unlock:   \`dlock unlock --force job:9\` removed E's lock; E's renewal noticed, stopped its command and exited 79 after $((ms / 100 / 10)).$((ms / 100 % 10))s; E said:"
indent <"$TMP/e.err"

# ---- fencing tokens ------------------------------------------------------------
token() {
    "${T[@]}" "$DLOCK" -u "$URL" --id "$1" run fence:demo -- sh -c 'printf "%s" "$DLOCK_FENCING_TOKEN"'
}
if ! { t1=$(token holder-1) && t2=$(token holder-2) && t3=$(token holder-3); }; then
    fail "fencing: \`dlock run fence:demo\` failed"
fi
for t in "$t1" "$t2" "$t3" "$A_TOKEN"; do
    [[ $t =~ ^[0-9]+$ ]] || fail "fencing: token '$t' is not a decimal number"
done
{ [ "$t1" -lt "$t2" ] && [ "$t2" -lt "$t3" ]; } || fail "fencing: tokens do not increase: $t1, $t2, $t3"
ok "fencing:  tokens increase across holders: $t1 < $t2 < $t3"

redis-cli -p "$PORT" flushall >/dev/null
t4=$(token holder-4) || fail "fencing: \`dlock run fence:demo\` failed after FLUSHALL"
[ "$t3" -lt "$t4" ] || fail "fencing: after FLUSHALL the token went back: $t3 then $t4"
ok "fencing:  after FLUSHALL (all lock state lost) the next holder still gets a larger token: $t3 < $t4"

# ---- dlock_with and a fenced store ------------------------------------------------
rc=0
out=$("${T[@]}" "$EX/with_fn" "$URL" 42 2>&1) || rc=$?
{ [ "$rc" -eq 0 ] && grep -q refused <<<"$out"; } ||
    fail "dlock_with: examples/with_fn exited $rc: $out"
ok "dlock_with: examples/with_fn charges payment 42 once and refuses a stale token:"
indent <<<"$out"

printf '\nall %d checks passed in %ds\n' "$CHECKS" $((SECONDS - START))
