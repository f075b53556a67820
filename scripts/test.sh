#!/usr/bin/env bash
# scripts/test.sh — everything CI runs (.ci/run is `exec scripts/test.sh`).
#
# Installs what is missing, then runs the test suite in phases, each in its
# own build directory:
#   0. format  (no build)   clang-format 14 --dry-run over the C sources of
#              DLOCK_FORMAT_DIRS; a file it would change fails the phase
#   1. werror  build/       -DDLOCK_WERROR=ON            the whole suite
#   2. asan    build-asan/  -DDLOCK_SANITIZE=address     the whole suite, ASan+UBSan
#   3. tsan    build-tsan/  -DDLOCK_SANITIZE=thread      threaded tests only
#   4. fuzz    build-fuzz/  clang -DDLOCK_FUZZ=ON          each libFuzzer target
#              in fuzz/ for DLOCK_FUZZ_SECONDS (default 10) over a copy of
#              its corpus fuzz/corpus/<name>; a crash counts as a failure
# Every phase runs even when an earlier one failed; the script exits non-zero
# if any failed. The last line of output is the total over all phases:
#   N passed, N failed
# (a build that fails, or a phase that runs out of time, counts as one failure).
#
# Budget: about 15 minutes on 2 cores in all. Each phase's ctest run is cut at
# its budget (seconds, override with the variables below); tests run one at a
# time by default, DLOCK_TEST_JOBS=N runs N at once.
#   DLOCK_BUDGET_WERROR=420 DLOCK_BUDGET_ASAN=330 DLOCK_BUDGET_TSAN=300
#   DLOCK_TEST_TIMEOUT=120   per test, for tests without their own TIMEOUT
#   DLOCK_PHASES="format werror asan tsan fuzz"   which phases to run
#   DLOCK_FORMAT_DIRS="src include tests"   what the format phase checks (below)
#   DLOCK_TSAN_LABEL=threads   ctest label of the tests TSan runs (CMakeLists.txt)
#   DLOCK_FUZZ_SECONDS=10   per fuzz target

export DLOCK_WANT_FUZZ=1 DLOCK_WANT_FORMAT=1
# shellcheck source=SCRIPTDIR/common.sh disable=SC1091
source "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

BUDGET_WERROR=${DLOCK_BUDGET_WERROR:-420}
BUDGET_ASAN=${DLOCK_BUDGET_ASAN:-330}
BUDGET_TSAN=${DLOCK_BUDGET_TSAN:-300}
TEST_TIMEOUT=${DLOCK_TEST_TIMEOUT:-120}
TEST_JOBS=${DLOCK_TEST_JOBS:-1}
PHASES=${DLOCK_PHASES:-format werror asan tsan fuzz}
# The directories whose C files must be formatted (src/ includes src/cli/).
# bench/, examples/ and fuzz/ join the list once their files are formatted.
FORMAT_DIRS=${DLOCK_FORMAT_DIRS:-src include tests}
TSAN_LABEL=${DLOCK_TSAN_LABEL:-threads}
FUZZ_SECONDS=${DLOCK_FUZZ_SECONDS:-10}

TOTAL_PASSED=0
TOTAL_FAILED=0
SUMMARY=()        # one line per phase, printed at the end
LOGDIR=$(mktemp -d "${TMPDIR:-/tmp}/dlock-test.XXXXXX")
trap 'rm -rf -- "$LOGDIR"' EXIT

# Ctrl-C / SIGTERM: stop the running ctest's process group, then leave.
on_signal() {
    trap - INT TERM
    if [ -s "$LOGDIR/ctest.pid" ]; then
        kill -TERM -- "-$(cat -- "$LOGDIR/ctest.pid")" 2>/dev/null || true
        wait || true
    fi
    printf '\ninterrupted\n' >&2
    exit 130
}
trap on_signal INT TERM

# add_result NAME PASSED FAILED START [NOTE]: count a phase run outside ctest.
add_result() {
    local verdict=ok
    [ "$3" -eq 0 ] || verdict=FAILED
    TOTAL_PASSED=$((TOTAL_PASSED + $2))
    TOTAL_FAILED=$((TOTAL_FAILED + $3))
    SUMMARY+=("$(printf '%-7s %-6s %3d passed, %3d failed, %4ds%s' "$1" "$verdict" "$2" "$3" \
        $((SECONDS - $4)) "${5:+  ($5)}")")
}

