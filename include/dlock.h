/*
 * dlock.h — distributed locks for C, backed by Redis.
 *
 * This header is the whole public API and its reference documentation.
 * Anything not declared here is private and may change at any time.
 *
 * Conventions
 * - Every fallible function returns int: 0 on success or a negative DLOCK_E*
 *   code. dlock_strerror() turns a code into static text; dlock_last_errmsg()
 *   gives the detail of the calling thread's last failure (which host, which
 *   reply), also after a failed dlock_client_open().
 * - Output parameters come first and are named `out`. An object handed out
 *   through `out` belongs to the caller and has its own free/close/release
 *   function. On failure `*out` is set to NULL.
 * - Options are plain structs with a `version` field and an `..._INIT` macro
 *   that fills in the defaults. Initialise with the macro, then change fields:
 *       dlock_lock_opts o = DLOCK_LOCK_OPTS_INIT; o.ttl_ms = 10000;
 *   New fields are only ever appended. Passing NULL means "all defaults".
 *   The library copies every string it keeps.
 * - Bad input is rejected with DLOCK_EINVAL and a message; nothing is clamped
 *   silently and nothing invalid is sent to Redis.
 * - The library never calls abort() or exit(), also not on out-of-memory.
 *
 * Threads
 * - A dlock_client may be shared by any number of threads: every function
 *   that takes a dlock_client is safe to call concurrently. Internally the
 *   client keeps a small pool of connections; each call borrows one for its
 *   round trips, so threads do not wait on each other's commands.
 * - A dlock_lock is used by one thread at a time (it may move between
 *   threads). dlock_is_held(), dlock_lock_remaining_ms() and
 *   dlock_lock_renew_error() may be called from any thread at any time while
 *   the handle exists.
 * - After fork() the child must not use the parent's client: open its own.
 *
 * Locks are not reentrant unless asked (dlock_lock_opts.reentrant): by
 * default, acquiring a key that the same client already holds waits like any
 * other contender.
 */
#ifndef DLOCK_H
#define DLOCK_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && __GNUC__ >= 4
#define DLOCK_API __attribute__((visibility("default")))
#define DLOCK_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define DLOCK_API
#define DLOCK_PRINTF(f, a)
#endif

/* ---------------------------------------------------------------- version */

#define DLOCK_VERSION_MAJOR 0
#define DLOCK_VERSION_MINOR 1
#define DLOCK_VERSION_PATCH 0
#define DLOCK_VERSION_STRING "0.1.0"

/* The library's version string, e.g. "0.1.0" (may differ from the header's
 * DLOCK_VERSION_STRING when a newer shared library is loaded). */
DLOCK_API const char *dlock_version(void);

/* ----------------------------------------------------------------- errors */

/* Error codes. Append only; never renumber. */
enum {
    DLOCK_OK = 0,
    DLOCK_EINVAL = -1,    /* invalid argument (message in dlock_last_errmsg) */
    DLOCK_ENOMEM = -2,    /* out of memory */
    DLOCK_EBUSY = -3,     /* held by someone else (try-lock) */
    DLOCK_ETIMEDOUT = -4, /* waited the whole wait budget */
    DLOCK_ENOTHELD = -5,  /* this handle no longer holds the lock */
    DLOCK_ECONN = -6,     /* backend unreachable / connection failed */
    /* Redlock majority not reached, or too few replicas acknowledged a grant
     * (dlock_client_opts.min_replicas) */
    DLOCK_EQUORUM = -7,
    DLOCK_EAUTH = -8,      /* authentication failed */
    DLOCK_EPROTO = -9,     /* unexpected reply from the server */
    DLOCK_ECLOSED = -10,   /* the client was closed while waiting */
    DLOCK_ECANCELED = -11, /* the wait was cancelled */
    DLOCK_ESYS = -12       /* a system call failed (poll, eventfd, pipe, getrandom,
                              thread creation): the message has its errno text */
};

/* Static text for an error code ("lock is held by someone else", ...).
 * Unknown codes give "unknown error". Never NULL. */
DLOCK_API const char *dlock_strerror(int code);

/* Detail of the calling thread's last failure, e.g.
 * "connect to 127.0.0.1:6390: Connection refused". Valid until the next dlock
 * call on this thread. Never NULL; "" when there is nothing to say.
 * Passwords never appear in it. */
DLOCK_API const char *dlock_last_errmsg(void);

