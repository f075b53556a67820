#!/usr/bin/env bash
# scripts/mutate.sh — the mutation check of the test suite: does a test fail
# when a safety rule of DESIGN.md is broken?
#
# The catalogue below lists one-line breakages of the rules (a mutation):
# a file, an exact text in it and its replacement, and the tests that must
# catch it. For each mutation, in a scratch copy of the source tree (the
# tracked and untracked-but-not-ignored files of this checkout, so tests
# being written count) the script applies the change, builds the tests it
# names (Debug), runs them with ctest, one at a time, under a time limit,
# and puts the copy back. The outcome is
#   killed    a test failed (or ran out of its time limit): the rule is guarded
#   survived  every named test passed: no test guards the rule (write one)
#   error     the text was not found exactly once (the catalogue has rotted
#             against the source: fix the entry), or the build failed
# A baseline run of every named test on the unmutated copy comes first: a
# test that fails without a mutation would make every mutation look killed,
# so the script stops there.
#
# It prints a table (also written as Markdown to $DLOCK_MUTATE_REPORT if set)
# and the whole run's duration, and exits non-zero if any mutation survived
# or errored. Not part of scripts/test.sh: it takes about half an hour on 2
# cores. Run it after changing a safety rule, the tests that guard one, or
# the code the catalogue points into (a rotted entry is an error).
#
# Usage: scripts/mutate.sh [--list | --check | ID...]
#   ID...    run only these mutations (default: all)
#   --list   print the catalogue; --check only checks that every text is
#            found exactly once (no build)
# Environment:
#   DLOCK_MUTATE_DIR=DIR     the scratch copy (default: a fresh temp dir,
#                            removed at the end unless DLOCK_MUTATE_KEEP=1)
#   DLOCK_MUTATE_JOBS=2      build jobs
#   DLOCK_MUTATE_BASELINE=1  0 skips the baseline run
#   DLOCK_MUTATE_REPORT=F    also write the table to F (Markdown)
#
# Tests are named as EXECUTABLE[:PATTERN]: the ctest test EXECUTABLE, with
# only its tests matching PATTERN (cmocka wildcards * and ?; the harness
# reads DLOCK_TEST_FILTER) when a pattern is given.

# shellcheck source=SCRIPTDIR/common.sh disable=SC1091
source "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"
shopt -u patsub_replacement 2>/dev/null || true # '&' in a replacement is literal

# ---- the catalogue -----------------------------------------------------------
# mutation ID FILE FIND REPLACE TESTS [TIME LIMIT s, default 240] DESCRIPTION
M_ID=() M_FILE=() M_FIND=() M_REPL=() M_TESTS=() M_LIMIT=() M_DESC=()
mutation() {
    M_ID+=("$1") M_FILE+=("$2") M_FIND+=("$3") M_REPL+=("$4") M_TESTS+=("$5")
    M_LIMIT+=("$6") M_DESC+=("$7")
}

# -- fencing tokens (src/lua/core.lua next_fence)
mutation fence-last src/lua/core.lua \
    "  local f = redis.call('INCR', fk)" \
    "  local f = redis.call('INCR', fk) if f - 1 >= clock() then f = f - 1 end" \
    "test_fencing:test_fence_ahead_of_clock" 120 \
    "next_fence returns the last token when the stored fence is not below the server time"
mutation fence-no-increment src/lua/core.lua \
    "  local f = redis.call('INCR', fk)" \
    "  local f = tonumber(redis.call('GET', fk)) or redis.call('INCR', fk)" \
    "test_fencing:test_increase_across_holders" 120 \
    "next_fence returns the stored fence without counting up"
mutation fence-pure-counter src/lua/core.lua \
    "    f = clock()" \
    "    f = 1" \
    "test_fencing:test_increase_after_*" 120 \
    "the fence is a pure counter (a missing fence key starts at 1, not at the server time)"
mutation redlock-no-writeback src/grant.c \
    "        if (same < c->quorum)" \
    "        if (0)" \
    "test_redlock:test_redlock_fencing test_fencing:test_fence_ahead_on_one_redlock_master" 180 \
    "Redlock: the token is never written back to a quorum of masters"

# -- ownership: release, extend, acquire compare the token
mutation release-ignores-token src/lua/release.lua \
    "local mine = v and (force or string.sub(v, 1, TOKEN_LEN) == tok)" \
    "local mine = v and true" \
    "test_fencing:test_taken_over_release" 120 \
    "release deletes the lock whoever holds it"
