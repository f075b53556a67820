/*
 * test_cli_permits.c — `dlock run --limit N --permits K`: K permits at
 * once (DLOCK_PERMITS, DLOCK_SLOT the first slot), all or none, a large
 * request not overtaken by a small one behind it, `status` showing the
 * limit and each holder's permits, a holder killed with SIGKILL (its
 * permits come back at its TTL), a limit conflict, and bad input (K > N,
 * K < 1, --permits without --limit: 64).
 *
 * Design. Every invocation goes through the CLI runner. A holder keeps
 * its permits until the test writes its "go" file; the server's view
 * (dlock_key_state_get through the test's own client) says when holders
 * and waiters are there. Every wait is a bounded poll.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli_runner.h"

static dh_redis *srv;
static dlock_client *viewer;

static int group_setup(void **state)
{
    (void)state;
    return dh_group_start_client(&srv, &viewer, "viewer");
}

struct kstate {
    const char *key;
    int permits; /* held in all */
    int64_t waiters;
};

static int state_is(void *arg)
{
    struct kstate *k = arg;
    dlock_key_state *s = NULL;
    if (dlock_key_state_get(&s, viewer, k->key, DLOCK_KIND_SEMAPHORE) != 0)
        return 0;
    int held = 0;
    for (size_t i = 0; i < s->nholders; i++)
        held += s->holders[i].permits;
    int ok = held == k->permits && s->waiters == k->waiters;
    dlock_key_state_free(s);
    return ok;
}

static void wait_state(const char *key, int permits, int64_t waiters)
{
    struct kstate k = { key, permits, waiters };
    if (!dh_wait_until(state_is, &k, 10000))
        fail_msg("semaphore %s never had %d permits held and %lld waiters", key, permits,
                 (long long)waiters);
}

/* A holder of --permits K until `go` exists; it prints its environment. */
static dh_proc *holder(const char *go, const char *limit, const char *permits, const char *key)
{
    static char cmd[DH_PATH_MAX + 128];
    snprintf(cmd, sizeof cmd,
             "echo \"$DLOCK_SLOT $DLOCK_PERMITS\"; while [ ! -e '%s' ]; do sleep 0.02; done", go);
    return dh_cli_bg("-u", srv->url, "run", "--limit", limit, "--permits", permits, key, "--", "sh",
                     "-c", cmd);
}

/* Two of three permits held: status shows them, a request for two waits
 * and one for one behind it does not overtake it. */
static void test_permits(void **state)
{
    (void)state;
    char go[DH_PATH_MAX];
    assert_int_equal(dh_tmpfile(go, sizeof go, "go"), 0);
    dh_proc *h = holder(go, "3", "2", "p:sem");
    wait_state("p:sem", 2, 0);
    dh_cli_expect(dh_cli("-u", srv->url, "status", "p:sem"), 0, "status");
    assert_non_null(strstr(dh_out, "held  semaphore  limit 3  waiters 0"));
    assert_non_null(strstr(dh_out, "permit slot 0 permits 2"));
    dh_cli_expect(dh_cli("-u", srv->url, "status", "--json", "p:sem"), 0, "status --json");
    assert_true(dh_json_valid(dh_out));
    assert_non_null(strstr(dh_out, "\"limit\":3"));
    assert_non_null(strstr(dh_out, "\"permits\":2"));
    /* two more do not fit: busy, says how many are free */
    dh_cli_expect(dh_cli("-u", srv->url, "run", "--no-wait", "--limit", "3", "--permits", "2",
                         "p:sem", "--", "echo", "ran"),
                  75, "--permits 2 with one free");
    assert_non_null(strstr(dh_err, "2 permits wanted, 1 of 3 free: held by "));
    assert_non_null(strstr(dh_err, "(slot 0, 2 permits)"));
    /* a waiting request for two is not overtaken by a request for one */
    dh_proc *big = dh_cli_bg("-u", srv->url, "run", "--limit", "3", "--permits", "2", "p:sem", "--",
                             "sh", "-c", "echo \"big $DLOCK_PERMITS\"");
    wait_state("p:sem", 2, 1);
    dh_cli_expect(
        dh_cli("-u", srv->url, "run", "--no-wait", "--limit", "3", "p:sem", "--", "echo", "small"),
        75, "one permit behind a queued request for two");
    assert_int_equal(dh_write_file(go, "x"), 0);
    dh_cli_expect_proc(h, 0, "holder of two permits");
    assert_string_equal(dh_out, "0 2\n");
    dh_cli_expect_proc(big, 0, "the request for two");
    assert_string_equal(dh_out, "big 2\n");
    dh_proc_free(h);
    dh_proc_free(big);
    /* without --permits: one permit, DLOCK_PERMITS=1 */
    dh_cli_expect(dh_cli("-u", srv->url, "run", "--limit", "3", "p:sem", "--", "sh", "-c",
                         "echo \"$DLOCK_PERMITS\""),
                  0, "--limit alone");
    assert_string_equal(dh_out, "1\n");
}

