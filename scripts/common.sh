# shellcheck shell=bash
# scripts/common.sh — the shell helpers scripts/demo.sh and scripts/test.sh
# share: the one place for them.
#
# Sourced, not run. It makes the shell strict, moves to the repository root,
# installs the Debian packages the build and the tests need (only those that
# are missing: one `apt-get update`, one `apt-get install`), and defines the
# build helpers and the process helpers (a private redis-server, background
# processes stopped at exit, bounded waiting). Nothing here reads standard
# input: CI has none.

set -euo pipefail

DLOCK_ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd -- "$DLOCK_ROOT"

# Neither script reads input; make sure fd 0 is a harmless /dev/null even when
# the caller closed it, so no socket or pipe opened later can land on fd 0.
exec </dev/null

export DEBIAN_FRONTEND=noninteractive

dlock_log() { printf '%s\n' "$*" >&2; }
dlock_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# True if the C compiler finds header $1 (only meaningful once gcc exists).
dlock_have_header() {
    command -v gcc >/dev/null 2>&1 &&
        printf '#include <%s>\n' "$1" | gcc -E -x c - >/dev/null 2>&1
}

# dlock_ensure_packages: check every command, header and pkg-config module the
# build needs; install the Debian packages for the missing ones (as root), or
# say what to install and exit 1 (not root, or no apt-get).
dlock_ensure_packages() {
    local -a missing=()
    local cmd pkg
    # command -> Debian package
    for cmd in cmake:cmake ctest:cmake gcc:gcc make:make pkg-config:pkg-config \
               redis-server:redis-server redis-cli:redis-tools; do
        command -v "${cmd%%:*}" >/dev/null 2>&1 || missing+=("${cmd#*:}")
    done
    # headers and pkg-config modules (checked through the tools when present;
    # without them the packages are installed anyway, the check is repeated).
    dlock_have_header stdio.h || missing+=(libc6-dev)
    if ! dlock_have_header hiredis/hiredis.h ||
       ! pkg-config --exists hiredis >/dev/null 2>&1; then
        missing+=(libhiredis-dev)
    fi
    if ! dlock_have_header cmocka.h ||
       ! pkg-config --exists cmocka >/dev/null 2>&1; then
        missing+=(libcmocka-dev)
    fi
    if ! dlock_have_header openssl/ssl.h ||
       ! pkg-config --exists openssl >/dev/null 2>&1; then
        missing+=(libssl-dev)
    fi
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    if ! dlock_have_header microhttpd.h ||
       ! pkg-config --exists libmicrohttpd >/dev/null 2>&1; then
        missing+=(libmicrohttpd-dev)
    fi
    # the man pages (scdoc builds them; test_man renders them with groff and
    # man -l), the shell completions' tests (bash-completion; zsh is tried
    # when present, and installed here since it is small)
    command -v scdoc >/dev/null 2>&1 || missing+=(scdoc)
    command -v groff >/dev/null 2>&1 || missing+=(groff-base)
    command -v man >/dev/null 2>&1 || missing+=(man-db)
    [ -f /usr/share/bash-completion/bash_completion ] || missing+=(bash-completion)
    command -v zsh >/dev/null 2>&1 || missing+=(zsh)
    # test_lua: luacheck over the composed Redis scripts
    command -v luacheck >/dev/null 2>&1 || missing+=(lua-check)
    # the tests' Prometheus checker asks the Prometheus client's own parser
    # for a second opinion (Debian's python3, where the package lives)
    /usr/bin/python3 -c 'import prometheus_client' >/dev/null 2>&1 ||
        missing+=(python3-prometheus-client)
    # the format phase of scripts/test.sh (.clang-format is clang-format 14's)
    if [ "${DLOCK_WANT_FORMAT:-0}" = 1 ]; then
        command -v clang-format >/dev/null 2>&1 || missing+=(clang-format)
    fi
    # the fuzz phase of scripts/test.sh: clang and its libFuzzer runtime
    if [ "${DLOCK_WANT_FUZZ:-0}" = 1 ]; then
        command -v clang >/dev/null 2>&1 || missing+=(clang)
        if ! command -v clang >/dev/null 2>&1 ||
           [ ! -f "$(clang -print-file-name=libclang_rt.fuzzer-x86_64.a 2>/dev/null)" ]; then
            missing+=(libclang-rt-dev)
        fi
    fi
    [ "${#missing[@]}" -eq 0 ] && return 0

    # de-duplicate (cmake is named twice when cmake and ctest are both absent)
    local -a pkgs=()
    for pkg in "${missing[@]}"; do
        case " ${pkgs[*]-} " in *" $pkg "*) ;; *) pkgs+=("$pkg") ;; esac
    done

    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        dlock_log "missing: ${pkgs[*]}"
        dlock_log "install them first, e.g. as root:"
        dlock_log "  apt-get update && apt-get install -y --no-install-recommends ${pkgs[*]}"
        exit 1
    fi
    dlock_log "== installing missing packages: ${pkgs[*]}"
    apt-get update -q || dlock_die "apt-get update failed"
    apt-get install -y -q --no-install-recommends "${pkgs[@]}" ||
        dlock_die "apt-get install ${pkgs[*]} failed"

    # Re-check, so a wrong package name shows up here and not as a build error.
    dlock_have_header hiredis/hiredis.h || dlock_die "hiredis headers still missing"
    dlock_have_header cmocka.h || dlock_die "cmocka headers still missing"
    dlock_have_header microhttpd.h || dlock_die "libmicrohttpd headers still missing"
    for cmd in cmake ctest gcc make pkg-config redis-server redis-cli scdoc groff; do
        command -v "$cmd" >/dev/null 2>&1 || dlock_die "$cmd still missing"
    done
}

