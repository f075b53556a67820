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
# The checks assert invariants ("never more than N at once", "each job once",
# "balances unchanged"), never timing luck: where a line says a limit was
# *reached*, the programs wait (bounded) until it was, so a slow or loaded
# machine makes the demo slower, not flaky. About 30 s on a 2-core box.
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

# stop PID...: SIGTERM (and SIGCONT, for a process that stopped itself),
# then SIGKILL whatever is still there after 5 s.
stop() {
    local pid i
    for pid in "$@"; do
        kill -TERM "$pid" 2>/dev/null || true
        kill -CONT "$pid" 2>/dev/null || true
    done
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
now_us() { echo "${EPOCHREALTIME//[.,]/}"; }
secs() { printf '%d.%d' $(($1 / 1000)) $(($1 % 1000 / 100)); } # ms -> "1.2"

# until_true SECONDS CMD...: run CMD every 50 ms until it succeeds (1: never did).
until_true() {
    local i n=$(($1 * 20))
    shift
    for ((i = 0; i < n; i++)); do
        "$@" && return 0
        sleep 0.05
    done
    return 1
}

# spawn OUT CMD...: start CMD in the background (bounded by T), stdout and
# stderr to OUT; its pid joins PIDS (for reap) and BG_PIDS (for cleanup).
PIDS=()
spawn() {
    local out=$1
    shift
    "${T[@]}" "$@" >"$out" 2>&1 &
    PIDS+=("$!")
    BG_PIDS+=("$!")
}

# bg OUT CMD...: like spawn, for a shell function (each command in it is bounded).
bg() {
    local out=$1
    shift
    "$@" >"$out" 2>&1 &
    PIDS+=("$!")
    BG_PIDS+=("$!")
}

# forget PID...: take reaped processes off BG_PIDS, so that cleanup never
# signals a pid that the system has since given to someone else.
forget() {
    local p q
    local -a keep=()
    for p in "${BG_PIDS[@]}"; do
        for q in "$@"; do [ "$p" = "$q" ] && continue 2; done
        keep+=("$p")
    done
    BG_PIDS=("${keep[@]}")
}

# show FILE...: the first lines of FILEs on one line, for a FAIL message.
show() { head -q -n 4 "$@" 2>/dev/null | tr '\n' ' ' || true; }

# reap: wait for everything spawn started; BAD = how many exited non-zero.
reap() {
    local pid
    BAD=0
    for pid in "${PIDS[@]}"; do wait "$pid" || BAD=$((BAD + 1)); done
    forget "${PIDS[@]}"
    PIDS=()
}

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
EXAMPLES=(mutex_counter trylock timeout with_fn semaphore resource_pool transfer rwlock leader
          recipe_payment recipe_inventory recipe_data_sync recipe_scheduled_leader
          recipe_job_claim recipe_rate_limiter)
if ! { dlock_configure "$BUILD" -DDLOCK_BUILD_EXAMPLES=ON &&
       dlock_compile "$BUILD" dlock_cli "${EXAMPLES[@]/#/example_}"; } >"$TMP/build.log" 2>&1; then
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
forget "${pids[@]}"
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
forget "$A_PID"
[ "$rc" -eq 0 ] || fail "holder A: \`dlock run\` exited $rc after its command exited 0 (expected 0): $(cat "$TMP/a.err")"
for pid in "${W_PIDS[@]}"; do
    rc=0
    wait "$pid" || rc=$?
    [ "$rc" -eq 0 ] || fail "fifo: a waiter's \`dlock run --wait 20s\` exited $rc: $(cat "$TMP/w.err")"
done
forget "${W_PIDS[@]}"
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
forget "$E_PID"
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

# =============================================================================
# The other patterns: semaphore, resource pool, multi-lock, read-write,
# leader election, monitoring; then the recipes in examples/recipe_*.c.
# =============================================================================

# ---- semaphore: 12 workers, at most 3 at once ------------------------------------
# Each worker counts itself in sem.state ("now max") while it holds a permit,
# and keeps it until the maximum has reached the limit (10 s at most).
for ((i = 0; i < 12; i++)); do
    spawn "$TMP/sem-out.$i" "$EX/semaphore" "$URL" sem:demo 3 "$TMP/sem.state" 200
done
reap
[ "$BAD" -eq 0 ] || fail "semaphore: $BAD of 12 workers failed: $(show "$TMP"/sem-out.*)"
read -r inside max <"$TMP/sem.state"
{ [ "$max" = 3 ] && [ "$inside" = 0 ]; } ||
    fail "semaphore: at most $max workers held a permit at once (limit 3, expected exactly 3)"
ok "semaphore: 12 workers (examples/semaphore), limit 3: max concurrent observed $max, never more"

# ---- resource pool: a semaphore of 4 whose slot names the GPU -----------------------
mkdir "$TMP/pool"
for ((i = 0; i < 8; i++)); do
    spawn "$TMP/pool-out.$i" "$EX/resource_pool" "$URL" gpus "$TMP/pool" 4 200
done
reap
[ "$BAD" -eq 0 ] || fail "resource pool: $BAD of 8 workers failed: $(show "$TMP"/pool-out.*)"
used=$(sed -n 's/^worker [0-9]*: using \(gpu[0-9]*\) .*/\1/p' "$TMP"/pool-out.* | sort | uniq -c |
    awk '{ printf "%s%s x%d", sep, $2, $1; sep = ", " }')
[ "$(grep -h -c '^worker .* using gpu[0-3] ' "$TMP"/pool-out.* | awk '{ s += $1 } END { print s }')" = 8 ] ||
    fail "resource pool: not every worker used one of gpu0..gpu3: $(show "$TMP"/pool-out.*)"
[ -e "$TMP/pool/all-busy" ] || fail "resource pool: gpu0..gpu3 were never all in use at once"
ok "resource pool: 8 workers (examples/resource_pool) over gpu0..gpu3, never two on one GPU, all four busy at once ($used)"

# The same through the CLI: DLOCK_SLOT names the GPU; mkdir fails if it is taken.
mkdir "$TMP/gpus"
for ((i = 0; i < 8; i++)); do
    spawn "$TMP/gpu-out.$i" "$DLOCK" -u "$URL" run --limit 4 --ttl 10s gpu -- sh -c '
        mkdir "$1/gpu$DLOCK_SLOT" 2>/dev/null || { echo "CONFLICT on gpu$DLOCK_SLOT"; exit 99; }
        ls "$1" | wc -l >>"$1.inuse"
        echo "gpu$DLOCK_SLOT"
        sleep 0.2
        rmdir "$1/gpu$DLOCK_SLOT"' sh "$TMP/gpus"
done
reap
[ "$BAD" -eq 0 ] || fail "resource pool (CLI): $BAD of 8 \`dlock run --limit 4\` failed: $(show "$TMP"/gpu-out.*)"
slots=$(grep -h -x 'gpu[0-9]*' "$TMP"/gpu-out.* | sort -u | paste -s -d ' ')
most=$(sort -n "$TMP/gpus.inuse" | tail -n 1)
[ "$(grep -h -c -x 'gpu[0-3]' "$TMP"/gpu-out.* | awk '{ s += $1 } END { print s }')" = 8 ] ||
    fail "resource pool (CLI): DLOCK_SLOT outside 0..3: $(show "$TMP"/gpu-out.*)"
[ "$most" -le 4 ] || fail "resource pool (CLI): $most GPUs in use at once (limit 4)"
ok "resource pool (CLI): 8 x \`dlock run --limit 4 gpu\`: DLOCK_SLOT picked $slots, never two on one, at most $most at once"

# ---- multi-lock: transfers in opposite lock orders -----------------------------------
mkdir "$TMP/bank"
echo 1000 >"$TMP/bank/A"
echo 1000 >"$TMP/bank/B"
for ((i = 0; i < 3; i++)); do
    spawn "$TMP/xfer-out.a$i" "$EX/transfer" "$URL" "$TMP/bank" 20 a2b
    spawn "$TMP/xfer-out.b$i" "$EX/transfer" "$URL" "$TMP/bank" 20 b2a
done
reap
[ "$BAD" -eq 0 ] || fail "multi-lock: $BAD of 6 transfer processes failed (a deadlock shows as a timeout): $(show "$TMP"/xfer-out.*)"
net=$(sed -n 's/.*net moved A->B: \(-*[0-9]*\)$/\1/p' "$TMP"/xfer-out.* | awk '{ s += $1 } END { print s + 0 }')
done_n=$(sed -n 's/^transfer [0-9]*: \([0-9]*\) transfers.*/\1/p' "$TMP"/xfer-out.* | awk '{ s += $1 } END { print s + 0 }')
a=$(cat "$TMP/bank/A")
b=$(cat "$TMP/bank/B")
[ "$done_n" = 120 ] || fail "multi-lock: $done_n transfers done (expected 120)"
{ [ "$a" -eq $((1000 - net)) ] && [ "$b" -eq $((1000 + net)) ]; } ||
    fail "multi-lock: A=$a B=$b, but the transfers moved $net from A to B (expected A=$((1000 - net)) B=$((1000 + net)))"
ok "multi-lock: 6 processes x 20 transfers (examples/transfer), 3 locking A+B and 3 B+A: no deadlock, A=$a B=$b match the transfers, total $((a + b)) unchanged"

# The same through the CLI: `dlock run KEY1 KEY2` in both orders.
mkdir "$TMP/bank2"
echo 100 >"$TMP/bank2/A"
echo 100 >"$TMP/bank2/B"
cat >"$TMP/move.sh" <<'EOF'
# move.sh DIR FROM TO: move 1 from account FROM to account TO (read, pause, write)
from=$(cat "$1/$2"); to=$(cat "$1/$3"); sleep 0.01
echo $((from - 1)) >"$1/$2"; echo $((to + 1)) >"$1/$3"
EOF
cli_transfers() { # FROM TO KEY1 KEY2: five transfers, each under `dlock run KEY1 KEY2`
    local k
    for ((k = 0; k < 5; k++)); do
        "${T[@]}" "$DLOCK" -u "$URL" run --wait 20s "$3" "$4" -- sh "$TMP/move.sh" "$TMP/bank2" "$1" "$2" ||
            return 1
    done
}
for ((i = 0; i < 2; i++)); do
    bg "$TMP/cli-xfer.a$i" cli_transfers A B 'acct:{bank2}:A' 'acct:{bank2}:B'
    bg "$TMP/cli-xfer.b$i" cli_transfers B A 'acct:{bank2}:B' 'acct:{bank2}:A'
done
reap
[ "$BAD" -eq 0 ] || fail "multi-lock (CLI): $BAD of 4 loops of \`dlock run KEY1 KEY2\` failed: $(show "$TMP"/cli-xfer.*)"
a=$(cat "$TMP/bank2/A")
b=$(cat "$TMP/bank2/B")
{ [ "$a" = 100 ] && [ "$b" = 100 ]; } || fail "multi-lock (CLI): A=$a B=$b after 10 moves each way (expected 100 and 100)"
ok "multi-lock (CLI): 20 x \`dlock run 'acct:{bank2}:A' 'acct:{bank2}:B'\`, half with the keys reversed: no deadlock, A=$a B=$b as expected"

# ---- read-write: readers together, writers alone -----------------------------------------
# Four readers stay until all four were in at once; only then do the writers
# (and two more readers) arrive, so the writers must wait for the readers.
rw_max_readers_is() { awk -v n="$1" '$3 == n { f = 1 } END { exit !f }' "$TMP/rw.state" 2>/dev/null; }
for ((i = 0; i < 4; i++)); do
    spawn "$TMP/rw-out.r$i" "$EX/rwlock" "$URL" catalog read "$TMP/rw.state" 200 4
done
until_true 15 rw_max_readers_is 4 || fail "read-write: four readers were never inside together: $(show "$TMP"/rw-out.*)"
for ((i = 0; i < 2; i++)); do
    spawn "$TMP/rw-out.w$i" "$EX/rwlock" "$URL" catalog write "$TMP/rw.state" 100
    spawn "$TMP/rw-out.s$i" "$EX/rwlock" "$URL" catalog read "$TMP/rw.state" 100
done
reap
[ "$BAD" -eq 0 ] || fail "read-write: $BAD of 8 runs failed (a reader beside a writer, or a writer not alone): $(show "$TMP"/rw-out.*)"
read -r readers writers maxr <"$TMP/rw.state"
{ [ "$readers" = 0 ] && [ "$writers" = 0 ] && [ "$maxr" -ge 4 ]; } ||
    fail "read-write: state '$readers $writers $maxr' at the end (expected 0 readers, 0 writers, 4 or more readers at once)"
[ "$(grep -h -c '^writer .* with 0 reader(s) and 1 writer(s)' "$TMP"/rw-out.* | awk '{ s += $1 } END { print s }')" = 2 ] ||
    fail "read-write: a writer was not alone: $(show "$TMP"/rw-out.w*)"
ok "read-write: examples/rwlock: max concurrent readers $maxr, the 2 writers each alone, no reader beside a writer"

# The same through the CLI: `dlock run --shared` readers, a plain `dlock run` writer.
mkdir "$TMP/doc"
for ((i = 0; i < 3; i++)); do
    spawn "$TMP/doc-out.r$i" "$DLOCK" -u "$URL" run --shared doc -- sh -c '
        touch "$1/r.$$"; [ ! -e "$1/w" ] || echo "VIOLATION: reader beside a writer"
        i=0
        while [ ! -e "$1.all" ] && [ $i -lt 200 ]; do
            [ "$(ls "$1" | grep -c "^r\.")" -lt 3 ] || touch "$1.all"
            sleep 0.05; i=$((i + 1))
        done
        rm "$1/r.$$"' sh "$TMP/doc"
done
until_true 15 test -e "$TMP/doc.all" || fail "read-write (CLI): three --shared runs were never inside together"
spawn "$TMP/doc-out.w" "$DLOCK" -u "$URL" run doc -- sh -c '
    if ls "$1" | grep -q "^r\."; then echo "VIOLATION: writer beside a reader"; fi
    touch "$1/w"; sleep 0.1; rm "$1/w"; echo "writer done"' sh "$TMP/doc"
reap
[ "$BAD" -eq 0 ] || fail "read-write (CLI): $BAD runs failed: $(show "$TMP"/doc-out.*)"
! grep -q VIOLATION "$TMP"/doc-out.* || fail "read-write (CLI): $(grep -h VIOLATION "$TMP"/doc-out.* | head -n 1)"
grep -q 'writer done' "$TMP/doc-out.w" || fail "read-write (CLI): the writer did not run"
ok "read-write (CLI): 3 x \`dlock run --shared doc\` were inside together; \`dlock run doc\` (the writer) waited for them and ran alone"

# ---- leader election: one leader at a time; a killed leader is replaced -------------------
# Candidate 1 leads for 30 s unless killed; 2 and 3 join, then 1 gets SIGKILL
# (no resignation: its leadership must expire). 2 and 3 lead 1 s each and resign.
LTTL=2000
# (through a function, so that bash's "Killed" notice goes to leader.1, not the terminal)
candidate() { "${T[@]}" "$EX/leader" "$URL" svc:demo "$@"; }
bg "$TMP/leader.1" candidate 30000 "$LTTL"
until_true 10 grep -q '^elected' "$TMP/leader.1" || fail "leader election: no candidate was elected: $(show "$TMP/leader.1")"
L1_WRAP=${PIDS[0]}
L1=$(sed -n 's/^elected .* pid=\([0-9]*\) .*/\1/p' "$TMP/leader.1")
bg "$TMP/leader.2" candidate 1000 "$LTTL"
bg "$TMP/leader.3" candidate 1000 "$LTTL"
until_true 10 grep -q 'waiting' "$TMP/leader.2" || fail "leader election: candidate 2 did not start: $(show "$TMP/leader.2")"
until_true 10 grep -q 'waiting' "$TMP/leader.3" || fail "leader election: candidate 3 did not start: $(show "$TMP/leader.3")"
kill -KILL "$L1"
t_kill=$(now_us)
rc=0
wait "$L1_WRAP" || rc=$?
forget "$L1_WRAP"
PIDS=("${PIDS[@]:1}")
[ "$rc" -eq 137 ] || fail "leader election: the killed leader's run exited $rc (expected 137)"
reap
[ "$BAD" -eq 0 ] || fail "leader election: candidates 2 or 3 failed: $(show "$TMP/leader.2" "$TMP/leader.3")"
# One line per leader: term, elected at, last work stamp (each stamp was taken
# before the dlock_is_held() check that allowed that work); in term order,
# each leader's last work must come before the next leader's election.
for f in "$TMP"/leader.[123]; do
    awk '/^elected/ { split($2, t, "="); split($5, e, "=") } /^work/ { split($4, w, "=") }
         END { print t[2], e[2], (w[2] == "" ? e[2] : w[2]) }' "$f"
done | sort -n >"$TMP/terms"
[ "$(wc -l <"$TMP/terms")" = 3 ] || fail "leader election: $(wc -l <"$TMP/terms") leaders instead of 3"
overlap=$(awk 'NR > 1 && $2 <= last { print "term " NR " elected before term " NR - 1 " stopped" } { last = $3 }' "$TMP/terms")
[ -z "$overlap" ] || fail "leader election: two leaders at once: $overlap"
first=$(awk 'NR == 2 { print $2 }' "$TMP/terms")
took=$(((first - t_kill) / 1000))
[ "$(awk 'NR == 1 { print $2 }' "$TMP/terms")" = "$(sed -n 's/^elected .* t_us=\([0-9]*\)$/\1/p' "$TMP/leader.1")" ] ||
    fail "leader election: the first term is not the killed leader's"
[ "$took" -le $((LTTL + 2000)) ] || fail "leader election: the killed leader was replaced only after $(secs "$took")s (ttl $(secs "$LTTL")s)"
ok "leader election: 3 candidates (examples/leader), 1 leader at a time, terms increasing; killed leader replaced in $(secs "$took")s (ttl $(secs "$LTTL")s)"

# The CLI: `dlock elect` runs CMD while leader, `dlock leader` says who leads.
elect() { # ID: lead svc:cli while CMD waits for $TMP/ID.stop; the term goes to $TMP/ID.term
    "${T[@]}" "$DLOCK" -u "$URL" --id "$1" elect --ttl 5s svc:cli -- sh -c '
        printf "%s\n" "$DLOCK_FENCING_TOKEN" >"$1.term"
        i=0; while [ ! -e "$1.stop" ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i + 1)); done' sh "$TMP/$1"
}
bg "$TMP/elect-a.out" elect cli-A
until_true 10 test -s "$TMP/cli-A.term" || fail "elect: cli-A was not elected: $(show "$TMP/elect-a.out")"
bg "$TMP/elect-b.out" elect cli-B
lead_a=$("${T[@]}" "$DLOCK" -u "$URL" leader svc:cli) || fail "elect: \`dlock leader svc:cli\` failed: $lead_a"
grep -q "^cli-A .*$(cat "$TMP/cli-A.term")" <<<"$lead_a" || fail "elect: \`dlock leader\` says '$lead_a' (expected cli-A)"
touch "$TMP/cli-A.stop"
until_true 15 test -s "$TMP/cli-B.term" || fail "elect: cli-B did not take over: $(show "$TMP/elect-b.out")"
lead_b=$("${T[@]}" "$DLOCK" -u "$URL" leader svc:cli) || fail "elect: \`dlock leader svc:cli\` failed: $lead_b"
grep -q "^cli-B " <<<"$lead_b" || fail "elect: \`dlock leader\` says '$lead_b' (expected cli-B)"
[ "$(cat "$TMP/cli-A.term")" -lt "$(cat "$TMP/cli-B.term")" ] || fail "elect: the new term is not larger"
touch "$TMP/cli-B.stop"
reap
[ "$BAD" -eq 0 ] || fail "elect: a \`dlock elect\` failed: $(show "$TMP"/elect-*.out)"
rc=0
"${T[@]}" "$DLOCK" -u "$URL" leader svc:cli >/dev/null || rc=$?
[ "$rc" -eq 3 ] || fail "elect: \`dlock leader\` exited $rc with nobody leading (expected 3)"
ok "leader election (CLI): \`dlock elect\`: cli-A led, its CMD ended, cli-B took over with a larger term; \`dlock leader\` said so each time, then exit 3 (no leader):"
printf '%s\n%s\n' "$lead_a" "$lead_b" | indent

