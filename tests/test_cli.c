/*
 * test_cli.c — the `dlock` tool (DLOCK_CLI_PATH) against private servers.
 *
 * Design. Every invocation goes through the harness's runner: its own
 * process group, captured stdout/stderr, a hard timeout (a hung CLI fails
 * the test instead of hanging it), and an environment with the DLOCK_*
 * variables cleared so the developer's settings cannot leak in. Conflicts
 * are set up by holding the lock through the library in the test process
 * (same default prefix as the tool). State is checked in Redis with the
 * harness, finding the lock key by the owner id given with --id. The
 * processes CMD leaves behind are checked by pid (a zombie counts as gone).
 * The loss tests pause or wipe a server of their own, so the shared server
 * stays healthy for the other tests. Long conditions ("the lock exists for
 * 3 s") are polls that must run out, not sleeps.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "harness.h"

#ifndef DLOCK_CLI_PATH
#error "DLOCK_CLI_PATH must be defined by the build"
#endif

#define PW "Cl1-pass-9032"
#define WRONG_PW "Cl1-wrong-1187"

static dh_redis *srv;
static dh_redis *auth;
static dlock_client *holder; /* the test's own client, for conflicts */

static int group_setup(void **state)
{
    (void)state;
    static const char *const extra[] = { "--requirepass", PW, NULL };
    srv = dh_redis_start(NULL);
    auth = dh_redis_start(extra);
    if (!srv || !auth)
        return -1;
    holder = dh_client(srv->url, "cli-test-holder");
    return holder ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    dlock_client_close(holder);
    holder = NULL;
    dh_redis_stop(srv);
    dh_redis_stop(auth);
    srv = auth = NULL;
    dh_cleanup();
    return 0;
}

/* ---------------------------------------------------------------- helpers */

#define MAX_ARGS 48
#define MAX_ENV 16

/* Build the environment: the DLOCK_* defaults unset, then `extra`. */
static void make_env(const char **env, const char *const *extra)
{
    int n = 0;
    env[n++] = "DLOCK_URL";
    env[n++] = "DLOCK_PASSWORD";
    env[n++] = "DLOCK_PREFIX";
    env[n++] = "DLOCK_ID";
    for (int i = 0; extra && extra[i] && n < MAX_ENV - 1; i++)
        env[n++] = extra[i];
    env[n] = NULL;
}

/* Build argv = { DLOCK_CLI_PATH, args..., NULL } from a NULL-ended list. */
static void make_argv(const char **argv, va_list ap)
{
    int n = 0;
    argv[n++] = DLOCK_CLI_PATH;
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && n < MAX_ARGS - 1)
        argv[n++] = a;
    argv[n] = NULL;
}

static char out[64 * 1024], err[64 * 1024];

/* Run the CLI with the args that follow (NULL-ended); output in out/err. */
static int cli_env(const char *const *extra_env, int timeout_ms, ...)
{
    const char *argv[MAX_ARGS], *env[MAX_ENV];
    va_list ap;
    va_start(ap, timeout_ms);
    make_argv(argv, ap);
    va_end(ap);
    make_env(env, extra_env);
    int st = dh_run(argv, env, timeout_ms, out, sizeof out, err, sizeof err);
    if (st == DH_RUN_TIMEOUT || st == DH_RUN_ERROR)
        fail_msg("dlock %s ...: %s (stderr: %s)", argv[1],
                 st == DH_RUN_TIMEOUT ? "killed at the timeout" : "could not run", err);
    return st;
}

#define cli(...) cli_env(NULL, 20000, __VA_ARGS__, (const char *)NULL)

/* Start the CLI in the background. */
static dh_proc *cli_bg(const char *const *extra_env, ...)
{
    const char *argv[MAX_ARGS], *env[MAX_ENV];
    va_list ap;
    va_start(ap, extra_env);
    make_argv(argv, ap);
    va_end(ap);
    make_env(env, extra_env);
    dh_proc *p = dh_spawn(argv, env);
    assert_non_null(p);
    return p;
}

