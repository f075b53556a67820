/*
 * cli_runner.h — running the `dlock` tool (DLOCK_CLI_PATH) from a test:
 * the one runner every CLI test uses.
 *
 * Every invocation goes through the harness's process helpers (dh_run,
 * dh_spawn): its own process group, captured stdout and stderr, a hard
 * timeout, so a hung CLI fails the test instead of hanging it. The
 * environment has the DLOCK_* variables cleared (the defaults the tool
 * reads, and those a `dlock run` hands to CMD), so neither the developer's
 * settings nor an outer dlock can leak in; a test adds what it wants with
 * extra_env. Output of the last run, or of the last background process
 * captured, is in dh_out and dh_err (NUL-terminated, truncated to
 * DH_CLI_OUT_MAX - 1 bytes).
 *
 * Main thread only (the buffers are shared, processes are started with
 * PR_SET_PDEATHSIG, which is tied to the thread that forked).
 */
#ifndef DLOCK_TEST_CLI_RUNNER_H
#define DLOCK_TEST_CLI_RUNNER_H

#include "harness.h"

#define DH_CLI_OUT_MAX (64 * 1024)
#define DH_CLI_TIMEOUT_MS 20000 /* a foreground run, unless said otherwise */
#define DH_CLI_MAX_ARGS 96
#define DH_CLI_MAX_ENV 24

extern char dh_out[DH_CLI_OUT_MAX];
extern char dh_err[DH_CLI_OUT_MAX];

/* Fill env (room for DH_CLI_MAX_ENV entries) with the DLOCK_* variables to
 * unset, then `extra` ("NAME=VALUE" or "NAME"), NULL-terminated: the
 * environment for dh_spawn()/dh_run() of anything that runs dlock. */
void dh_cli_make_env(const char **env, const char *const *extra);

/* Run dlock with `args` (NULL-terminated, without the program name) and
 * the cleared environment plus extra_env, for at most timeout_ms. Output
 * in dh_out/dh_err. A run that cannot start or is killed at the timeout
 * fails the test. Returns dlock's exit status. */
int dh_cli_argv(const char *const *args, const char *const *extra_env, int timeout_ms);

/* The same with the arguments listed (NULL-ended). */
int dh_cli_env(const char *const *extra_env, int timeout_ms, ...);
#define dh_cli(...) dh_cli_env(NULL, DH_CLI_TIMEOUT_MS, __VA_ARGS__, (const char *)NULL)

/* Start dlock in the background with the arguments listed (NULL-ended).
 * Fails the test if it cannot be started. */
dh_proc *dh_cli_bg_env(const char *const *extra_env, ...);
#define dh_cli_bg(...) dh_cli_bg_env(NULL, __VA_ARGS__, (const char *)NULL)

/* Copy a background process's output so far into dh_out/dh_err. */
void dh_cli_capture(dh_proc *p);

/* Wait at most timeout_ms for a background dlock, capture its output and
 * return its status (DH_RUN_TIMEOUT if it was killed at the timeout). */
int dh_cli_wait(dh_proc *p, int timeout_ms);

/* Fail the test with both outputs unless got == want. */
void dh_cli_expect(int got, int want, const char *what);

/* Wait (10 s at most) until `path` exists, made by the CMD of background
 * dlock p; else fail the test with p's stderr: "<what> never happened". */
void dh_cli_await_file(dh_proc *p, const char *path, const char *what);

/* dh_cli_wait() (15 s at most) and dh_cli_expect(). */
void dh_cli_expect_proc(dh_proc *p, int want, const char *what);

#endif