/* ----------------------------------------------------------------- client */

typedef struct dlock_client dlock_client;
typedef struct dlock_lock dlock_lock;

/* Log levels and callback. The callback gets one line without a newline;
 * it may run on any thread (the caller's, the watchdog's, the listener's)
 * and must not call back into the client. Messages never contain
 * passwords. Logged: failed acquisitions (ERROR; busy and timeouts at
 * DEBUG), renewal failures being retried (WARN), lost locks (ERROR),
 * reconnections (INFO). */
enum { DLOCK_LOG_ERROR = 0, DLOCK_LOG_WARN = 1, DLOCK_LOG_INFO = 2, DLOCK_LOG_DEBUG = 3 };
typedef void (*dlock_log_fn)(int level, const char *msg, void *arg);

#define DLOCK_CLIENT_OPTS_VERSION 2

typedef struct dlock_client_opts {
    unsigned version;       /* DLOCK_CLIENT_OPTS_VERSION */
    int connect_timeout_ms; /* > 0; default 2000 */
    int command_timeout_ms; /* > 0; default 2000: one round trip */
    const char *prefix;     /* key prefix; NULL = "dlock:". No braces. */
    const char *owner_id;   /* shown by status; NULL = "hostname:pid" */
    const char *username;   /* ACL user; NULL = from the URL */
    const char *password;   /* NULL = from the URL */
    dlock_log_fn log_fn;    /* optional: see dlock_log_fn */
    void *log_arg;
    int log_level;             /* most verbose level passed on; default WARN */
    int metrics_by_key_prefix; /* 1: label metrics by key prefix (bounded) */
    /* version 2 */
    /* replicas of the master that must acknowledge (Redis WAIT) a grant or a
     * renewal before it counts: -1 (default) = the URL's ?replicas=N, else 1
     * when the master has a connected replica, else 0. At most 100. */
    int min_replicas;
} dlock_client_opts;

/* clang-format off */
#define DLOCK_CLIENT_OPTS_INIT \
    { DLOCK_CLIENT_OPTS_VERSION, 2000, 2000, NULL, NULL, NULL, NULL, NULL, NULL, DLOCK_LOG_WARN, 0, -1 }
/* clang-format on */

/* Open a client for the Redis deployment named by `url`:
 *   redis://[user:pass@]host[:port][/db]     (IPv6: redis://[::1]:6379)
 *   rediss://[user:pass@]host[:port][/db][?cacert=F&cert=F&key=F&sni=NAME]
 *                                            TLS; the server certificate and
 *                                            name are always verified
 *   unix:///path/to/redis.sock[?db=N]
 *   URL,URL,...                              Redlock over independent masters
 *                                            (a comma followed by a scheme
 *                                            starts the next URL); quorum N/2+1
 *   redis-sentinel://[user:pass@]h1:p1[,h2:p2...]/MASTER[?db=N]
 *   redis-cluster://[user:pass@]h1:p1[,h2:p2...]   (seed nodes)
 * The URL may carry a password; opts->password overrides it. The client
 * connects once to check the URL, the credentials and the database, so a
 * wrong host, port or password fails here: DLOCK_ECONN (unreachable or
 * timed out), DLOCK_EAUTH (wrong credentials), DLOCK_EQUORUM (Redlock: fewer
 * than a majority reachable; the message names each failure), DLOCK_EINVAL
 * (bad URL or option), DLOCK_ENOMEM. Broken connections are re-established
 * on demand later. *out is the new client, or NULL on failure. */
DLOCK_API int dlock_client_open(dlock_client **out, const char *url, const dlock_client_opts *opts);

/* Release every lock still held through this client (stopping their
 * renewal), wake threads blocked in an acquire on it (they return
 * DLOCK_ECLOSED), then free the client. The handles of locks still held are
 * freed too: do not use them (not even dlock_release) afterwards. Call it
 * after other threads are done with their lock handles, except those blocked
 * waiting. NULL is a no-op. */
DLOCK_API void dlock_client_close(dlock_client *client);

/* ------------------------------------------------------------ cancelation */

typedef struct dlock_cancel dlock_cancel;

/* A cancel token: pass it in dlock_lock_opts.cancel; another thread calls
 * dlock_cancel_trigger() and the blocked acquire returns DLOCK_ECANCELED
 * promptly. A triggered token stays triggered. */
