/*
 * test_cli.c — the `dlock` tool (DLOCK_CLI_PATH) against private servers.
 *
 * Design. Every invocation goes through the harness's CLI runner
 * (tests/cli_runner.h): its own process group, captured stdout/stderr in
 * dh_out/dh_err, a hard timeout (a hung CLI fails the test instead of
 * hanging it), and an environment with the DLOCK_* variables cleared so
 * the developer's settings cannot leak in. Conflicts
 * are set up by holding the lock through the library in the test process
 * (same default prefix as the tool). State is checked in Redis with the
 * harness, finding the lock key by the owner id given with --id. The
 * processes CMD leaves behind are checked by pid (a zombie counts as gone).
 * The loss tests pause or wipe a server of their own, so the shared server
 * stays healthy for the other tests. Long conditions ("the lock exists for
 * 3 s") are polls that must run out, not sleeps.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli_runner.h"

#define PW "Cl1-pass-9032"
#define WRONG_PW "Cl1-wrong-1187"
#define NOPERM_PW "Cl1-noperm-5521"

static dh_redis *srv;
static dh_redis *auth;
static dlock_client *holder; /* the test's own client, for conflicts */

static int group_setup(void **state)
{
    (void)state;
    static const char *const extra[] = { "--requirepass", PW, NULL };
    if (dh_group_start(&auth, extra) != 0)
        return -1;
    return dh_group_start_client(&srv, &holder, "cli-test-holder");
}

/* ---------------------------------------------------------------- helpers */

/* Hold `key` through the library (ttl 30 s, renewed). */
static dlock_lock *hold(const char *key)
{
    dlock_lock_opts o = dh_opts(0, 0);
    dlock_lock *l = NULL;
    dh_assert_rc(dlock_acquire(&l, holder, key, &o), 0);
    return l;
}

/* Fail unless the last run's stderr contains `needle`. */
static void expect_err_has(const char *needle)
{
    if (strstr(dh_err, needle) == NULL)
        fail_msg("stderr lacks \"%s\":\n%s", needle, dh_err);
}

struct keywatch {
    dh_redis *r;
    const char *key;
    const char *owner;
};

static int key_present(void *arg)
{
    struct keywatch *k = arg;
    char name[1024];
    return dh_find_key(name, sizeof name, k->r, 0, k->key, k->owner) == 1;
}

static int key_absent(void *arg)
{
    return !key_present(arg);
}

/* Both pids written (two lines): a dh_wait_until condition. */
static int pidfile_ready(void *path)
{
    return dh_file_lines(path) >= 2;
}

/* Two pids, one per line. */
static void read_two_pids(const char *path, pid_t *a, pid_t *b)
{
    char buf[256];
    assert_true(dh_read_file(buf, sizeof buf, path) > 0);
    char *end = NULL;
    long x = strtol(buf, &end, 10);
    assert_true(end != buf && *end == '\n');
    const char *p = end + 1;
    long y = strtol(p, &end, 10);
    assert_true(end != p);
    assert_true(x > 1 && y > 1);
    *a = (pid_t)x;
    *b = (pid_t)y;
}

struct two_pids {
    pid_t a, b;
};

static int both_dead(void *arg)
{
    struct two_pids *t = arg;
    return dh_pid_dead(t->a) && dh_pid_dead(t->b);
}

/* ------------------------------------------------------------------ tests */

static void test_run_env(void **state)
{
    (void)state;
    int st = dh_cli("-u", srv->url, "run", "c:env", "--", "sh", "-c",
                    "echo \"$DLOCK_KEY $DLOCK_FENCING_TOKEN\"");
    dh_cli_expect(st, 0, "run echo");
    const char *sp = strchr(dh_out, ' ');
    assert_non_null(sp);
    assert_true(strncmp(dh_out, "c:env ", 6) == 0);
    const char *nl = strchr(sp, '\n');
    assert_non_null(nl);
    if (!dh_is_digits(sp + 1, (size_t)(nl - sp - 1)))
        fail_msg("DLOCK_FENCING_TOKEN is not a number: \"%s\"", dh_out);
    char *end = NULL;
    unsigned long long t1 = strtoull(sp + 1, &end, 10);
    assert_true(t1 > 0);

    /* Released after CMD: a second run gets it at once, with a larger token. */
    st = dh_cli("-u", srv->url, "run", "--no-wait", "c:env", "--", "sh", "-c",
                "echo \"$DLOCK_FENCING_TOKEN\"");
    dh_cli_expect(st, 0, "second run");
    unsigned long long t2 = strtoull(dh_out, &end, 10);
    assert_true(t2 > t1);

    /* $DLOCK_URL is the default URL. */
    char envurl[128];
    snprintf(envurl, sizeof envurl, "DLOCK_URL=%s", srv->url);
    const char *env[] = { envurl, NULL };
    st = dh_cli_env(env, 20000, "run", "c:env", "--", "sh", "-c", "echo \"$DLOCK_KEY\"",
                    (const char *)NULL);
    dh_cli_expect(st, 0, "run with $DLOCK_URL");
    assert_string_equal(dh_out, "c:env\n");
}

