/*
 * fanout.c — talking to the client's nodes: connection pools per node, the
 * single-node path (with a retry on a stale pooled connection and, for
 * Sentinel, a fresh look-up of the master), and the parallel fan-out used
 * by Redlock.
 *
 * Fan-out: every node's calls are written first (one pipelined batch per
 * node), then the replies are read from all sockets as they arrive under
 * one poll() loop and one deadline, so an acquisition costs about the
 * slowest node's round trip, not the sum. A node that fails does not hold
 * up the others beyond the deadline. Connections to nodes that are down are
 * attempted again on the next call (refused connects fail at once).
 *
 * Sentinel: node 0 is the master the sentinels name. When it cannot be
 * reached, or answers READONLY (it was demoted by a failover), the client
 * asks the sentinels again, switches node 0 to the new address (older
 * connections are dropped by generation) and retries once.
 */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "client.h"
#include "clock.h"
#include "error.h"

int dlock__client_conn_get(dlock_client *c, int node, dlock__conn **out, int *reused,
                           int max_connect_ms)
{
    dlock__node *nd = &c->nodes[node];
    pthread_mutex_lock(&c->mu);
    dlock__conn *conn = nd->idle;
    if (conn) {
        nd->idle = *dlock__conn_next(conn);
        *dlock__conn_next(conn) = NULL;
        nd->nidle--;
    }
    dlock__faults faults = c->faults;
    int has_faults = c->has_faults;
    unsigned gen = nd->gen;
    dlock__endpoint ep;
    int rc = conn ? 0 : dlock__endpoint_copy(&ep, &nd->ep);
    pthread_mutex_unlock(&c->mu);
    *reused = conn != NULL;
    *out = conn;
    if (conn || rc)
        return rc;
    int connect_ms = c->connect_timeout_ms < max_connect_ms ? c->connect_timeout_ms : max_connect_ms;
    dlock__conn_cfg cfg = {&ep, connect_ms > 0 ? connect_ms : 1, c->command_timeout_ms,
                           has_faults ? &faults : NULL, &nd->counters};
    rc = dlock__conn_open(out, &cfg);
    if (rc == 0)
        *dlock__conn_tag(*out) = gen;
    dlock__endpoint_clear(&ep);
    return rc;
}

void dlock__client_conn_put(dlock_client *c, int node, dlock__conn *conn)
{
    if (!conn)
        return;
    dlock__node *nd = &c->nodes[node];
    if (!dlock__conn_broken(conn)) {
        pthread_mutex_lock(&c->mu);
        if (nd->nidle < DLOCK__IDLE_MAX && !c->closing && *dlock__conn_tag(conn) == nd->gen) {
            *dlock__conn_next(conn) = nd->idle;
            nd->idle = conn;
            nd->nidle++;
            conn = NULL;
        }
        pthread_mutex_unlock(&c->mu);
    }
    dlock__conn_close(conn);
}

/* ------------------------------------------------------------- Sentinel */

/* Ask the sentinels where the master is now; switch node 0 there if it
 * moved. Returns 0 or DLOCK_ECONN (no sentinel answered with an address). */
static int sentinel_resolve(dlock_client *c)
{
    char why[300] = "no sentinel answered";
    for (int i = 0; i < c->nsentinels; i++) {
        dlock__conn_cfg cfg = {&c->sentinels[i], c->connect_timeout_ms, c->command_timeout_ms, NULL, NULL};
        dlock__conn *conn;
        if (dlock__conn_open(&conn, &cfg) != 0) {
            snprintf(why, sizeof why, "%s", dlock_last_errmsg());
            continue;
        }
        const char *argv[3] = {"SENTINEL", "get-master-addr-by-name", c->master_name};
        dlock__reply *r = NULL;
        int rc = dlock__conn_command(conn, &r, 3, argv, NULL);
        dlock__conn_close(conn);
        if (rc) {
            snprintf(why, sizeof why, "%s", dlock_last_errmsg());
            continue;
        }
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING ||
            r->element[1]->type != REDIS_REPLY_STRING) {
            snprintf(why, sizeof why, "sentinel %s does not know master '%s'", c->sentinels[i].desc,
                     c->master_name);
            dlock__reply_free(r);
            continue;
        }
        char *end;
        long port = strtol(r->element[1]->str, &end, 10);
        int bad_port = *end || port < 1 || port > 65535;
        char *host = bad_port ? NULL : dlock__strdup(r->element[0]->str);
        dlock__reply_free(r);
        if (bad_port) {
            snprintf(why, sizeof why, "sentinel %s gave a bad port", c->sentinels[i].desc);
            continue;
        }
        if (!host)
            return dlock__err(DLOCK_ENOMEM, "out of memory");
        dlock__node *nd = &c->nodes[0];
        pthread_mutex_lock(&c->mu);
        if (!nd->ep.host || strcmp(nd->ep.host, host) != 0 || nd->ep.port != (int)port) {
            dlock__free(nd->ep.host);
            nd->ep.host = host;
            host = NULL;
            nd->ep.port = (int)port;
            snprintf(nd->ep.desc, sizeof nd->ep.desc, strchr(nd->ep.host, ':') ? "[%s]:%d" : "%s:%d",
                     nd->ep.host, nd->ep.port);
            nd->gen++;
            while (nd->idle) {
                dlock__conn *n = *dlock__conn_next(nd->idle);
                dlock__conn_close(nd->idle);
                nd->idle = n;
            }
            nd->nidle = 0;
        }
        pthread_mutex_unlock(&c->mu);
        dlock__free(host);
        return 0;
    }
    return dlock__err(DLOCK_ECONN, "cannot find master '%s' through the sentinels: %s", c->master_name, why);
}

