/*
 * test_install.c — dlock as a packager and a user's project meet it:
 * `cmake --install` of this build into a temporary prefix, then the
 * installed tool (relative RPATH), a CMake project with find_package(dlock)
 * (shared and static) and a pkg-config build, each taking a lock on a
 * private server. The steps are in tests/install/check.sh, which this test
 * runs with a bound and whose output it shows on failure.
 */
#include <stdio.h>
#include <string.h>

#include "harness.h"

#if !defined(DLOCK_SOURCE_DIR) || !defined(DLOCK_BUILD_DIR) || !defined(DLOCK_CMAKE_COMMAND) ||    \
    !defined(DLOCK_C_COMPILER) || !defined(DLOCK_CONSUMER_CFLAGS)
#error "the build must define DLOCK_SOURCE_DIR, DLOCK_BUILD_DIR, DLOCK_CMAKE_COMMAND, ..."
#endif

static void test_install_and_consume(void **state)
{
    (void)state;
    dh_redis *r = dh_redis_start(NULL);
    assert_non_null(r);
    char work[DH_PATH_MAX];
    assert_int_equal(dh_tmpfile(work, sizeof work, "install"), 0);
    const char *mk[] = { "mkdir", "-p", work, NULL };
    assert_int_equal(dh_run(mk, NULL, 10000, NULL, 0, NULL, 0), 0);

    const char *argv[] = { "sh",
                           DLOCK_SOURCE_DIR "/tests/install/check.sh",
                           DLOCK_BUILD_DIR,
                           DLOCK_SOURCE_DIR,
                           r->url,
                           work,
                           NULL };
    const char *env[] = { "CC=" DLOCK_C_COMPILER,
                          "CMAKE=" DLOCK_CMAKE_COMMAND,
                          "CONSUMER_CFLAGS=" DLOCK_CONSUMER_CFLAGS,
                          "DLOCK_URL",
                          "DLOCK_PREFIX",
                          "LD_LIBRARY_PATH",
                          NULL };
    static char out[128 * 1024], err[64 * 1024];
    int st = dh_run(argv, env, 150000, out, sizeof out, err, sizeof err);
    printf("%s", out);
    if (st != 0)
        fail_msg("check.sh exited %d\nstdout:\n%s\nstderr:\n%s", st, out, err);
    /* Each consumer took the lock: four fencing tokens and the tool's. */
    int tokens = 0;
    for (const char *p = out; (p = strstr(p, "fencing token ")) != NULL; p++)
        tokens++;
    assert_int_equal(tokens, 4);
    assert_non_null(strstr(out, "== all good"));
    dh_redis_stop(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_install_and_consume),
    };
    return cmocka_run_group_tests_name("install", tests, NULL, NULL);
}
