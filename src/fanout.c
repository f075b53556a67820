/*
 * fanout.c — where calls run (see fanout.h): one node with its retries,
 * the Cluster's routing, or a parallel round over the Redlock masters with
 * one poll loop and one deadline.
 */
#include "fanout.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "cluster.h"
#include "error.h"
#include "keys.h"
#include "pool.h"
#include "sentinel.h"

/* ----------------------------------------------------------- single node */

/* 1 if a reply says the node is not (or no longer) a writable master. */
static int demoted(dlock__reply **replies, int n)
{
    for (int i = 0; i < n; i++)
        if (dlock__reply_is_error(replies[i], "READONLY") ||
            dlock__reply_is_error(replies[i], "MASTERDOWN"))
            return 1;
    return 0;
}

/* 1 if conn (taken for node `node`) was made for a server the node no
 * longer names: the Sentinels switched masters while it was in use. */
static int stale_master(dlock_client *c, int node, dlock__conn *conn)
{
    pthread_mutex_lock(&c->mu);
    int stale = *dlock__conn_tag(conn) != c->nodes[node].gen;
    pthread_mutex_unlock(&c->mu);
    return stale;
}

/* Run on node `node` within max_ms: a stale pooled connection is replaced
 * once; a Sentinel master that fails, was demoted, has just lost all its
 * replicas (its replica may have been promoted: it keeps serving until the
 * Sentinels demote it, and what it grants now is lost) or was replaced
 * while the calls ran is looked up again once, and the calls go to the
 * master the Sentinels name: an answer from a server that is no longer the
 * master never counts. */
static int run_node(dlock_client *c, int node, const dlock__call *calls, int n,
                    dlock__reply **replies, int max_ms)
{
    int64_t end = dlock__now_ns() + (int64_t)max_ms * 1000000;
    int stale_retry = 1, failover_retry = c->backend == DLOCK__BACKEND_SENTINEL;
    for (;;) {
        int64_t left = (end - dlock__now_ns()) / 1000000;
        if (left < 1)
            return dlock__err(DLOCK_ECONN, "%s: no answer in time", c->nodes[node].ep.desc);
        dlock__conn *conn;
        int reused, timed_out = 0;
        int rc = dlock__pool_get(c, node, &conn, &reused, (int)left);
        if (rc == 0) {
            left = (end - dlock__now_ns()) / 1000000;
            rc = dlock__scripts_run(conn, calls, n, replies,
                                    left < 1                       ? 1
                                    : left < c->command_timeout_ms ? (int)left
                                                                   : 0);
            timed_out = rc != 0 && dlock__conn_timed_out(conn);
            int stale =
                rc == 0 && c->backend == DLOCK__BACKEND_SENTINEL && stale_master(c, node, conn);
            if (rc == 0 && (stale || (failover_retry &&
                                      (demoted(replies, n) || dlock__conn_replicas_gone(conn))))) {
                for (int i = 0; i < n; i++) {
                    dlock__reply_free(replies[i]);
                    replies[i] = NULL;
                }
                rc = dlock__err(DLOCK_ECONN, "%s: %s", dlock__conn_desc(conn),
                                stale ? "no longer the master (failover)"
                                : dlock__conn_replicas_gone(conn)
                                    ? "the master lost its replicas (a failover?)"
                                    : "the master was demoted (failover)");
                dlock__conn_close(conn);
                conn = NULL;
            }
            dlock__pool_put(c, node, conn);
        }
        if (rc == DLOCK_ECONN && reused && stale_retry && !timed_out) {
            stale_retry = 0; /* a pooled connection was closed: try a fresh one */
            continue;
        }
        if (rc == DLOCK_ECONN && failover_retry) {
            failover_retry = 0;
            char msg[512];
            snprintf(msg, sizeof msg, "%s", dlock_last_errmsg());
            dlock__log(c, DLOCK_LOG_INFO, "asking the sentinels for the master: %s", msg);
            if (dlock__sentinel_resolve(c) == 0)
                continue;
            dlock__err(DLOCK_ECONN, "%s (and %s)", msg, dlock_last_errmsg());
        }
        return rc;
    }
}

