/*
 * test_lua.c — luacheck over the Redis scripts as Redis runs them.
 *
 * Design. The library composes each script from the constants prelude
 * (keys.h), src/lua/core.lua and the script itself with src/lua/helpers.lua
 * inserted; dlock__scripts_dump() writes what it composed, one file per
 * script, into a temp dir, and luacheck (Debian lua-check) checks that dir
 * with the repository's .luacheckrc (Lua 5.1, the redis/KEYS/ARGV globals,
 * what the prelude and the helpers may leave unused). Any warning fails the
 * test and is printed. scripts/common.sh installs lua-check; on a machine
 * without it the test reports itself skipped to ctest (exit 77).
 */
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "scripts.h"

#ifndef DLOCK_SOURCE_DIR
#error "DLOCK_SOURCE_DIR must be defined by the build"
#endif

static void test_luacheck_scripts(void **state)
{
    (void)state;
    char dir[DH_PATH_MAX], ls[DH_PATH_MAX + 32];
    static char out[64 * 1024], err[8 * 1024];
    assert_int_equal(dh_tmpdir(dir, sizeof dir, "lua"), 0);
    assert_int_equal(dlock__scripts_dump(dir), 0);

    /* One file per script, none empty. */
    snprintf(ls, sizeof ls, "%s/acquire.lua", dir);
    assert_true(dh_file_lines(ls) > 10);

    const char *const argv[] = { "luacheck",   "--config", DLOCK_SOURCE_DIR "/.luacheckrc",
                                 "--no-color", "--codes",  dir,
                                 NULL };
    int st = dh_run(argv, NULL, 60000, out, sizeof out, err, sizeof err);
    if (st != 0)
        fail_msg("luacheck found problems in the composed scripts (exit %d):\n%s%s", st, out, err);
    const char *total = strstr(out, "Total:");
    print_message("%s", total ? total : out);
}

/* 1 if luacheck can be run. */
static int have_luacheck(void)
{
    const char *const argv[] = { "luacheck", "--version", NULL };
    return dh_run(argv, NULL, 30000, NULL, 0, NULL, 0) == 0;
}

int main(void)
{
    if (!have_luacheck()) {
        printf("luacheck not found (Debian package lua-check): skipped\n");
        dh_cleanup();
        return 77; /* ctest: SKIP_RETURN_CODE */
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_luacheck_scripts),
    };
    return cmocka_run_group_tests_name("lua", tests, NULL, dh_group_teardown);
}