# ---- monitoring: who holds what --------------------------------------------------------
for w in mon-1 mon-2; do
    spawn "$TMP/$w.out" "$DLOCK" -u "$URL" --id "$w" run --limit 3 pool:mon -- sh -c '
        touch "$1.in"; i=0; while [ ! -e "$2" ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i + 1)); done
    ' sh "$TMP/$w" "$TMP/mon.release"
done
until_true 10 test -e "$TMP/mon-1.in" -a -e "$TMP/mon-2.in" || fail "monitoring: the two holders did not start"
status=$("${T[@]}" "$DLOCK" -u "$URL" status pool:mon 2>&1) || fail "monitoring: \`dlock status\` failed: $status"
metrics=$("${T[@]}" "$DLOCK" -u "$URL" metrics 'pool:*' 2>&1) || fail "monitoring: \`dlock metrics\` failed: $metrics"
touch "$TMP/mon.release"
reap
{ grep -q mon-1 <<<"$status" && grep -q mon-2 <<<"$status"; } || fail "monitoring: \`dlock status\` does not name both holders: $status"
grep -q '^dlock_semaphore_permits_in_use{key="pool:mon"} 2$' <<<"$metrics" ||
    fail "monitoring: \`dlock metrics\` does not count 2 permits of pool:mon: $metrics"