static void expect_status(int got, int want, const char *what)
{
    if (got != want)
        fail_msg("%s: exit status %d, want %d\nstdout: %s\nstderr: %s", what, got, want, out,
                 err);
}

/* Hold `key` through the library (ttl 30 s, renewed). */
static dlock_lock *hold(const char *key)
{
    dlock_lock_opts o = DLOCK_LOCK_OPTS_INIT;
    o.wait_ms = 0;
    dlock_lock *l = NULL;
    dh_assert_rc(dlock_acquire(&l, holder, key, &o), 0);
    return l;
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

static int file_has_lines(const char *path, int n)
{
    char buf[256];
    if (dh_read_file(buf, sizeof buf, path) <= 0)
        return 0;
    int lines = 0;
    for (const char *p = buf; *p; p++)
        lines += *p == '\n';
    return lines >= n;
}

static int pidfile_ready(void *arg)
{
    return file_has_lines(arg, 2);
}

static int file_exists(void *arg)
{
    struct stat sb;
    return stat(arg, &sb) == 0;
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

static int is_digits(const char *s, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

/* ------------------------------------------------------------------ tests */

static void test_run_env(void **state)
{
    (void)state;
    int st = cli("-u", srv->url, "run", "c:env", "--", "sh", "-c",
                 "echo \"$DLOCK_KEY $DLOCK_FENCING_TOKEN\"");
    expect_status(st, 0, "run echo");
    const char *sp = strchr(out, ' ');
    assert_non_null(sp);
    assert_true(strncmp(out, "c:env ", 6) == 0);
    const char *nl = strchr(sp, '\n');
    assert_non_null(nl);
    if (!is_digits(sp + 1, (size_t)(nl - sp - 1)))
        fail_msg("DLOCK_FENCING_TOKEN is not a number: \"%s\"", out);
    char *end = NULL;
    unsigned long long t1 = strtoull(sp + 1, &end, 10);
    assert_true(t1 > 0);

    /* Released after CMD: a second run gets it at once, with a larger token. */
    st = cli("-u", srv->url, "run", "--no-wait", "c:env", "--", "sh", "-c",
             "echo \"$DLOCK_FENCING_TOKEN\"");
    expect_status(st, 0, "second run");
    unsigned long long t2 = strtoull(out, &end, 10);
    assert_true(t2 > t1);

    /* $DLOCK_URL is the default URL. */
    char envurl[128];
    snprintf(envurl, sizeof envurl, "DLOCK_URL=%s", srv->url);
    const char *env[] = { envurl, NULL };
    st = cli_env(env, 20000, "run", "c:env", "--", "sh", "-c", "echo \"$DLOCK_KEY\"",
                 (const char *)NULL);
    expect_status(st, 0, "run with $DLOCK_URL");
    assert_string_equal(out, "c:env\n");
}

static void test_exit_status(void **state)
{
    (void)state;
    expect_status(cli("-u", srv->url, "run", "c:exit", "--", "sh", "-c", "exit 7"), 7, "exit 7");
    expect_status(cli("-u", srv->url, "run", "c:exit", "--", "true"), 0, "true");
    expect_status(cli("-u", srv->url, "run", "c:exit", "--", "false"), 1, "false");
    expect_status(cli("-u", srv->url, "run", "c:exit", "--", "sh", "-c", "kill -TERM $$"),
                  128 + SIGTERM, "killed by SIGTERM");
    expect_status(cli("-u", srv->url, "run", "c:exit", "--", "sh", "-c", "kill -KILL $$"),
                  128 + SIGKILL, "killed by SIGKILL");
    expect_status(cli("-u", srv->url, "run", "c:exit", "--", "dlock-test-no-such-command-x"),
                  127, "command not found in PATH");
    expect_status(cli("-u", srv->url, "run", "c:exit", "--", "/nonexistent/dir/cmd"), 127,
                  "nonexistent path");
    char path[DH_PATH_MAX];
    assert_int_equal(dh_tmpfile(path, sizeof path, "notexec.sh"), 0);
    assert_int_equal(dh_write_file(path, "#!/bin/sh\nexit 0\n"), 0);
    assert_int_equal(chmod(path, 0600), 0);
    expect_status(cli("-u", srv->url, "run", "c:exit", "--", path), 126, "not executable");
    /* None of these left the lock behind. */
    dlock_info info;
    dh_assert_rc(dlock_inspect(&info, holder, "c:exit"), 0);
    assert_int_equal(info.held, 0);
}

struct waiters_arg {
    const char *key;
    int64_t min;
};

static int has_waiters(void *arg)
{
    struct waiters_arg *w = arg;
    dlock_info info;
    return dlock_inspect(&info, holder, w->key) == 0 && info.waiters >= w->min;
}

static void test_conflicts(void **state)
{
    (void)state;
    dlock_lock *l = hold("c:busy");

    int st = cli("-u", srv->url, "run", "--no-wait", "c:busy", "--", "sh", "-c", "echo ran");
    expect_status(st, 75, "--no-wait on a held key");
    assert_null(strstr(out, "ran"));

    int64_t t0 = dh_now_ms();
    st = cli("-u", srv->url, "run", "--wait", "300ms", "c:busy", "--", "sh", "-c", "echo ran");
    int64_t took = dh_now_ms() - t0;
    expect_status(st, 75, "--wait 300ms on a held key");
    assert_null(strstr(out, "ran"));
    if (took < 280)
        fail_msg("--wait 300ms gave up after %lld ms", (long long)took);

    st = cli("-u", srv->url, "run", "--no-wait", "--conflict-exit-code", "3", "c:busy", "--",
             "sh", "-c", "echo ran");
    expect_status(st, 3, "--conflict-exit-code 3");
    assert_null(strstr(out, "ran"));

    /* The holder was not disturbed. */
    assert_int_equal(dlock_is_held(l), 1);

    /* A waiting run gets the lock when the holder releases it. */
    dh_proc *p = cli_bg(NULL, "-u", srv->url, "run", "--wait", "20s", "c:busy", "--", "sh", "-c",
                        "echo ran", (const char *)NULL);
    struct waiters_arg wa = { "c:busy", 1 };
    if (!dh_wait_until(has_waiters, &wa, 10000)) {
        dh_proc_output(p, out, sizeof out, err, sizeof err);
        fail_msg("the waiting dlock run never showed up as a waiter; stderr: %s", err);
    }
    assert_false(dh_proc_done(p));
    dh_assert_rc(dlock_release(l), 0);
    st = dh_proc_wait(p, 10000);
    dh_proc_output(p, out, sizeof out, err, sizeof err);
    expect_status(st, 0, "waiting run after the release");
    assert_string_equal(out, "ran\n");
    dh_proc_free(p);
    st = cli("-u", srv->url, "run", "--no-wait", "c:busy", "--", "sh", "-c", "echo ran");
    expect_status(st, 0, "--no-wait on a free key");
    assert_string_equal(out, "ran\n");
}

static void test_unreachable(void **state)
{
    (void)state;
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", dh_closed_port());
    int st = cli("-u", url, "run", "c:x", "--", "sh", "-c", "echo ran");
    expect_status(st, 69, "closed port");
    assert_null(strstr(out, "ran"));
    assert_true(err[0] != '\0');

    snprintf(url, sizeof url, "redis://127.0.0.1:%d", dh_noaccept_listener());
    int64_t t0 = dh_now_ms();
    st = cli_env(NULL, 30000, "-u", url, "run", "c:x", "--", "sh", "-c", "echo ran",
                 (const char *)NULL);
    expect_status(st, 69, "never-accepting listener");
    assert_null(strstr(out, "ran"));
    if (dh_now_ms() - t0 > 20000)
        fail_msg("never-accepting listener: took %lld ms", (long long)(dh_now_ms() - t0));

    snprintf(url, sizeof url, "redis://127.0.0.1:%d", dh_closed_port());
    expect_status(cli("-u", url, "status", "c:x"), 69, "status, closed port");
    expect_status(cli("-u", url, "unlock", "--force", "c:x"), 69, "unlock, closed port");
}

static void test_passwords(void **state)
{
    (void)state;
    const char *right[] = { "DLOCK_PASSWORD=" PW, NULL };
    const char *wrong[] = { "DLOCK_PASSWORD=" WRONG_PW, NULL };
    int st = cli_env(wrong, 20000, "-u", auth->url, "run", "c:pw", "--", "sh", "-c", "echo ran",
                     (const char *)NULL);
    expect_status(st, 69, "wrong $DLOCK_PASSWORD");
    assert_null(strstr(out, "ran"));
    assert_null(strstr(err, WRONG_PW));
    st = cli_env(right, 20000, "-u", auth->url, "run", "c:pw", "--", "sh", "-c", "echo ran",
                 (const char *)NULL);
    expect_status(st, 0, "right $DLOCK_PASSWORD");
    assert_string_equal(out, "ran\n");

    st = cli("-u", auth->url, "run", "c:pw", "--", "true");
    expect_status(st, 69, "no password");

    char wf[DH_PATH_MAX], rf[DH_PATH_MAX];
    assert_int_equal(dh_tmpfile(wf, sizeof wf, "wrong.pw"), 0);
    assert_int_equal(dh_tmpfile(rf, sizeof rf, "right.pw"), 0);
    assert_int_equal(dh_write_file(wf, WRONG_PW "\n"), 0);
    assert_int_equal(dh_write_file(rf, PW "\n"), 0);
    st = cli("-u", auth->url, "--password-file", wf, "run", "c:pw", "--", "sh", "-c",
             "echo ran");
    expect_status(st, 69, "wrong --password-file");
    assert_null(strstr(out, "ran"));
    assert_null(strstr(err, WRONG_PW));
    st = cli("-u", auth->url, "--password-file", rf, "run", "c:pw", "--", "sh", "-c",
             "echo ran");
    expect_status(st, 0, "right --password-file");
    assert_string_equal(out, "ran\n");
    /* The command line wins over the environment. */
    st = cli_env(wrong, 20000, "-u", auth->url, "--password-file", rf, "run", "c:pw", "--",
                 "true", (const char *)NULL);
    expect_status(st, 0, "--password-file over a wrong $DLOCK_PASSWORD");
    /* A missing file is an invalid argument. */
    char missing[DH_PATH_MAX + 16];
    snprintf(missing, sizeof missing, "%s.missing", rf);
    st = cli("-u", auth->url, "--password-file", missing, "run", "c:pw", "--", "true");
    expect_status(st, 64, "missing --password-file");

    /* Password in the URL works too, and the status command authenticates. */
    char url[128];
    snprintf(url, sizeof url, "redis://:%s@127.0.0.1:%d", PW, auth->port);
    expect_status(cli("-u", url, "status", "c:pw"), 0, "status with URL password");
    snprintf(url, sizeof url, "redis://:%s@127.0.0.1:%d", WRONG_PW, auth->port);
    expect_status(cli("-u", url, "status", "c:pw"), 69, "status with wrong URL password");
    assert_null(strstr(err, WRONG_PW));
}

static void test_usage_errors(void **state)
{
    (void)state;
    const char *u = srv->url;
    expect_status(cli("-u", u, "--bogus-flag", "run", "c:u", "--", "true"), 64, "bad global flag");
    expect_status(cli("-u", u, "run", "--bogus-flag", "c:u", "--", "true"), 64, "bad run flag");
    expect_status(cli("-u", u, "run", "c:u", "true"), 64, "missing --");
    expect_status(cli("-u", u, "run", "c:u", "--"), 64, "no CMD");
    expect_status(cli("-u", u, "run", "--", "true"), 64, "no KEY");
    expect_status(cli("-u", u, "run", "--ttl", "0", "c:u", "--", "true"), 64, "--ttl 0");
    expect_status(cli("-u", u, "run", "--ttl", "abc", "c:u", "--", "true"), 64, "--ttl abc");
    expect_status(cli("-u", u, "run", "--ttl", "-5s", "c:u", "--", "true"), 64, "--ttl -5s");
    expect_status(cli("-u", u, "run", "--wait", "soon", "c:u", "--", "true"), 64, "--wait soon");
    expect_status(cli("-u", u, "run", "--ttl"), 64, "--ttl without a value");
    expect_status(cli("-u", u, "run", "", "--", "true"), 64, "empty key");
    expect_status(cli("-u", u, "frobnicate"), 64, "unknown command");
    expect_status(cli("-u", u), 64, "no command");
    expect_status(cli("-u", "http://x", "status", "c:u"), 64, "bad URL scheme");
    expect_status(cli("-u", u, "unlock", "c:u"), 64, "unlock without --force");
    assert_true(err[0] != '\0');
}

static void test_status(void **state)
{
    (void)state;
    int st = cli("-u", srv->url, "status", "c:status");
    expect_status(st, 0, "status of a free key");
    assert_non_null(strstr(out, "free"));

    st = cli("-u", srv->url, "status", "--json", "c:status");
    expect_status(st, 0, "status --json of a free key");
    if (!dh_json_valid(out))
        fail_msg("status --json is not valid JSON: %s", out);

    dlock_lock *l = hold("c:status");
    st = cli("-u", srv->url, "status", "--json", "c:status");
    expect_status(st, 0, "status --json of a held key");
    if (!dh_json_valid(out))
        fail_msg("status --json is not valid JSON: %s", out);
    char compact[4096], want[256];
    dh_json_compact(compact, sizeof compact, out);
    assert_non_null(strstr(compact, "\"key\":\"c:status\""));
    assert_non_null(strstr(compact, "\"state\":\"held\""));
    assert_non_null(strstr(compact, "\"owner\":\"cli-test-holder\""));
    snprintf(want, sizeof want, "\"fencing_token\":\"%llu\"",
             (unsigned long long)dlock_lock_fencing_token(l));
    if (!strstr(compact, want))
        fail_msg("status --json lacks %s: %s", want, out);
    const char *ttl = strstr(compact, "\"ttl_ms\":");
    assert_non_null(ttl);
    char *end = NULL;
    long long ttl_ms = strtoll(ttl + 9, &end, 10);
    assert_true(ttl_ms > 0 && ttl_ms <= 30000);
    assert_non_null(strstr(compact, "\"waiters\":"));

    /* Text form of a held key names the holder. */
    st = cli("-u", srv->url, "status", "c:status");
    expect_status(st, 0, "status of a held key");
    assert_non_null(strstr(out, "cli-test-holder"));
    assert_null(strstr(out, "free"));
    dh_assert_rc(dlock_release(l), 0);
}

static void test_unlock_force(void **state)
{
    (void)state;
    dlock_lock *l = hold("c:unlock");
    struct keywatch kw = { srv, "c:unlock", "cli-test-holder" };
    assert_true(key_present(&kw));

    expect_status(cli("-u", srv->url, "unlock", "c:unlock"), 64, "unlock without --force");
    assert_true(key_present(&kw));

    expect_status(cli("-u", srv->url, "unlock", "--force", "c:unlock"), 0, "unlock --force");
    assert_true(key_absent(&kw));
    dh_assert_rc(dlock_release(l), DLOCK_ENOTHELD);

    /* Unlocking a free key is not an error. */
    expect_status(cli("-u", srv->url, "unlock", "--force", "c:unlock"), 0, "unlock --force free");
}

static void test_help_version(void **state)
{
    (void)state;
    expect_status(cli("--help"), 0, "--help");
    const char *all = out[0] ? out : err;
    assert_non_null(strstr(all, "run"));
    assert_non_null(strstr(all, "status"));
    assert_non_null(strstr(all, "unlock"));
    expect_status(cli("--version"), 0, "--version");
    assert_non_null(strstr(out, DLOCK_VERSION_STRING));
    expect_status(cli("run", "--help"), 0, "run --help");
    assert_non_null(strstr(out[0] ? out : err, "--ttl"));
}

static void test_exclusion_through_cli(void **state)
{
    (void)state;
    assert_int_equal(dh_cmd_ok(srv, 0, "SET c 0"), 0);
    char script[DH_PATH_MAX];
    assert_int_equal(dh_tmpfile(script, sizeof script, "incr.sh"), 0);
    /* $1 dlock, $2 url, $3 port: 25 locked read-modify-write increments. */
    assert_int_equal(
        dh_write_file(script,
                      "i=0\n"
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
        const char *env[MAX_ENV];
        make_env(env, NULL);
        p[i] = dh_spawn(argv, env);
        assert_non_null(p[i]);
    }
    int64_t deadline = dh_now_ms() + 120000;
    for (int i = 0; i < 4; i++) {
        int64_t left = deadline - dh_now_ms();
        int st = dh_proc_wait(p[i], left > 0 ? (int)left : 1);
        if (st != 0) {
            dh_proc_output(p[i], out, sizeof out, err, sizeof err);
            fail_msg("worker %d exited %d; stderr: %s", i, st, err);
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
    dh_proc *p = cli_bg(NULL, "-u", srv->url, "--id", "cli-long", "run", "--ttl", "1s",
                        "c:long", "--", "sh", "-c", cmd, (const char *)NULL);
    struct keywatch kw = { srv, "c:long", "cli-long" };
    assert_true(dh_wait_until(key_present, &kw, 10000));
    /* Three TTLs long, the lock must never be missing. */
    if (dh_wait_until(key_absent, &kw, 3000)) {
        dh_proc_output(p, out, sizeof out, err, sizeof err);
        fail_msg("lock vanished while CMD ran (ttl 1s); stderr: %s", err);
    }
    assert_false(dh_proc_done(p));
    assert_int_equal(dh_write_file(stop, "x"), 0);
    int st = dh_proc_wait(p, 10000);
    dh_proc_output(p, out, sizeof out, err, sizeof err);
    expect_status(st, 0, "long CMD");
    dh_proc_free(p);
    assert_true(key_absent(&kw)); /* released when CMD exited */
}

static void test_signal_forwarded(void **state)
{
    (void)state;
    char ready[DH_PATH_MAX], cmd[DH_PATH_MAX + 128];
    assert_int_equal(dh_tmpfile(ready, sizeof ready, "ready"), 0);
    snprintf(cmd, sizeof cmd,
             "trap 'exit 5' TERM; echo x > '%s'; while :; do sleep 0.05; done", ready);
    dh_proc *p = cli_bg(NULL, "-u", srv->url, "--id", "cli-sig", "run", "c:sig", "--", "sh",
                        "-c", cmd, (const char *)NULL);
    assert_true(dh_wait_until(file_exists, ready, 10000));
    struct keywatch kw = { srv, "c:sig", "cli-sig" };
    assert_true(key_present(&kw));
    assert_int_equal(dh_proc_signal(p, SIGTERM), 0);
    int st = dh_proc_wait(p, 10000);
    dh_proc_output(p, out, sizeof out, err, sizeof err);
    expect_status(st, 5, "SIGTERM passed to CMD");
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
    dh_proc *p = cli_bg(NULL, "-u", r->url, "--id", owner, "run", "--ttl", "1s", "--grace",
                        "500ms", key, "--", "sh", "-c", cmd, (const char *)NULL);
    if (!dh_wait_until(pidfile_ready, pidfile, 10000)) {
        dh_proc_output(p, out, sizeof out, err, sizeof err);
        fail_msg("CMD did not start; stderr: %s", err);
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
    dh_proc_output(p, out, sizeof out, err, sizeof err);
    if (st != 79)
        fail_msg("%s: dlock exited %d after %lld ms, want 79; stderr: %s", what, st,
                 (long long)took, err);
    /* CMD's whole group is gone (at once, in fact; allow the kernel a moment
     * to finish tearing down SIGKILLed processes). */
    if (!dh_wait_until(both_dead, pids, 2000))
        fail_msg("%s: CMD's processes survived the loss (sh %d dead=%d, sleep %d dead=%d)", what,
                 (int)pids->a, dh_pid_dead(pids->a), (int)pids->b, dh_pid_dead(pids->b));
}

static void test_loss_server_paused(void **state)
{
    (void)state;
    dh_redis *r = dh_redis_start(NULL);
    assert_non_null(r);
    char pidfile[DH_PATH_MAX];
    struct two_pids pids;
    dh_proc *p = start_victim(r, "c:loss", "cli-loss-pause", pidfile, sizeof pidfile, &pids, 0);
    assert_int_equal(dh_redis_pause(r), 0);
    expect_lost(p, &pids, "server paused");
    dh_proc_free(p);
    dh_redis_resume(r);
    dh_redis_stop(r);
}

static void test_loss_key_deleted(void **state)
{
    (void)state;
    char pidfile[DH_PATH_MAX], name[1024];
    struct two_pids pids;
    dh_proc *p = start_victim(srv, "c:loss2", "cli-loss-del", pidfile, sizeof pidfile, &pids, 0);
    assert_int_equal(dh_find_key(name, sizeof name, srv, 0, "c:loss2", "cli-loss-del"), 1);
    assert_int_equal(dh_cmd_int(srv, 0, "DEL %s", name), 1);
    expect_lost(p, &pids, "lock key deleted");
    dh_proc_free(p);
}

static void test_loss_cmd_ignores_term(void **state)
{
    (void)state;
    char pidfile[DH_PATH_MAX], name[1024];
    struct two_pids pids;
    dh_proc *p = start_victim(srv, "c:loss4", "cli-loss-term", pidfile, sizeof pidfile, &pids, 1);
    assert_int_equal(dh_find_key(name, sizeof name, srv, 0, "c:loss4", "cli-loss-term"), 1);
    assert_int_equal(dh_cmd_int(srv, 0, "DEL %s", name), 1);
    expect_lost(p, &pids, "lock key deleted, CMD ignores SIGTERM");
    dh_proc_free(p);
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
    dh_redis *r = dh_redis_start(NULL);
    assert_non_null(r);
    char pidfile[DH_PATH_MAX];
    struct two_pids pids;
    dh_proc *p = start_victim(r, "c:loss3", "cli-loss-kill", pidfile, sizeof pidfile, &pids, 0);
    assert_int_equal(dh_redis_kill9(r), 0);
    expect_lost(p, &pids, "server killed");
    dh_proc_free(p);
    dh_redis_stop(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_help_version),
        cmocka_unit_test(test_run_env),
        cmocka_unit_test(test_exit_status),
        cmocka_unit_test(test_conflicts),
        cmocka_unit_test(test_unreachable),
        cmocka_unit_test(test_passwords),
        cmocka_unit_test(test_usage_errors),
        cmocka_unit_test(test_status),
        cmocka_unit_test(test_unlock_force),
        cmocka_unit_test(test_exclusion_through_cli),
        cmocka_unit_test(test_long_cmd_renewed),
        cmocka_unit_test(test_signal_forwarded),
        cmocka_unit_test(test_loss_server_paused),
        cmocka_unit_test(test_loss_key_deleted),
        cmocka_unit_test(test_loss_cmd_ignores_term),
        cmocka_unit_test(test_loss_server_killed),
        cmocka_unit_test(test_dlock_killed),
    };
    return cmocka_run_group_tests_name("cli", tests, group_setup, group_teardown);
}
