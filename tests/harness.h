/*
 * harness.h — the test harness: private redis-server processes, fault
 * helpers (closed ports, listeners that never answer), bounded waiting, and
 * a runner for the `dlock` tool with captured output.
 *
 * Design. Every server is a real redis-server started by fork+exec on a free
 * loopback port in its own temporary directory, with PR_SET_PDEATHSIG so it
 * dies with the test process even if that process crashes. Everything the
 * harness creates (servers, sockets, temp dirs, background processes) is
 * kept in one registry and torn down by dh_cleanup(), which an atexit
 * handler also runs, so a failing test never leaves a server behind. Waits
 * are never fixed sleeps: dh_wait_until() polls a condition every few
 * milliseconds up to a bound, so a broken library fails a test instead of
 * hanging it. Functions return 0 / a value on success and -1 on a harness
 * failure (with a message on stderr): a harness failure fails the test.
 *
 * Temp dirs are named "<TMPDIR or /tmp>/dh-<pid>-..."; ones left by a run
 * that was killed with SIGKILL are removed at the next run's first use.
 *
 * Threads: servers and processes must be started from the main thread
 * (PR_SET_PDEATHSIG is tied to the thread that forked), and the registry is
 * not locked. dh_connect, dh_cmd*, dh_find_key, dh_dbsize (a connection of
 * their own per call), dh_round_trips, dh_now_ms and dh_wait_until may be
 * used from any thread.
 */
#ifndef DLOCK_TEST_HARNESS_H
#define DLOCK_TEST_HARNESS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "dlock.h"

/* Assert that a dlock call returned `want`; on mismatch the failure names
 * both codes and the thread's last error message. */
#define dh_assert_rc(expr, want)                                                   \
    do {                                                                           \
        int dh_got_ = (expr);                                                      \
        int dh_want_ = (want);                                                     \
        if (dh_got_ != dh_want_)                                                   \
            fail_msg("%s: got %d (%s), want %d (%s); last_errmsg: \"%s\"", #expr, \
                     dh_got_, dlock_strerror(dh_got_), dh_want_,                   \
                     dlock_strerror(dh_want_), dlock_last_errmsg());               \
    } while (0)

#define DH_DIR_MAX 128  /* temp dirs: short, for unix socket paths */
#define DH_PATH_MAX 256
#define DH_MAX_EXTRA 16

/* One private redis-server. */
typedef struct dh_redis {
    pid_t pid;                  /* 0 while stopped */
    int port;                   /* loopback TCP port */
    char dir[DH_DIR_MAX];       /* its temp dir (--dir), removed at stop */
    char sock[DH_PATH_MAX];     /* DIR/redis.sock */
    char url[64];               /* redis://127.0.0.1:P */
    char unix_url[DH_PATH_MAX + 16]; /* unix://DIR/redis.sock */
    char password[128];         /* from --requirepass, "" if none */
    char *extra[DH_MAX_EXTRA + 1]; /* extra args (copies), NULL-terminated */
} dh_redis;

/* Start a redis-server. extra_args: NULL or a NULL-terminated list of extra
 * command-line arguments (e.g. "--requirepass", "s3cret"). Waits (at most
 * 10 s) until it answers PING. Returns the server, or NULL on failure. */
dh_redis *dh_redis_start(const char *const *extra_args);

/* Stop it (SIGTERM, SIGKILL after 5 s), reap it, remove its dir, free it.
 * NULL is a no-op. */
void dh_redis_stop(dh_redis *r);

/* SIGKILL the server and reap it (dir kept; r->pid becomes 0). */
int dh_redis_kill9(dh_redis *r);

/* SIGSTOP / SIGCONT: a server that stops answering without closing. */
int dh_redis_pause(dh_redis *r);
int dh_redis_resume(dh_redis *r);

/* Kill -9 and start again on the same port with empty data (the dir is
 * emptied). Waits until it answers. Returns 0 or -1. */
int dh_redis_restart(dh_redis *r);

/* A synchronous hiredis connection to r (authenticated if r has a
 * password, db selected). NULL on failure. Free with redisFree(). */
redisContext *dh_connect(const dh_redis *r, int db);

/* Run one command (hiredis format) on database db through a fresh
 * connection. dh_cmd returns the reply (freeReplyObject it) or NULL.
 * dh_cmd_int returns the integer reply, or INT64_MIN on error / other type.
 * dh_cmd_str copies a string/status reply into buf and returns its length;
 * -1 on error, nil or other type (buf then ""). dh_cmd_ok: 0 if the reply is
 * not an error, -1 otherwise. */
redisReply *dh_cmd(const dh_redis *r, int db, const char *fmt, ...);
int64_t dh_cmd_int(const dh_redis *r, int db, const char *fmt, ...);
int dh_cmd_str(char *buf, size_t len, const dh_redis *r, int db, const char *fmt, ...);
int dh_cmd_ok(const dh_redis *r, int db, const char *fmt, ...);

/* Find, in database db, a key whose name contains `name_part` and whose value
 * (string, or any field/value of a hash, or any member of a list/set/zset)
 * contains `needle` (e.g. a unique owner id). Copies the key name into
 * out. Returns 1 if found, 0 if not, -1 on error. Use it to locate the lock
 * key without depending on the library's key layout. */