int dlock__client_locate(dlock_client *c)
{
    if (c->backend == DLOCK__BACKEND_CLUSTER)
        return dlock__cluster_refresh(c);
    return c->backend == DLOCK__BACKEND_SENTINEL ? sentinel_resolve(c) : 0;
}

/* ----------------------------------------------------------- single node */

/* 1 if a reply says the node is not (or no longer) a writable master. */
static int demoted(dlock__reply **replies, int n)
{
    for (int i = 0; i < n; i++)
        if (dlock__reply_is_error(replies[i], "READONLY") || dlock__reply_is_error(replies[i], "MASTERDOWN"))
            return 1;
    return 0;
}

/* Run on node `node` within max_ms: a stale pooled connection is replaced
 * once; a Sentinel master that fails is looked up again once. */
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
        int reused;
        int rc = dlock__client_conn_get(c, node, &conn, &reused, (int)left);
        if (rc == 0) {
            left = (end - dlock__now_ns()) / 1000000;
            rc = dlock__scripts_run(conn, calls, n, replies,
                                    left < 1 ? 1 : left < c->command_timeout_ms ? (int)left : 0);
            if (rc == 0 && failover_retry && demoted(replies, n)) {
                for (int i = 0; i < n; i++) {
                    dlock__reply_free(replies[i]);
                    replies[i] = NULL;
                }
                dlock__conn_close(conn);
                conn = NULL;
                rc = dlock__err(DLOCK_ECONN, "the master was demoted (failover)");
            }
            dlock__client_conn_put(c, node, conn);
        }
        if (rc == DLOCK_ECONN && reused && stale_retry) {
            stale_retry = 0; /* a pooled connection went stale: try a fresh one */
            continue;
        }
        if (rc == DLOCK_ECONN && failover_retry) {
            failover_retry = 0;
            char msg[512];
            snprintf(msg, sizeof msg, "%s", dlock_last_errmsg());
            if (sentinel_resolve(c) == 0)
                continue;
            dlock__err(DLOCK_ECONN, "%s (and %s)", msg, dlock_last_errmsg());
        }
        return rc;
    }
}

int dlock__client_run(dlock_client *c, const dlock__call *calls, int n, dlock__reply **replies)
{
    /* connect + command, twice at most (one stale pooled connection) */
    int64_t max = 2 * ((int64_t)c->connect_timeout_ms + c->command_timeout_ms);
    if (c->backend == DLOCK__BACKEND_SENTINEL)
        max *= 2;
    if (c->backend == DLOCK__BACKEND_CLUSTER)
        return dlock__cluster_run(c, calls, n, replies, max > INT32_MAX ? INT32_MAX : (int)max);
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
                len += (size_t)snprintf(msg + len, sizeof msg - len, "%s%s", len ? "; " : "", f->err[i]);
        }
    return dlock__err(DLOCK_EQUORUM, "%s: quorum not reached: %d of %d nodes failed (%s)", what, failed,
                      f->nnodes, failed ? msg : "no node failed");
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