static void test_exit_status(void **state)
{
    (void)state;
    dh_cli_expect(dh_cli("-u", srv->url, "run", "c:exit", "--", "sh", "-c", "exit 7"), 7, "exit 7");
    dh_cli_expect(dh_cli("-u", srv->url, "run", "c:exit", "--", "true"), 0, "true");
    dh_cli_expect(dh_cli("-u", srv->url, "run", "c:exit", "--", "false"), 1, "false");
    dh_cli_expect(dh_cli("-u", srv->url, "run", "c:exit", "--", "sh", "-c", "kill -TERM $$"),
                  128 + SIGTERM, "killed by SIGTERM");
    dh_cli_expect(dh_cli("-u", srv->url, "run", "c:exit", "--", "sh", "-c", "kill -KILL $$"),
                  128 + SIGKILL, "killed by SIGKILL");
    dh_cli_expect(dh_cli("-u", srv->url, "run", "c:exit", "--", "dlock-test-no-such-command-x"),
                  127, "command not found in PATH");
    dh_cli_expect(dh_cli("-u", srv->url, "run", "c:exit", "--", "/nonexistent/dir/cmd"), 127,
                  "nonexistent path");
    char path[DH_PATH_MAX];
    assert_int_equal(dh_tmpfile(path, sizeof path, "notexec.sh"), 0);
    assert_int_equal(dh_write_file(path, "#!/bin/sh\nexit 0\n"), 0);
    assert_int_equal(chmod(path, 0600), 0);
    dh_cli_expect(dh_cli("-u", srv->url, "run", "c:exit", "--", path), 126, "not executable");
    /* None of these left the lock behind. */
    dlock_info info;
    dh_assert_rc(dlock_inspect(&info, holder, "c:exit"), 0);
    assert_int_equal(info.held, 0);
}

static void test_conflicts(void **state)
{
    (void)state;
    dlock_lock *l = hold("c:busy");

    int st = dh_cli("-u", srv->url, "run", "--no-wait", "c:busy", "--", "sh", "-c", "echo ran");
    dh_cli_expect(st, 75, "--no-wait on a held key");
    assert_null(strstr(dh_out, "ran"));
    /* The message names the key, the holder and how long it has held it. */
    expect_err_has("c:busy: lock is busy: held by cli-test-holder for ");

    int64_t t0 = dh_now_ms();
    st = dh_cli("-u", srv->url, "run", "--wait", "300ms", "c:busy", "--", "sh", "-c", "echo ran");
    int64_t took = dh_now_ms() - t0;
    dh_cli_expect(st, 75, "--wait 300ms on a held key");
    assert_null(strstr(dh_out, "ran"));
    if (took < 280)
        fail_msg("--wait 300ms gave up after %lld ms", (long long)took);
    expect_err_has("c:busy: timed out after 300ms: lock is busy: held by cli-test-holder for ");
    /* -q: busy is an answer, said by the exit status alone. */
    dh_cli_expect(dh_cli("-q", "-u", srv->url, "run", "--no-wait", "c:busy", "--", "true"), 75,
                  "-q --no-wait on a held key");
    assert_string_equal(dh_err, "");

    st = dh_cli("-u", srv->url, "run", "--no-wait", "--conflict-exit-code", "3", "c:busy", "--",
                "sh", "-c", "echo ran");
    dh_cli_expect(st, 3, "--conflict-exit-code 3");
    assert_null(strstr(dh_out, "ran"));

    /* The holder was not disturbed. */
    assert_int_equal(dlock_is_held(l), 1);

    /* A waiting run gets the lock when the holder releases it. */
    dh_proc *p =
        dh_cli_bg("-u", srv->url, "run", "--wait", "20s", "c:busy", "--", "sh", "-c", "echo ran");
    if (!dh_wait_waiters(holder, "c:busy", 1, 10000)) {
        dh_cli_capture(p);
        fail_msg("the waiting dlock run never showed up as a waiter; stderr: %s", dh_err);
    }
    assert_false(dh_proc_done(p));
    dh_assert_rc(dlock_release(l), 0);
    st = dh_proc_wait(p, 10000);
    dh_cli_capture(p);
    dh_cli_expect(st, 0, "waiting run after the release");
    assert_string_equal(dh_out, "ran\n");
    dh_proc_free(p);
    st = dh_cli("-u", srv->url, "run", "--no-wait", "c:busy", "--", "sh", "-c", "echo ran");
    dh_cli_expect(st, 0, "--no-wait on a free key");
    assert_string_equal(dh_out, "ran\n");
}

/* Waiting runs queue first come, first served: B, C and D, queued one
 * after the other behind a holder, run in that order once it releases. */
static void test_fifo_through_cli(void **state)
{
    (void)state;
    static const char *const names[] = { "B", "C", "D" };
    char order[DH_PATH_MAX], cmd[DH_PATH_MAX + 64];
    assert_int_equal(dh_tmpfile(order, sizeof order, "order"), 0);
    dlock_lock *l = hold("c:fifo");
    dh_proc *p[3];
    for (int i = 0; i < 3; i++) {
        snprintf(cmd, sizeof cmd, "echo %s >> '%s'", names[i], order);
        p[i] = dh_cli_bg("-u", srv->url, "--id", names[i], "run", "--wait", "20s", "c:fifo", "--",
                         "sh", "-c", cmd);
        if (!dh_wait_waiters(holder, "c:fifo", i + 1, 10000)) {
            dh_cli_capture(p[i]);
            fail_msg("waiter %s never queued; stderr: %s", names[i], dh_err);
        }
    }
    dh_assert_rc(dlock_release(l), 0);
    for (int i = 0; i < 3; i++) {
        dh_cli_expect_proc(p[i], 0, "a queued run");
        dh_proc_free(p[i]);
    }
    char buf[64];
    assert_true(dh_read_file(buf, sizeof buf, order) > 0);
    assert_string_equal(buf, "B\nC\nD\n");
}