int dlock__fanout_one(dlock_client *c, const dlock__call *calls, int n, dlock__reply **replies)
{
    /* connect + command, twice at most (one stale pooled connection) */
    int64_t max = 2 * ((int64_t)c->connect_timeout_ms + c->command_timeout_ms);
    if (c->backend == DLOCK__BACKEND_SENTINEL)
        max *= 2;
    if (c->backend == DLOCK__BACKEND_CLUSTER)
        return dlock__cluster_run(c, calls, n, replies, NULL,
                                  max > INT32_MAX ? INT32_MAX : (int)max);
    int rc = 0;
    for (int i = 0; i < c->nnodes; i++)
        if ((rc = run_node(c, i, calls, n, replies, max > INT32_MAX ? INT32_MAX : (int)max)) == 0)
            return 0;
    return rc;
}

/* ------------------------------------------------------------- fan-out */

void dlock__fanout_free(dlock__fanout *f)
{
    for (int i = 0; i < f->nnodes; i++) {
        if (f->replies[i]) {
            for (int k = 0; k < f->n; k++)
                dlock__reply_free(f->replies[i][k]);
            dlock__free(f->replies[i]);
            f->replies[i] = NULL;
        }
    }
    dlock__free(f->by_node);
    f->by_node = NULL;
}

int dlock__fanout_error(const dlock__fanout *f, const char *what)
{
    if (f->nnodes == 1)
        return dlock__err(f->rc[0], "%s: %s", what, f->err[0]);
    char msg[480];
    size_t len = 0;
    int failed = 0;
    for (int i = 0; i < f->nnodes; i++)
        if (f->rc[i]) {
            failed++;
            if (len < sizeof msg)
                len += (size_t)snprintf(msg + len, sizeof msg - len, "%s%s", len ? "; " : "",
                                        f->err[i]);
        }
    return dlock__err(DLOCK_EQUORUM, "%s: quorum not reached: %d of %d nodes failed (%s)", what,
                      failed, f->nnodes, failed ? msg : "no node failed");
}

void dlock__fanout_bad_reply(const dlock_client *c, dlock__fanout *f, int i, const dlock__reply *r)
{
    f->rc[i] = dlock__reply_fail(r, c->nodes[i].ep.desc, NULL);
    snprintf(f->err[i], sizeof f->err[i], "%s", dlock_last_errmsg());
}

/* Record node i's failure in f. */
static void node_failed(dlock__fanout *f, int i, int rc)
{
    f->rc[i] = rc;
    snprintf(f->err[i], sizeof f->err[i], "%s", dlock_last_errmsg());
    if (f->replies[i]) {
        for (int k = 0; k < f->n; k++) {
            dlock__reply_free(f->replies[i][k]);
            f->replies[i][k] = NULL;
        }
        dlock__free(f->replies[i]);
        f->replies[i] = NULL;
    }
}

/* ------------------------------------------------------ the parallel round */

/* One node's part of a parallel round: phase 1 reads the EVALSHA replies;
 * if some said NOSCRIPT, phase 2 re-sends those calls as EVAL on the same
 * connection at once (not after the slowest node) and reads their replies
 * into their places; then the node is done. */
typedef struct node_io {
    dlock__conn *conn;
    int phase; /* 1, 2, or 0 when done or failed */
    int got, expect;
    int *redo; /* phase 2: the calls re-sent, in order */
} node_io;

static void io_fail(dlock__fanout *f, node_io *io, int i, int rc)
{
    node_failed(f, i, rc);
    dlock__conn_close(io->conn);
    io->conn = NULL;
    io->phase = 0;
}

