/*
 * client.h — the inside of dlock_client, shared by the deployment layer
 * (topology, pool, sentinel, cluster, fanout, pubsub) and the lock layer
 * above it.
 *
 * Layers, each using only those below it:
 *   core        alloc error clock
 *   wire        url transport tls reply conn
 *   server side keys scripts
 *   deployment  client topology pool sentinel cluster fanout pubsub
 *   locks       lock calls grant watchdog wait acquire rw semaphore multi election
 *   observe     inspect metrics
 * The client must release held locks when it closes, which is the lock
 * layer's business: the watchdog installs `shutdown` (a function pointer)
 * the first time a lock or a waiter is registered, so client.c never calls
 * upward.
 *
 * Locking rule: client->mu protects the pools, the node table's endpoints,
 * the slot map, the watchdog's schedule and the shutdown state. It is never
 * held across a network round trip.
 */
#ifndef DLOCK_CLIENT_H
#define DLOCK_CLIENT_H
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "conn.h"
#include "dlock.h"
#include "metrics.h"
#include "url.h"

/* One Redis server the client talks to: a standalone server, the current
 * Sentinel master, a cluster node, or one of several Redlock masters. */
#define DLOCK__NODES_MAX 16
#define DLOCK__IDLE_MAX 16 /* idle connections kept per node */

typedef struct dlock__node {
    dlock__endpoint ep; /* may change (Sentinel failover): under c->mu */
    unsigned gen;       /* bumped when ep changes; older connections are dropped */
    dlock__conn *idle;  /* pool, under c->mu */
    int nidle;
    dlock__counters counters;
    struct dlock__listener *listener; /* pub/sub wake-ups, started on demand */
    dlock__replicas replicas;         /* what it says of its replicas (conn.h) */
} dlock__node;

enum {
    DLOCK__BACKEND_SINGLE,
    DLOCK__BACKEND_REDLOCK,
    DLOCK__BACKEND_SENTINEL,
    DLOCK__BACKEND_CLUSTER
};

struct dlock__watchdog; /* watchdog.c */

struct dlock_client {
    int backend;
    dlock__node *nodes;
    int nnodes;
    int quorum;                 /* Redlock: nnodes / 2 + 1; otherwise 1 */
    int voters;                 /* independent copies of each lock: Redlock nnodes, else 1 */
    uint8_t slots[16384];       /* Cluster: slot -> node, under mu */
    dlock__endpoint *sentinels; /* Sentinel: where to ask for the master */
    int nsentinels;
    struct dlock__sentinel_watch *sentinel_watch; /* +switch-master (sentinel.c) */
    char *master_name;
    int connect_timeout_ms, command_timeout_ms;
    int min_replicas; /* -1: per node, from the URL or automatic (dlock__conn_need) */
    atomic_int acks;  /* 1 once any node needs replica acknowledgements */
    char *prefix;
    char *owner;
    dlock__metrics metrics;
    dlock_log_fn log_fn;
    void *log_arg;
    int log_level;

    pthread_mutex_t mu;
    pthread_cond_t cv;      /* watchdog schedule changes, in-flight work done */
    pthread_cond_t idle_cv; /* active dropped to 0 while closing */
    dlock__faults faults;   /* test hook */
    int has_faults;
    int closing;
    int active;       /* API calls in progress */
    int wake_pipe[2]; /* written once at close: wakes every waiter */
    struct dlock__watchdog *wd;
    void (*shutdown)(dlock_client *c); /* the lock layer's part of close */
};

/* Enter/leave an API call (close waits for all to leave). Enter fails with
 * DLOCK_ECLOSED once the client is closing. */
int dlock__client_enter(dlock_client *c);
void dlock__client_leave(dlock_client *c);

/* Pass a message to the client's log callback if level is enabled. */
void dlock__log(dlock_client *c, int level, const char *fmt, ...) DLOCK_PRINTF(3, 4);

/* 1 if grants and renewals carry a WAIT for replica acknowledgement (see
 * scripts.h DLOCK__S_WAIT): some node needs acknowledgements, or it is a
 * Sentinel or Cluster deployment. */
int dlock__client_wants_acks(dlock_client *c);

/* 1 if they also carry INFO replication, which keeps each node's replica count
 * current for the automatic min_replicas (a master gains and loses
 * replicas as failovers happen). */
int dlock__client_tracks_role(dlock_client *c);

/* Test hook: misbehaving transports for every new connection (NULL: off);
 * idle connections are dropped so the next call connects anew. */
void dlock__client_set_faults(dlock_client *c, const dlock__faults *f);

#endif
