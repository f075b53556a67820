#!/usr/bin/env bash
# scripts/demo.sh — watch each locking pattern at work across real processes.
#
# Installs what is missing, builds build/ (the `dlock` tool and the examples),
# starts a private redis-server on a free loopback port (never 6379, no
# persistence, in a temporary directory; stopped on exit, failure or Ctrl-C),
# then shows the patterns one after the other, each with several processes
# (mutex, try-lock and timeout, a killed holder, fencing tokens, semaphore,
# multi-lock, read-write, leader election, several permits and nested runs,
# latch and barrier, rate limiter, monitoring), and says briefly what
# happened. It narrates; it does not test: the same
# programs and commands are checked, with their invariants, by the test suite
# (tests/test_examples.c, tests/test_cli*.c; run scripts/test.sh). About 20 s.
#
# The `sh -c '...'` scripts below expand their variables in the child shell:
# shellcheck disable=SC2016

# shellcheck source=SCRIPTDIR/common.sh disable=SC1091
source "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

BUILD=build
DLOCK=$BUILD/dlock
EX=$BUILD/examples
TMP=$(mktemp -d "${TMPDIR:-/tmp}/dlock-demo.XXXXXX")
trap 'dlock_stop_all; rm -rf -- "$TMP"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
unset DLOCK_PASSWORD DLOCK_PREFIX DLOCK_ID # not the caller's settings

say() { printf '\n== %s\n' "$*"; }          # a pattern
tell() { printf '   %s\n' "$*"; }           # what happened
indent() { sed 's/^/     | /'; }             # a program's own words
ms_since() { echo $(((${EPOCHREALTIME/[.,]/} - $1) / 1000)); }
now_us() { echo "${EPOCHREALTIME/[.,]/}"; }

printf 'building %s/ (log in %s/build.log) ...\n' "$BUILD" "$TMP"
if ! { dlock_configure "$BUILD" -DDLOCK_BUILD_EXAMPLES=ON &&
       dlock_compile "$BUILD" dlock_cli example_mutex_counter example_semaphore \
           example_transfer example_rwlock example_leader; } >"$TMP/build.log" 2>&1; then
    cat "$TMP/build.log"
    dlock_die "the build failed (output above)"
fi
dlock_redis_start "$TMP"
export DLOCK_URL=redis://127.0.0.1:$DLOCK_REDIS_PORT
printf 'private redis-server on 127.0.0.1:%s; DLOCK_URL=%s\n' "$DLOCK_REDIS_PORT" "$DLOCK_URL"

# ---------------------------------------------------------------------------
say "mutex: 6 processes add 50 each to one counter file, each step under the lock"
for i in 1 2 3 4 5 6; do dlock_bg "$TMP/mutex.$i" "$EX/mutex_counter" - "$TMP/counter" 50; done
wait "${DLOCK_BG_PIDS[@]}"
tell "counter = $(cat "$TMP/counter") (6 x 50: no increment lost)"

# ---------------------------------------------------------------------------
say "try-lock and timeout: A holds job:7; B asks without waiting, then waits 500ms"
dlock_bg "$TMP/a.out" "$DLOCK" --id A run --ttl 2s job:7 -- \
    sh -c 'touch "$1"; exec sleep 60' sh "$TMP/a.in"
A=$DLOCK_BG_PID
dlock_wait_for 10 test -e "$TMP/a.in"
rc=0; "$DLOCK" --id B run --no-wait job:7 -- true 2>"$TMP/b.err" || rc=$?
tell "B --no-wait: exit $rc, and says:"; indent <"$TMP/b.err"
rc=0; "$DLOCK" --id B run --wait 500ms job:7 -- true 2>"$TMP/b.err" || rc=$?
tell "B --wait 500ms: exit $rc, and says:"; indent <"$TMP/b.err"
tell "dlock status job:7:"; "$DLOCK" status job:7 | indent

# ---------------------------------------------------------------------------
say "a killed holder: A's dlock gets SIGKILL; its lock (TTL 2s) frees itself"
{ kill -KILL "$A" && wait "$A"; } 2>/dev/null || true # (bash's "Killed" notice: not shown)
t0=$(now_us)
"$DLOCK" --id C run --wait 10s job:7 -- sh -c 'echo "C runs, fencing token $DLOCK_FENCING_TOKEN"' | indent
tell "C waited $(ms_since "$t0") ms for job:7; A's CMD died with A (PR_SET_PDEATHSIG)"

# ---------------------------------------------------------------------------
say "fencing tokens: every holder gets a larger one, even after the data is lost"
token() { "$DLOCK" run fence:demo -- sh -c 'printf "%s" "$DLOCK_FENCING_TOKEN"'; }
t1=$(token) t2=$(token) t3=$(token)
tell "three holders in turn: $t1, $t2, $t3"
redis-cli -p "$DLOCK_REDIS_PORT" flushall >/dev/null
tell "after FLUSHALL (every lock key gone): $(token)"

# ---------------------------------------------------------------------------
say "semaphore: 8 workers (examples/semaphore), at most 3 at once"
for i in 1 2 3 4 5 6 7 8; do dlock_bg "$TMP/sem.$i" "$EX/semaphore" - sem:demo 3 "$TMP/sem.state" 200; done
wait "${DLOCK_BG_PIDS[@]}"
read -r _ max <"$TMP/sem.state"
tell "most workers inside at once: $max (limit 3); through the CLI, \`dlock run --limit 3\`:"
for i in 1 2 3 4; do
    dlock_bg "$TMP/lim.$i" "$DLOCK" run --limit 3 gpu -- sh -c 'echo "$DLOCK_SLOT"; sleep 0.3'
