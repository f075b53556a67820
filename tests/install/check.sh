#!/bin/sh
# tests/install/check.sh BUILD_DIR SOURCE_DIR URL WORK_DIR — install dlock
# from BUILD_DIR into WORK_DIR/prefix and use it as a user would:
#   - the installed tool runs without LD_LIBRARY_PATH (its relative RPATH)
#     and takes a lock on URL;
#   - the man pages, completions, dlock.pc and the CMake package are there;
#   - a CMake project with find_package(dlock) builds against the prefix, and
#     its programs (dlock::dlock and dlock::dlock_static) take a lock;
#   - a program built with pkg-config runs with LD_LIBRARY_PATH, and with
#     an rpath, as the README says.
# Environment: CC (the compiler), CMAKE (cmake), CONSUMER_CFLAGS (extra
# flags for the consumers, e.g. a sanitizer the library was built with).
# Prints what it does; exits non-zero at the first failure.
set -eu

build=$1 src=$2 url=$3 work=$4
prefix=$work/prefix
CC=${CC:-cc}
CMAKE=${CMAKE:-cmake}
CONSUMER_CFLAGS=${CONSUMER_CFLAGS:-}
unset LD_LIBRARY_PATH

step() { printf '== %s\n' "$*"; }
fail() { printf 'FAILED: %s\n' "$*"; exit 1; }

step "cmake --install $build --prefix $prefix"
"$CMAKE" --install "$build" --prefix "$prefix" >"$work/install.log" 2>&1 ||
    { cat "$work/install.log"; fail "cmake --install"; }

libdir=$(dirname "$(find "$prefix" -name 'libdlock.so' | head -n 1)")
[ -n "$libdir" ] && [ -f "$libdir/libdlock.a" ] || fail "libdlock.so/.a not installed"
[ -f "$prefix/include/dlock.h" ] || fail "dlock.h not installed"
[ -f "$prefix/share/bash-completion/completions/dlock" ] || fail "bash completion not installed"
[ -f "$prefix/share/zsh/site-functions/_dlock" ] || fail "zsh completion not installed"
if [ -f "$build/man/dlock.1" ]; then
    [ -f "$prefix/share/man/man1/dlock.1" ] && [ -f "$prefix/share/man/man3/dlock.3" ] ||
        fail "man pages not installed"
fi

step "the installed tool finds its library through its RPATH"
readelf -d "$prefix/bin/dlock" | grep -E 'R(UN)?PATH' | grep -F '$ORIGIN/' ||
    fail "bin/dlock has no \$ORIGIN-relative RPATH"
ldd "$prefix/bin/dlock" | grep -F libdlock.so | grep -F "$prefix/" ||
    fail "bin/dlock does not load the libdlock.so under $prefix"
"$prefix/bin/dlock" --version
"$prefix/bin/dlock" -u "$url" run install:tool -- sh -c 'echo "token $DLOCK_FENCING_TOKEN"'

step "find_package(dlock) from a CMake project"
"$CMAKE" -S "$src/tests/install" -B "$work/cmake" -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_C_COMPILER="$CC" -DCMAKE_C_FLAGS="$CONSUMER_CFLAGS" >"$work/cmake.log" 2>&1 ||
    { cat "$work/cmake.log"; fail "configuring the consumer"; }
"$CMAKE" --build "$work/cmake" >>"$work/cmake.log" 2>&1 ||
    { cat "$work/cmake.log"; fail "building the consumer"; }
"$work/cmake/consumer" "$url"
"$work/cmake/consumer_static" "$url"
ldd "$work/cmake/consumer_static" | grep -F libdlock && fail "consumer_static loads libdlock.so"

step "pkg-config"
PKG_CONFIG_PATH=$libdir/pkgconfig
export PKG_CONFIG_PATH
version=$(pkg-config --modversion dlock)
[ "dlock $version" = "$("$prefix/bin/dlock" --version)" ] || fail "dlock.pc says $version"
[ "$(pkg-config --variable=prefix dlock)" = "$prefix" ] || fail "dlock.pc's prefix is not $prefix"
pkg-config --print-requires-private dlock | grep -q hiredis || fail "Requires.private lacks hiredis"
pkg-config --print-requires-private dlock | grep -q openssl || fail "Requires.private lacks openssl"
static_libs=$(pkg-config --static --libs dlock)
echo "pkg-config --static --libs dlock: $static_libs"
for l in -ldlock -lhiredis -lssl -lcrypto -lpthread; do
    case " $static_libs " in *" $l "*) ;; *) fail "--static --libs lacks $l" ;; esac
done
# shellcheck disable=SC2046,SC2086
"$CC" $CONSUMER_CFLAGS "$src/tests/install/consumer.c" $(pkg-config --cflags --libs dlock) \
    -o "$work/pc_consumer"
LD_LIBRARY_PATH=$(pkg-config --variable=libdir dlock) "$work/pc_consumer" "$url"
# shellcheck disable=SC2046,SC2086
"$CC" $CONSUMER_CFLAGS "$src/tests/install/consumer.c" $(pkg-config --cflags --libs dlock) \
    -Wl,-rpath,"$(pkg-config --variable=libdir dlock)" -o "$work/pc_consumer_rpath"
"$work/pc_consumer_rpath" "$url"
step "all good"