mutation extend-ignores-token src/lua/extend.lua \
    "if v and string.sub(v, 1, TOKEN_LEN) == ARGV[1] then" \
    "if v then" \
    "test_fencing:test_taken_over_*" 120 \
    "extend (and renewal) sets the TTL of whoever holds the lock"
mutation acquire-ignores-holder src/lua/acquire.lua \
    "if v and string.sub(v, 1, TOKEN_LEN) == tok then" \
    "if v then" \
    "test_mutex:test_try_acquire_busy" 120 \
    "acquire takes a held lock as its own"
mutation token-not-random src/keys.c \
    "    for (size_t i = 0; i < sizeof raw; i++) {" \
    "    memset(raw, 0, sizeof raw); for (size_t i = 0; i < sizeof raw; i++) {" \
    "test_mutex:test_try_acquire_busy" 120 \
    "every handle gets the same token (no randomness)"

# -- kinds: semaphore, multi-lock, read-write
mutation sem-at-limit src/lua/sem_acquire.lua \
    "if sem_num(KEYS, 'used') + want <= limit then" \
    "if sem_num(KEYS, 'used') + want <= limit + 1 then" \
    "test_patterns:test_semaphore_limit" 120 \
    "a semaphore admits one more holder at count == limit"
mutation sem-dead-permit-kept src/lua/helpers.lua \
    "    sem_drop(G, t)" \
    "    local _ = t" \
    "test_holds:test_permits_back_from_killed_holder" 120 \
    "a permit whose time ran out is never given back"
mutation multi-skips-last src/lua/helpers.lua \
    "  for b = 0, #KEYS - size, size do" \
    "  for b = 0, #KEYS - 2 * size, size do" \
    "test_patterns:test_multi_all_or_nothing" 120 \
    "a multi-lock skips its last key"
mutation read-under-writer src/lua/read_acquire.lua \
    "if redis.call('EXISTS', KEYS[LOCK]) == 0 then" \
    "if true then" \
    "test_patterns:test_rw_share_and_exclude" 120 \
    "a read lock is admitted while a writer holds the key"

# -- Redlock
mutation redlock-quorum-half src/topology.c \
    "    c->quorum = c->voters / 2 + 1;" \
    "    c->quorum = c->voters / 2;" \
    "test_redlock:test_redlock_minority_and_majority_down test_redlock:test_redlock_restart_empty" 180 \
    "Redlock quorum N/2 instead of N/2+1"

# -- validity: counted from the send, never from the reply
mutation validity-from-reply src/grant.c \
    "    int64_t valid_until = dlock__validity_end(a->sent_ns, l->ttl_ms);" \
    "    a->sent_ns = dlock__now_ns(); int64_t valid_until = dlock__validity_end(a->sent_ns, l->ttl_ms);" \
    "test_validity:test_acquire_counts_from_send" 120 \
    "an acquire's validity counts from the reply instead of the send"
mutation extend-validity-from-reply src/lock.c \
    "        atomic_store(&l->valid_until_ns, dlock__validity_end(start, ttl_ms));" \
    "        atomic_store(&l->valid_until_ns, dlock__validity_end(dlock__now_ns(), ttl_ms));" \
    "test_validity:test_extend_counts_from_send" 120 \
    "dlock_extend's validity counts from the reply"
mutation renewal-validity-from-reply src/renew.c \
    "        atomic_store(&l->valid_until_ns, dlock__validity_end(start, l->ttl_ms));" \
    "        atomic_store(&l->valid_until_ns, dlock__validity_end(dlock__now_ns(), l->ttl_ms));" \
    "test_validity:test_renewal_counts_from_send" 120 \
    "a renewal's validity counts from the reply"
mutation late-grant-counted src/grant.c \
    "    int won = t.granted >= c->quorum && dlock__now_ns() < valid_until;" \
    "    int won = t.granted >= c->quorum;" \
    "test_validity:test_late_grant_given_back" 120 \
    "a grant that arrives after its validity ended counts"
mutation is-held-ignores-validity src/lock.c \
    "           dlock__now_ns() < atomic_load(&((dlock_lock *)l)->valid_until_ns);" \
    "           1;" \
    "test_fencing:test_increase_after_expiry" 120 \
    "dlock_is_held ignores the validity instant"