ok "monitoring: with 2 of 3 permits of pool:mon held, \`dlock status pool:mon\` and \`dlock metrics 'pool:*'\` show them:"
{ printf '%s\n' "$status"; grep 'pool:mon' <<<"$metrics" | grep -v '^#'; } | indent

# =============================================================================
# Recipes
# =============================================================================

# ---- payment: once, with a fenced store -------------------------------------------------
for ((i = 0; i < 5; i++)); do
    spawn "$TMP/pay-out.$i" "$EX/recipe_payment" "$URL" 7 "$TMP/pay7.store"
done
BAD=0
codes=""
for pid in "${PIDS[@]}"; do
    rc=0
    wait "$pid" || rc=$?
    codes+="$rc "
    [ "$rc" -eq 0 ] || [ "$rc" -eq 75 ] || BAD=$((BAD + 1))
done
forget "${PIDS[@]}"
PIDS=()
[ "$BAD" -eq 0 ] || fail "payment: worker exit codes $codes(expected 0 or 75): $(show "$TMP"/pay-out.*)"
# (grep -c exits 1 when a file has no match: the pipeline must not stop the demo)
paid=$(cat "$TMP"/pay-out.* | grep -c 'paid with token' || true)
busy=$(cat "$TMP"/pay-out.* | grep -c 'busy' || true)
[ "$paid" = 1 ] || fail "payment: payment 7 was paid $paid times (expected once): $(show "$TMP"/pay-out.*)"
ok "payment:  5 workers (examples/recipe_payment) race for payment:7: paid once, $busy answered busy (try-lock), $((4 - busy)) found it already paid"