/* A node's phase is complete: start phase 2 if needed, else finish. */
static void io_next(dlock_client *c, dlock__fanout *f, node_io *io, int i, const dlock__call *calls,
                    int n, int64_t end)
{
    if (io->phase == 1) {
        if (!(io->redo = dlock__calloc((size_t)n, sizeof *io->redo))) {
            io_fail(f, io, i, dlock__err(DLOCK_ENOMEM, "out of memory"));
            return;
        }
        int m = dlock__scripts_redo(calls, n, f->replies[i], io->redo), rc = 0;
        if (m > 0) {
            for (int k = 0; k < m && rc == 0; k++)
                rc = dlock__scripts_append(io->conn, &calls[io->redo[k]], 0);
            int64_t left = (end - dlock__now_ns()) / 1000000;
            if (rc == 0)
                rc = dlock__conn_send(io->conn, left > 0 ? (int)left : 1);
            if (rc) {
                io_fail(f, io, i, rc);
                return;
            }
            io->phase = 2;
            io->got = 0;
            io->expect = m;
            return;
        }
    }
    int rc = dlock__scripts_wait_replies(io->conn, calls, n, f->replies[i]);
    if (rc) {
        io_fail(f, io, i, rc);
        return;
    }
    io->phase = 0;
    dlock__pool_put(c, i, io->conn);
    io->conn = NULL;
}

/* Read what node i has sent so far. */
static void io_read(dlock_client *c, dlock__fanout *f, node_io *io, int i, const dlock__call *calls,
                    int n, int64_t end)
{
    while (io->phase && io->got < io->expect) {
        dlock__reply *r = NULL;
        int rc = dlock__conn_read(io->conn, &r, 0);
        if (rc) {
            io_fail(f, io, i, rc);
            return;
        }
        if (!r)
            return;
        int at = io->phase == 1 ? io->got : io->redo[io->got];
        dlock__reply_free(f->replies[i][at]);
        f->replies[i][at] = r;
        if (++io->got == io->expect)
            io_next(c, f, io, i, calls, n, end);
    }
}

/* Run calls on every voting node at once: connect (pooled connections make
 * this free) and send everywhere, then read every node's replies as they
 * come, under one poll loop and one deadline. */
static int parallel(dlock_client *c, const dlock__call *calls, int n, int max_ms, dlock__fanout *f)
{
    int64_t end = dlock__now_ns() + (int64_t)max_ms * 1000000;
    node_io io[DLOCK__NODES_MAX];
    memset(io, 0, sizeof io);
    for (int i = 0; i < f->nnodes; i++) {
        int64_t left = (end - dlock__now_ns()) / 1000000;
        int reused, rc = left < 1 ? dlock__err(DLOCK_ECONN, "%s: no time left to connect",
                                               c->nodes[i].ep.desc)
                                  : dlock__pool_get(c, i, &io[i].conn, &reused, (int)left);
        for (int k = 0; rc == 0 && k < n; k++)
            rc = dlock__scripts_append(io[i].conn, &calls[k], 1);
        if (rc == 0) {
            dlock__conn_count_round_trip(io[i].conn);
            rc = dlock__conn_send(io[i].conn, (int)(left > 0 ? left : 1));
        }
        io[i].phase = 1;
        io[i].expect = n;
        if (rc)
            io_fail(f, &io[i], i, rc);
    }
    for (;;) {
        struct pollfd p[DLOCK__NODES_MAX];
        int idx[DLOCK__NODES_MAX], np = 0;
        for (int i = 0; i < f->nnodes; i++) {
            io_read(c, f, &io[i], i, calls, n, end);
            if (io[i].phase) {
                p[np] = (struct pollfd){ .fd = dlock__conn_poll_fd(io[i].conn), .events = POLLIN };
                idx[np++] = i;
            }
        }
        if (np == 0)
            break;
        int64_t left = (end - dlock__now_ns()) / 1000000;
        if (left <= 0) {
            for (int k = 0; k < np; k++)
                io_fail(f, &io[idx[k]], idx[k],
                        dlock__err(DLOCK_ECONN, "%s: no answer within %d ms",
                                   c->nodes[idx[k]].ep.desc, max_ms));
            break;
        }
        if (poll(p, (nfds_t)np, (int)left) < 0 && errno != EINTR)
            break;
    }
    for (int i = 0; i < f->nnodes; i++) {
        dlock__free(io[i].redo);
        if (io[i].conn)
            io_fail(f, &io[i], i, dlock__err(DLOCK_ESYS, "poll: %s", strerror(errno)));
    }
    for (int i = 0; i < f->nnodes; i++)
        if (f->rc[i] == 0)
            return 0;
    return dlock__fanout_error(f, "all nodes failed");
}

