/*
 * test_recipes.c — the service recipes in docs/recipes/ work as written:
 * the systemd unit passes `systemd-analyze verify` (when systemd-analyze is
 * installed) and its ExecStart runs; the cron line's command, taken from
 * the cron file as cron would run it, runs the job on a free lock, stays
 * silent and successful when the lock is taken (cron mails nothing), and
 * fails loudly when Redis cannot be reached.
 *
 * Design. The recipes name installed paths (/usr/local/bin/dlock, the
 * job's program, /etc/...): the test substitutes the built tool, a job
 * script of its own and temporary files, and nothing else, so a recipe
 * that changes is tested as changed. Everything runs against a private
 * server through the harness, with bounded waits.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli_runner.h"

#ifndef DLOCK_SOURCE_DIR
#error "DLOCK_SOURCE_DIR must be defined by the build"
#endif

#define RECIPES DLOCK_SOURCE_DIR "/docs/recipes/"

static dh_redis *srv;
static dlock_client *holder;

static int group_setup(void **state)
{
    (void)state;
    return dh_group_start_client(&srv, &holder, "recipe-holder");
}

/* Replace every `from` in s (size len) by `to`. */
static void replace_all(char *s, size_t len, const char *from, const char *to)
{
    static char buf[64 * 1024];
    size_t n = 0, fl = strlen(from), tl = strlen(to);
    const char *p = s, *q;
    assert_true(len <= sizeof buf);
    while ((q = strstr(p, from)) != NULL) {
        assert_true(n + (size_t)(q - p) + tl < len);
        memcpy(buf + n, p, (size_t)(q - p));
        n += (size_t)(q - p);
        memcpy(buf + n, to, tl);
        n += tl;
        p = q + fl;
    }
    assert_true(n + strlen(p) < len);
    strcpy(buf + n, p);
    strcpy(s, buf);
}

/* The value of the first line of `text` that starts with `key`, in out. */
static void line_value(char *out, size_t len, const char *text, const char *key)
{
    const char *p = text;
    while (p != NULL && strncmp(p, key, strlen(key)) != 0)
        p = (p = strchr(p, '\n')) != NULL ? p + 1 : NULL;
    if (p == NULL)
        fail_msg("no line starting with %s", key);
    p += strlen(key);
    snprintf(out, len, "%.*s", (int)strcspn(p, "\n"), p);
}

static int have_program(const char *prog)
{
    char cmd[128];
    const char *argv[] = { "sh", "-c", cmd, NULL };
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null", prog);
    return dh_run(argv, NULL, 10000, NULL, 0, NULL, 0) == 0;
}

static void test_systemd_unit(void **state)
{
    (void)state;
    static char unit[16 * 1024], out[16 * 1024], err[16 * 1024];
    char dir[DH_PATH_MAX], path[DH_PATH_MAX + 64], envfile[DH_PATH_MAX + 64];
    char exec[1024], cmd[2048], url_env[128];
    assert_true(dh_read_file(unit, sizeof unit, RECIPES "dlock-scheduler.service") > 0);
    assert_int_equal(dh_tmpfile(dir, sizeof dir, "systemd"), 0);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/man/man1'", dir);
    const char *mk[] = { "sh", "-c", cmd, NULL };
    assert_int_equal(dh_run(mk, NULL, 10000, NULL, 0, NULL, 0), 0);
    snprintf(envfile, sizeof envfile, "%s/scheduler.env", dir);
    snprintf(url_env, sizeof url_env, "DLOCK_URL=%s\n", srv->url);
    assert_int_equal(dh_write_file(envfile, url_env), 0);
    replace_all(unit, sizeof unit, "/usr/local/bin/dlock", DLOCK_CLI_PATH);
    replace_all(unit, sizeof unit, "/usr/local/bin/scheduler", "/bin/true");
    replace_all(unit, sizeof unit, "/etc/dlock/scheduler.env", envfile);
    snprintf(path, sizeof path, "%s/dlock-scheduler.service", dir);
    assert_int_equal(dh_write_file(path, unit), 0);

    if (have_program("systemd-analyze")) {
        /* Documentation=man:dlock(1) is checked too: MANPATH finds the
         * page this build made. */
        char manpath[DH_PATH_MAX + 32], man_copy[DH_PATH_MAX * 2];
        snprintf(manpath, sizeof manpath, "MANPATH=%s/man", dir);
#ifdef DLOCK_MAN_DIR
        snprintf(man_copy, sizeof man_copy, "cp '%s/dlock.1' '%s/man/man1/'", DLOCK_MAN_DIR, dir);
        const char *cp[] = { "sh", "-c", man_copy, NULL };
        assert_int_equal(dh_run(cp, NULL, 10000, NULL, 0, NULL, 0), 0);
        const char *argv[] = { "systemd-analyze", "verify", path, NULL };
#else
        (void)man_copy;
        const char *argv[] = { "systemd-analyze", "verify", "--man=no", path, NULL };
#endif
        const char *env[] = { manpath, NULL };
        int st = dh_run(argv, env, 60000, out, sizeof out, err, sizeof err);
        if (st != 0 || err[0] != '\0' || out[0] != '\0')
            fail_msg("systemd-analyze verify: exit %d\n%s%s", st, out, err);
    } else {
        printf("systemd-analyze is not installed: the unit is not verified\n");
    }

    /* ExecStart, as systemd would start it (%H: the host name), with the
     * variables of the EnvironmentFile. */
    line_value(exec, sizeof exec, unit, "ExecStart=");
    replace_all(exec, sizeof exec, "%H", "host-a");
    const char *argv[] = { "sh", "-c", exec, NULL };
    const char *env[] = { "DLOCK_URL", "DLOCK_ID", url_env, NULL };
    url_env[strcspn(url_env, "\n")] = '\0';
    int st = dh_run(argv, env, 30000, out, sizeof out, err, sizeof err);
    if (st != 0)
        fail_msg("ExecStart %s: exit %d\n%s%s", exec, st, out, err);
}

