/*
 * client.h — the insides of dlock_client and dlock_lock, shared by the
 * modules that implement them (client.c, lock.c, watchdog.c, wait.c).
 *
 * Locking rule: client->mu protects the connection pool, the list of held
 * locks, the watchdog's schedule and the shutdown state. It is never held
 * across a network round trip. Lock fields read by dlock_is_held() from
 * any thread (state, valid_until_ns, renew_error) are atomics.
 */
#ifndef DLOCK_CLIENT_H
#define DLOCK_CLIENT_H
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "conn.h"
#include "metrics.h"
#include "dlock.h"
#include "scripts.h"
#include "url.h"

enum { DLOCK__HELD = 1, DLOCK__LOST = 2, DLOCK__RELEASED = 3 };

#define DLOCK__TOKEN_LEN 32
#define DLOCK__IDLE_MAX 16
/* A lock handed to a waiter by a release must be confirmed within this. */
#define DLOCK__HANDOFF_TTL_MS 5000
#define DLOCK__HANDOFF_TTL_S "5000"

enum { DLOCK__KIND_MUTEX, DLOCK__KIND_READ, DLOCK__KIND_SEM, DLOCK__KIND_MULTI };

/* Redis key names of one user key, in the order the scripts take them
 * (scripts.h): mutex/rw: lock readers rinfo fence queue qinfo chan;
 * semaphore: sem sinfo sfence squeue sqinfo schan (last slot unused). */
#define DLOCK__NAMES 7
enum { DLOCK__N_CHAN = 6, DLOCK__N_SCHAN = 5 };

typedef struct dlock__part {
    char *key;                    /* user key */
    char *names[DLOCK__NAMES];
    uint64_t fence;               /* fencing token of this key */
} dlock__part;

struct dlock_lock {
    dlock_client *client;
    int kind;                 /* DLOCK__KIND_* */
    int limit, slot;          /* semaphore */
    int announce;             /* campaign: publish the new leader */
    int fair;
    size_t nparts;            /* keys held (several for a multi-lock) */
    dlock__part *parts;
    char token[DLOCK__TOKEN_LEN + 1];
    const char *release_args[3]; /* token, handoff cap, "0" */
    int64_t ttl_ms;           /* under client->mu once linked */
    int64_t acquired_ns;      /* when it was granted (hold time) */
    int auto_renew;
    double renew_fraction;
    dlock_lost_fn on_lost;
    void *on_lost_arg;

    atomic_int state;
    atomic_int_fast64_t valid_until_ns; /* CLOCK_BOOTTIME */
    atomic_int renew_error;

    /* watchdog bookkeeping, under client->mu */
    int64_t renew_at_ns;
    int inflight;            /* the watchdog is using this lock right now */
    int linked;              /* in the client's list */
    dlock_lock *prev, *next; /* client's list of held locks */
};

/* The calls that renew (extend) or release every part of l: fill calls[0..
 * l->nparts); extend args point at args[] (2 per part: token, ttl), which
 * the caller keeps alive with `ttl` until the calls ran. */
void dlock__lock_extend_calls(const dlock_lock *l, dlock__call *calls, const char **args,
                              const char *ttl);
void dlock__lock_release_calls(const dlock_lock *l, dlock__call *calls);
void dlock__lock_free(dlock_lock *l);

/* One Redis server the client talks to: a standalone server, the current
 * Sentinel master, or one of several independent Redlock masters. */
#define DLOCK__NODES_MAX 16
typedef struct dlock__node {
    dlock__endpoint ep;      /* may change (Sentinel failover): under c->mu */
    unsigned gen;            /* bumped when ep changes; older connections are dropped */
    dlock__conn *idle;       /* pool, under c->mu */
    int nidle;
    dlock__counters counters;
    struct dlock__listener *listener; /* pub/sub wake-ups, started on demand */
} dlock__node;

enum { DLOCK__BACKEND_SINGLE, DLOCK__BACKEND_REDLOCK, DLOCK__BACKEND_SENTINEL, DLOCK__BACKEND_CLUSTER };

struct dlock_client {
    int backend;
    dlock__node *nodes;
    int nnodes;
    int quorum;              /* Redlock: nnodes / 2 + 1; otherwise 1 */
    int voters;              /* independent copies of each lock: Redlock nnodes, else 1 */
    uint8_t slots[16384];    /* Cluster: slot -> node, under mu */
    dlock__endpoint *sentinels; /* Sentinel: where to ask for the master */
    int nsentinels;
    char *master_name;
    int connect_timeout_ms, command_timeout_ms;
    char *prefix;
    char *owner;
    dlock__counters counters;
    dlock__metrics metrics;
    dlock_log_fn log_fn;
    void *log_arg;
    int log_level;

    pthread_mutex_t mu;
    pthread_cond_t cv;       /* watchdog schedule changes, inflight cleared */
    pthread_cond_t idle_cv;  /* active dropped to 0 while closing */
    int64_t wd_wake_ns;      /* when the watchdog plans to wake (INT64_MAX: never) */
    dlock__faults faults;    /* test hook */
    int has_faults;
    dlock_lock *locks;       /* held locks (all, renewed or not) */
    int closing;
    int active;              /* API calls in progress */
    int wake_pipe[2];        /* written once at close: wakes every waiter */
    pthread_t watchdog;
    int watchdog_started;
};