int dlock__fanout_run(dlock_client *c, const dlock__call *calls, int n, int max_ms,
                      dlock__fanout *f)
{
    memset(f, 0, sizeof *f);
    f->nnodes = c->voters;
    f->n = n;
    if (max_ms <= 0) /* default: a connect and a command; twice with a failover to follow */
        max_ms =
            (c->connect_timeout_ms + c->command_timeout_ms) *
            (c->backend == DLOCK__BACKEND_SENTINEL || c->backend == DLOCK__BACKEND_CLUSTER ? 2 : 1);
    for (int i = 0; i < f->nnodes; i++)
        if (!(f->replies[i] = dlock__calloc((size_t)(n > 0 ? n : 1), sizeof *f->replies[i]))) {
            dlock__fanout_free(f);
            return dlock__err(DLOCK_ENOMEM, "out of memory");
        }
    if (c->backend == DLOCK__BACKEND_CLUSTER) {
        if (!(f->by_node = dlock__calloc((size_t)(n > 0 ? n : 1), sizeof *f->by_node))) {
            dlock__fanout_free(f);
            return dlock__err(DLOCK_ENOMEM, "out of memory");
        }
        int rc = dlock__cluster_run(c, calls, n, f->replies[0], f->by_node, max_ms);
        if (rc)
            node_failed(f, 0, rc);
        if (rc == DLOCK_ENOMEM)
            dlock__fanout_free(f); /* callers free nothing after ENOMEM */
        return rc;
    }
    if (c->voters == 1) {
        int rc = run_node(c, 0, calls, n, f->replies[0], max_ms);
        if (rc)
            node_failed(f, 0, rc);
        return rc;
    }

    return parallel(c, calls, n, max_ms, f);
}

int dlock__fanout_all_ones(const dlock__fanout *f, int first, int ncalls)
{
    for (int i = 0; i < f->nnodes; i++) {
        if (f->rc[i])
            return 0;
        for (int k = first; k < first + ncalls; k++)
            if (f->replies[i][k]->type != REDIS_REPLY_INTEGER || f->replies[i][k]->integer != 1)
                return 0;
    }
    return 1;
}

int dlock__fanout_verdict(const dlock_client *c, dlock__fanout *f, int first, int ncalls,
                          const char *what)
{
    int ok = 0, notours = 0;
    for (int i = 0; i < f->nnodes; i++) {
        if (f->rc[i])
            continue;
        int node_ok = 1;
        for (int k = first; k < first + ncalls; k++) {
            dlock__reply *r = f->replies[i][k];
            if (r->type != REDIS_REPLY_INTEGER) {
                dlock__fanout_bad_reply(c, f, i, r);
                node_ok = -1;
                break;
            }
            if (r->integer != 1)
                node_ok = 0;
        }
        if (node_ok == 1)
            ok++;
        else if (node_ok == 0)
            notours++;
    }
    if (ok >= c->quorum)
        return 0;
    int failed = f->nnodes - ok - notours;
    if (ok + failed >= c->quorum || (f->nnodes == 1 && failed))
        return dlock__fanout_error(f, what); /* the failures decided it */
    return dlock__err(DLOCK_ENOTHELD, "%s: the lock had expired or been taken over", what);
}

