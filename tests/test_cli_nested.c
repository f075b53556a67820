/*
 * test_cli_nested.c — nested runs are reentrant: a `dlock run KEY` inside
 * the CMD of a `dlock run KEY` runs at once under the outer hold (no new
 * lock, nothing released at its end), and exits 79 when the outer lock was
 * force-unlocked; a reader under a writer, leadership and several keys
 * (only the keys the outer run does not hold are acquired); a DLOCK_HELD
 * that does not come from an ancestor is ignored; an inner run whose
 * outer dlock is killed with SIGKILL stops its CMD (79).
 *
 * Design. Every invocation goes through the CLI runner; the nested runs
 * are started by shell scripts that the outer run's CMD executes, with the
 * tool's path in $D. Each script prints what it saw, one line per fact, and
 * the test compares. Waits are bounded polls of files and of the server.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_runner.h"

static dh_redis *srv;
static char env_d[DH_PATH_MAX + 8];

static int group_setup(void **state)
{
    (void)state;
    snprintf(env_d, sizeof env_d, "D=%s", DLOCK_CLI_PATH);
    return dh_group_start(&srv, NULL);
}

/* A script file with `body`; its path in buf. */
static void script(char *buf, size_t len, const char *name, const char *body)
{
    assert_int_equal(dh_tmpfile(buf, len, name), 0);
    assert_int_equal(dh_write_file(buf, body), 0);
}

/* Run the outer `dlock run [opts] KEY -- sh SCRIPT` with $D and $U set. */
static int outer(const char *opt, const char *key, const char *path)
{
    char u[128];
    snprintf(u, sizeof u, "U=%s", srv->url);
    const char *env[] = { env_d, u, NULL };
    const char *args[] = { "-u",
                           srv->url,
                           "run",
                           opt ? opt : key,
                           opt ? key : "--",
                           opt ? "--" : "sh",
                           opt ? "sh" : path,
                           opt ? path : NULL,
                           NULL };
    return dh_cli_argv(args, env, DH_CLI_TIMEOUT_MS);
}

/* Write body to a fresh script file (name) and run it as the CMD of the
 * outer run (outer()); returns the outer run's exit status, its output in
 * dh_out and dh_err. */
static int outer_script(const char *opt, const char *key, const char *name, const char *body)
{
    char path[DH_PATH_MAX];
    script(path, sizeof path, name, body);
    return outer(opt, key, path);
}

static int file_exists(void *arg)
{
    char buf[8];
    return dh_read_file(buf, sizeof buf, arg) >= 0;
}

/* The nested run completes under the outer hold: the same fencing token,
 * DLOCK_HELD names the hold, and the lock is still held after it (a run
 * that is not nested, without DLOCK_HELD, finds it busy). */
static void test_nested_runs(void **state)
{
    (void)state;
    int st = outer_script(
        NULL, "n:k", "nested.sh",
        "echo \"outer $DLOCK_FENCING_TOKEN\"\n"
        "\"$D\" -u \"$U\" run --no-wait n:k -- sh -c 'echo \"inner $DLOCK_FENCING_TOKEN\"'\n"
        "echo \"inner-exit $?\"\n"
        "\"$D\" -u \"$U\" run n:k -- \"$D\" -u \"$U\" run n:k -- sh -c 'echo twice'\n"
        "env -u DLOCK_HELD \"$D\" -u \"$U\" -q run --no-wait n:k -- true\n"
        "echo \"unnested-exit $?\"\n"
        "case \"$DLOCK_HELD\" in *' w '*' n:k') echo held-ok ;; *) echo \"held: $DLOCK_HELD\" ;; "
        "esac\n");
    dh_cli_expect(st, 0, "a run whose CMD runs dlock run KEY again");
    long long o = -1, in = -2;
    const char *pi = strstr(dh_out, "inner ");
    assert_int_equal(sscanf(dh_out, "outer %lld", &o), 1);
    assert_non_null(pi);
    assert_int_equal(sscanf(pi, "inner %lld", &in), 1);
    assert_true(o > 0 && o == in);
    assert_non_null(strstr(dh_out, "inner-exit 0\n"));
    assert_non_null(strstr(dh_out, "twice\n"));
    assert_non_null(strstr(dh_out, "unnested-exit 75\n"));
    assert_non_null(strstr(dh_out, "held-ok\n"));
    dlock_client *c = dh_client(srv->url, "check");
    dlock_info info;
    dh_assert_rc(dlock_inspect(&info, c, "n:k"), 0);
    assert_int_equal(info.held, 0); /* the outer run released it at its end */
    dlock_client_close(c);
}

