/*
 * test_cli_barrier.c — `dlock barrier` across processes: N processes go on
 * together and the barrier is used again, a party killed with SIGKILL
 * stops counting (the next arrival does not trip the barrier with it), a
 * wait that runs out (75) leaves, another N while parties wait (64), bad
 * input (64), a signal (128+N).
 *
 * Design. Every invocation goes through the CLI runner (own process
 * group, captured output, hard timeout). The server's count of live
 * arrivals (ZCARD of the documented dlock:{KEY}:barr) says when parties
 * are waiting; every wait is a bounded poll of it.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli_runner.h"

static dh_redis *srv;

static int group_setup(void **state)
{
    (void)state;
    return dh_group_start(&srv, NULL);
}

struct arr {
    const char *key;
    int64_t n;
};

static int arrivals_are(void *arg)
{
    struct arr *a = arg;
    return dh_cmd_int(srv, 0, "ZCARD dlock:{%s}:barr", a->key) == a->n;
}

static void wait_arrivals(const char *key, int64_t n)
{
    struct arr a = { key, n };
    if (!dh_wait_until(arrivals_are, &a, 10000))
        fail_msg("barrier %s never had %lld arrivals", key, (long long)n);
}

/* Three processes go on together; twice over the same KEY. */
static void test_trip_and_reuse(void **state)
{
    (void)state;
    for (int round = 0; round < 2; round++) {
        dh_proc *p[2];
        for (int i = 0; i < 2; i++)
            p[i] = dh_cli_bg("-u", srv->url, "barrier", "--wait", "20s", "t:b", "3");
        wait_arrivals("t:b", 2);
        for (int i = 0; i < 2; i++)
            assert_int_equal(dh_proc_done(p[i]), 0);
        dh_cli_expect(dh_cli("-u", srv->url, "barrier", "t:b", "3"), 0, "the third party");
        for (int i = 0; i < 2; i++) {
            dh_cli_expect_proc(p[i], 0, "a waiting party");
            dh_proc_free(p[i]);
        }
    }
}

/* A party killed with SIGKILL stops counting within its life (3 s): the
 * next arrival waits with the live one, and the one after trips it. */
static void test_party_killed(void **state)
{
    (void)state;
    dh_proc *a = dh_cli_bg("-u", srv->url, "barrier", "--wait", "20s", "k:b", "3");
    dh_proc *dead = dh_cli_bg("-u", srv->url, "barrier", "--wait", "20s", "k:b", "3");
    wait_arrivals("k:b", 2);
    int64_t t0 = dh_now_ms();
    assert_int_equal(dh_proc_signal(dead, SIGKILL), 0);
    assert_int_equal(dh_proc_wait(dead, 5000), 128 + SIGKILL);
    wait_arrivals("k:b", 1);
    int64_t gone = dh_now_ms() - t0;
    dh_proc *b = dh_cli_bg("-u", srv->url, "barrier", "--wait", "20s", "k:b", "3");
    wait_arrivals("k:b", 2);
    assert_int_equal(dh_proc_done(a), 0);
    assert_int_equal(dh_proc_done(b), 0);
    dh_cli_expect(dh_cli("-u", srv->url, "barrier", "k:b", "3"), 0, "the third live party");
    dh_cli_expect_proc(a, 0, "first party");
    dh_cli_expect_proc(b, 0, "party after the kill");
    print_message("the killed party stopped counting after %lld ms\n", (long long)gone);
    dh_proc_free(a);
    dh_proc_free(b);
    dh_proc_free(dead);
}

/* A wait that runs out is 75 and leaves; another N while a party waits is
 * 64 naming both; bad input is 64; a signal is 128+N and leaves. */
static void test_errors(void **state)
{
    (void)state;
    dh_cli_expect(dh_cli("-u", srv->url, "barrier", "--wait", "200ms", "e:b", "2"), 75,
                  "barrier --wait that runs out");
    assert_non_null(strstr(dh_err, "1 of 2 parties arrived"));
    assert_int_equal(dh_cmd_int(srv, 0, "ZCARD dlock:{e:b}:barr"), 0);

    dh_proc *p = dh_cli_bg("-u", srv->url, "barrier", "e:b", "3");
    wait_arrivals("e:b", 1);
    dh_cli_expect(dh_cli("-u", srv->url, "barrier", "--wait", "1s", "e:b", "2"), 64, "another N");
    assert_non_null(strstr(dh_err, "waiting for 2 parties"));
    assert_non_null(strstr(dh_err, "expect 3"));
    assert_int_equal(dh_proc_signal(p, SIGINT), 0);
    dh_cli_expect_proc(p, 128 + SIGINT, "barrier interrupted");
    dh_proc_free(p);
    assert_int_equal(dh_cmd_int(srv, 0, "ZCARD dlock:{e:b}:barr"), 0);

    static const char *const bad[][5] = {
        { "barrier", NULL },           { "barrier", "k", NULL },
        { "barrier", "k", "0", NULL }, { "barrier", "k", "100001", NULL },
        { "barrier", "k", "x", NULL }, { "barrier", "k", "2", "3", NULL },
        { "barrier", "", "2", NULL },  { "barrier", "--ttl", "1s", "k", "2" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *args[10] = { "-u", srv->url };
        size_t n = 2;
        for (size_t k = 0; k < 5 && bad[i][k] != NULL; k++)
            args[n++] = bad[i][k];
        args[n] = NULL;
        dh_cli_expect(dh_cli_argv(args, NULL, DH_CLI_TIMEOUT_MS), 64, "bad barrier input");
        assert_non_null(strstr(dh_err, "dlock barrier: "));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_trip_and_reuse),
        cmocka_unit_test(test_party_killed),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests_name("cli_barrier", tests, group_setup, dh_group_teardown);
}