# Set by the caller before each run_phase:
PHASE_CTEST_ARGS=()  # extra ctest arguments (-R REGEX, --no-tests=...)
PHASE_WRAP=()        # command prefix for ctest (env VAR=..., setarch -R)

# run_phase NAME DIR BUDGET [CMAKE_ARG...]
# Build DIR with the cmake arguments, run ctest there within BUDGET seconds,
# and add its counts to the totals.
run_phase() {
    local name=$1 dir=$2 budget=$3
    shift 3
    local start=$SECONDS log="$LOGDIR/$name.log" rc passed=0 failed=0 note=""

    printf '\n==================== phase %s: %s/ (%s) ====================\n' \
        "$name" "$dir" "${*:-default options}"
    if ! dlock_build "$dir" "$@"; then
        failed=1
        note="build failed"
    else
        printf -- '---- %s: build done in %ds; running tests (budget %ds)\n' \
            "$name" $((SECONDS - start)) "$budget"
        # `timeout` runs ctest in a process group of its own and kills the
        # whole group (tests and the redis-servers they started) when the
        # budget runs out. The pipeline runs in the background so that the
        # INT/TERM trap can run at once and stop that group too.
        ( (cd -- "$dir" && printf '%s\n' "$BASHPID" >"$LOGDIR/ctest.pid" &&
            exec timeout --kill-after=10 "$budget" \
                "${PHASE_WRAP[@]}" ctest --output-on-failure \
                --timeout "$TEST_TIMEOUT" -j "$TEST_JOBS" \
                "${PHASE_CTEST_ARGS[@]}") 2>&1 | tee "$log" ) &
        if wait "$!"; then rc=0; else rc=$?; fi
        rm -f -- "$LOGDIR/ctest.pid"
        # ctest ends with e.g. "92% tests passed, 1 tests failed out of 12".
        local line
        line=$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1 || true)
        if [ -n "$line" ]; then
            local total
            failed=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
            total=$(sed -E 's/.* failed out of ([0-9]+).*/\1/' <<<"$line")
            passed=$((total - failed))
        elif grep -q 'No tests were found' "$log"; then
            note="no tests matched"
        else
            # cut short: count the tests that passed before that
            passed=$(grep -cE 'Test +#[0-9]+: .* Passed' "$log" || true)
        fi
        if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
            failed=1
            if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
                note="ran out of its ${budget}s budget"
            else
                note="ctest exited $rc"
            fi
        fi
    fi

    add_result "$name" "$passed" "$failed" "$start" "$note"
    printf -- '---- phase %s: %d passed, %d failed, %ds%s\n' \
        "$name" "$passed" "$failed" $((SECONDS - start)) "${note:+ ($note)}"
}