/* The outer lock force-unlocked: the inner run refuses to start CMD (79),
 * and the outer run finds its lock gone at its end (79). */
static void test_outer_unlocked(void **state)
{
    (void)state;
    int st = outer_script(NULL, "u:k", "unlocked.sh",
                          "\"$D\" -u \"$U\" -q unlock --force u:k\n"
                          "\"$D\" -u \"$U\" run u:k -- echo never\n"
                          "echo \"inner-exit $?\"\n");
    dh_cli_expect(st, 79, "outer run whose lock was force-unlocked");
    assert_null(strstr(dh_out, "never"));
    assert_non_null(strstr(dh_out, "inner-exit 79\n"));
    assert_non_null(strstr(dh_err, "u:k: the outer 'dlock run' (pid "));
    assert_non_null(strstr(dh_err, "no longer holds the lock"));
}

/* A reader under a writer and leadership under `run` are nested; a writer
 * under a reader is not (no upgrade: it waits, here 75). Several keys: the
 * ones the outer run holds are not taken again, the others are taken and
 * given back at the inner run's end. */
static void test_kinds_and_keys(void **state)
{
    (void)state;
    int st = outer_script(
        NULL, "m:a", "kinds.sh",
        "\"$D\" -u \"$U\" run --shared --no-wait m:a -- true; echo \"shared $?\"\n"
        "\"$D\" -u \"$U\" elect --no-wait m:a -- true; echo \"elect $?\"\n"
        "\"$D\" -u \"$U\" run --no-wait m:a m:b -- sh -c "
        "'echo \"keys $DLOCK_KEYS|$DLOCK_FENCING_TOKENS\"; "
        "\"$D\" -u \"$U\" run --no-wait m:b -- true; echo \"inner-b $?\"'\n"
        "echo \"outer-token $DLOCK_FENCING_TOKEN\"\n"
        "env -u DLOCK_HELD \"$D\" -u \"$U\" -q run --no-wait m:b -- true; echo \"b-free $?\"\n");
    dh_cli_expect(st, 0, "kinds under a writer");
    assert_non_null(strstr(dh_out, "shared 0\n"));
    assert_non_null(strstr(dh_out, "elect 0\n"));
    assert_non_null(strstr(dh_out, "inner-b 0\n"));
    assert_non_null(strstr(dh_out, "b-free 0\n"));
    long long ta = -1, tb = -1, to = -2;
    const char *k = strstr(dh_out, "keys m:a m:b|");
    assert_non_null(k);
    assert_int_equal(sscanf(k, "keys m:a m:b|%lld %lld", &ta, &tb), 2);
    assert_int_equal(sscanf(strstr(dh_out, "outer-token "), "outer-token %lld", &to), 1);
    assert_true(ta == to && tb > 0);

    st = outer_script("--shared", "r:a", "upgrade.sh",
                      "\"$D\" -u \"$U\" -q run --wait 200ms r:a -- echo never; echo \"writer "
                      "$?\"\n");
    dh_cli_expect(st, 0, "a writer under a reader");
    assert_non_null(strstr(dh_out, "writer 75\n"));
    assert_null(strstr(dh_out, "never"));
}

/* DLOCK_HELD copied out of the process tree (here: read from a file and
 * given to an unrelated run) does not let a run in. */