# -- the watchdog: lost is reported
mutation watchdog-never-lost src/watchdog.c \
    "    if (!atomic_compare_exchange_strong(&l->state, &expect, DLOCK__LOST))" \
    "    if (1)" \
    "test_wait:test_lost_when_deleted" 120 \
    "the watchdog never marks a lock lost"
mutation renewal-notheld-retried src/renew.c \
    "    if (res == DLOCK_ENOTHELD) {" \
    "    if (0) {" \
    "test_fencing:test_taken_over_renewal" 120 \
    "a renewal the server refused is retried until the validity ends, not reported lost"
mutation watchdog-no-expiry src/renew.c \
    "            if (now >= atomic_load(&l->valid_until_ns)) {" \
    "            if (0) {" \
    "test_wait:test_lost_when_server_paused" 120 \
    "a lock whose renewals keep failing is not marked lost at its validity instant"
mutation close-adopts src/watchdog.c \
    '    int rc = c->closing ? dlock__err(DLOCK_ECLOSED, "the client was closed while acquiring %s",' \
    '    int rc = 0 ? dlock__err(DLOCK_ECLOSED, "the client was closed while acquiring %s",' \
    "test_validity:test_close_during_slow_acquire" 120 \
    "an acquire that completes after close began is handed to the caller (close then frees it)"

# -- the waiting protocol (wait.c, helpers.lua, keepalive.lua)
mutation handoff-last src/lua/helpers.lua \
    "    local h = redis.call('ZRANGE', G[QUEUE], 0, 0)[1]" \
    "    local h = redis.call('ZRANGE', G[QUEUE], -1, -1)[1]" \
    "test_wait:test_fifo_order" 120 \
    "handoff to the last waiter instead of the first"
mutation release-no-handoff src/lua/release.lua \
    "handoff(KEYS, now_ms)" \
    "-- (no handoff)" \
    "test_wait:test_wakeup_without_polling" 120 \
    "a release does not hand the lock on (waiters wait for a keepalive)"
mutation wait-ignores-deadline src/wait.c \
    "        if (now >= deadline) {" \
    "        if (0) {" \
    "test_mutex:test_wait_timeout" 60 \
    "the wait ignores its budget"
mutation wait-round-trip-uncapped src/wait.c \
    "    return left < 1 ? 1 : min64(left, dflt);" \
    "    return (void)left, dflt;" \
    "test_wait_faults:test_wait_budget_*" 120 \
    "a round trip of a wait is not capped by what is left of the budget"
mutation busy-keeps-signal src/lua/acquire.lua \
    "  redis.call('DEL', sig(KEYS, tok)) -- anything in it is older than this answer" \
    "  -- (the signal list is kept)" \
    "test_wait_faults:test_stale_signal_in_list_never_grants" 120 \
    "a busy answer does not clear the waiter's signal list"
mutation entry-never-expires src/lua/helpers.lua \
    "    if exp and exp > now_ms then" \
    "    if exp then" \
    "test_wait_faults:test_stalled_waiter_leaves_no_ghost test_wait_faults:test_dead_waiter_and_dead_holder" 150 \
    "a waiter entry never expires (a dead waiter at the head freezes the key)"
mutation lease-full-ttl src/lua/helpers.lua \
    "  return math.max(math.min(exp - now_ms, LEASE_TTL, ttl), 1)" \
    "  return ttl" \
    "test_wait:test_dead_waiter_leaves_queue test_wait_faults:test_dead_waiter_and_dead_holder" 150 \
    "a handoff's lease is the waiter's whole TTL (a dead waiter holds the key that long)"
mutation keepalive-no-refresh src/lua/keepalive.lua \
    "      if refresh(G, tok, now_ms) then" \
    "      if redis.call('ZSCORE', G[QUEUE], tok) then" \
    "test_wait:test_wakeup_without_polling" 120 \
    "the keepalive does not refresh waiter entries"
mutation signal-wrong-send-time src/wait.c \
    "    int64_t since = w->since, queued = atomic_load(&w->reg.queued_ns);" \
    "    int64_t since = dlock__now_ns(), queued = atomic_load(&w->reg.queued_ns);" \
    "test_validity:test_signal_counts_from_send" 120 \
    "a handoff signal's validity counts from its arrival, not from the last send before the grant"

# -- replicated deployments
mutation wait-ack-unchecked src/fanout.c \
    "        if (acked >= need)" \
    "        if (1)" \
    "test_replicas:test_grant_needs_replica_ack" 240 \
    "a grant counts with no replica's acknowledgement (WAIT not checked)"