DLOCK_API int dlock_cancel_new(dlock_cancel **out);
DLOCK_API void dlock_cancel_trigger(dlock_cancel *cancel); /* any thread */
DLOCK_API void dlock_cancel_free(dlock_cancel *cancel);    /* NULL ok */

/* ------------------------------------------------------------------ locks */

#define DLOCK_WAIT_FOREVER (-1)
#define DLOCK_KEY_MAX 512 /* bytes in a user key */

/* Called once when an auto-renewed lock is lost (renewal could not confirm
 * it before its validity ran out, or the server said it is no longer ours).
 * It runs on the client's watchdog thread: keep it short, do not call
 * dlock_release() or dlock_client_close() from it. */
typedef void (*dlock_lost_fn)(dlock_lock *lock, void *arg);

#define DLOCK_LOCK_OPTS_VERSION 2

typedef struct dlock_lock_opts {
    unsigned version; /* DLOCK_LOCK_OPTS_VERSION */
    int64_t ttl_ms;   /* > 0; default 30000 */
    int64_t wait_ms;  /* 0 = one attempt; DLOCK_WAIT_FOREVER (default) */
    int auto_renew;   /* default 1: the watchdog keeps the lock alive */
    /* in (0,1): renew after this part of the TTL has passed; default 1/3 */
    double renew_fraction;
    dlock_lost_fn on_lost; /* optional */
    void *on_lost_arg;
    dlock_cancel *cancel; /* optional cancel token for the wait */
    /* default 1: first come, first served; a release hands the lock to the
     * longest waiter. 0: any contender may take a free lock (barging). */
    int fair;
    /* version 2 */
    /* default 0. 1: the thread that holds a key through this client (a
     * reentrant hold of the same mode) gets it again at once: the same handle,
     * with a hold count; each dlock_release() drops one hold and the last one
     * gives the lock back. For dlock_acquire, dlock_try_acquire,
     * dlock_rw_acquire and dlock_campaign. */
    int reentrant;
} dlock_lock_opts;

/* clang-format off */
#define DLOCK_LOCK_OPTS_INIT \
    { DLOCK_LOCK_OPTS_VERSION, 30000, DLOCK_WAIT_FOREVER, 1, 1.0 / 3, NULL, NULL, NULL, 1, 0 }
/* clang-format on */

/* Acquire the mutex `key`, waiting up to opts->wait_ms for it.
 * On success *out is the held lock; release it with dlock_release().
 * Returns 0, DLOCK_EBUSY (wait_ms == 0 and the lock is held elsewhere),
 * DLOCK_ETIMEDOUT (waited wait_ms), DLOCK_ECANCELED, DLOCK_ECLOSED,
 * DLOCK_ECONN, DLOCK_EAUTH, DLOCK_EPROTO, DLOCK_EINVAL (empty key, key
 * longer than DLOCK_KEY_MAX, ttl_ms <= 0, wait_ms < 0 other than
 * DLOCK_WAIT_FOREVER, renew_fraction outside (0,1)), DLOCK_ENOMEM.
 * Every acquisition carries a fencing token (dlock_lock_fencing_token). */
DLOCK_API int dlock_acquire(dlock_lock **out, dlock_client *client, const char *key,
                            const dlock_lock_opts *opts);

/* dlock_acquire() with one attempt only, whatever opts->wait_ms says:
 * DLOCK_EBUSY when someone else holds the key. */
DLOCK_API int dlock_try_acquire(dlock_lock **out, dlock_client *client, const char *key,
                                const dlock_lock_opts *opts);

/* Release the lock and free the handle (always, whatever the result; NULL is
 * a no-op returning 0) — except a reentrant hold taken more than once: then
 * one hold is dropped (returns 0) and the handle stays held until its last
 * release. Renewal stops before the delete is sent.
 * Returns 0 if the lock was still ours and is now free, DLOCK_ENOTHELD if it
 * had expired or been taken over (the other holder's lock is untouched),
 * or a transport error (the lock then frees itself when its TTL runs out). */
DLOCK_API int dlock_release(dlock_lock *lock);

/* Set the lock's remaining TTL to ttl_ms (> 0), if it is still ours.
 * Returns 0, DLOCK_ENOTHELD (expired or taken over; the handle is then
 * marked lost), DLOCK_EINVAL, or a transport error. */
DLOCK_API int dlock_extend(dlock_lock *lock, int64_t ttl_ms);

