/*
 * harness.h — the test harness, the one header every test includes:
 * private redis-server processes, forked helpers and spawned programs,
 * loopback fault helpers (closed ports, listeners that never answer),
 * bounded waiting, files, dlock glue (clients, options, queues), the group
 * setup every test file shares, and checkers for JSON and Prometheus text.
 * The `dlock` tool's runner is tests/cli_runner.h.
 *
 * Design. Every server is a real redis-server started by fork+exec on a free
 * loopback port in its own temporary directory, with PR_SET_PDEATHSIG so it
 * dies with the test process even if that process crashes. Everything the
 * harness creates (servers, sockets, temp dirs, background processes,
 * forked helpers) is kept in one registry and torn down by dh_cleanup(),
 * which an atexit handler and every group teardown run, so a failing test
 * never leaves a server behind; forked helpers are also taken down after
 * each test that uses dh_test_teardown. Waits are never fixed sleeps:
 * dh_wait_until() polls a condition every few milliseconds up to a bound,
 * so a broken library fails a test instead of hanging it. Functions return
 * 0 / a value on success and -1 on a harness failure (with a message on
 * stderr): a harness failure fails the test. Functions whose comment says
 * they fail the test do so through cmocka (main thread only).
 *
 * The implementation is split by concern under tests/harness/: core.c
 * (registry, cleanup, clock, waiting, cmocka hooks), files.c, proc.c,
 * thread.c, net.c, redis.c, commands.c, glue.c, json.c, prometheus.c,
 * cli_runner.c.
 *
 * One test of a file (or a few): DLOCK_TEST_FILTER=PATTERN in the
 * environment runs only the tests whose name matches (cmocka's wildcards
 * * and ?), DLOCK_TEST_SKIP=PATTERN leaves out those that match.
 *
 * Temp dirs are named "<TMPDIR or /tmp>/dh-<pid>-..."; ones left by a run
 * that was killed with SIGKILL are removed at the next run's first use.
 *
 * Threads: servers and processes must be started from the main thread
 * (PR_SET_PDEATHSIG is tied to the thread that forked), and the registry is
 * not locked. dh_connect, dh_cmd*, dh_find_key, dh_dbsize (a connection of
 * their own per call), dh_client, dh_round_trips, dh_attempts,
 * dh_keepalives, dh_waiters, dh_now_ms and dh_wait_until may be used from
 * any thread. Fork helpers (dh_fork) before the test opens any client: a
 * child forked from a threaded process can inherit a lock another thread
 * holds and hang; dh_fork refuses to fork then.
 */
#ifndef DLOCK_TEST_HARNESS_H
#define DLOCK_TEST_HARNESS_H

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "dlock.h"

/* Assert that a dlock call returned `want`; on mismatch the failure names
 * both codes and the thread's last error message. */
#define dh_assert_rc(expr, want)                                                                   \
    do {                                                                                           \
        int dh_got_ = (expr);                                                                      \
        int dh_want_ = (want);                                                                     \
        if (dh_got_ != dh_want_)                                                                   \
            fail_msg("%s: got %d (%s), want %d (%s); last_errmsg: \"%s\"", #expr, dh_got_,         \
                     dlock_strerror(dh_got_), dh_want_, dlock_strerror(dh_want_),                  \
                     dlock_last_errmsg());                                                         \
    } while (0)

#define DH_DIR_MAX 128 /* temp dirs: short, for unix socket paths */
#define DH_PATH_MAX 256
#define DH_MAX_EXTRA 16

/* One private redis-server. */
typedef struct dh_redis {
    pid_t pid;                       /* 0 while stopped */
    int port;                        /* loopback TCP port */
    char dir[DH_DIR_MAX];            /* its temp dir (--dir), removed at stop */
    char sock[DH_PATH_MAX];          /* DIR/redis.sock */
    char url[64];                    /* redis://127.0.0.1:P */
    char unix_url[DH_PATH_MAX + 16]; /* unix://DIR/redis.sock */
    char password[128];              /* from --requirepass, "" if none */
    char *extra[DH_MAX_EXTRA + 1];   /* extra args (copies), NULL-terminated */
} dh_redis;

/* Start a redis-server. extra_args: NULL or a NULL-terminated list of extra
 * command-line arguments (e.g. "--requirepass", "s3cret"). Waits (at most
 * 10 s) until it answers PING. Returns the server, or NULL on failure. */
dh_redis *dh_redis_start(const char *const *extra_args);

/* A redis-server replicating master (--replicaof 127.0.0.1 <its port>),
 * started as dh_redis_start (it answers; it may not have synchronised
 * yet). The server, or NULL on failure. */
dh_redis *dh_replica_start(const dh_redis *master);

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

/* The server's clock in microseconds (TIME), or -1: dh_time_us through
 * the caller's connection c (a forked helper's own, say), dh_server_us on
 * a fresh connection to r. */