int dlock__fanout_run(dlock_client *c, const dlock__call *calls, int n, int max_ms, dlock__fanout *f)
{
    memset(f, 0, sizeof *f);
    f->nnodes = c->voters;
    f->n = n;
    if (max_ms <= 0)
        max_ms = c->connect_timeout_ms + c->command_timeout_ms;
    for (int i = 0; i < f->nnodes; i++)
        if (!(f->replies[i] = dlock__calloc((size_t)(n > 0 ? n : 1), sizeof *f->replies[i]))) {
            dlock__fanout_free(f);
            return dlock__err(DLOCK_ENOMEM, "out of memory");
        }
    if (c->backend == DLOCK__BACKEND_CLUSTER) {
        int rc = dlock__cluster_run(c, calls, n, f->replies[0], 2 * max_ms);
        if (rc)
            node_failed(f, 0, rc);
        return rc;
    }
    if (c->voters == 1) {
        int rc = run_node(c, 0, calls, n, f->replies[0],
                          c->backend == DLOCK__BACKEND_SENTINEL ? 2 * max_ms : max_ms);
        if (rc)
            node_failed(f, 0, rc);
        return rc;
    }

    int64_t end = dlock__now_ns() + (int64_t)max_ms * 1000000;
    dlock__conn *conns[DLOCK__NODES_MAX] = {NULL};
    int got[DLOCK__NODES_MAX] = {0};
    /* connect (pooled connections make this free) and send everywhere */
    for (int i = 0; i < f->nnodes; i++) {
        int64_t left = (end - dlock__now_ns()) / 1000000;
        int reused, rc = left < 1 ? dlock__err(DLOCK_ECONN, "%s: no time left to connect", c->nodes[i].ep.desc)
                                  : dlock__client_conn_get(c, i, &conns[i], &reused, (int)left);
        for (int k = 0; rc == 0 && k < n; k++)
            rc = dlock__scripts_append(conns[i], &calls[k]);
        if (rc == 0) {
            dlock__conn_count_round_trip(conns[i]);
            rc = dlock__conn_send(conns[i], (int)(left > 0 ? left : 1));
        }
        if (rc) {
            node_failed(f, i, rc);
            dlock__conn_close(conns[i]);
            conns[i] = NULL;
        }
    }
    /* read every node's replies as they come */
    for (;;) {
        struct pollfd p[DLOCK__NODES_MAX];
        int idx[DLOCK__NODES_MAX], np = 0;
        for (int i = 0; i < f->nnodes; i++) {
            while (conns[i] && got[i] < n) {
                dlock__reply *r = NULL;
                int rc = dlock__conn_read(conns[i], &r, 0);
                if (rc) {
                    node_failed(f, i, rc);
                    dlock__conn_close(conns[i]);
                    conns[i] = NULL;
                    break;
                }
                if (!r)
                    break;
                f->replies[i][got[i]++] = r;
            }
            if (conns[i] && got[i] < n) {
                p[np] = (struct pollfd){.fd = dlock__conn_poll_fd(conns[i]), .events = POLLIN};
                idx[np++] = i;
            }
        }
        if (np == 0)
            break;
        int64_t left = (end - dlock__now_ns()) / 1000000;
        if (left <= 0) {
            for (int k = 0; k < np; k++) {
                int i = idx[k];
                node_failed(f, i, dlock__err(DLOCK_ECONN, "%s: timed out waiting for a reply",
                                             c->nodes[i].ep.desc));
                dlock__conn_close(conns[i]);
                conns[i] = NULL;
            }
            break;
        }
        if (poll(p, (nfds_t)np, (int)left) < 0 && errno != EINTR)
            break;
    }
    /* a node that did not know a script gets it again as EVAL (rare) */
    for (int i = 0; i < f->nnodes; i++) {
        if (!conns[i])
            continue;
        for (int k = 0; k < n; k++)
            if (dlock__reply_is_error(f->replies[i][k], "NOSCRIPT")) {
                dlock__reply *r = NULL;
                int64_t left = (end - dlock__now_ns()) / 1000000;
                int rc = dlock__scripts_run(conns[i], &calls[k], 1, &r, left > 0 ? (int)left : 1);
                if (rc) {
                    node_failed(f, i, rc);
                    break;
                }
                dlock__reply_free(f->replies[i][k]);
                f->replies[i][k] = r;
            }
        dlock__client_conn_put(c, i, conns[i]);
    }
    for (int i = 0; i < f->nnodes; i++)
        if (f->rc[i] == 0)
            return 0;
    return dlock__fanout_error(f, "all nodes failed");
}

int dlock__fanout_verdict(const dlock_client *c, dlock__fanout *f, int first, int ncalls, const char *what)
{
    int ok = 0, notours = 0;
    for (int i = 0; i < f->nnodes; i++) {
        if (f->rc[i])
            continue;
        int node_ok = 1;
        for (int k = first; k < first + ncalls; k++) {
            dlock__reply *r = f->replies[i][k];
            if (r->type != REDIS_REPLY_INTEGER) {
                dlock__err(DLOCK_EPROTO, "%s: unexpected reply%s%s", c->nodes[i].ep.desc,
                           r->type == REDIS_REPLY_ERROR ? ": " : "", r->type == REDIS_REPLY_ERROR ? r->str : "");
                f->rc[i] = DLOCK_EPROTO;
                snprintf(f->err[i], sizeof f->err[i], "%s", dlock_last_errmsg());
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