mutation role-not-counted src/scripts.c \
    "    int now = dlock__conn_need(c), need = now > before ? now : before;" \
    "    int now = dlock__conn_need(c), need = before;" \
    "test_replicas:test_replica_attached_later" 240 \
    "the round's ROLE is not counted (only the replicas known when the WAIT was sent)"
mutation stale-master-counted src/fanout.c \
    "    int stale = *dlock__conn_tag(conn) != c->nodes[node].gen;" \
    "    int stale = 0 && *dlock__conn_tag(conn) != c->nodes[node].gen;" \
    "test_replicas:test_answer_from_replaced_master" 240 \
    "an answer from a master the Sentinels replaced during the round counts"
mutation syncing-replica-uncounted src/conn.c \
    "    return c->role_only ? dlock__conn_append(c, 1, role, NULL)" \
    "    return 1 ? dlock__conn_append(c, 1, role, NULL)" \
    "test_replicas:test_replica_in_full_sync" 240 \
    "a replica in its first full synchronisation is not counted (ROLE instead of INFO replication)"

# ---- helpers -----------------------------------------------------------------

list_catalogue() {
    local i
    for i in "${!M_ID[@]}"; do
        printf '%-28s %-24s %s\n' "${M_ID[$i]}" "${M_FILE[$i]}" "${M_DESC[$i]}"
    done
}