# A pauses (SIGSTOP) between its lock check and its write, longer than its
# 1.5 s TTL; B takes the lock and pays; A resumes: the store refuses A's token.
spawn "$TMP/pay-a.out" "$EX/recipe_payment" "$URL" 8 "$TMP/pay8.store" 1500 --pause
A_WRAP=${PIDS[0]}
until_true 10 grep -q pausing "$TMP/pay-a.out" || fail "payment: worker A did not reach its pause: $(show "$TMP/pay-a.out")"
A=$(sed -n 's/.*pid \([0-9]*\) pausing.*/\1/p' "$TMP/pay-a.out")
BG_PIDS+=("$A")
is_stopped() { case "$(ps -o stat= -p "$A" 2>/dev/null)" in T*) return 0 ;; *) return 1 ;; esac; }
until_true 10 is_stopped || fail "payment: worker A did not stop itself"
b_pays() {
    local rc=0
    "${T[@]}" "$EX/recipe_payment" "$URL" 8 "$TMP/pay8.store" >"$TMP/pay-b.out" 2>&1 || rc=$?
    [ "$rc" -eq 0 ] || { [ "$rc" -eq 75 ] && return 1; } || fail "payment: worker B exited $rc: $(show "$TMP/pay-b.out")"
}
until_true 15 b_pays || fail "payment: worker B never got payment:8 (A's lock should have expired after 1.5 s)"
grep -q 'paid with token' "$TMP/pay-b.out" || fail "payment: worker B did not pay: $(show "$TMP/pay-b.out")"
kill -CONT "$A"
rc=0
wait "$A_WRAP" || rc=$?
forget "$A_WRAP" "$A"
PIDS=()
[ "$rc" -eq 3 ] || fail "payment: resumed worker A exited $rc (expected 3: refused by the store): $(show "$TMP/pay-a.out")"
refusal=$(grep 'store refused' "$TMP/pay-a.out")
ok "payment:  A paused past its TTL between its check and its write; B paid; A resumed and the fenced store refused it:"
{ grep 'paid with token' "$TMP/pay-b.out" | sed 's/^/B: /'; printf 'A: %s\n' "$refusal"; } | indent

