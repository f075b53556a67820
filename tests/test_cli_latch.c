/*
 * test_cli_latch.c — `dlock latch` across processes: waiters released by
 * the last `latch down`, exit statuses (75 for a live latch and a wait
 * that runs out, 64 below zero and for bad input, 3 for no latch), a
 * worker killed with SIGKILL before its count-down (the waiters are told
 * at the latch's TTL), a waiter killed with SIGKILL (the others are not
 * disturbed), and a signal ending a wait.
 *
 * Design. Every invocation goes through the CLI runner (tests/cli_runner.h:
 * own process group, captured output, hard timeout, DLOCK_* cleared). A
 * background waiter is known to be waiting when the latch's channel has
 * its subscription (PUBSUB NUMSUB of the documented dlock:{KEY}:lchan);
 * every wait is a bounded poll of such a condition.
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

struct subs {
    const char *chan;
    int64_t n;
};

static int has_subscribers(void *arg)
{
    struct subs *s = arg;
    redisReply *r = dh_cmd(srv, 0, "PUBSUB NUMSUB %s", s->chan);
    int ok =
        r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[1]->integer >= s->n;
    freeReplyObject(r);
    return ok;
}

/* Wait until n `latch wait` processes listen on latch `key`. */
static void wait_waiters(const char *key, int64_t n)
{
    char chan[256];
    snprintf(chan, sizeof chan, "dlock:{%s}:lchan", key);
    struct subs s = { chan, n };
    if (!dh_wait_until(has_subscribers, &s, 10000))
        fail_msg("latch %s never had %lld waiters", key, (long long)n);
}

/* init, get, down to zero (printing what is left), wait, and the rules. */
static void test_counting(void **state)
{
    (void)state;
    dh_cli_expect(dh_cli("-u", srv->url, "latch", "init", "c:l", "2"), 0, "latch init");
    dh_cli_expect(dh_cli("-u", srv->url, "latch", "get", "c:l"), 0, "latch get");
    assert_string_equal(dh_out, "2\n");
    dh_cli_expect(dh_cli("-u", srv->url, "latch", "init", "c:l", "5"), 75, "init of a live latch");
    assert_non_null(strstr(dh_err, "is live: 2 count-downs left"));
    dh_cli_expect(dh_cli("-u", srv->url, "-q", "latch", "init", "c:l", "5"), 75, "-q init");
    assert_string_equal(dh_err, "");
    dh_cli_expect(dh_cli("-u", srv->url, "latch", "wait", "--wait", "100ms", "c:l"), 75,
                  "wait that runs out");
    assert_non_null(strstr(dh_err, "2 count-downs left"));
    dh_cli_expect(dh_cli("-u", srv->url, "latch", "down", "c:l"), 0, "latch down");
    assert_string_equal(dh_out, "1\n");
    dh_cli_expect(dh_cli("-u", srv->url, "latch", "down", "c:l"), 0, "latch down");
    assert_string_equal(dh_out, "0\n");
    dh_cli_expect(dh_cli("-u", srv->url, "latch", "wait", "c:l"), 0, "wait at zero");
    /* below zero: refused */
    dh_cli_expect(dh_cli("-u", srv->url, "latch", "down", "c:l"), 64, "down at zero");
    assert_non_null(strstr(dh_err, "already at zero"));
    assert_string_equal(dh_out, "");
    dh_cli_expect(dh_cli("-u", srv->url, "latch", "get", "c:l"), 0, "get at zero");
    assert_string_equal(dh_out, "0\n");
    dh_cli_expect(dh_cli("-u", srv->url, "latch", "down", "c:none"), 64, "down of no latch");
    assert_non_null(strstr(dh_err, "does not exist"));
    dh_cli_expect(dh_cli("-u", srv->url, "latch", "get", "c:none"), 3, "get of no latch");
    assert_non_null(strstr(dh_err, "c:none: no latch"));
    assert_string_equal(dh_out, "");
    /* re-armed at zero */
    dh_cli_expect(dh_cli("-u", srv->url, "latch", "init", "--ttl", "1m", "c:l", "1"), 0,
                  "init at zero");
}

/* Usage errors: 64 with a message, nothing sent. */
static void test_bad_input(void **state)
{
    (void)state;
    static const char *const bad[][6] = {
        { "latch", NULL },
        { "latch", "frob", "k", NULL },
        { "latch", "init", "k", NULL },
        { "latch", "init", "k", "0", NULL },
        { "latch", "init", "k", "-2", NULL },
        { "latch", "init", "k", "x", NULL },
        { "latch", "init", "--ttl", "0", "k", NULL },
        { "latch", "init", "--wait", "1s", "k", NULL },
        { "latch", "wait", "--ttl", "1s", "k", NULL },
        { "latch", "wait", "k", "extra", NULL },
        { "latch", "down", "", NULL },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *args[10] = { "-u", srv->url };
        size_t n = 2;
        for (size_t k = 0; bad[i][k] != NULL; k++)
            args[n++] = bad[i][k];
        args[n] = NULL;
        dh_cli_expect(dh_cli_argv(args, NULL, DH_CLI_TIMEOUT_MS), 64, bad[i][1] ? bad[i][1] : "");
        assert_non_null(strstr(dh_err, "dlock latch: "));
    }
    assert_int_equal(dh_dbsize(srv, 0), 0);
}