/* 1 while the lock is believed held: not released, not marked lost, and its
 * local validity instant not passed. Never does a round trip. */
DLOCK_API int dlock_is_held(const dlock_lock *lock);

/* The fencing token of this acquisition: strictly increasing per key for the
 * life of the deployment, below 2^53. Pass it to the resource you protect and
 * let it reject writes carrying a smaller token. */
DLOCK_API uint64_t dlock_lock_fencing_token(const dlock_lock *lock);

/* Milliseconds of local validity left (measured on CLOCK_BOOTTIME from the
 * start of the round trip that last confirmed the lock, minus clock drift);
 * 0 once lost, released or expired. Never does a round trip. */
DLOCK_API int64_t dlock_lock_remaining_ms(const dlock_lock *lock);

/* 0 while the last renewal succeeded (or none was needed yet); otherwise the
 * error of the last failed renewal attempt. The watchdog keeps retrying until
 * the validity instant. */
DLOCK_API int dlock_lock_renew_error(const dlock_lock *lock);

/* The user key this lock was acquired for. */
DLOCK_API const char *dlock_lock_key(const dlock_lock *lock);

/* ------------------------------------------------------------- inspection */

typedef struct dlock_info {
    int held;               /* 0: free (other fields zero) */
    char owner[256];        /* holder's owner id */
    int64_t ttl_ms;         /* server-side remaining TTL */
    uint64_t fencing_token; /* the holder's fencing token */
    int64_t waiters;        /* waiters queued for the key */
} dlock_info;

/* Who holds `key` now, as the server sees it. One round trip. */
DLOCK_API int dlock_inspect(dlock_info *out, dlock_client *client, const char *key);

/* Operator's tool: delete the lock on `key` whoever holds it. The holder
 * finds out at its next renewal (DLOCK_ENOTHELD / lost). The fencing state
 * is kept, so the next holder still gets a larger token. Sets *out_removed
 * to 1 if a lock was removed, 0 if the key was free. */
DLOCK_API int dlock_force_unlock(int *out_removed, dlock_client *client, const char *key);

/* Everything about one key as the server sees it: its holders (one for a
 * mutex or writer; several readers; or semaphore permits) and its waiters. */
enum { DLOCK_KIND_ANY = 0, DLOCK_KIND_MUTEX = 1, DLOCK_KIND_SEMAPHORE = 2 };

typedef struct dlock_holder {
    char owner[256];
    /* DLOCK_WRITE (mutex, writer, leader), DLOCK_READ, or 0 for a semaphore
     * permit */
    int mode;
    int slot;       /* semaphore slot, else -1 */
    int64_t ttl_ms; /* server-side remaining TTL */
    uint64_t fencing_token;
    int64_t age_ms; /* since it was granted (server clock) */
    int permits;    /* semaphore permits it holds (1 otherwise) */
} dlock_holder;

typedef struct dlock_key_state {
    char key[DLOCK_KEY_MAX + 1];
    int kind;              /* DLOCK_KIND_MUTEX (incl. read-write) or _SEMAPHORE */
    size_t nholders;       /* 0: free */
    dlock_holder *holders; /* nholders entries, owned by the struct */
    int64_t waiters;       /* queued waiters (entries not yet expired or cleaned) */
    int limit;             /* semaphore: the limit its holders use; 0 otherwise */
} dlock_key_state;

/* The state of `key`: kind DLOCK_KIND_MUTEX or DLOCK_KIND_SEMAPHORE, or
 * DLOCK_KIND_ANY for whichever is in use (the mutex if both or neither).
 * Free *out with dlock_key_state_free(). One round trip per kind looked at. */
DLOCK_API int dlock_key_state_get(dlock_key_state **out, dlock_client *client, const char *key,
                                  int kind);
DLOCK_API void dlock_key_state_free(dlock_key_state *state); /* NULL ok */

/* Call fn for every lock under the client's prefix whose user key matches
 * the glob `pattern` (fnmatch(3); NULL or "*" for all) and that has a
 * holder or a waiter. Walks the keyspace with SCAN, never KEYS, so it does
 * not block the server; a lock that changes during the walk may be seen in
 * either state. fn returns 0 to go on, anything else to stop (returned).
 * The state passed to fn is valid during the call only. */
DLOCK_API int dlock_scan(dlock_client *client, const char *pattern,
                         int (*fn)(const dlock_key_state *state, void *arg), void *arg);