int64_t dh_time_us(redisContext *c);
int64_t dh_server_us(const dh_redis *r);

/* 1 if every server of nodes[0..n) (NULL entries skipped) reports
 * cluster_state:ok in CLUSTER INFO, else 0. */
int dh_cluster_ok(dh_redis *const *nodes, int n);

/* 1 if the Sentinel at 127.0.0.1:port knows exactly one replica of master
 * `name` and could promote it now: flags "slave" only, its link to the
 * master up ("master-link-status" ok) and its INFO read in the last 5 s (a
 * replica the Sentinel has only heard of from the master's INFO cannot be
 * promoted: SENTINEL FAILOVER answers NOGOODSLAVE). Else 0. */
int dh_sentinel_replica_ready(int port, const char *name);

/* Find, in database db, a key whose name contains `name_part` and whose value
 * (string, or any field/value of a hash, or any member of a list/set/zset)
 * contains `needle` (e.g. a unique owner id). Copies the key name into
 * out. Returns 1 if found, 0 if not, -1 on error. Use it to locate the lock
 * key without depending on the library's key layout. */
int dh_find_key(char *out, size_t outlen, const dh_redis *r, int db, const char *name_part,
                const char *needle);

/* Delete the key dh_find_key finds (a lock taken from its holder behind
 * its back, as an operator or a failover would). 1 if it was deleted, 0 if
 * there was none, -1 on error. */
int dh_delete_key(const dh_redis *r, int db, const char *name_part, const char *needle);

/* A store of fenced writes (the resource a lock protects, on its own
 * server, through connection st): dh_store_counter reads its counter
 * ("GET counter"; 0 if unset or on error); dh_store_write sets the counter
 * to value if token is not below the highest token the store has accepted
 * ("fence"), counting each accepted write ("writes"). 1 if the write was
 * accepted, 0 if refused (a stale token) or on error. */
long long dh_store_counter(redisContext *st);
int dh_store_write(redisContext *st, uint64_t token, long long value);

/* The store's lost updates (read on a fresh connection): its accepted
 * writes minus its counter, 0 unless two holders wrote from the same read. */
long long dh_store_lost(const dh_redis *store);

/* Number of keys in db (DBSIZE), or -1. */
int64_t dh_dbsize(const dh_redis *r, int db);

/* A loopback port that was free a moment ago (never 6379; at most 55535,
 * so that port + 10000, a cluster node's bus port, exists too), or -1. */
int dh_free_port(void);

/* A loopback port where nothing listens: a socket bound to it but never
 * listening (so nothing else can take the port) until dh_cleanup(). */
int dh_closed_port(void);

/* "redis://127.0.0.1:<dh_closed_port()>" into buf; returns buf. */
const char *dh_closed_url(char *buf, size_t len);

/* A loopback TCP listener that never accepts and never answers; its accept
 * queue is filled so new connects stall. Returns the port (closed at
 * dh_cleanup()), or -1. */
int dh_noaccept_listener(void);

/* Monotonic milliseconds. */
int64_t dh_now_ms(void);

/* Poll pred(arg) every 2 ms until it returns non-zero or timeout_ms passed.
 * Returns 1 if the condition became true, 0 on timeout. */
int dh_wait_until(int (*pred)(void *arg), void *arg, int timeout_ms);

/* 1 if the atomic_int at flag is not 0: a dh_wait_until condition on a
 * flag (or counter) that another thread or process sets. */
int dh_flag_set(void *flag);

/* A fresh file path in the harness's temp dir ("DIR/<n>-<name>"). */
int dh_tmpfile(char *out, size_t outlen, const char *name);

/* A fresh, empty directory there (dh_tmpfile + mkdir). 0 or -1. */
int dh_tmpdir(char *out, size_t outlen, const char *name);

/* Read a whole file into buf (NUL-terminated, truncated to len-1). Returns
 * the length or -1. */
long dh_read_file(char *buf, size_t len, const char *path);

/* Write s to path (truncating). 0 or -1. */
int dh_write_file(const char *path, const char *s);

/* 1 if the file (a const char *path) exists: a dh_wait_until condition. */
int dh_file_exists(void *path);

/* The number of lines (newlines) in the file at path (its first 64 KiB),
 * or -1 if it cannot be read. */
int dh_file_lines(const char *path);

/* The number of newlines in s; the number of times needle occurs in hay
 * (not overlapping). */
int dh_count_lines(const char *s);
int dh_count_of(const char *hay, const char *needle);

/* 1 if s[0..n) is one or more decimal digits. */
int dh_is_digits(const char *s, size_t n);

/* Wait at most timeout_ms for child `pid` (of this process) to end and reap
 * it. Returns 1 and sets *status (exit status, or 128+N if signal N ended it)
 * when it ended, 0 on timeout (the child is left running), -1 on error. */