/* A holder killed with SIGKILL: its permits come back when its TTL runs
 * out, and a request for all of them gets in. */
static void test_holder_killed(void **state)
{
    (void)state;
    dh_proc *h = dh_cli_bg("-u", srv->url, "run", "--ttl", "1s", "--limit", "3", "--permits", "3",
                           "k:sem", "--", "sleep", "60");
    wait_state("k:sem", 3, 0);
    assert_int_equal(dh_proc_signal(h, SIGKILL), 0);
    assert_int_equal(dh_proc_wait(h, 5000), 128 + SIGKILL);
    int64_t t0 = dh_now_ms();
    dh_cli_expect(dh_cli("-u", srv->url, "run", "--wait", "10s", "--limit", "3", "--permits", "3",
                         "k:sem", "--", "true"),
                  0, "all permits after the holder was killed");
    print_message("3 permits of a holder killed with SIGKILL (--ttl 1s) back after %lld ms\n",
                  (long long)(dh_now_ms() - t0));
    dh_proc_free(h);
}

/* Bad input, and a limit differing from the holders': 64 with a message. */
static void test_bad_input(void **state)
{
    (void)state;
    static const char *const bad[][6] = {
        { "--limit", "3", "--permits", "4", NULL },
        { "--permits", "2", NULL },
        { "--limit", "3", "--permits", "0", NULL },
        { "--limit", "3", "--permits", "x", NULL },
        { "--limit", "0", NULL },
    };
    static const char *const want[] = {
        "--permits 4 is more than --limit 3",
        "--permits needs --limit N",
        "--permits '0': expected a number from 1",
        "--permits 'x'",
        "--limit '0'",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *args[16] = { "-u", srv->url, "run" };
        size_t n = 3;
        for (size_t k = 0; k < 6 && bad[i][k] != NULL; k++)
            args[n++] = bad[i][k];
        args[n++] = "b:sem";
        args[n++] = "--";
        args[n++] = "true";
        args[n] = NULL;
        dh_cli_expect(dh_cli_argv(args, NULL, DH_CLI_TIMEOUT_MS), 64, want[i]);
        if (!strstr(dh_err, want[i]))
            fail_msg("stderr lacks \"%s\": %s", want[i], dh_err);
    }
    char go[DH_PATH_MAX];
    assert_int_equal(dh_tmpfile(go, sizeof go, "go-conflict"), 0);
    dh_proc *h = holder(go, "2", "1", "c:sem");
    wait_state("c:sem", 1, 0);
    dh_cli_expect(dh_cli("-u", srv->url, "run", "--no-wait", "--limit", "5", "c:sem", "--", "true"),
                  64, "another limit");
    assert_non_null(strstr(dh_err, "2"));
    assert_non_null(strstr(dh_err, "5"));
    assert_int_equal(dh_write_file(go, "x"), 0);
    dh_cli_expect_proc(h, 0, "holder");
    dh_proc_free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_permits),
        cmocka_unit_test(test_holder_killed),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests_name("cli_permits", tests, group_setup, dh_group_teardown);
}