int dh_find_key(char *out, size_t outlen, const dh_redis *r, int db,
                const char *name_part, const char *needle);

/* Number of keys in db (DBSIZE), or -1. */
int64_t dh_dbsize(const dh_redis *r, int db);

/* A loopback port where nothing listens: a socket bound to it but never
 * listening (so nothing else can take the port) until dh_cleanup(). */
int dh_closed_port(void);

/* A loopback TCP listener that never accepts and never answers; its accept
 * queue is filled so new connects stall. Returns the port (closed at
 * dh_cleanup()), or -1. */
int dh_noaccept_listener(void);

/* Monotonic milliseconds. */
int64_t dh_now_ms(void);

/* Poll pred(arg) every 2 ms until it returns non-zero or timeout_ms passed.
 * Returns 1 if the condition became true, 0 on timeout. */
int dh_wait_until(int (*pred)(void *arg), void *arg, int timeout_ms);

/* A fresh file path in the harness's temp dir ("DIR/<name>"). */
int dh_tmpfile(char *out, size_t outlen, const char *name);

/* Read a whole file into buf (NUL-terminated, truncated to len-1). Returns
 * the length or -1. */
long dh_read_file(char *buf, size_t len, const char *path);

/* Write s to path (truncating). 0 or -1. */
int dh_write_file(const char *path, const char *s);

/* Wait at most timeout_ms for child `pid` (of this process) to end and reap
 * it. Returns 1 and sets *status (exit status, or 128+N if signal N ended it)
 * when it ended, 0 on timeout (the child is left running), -1 on error. */
int dh_waitpid(pid_t pid, int *status, int timeout_ms);

/* fork() for a test helper process: the child gets PR_SET_PDEATHSIG
 * (SIGKILL) and the parent registers it, so dh_cleanup() — run at exit and
 * by failing tests' teardown — kills and reaps it: a failed assertion never
 * leaves a helper behind. Returns as fork(); the child must _exit(). */
pid_t dh_fork(void);

/* 1 if pid is gone or a zombie, 0 if it still runs. */
int dh_pid_dead(pid_t pid);

/* ----------------------------------------------------------- dlock glue */

/* A unique owner id "<tag>-<pid>-<n>" for this process. */
void dh_owner(char *out, size_t outlen, const char *tag);

/* dlock_client_open with owner_id set (and connect/command timeouts of
 * 2 s); prints the error to stderr and returns NULL on failure. */
dlock_client *dh_client(const char *url, const char *owner);

/* Command round trips this client has made so far (dlock_stats), or 0. */
uint64_t dh_round_trips(dlock_client *c);

/* Acquire attempts (grant or busy answers) and waiter keepalives this
 * client has made so far (dlock_stats), or 0. */
uint64_t dh_attempts(dlock_client *c);
uint64_t dh_keepalives(dlock_client *c);

/* -------------------------------------------------------- child processes */

#define DH_RUN_TIMEOUT (-1000) /* the process was killed at the timeout */
#define DH_RUN_ERROR (-1)      /* the harness could not run it */

typedef struct dh_proc dh_proc;

/* Start argv (argv[0] looked up in PATH) in the background, in its own
 * process group, with PR_SET_PDEATHSIG. extra_env: NULL or a NULL-terminated
 * list of "NAME=VALUE" (set/override) or "NAME" (unset). Stdout and stderr
 * go to files. Returns NULL on failure. */
dh_proc *dh_spawn(const char *const *argv, const char *const *extra_env);

/* pid of the process (its process group id too). */
pid_t dh_proc_pid(const dh_proc *p);

/* Wait at most timeout_ms for it to end. Returns its exit status, 128+N if
 * a signal N ended it, or DH_RUN_TIMEOUT after killing its group with
 * SIGKILL. Idempotent: later calls return the same status. */
int dh_proc_wait(dh_proc *p, int timeout_ms);

/* 1 if it has ended (reaps it), 0 if still running. */
int dh_proc_done(dh_proc *p);

/* Send sig to the process. */
int dh_proc_signal(dh_proc *p, int sig);

/* Its captured stdout / stderr so far (NUL-terminated). */
void dh_proc_output(dh_proc *p, char *out, size_t outlen, char *err, size_t errlen);

/* Kill (if running), reap, and free. NULL ok. */
void dh_proc_free(dh_proc *p);

/* Run argv to completion with a bound: spawn + wait + output + free.
 * out/err may be NULL. Returns as dh_proc_wait, or DH_RUN_ERROR. */
int dh_run(const char *const *argv, const char *const *extra_env, int timeout_ms,
           char *out, size_t outlen, char *err, size_t errlen);

/* ------------------------------------------------------------------ JSON */

/* 1 if s is exactly one JSON value (plus whitespace) (json_check.c). */
int dh_json_valid(const char *s);
/* s without the whitespace outside JSON strings, into buf (truncated). */
void dh_json_compact(char *buf, size_t len, const char *s);

/* ---------------------------------------------------------------- cleanup */

/* Stop every server, close every socket, kill every background process and
 * remove every temp dir the harness created. Safe to call more than once;
 * registered with atexit() on first use; does nothing in a forked child. */
void dh_cleanup(void);

#endif