int dh_waitpid(pid_t pid, int *status, int timeout_ms);

/* fork() for a test helper process: the child gets PR_SET_PDEATHSIG
 * (SIGKILL) and the parent registers it, so dh_test_teardown (after each
 * test that uses it) and dh_cleanup() (group teardown, exit) kill and reap
 * it: a failed assertion never leaves a helper behind. Call it before the
 * test opens any client: it returns -1 (with a message) if the process has
 * more threads than it had before any client. Returns as fork(); the child
 * must leave with _exit() and must not use cmocka's assertions. */
pid_t dh_fork(void);

/* Wait for the n children in pids, all within timeout_ms. 1 if every one
 * ended with status 0; else 0, each failure named on stderr. */
int dh_wait_children(const pid_t *pids, int n, int timeout_ms);

/* A forked helper's report (dh_fork_call), in memory shared with it:
 * state (DH_SLOT_IDLE, DH_SLOT_RUNNING once it calls, DH_SLOT_DONE once
 * the call returned), the call's return value and its last error message. */
enum { DH_SLOT_IDLE, DH_SLOT_RUNNING, DH_SLOT_DONE };
typedef struct dh_slot {
    atomic_int state;
    int rc;
    char msg[200];
} dh_slot;

/* n zeroed slots in memory shared with children forked afterwards; fails
 * the test if it cannot be had. dh_slots_free(s, n) gives it back. */
dh_slot *dh_slots_new(int n);
void dh_slots_free(dh_slot *s, int n);

/* Fork a helper (dh_fork) that waits until the test writes a byte to *go
 * (the write end of its pipe; close it when done), then opens a client of
 * url with owner id owner, marks s running, calls fn(c, arg) (the child's
 * copy of arg), reports the result in s and exits (1 if the pipe closed
 * before the byte came, 2 if the client could not be opened). Returns the
 * child's pid; fails the test if it cannot fork. */
pid_t dh_fork_call(dh_slot *s, int *go, const char *url, const char *owner,
                   int (*fn)(dlock_client *c, void *arg), void *arg);

/* 1 once the slot's call returned (a dh_wait_until condition on a dh_slot *). */
int dh_slot_done(void *s);

/* Wait at most timeout_ms for the slot's call to return, and fail the test
 * (naming what, the code and the call's last error message) if it did not
 * or returned other than want. */
void dh_slot_expect(const dh_slot *s, int timeout_ms, int want, const char *what);

/* Kill (SIGKILL, SIGCONT) and reap every forked helper still running. */
void dh_reap_forks(void);

/* 1 if pid is gone or a zombie, 0 if it still runs. */
int dh_pid_dead(pid_t pid);

/* The state letter of pid in /proc (R, S, D, T stopped, Z zombie, ...), or
 * 0 if there is no such process. */
char dh_pid_state(pid_t pid);

/* ------------------------------------------------------ calls on a thread */

/* A call fn(arg) run on a thread of its own, so the main thread can watch
 * it block and end (thread.c). rc is fn's return value, ended_ms the
 * dh_now_ms() at which it returned and msg the thread's dlock_last_errmsg()
 * then, valid once done. */
typedef struct dh_thread {
    pthread_t th;
    int (*fn)(void *arg);
    void *arg;
    atomic_int done;
    int rc;
    int64_t ended_ms;
    char msg[256];
} dh_thread;

/* Start fn(arg) on a new thread; fails the test if it cannot. */
void dh_thread_start(dh_thread *t, int (*fn)(void *arg), void *arg);

/* 1 once the call returned (a dh_wait_until condition on a dh_thread *). */
int dh_thread_done(void *t);

/* Wait at most timeout_ms for the call to return (else fail the test),
 * join the thread, and return the call's return value. */
int dh_thread_join(dh_thread *t, int timeout_ms);

/* dh_thread_join, and fail the test unless the call returned want; the
 * failure names what, both codes and the call's last error message. */
void dh_thread_expect(dh_thread *t, int timeout_ms, int want, const char *what);

/* ---------------------------------------------------------- cmocka hooks */

/* The group setup of a test file with one plain server: start it (extra
 * arguments as dh_redis_start) into *out. 0, or -1 so cmocka skips the
 * group. A file's group_setup is `return dh_group_start(&srv, NULL);`
 * plus whatever else it needs. */
int dh_group_start(dh_redis **out, const char *const *extra_args);

/* dh_group_start, and a client of that server with owner id `owner` into
 * *client, for the test's own locks (conflicts, state checks); the group
 * teardown closes it. 0 or -1. */
int dh_group_start_client(dh_redis **out, dlock_client **client, const char *owner);