/* ------------------------------------------------------------- semaphore */

/* Take one of `limit` permits of the semaphore `key` (a counting lock: at
 * most `limit` holders at once), waiting as dlock_acquire() does (FIFO,
 * woken by releases). Each permit carries a slot index 0..limit-1
 * (dlock_lock_slot), unique among the current holders, so a pool of N named
 * resources is a semaphore of N. Release with dlock_release(); auto-renewed
 * and lost-signalled like a mutex. A holder that dies gives its permit back
 * when its TTL runs out; releasing twice is harmless.
 * A semaphore remembers its limit while anyone holds or waits for it:
 * asking with another limit then fails with DLOCK_EINVAL naming both
 * (dlock_key_state_get shows the limit); once it is idle, a new limit
 * applies. Slots are handed out smallest first, in O(log N) server time.
 * A semaphore key is separate from a mutex of the same name.
 * Errors as dlock_acquire(), plus DLOCK_EINVAL for limit < 1 or > 100000. */
DLOCK_API int dlock_sem_acquire(dlock_lock **out, dlock_client *client, const char *key, int limit,
                                const dlock_lock_opts *opts);

/* Take `permits` of the `limit` permits of semaphore `key` at once, all or
 * none (1 <= permits <= limit). Waiting is FIFO by request: a large request
 * at the head of the queue is not overtaken by smaller ones behind it, so it
 * is never starved. The handle holds `permits` slots (dlock_lock_slot is the
 * first; all are unique among the holders) and gives them all back at
 * release. Errors as dlock_sem_acquire(), plus DLOCK_EINVAL for permits < 1
 * or > limit. */
DLOCK_API int dlock_sem_acquire_n(dlock_lock **out, dlock_client *client, const char *key,
                                  int limit, int permits, const dlock_lock_opts *opts);

/* The permit's slot index (0..limit-1) for a semaphore permit (the first of
 * them for several permits); -1 for any other kind of lock. */
DLOCK_API int dlock_lock_slot(const dlock_lock *lock);

/* Permits a semaphore handle holds (1 for any other kind of lock). */
DLOCK_API int dlock_lock_permits(const dlock_lock *lock);

/* ------------------------------------------------------------ multi-lock */

#define DLOCK_MULTI_MAX 64 /* keys in one dlock_acquire_all() */

/* Acquire the mutexes of all n keys, or none: one atomic script checks and
 * takes them together, so two callers taking {A,B} and {B,A} can never
 * deadlock. Duplicate keys count once. A waiting caller queues on every key
 * in the same FIFO as single-key writers and readers, with one arrival time
 * for all its keys (so it is neither starved nor deadlocked); keys handed to
 * it while it waits for the others are reserved for it, and it returns
 * only when it holds all of them.
 * One handle holds and releases them all; dlock_lock_fencing_token() is the
 * first key's token, dlock_lock_fencing_token_at(lock, i) the i-th
 * distinct key's (in the order given, duplicates removed).
 * On Redis Cluster all keys must hash to one slot: give them a common
 * {hash tag}, e.g. "acct:{u42}:from" / "acct:{u42}:to"; otherwise
 * DLOCK_EINVAL. Errors as dlock_acquire(), plus DLOCK_EINVAL for n == 0,
 * n > DLOCK_MULTI_MAX, or an invalid key. */
DLOCK_API int dlock_acquire_all(dlock_lock **out, dlock_client *client, const char *const *keys,
                                size_t n, const dlock_lock_opts *opts);

/* Number of keys a handle holds (1 except for dlock_acquire_all), and the
 * i-th key and fencing token (NULL / 0 when i is out of range). */
DLOCK_API size_t dlock_lock_count(const dlock_lock *lock);
DLOCK_API const char *dlock_lock_key_at(const dlock_lock *lock, size_t i);
DLOCK_API uint64_t dlock_lock_fencing_token_at(const dlock_lock *lock, size_t i);

/* ------------------------------------------------------- read-write lock */

enum { DLOCK_READ = 1, DLOCK_WRITE = 2 };

/* Take `key` for reading (shared with other readers) or writing (alone).
 * The write side is the key's ordinary mutex: dlock_acquire(key) and
 * dlock_rw_acquire(key, DLOCK_WRITE) are the same lock. Waiting is FIFO: a
 * reader does not overtake a writer queued before it, so a stream of readers
 * cannot starve writers; consecutive queued readers are admitted together.
 * Each reader gets its own fencing token. */