# ---- inventory: never oversell ---------------------------------------------------------------
echo 50 >"$TMP/stock"
for ((i = 0; i < 8; i++)); do
    spawn "$TMP/inv-out.$i" "$EX/recipe_inventory" "$URL" widget-42 "$TMP/stock" 10
done
reap
[ "$BAD" -eq 0 ] || fail "inventory: $BAD of 8 processes failed: $(show "$TMP"/inv-out.*)"
reserved=$(sed -n 's/.*reserved \([0-9]*\),.*/\1/p' "$TMP"/inv-out.* | awk '{ s += $1 } END { print s + 0 }')
refused=$(sed -n 's/.*refused \([0-9]*\) .*/\1/p' "$TMP"/inv-out.* | awk '{ s += $1 } END { print s + 0 }')
left=$(cat "$TMP/stock")
{ [ "$reserved" = 50 ] && [ "$refused" = 30 ] && [ "$left" = 0 ]; } ||
    fail "inventory: reserved $reserved, refused $refused, stock left $left (expected 50, 30, 0)"
ok "inventory: 8 processes x 10 reservations under sku:widget-42 (examples/recipe_inventory), stock 50: reserved $reserved, refused $refused, stock $left, never oversold"

# ---- data sync: a long job under a short, renewed lock; stops when the lock is lost ------------
spawn "$TMP/sync-ok.out" "$EX/recipe_data_sync" "$URL" orders 25 100 1500
SYNC_OK=${PIDS[0]}
spawn "$TMP/sync-lost.out" "$EX/recipe_data_sync" "$URL" users 100 100 1500
SYNC_LOST=${PIDS[1]}
PIDS=()
until_true 10 grep -q 'step 3/' "$TMP/sync-lost.out" || fail "data sync: the users job did not start: $(show "$TMP/sync-lost.out")"
rc=0
out=$("${T[@]}" "$EX/recipe_data_sync" "$URL" users 5 10 2>&1) || rc=$?
[ "$rc" -eq 75 ] || fail "data sync: a second sync of users exited $rc (expected 75, busy): $out"
"${T[@]}" "$DLOCK" -u "$URL" unlock --force sync:users >/dev/null || fail "data sync: \`dlock unlock --force sync:users\` failed"
rc=0
wait "$SYNC_LOST" || rc=$?
[ "$rc" -eq 79 ] || fail "data sync: after its lock was removed the users job exited $rc (expected 79): $(show "$TMP/sync-lost.out")"
rc=0
wait "$SYNC_OK" || rc=$?
forget "$SYNC_OK" "$SYNC_LOST"
[ "$rc" -eq 0 ] || fail "data sync: the orders job exited $rc: $(show "$TMP/sync-ok.out")"
ok "data sync: examples/recipe_data_sync, 1.5 s TTL, auto-renewed; a second copy of a running job answered busy (75);"
{ tail -n 1 "$TMP/sync-ok.out"; tail -n 1 "$TMP/sync-lost.out" | sed 's/$/ (after `dlock unlock --force sync:users`; exit 79)/'; } | indent