# dlock_configure DIR [CMAKE_ARG...]: configure build directory DIR. Values
# not given keep what DIR's cache already has.
dlock_configure() {
    local dir=$1
    shift
    cmake -S "$DLOCK_ROOT" -B "$dir" "$@"
}

# dlock_compile DIR [TARGET...]: build DIR (all targets by default) on all cores.
dlock_compile() {
    local dir=$1
    shift
    local -a targets=()
    [ "$#" -gt 0 ] && targets=(--target "$@")
    cmake --build "$dir" -j "$(nproc)" "${targets[@]}"
}

# dlock_build DIR [CMAKE_ARG...]: configure DIR with the arguments, then build
# everything in it.
dlock_build() {
    dlock_configure "$@" && dlock_compile "$1"
}

# ---- processes: background helpers, a private redis-server ------------------

DLOCK_BG_PIDS=()     # what dlock_bg started; dlock_stop_all stops them
DLOCK_REDIS_PID=""   # the private server of dlock_redis_start, and its port
# shellcheck disable=SC2034 # read by the scripts that source this
DLOCK_REDIS_PORT=""

# dlock_bg OUT CMD...: start CMD in the background, its stdout and stderr to
# file OUT; its pid in DLOCK_BG_PID (and in DLOCK_BG_PIDS, for cleanup).
dlock_bg() {
    local out=$1
    shift
    "$@" >"$out" 2>&1 &
    DLOCK_BG_PID=$!
    DLOCK_BG_PIDS+=("$DLOCK_BG_PID")
}

# dlock_wait_for SECONDS CMD...: run CMD every 50 ms until it succeeds;
# status 1 if it never did within SECONDS.
dlock_wait_for() {
    local i n=$(($1 * 20))
    shift
    for ((i = 0; i < n; i++)); do
        "$@" && return 0
        sleep 0.05
    done
    return 1
}

# dlock_gone PID: true once PID has ended (or was never ours).
dlock_gone() { ! kill -0 "$1" 2>/dev/null; }

# dlock_pong PORT: true if a redis-server answers PING on 127.0.0.1:PORT.
dlock_pong() { [ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ]; }

# dlock_stop PID...: SIGTERM (and SIGCONT, for a stopped process), SIGKILL
# whatever still runs after 5 s; reap them.
dlock_stop() {
    local pid
    for pid in "$@"; do
        kill -TERM "$pid" 2>/dev/null || true
        kill -CONT "$pid" 2>/dev/null || true
    done
    for pid in "$@"; do
        dlock_wait_for 5 dlock_gone "$pid" || kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

# dlock_stop_all: stop the background processes and the private server.
dlock_stop_all() {
    local -a alive=()
    local pid
    for pid in "${DLOCK_BG_PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null && alive+=("$pid")
    done
    [ "${#alive[@]}" -eq 0 ] || dlock_stop "${alive[@]}"
    DLOCK_BG_PIDS=()
    [ -z "$DLOCK_REDIS_PID" ] || dlock_stop "$DLOCK_REDIS_PID"
    DLOCK_REDIS_PID=""
}

# dlock_redis_start DIR: a private redis-server on a free loopback port
# (never 6379; no persistence; its files in DIR). Sets DLOCK_REDIS_PORT and
# DLOCK_REDIS_PID; dlock_stop_all stops it. A port that answers is skipped,
# and a start that could not bind is retried on another port.
dlock_redis_start() {
    local dir=$1 port try
    for ((try = 0; try < 20; try++)); do
        port=$((20000 + RANDOM))
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue
        redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
            --dir "$dir" --logfile "$dir/redis.log" --daemonize no &
        DLOCK_REDIS_PID=$!
        if dlock_wait_for 5 dlock_pong "$port"; then
            # shellcheck disable=SC2034 # read by the scripts that source this
            DLOCK_REDIS_PORT=$port
            return 0
        fi
        dlock_stop "$DLOCK_REDIS_PID"
        DLOCK_REDIS_PID=""
    done
    dlock_die "could not start a private redis-server: $(tail -n 3 "$dir/redis.log" 2>/dev/null)"
}

dlock_ensure_packages