static void test_unreachable(void **state)
{
    (void)state;
    char url[64];
    dh_closed_url(url, sizeof url);
    int st = dh_cli("-u", url, "run", "c:x", "--", "sh", "-c", "echo ran");
    dh_cli_expect(st, 69, "closed port");
    assert_null(strstr(dh_out, "ran"));
    assert_true(dh_err[0] != '\0');

    snprintf(url, sizeof url, "redis://127.0.0.1:%d", dh_noaccept_listener());
    int64_t t0 = dh_now_ms();
    st = dh_cli_env(NULL, 30000, "-u", url, "run", "c:x", "--", "sh", "-c", "echo ran",
                    (const char *)NULL);
    dh_cli_expect(st, 69, "never-accepting listener");
    assert_null(strstr(dh_out, "ran"));
    if (dh_now_ms() - t0 > 20000)
        fail_msg("never-accepting listener: took %lld ms", (long long)(dh_now_ms() - t0));

    dh_closed_url(url, sizeof url);
    dh_cli_expect(dh_cli("-u", url, "status", "c:x"), 69, "status, closed port");
    dh_cli_expect(dh_cli("-u", url, "unlock", "--force", "c:x"), 69, "unlock, closed port");
}

static void test_passwords(void **state)
{
    (void)state;
    const char *right[] = { "DLOCK_PASSWORD=" PW, NULL };
    const char *wrong[] = { "DLOCK_PASSWORD=" WRONG_PW, NULL };
    int st = dh_cli_env(wrong, 20000, "-u", auth->url, "run", "c:pw", "--", "sh", "-c", "echo ran",
                        (const char *)NULL);
    dh_cli_expect(st, 69, "wrong $DLOCK_PASSWORD");
    assert_null(strstr(dh_out, "ran"));
    assert_null(strstr(dh_err, WRONG_PW));
    st = dh_cli_env(right, 20000, "-u", auth->url, "run", "c:pw", "--", "sh", "-c", "echo ran",
                    (const char *)NULL);
    dh_cli_expect(st, 0, "right $DLOCK_PASSWORD");
    assert_string_equal(dh_out, "ran\n");

    st = dh_cli("-u", auth->url, "run", "c:pw", "--", "true");
    dh_cli_expect(st, 69, "no password");

    char wf[DH_PATH_MAX], rf[DH_PATH_MAX];
    assert_int_equal(dh_tmpfile(wf, sizeof wf, "wrong.pw"), 0);
    assert_int_equal(dh_tmpfile(rf, sizeof rf, "right.pw"), 0);
    assert_int_equal(dh_write_file(wf, WRONG_PW "\n"), 0);
    assert_int_equal(dh_write_file(rf, PW "\n"), 0);
    st =
        dh_cli("-u", auth->url, "--password-file", wf, "run", "c:pw", "--", "sh", "-c", "echo ran");
    dh_cli_expect(st, 69, "wrong --password-file");
    assert_null(strstr(dh_out, "ran"));
    assert_null(strstr(dh_err, WRONG_PW));
    st =
        dh_cli("-u", auth->url, "--password-file", rf, "run", "c:pw", "--", "sh", "-c", "echo ran");
    dh_cli_expect(st, 0, "right --password-file");
    assert_string_equal(dh_out, "ran\n");
    /* The command line wins over the environment. */
    st = dh_cli_env(wrong, 20000, "-u", auth->url, "--password-file", rf, "run", "c:pw", "--",
                    "true", (const char *)NULL);
    dh_cli_expect(st, 0, "--password-file over a wrong $DLOCK_PASSWORD");
    /* A missing file is an invalid argument. */
    char missing[DH_PATH_MAX + 16];
    snprintf(missing, sizeof missing, "%s.missing", rf);
    st = dh_cli("-u", auth->url, "--password-file", missing, "run", "c:pw", "--", "true");
    dh_cli_expect(st, 64, "missing --password-file");

    /* Password in the URL works too, and the status command authenticates. */
    char url[128];
    snprintf(url, sizeof url, "redis://:%s@127.0.0.1:%d", PW, auth->port);
    dh_cli_expect(dh_cli("-u", url, "status", "c:pw"), 0, "status with URL password");
    snprintf(url, sizeof url, "redis://:%s@127.0.0.1:%d", WRONG_PW, auth->port);
    dh_cli_expect(dh_cli("-u", url, "status", "c:pw"), 69, "status with wrong URL password");
    assert_null(strstr(dh_err, WRONG_PW));
}

