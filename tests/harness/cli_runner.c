/*
 * cli_runner.c — the `dlock` runner for the CLI tests; see cli_runner.h.
 *
 * Design. A thin layer over the harness's process helpers (proc.c): it
 * builds the argv (the tool's path first) and an environment with the
 * DLOCK_* variables cleared, runs or spawns, and keeps the output of the
 * last run in dh_out/dh_err so a test can assert on it or print it in a
 * failure message. A run the harness could not start, or had to kill at
 * its timeout, fails the test at once: it is never an exit status to
 * compare.
 */
#include "cli_runner.h"

#include <stdio.h>
#include <string.h>

#ifndef DLOCK_CLI_PATH
#error "DLOCK_CLI_PATH must be defined by the build"
#endif

char dh_out[DH_CLI_OUT_MAX];
char dh_err[DH_CLI_OUT_MAX];

/* The variables the tool reads as defaults, and those `dlock run` hands to
 * CMD (a test run from inside a dlock must not inherit them). */
static const char *const cleared[] = {
    "DLOCK_URL",     "DLOCK_PASSWORD",      "DLOCK_PREFIX",
    "DLOCK_ID",      "DLOCK_KEY",           "DLOCK_KEYS",
    "DLOCK_SLOT",    "DLOCK_FENCING_TOKEN", "DLOCK_FENCING_TOKENS",
    "DLOCK_PERMITS", "DLOCK_HELD",
};

#define N_CLEARED (sizeof cleared / sizeof cleared[0])

void dh_cli_make_env(const char **env, const char *const *extra)
{
    size_t n = 0, i;

    for (i = 0; i < N_CLEARED; i++)
        env[n++] = cleared[i];
    for (i = 0; extra != NULL && extra[i] != NULL; i++) {
        if (n == DH_CLI_MAX_ENV - 1)
            fail_msg("dh_cli: more than %d environment entries", DH_CLI_MAX_ENV - 1);
        env[n++] = extra[i];
    }
    env[n] = NULL;
}

/* argv = { DLOCK_CLI_PATH, args from ap..., NULL }. */
static void make_argv(const char **argv, va_list ap)
{
    const char *a;
    int n = 0;

    argv[n++] = DLOCK_CLI_PATH;
    while ((a = va_arg(ap, const char *)) != NULL) {
        if (n == DH_CLI_MAX_ARGS - 1)
            fail_msg("dh_cli: more than %d arguments", DH_CLI_MAX_ARGS - 2);
        argv[n++] = a;
    }
    argv[n] = NULL;
}

/* Run the full argv (argv[0] is the tool) and check the harness ran it. */
static int run_full(const char **argv, const char *const *extra_env, int timeout_ms)
{
    const char *env[DH_CLI_MAX_ENV];
    int st;

    dh_cli_make_env(env, extra_env);
    st = dh_run(argv, env, timeout_ms, dh_out, sizeof dh_out, dh_err, sizeof dh_err);
    if (st == DH_RUN_TIMEOUT || st == DH_RUN_ERROR)
        fail_msg("dlock %s ...: %s (stderr: %s)", argv[1] != NULL ? argv[1] : "",
                 st == DH_RUN_TIMEOUT ? "killed at the timeout" : "could not run", dh_err);
    return st;
}

int dh_cli_argv(const char *const *args, const char *const *extra_env, int timeout_ms)
{
    const char *argv[DH_CLI_MAX_ARGS];
    int n = 0;

    argv[n++] = DLOCK_CLI_PATH;
    for (; *args != NULL; args++) {
        if (n == DH_CLI_MAX_ARGS - 1)
            fail_msg("dh_cli: more than %d arguments", DH_CLI_MAX_ARGS - 2);
        argv[n++] = *args;
    }
    argv[n] = NULL;
    return run_full(argv, extra_env, timeout_ms);
}

int dh_cli_env(const char *const *extra_env, int timeout_ms, ...)
{
    const char *argv[DH_CLI_MAX_ARGS];
    va_list ap;

    va_start(ap, timeout_ms);
    make_argv(argv, ap);
    va_end(ap);
    return run_full(argv, extra_env, timeout_ms);
}

dh_proc *dh_cli_bg_env(const char *const *extra_env, ...)
{
    const char *argv[DH_CLI_MAX_ARGS], *env[DH_CLI_MAX_ENV];
    dh_proc *p;
    va_list ap;

    va_start(ap, extra_env);
    make_argv(argv, ap);
    va_end(ap);
    dh_cli_make_env(env, extra_env);
    p = dh_spawn(argv, env);
    if (p == NULL)
        fail_msg("could not start dlock %s ...", argv[1] != NULL ? argv[1] : "");
    return p;
}

void dh_cli_capture(dh_proc *p)
{
    dh_proc_output(p, dh_out, sizeof dh_out, dh_err, sizeof dh_err);
}

int dh_cli_wait(dh_proc *p, int timeout_ms)
{
    int st = dh_proc_wait(p, timeout_ms);

    dh_cli_capture(p);
    return st;
}

void dh_cli_expect(int got, int want, const char *what)
{
    if (got != want)
        fail_msg("%s: exit status %d, want %d\nstdout: %s\nstderr: %s", what, got, want, dh_out,
                 dh_err);
}

void dh_cli_expect_proc(dh_proc *p, int want, const char *what)
{
    dh_cli_expect(dh_cli_wait(p, 15000), want, what);
}

void dh_cli_await_file(dh_proc *p, const char *path, const char *what)
{
    if (!dh_wait_until(dh_file_exists, (void *)path, 10000)) {
        dh_cli_capture(p);
        fail_msg("%s never happened; stderr: %s", what, dh_err);
    }
}