done
wait "${DLOCK_BG_PIDS[@]}"
tell "four runs got the slots $(cat "$TMP"/lim.* | tr '\n' ' ')(DLOCK_SLOT: which resource is theirs)"

# ---------------------------------------------------------------------------
say "multi-lock: 4 processes move money A<->B, two locking A+B, two B+A"
mkdir "$TMP/bank" && echo 100 >"$TMP/bank/A" && echo 100 >"$TMP/bank/B"
for d in a2b b2a a2b b2a; do dlock_bg "$TMP/xfer.$RANDOM" "$EX/transfer" - "$TMP/bank" 10 "$d"; done
wait "${DLOCK_BG_PIDS[@]}"
cat "$TMP"/xfer.* | indent
tell "no deadlock; A=$(cat "$TMP/bank/A") B=$(cat "$TMP/bank/B") (together still 200)"

# ---------------------------------------------------------------------------
say "read-write: 3 readers share doc; a writer waits for them, then is alone"
for i in 1 2 3; do dlock_bg "$TMP/rw.r$i" "$EX/rwlock" - doc read "$TMP/rw.state" 300 3; done
dlock_wait_for 10 grep -qs ' 3$' "$TMP/rw.state"
dlock_bg "$TMP/rw.w" "$EX/rwlock" - doc write "$TMP/rw.state" 100
wait "${DLOCK_BG_PIDS[@]}"
cat "$TMP"/rw.r* "$TMP/rw.w" | indent

# ---------------------------------------------------------------------------
say "leader election: 3 candidates (examples/leader); each leads 600 ms, then resigns"
for i in 1 2 3; do dlock_bg "$TMP/lead.$i" "$EX/leader" - svc:demo 600 2000; done
dlock_wait_for 10 grep -q elected "$TMP"/lead.1 "$TMP"/lead.2 "$TMP"/lead.3
tell "dlock leader svc:demo: $("$DLOCK" leader svc:demo)"
wait "${DLOCK_BG_PIDS[@]}"
grep -h '^elected' "$TMP"/lead.* | sort -t= -k2 -n | cut -d' ' -f1-3 | indent
rc=0; "$DLOCK" -q leader svc:demo || rc=$?
tell "terms grow with each leader; now nobody leads (dlock leader exits $rc)"

# ---------------------------------------------------------------------------
say "several permits, nested runs: --limit 4 --permits 3; a run inside a run of the same key"
"$DLOCK" run --limit 4 --permits 3 permits:demo -- \
    sh -c 'echo "holds DLOCK_PERMITS=$DLOCK_PERMITS permits from slot $DLOCK_SLOT"' | indent
"$DLOCK" run nest:demo -- sh -c '"$1" run nest:demo -- sh -c "echo inner run, token \$DLOCK_FENCING_TOKEN"
    echo "outer run, token $DLOCK_FENCING_TOKEN"' sh "$DLOCK" | indent
tell "the inner run went ahead at once under the outer hold (like flock on an inherited lock)"

# ---------------------------------------------------------------------------
say "latch and barrier: a waiter goes on after 3 count-downs; 4 processes meet"
"$DLOCK" latch init --ttl 1m latch:demo 3
dlock_bg "$TMP/latch.wait" sh -c '"$1" latch wait --wait 20s latch:demo && echo "the waiter went on"' sh "$DLOCK"
for i in 1 2 3; do
    "$DLOCK" latch down latch:demo | sed 's/^/count-down: /' | indent
done
wait "${DLOCK_BG_PIDS[@]}"
indent <"$TMP/latch.wait"
for i in 1 2 3 4; do
    dlock_bg "$TMP/barrier.$i" sh -c 'sleep 0.$1; "$2" barrier --wait 20s barrier:demo 4 && echo "party $1 went on"' \
        sh "$i" "$DLOCK"
done
wait "${DLOCK_BG_PIDS[@]}"
tell "four parties arriving 0.1 s apart left the barrier together: $(cat "$TMP"/barrier.* | wc -l) of 4"

# ---------------------------------------------------------------------------
say "rate limiter: 12 runs of \`dlock run --rate 5/1s\` at once"
t0=$(now_us)
for i in $(seq 12); do
    dlock_bg "$TMP/rate.$i" "$DLOCK" run --rate 5/1s rate:demo -- true
done
wait "${DLOCK_BG_PIDS[@]}"
tell "they started over $(ms_since "$t0") ms: 5 at once (the burst), then 5 a second"
rc=0; "$DLOCK" run --no-wait --rate 5/1s rate:demo -- true 2>/dev/null || rc=$?
tell "one more with --no-wait, over the rate: exit $rc"

# ---------------------------------------------------------------------------
say "monitoring: two runs hold permits of pool:mon; who holds what"
for w in mon-1 mon-2; do
    dlock_bg "$TMP/$w" "$DLOCK" --id "$w" run --limit 3 pool:mon -- sh -c 'touch "$1"; exec sleep 60' sh "$TMP/$w.in"
done
dlock_wait_for 10 test -e "$TMP/mon-1.in" -a -e "$TMP/mon-2.in"
tell "dlock status pool:mon:"; "$DLOCK" status pool:mon | indent
tell "dlock metrics 'pool:*' (samples only):"
"$DLOCK" metrics 'pool:*' | grep -v '^#' | grep 'pool:mon' | indent
dlock_stop_all

printf '\ndone in %ds. The test suite checks all of this: scripts/test.sh\n' "$SECONDS"