static void test_usage_errors(void **state)
{
    (void)state;
    const char *u = srv->url;
    dh_cli_expect(dh_cli("-u", u, "--bogus-flag", "run", "c:u", "--", "true"), 64,
                  "bad global flag");
    dh_cli_expect(dh_cli("-u", u, "run", "--bogus-flag", "c:u", "--", "true"), 64, "bad run flag");
    dh_cli_expect(dh_cli("-u", u, "run", "c:u", "true"), 64, "missing --");
    dh_cli_expect(dh_cli("-u", u, "run", "c:u", "--"), 64, "no CMD");
    dh_cli_expect(dh_cli("-u", u, "run", "--", "true"), 64, "no KEY");
    dh_cli_expect(dh_cli("-u", u, "run", "--ttl", "0", "c:u", "--", "true"), 64, "--ttl 0");
    dh_cli_expect(dh_cli("-u", u, "run", "--ttl", "abc", "c:u", "--", "true"), 64, "--ttl abc");
    dh_cli_expect(dh_cli("-u", u, "run", "--ttl", "-5s", "c:u", "--", "true"), 64, "--ttl -5s");
    dh_cli_expect(dh_cli("-u", u, "run", "--wait", "soon", "c:u", "--", "true"), 64, "--wait soon");
    dh_cli_expect(dh_cli("-u", u, "run", "--ttl"), 64, "--ttl without a value");
    dh_cli_expect(dh_cli("-u", u, "run", "", "--", "true"), 64, "empty key");
    dh_cli_expect(dh_cli("-u", u, "frobnicate"), 64, "unknown command");
    dh_cli_expect(dh_cli("-u", u), 64, "no command");
    dh_cli_expect(dh_cli("-u", "http://x", "status", "c:u"), 64, "bad URL scheme");
    dh_cli_expect(dh_cli("-u", u, "unlock", "c:u"), 64, "unlock without --force");
    assert_true(dh_err[0] != '\0');
}

static void test_status(void **state)
{
    (void)state;
    int st = dh_cli("-u", srv->url, "status", "c:status");
    dh_cli_expect(st, 0, "status of a free key");
    assert_non_null(strstr(dh_out, "free"));

    st = dh_cli("-u", srv->url, "status", "--json", "c:status");
    dh_cli_expect(st, 0, "status --json of a free key");
    if (!dh_json_valid(dh_out))
        fail_msg("status --json is not valid JSON: %s", dh_out);

    dlock_lock *l = hold("c:status");
    st = dh_cli("-u", srv->url, "status", "--json", "c:status");
    dh_cli_expect(st, 0, "status --json of a held key");
    if (!dh_json_valid(dh_out))
        fail_msg("status --json is not valid JSON: %s", dh_out);
    char compact[4096], want[256];
    dh_json_compact(compact, sizeof compact, dh_out);
    assert_non_null(strstr(compact, "\"key\":\"c:status\""));
    assert_non_null(strstr(compact, "\"state\":\"held\""));
    assert_non_null(strstr(compact, "\"owner\":\"cli-test-holder\""));
    snprintf(want, sizeof want, "\"fencing_token\":\"%llu\"",
             (unsigned long long)dlock_lock_fencing_token(l));
    if (!strstr(compact, want))
        fail_msg("status --json lacks %s: %s", want, dh_out);
    const char *ttl = strstr(compact, "\"ttl_ms\":");
    assert_non_null(ttl);
    char *end = NULL;
    long long ttl_ms = strtoll(ttl + 9, &end, 10);
    assert_true(ttl_ms > 0 && ttl_ms <= 30000);
    assert_non_null(strstr(compact, "\"waiters\":"));

    /* Text form of a held key names the holder. */
    st = dh_cli("-u", srv->url, "status", "c:status");
    dh_cli_expect(st, 0, "status of a held key");
    assert_non_null(strstr(dh_out, "cli-test-holder"));
    assert_null(strstr(dh_out, "free"));
    dh_assert_rc(dlock_release(l), 0);
}

static void test_unlock_force(void **state)
{
    (void)state;
    dlock_lock *l = hold("c:unlock");
    struct keywatch kw = { srv, "c:unlock", "cli-test-holder" };
    assert_true(key_present(&kw));

    dh_cli_expect(dh_cli("-u", srv->url, "unlock", "c:unlock"), 64, "unlock without --force");
    assert_true(key_present(&kw));

    dh_cli_expect(dh_cli("-u", srv->url, "unlock", "--force", "c:unlock"), 0, "unlock --force");
    assert_true(key_absent(&kw));
    dh_assert_rc(dlock_release(l), DLOCK_ENOTHELD);

    /* Unlocking a free key is not an error. */
    dh_cli_expect(dh_cli("-u", srv->url, "unlock", "--force", "c:unlock"), 0,
                  "unlock --force free");
}

/* Messages speak the CLI's terms: the option as typed, the limit as a
 * duration or a size, never a library field name. */
