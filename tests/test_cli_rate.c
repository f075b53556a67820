/*
 * test_cli_rate.c — `dlock run --rate N/D KEY -- CMD`: starts limited to
 * N per D across processes (counted on the server's clock, exact), one
 * run killed with SIGKILL while it waits for its slot, --no-wait over the
 * rate (75), a --wait too short (75), CMD's environment (nothing held),
 * another rate on a busy key (64), and bad input (--rate 0/1s, 5/0s: 64).
 *
 * Design. Every invocation goes through the CLI runner. Each CMD prints
 * the server's TIME (redis-cli), so a start is stamped on the server's
 * clock, never earlier than its slot; the check is cumulative from T0, the
 * server time before any run started: after the k-th start, k <= burst +
 * (t_k - T0) x rate. Exact whatever the delays, so it cannot flake.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_runner.h"

static dh_redis *srv;

static int group_setup(void **state)
{
    (void)state;
    return dh_group_start(&srv, NULL);
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

#define RUNS 24
#define RATE 8 /* per second, burst 8 */

/* RUNS runs of `--rate 8/1s` at once, one killed with SIGKILL while it
 * waits: never more starts than 8 + elapsed x 8/s. */
static void test_exact(void **state)
{
    (void)state;
    char port[16];
    snprintf(port, sizeof port, "%d", srv->port);
    int64_t t0 = dh_server_us(srv);
    assert_true(t0 > 0);
    dh_proc *p[RUNS];
    for (int i = 0; i < RUNS; i++)
        p[i] = dh_cli_bg("-u", srv->url, "run", "--rate", "8/1s", "x:r", "--", "redis-cli", "-p",
                         port, "TIME");
    assert_int_equal(dh_proc_signal(p[RUNS - 1], SIGKILL), 0);
    int64_t starts[RUNS];
    int n = 0;
    for (int i = 0; i < RUNS; i++) {
        int st = dh_cli_wait(p[i], 20000);
        if (i == RUNS - 1) {
            assert_int_equal(st, 128 + SIGKILL);
        } else {
            dh_cli_expect(st, 0, "run --rate");
            long long sec, usec;
            if (sscanf(dh_out, "%lld\n%lld", &sec, &usec) != 2)
                fail_msg("CMD did not print the server time: %s", dh_out);
            starts[n++] = sec * 1000000 + usec;
        }
        dh_proc_free(p[i]);
    }
    qsort(starts, (size_t)n, sizeof starts[0], cmp64);
    int violations = 0;
    double closest = 1e9;
    for (int k = 1; k <= n; k++) {
        double allowed = RATE + (double)(starts[k - 1] - t0) * RATE / 1e6;
        if (k > allowed + 1e-9)
            violations++;
        if (allowed - k < closest)
            closest = allowed - k;
    }
    print_message("%d runs of --rate %d/1s (one killed): %d started within %.2f s; %d "
                  "violations of burst + elapsed x rate; closest %.3f starts below it\n",
                  RUNS, RATE, n, (double)(starts[n - 1] - t0) / 1e6, violations, closest);
    assert_int_equal(violations, 0);
    /* they did not wait needlessly: RUNS - 1 starts need (RUNS - 1 - 8) / 8 s */
    assert_true(starts[n - 1] - t0 < 10 * 1000000);
}

/* --no-wait over the rate is 75 and says when the next slot is; a --wait
 * too short is 75 at once; CMD sees DLOCK_KEY and nothing held. */
static void test_no_wait_and_env(void **state)
{
    (void)state;
    for (int i = 0; i < 3; i++) {
        dh_cli_expect(
            dh_cli("-u", srv->url, "run", "--no-wait", "--rate", "3/10s", "n:r", "--", "sh", "-c",
                   "echo \"$DLOCK_KEY|${DLOCK_FENCING_TOKEN-unset}|${DLOCK_HELD-unset}\""),
            0, "run --rate within the burst");
        assert_string_equal(dh_out, "n:r|unset|unset\n");
    }
    dh_cli_expect(dh_cli("-u", srv->url, "run", "--no-wait", "--rate", "3/10s", "n:r", "--", "sh",
                         "-c", "echo ran"),
                  75, "run --rate --no-wait over the rate");
    assert_string_equal(dh_out, "");
    assert_non_null(strstr(dh_err, "over the rate; the next slot is in "));
    int64_t t0 = dh_now_ms();
    dh_cli_expect(
        dh_cli("-u", srv->url, "run", "--wait", "100ms", "--rate", "3/10s", "n:r", "--", "true"),
        75, "run --rate --wait too short");
    assert_non_null(strstr(dh_err, "beyond the wait budget"));
    assert_true(dh_now_ms() - t0 < 5000);
    dh_cli_expect(dh_cli("-u", srv->url, "run", "--no-wait", "--conflict-exit-code", "9", "--rate",
                         "3/10s", "n:r", "--", "true"),
                  9, "--conflict-exit-code with --rate");
    /* another rate while the limiter is busy */
    dh_cli_expect(
        dh_cli("-u", srv->url, "run", "--no-wait", "--rate", "4/10s", "n:r", "--", "true"), 64,
        "another rate on a busy key");
    assert_non_null(strstr(dh_err, "in use at 3 per 10000 ms"));
}

/* Bad input: 64 with a message, nothing sent. */
static void test_bad_input(void **state)
{
    (void)state;
    static const char *const bad[][8] = {
        { "--rate", "0/1s", "b:r", NULL },
        { "--rate", "5/0s", "b:r", NULL },
        { "--rate", "5", "b:r", NULL },
        { "--rate", "/1s", "b:r", NULL },
        { "--rate", "5/x", "b:r", NULL },
        { "--rate", "-1/1s", "b:r", NULL },
        { "--rate", "1000001/1s", "b:r", NULL },
        { "--rate", "5/1s", "b:r", "b:s", NULL },
        { "--rate", "5/1s", "--limit", "2", "b:r", NULL },
        { "--rate", "5/1s", "--shared", "b:r", NULL },
        { "--rate", "5/1s", "--ttl", "1s", "b:r", NULL },
    };
    static const char *const want[] = {
        "N must be from 1 to 1000000",
        "the period must be at least 1ms",
        "expected N/D",
        "expected N/D",
        "--rate '5/x'",
        "N must be from 1",
        "N must be from 1",
        "--rate takes exactly one KEY",
        "--rate takes exactly one KEY",
        "--rate takes exactly one KEY",
        "--ttl and --grace do not apply",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *args[16] = { "-u", srv->url, "run" };
        size_t n = 3;
        for (size_t k = 0; k < 8 && bad[i][k] != NULL; k++)
            args[n++] = bad[i][k];
        args[n++] = "--";
        args[n++] = "true";
        args[n] = NULL;
        dh_cli_expect(dh_cli_argv(args, NULL, DH_CLI_TIMEOUT_MS), 64, want[i]);
        if (!strstr(dh_err, want[i]))
            fail_msg("case %zu: stderr lacks \"%s\": %s", i, want[i], dh_err);
    }
    assert_int_equal(dh_dbsize(srv, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_exact),
        cmocka_unit_test(test_no_wait_and_env),
    };
    return cmocka_run_group_tests_name("cli_rate", tests, group_setup, dh_group_teardown);
}