# ---- scheduled leader: each cron tick once, by the leader -----------------------------------
for ((i = 0; i < 3; i++)); do
    spawn "$TMP/cron-out.$i" "$EX/recipe_scheduled_leader" "$URL" report "$TMP/cron.log" 250 4 2000
done
reap
[ "$BAD" -eq 0 ] || fail "scheduled leader: $BAD of 3 schedulers failed: $(show "$TMP"/cron-out.*)"
bad_log=$(awk '{ split($1, s, "="); split($2, t, "=") }
    NR > 1 && s[2] <= ls { print "slot run twice or out of order: " $0 }
    NR > 1 && t[2] < lt { print "older term after a newer one: " $0 }
    { ls = s[2]; lt = t[2] }' "$TMP/cron.log")
[ -z "$bad_log" ] || fail "scheduled leader: $bad_log"
ticks=$(wc -l <"$TMP/cron.log")
terms=$(sed 's/.* term=\([0-9]*\) .*/\1/' "$TMP/cron.log" | sort -u | wc -l)
{ [ "$ticks" = 12 ] && [ "$terms" = 3 ]; } || fail "scheduled leader: $ticks ticks by $terms leaders (expected 12 by 3)"
ok "scheduled leader: 3 schedulers (examples/recipe_scheduled_leader), 250 ms ticks: $ticks ticks, each slot once, by $terms successive leaders, no tick refused"

# ---- job claim: each job processed once -------------------------------------------------------
mkdir "$TMP/done"
for ((i = 0; i < 4; i++)); do
    spawn "$TMP/claim-out.$i" "$EX/recipe_job_claim" "$URL" 40 "$TMP/done" 20
done
reap
[ "$BAD" -eq 0 ] || fail "job claim: $BAD of 4 workers failed (DUPLICATE means a job ran twice): $(show "$TMP"/claim-out.*)"
did=$(sed -n 's/.*did \([0-9]*\) jobs.*/\1/p' "$TMP"/claim-out.* | paste -s -d ' ')
total=$(sed -n 's/.*did \([0-9]*\) jobs.*/\1/p' "$TMP"/claim-out.* | awk '{ s += $1 } END { print s + 0 }')
files=$(find "$TMP/done" -type f | wc -l)
{ [ "$total" = 40 ] && [ "$files" = 40 ]; } || fail "job claim: $total jobs done, $files done records (expected 40 and 40)"
ok "job claim: 4 workers (examples/recipe_job_claim) over job:1..40 with try-lock: each job done once ($did per worker)"

# ---- rate limiter: at most 5 calls in any second ----------------------------------------------------
# rate_check NAME PER INTERVAL_MS: over the "allowed" lines of $TMP/NAME.*,
# in grant (token) order, any PER+1 consecutive grants must span at least
# one interval: t1 of grant i+PER >= t0 of grant i + INTERVAL (1 ms for
# the server's millisecond expiry).
rate_check() {
    sed -n 's/^allowed token=\([0-9]*\) t0_us=\([0-9]*\) t1_us=\([0-9]*\)$/\1 \2 \3/p' "$TMP/$1".* | sort -n |
        awk -v per="$2" -v iv="$3" '{ t0[NR] = $2; t1[NR] = $3 }
            END { for (i = 1; i + per <= NR; i++)
                      if (t1[i + per] - t0[i] < iv * 1000 - 1000) { print "grants " i " to " i + per " within " int((t1[i + per] - t0[i]) / 1000) " ms"; exit } }'
}
# 4 processes x 5 calls, 400 ms apart, refused when over the rate.
start=$(($(now_ms) + 500))
for ((i = 0; i < 4; i++)); do
    spawn "$TMP/rl.$i" "$EX/recipe_rate_limiter" "$URL" partner 5 1000 5 400 0 "$start"
done
reap
[ "$BAD" -eq 0 ] || fail "rate limiter: $BAD of 4 processes failed: $(show "$TMP"/rl.*)"
allowed=$(cat "$TMP"/rl.* | grep -c '^allowed' || true)
refused=$(cat "$TMP"/rl.* | grep -c '^refused' || true)
span=$(sed -n 's/.*t0_us=\([0-9]*\) t1_us=\([0-9]*\)$/\1 \2/p' "$TMP"/rl.* |
    awk 'NR == 1 || $1 < lo { lo = $1 } $2 > hi { hi = $2 } END { print int((hi - lo) / 1000) }')
over=$(rate_check rl 5 1000)
[ -z "$over" ] || fail "rate limiter: more than 5 calls in one second: $over"
[ "$((allowed + refused))" = 20 ] || fail "rate limiter: $allowed allowed + $refused refused is not 20 calls"
[ "$allowed" -ge 5 ] || fail "rate limiter: only $allowed calls allowed (the first 5 must be)"
[ "$span" -ge 2000 ] || [ "$allowed" -le 10 ] || fail "rate limiter: $allowed calls allowed within $(secs "$span") s (at most 10)"
ok "rate limiter: 5 per second (examples/recipe_rate_limiter), 20 attempts from 4 processes in $(secs "$span") s -> $allowed allowed, $refused refused; never more than 5 in any 1 s window"

# 3 processes x 4 calls that wait for a permit: all pass, paced at 5 per second.
start=$(($(now_ms) + 500))
for ((i = 0; i < 3; i++)); do
    spawn "$TMP/rlw.$i" "$EX/recipe_rate_limiter" "$URL" partner-wait 5 1000 4 0 10000 "$start"
done
reap
[ "$BAD" -eq 0 ] || fail "rate limiter (waiting): $BAD of 3 processes failed: $(show "$TMP"/rlw.*)"
allowed=$(cat "$TMP"/rlw.* | grep -c '^allowed' || true)
over=$(rate_check rlw 5 1000)
[ -z "$over" ] || fail "rate limiter (waiting): more than 5 calls in one second: $over"
[ "$allowed" = 12 ] || fail "rate limiter (waiting): $allowed of 12 calls allowed"
span=$(sed -n 's/^allowed .*t0_us=\([0-9]*\) t1_us=\([0-9]*\)$/\1 \2/p' "$TMP"/rlw.* |
    awk 'NR == 1 || $1 < lo { lo = $1 } $2 > hi { hi = $2 } END { print int((hi - lo) / 1000) }')
[ "$span" -ge 1990 ] || fail "rate limiter (waiting): 12 calls in $span ms (5 per second needs 2 s)"
ok "rate limiter: 12 calls from 3 processes that wait for a permit: all allowed, paced over $(secs "$span") s (5 per second: 2 s at least)"

# ---- countdown latch: a waiter goes on when three workers have counted down ----------------------
"${T[@]}" "$DLOCK" latch init --ttl 1m latch:demo 3 || fail "latch: init failed"
spawn "$TMP/latch-wait" "$DLOCK" latch wait --wait 20s latch:demo
for ((i = 0; i < 3; i++)); do
    spawn "$TMP/latch-down.$i" sh -c 'sleep 0.$1; exec "$2" latch down latch:demo' sh "$((i + 2))" "$DLOCK"
done
reap
[ "$BAD" -eq 0 ] || fail "latch: $BAD of 4 processes failed: $(show "$TMP"/latch-*)"
left=$(sort -n "$TMP"/latch-down.* | paste -s -d ' ')
[ "$left" = "0 1 2" ] || fail "latch: the count-downs printed '$left' (expected 0 1 2)"
rc=0
"${T[@]}" "$DLOCK" latch down latch:demo 2>"$TMP/latch.err" || rc=$?
[ "$rc" = 64 ] || fail "latch: a count-down below zero exited $rc (expected 64)"
ok "latch: 'latch wait' went on after 3 'latch down' from 3 processes (counts left: $left); a 4th was refused (64, $(cut -c1-60 "$TMP/latch.err")...)"

# ---- barrier: four processes meet, twice --------------------------------------------------------
for round in 1 2; do
    for ((i = 0; i < 4; i++)); do
        spawn "$TMP/barrier.$round.$i" sh -c 'sleep 0.$1; "$2" barrier --wait 20s barrier:demo 4 && date +%s%N' sh "$i" "$DLOCK"
    done
    reap
    [ "$BAD" -eq 0 ] || fail "barrier: round $round: $BAD of 4 parties failed: $(show "$TMP"/barrier."$round".*)"
done
spread=$(cat "$TMP"/barrier.2.* | sort -n | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print int((hi - lo) / 1000000) }')
ok "barrier: 4 processes arriving 0.1 s apart went on together, twice (the last round's exits within $spread ms)"

# ---- run --rate: at most 5 starts per second, burst 5 ---------------------------------------------
t0=$(redis-cli -p "$PORT" time | paste -s -d ' ' | awk '{ printf "%.0f\n", $1 * 1000000 + $2 }')
for ((i = 0; i < 15; i++)); do
    spawn "$TMP/rate.$i" "$DLOCK" run --rate 5/1s rate:demo -- redis-cli -p "$PORT" time
done
reap
[ "$BAD" -eq 0 ] || fail "run --rate: $BAD of 15 runs failed: $(show "$TMP"/rate.*)"
over=$(for f in "$TMP"/rate.*; do paste -s -d ' ' "$f"; done | awk '{ printf "%.0f\n", $1 * 1000000 + $2 }' | sort -n |
    awk -v t0="$t0" '{ if (NR > 5 + ($1 - t0) * 5 / 1000000) { print NR " starts after " ($1 - t0) / 1000 " ms"; exit } }')
[ -z "$over" ] || fail "run --rate: more starts than 5 + 5/s x elapsed: $over"
last=$(for f in "$TMP"/rate.*; do paste -s -d ' ' "$f"; done | awk -v t0="$t0" '{ t = $1 * 1000000 + $2 - t0; if (t > m) m = t } END { print int(m / 1000) }')
rc=0
"${T[@]}" "$DLOCK" run --no-wait --rate 5/1s rate:demo -- true 2>/dev/null || rc=$?
[ "$rc" = 75 ] || fail "run --rate --no-wait over the rate exited $rc (expected 75)"
ok "run --rate 5/1s: 15 runs at once started within $(secs "$last") s on the server's clock, never more than 5 + 5/s x elapsed; --no-wait over the rate: 75"

# ---- nested runs: a script under the lock calls a script that takes the same lock ---------------
out=$("${T[@]}" "$DLOCK" run nest:demo -- sh -c '"$1" run nest:demo -- sh -c "echo inner \$DLOCK_FENCING_TOKEN"; echo "outer $DLOCK_FENCING_TOKEN"' sh "$DLOCK" 2>&1) ||
    fail "nested run: exited non-zero: $out"
inner=$(printf '%s\n' "$out" | sed -n 's/^inner //p')
outer=$(printf '%s\n' "$out" | sed -n 's/^outer //p')
{ [ -n "$inner" ] && [ "$inner" = "$outer" ]; } || fail "nested run: inner token '$inner', outer '$outer'"
rc=0
"${T[@]}" "$DLOCK" run nest:demo -- sh -c '"$1" -q unlock --force nest:demo; "$1" run nest:demo -- true' sh "$DLOCK" 2>/dev/null || rc=$?
[ "$rc" = 79 ] || fail "nested run: with the outer lock force-unlocked exited $rc (expected 79)"
ok "nested runs: 'dlock run KEY' inside 'dlock run KEY' ran at once under the outer hold (same fencing token $inner); with the outer lock force-unlocked: 79"

# ---- several permits: 3 of 4 at once -------------------------------------------------------------
out=$("${T[@]}" "$DLOCK" run --limit 4 --permits 3 permits:demo -- sh -c 'echo "$DLOCK_PERMITS $DLOCK_SLOT"; "$1" status permits:demo' sh "$DLOCK" 2>&1) ||
    fail "permits: exited non-zero: $out"
printf '%s\n' "$out" | grep -q '^3 0$' || fail "permits: DLOCK_PERMITS/DLOCK_SLOT: $out"
printf '%s\n' "$out" | grep -q 'limit 4' || fail "permits: status does not show the limit: $out"
rc=0
"${T[@]}" "$DLOCK" run --limit 3 --permits 4 permits:demo -- true 2>/dev/null || rc=$?
[ "$rc" = 64 ] || fail "permits: --permits 4 --limit 3 exited $rc (expected 64)"
ok "permits: --limit 4 --permits 3 held 3 permits (DLOCK_PERMITS=3, status shows limit 4); --permits 4 over --limit 3: 64"

printf '\nall %d checks passed in %ds\n' "$CHECKS" $((SECONDS - START))