static void test_messages(void **state)
{
    (void)state;
    const char *u = srv->url;
    char long_id[202], long_key[514];
    memset(long_id, 'i', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    memset(long_key, 'k', sizeof long_key - 1);
    long_key[sizeof long_key - 1] = '\0';

    dh_cli_expect(dh_cli("-u", u, "run", "--ttl", "1ms", "c:m", "--", "true"), 64, "--ttl 1ms");
    expect_err_has("--ttl 1ms is below the minimum of 10ms");
    assert_null(strstr(dh_err, "ttl_ms"));
    dh_cli_expect(dh_cli("-u", u, "run", "--ttl", "9000h", "c:m", "--", "true"), 64, "--ttl 9000h");
    expect_err_has("too large: the maximum is 8760h");
    dh_cli_expect(dh_cli("-u", u, "run", "--wait", "99999999999999999999h", "c:m", "--", "true"),
                  64, "--wait with 20 digits");
    expect_err_has("the maximum is 8760h");
    dh_cli_expect(dh_cli("-u", u, "elect", "--ttl", "0", "c:m", "--", "true"), 64, "elect --ttl 0");
    expect_err_has("--ttl 0 is below the minimum of 10ms");
    dh_cli_expect(dh_cli("--connect-timeout", "2h", "-u", u, "status", "c:m"), 64,
                  "--connect-timeout 2h");
    expect_err_has("--connect-timeout 2h is above the maximum of 1h");

    dh_cli_expect(dh_cli("--id", "", "-u", u, "run", "c:m", "--", "true"), 64, "--id ''");
    expect_err_has("--id is empty");
    dh_cli_expect(dh_cli("--id", long_id, "-u", u, "run", "c:m", "--", "true"), 64, "--id x201");
    expect_err_has("--id is 201 bytes long; the maximum is 200 bytes");
    assert_null(strstr(dh_err, "owner_id"));
    const char *ctl_id[] = { "DLOCK_ID=a\tb", NULL };
    dh_cli_expect(
        dh_cli_env(ctl_id, DH_CLI_TIMEOUT_MS, "-u", u, "status", "c:m", (const char *)NULL), 64,
        "$DLOCK_ID with a tab");
    expect_err_has("$DLOCK_ID must not contain control characters");
    dh_cli_expect(dh_cli("--prefix", "a{b}", "-u", u, "status", "c:m"), 64, "--prefix a{b}");
    expect_err_has("--prefix must not contain '{' or '}'");

    dh_cli_expect(dh_cli("-u", u, "run", "", "--", "true"), 64, "empty KEY");
    expect_err_has("KEY is empty");
    dh_cli_expect(dh_cli("-u", u, "status", long_key), 64, "513-byte KEY");
    expect_err_has("is 513 bytes long; the maximum is 512 bytes");
    dh_cli_expect(dh_cli("-u", u, "run", "c:m", long_key, "--", "true"), 64, "513-byte 2nd KEY");
    expect_err_has("the maximum is 512 bytes");

    /* An empty URL is an error, from the command line and from the
     * environment alike; -u wins over an empty $DLOCK_URL. */
    const char *empty_url[] = { "DLOCK_URL=", NULL };
    dh_cli_expect(dh_cli_env(empty_url, DH_CLI_TIMEOUT_MS, "status", "c:m", (const char *)NULL), 64,
                  "DLOCK_URL=''");
    expect_err_has("$DLOCK_URL is set but empty");
    dh_cli_expect(dh_cli("-u", "", "status", "c:m"), 64, "-u ''");
    expect_err_has("-u: the URL is empty");
    dh_cli_expect(
        dh_cli_env(empty_url, DH_CLI_TIMEOUT_MS, "-u", u, "status", "c:m", (const char *)NULL), 0,
        "-u with DLOCK_URL=''");
}

/* Compound durations reach the lock as the sum of their parts. */
static void test_compound_durations(void **state)
{
    (void)state;
    char go[DH_PATH_MAX], cmd[DH_PATH_MAX + 64];
    assert_int_equal(dh_tmpfile(go, sizeof go, "compound-go"), 0);
    snprintf(cmd, sizeof cmd, "while [ ! -e '%s' ]; do sleep 0.02; done", go);
    dh_proc *p = dh_cli_bg("-u", srv->url, "--id", "cli-compound", "run", "--ttl", "1m30s",
                           "c:compound", "--", "sh", "-c", cmd);
    struct keywatch kw = { srv, "c:compound", "cli-compound" };
    if (!dh_wait_until(key_present, &kw, 10000)) {
        dh_cli_capture(p);
        fail_msg("run --ttl 1m30s never held the lock; stderr: %s", dh_err);
    }
    dlock_info info;
    dh_assert_rc(dlock_inspect(&info, holder, "c:compound"), 0);
    if (!(info.held && info.ttl_ms > 60000 && info.ttl_ms <= 90000))
        fail_msg("--ttl 1m30s: the server's TTL is %lld ms", (long long)info.ttl_ms);
    assert_int_equal(dh_write_file(go, "x"), 0);
    dh_cli_expect_proc(p, 0, "run --ttl 1m30s");
    dh_proc_free(p);

    dh_cli_expect(dh_cli("-u", srv->url, "run", "--wait", "1h2m3s500ms", "--ttl", "1.5s",
                         "c:compound", "--", "true"),
                  0, "--wait 1h2m3s500ms --ttl 1.5s");
    dh_cli_expect(dh_cli("-u", srv->url, "run", "--wait", "1m30", "c:compound", "--", "true"), 64,
                  "--wait 1m30");
    expect_err_has("needs a unit");
    dh_cli_expect(dh_cli("-u", srv->url, "run", "--wait", "30s1m", "c:compound", "--", "true"), 64,
                  "--wait 30s1m");
    expect_err_has("from large to small");
}

/* An ACL user that lacks a permission dlock needs: a permission problem
 * (69, like a failed authentication), and the message points to the ACL
 * rule. */
static void test_noperm(void **state)
{
    (void)state;
    assert_int_equal(dh_cmd_ok(srv, 0,
                               "ACL SETUSER cli-noperm on >%s resetkeys ~dlock:* resetchannels "
                               "&dlock:* +@all -evalsha -eval",
                               NOPERM_PW),
                     0);
    char url[128];
    snprintf(url, sizeof url, "redis://cli-noperm:%s@127.0.0.1:%d", NOPERM_PW, srv->port);
    /* the library reports the denial as DLOCK_EAUTH: exit 69 */
    int st = dh_cli("-u", url, "run", "c:noperm", "--", "sh", "-c", "echo ran");
    dh_cli_expect(st, 69, "run as a user who may not run EVALSHA");
    assert_null(strstr(dh_out, "ran"));
    expect_err_has("NOPERM");
    expect_err_has("ACL rule");
    dh_cli_expect(dh_cli("-u", url, "status", "c:noperm"), 69, "status as that user");
    expect_err_has("ACL rule");
    assert_null(strstr(dh_err, NOPERM_PW));
}

/* A loopback listener that answers every connection like an HTTP server
 * refusing the request, `count` times, then stops. */
struct fake_http {
    int fd;
    int count;
};

static void *fake_http_main(void *arg)
{
    struct fake_http *h = arg;
    static const char resp[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                               "Connection: close\r\n\r\n";
    for (int i = 0; i < h->count; i++) {
        struct pollfd lp = { h->fd, POLLIN, 0 };
        if (poll(&lp, 1, 20000) <= 0)
            return NULL;
        int c = accept(h->fd, NULL, NULL);
        if (c < 0)
            return NULL;
        char buf[2048];
        struct pollfd cp = { c, POLLIN, 0 };
        if (poll(&cp, 1, 5000) > 0 && read(c, buf, sizeof buf) < 0)
            buf[0] = '\0';
        if (write(c, resp, sizeof resp - 1) < 0)
            buf[0] = '\0';
        close(c);
    }
    return NULL;
}

/* Servers that are not what the URL says: a plain Redis behind rediss://
 * (its TLS handshake never completes), and something that is not Redis at
 * all (an HTTP server), with redis:// and with rediss://. */
static void test_wrong_server(void **state)
{
    (void)state;
    char url[96];
    snprintf(url, sizeof url, "rediss://127.0.0.1:%d", srv->port);
    dh_cli_expect(dh_cli("--connect-timeout", "500ms", "-u", url, "status", "c:w"), 69,
                  "rediss:// to a plain Redis");
    expect_err_has("the server may not speak TLS");

    struct fake_http h = { socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), 2 };
    assert_true(h.fd >= 0);
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(h.fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(h.fd, 4), 0);
    assert_int_equal(getsockname(h.fd, (struct sockaddr *)&sa, &sl), 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, fake_http_main, &h), 0);

    snprintf(url, sizeof url, "redis://127.0.0.1:%d", ntohs(sa.sin_port));
    dh_cli_expect(dh_cli("-u", url, "status", "c:w"), 70, "redis:// to an HTTP server");
    expect_err_has("does not look like a Redis server");
    snprintf(url, sizeof url, "rediss://127.0.0.1:%d", ntohs(sa.sin_port));
    dh_cli_expect(dh_cli("-u", url, "status", "c:w"), 69, "rediss:// to an HTTP server");
    expect_err_has("the server may not speak TLS");
    pthread_join(th, NULL);
    close(h.fd);
}