int dlock__fanout_node_of(dlock_client *c, const char *name)
{
    return c->backend == DLOCK__BACKEND_CLUSTER ? dlock__cluster_node_of(c, name) : 0;
}

int dlock__fanout_acked(dlock_client *c, const dlock__fanout *f, const dlock__call *calls, int n,
                        int i, int k, char *why, size_t whylen)
{
    (void)c;
    for (int w = k + 1; w < n; w++) {
        /* the WAIT that ran after call k on the node that answered it */
        if (calls[w].script != DLOCK__S_WAIT || (f->by_node && f->by_node[w] != f->by_node[k]))
            continue;
        const dlock__reply *r = f->rc[i] == 0 ? f->replies[i][w] : NULL;
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3) {
            snprintf(why, whylen, "no answer from the replicas' acknowledgement (WAIT)");
            return 0;
        }
        long long acked = r->element[0]->integer, need = r->element[1]->integer,
                  asked = r->element[2]->integer;
        if (acked >= need)
            return 1;
        if (asked < need) /* the WAIT returned once `asked` acknowledged */
            snprintf(why, whylen,
                     "only %lld of the %lld replicas needed acknowledged it: a replica attached "
                     "since the client last looked, so its WAIT asked for only %lld",
                     acked, need, asked);
        else
            snprintf(why, whylen,
                     "only %lld of the %lld replicas needed acknowledged it within %s ms", acked,
                     need, calls[w].args[0]);
        return 0;
    }
    return 1;
}

int dlock__fanout_verdict_acked(dlock_client *c, dlock__fanout *f, const dlock__call *calls, int n,
                                int first, int ncalls, const char *what)
{
    int rc = dlock__fanout_verdict(c, f, first, ncalls, what);
    if (rc != 0 || first + ncalls >= n)
        return rc; /* no WAIT after these calls */
    int ok = 0;
    char why[200] = "";
    for (int i = 0; i < f->nnodes; i++) {
        int yes = f->rc[i] == 0;
        for (int k = first; yes && k < first + ncalls; k++)
            yes = f->replies[i][k]->type == REDIS_REPLY_INTEGER && f->replies[i][k]->integer == 1;
        ok += yes && dlock__fanout_acked(c, f, calls, n, i, first, why, sizeof why);
    }
    if (ok >= c->quorum)
        return 0;
    return dlock__err(DLOCK_EQUORUM, "%s: %s", what, why[0] ? why : "not acknowledged");
}

void dlock__fanout_add_waits(dlock_client *c, dlock__call *calls, int *n, int64_t wait_ms,
                             char *ms_text, const char **wait_args)
{
    if (!dlock__client_wants_acks(c) || *n == 0)
        return;
    /* the WAIT must end well before the exchange's own timeout */
    if (wait_ms > c->command_timeout_ms / 2)
        wait_ms = c->command_timeout_ms / 2;
    snprintf(ms_text, 24, "%lld", (long long)(wait_ms < 1 ? 1 : wait_ms));
    wait_args[0] = ms_text;
    int seen[DLOCK__NODES_MAX], nseen = 0, m = *n;
    for (int k = 0; k < m; k++) {
        if (calls[k].script == DLOCK__S_WAIT || calls[k].nkeys == 0)
            continue;
        int node = dlock__fanout_node_of(c, calls[k].keys[0]), j = 0;
        while (j < nseen && seen[j] != node)
            j++;
        if (j < nseen || nseen == DLOCK__NODES_MAX)
            continue;
        seen[nseen++] = node;
        calls[(*n)++] = (dlock__call){ DLOCK__S_WAIT, 1, 1, calls[k].keys, wait_args };
        if (dlock__client_tracks_role(c))
            calls[(*n)++] = (dlock__call){ DLOCK__S_REPLICATION, 1, 0, calls[k].keys, NULL };
        if (c->backend != DLOCK__BACKEND_CLUSTER)
            break; /* one node takes all the calls */
    }
}