want_phase() { case " $PHASES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

ALL_START=$SECONDS

# ---- phase 0: formatting (clang-format 14, .clang-format) -------------------
# One test: every .c and .h file under FORMAT_DIRS is as clang-format would
# write it. The files it would change are listed with the first lines of
# the change; `clang-format -i FILE` fixes one.
if want_phase format; then
    start=$SECONDS
    printf '\n==================== phase format: %s ====================\n' "$FORMAT_DIRS"
    # shellcheck disable=SC2086 # FORMAT_DIRS is a list of words
    mapfile -t fmt_files < <(find $FORMAT_DIRS -name '*.[ch]' -type f | sort)
    fmt_bad=()
    for f in "${fmt_files[@]}"; do
        clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || fmt_bad+=("$f")
    done
    if [ "${#fmt_bad[@]}" -eq 0 ]; then
        printf 'format: ok (%d files)\n' "${#fmt_files[@]}"
        add_result format 1 0 "$start"
    else
        for f in "${fmt_bad[@]}"; do
            printf 'format: %s is not formatted (clang-format -i %s):\n' "$f" "$f"
            clang-format "$f" | diff -u "$f" - | sed -n '3,12p' || true
        done
        add_result format 0 1 "$start" "${#fmt_bad[@]} of ${#fmt_files[@]} files not formatted"
    fi
fi

# ---- phase 1: warnings are errors, the whole suite -------------------------
if want_phase werror; then
    PHASE_CTEST_ARGS=(--no-tests=error)
    PHASE_WRAP=()
    run_phase werror build "$BUDGET_WERROR" -DDLOCK_WERROR=ON
fi

# ---- phase 2: AddressSanitizer + UndefinedBehaviorSanitizer ----------------
if want_phase asan; then
    # the randomized fault runs (label "fault") run once, in the werror phase
    PHASE_CTEST_ARGS=(--no-tests=error -LE fault)
    PHASE_WRAP=(env ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1
                    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1)
    run_phase asan build-asan "$BUDGET_ASAN" -DDLOCK_SANITIZE=address
fi

# ---- phase 3: ThreadSanitizer, on the tests that use threads ---------------
# Tests are picked by their ctest label "threads" (CMakeLists.txt lists them:
# waiters, the pub/sub listener and the watchdog run threads in them).
# setarch -R turns address randomisation off for the run: GCC 12's TSan
# runtime cannot cope with the high mmap entropy of newer kernels
# ("FATAL: ThreadSanitizer: unexpected memory mapping").
if want_phase tsan; then
    PHASE_CTEST_ARGS=(-L "$TSAN_LABEL" --no-tests=error)
    PHASE_WRAP=(env TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1)
    if setarch "$(uname -m)" -R true >/dev/null 2>&1; then
        PHASE_WRAP=(setarch "$(uname -m)" -R "${PHASE_WRAP[@]}")
    fi
    run_phase tsan build-tsan "$BUDGET_TSAN" -DDLOCK_SANITIZE=thread
fi

# ---- phase 4: fuzzing ------------------------------------------------------
# A clang build with -fsanitize=fuzzer,address,undefined; each target runs for
# FUZZ_SECONDS over a scratch copy of its corpus (the repository's corpus is
# not modified). A target that crashes, leaks or hangs counts as one failure.
if want_phase fuzz; then
    start=$SECONDS
    printf '\n==================== phase fuzz: build-fuzz/ (%ss per target) ====================\n' "$FUZZ_SECONDS"
    passed=0 failed=0 note=
    fuzz_targets=()
    for f in fuzz/fuzz_*.c; do f=${f##*/}; fuzz_targets+=("${f%.c}"); done
    if CC=clang dlock_configure build-fuzz -DDLOCK_FUZZ=ON -DDLOCK_BUILD_TESTS=OFF \
           -DDLOCK_BUILD_EXAMPLES=OFF >"$LOGDIR/fuzz-build.log" 2>&1 &&
       dlock_compile build-fuzz "${fuzz_targets[@]}" >>"$LOGDIR/fuzz-build.log" 2>&1; then
        for target in build-fuzz/fuzz_*; do
            [ -x "$target" ] || continue
            name=${target##*/fuzz_}
            work="$LOGDIR/corpus-$name"
            mkdir -p "$work"
            cp -- fuzz/corpus/"$name"/* "$work"/ 2>/dev/null || true
            if timeout $((FUZZ_SECONDS + 60)) "$target" -max_total_time="$FUZZ_SECONDS" -timeout=10 \
                   -rss_limit_mb=2048 -max_len=4096 -artifact_prefix="$LOGDIR/" "$work" \
                   >"$LOGDIR/fuzz-$name.log" 2>&1; then
                passed=$((passed + 1))
                printf 'fuzz_%s: ok (%s)\n' "$name" "$(grep -o 'Done [0-9]* runs' "$LOGDIR/fuzz-$name.log" | tail -1)"
            else
                failed=$((failed + 1))
                printf 'fuzz_%s: FAILED\n' "$name"
                tail -n 40 "$LOGDIR/fuzz-$name.log"
            fi
        done
    else
        failed=1
        note="build failed"
        tail -n 40 "$LOGDIR/fuzz-build.log"
    fi
    add_result fuzz "$passed" "$failed" "$start" "$note"
fi

# ---- summary: the last line is the total ------------------------------------
printf '\n==================== summary (%ds) ====================\n' $((SECONDS - ALL_START))
printf '%s\n' "${SUMMARY[@]}"
printf '%d passed, %d failed\n' "$TOTAL_PASSED" "$TOTAL_FAILED"
[ "$TOTAL_FAILED" -eq 0 ]