static void test_help_version(void **state)
{
    (void)state;
    dh_cli_expect(dh_cli("--help"), 0, "--help");
    const char *all = dh_out[0] ? dh_out : dh_err;
    assert_non_null(strstr(all, "run"));
    assert_non_null(strstr(all, "status"));
    assert_non_null(strstr(all, "unlock"));
    dh_cli_expect(dh_cli("--version"), 0, "--version");
    assert_non_null(strstr(dh_out, DLOCK_VERSION_STRING));
    dh_cli_expect(dh_cli("run", "--help"), 0, "run --help");
    assert_non_null(strstr(dh_out[0] ? dh_out : dh_err, "--ttl"));
}

static void test_exclusion_through_cli(void **state)
{
    (void)state;
    assert_int_equal(dh_cmd_ok(srv, 0, "SET c 0"), 0);
    char script[DH_PATH_MAX];
    assert_int_equal(dh_tmpfile(script, sizeof script, "incr.sh"), 0);
    /* $1 dlock, $2 url, $3 port: 25 locked read-modify-write increments. */
    assert_int_equal(
        dh_write_file(script, "i=0\n"
                              "while [ $i -lt 25 ]; do\n"
                              "  \"$1\" -u \"$2\" run --wait 60s ctr -- sh -c "
                              "'v=$(redis-cli -h 127.0.0.1 -p \"$0\" get c) && "
                              "redis-cli -h 127.0.0.1 -p \"$0\" set c $((v+1)) >/dev/null' \"$3\""
                              " || exit 1\n"
                              "  i=$((i+1))\n"
                              "done\n"),
        0);
    char port[16];
    snprintf(port, sizeof port, "%d", srv->port);
    dh_proc *p[4];
    for (int i = 0; i < 4; i++) {
        const char *argv[] = { "sh", script, DLOCK_CLI_PATH, srv->url, port, NULL };
        const char *env[DH_CLI_MAX_ENV];
        dh_cli_make_env(env, NULL);
        p[i] = dh_spawn(argv, env);
        assert_non_null(p[i]);
    }
    int64_t deadline = dh_now_ms() + 120000;
    for (int i = 0; i < 4; i++) {
        int64_t left = deadline - dh_now_ms();
        int st = dh_proc_wait(p[i], left > 0 ? (int)left : 1);
        if (st != 0) {
            dh_proc_output(p[i], dh_out, sizeof dh_out, dh_err, sizeof dh_err);
            fail_msg("worker %d exited %d; stderr: %s", i, st, dh_err);
        }
        dh_proc_free(p[i]);
    }
    char val[32];
    assert_true(dh_cmd_str(val, sizeof val, srv, 0, "GET c") > 0);
    assert_string_equal(val, "100");
}