static void test_not_an_ancestor(void **state)
{
    (void)state;
    char held[DH_PATH_MAX], go[DH_PATH_MAX], cmd[DH_PATH_MAX * 4 + 128];
    assert_int_equal(dh_tmpfile(held, sizeof held, "held"), 0);
    assert_int_equal(dh_tmpfile(go, sizeof go, "go-anc"), 0);
    snprintf(cmd, sizeof cmd,
             "printf %%s \"$DLOCK_HELD\" > '%s.tmp' && mv '%s.tmp' '%s'; "
             "while [ ! -e '%s' ]; do sleep 0.02; done",
             held, held, held, go);
    dh_proc *p = dh_cli_bg("-u", srv->url, "run", "a:k", "--", "sh", "-c", cmd);
    if (!dh_wait_until(file_exists, held, 10000))
        fail_msg("the outer CMD never wrote its DLOCK_HELD");
    static char value[4096], envv[4200];
    assert_true(dh_read_file(value, sizeof value, held) > 0);
    snprintf(envv, sizeof envv, "DLOCK_HELD=%s", value);
    const char *env[] = { envv, NULL };
    const char *args[] = { "-u", srv->url, "run", "--no-wait", "a:k", "--", "echo", "ran", NULL };
    dh_cli_expect(dh_cli_argv(args, env, DH_CLI_TIMEOUT_MS), 75, "a copied DLOCK_HELD");
    assert_null(strstr(dh_out, "ran"));
    /* garbage is reported and ignored */
    const char *genv[] = { "DLOCK_HELD=garbage", NULL };
    const char *gargs[] = { "-u", srv->url, "run", "g:k", "--", "echo", "ran", NULL };
    dh_cli_expect(dh_cli_argv(gargs, genv, DH_CLI_TIMEOUT_MS), 0, "a malformed DLOCK_HELD");
    assert_non_null(strstr(dh_err, "ignoring 1 malformed line of $DLOCK_HELD"));
    assert_int_equal(dh_write_file(go, "x"), 0);
    dh_cli_expect_proc(p, 0, "the outer run");
    dh_proc_free(p);
}

static int pid_dead(void *arg)
{
    return dh_pid_dead(*(pid_t *)arg);
}

struct errwatch {
    dh_proc *p;
    const char *needle;
};

/* The captured stderr of w->p (written to by its descendants too) has
 * w->needle. */
static int stderr_has(void *arg)
{
    struct errwatch *w = arg;
    dh_cli_capture(w->p);
    return strstr(dh_err, w->needle) != NULL;
}

/* The outer dlock killed with SIGKILL while a nested run's CMD runs: the
 * nested run stops its CMD (SIGKILL) and exits 79. */
static void test_outer_killed(void **state)
{
    (void)state;
    char pidf[DH_PATH_MAX], path[DH_PATH_MAX], body[1024];
    assert_int_equal(dh_tmpfile(pidf, sizeof pidf, "inner-cmd.pid"), 0);
    snprintf(body, sizeof body,
             "\"$D\" -u \"$U\" run k:k -- sh -c 'echo $$ > \"%s.tmp\"; mv \"%s.tmp\" \"%s\"; "
             "exec sleep 60'\n",
             pidf, pidf, pidf);
    script(path, sizeof path, "killed.sh", body);
    char u[128];
    snprintf(u, sizeof u, "U=%s", srv->url);
    const char *env[] = { env_d, u, NULL };
    dh_proc *p =
        dh_cli_bg_env(env, "-u", srv->url, "run", "k:k", "--", "sh", path, (const char *)NULL);
    if (!dh_wait_until(file_exists, pidf, 10000))
        fail_msg("the nested CMD never started");
    char buf[32];
    assert_true(dh_read_file(buf, sizeof buf, pidf) > 0);
    pid_t inner_cmd = (pid_t)atol(buf);
    assert_int_equal(dh_proc_signal(p, SIGKILL), 0);
    assert_int_equal(dh_proc_wait(p, 5000), 128 + SIGKILL);
    if (!dh_wait_until(pid_dead, &inner_cmd, 10000))
        fail_msg("the nested run's CMD outlived the outer dlock");
    struct errwatch w = { p, "is gone" };
    if (!dh_wait_until(stderr_has, &w, 10000) ||
        !strstr(dh_err, "k:k: the outer 'dlock run' (pid "))
        fail_msg("nested run did not say why it stopped: %s", dh_err);
    dh_proc_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nested_runs),    cmocka_unit_test(test_outer_unlocked),
        cmocka_unit_test(test_kinds_and_keys), cmocka_unit_test(test_not_an_ancestor),
        cmocka_unit_test(test_outer_killed),
    };
    return cmocka_run_group_tests_name("cli_nested", tests, group_setup, dh_group_teardown);
}
