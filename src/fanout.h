/*
 * fanout.h — running script calls where the lock lives: on the one server,
 * the Sentinel master, the cluster node of each call's slot, or on every
 * Redlock master in parallel.
 *
 * Every run has a time budget (max_ms) that bounds connecting, sending and
 * reading together, so a caller with a deadline (a wait budget, a lock's
 * validity) can cap each round trip by what it has left. A single node
 * retries once on a fresh connection if a pooled one turns out closed (the
 * server restarted), never after a timeout (that would double the wait);
 * a Sentinel client looks the master up again when it fails or is demoted.
 */
#ifndef DLOCK_FANOUT_H
#define DLOCK_FANOUT_H
#include "client.h"
#include "scripts.h"

/* The outcome of running calls on every voting node. */
typedef struct dlock__fanout {
    int nnodes, n;
    int rc[DLOCK__NODES_MAX];                 /* per node: 0 or an error */
    dlock__reply **replies[DLOCK__NODES_MAX]; /* per node: n replies, or NULL */
    char err[DLOCK__NODES_MAX][200];          /* per node: the error message */
    int *by_node; /* Cluster: the node that answered each call; else NULL */
} dlock__fanout;

/* Run calls[0..n) on every node (in parallel when there are several; each
 * node's calls pipelined in one round trip) within max_ms (<= 0: the
 * client's connect + command timeouts). Returns 0 if at least one node
 * answered, else the (first) error; per-node results are in *out, freed
 * with dlock__fanout_free(). */
int dlock__fanout_run(dlock_client *c, const dlock__call *calls, int n, int max_ms,
                      dlock__fanout *out);
void dlock__fanout_free(dlock__fanout *f);

/* Record why a quorum operation failed: with one node its own error; with
 * several, DLOCK_EQUORUM naming the nodes that failed. Returns the code. */
int dlock__fanout_error(const dlock__fanout *f, const char *what);

/* Marks node i failed in f for its unexpected reply r (r stays in f; the
 * message names the node, not the operation: dlock__fanout_error adds it). */
void dlock__fanout_bad_reply(const dlock_client *c, dlock__fanout *f, int i, const dlock__reply *r);

/* The verdict on calls [first, first+ncalls) whose replies are 1 (ours,
 * done) or 0 (not ours): 0 if a quorum of nodes said 1 to all of them;
 * DLOCK_ENOTHELD if enough said 0 that no quorum is possible; otherwise the
 * failures' error. `what` prefixes the message. */
int dlock__fanout_verdict(const dlock_client *c, dlock__fanout *f, int first, int ncalls,
                          const char *what);

/* 1 if every node answered 1 to each of calls [first, first+ncalls): the
 * verdict is then 0, with no message to build. */
int dlock__fanout_all_ones(const dlock__fanout *f, int first, int ncalls);

/* dlock__fanout_verdict, counting a node's "1" only if its replicas
 * acknowledged it (calls[] carried WAITs; dlock__fanout_acked); a shortfall
 * is DLOCK_EQUORUM naming it, a transient failure to retry. */
int dlock__fanout_verdict_acked(dlock_client *c, dlock__fanout *f, const dlock__call *calls, int n,
                                int first, int ncalls, const char *what);

/* Append to calls[*n] the WAITs that make the writes of calls[0..*n)
 * acknowledged (one for the node of each call on a Cluster, else one),
 * waiting at most wait_ms (its text kept in ms_text, 24 bytes), each
 * followed by the replication query (INFO replication) when the replica
 * count is tracked. Room for
 * 2 * DLOCK__NODES_MAX more calls is the caller's. Nothing if no node
 * needs acknowledgements. */
void dlock__fanout_add_waits(dlock_client *c, dlock__call *calls, int *n, int64_t wait_ms,
                             char *ms_text, const char **wait_args);

/* Run on one node and hand back its replies: the only node, the Sentinel
 * master, the cluster, or for Redlock the first node that answers (for
 * reading state, never for taking or giving back a lock). */
int dlock__fanout_one(dlock_client *c, const dlock__call *calls, int n, dlock__reply **replies);

/* The node a key name lives on: 0, or the cluster node of its slot. */
int dlock__fanout_node_of(dlock_client *c, const char *name);

/* Replica acknowledgement of a run whose calls[] carried WAIT calls: 1 if
 * the writes of call k on voter i were acknowledged by as many replicas as
 * its node needs (its WAIT is the first DLOCK__S_WAIT after k answered by
 * the same node: no look at the slot map, so c->mu may be held), else 0 with the shortfall in why ("1 of 2 replicas ..."). A
 * call with no WAIT after it counts as acknowledged. */
int dlock__fanout_acked(dlock_client *c, const dlock__fanout *f, const dlock__call *calls, int n,
                        int i, int k, char *why, size_t whylen);

#endif