DLOCK_API int dlock_rw_acquire(dlock_lock **out, dlock_client *client, const char *key, int mode,
                               const dlock_lock_opts *opts);

/* Turn a held write lock into a read lock, atomically: no writer can come in
 * between, and readers queued behind this writer (up to the first queued
 * writer) are admitted at once. The handle keeps its fencing token and is
 * renewed as a reader from then on. Returns 0, DLOCK_ENOTHELD (the lock was
 * no longer ours: the handle is marked lost), DLOCK_EINVAL (not a write
 * lock: a reader, a semaphore permit, a multi-lock, or a reentrant hold
 * taken more than once), or a transport error (the lock is then unchanged
 * or, if the reply was lost, downgraded: dlock_is_held stays true either
 * way and renewal finds out which). */
DLOCK_API int dlock_rw_downgrade(dlock_lock *lock);

/* ------------------------------------------------------- leader election */

/* Campaign for leadership of `key`: wait (opts->wait_ms, default forever)
 * until this client is the leader. Leadership is a mutex on `key` with the
 * owner id as the leader's identity: auto-renewed, lost-signalled (on_lost)
 * like any lock. Announces the new leader to watchers. */
DLOCK_API int dlock_campaign(dlock_lock **out, dlock_client *client, const char *key,
                             const dlock_lock_opts *opts);

/* Step down: dlock_release() of the leadership (frees the handle). */
DLOCK_API int dlock_resign(dlock_lock *leadership);

/* The current leader of `key`: out->held is 0 if there is none; otherwise
 * out->owner is its id and out->fencing_token its term (a new leader always
 * has a larger token). One round trip. */
DLOCK_API int dlock_leader(dlock_info *out, dlock_client *client, const char *key);

/* Wait until the leadership of `key` differs from the term `known_token`
 * (0: "no leader"), then fill *out with the new state. A new leader, a
 * resignation and an expiry all count. Returns 0, DLOCK_ETIMEDOUT after
 * wait_ms (DLOCK_WAIT_FOREVER: no limit), DLOCK_ECANCELED (cancel may be
 * NULL), DLOCK_ECLOSED, or a transport error. Woken by pub/sub, not by
 * polling. */
DLOCK_API int dlock_leader_wait(dlock_info *out, dlock_client *client, const char *key,
                                uint64_t known_token, int64_t wait_ms, dlock_cancel *cancel);

/* ------------------------------------------------------- countdown latch */

/* A countdown latch: a count that any process counts down, and that
 * waiters wait for until it reaches zero (one-shot per arming, like Java's
 * CountDownLatch, across machines). A latch holds nothing: no handle, no
 * release. Its state expires with its TTL, so an abandoned latch leaves
 * nothing behind. A latch key is separate from a lock of the same name.
 * Not on Redlock (DLOCK_EINVAL): a count kept separately on each server
 * could disagree between them. Sentinel and Cluster: as one server.
 *
 * Arm the latch `key` with `count` (>= 1) count-downs to go. The latch
 * expires ttl_ms (1 to 2^40) after this call, whatever its count: the TTL
 * is the longest anyone waits for it. A live latch (count above zero) is
 * not armed again: DLOCK_EBUSY, the message says how many are left. A
 * latch at zero may be (a new generation; waiters of the old one that have
 * not returned yet still return 0). Returns 0, DLOCK_EBUSY, DLOCK_EINVAL
 * (count < 1, ttl_ms out of range, a bad key, Redlock), or a transport
 * error. */
DLOCK_API int dlock_latch_init(dlock_client *client, const char *key, int count, int64_t ttl_ms);

/* Count the latch `key` down by one; *out_remaining (may be NULL) is the
 * count left after it (0: this call opened the latch and woke its
 * waiters). A latch never goes below zero: a count-down of a latch at
 * zero is refused with DLOCK_EINVAL (*out_remaining 0), so a surplus
 * count-down is reported, not absorbed; a latch that does not exist (never
 * armed, or expired) is DLOCK_EINVAL too, and the message says which. A
 * count-down is not idempotent: one that failed with a transport error
 * (DLOCK_ECONN) may or may not have counted. */
DLOCK_API int dlock_latch_count_down(int *out_remaining, dlock_client *client, const char *key);