/* The cron file's job line, as cron runs it: the command after the five
 * time fields and the user, with the file's variable lines before it. */
static void cron_command(char *out, size_t len, const char *job)
{
    static char text[16 * 1024];
    char vars[2048] = "", line[2048];
    const char *p = text;
    assert_true(dh_read_file(text, sizeof text, RECIPES "dlock-report.cron") > 0);
    out[0] = '\0';
    for (; *p != '\0'; p += strcspn(p, "\n") + (p[strcspn(p, "\n")] != '\0')) {
        snprintf(line, sizeof line, "%.*s", (int)strcspn(p, "\n"), p);
        if (line[0] == '#' || line[0] == '\0')
            continue;
        if (strchr(line, '=') != NULL && strchr(line, ' ') == NULL) {
            /* NAME=value: exported by cron; DLOCK_URL is the test's */
            if (strncmp(line, "DLOCK_URL=", 10) != 0 && strncmp(line, "PATH=", 5) != 0 &&
                strncmp(line, "SHELL=", 6) != 0) {
                strncat(vars, "export ", sizeof vars - strlen(vars) - 1);
                strncat(vars, line, sizeof vars - strlen(vars) - 1);
                strncat(vars, "; ", sizeof vars - strlen(vars) - 1);
            }
            continue;
        }
        const char *c = line;
        for (int field = 0; field < 6; field++) {
            c += strcspn(c, " \t");
            c += strspn(c, " \t");
        }
        snprintf(out, len, "%s%s", vars, c);
    }
    if (out[0] == '\0')
        fail_msg("no job line in the cron file");
    replace_all(out, len, "/usr/local/bin/nightly-report", job);
}

static int lines_in(const char *path)
{
    char buf[1024];
    int n = 0;
    if (dh_read_file(buf, sizeof buf, path) < 0)
        return 0;
    for (const char *p = buf; *p; p++)
        n += *p == '\n';
    return n;
}

static void test_cron_line(void **state)
{
    (void)state;
    char job[DH_PATH_MAX], log[DH_PATH_MAX], script[DH_PATH_MAX * 2], cmd[4096];
    char url_env[128], path_env[DH_PATH_MAX + 64], closed[128];
    static char out[16 * 1024], err[16 * 1024];
    assert_int_equal(dh_tmpfile(job, sizeof job, "nightly-report"), 0);
    assert_int_equal(dh_tmpfile(log, sizeof log, "report.log"), 0);
    snprintf(script, sizeof script, "#!/bin/sh\necho \"report $DLOCK_FENCING_TOKEN\" >> '%s'\n",
             log);
    assert_int_equal(dh_write_file(job, script), 0);
    assert_int_equal(chmod(job, 0700), 0);
    cron_command(cmd, sizeof cmd, job);

    /* cron's environment: its PATH with the built dlock first */
    char builddir[DH_PATH_MAX];
    snprintf(builddir, sizeof builddir, "%s", DLOCK_CLI_PATH);
    *strrchr(builddir, '/') = '\0';
    snprintf(path_env, sizeof path_env, "PATH=%s:/usr/local/bin:/usr/bin:/bin", builddir);
    snprintf(url_env, sizeof url_env, "DLOCK_URL=%s", srv->url);
    const char *env[] = { path_env, url_env, "DLOCK_ID", "DLOCK_PREFIX", NULL };
    const char *argv[] = { "/bin/sh", "-c", cmd, NULL };

    /* Free: the report runs; nothing to mail. */
    int st = dh_run(argv, env, 30000, out, sizeof out, err, sizeof err);
    if (st != 0 || out[0] || err[0])
        fail_msg("cron line on a free lock: exit %d\n%s%s\n(%s)", st, out, err, cmd);
    assert_int_equal(lines_in(log), 1);

    /* Taken by another machine: success, silence, no second report. */
    dlock_lock *l = NULL;
    dh_assert_rc(dlock_try_acquire(&l, holder, "report:nightly", NULL), 0);
    st = dh_run(argv, env, 30000, out, sizeof out, err, sizeof err);
    if (st != 0 || out[0] || err[0])
        fail_msg("cron line on a taken lock: exit %d, output \"%s%s\"", st, out, err);
    assert_int_equal(lines_in(log), 1);
    dh_assert_rc(dlock_release(l), 0);

    /* Redis unreachable: a failure cron mails. */
    snprintf(closed, sizeof closed, "DLOCK_URL=redis://127.0.0.1:%d", dh_closed_port());
    const char *env_closed[] = { path_env, closed, "DLOCK_ID", "DLOCK_PREFIX", NULL };
    st = dh_run(argv, env_closed, 30000, out, sizeof out, err, sizeof err);
    if (st != 69 || err[0] == '\0')
        fail_msg("cron line, Redis unreachable: exit %d, stderr \"%s\"", st, err);
    assert_int_equal(lines_in(log), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_systemd_unit),
        cmocka_unit_test(test_cron_line),
    };
    return cmocka_run_group_tests_name("recipes", tests, group_setup, dh_group_teardown);
}