static void test_long_cmd_renewed(void **state)
{
    (void)state;
    char stop[DH_PATH_MAX], cmd[DH_PATH_MAX + 64];
    assert_int_equal(dh_tmpfile(stop, sizeof stop, "stop"), 0);
    snprintf(cmd, sizeof cmd, "while [ ! -e '%s' ]; do sleep 0.05; done", stop);
    dh_proc *p = dh_cli_bg("-u", srv->url, "--id", "cli-long", "run", "--ttl", "1s", "c:long", "--",
                           "sh", "-c", cmd);
    struct keywatch kw = { srv, "c:long", "cli-long" };
    assert_true(dh_wait_until(key_present, &kw, 10000));
    /* Three TTLs long, the lock must never be missing. */
    if (dh_wait_until(key_absent, &kw, 3000)) {
        dh_cli_capture(p);
        fail_msg("lock vanished while CMD ran (ttl 1s); stderr: %s", dh_err);
    }
    assert_false(dh_proc_done(p));
    assert_int_equal(dh_write_file(stop, "x"), 0);
    int st = dh_proc_wait(p, 10000);
    dh_cli_capture(p);
    dh_cli_expect(st, 0, "long CMD");
    dh_proc_free(p);
    assert_true(key_absent(&kw)); /* released when CMD exited */
}

/* DLOCK_LOG shows the library's log on stderr (a renewal at debug); a
 * value that is not a level is a usage error. */
static void test_log_env(void **state)
{
    (void)state;
    const char *bad[] = { "DLOCK_LOG=loud", NULL };
    dh_cli_expect(
        dh_cli_env(bad, DH_CLI_TIMEOUT_MS, "-u", srv->url, "status", "c:log", (const char *)NULL),
        64, "DLOCK_LOG=loud");
    assert_non_null(strstr(dh_err, "DLOCK_LOG must be error, warn, info or debug"));
    /* a CMD of 500 ms under a 300 ms TTL: renewed every 100 ms meanwhile */
    const char *debug[] = { "DLOCK_LOG=debug", NULL };
    int st = dh_cli_env(debug, DH_CLI_TIMEOUT_MS, "-u", srv->url, "run", "--ttl", "300ms", "c:log",
                        "--", "sleep", "0.5", (const char *)NULL);
    dh_cli_expect(st, 0, "run with DLOCK_LOG=debug");
    assert_non_null(strstr(dh_err, "debug: renewed c:log"));
    assert_null(strstr(dh_out, "renewed")); /* the log is on stderr only */
}

static void test_signal_forwarded(void **state)
{
    (void)state;
    char ready[DH_PATH_MAX], cmd[DH_PATH_MAX + 128];
    assert_int_equal(dh_tmpfile(ready, sizeof ready, "ready"), 0);
    snprintf(cmd, sizeof cmd, "trap 'exit 5' TERM; echo x > '%s'; while :; do sleep 0.05; done",
             ready);
    dh_proc *p =
        dh_cli_bg("-u", srv->url, "--id", "cli-sig", "run", "c:sig", "--", "sh", "-c", cmd);
    assert_true(dh_wait_until(dh_file_exists, ready, 10000));
    struct keywatch kw = { srv, "c:sig", "cli-sig" };
    assert_true(key_present(&kw));
    assert_int_equal(dh_proc_signal(p, SIGTERM), 0);
    int st = dh_proc_wait(p, 10000);
    dh_cli_capture(p);
    dh_cli_expect(st, 5, "SIGTERM passed to CMD");
    dh_proc_free(p);
    assert_true(key_absent(&kw));
}

/* Start `dlock run --ttl 1s --grace 500ms KEY -- sh (pid of sh and of a
 * background sleep into a file; wait)` on r; returns once both pids are
 * known and the lock is in Redis. */
static dh_proc *start_victim(dh_redis *r, const char *key, const char *owner, char *pidfile,
                             size_t pidlen, struct two_pids *pids, int ignore_term)
{
    char cmd[DH_PATH_MAX * 2 + 128];
    assert_int_equal(dh_tmpfile(pidfile, pidlen, "pids"), 0);
    /* With ignore_term, sh and (inheriting it) sleep ignore SIGTERM: only
     * the SIGKILL at the validity instant can stop them. */
    snprintf(cmd, sizeof cmd, "%secho $$ > '%s'; sleep 30 & echo $! >> '%s'; wait",
             ignore_term ? "trap '' TERM; " : "", pidfile, pidfile);
    dh_proc *p = dh_cli_bg("-u", r->url, "--id", owner, "run", "--ttl", "1s", "--grace", "500ms",
                           key, "--", "sh", "-c", cmd);
    if (!dh_wait_until(pidfile_ready, pidfile, 10000)) {
        dh_cli_capture(p);
        fail_msg("CMD did not start; stderr: %s", dh_err);
    }
    read_two_pids(pidfile, &pids->a, &pids->b);
    struct keywatch kw = { r, key, owner };
    assert_true(dh_wait_until(key_present, &kw, 5000));
    assert_false(both_dead(pids));
    return p;
}