/* Wait until the latch `key` is at zero, at most wait_ms (0: look once;
 * DLOCK_WAIT_FOREVER: no limit). Returns 0 when the count is zero (at once
 * if it already is), also when the latch reached zero and was armed again
 * before this call looked again; DLOCK_ETIMEDOUT when wait_ms ran out, or
 * when the latch expired (its TTL) before reaching zero (the message says
 * which); DLOCK_ECANCELED (cancel may be NULL), DLOCK_ECLOSED,
 * DLOCK_EINVAL, DLOCK_EAUTH, DLOCK_ENOMEM, DLOCK_ESYS. A latch that does
 * not exist yet is waited for: it has to be armed and reach zero. Woken by
 * the count-down that reaches zero (pub/sub, subscribed before the first
 * look), not by polling: the only timed look is at the instant the latch
 * expires. Transport failures while waiting are retried until wait_ms runs
 * out. */
DLOCK_API int dlock_latch_wait(dlock_client *client, const char *key, int64_t wait_ms,
                               dlock_cancel *cancel);

/* The count left of the latch `key` into *out_count: 0 when open, -1 when
 * there is no such latch (never armed, or expired). One round trip. */
DLOCK_API int dlock_latch_get(int *out_count, dlock_client *client, const char *key);

/* ---------------------------------------------------------------- barrier */

/* Wait at the barrier `key` until `parties` (1 to 100000) processes have
 * arrived, at most wait_ms (0: arrive, and leave at once unless that
 * arrival was the last; DLOCK_WAIT_FOREVER: no limit). Returns 0 when the
 * generation this call arrived in tripped: the parties-th arrival trips it,
 * all its parties return 0, and the barrier is ready for the next
 * generation at once (reusable; a party arriving after the trip waits for
 * the next one). DLOCK_ETIMEDOUT when wait_ms ran out first: the call
 * leaves the barrier, so it counts neither for this generation nor for a
 * later one (if the generation tripped while it was leaving, it returns 0:
 * the others went on counting it). DLOCK_ECANCELED (cancel may be NULL)
 * and DLOCK_ECLOSED leave the same way. DLOCK_EINVAL: parties out of
 * range, a bad key, Redlock, or parties differing from those the arrivals
 * waiting there now asked for (the message names both).
 * Only live parties count: an arrival lives 3 s unless the waiting call
 * refreshes it (it does, every second), so a party killed or stopped while
 * waiting stops counting within 3 s, and a dead party never wedges the
 * barrier nor counts for a later use. A party killed after its generation
 * tripped had arrived. A party stopped for longer than 3 s that missed its
 * generation's trip arrives in the next generation when it runs again. The
 * state of an idle barrier expires after 10 minutes. Woken by the trip
 * (pub/sub, subscribed before arriving); while waiting it sends only the
 * refresh, once a second. Not on Redlock; Sentinel and Cluster: as one
 * server. */
DLOCK_API int dlock_barrier_wait(dlock_client *client, const char *key, int parties,
                                 int64_t wait_ms, dlock_cancel *cancel);

/* ----------------------------------------------------------- rate limiter */

/* Take a slot of the rate limiter `key`: at most `count` (1 to 10^6)
 * starts per period_ms (1 to 2^40), in bursts of up to `burst` (1 to 10^6)
 * at once, across every process that uses `key`. GCRA (the generic cell
 * rate algorithm) in one atomic script on the server's clock, so it is
 * exact under any concurrency: over any interval of length L at most
 * burst + L * count / period_ms calls return 0 (the interval
 * period_ms / count is rounded up to a microsecond: the rate can only err
 * on the slow side). Nothing is held: there is no release.
 * When the next slot is later than now and within wait_ms
 * (DLOCK_WAIT_FOREVER: always), the call reserves it and sleeps exactly
 * until it, then returns 0; callers are served in the order they asked,
 * one round trip each, no polling. When it is further away, nothing is
 * reserved and the call returns at once: DLOCK_EBUSY if wait_ms is 0 (over
 * the rate), DLOCK_ETIMEDOUT otherwise (the message says when the next
 * slot is). DLOCK_ECANCELED (cancel may be NULL) and DLOCK_ECLOSED end the
 * sleep and give the slot back if no later one was reserved; a process
 * killed in its sleep wastes its slot (the rate only slows). While the
 * limiter is in use, every caller must pass the same count, period_ms and
 * burst: otherwise DLOCK_EINVAL naming both. DLOCK_EINVAL also for
 * arguments out of range (or burst * period_ms / count above 2^50 us), a
 * bad key, and Redlock (a schedule counted on each server separately would
 * let each majority in). The state expires once the limiter is idle. */