/* Group teardown: closes the group's client, then dh_cleanup() (every server, process, helper, socket and
 * temp dir of the group). Give it to cmocka_run_group_tests_name as is, or
 * call it last from a file's own teardown. */
int dh_group_teardown(void **state);

/* Per-test teardown: dh_reap_forks(), so a test that failed before it
 * killed its forked helpers leaves none to the next test. */
int dh_test_teardown(void **state);
#define dh_unit_test(f) cmocka_unit_test_teardown(f, dh_test_teardown)

/* ----------------------------------------------------------- dlock glue */

#define DH_OWNER_MAX 64

/* A unique owner id "<tag>-<pid>-<n>" for this process. */
void dh_owner(char *out, size_t outlen, const char *tag);

/* dlock_client_open with owner_id set (NULL: the default) (and
 * connect/command timeouts of 2 s); prints the error to stderr and returns
 * NULL on failure. */
dlock_client *dh_client(const char *url, const char *owner);

/* A client of r whose owner id is made unique from tag (dh_owner), copied
 * to owner (DH_OWNER_MAX bytes) unless NULL. Fails the test if it cannot
 * be opened. */
dlock_client *dh_client_tagged(const dh_redis *r, const char *tag, char *owner);

/* DLOCK_CLIENT_OPTS_INIT with owner_id a unique owner id made from tag
 * (dh_owner), written to owner (DH_OWNER_MAX bytes, which must outlive
 * the options' use). */
dlock_client_opts dh_client_opts(char *owner, const char *tag);

/* dlock_client_open(url, opts) that fails the test unless it returns 0. */
dlock_client *dh_client_with(const char *url, const dlock_client_opts *opts);

/* DLOCK_LOCK_OPTS_INIT with ttl_ms (<= 0: the default, 30 s) and wait_ms
 * (0: one attempt; DLOCK_WAIT_FOREVER). */
dlock_lock_opts dh_opts(int64_t ttl_ms, int64_t wait_ms);

/* dh_opts without auto-renewal: the lock lives ttl_ms unless extended. */
dlock_lock_opts dh_opts_fixed(int64_t ttl_ms, int64_t wait_ms);

/* A Redlock deployment of three servers: `first`, and two started for it
 * (more), the URL naming the three, and a client of it (NULL until
 * dh_redlock_open). */
typedef struct dh_redlock {
    dh_redis *more[2];
    char url[256];
    dlock_client *c;
} dh_redlock;

/* Start the two servers and write the URL; fails the test if a server
 * cannot be started. */
void dh_redlock_start(dh_redlock *rl, const dh_redis *first);

/* dh_redlock_start, and a client of the three with owner id owner
 * (dh_client), stored in rl->c and returned; fails the test if it cannot
 * be opened. */
dlock_client *dh_redlock_open(dh_redlock *rl, const dh_redis *first, const char *owner);

/* Close the client (if any) and stop the two servers started for it. */
void dh_redlock_stop(dh_redlock *rl);

/* The lock l keeps key from the client other, and its release frees it:
 * other's try is DLOCK_EBUSY, l's release 0, then other's try is granted
 * (and released). Fails the test otherwise. */
void dh_release_frees(dlock_lock *l, dlock_client *other, const char *key);

/* The number of waiters queued for `key` (dlock_inspect), or -1. */
int64_t dh_waiters(dlock_client *c, const char *key);

/* Wait at most timeout_ms until `key` has at least n waiters. 1 if so. */
int dh_wait_waiters(dlock_client *c, const char *key, int64_t n, int timeout_ms);

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
int dh_run(const char *const *argv, const char *const *extra_env, int timeout_ms, char *out,
           size_t outlen, char *err, size_t errlen);

/* Run the shell command line cmd (sh -c) to completion with a bound
 * (dh_run); on failure its status, the line and its stderr are printed.
 * Returns as dh_run: 0 on success. */
int dh_sh(const char *cmd, int timeout_ms);

/* -------------------------------------------------------------- checkers */

/* 1 if s is exactly one JSON value (plus whitespace) (json.c). */
int dh_json_valid(const char *s);
/* s without the whitespace outside JSON strings, into buf (truncated). */
void dh_json_compact(char *buf, size_t len, const char *s);

/* Check a Prometheus text exposition against the format (grammar, one
 * HELP and TYPE per family before its samples, counters named _total,
 * cumulative histogram buckets whose +Inf equals _count) and, where the
 * machine has it, against prometheus_client's parser (prometheus.c).
 * Fails the test naming the first bad line; returns the number of
 * samples (at least 1). */
int dh_check_exposition(const char *text);

/* ---------------------------------------------------------------- cleanup */

/* Stop every server, close every socket, kill every background process and
 * forked helper and remove every temp dir the harness created. Safe to
 * call more than once; registered with atexit() on first use; does nothing
 * in a forked child. */
void dh_cleanup(void);

#endif