# count_in FILE TEXT: how many times TEXT occurs in FILE (exactly, bytes).
count_in() {
    local content rest
    IFS= read -r -d '' content <"$1" || true
    rest=${content//"$2"/}
    echo $(((${#content} - ${#rest}) / ${#2}))
}

# apply FILE FIND REPLACE: replace the one occurrence (the caller counted).
apply() {
    local content
    IFS= read -r -d '' content <"$1" || true
    printf '%s' "${content/"$2"/"$3"}" >"$1"
}

# run_spec SPEC LIMIT LOG: run one EXECUTABLE[:PATTERN] in the scratch build
# with ctest within LIMIT seconds. Status: 0 passed, 1 failed, 2 ran out of
# time, 3 no test ran (a pattern that matches nothing is an error, not a pass).
run_spec() {
    local spec=$1 limit=$2 log=$3 exe pattern="" rc
    exe=${spec%%:*}
    [ "$exe" != "$spec" ] && pattern=${spec#*:}
    if (cd -- "$BUILD" && DLOCK_TEST_FILTER="$pattern" \
        timeout --kill-after=10 "$limit" ctest -R "^${exe}\$" -V --no-tests=error) >"$log" 2>&1; then
        rc=0
    else
        rc=$?
    fi
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        return 2
    fi
    [ "$rc" -ne 0 ] && return 1
    grep -qE '\[  PASSED  \] [1-9][0-9]* test' "$log" || return 3
    return 0
}

# targets SPEC...: the executables the specs name, once each.
targets() {
    local s out=()
    for s in "$@"; do
        s=${s%%:*}
        case " ${out[*]-} " in *" $s "*) ;; *) out+=("$s") ;; esac
    done
    printf '%s\n' "${out[@]}"
}

build() {
    cmake --build "$BUILD" -j "$JOBS" --target "$@"
}

# ---- the run -----------------------------------------------------------------

if [ "${1-}" = "--list" ]; then
    list_catalogue
    exit 0
fi
# --check: only that every text is found exactly once (no build, seconds)
if [ "${1-}" = "--check" ]; then
    bad=0
    for i in "${!M_ID[@]}"; do
        n=missing
        [ -f "${M_FILE[$i]}" ] && n=$(count_in "${M_FILE[$i]}" "${M_FIND[$i]}")
        [ "$n" = 1 ] || { printf '%s: %s: text found %s times, not once\n' "${M_ID[$i]}" \
            "${M_FILE[$i]}" "$n"; bad=$((bad + 1)); }
    done
    printf '%d mutations, %d with a text not found exactly once\n' "${#M_ID[@]}" "$bad"
    [ "$bad" -eq 0 ]
    exit
fi
SELECTED=()
if [ "$#" -gt 0 ]; then
    for want in "$@"; do
        found=0
        for i in "${!M_ID[@]}"; do
            [ "${M_ID[$i]}" = "$want" ] && SELECTED+=("$i") && found=1
        done
        [ "$found" -eq 1 ] || dlock_die "no mutation named $want (see --list)"
    done
else
    SELECTED=("${!M_ID[@]}")
fi

JOBS=${DLOCK_MUTATE_JOBS:-2}
START=$SECONDS
STAMP=$(date -u '+%Y-%m-%d %H:%M UTC')
if [ -n "${DLOCK_MUTATE_DIR-}" ]; then
    SCRATCH=$DLOCK_MUTATE_DIR
    mkdir -p -- "$SCRATCH"
else
    SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/dlock-mutate.XXXXXX")
fi
[ "${DLOCK_MUTATE_KEEP:-0}" = 1 ] || [ -n "${DLOCK_MUTATE_DIR-}" ] ||
    trap 'rm -rf -- "$SCRATCH"' EXIT
SRC=$SCRATCH/src
BUILD=$SCRATCH/build
LOGS=$SCRATCH/logs
mkdir -p -- "$SRC" "$LOGS"

# The scratch copy: this checkout's tracked files and its untracked ones that
# are not ignored (new tests being written count), as they are on disk now.
# A kept scratch dir (DLOCK_MUTATE_DIR) is brought up to date file by file:
# only a file whose content differs is copied, with a fresh mtime, so its
# build is redone and nothing built from a mutation survives into this run.
dlock_log "== scratch copy in $SRC"
STAGE=$SCRATCH/stage
rm -rf -- "$STAGE"
mkdir -p -- "$STAGE"
git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
    tar --null -T - -cf - | tar -C "$STAGE" -xf -
(cd -- "$STAGE" && find . -type f -print0) | while IFS= read -r -d '' f; do
    if ! cmp -s -- "$STAGE/$f" "$SRC/$f"; then
        mkdir -p -- "$(dirname -- "$SRC/$f")"
        cp -- "$STAGE/$f" "$SRC/$f"
    fi
done
(cd -- "$SRC" && find . -type f -print0) | while IFS= read -r -d '' f; do
    [ -e "$STAGE/$f" ] || rm -f -- "$SRC/$f"
done
rm -rf -- "$STAGE"

# Every text is checked before anything is built: a rotted entry is an error
# whatever else happens.
declare -A FOUND=()
for i in "${SELECTED[@]}"; do
    f=$SRC/${M_FILE[$i]}
    if [ -f "$f" ]; then FOUND[$i]=$(count_in "$f" "${M_FIND[$i]}"); else FOUND[$i]=missing; fi
done

ALL_SPECS=()
for i in "${SELECTED[@]}"; do
    read -r -a specs <<<"${M_TESTS[$i]}"
    for s in "${specs[@]}"; do
        case " ${ALL_SPECS[*]-} " in *" $s "*) ;; *) ALL_SPECS+=("$s") ;; esac
    done
done
mapfile -t ALL_TARGETS < <(targets "${ALL_SPECS[@]}")

dlock_log "== configure and build (Debug, -j$JOBS): ${ALL_TARGETS[*]}"
cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Debug -DDLOCK_BUILD_EXAMPLES=OFF \
    -DDLOCK_BUILD_MAN=OFF >"$LOGS/configure.log" 2>&1 ||
    { tail -n 30 "$LOGS/configure.log"; dlock_die "configure failed"; }
build "${ALL_TARGETS[@]}" >"$LOGS/build.log" 2>&1 ||
    { tail -n 30 "$LOGS/build.log"; dlock_die "the unmutated copy does not build"; }

FLAKY=()
if [ "${DLOCK_MUTATE_BASELINE:-1}" = 1 ]; then
    dlock_log "== baseline: every named test on the unmutated copy"
    for s in "${ALL_SPECS[@]}"; do
        t0=$SECONDS
        log="$LOGS/baseline-${s//[:\/*?]/_}.log" st=0
        run_spec "$s" 300 "$log" || st=$?
        if [ "$st" -ne 0 ]; then
            # once more: a test that fails now and then is reported, not fatal
            # (its failures could make a mutation look killed: see the log)
            cp -- "$log" "$log.first"
            tail -n 40 "$log" >&2
            st2=0
            run_spec "$s" 300 "$log" || st2=$?
            [ "$st2" -eq 0 ] ||
                dlock_die "baseline: $s does not pass unmutated (status $st2: 1 failed, 2 out of time, 3 no test ran); fix that first"
            FLAKY+=("$s (baseline: failed once, then passed; $log.first)")
            dlock_log "   FLAKY $s: failed once (status $st), passed when run again"
            continue
        fi
        dlock_log "   ok    $s ($((SECONDS - t0))s)"
    done
fi

R_RESULT=() R_BY=() R_SECS=()
for i in "${SELECTED[@]}"; do
    id=${M_ID[$i]} file=${M_FILE[$i]} limit=${M_LIMIT[$i]:-240}
    t0=$SECONDS result="" by=""
    dlock_log "== $id ($file): ${M_DESC[$i]}"
    if [ "${FOUND[$i]}" != 1 ]; then
        result=error
        by="text found ${FOUND[$i]} times, not once"
    else
        cp -- "$SRC/$file" "$SCRATCH/pristine"
        apply "$SRC/$file" "${M_FIND[$i]}" "${M_REPL[$i]}"
        read -r -a specs <<<"${M_TESTS[$i]}"
        mapfile -t tg < <(targets "${specs[@]}")
        if ! build "${tg[@]}" >"$LOGS/$id-build.log" 2>&1; then
            result=error
            by="does not build (logs/$id-build.log)"
        else
            result=survived
            for s in "${specs[@]}"; do
                st=0
                run_spec "$s" "$limit" "$LOGS/$id-${s//[:\/*?]/_}.log" || st=$?
                case $st in
                0) ;;
                1) result=killed by="$s" ;;
                2) result=killed by="$s (ran out of ${limit}s)" ;;
                *) result=error by="$s ran no test" ;;
                esac
                [ "$result" = survived ] || break
            done
            [ "$result" = survived ] && by="${M_TESTS[$i]} all passed"
        fi
        # back to the original (a fresh mtime: the next build recompiles it)
        cat -- "$SCRATCH/pristine" >"$SRC/$file"
    fi
    R_RESULT[i]=$result R_BY[i]=$by R_SECS[i]=$((SECONDS - t0))
    dlock_log "   $result: $by (${R_SECS[$i]}s)"