/* Three waiting processes go on at the third count-down, not before; a
 * fourth waiter killed with SIGKILL disturbs nothing. */
static void test_waiters_released(void **state)
{
    (void)state;
    dh_cli_expect(dh_cli("-u", srv->url, "latch", "init", "w:l", "3"), 0, "init");
    dh_proc *w[4];
    for (int i = 0; i < 4; i++)
        w[i] = dh_cli_bg("-u", srv->url, "latch", "wait", "--wait", "20s", "w:l");
    wait_waiters("w:l", 4);
    assert_int_equal(dh_proc_signal(w[3], SIGKILL), 0);
    assert_int_equal(dh_proc_wait(w[3], 5000), 128 + SIGKILL);
    for (int k = 0; k < 2; k++) {
        dh_cli_expect(dh_cli("-u", srv->url, "latch", "down", "w:l"), 0, "down");
        for (int i = 0; i < 3; i++)
            assert_int_equal(dh_proc_done(w[i]), 0);
    }
    dh_cli_expect(dh_cli("-u", srv->url, "latch", "down", "w:l"), 0, "last down");
    for (int i = 0; i < 3; i++) {
        dh_cli_expect_proc(w[i], 0, "latch wait released");
        dh_proc_free(w[i]);
    }
    dh_proc_free(w[3]);
}

/* Workers run `CMD && dlock latch down`; one is killed with SIGKILL
 * before it counts down. The waiter is not left waiting forever: the
 * latch expires at its --ttl and the waiter exits 75, saying so. */
static void test_worker_killed(void **state)
{
    (void)state;
    char script[DH_PATH_MAX], go[DH_PATH_MAX];
    assert_int_equal(dh_tmpfile(go, sizeof go, "go"), 0);
    assert_int_equal(dh_tmpfile(script, sizeof script, "worker.sh"), 0);
    char body[1024];
    snprintf(body, sizeof body,
             "while [ ! -e '%s' ]; do sleep 0.02; done\n"
             "exec \"$DLOCK_CLI\" -u '%s' latch down k:l\n",
             go, srv->url);
    assert_int_equal(dh_write_file(script, body), 0);
    dh_cli_expect(dh_cli("-u", srv->url, "latch", "init", "--ttl", "1500ms", "k:l", "3"), 0,
                  "init");
    const char *env[] = { "DLOCK_CLI=" DLOCK_CLI_PATH, NULL };
    const char *argv[] = { "sh", script, NULL };
    dh_proc *workers[3];
    for (int i = 0; i < 3; i++)
        workers[i] = dh_spawn(argv, env);
    dh_proc *waiter = dh_cli_bg("-u", srv->url, "latch", "wait", "k:l");
    wait_waiters("k:l", 1);
    assert_int_equal(dh_proc_signal(workers[2], SIGKILL), 0);
    assert_int_equal(dh_proc_wait(workers[2], 5000), 128 + SIGKILL);
    assert_int_equal(dh_write_file(go, "x"), 0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(dh_proc_wait(workers[i], 10000), 0);
        dh_proc_free(workers[i]);
    }
    dh_proc_free(workers[2]);
    int64_t t0 = dh_now_ms();
    dh_cli_expect_proc(waiter, 75, "waiter of a latch whose worker was killed");
    assert_non_null(strstr(dh_err, "expired before its count reached zero"));
    print_message("latch wait told %lld ms after the last count-down (--ttl 1500ms)\n",
                  (long long)(dh_now_ms() - t0));
    dh_proc_free(waiter);
    dh_cli_expect(dh_cli("-u", srv->url, "latch", "get", "k:l"), 3, "get after expiry");
}

/* A signal ends a wait: 128+N, at once. */
static void test_signal(void **state)
{
    (void)state;
    dh_cli_expect(dh_cli("-u", srv->url, "latch", "init", "s:l", "1"), 0, "init");
    dh_proc *w = dh_cli_bg("-u", srv->url, "latch", "wait", "s:l");
    wait_waiters("s:l", 1);
    assert_int_equal(dh_proc_signal(w, SIGTERM), 0);
    dh_cli_expect_proc(w, 128 + SIGTERM, "latch wait interrupted");
    dh_proc_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_input),        cmocka_unit_test(test_counting),
        cmocka_unit_test(test_waiters_released), cmocka_unit_test(test_worker_killed),
        cmocka_unit_test(test_signal),
    };
    return cmocka_run_group_tests_name("cli_latch", tests, group_setup, dh_group_teardown);
}