static void expect_lost(dh_proc *p, struct two_pids *pids, const char *what)
{
    int64_t t0 = dh_now_ms();
    int st = dh_proc_wait(p, 15000);
    int64_t took = dh_now_ms() - t0;
    dh_cli_capture(p);
    if (st != 79)
        fail_msg("%s: dlock exited %d after %lld ms, want 79; stderr: %s", what, st,
                 (long long)took, dh_err);
    /* CMD's whole group is gone (at once, in fact; allow the kernel a moment
     * to finish tearing down SIGKILLed processes). */
    if (!dh_wait_until(both_dead, pids, 2000))
        fail_msg("%s: CMD's processes survived the loss (sh %d dead=%d, sleep %d dead=%d)", what,
                 (int)pids->a, dh_pid_dead(pids->a), (int)pids->b, dh_pid_dead(pids->b));
}

/* A server of the test's own (the shared one stays healthy) fails under
 * a running CMD: fault(r) pauses or kills it. dh_redis_stop resumes a
 * paused server before it stops it. */
static void loss_by_server_fault(int (*fault)(dh_redis *), const char *key, const char *owner,
                                 const char *what)
{
    dh_redis *r = dh_redis_start(NULL);
    assert_non_null(r);
    char pidfile[DH_PATH_MAX];
    struct two_pids pids;
    dh_proc *p = start_victim(r, key, owner, pidfile, sizeof pidfile, &pids, 0);
    assert_int_equal(fault(r), 0);
    expect_lost(p, &pids, what);
    dh_proc_free(p);
    dh_redis_stop(r);
}

static void test_loss_server_paused(void **state)
{
    (void)state;
    loss_by_server_fault(dh_redis_pause, "c:loss", "cli-loss-pause", "server paused");
}

/* The lock key deleted behind dlock's back while CMD runs (with
 * ignore_term, CMD ignores SIGTERM, so only the SIGKILL stops it). */
static void loss_by_delete(const char *key, const char *owner, int ignore_term, const char *what)
{
    char pidfile[DH_PATH_MAX];
    struct two_pids pids;
    dh_proc *p = start_victim(srv, key, owner, pidfile, sizeof pidfile, &pids, ignore_term);
    assert_int_equal(dh_delete_key(srv, 0, key, owner), 1);
    expect_lost(p, &pids, what);
    dh_proc_free(p);
}

static void test_loss_key_deleted(void **state)
{
    (void)state;
    loss_by_delete("c:loss2", "cli-loss-del", 0, "lock key deleted");
}

static void test_loss_cmd_ignores_term(void **state)
{
    (void)state;
    loss_by_delete("c:loss4", "cli-loss-term", 1, "lock key deleted, CMD ignores SIGTERM");
}

/* CMD dies with dlock (PR_SET_PDEATHSIG), and the lock frees itself. */
static void test_dlock_killed(void **state)
{
    (void)state;
    char pidfile[DH_PATH_MAX];
    struct two_pids pids;
    dh_proc *p = start_victim(srv, "c:orphan", "cli-orphan", pidfile, sizeof pidfile, &pids, 0);
    assert_int_equal(dh_proc_signal(p, SIGKILL), 0);
    assert_int_equal(dh_proc_wait(p, 5000), 128 + SIGKILL);
    /* The direct child (sh) gets the death signal. */
    if (!dh_wait_until(both_dead, &(struct two_pids){ pids.a, pids.a }, 5000))
        fail_msg("CMD (pid %d) survived dlock's death", (int)pids.a);
    dh_proc_free(p);
    kill(pids.b, SIGKILL); /* the grandchild is not covered by the contract */
    struct keywatch kw = { srv, "c:orphan", "cli-orphan" };
    assert_true(dh_wait_until(key_absent, &kw, 5000)); /* ttl 1s, not renewed */
}

static void test_loss_server_killed(void **state)
{
    (void)state;
    loss_by_server_fault(dh_redis_kill9, "c:loss3", "cli-loss-kill", "server killed");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_help_version),
        cmocka_unit_test(test_run_env),
        cmocka_unit_test(test_exit_status),
        cmocka_unit_test(test_conflicts),
        cmocka_unit_test(test_fifo_through_cli),
        cmocka_unit_test(test_unreachable),
        cmocka_unit_test(test_passwords),
        cmocka_unit_test(test_usage_errors),
        cmocka_unit_test(test_messages),
        cmocka_unit_test(test_compound_durations),
        cmocka_unit_test(test_noperm),
        cmocka_unit_test(test_wrong_server),
        cmocka_unit_test(test_status),
        cmocka_unit_test(test_unlock_force),
        cmocka_unit_test(test_exclusion_through_cli),
        cmocka_unit_test(test_long_cmd_renewed),
        cmocka_unit_test(test_log_env),
        cmocka_unit_test(test_signal_forwarded),
        cmocka_unit_test(test_loss_server_paused),
        cmocka_unit_test(test_loss_key_deleted),
        cmocka_unit_test(test_loss_cmd_ignores_term),
        cmocka_unit_test(test_loss_server_killed),
        cmocka_unit_test(test_dlock_killed),
    };
    return cmocka_run_group_tests_name("cli", tests, group_setup, dh_group_teardown);
}