done

# ---- the table ---------------------------------------------------------------
killed=0 survived=0 errors=0
table() { # $1: "md" for Markdown, else text
    local i
    if [ "$1" = md ]; then
        printf '| # | mutation | file | test that kills it | result | s |\n'
        printf '|---|---|---|---|---|---|\n'
    else
        printf '%-3s %-28s %-24s %-9s %5s  %s\n' '#' mutation file result s 'test that kills it'
    fi
    local n=0
    for i in "${SELECTED[@]}"; do
        n=$((n + 1))
        if [ "$1" = md ]; then
            # shellcheck disable=SC2016 # the backquotes are Markdown
            printf '| %d | %s: %s | `%s` | `%s` | %s | %d |\n' "$n" "${M_ID[$i]}" "${M_DESC[$i]}" \
                "${M_FILE[$i]}" "${R_BY[$i]}" "${R_RESULT[$i]}" "${R_SECS[$i]}"
        else
            printf '%-3d %-28s %-24s %-9s %5d  %s\n' "$n" "${M_ID[$i]}" "${M_FILE[$i]}" \
                "${R_RESULT[$i]}" "${R_SECS[$i]}" "${R_BY[$i]}"
        fi
    done
}
for i in "${SELECTED[@]}"; do
    case ${R_RESULT[$i]} in
    killed) killed=$((killed + 1)) ;;
    survived) survived=$((survived + 1)) ;;
    *) errors=$((errors + 1)) ;;
    esac
done
TOTAL=$((SECONDS - START))
printf '\n==================== mutations (%s) ====================\n' "$STAMP"
table text
printf '%d mutations: %d killed, %d survived, %d errors in %dm%02ds\n' "${#SELECTED[@]}" \
    "$killed" "$survived" "$errors" $((TOTAL / 60)) $((TOTAL % 60))
for f in "${FLAKY[@]}"; do
    printf 'flaky: %s\n' "$f"
done
if [ -n "${DLOCK_MUTATE_REPORT-}" ]; then
    {
        table md
        printf '\n%d mutations: %d killed, %d survived, %d errors in %dm%02ds (%s)\n' \
            "${#SELECTED[@]}" "$killed" "$survived" "$errors" $((TOTAL / 60)) $((TOTAL % 60)) "$STAMP"
    } >"$DLOCK_MUTATE_REPORT"
fi
[ "$survived" -eq 0 ] && [ "$errors" -eq 0 ]