/* Borrow a connection to node `node` (an idle one, or a new one made
 * within max_connect_ms). *reused says whether it came from the pool (a
 * pooled connection may have gone stale). */
int dlock__client_conn_get(dlock_client *c, int node, dlock__conn **out, int *reused,
                           int max_connect_ms);
/* Give it back: broken or outdated connections are closed, others kept. */
void dlock__client_conn_put(dlock_client *c, int node, dlock__conn *conn);

/* The outcome of running calls on every node (fanout.c). */
typedef struct dlock__fanout {
    int nnodes, n;
    int rc[DLOCK__NODES_MAX];                 /* per node: 0 or an error */
    dlock__reply **replies[DLOCK__NODES_MAX]; /* per node: n replies, or NULL */
    char err[DLOCK__NODES_MAX][200];          /* per node: the error message */
} dlock__fanout;

/* Run calls[0..n) on every node, in parallel when there are several (each
 * node's calls pipelined in one round trip), all within max_ms (<= 0: the
 * client's connect + command timeouts). A single node retries once on a
 * fresh connection if a pooled one went stale, and a Sentinel client looks
 * the master up again when the node fails. Returns 0 if at least one node
 * answered, else the (first) error; per-node results are in *out, freed
 * with dlock__fanout_free(). */
int dlock__fanout_run(dlock_client *c, const dlock__call *calls, int n, int max_ms,
                      dlock__fanout *out);
void dlock__fanout_free(dlock__fanout *f);
/* Record why a quorum operation failed: with one node its own error; with
 * several, DLOCK_EQUORUM naming the nodes that failed. Returns the code. */
int dlock__fanout_error(const dlock__fanout *f, const char *what);

/* The verdict on calls [first, first+ncalls) of a fan-out whose replies
 * are 1 (ours, done) or 0 (not ours): 0 if a quorum of nodes said 1 to all
 * of them; DLOCK_ENOTHELD if enough nodes said 0 that no quorum is
 * possible; otherwise the failures' error (the node's own with one node,
 * DLOCK_EQUORUM with several). `what` prefixes the message. */
int dlock__fanout_verdict(const dlock_client *c, dlock__fanout *f, int first, int ncalls, const char *what);

/* Cluster (cluster.c): the slot of a key name; refresh the slot map from
 * any node; run calls routed by slot, following MOVED and ASK. */
int dlock__key_slot(const char *key);
int dlock__cluster_refresh(dlock_client *c);
int dlock__cluster_run(dlock_client *c, const dlock__call *calls, int n, dlock__reply **replies, int max_ms);

/* Sentinel: look the master up (again). Other backends: nothing. */
int dlock__client_locate(dlock_client *c);

/* Run on one node and hand back its replies: the only node, the Sentinel
 * master, or for Redlock the first node that answers (for reading state,
 * never for taking or giving back a lock). */
int dlock__client_run(dlock_client *c, const dlock__call *calls, int n, dlock__reply **replies);

/* Enter/leave an API call (close waits for all to leave). Enter fails with
 * DLOCK_ECLOSED once the client is closing. */
int dlock__client_enter(dlock_client *c);
void dlock__client_leave(dlock_client *c);

/* Build "<prefix>{tag}...<suffix>" for `key`. Returns 0, EINVAL or ENOMEM. */
int dlock__key_name(char **out, const dlock_client *c, const char *key, const char *suffix);
/* Check a user key: non-empty, at most DLOCK_KEY_MAX bytes. */
int dlock__key_check(const char *key);

/* Watchdog (watchdog.c): add a freshly acquired lock to the client's list
 * and, if auto-renewed, to the renewal schedule (starting the thread on
 * first use); remove it before release (waits out an in-flight renewal). */
int dlock__watchdog_add(dlock_client *c, dlock_lock *lock);
void dlock__watchdog_remove(dlock_client *c, dlock_lock *lock);
/* Stop and join the thread (at close; client->closing already set). */
void dlock__watchdog_stop(dlock_client *c);
/* Mark a lock lost once (why: the error that made it so); returns 1 if
 * this call made the transition (the caller then runs on_lost). */
int dlock__lock_mark_lost(dlock_lock *l, int why);
/* Validity left for a lock confirmed at start_ns: start + ttl - drift. */
int64_t dlock__validity_end(int64_t start_ns, int64_t ttl_ms);

/* Pass a message to the client's log callback if level is enabled. */
void dlock__log(dlock_client *c, int level, const char *fmt, ...) DLOCK_PRINTF(3, 4);

/* Parsers of stored values, for people and for the fuzzers: a mutex value
 * "<token>:<fence>:<owner>" into info (owner, fencing token); a holder
 * entry (mode DLOCK_WRITE: a mutex value; DLOCK_READ: "<fence>:<owner>";
 * 0: a permit "<slot>:<fence>:<owner>") into h. 0 or DLOCK_EPROTO. */
int dlock__parse_lock_value(dlock_info *info, const char *v, size_t len);
int dlock__parse_holder(dlock_holder *h, int mode, const char *info, uint64_t now_us);

/* Test hook: misbehaving transports for every new connection (NULL: off);
 * idle connections are dropped so the next call connects anew. */
void dlock__client_set_faults(dlock_client *c, const dlock__faults *f);

#endif