DLOCK_API int dlock_rate_acquire(dlock_client *client, const char *key, int count,
                                 int64_t period_ms, int burst, int64_t wait_ms,
                                 dlock_cancel *cancel);

/* ------------------------------------------------------------- key helpers */

/* printf-style key template: dlock_keyf(buf, sizeof buf, "payment:%s", id).
 * Returns 0, or DLOCK_EINVAL if the result is empty, does not fit in `size`
 * bytes (with its NUL), or is longer than DLOCK_KEY_MAX. */
DLOCK_API int dlock_keyf(char *buf, size_t size, const char *fmt, ...) DLOCK_PRINTF(3, 4);

/* The critical section as a function: acquire `key`, call fn(lock, arg),
 * release, also when fn fails. Returns the acquire error if the lock was not
 * taken (fn is then not called). Otherwise fn's return value, unless fn
 * returned 0 and the lock turned out not to have been held to the end:
 * then DLOCK_ENOTHELD. */
typedef int (*dlock_fn)(dlock_lock *lock, void *arg);
DLOCK_API int dlock_with(dlock_client *client, const char *key, const dlock_lock_opts *opts,
                         dlock_fn fn, void *arg);

/* ------------------------------------------------------------- statistics */

/* Histogram buckets (upper bounds, seconds): 100us .. 60s, then +Inf. */
#define DLOCK_HIST_BUCKETS 18
DLOCK_API double dlock_hist_bound(int i); /* i in [0, DLOCK_HIST_BUCKETS) */

typedef struct dlock_histogram {
    uint64_t count;
    double sum_seconds;
    uint64_t le[DLOCK_HIST_BUCKETS]; /* cumulative: observations <= bound i */
} dlock_histogram;

#define DLOCK_STATS_VERSION 2

typedef struct dlock_client_stats {
    unsigned version;     /* set by dlock_stats() */
    uint64_t round_trips; /* request/reply exchanges with Redis */
    uint64_t commands;    /* commands sent (a pipeline counts each) */
    uint64_t connects;    /* connections opened */
    uint64_t errors;      /* transport or protocol errors */
    uint64_t acquired;    /* acquisitions by result */
    uint64_t busy;
    uint64_t timeouts;
    uint64_t acquire_errors;   /* any other failure (connection, cancel, ...) */
    uint64_t renewals;         /* renewals by result: done */
    uint64_t renew_failures;   /*   failed, to be retried */
    uint64_t lost;             /* locks marked lost (renewal or extend) */
    uint64_t released;         /* releases by result: freed */
    uint64_t release_not_held; /*   it was no longer ours */
    uint64_t release_errors;   /*   could not reach the server */
    /* locks held now (released, lost and expired ones excluded; computed at the
     * snapshot) */
    int64_t held_now;
    dlock_histogram wait; /* time to acquire, successful acquisitions */
    dlock_histogram hold; /* time from acquisition to release */
    /* version 2 */
    /* acquire round trips (each grant or busy answer): a waiter makes one when
     * it starts and one per wake-up, never on a timer */
    uint64_t attempts;
    /* waiters kept in line by the watchdog's rounds (one per waiting handle per
     * round, batched) */
    uint64_t keepalives;
} dlock_client_stats;

/* A snapshot of the client's counters (atomics: cheap to update, so always
 * on). Any thread. */
DLOCK_API int dlock_stats(dlock_client_stats *out, dlock_client *client);

/* Write the client's metrics in the Prometheus text exposition format
 * (names dlock_..., base units, _total counters, histograms with buckets
 * from 100 us to 60 s). With dlock_client_opts.metrics_by_key_prefix, the
 * acquisition, wait and hold metrics also carry a label key_prefix (the
 * key up to its first ':'), for at most 32 distinct values (more are
 * counted as "_other"). Returns 0, or DLOCK_EINVAL (NULL), or DLOCK_ECONN
 * if writing to f failed. */
DLOCK_API int dlock_metrics_write(dlock_client *client, FILE *f);

#ifdef __cplusplus
}
#endif
#endif /* DLOCK_H */
