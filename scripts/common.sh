# shellcheck shell=bash
# scripts/common.sh — shared setup for scripts/demo.sh and scripts/test.sh.
#
# Sourced, not run. It makes the shell strict, moves to the repository root,
# installs the Debian packages the build and the tests need (only those that
# are missing: one `apt-get update`, one `apt-get install`), and defines the
# build helpers. Nothing here reads standard input: CI has none.

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

dlock_ensure_packages
