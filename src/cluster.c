/*
 * cluster.c — Redis Cluster: the slot map and routing.
 *
 * A cluster is one logical server whose keys live on several masters. The
 * client keeps a map slot -> node (CLUSTER SLOTS), computes each call's slot
 * from its first key (every key of one lock shares the user key's hash tag,
 * so one call never spans two slots), sends each node its calls as one
 * pipelined batch, and follows redirections: MOVED (the slot has a new
 * owner: refresh the map, send again) and ASK (the slot is migrating: send
 * this one call to the target, preceded by ASKING). A node that cannot be
 * reached also triggers a refresh, again every FAILOVER_PAUSE_MS within
 * the caller's budget, since a failover promotes a replica only after the
 * cluster's node timeout: a renewal keeps trying until then. Nodes
 * are only ever added, in a fixed-capacity array, so listeners and pools
 * keep stable addresses.
 *
 * Pub/sub needs no routing: a PUBLISH on any master reaches subscribers on
 * every node, so the listener subscribes on node 0.
 */
#include <hiredis/hiredis.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "cluster.h"
#include "error.h"
#include "keys.h"
#include "pool.h"

#define ROUNDS_MAX 100        /* redirections followed in one call, at most */
#define FAILOVER_PAUSE_MS 100 /* between looks at the slot map while a node is down */

/* The node for "host:port", added (with the seeds' credentials and TLS
 * settings) if new. Returns its index or -1 (full / out of memory).
 * c->mu held. */
static int node_for(dlock_client *c, const char *host, int port)
{
    char desc[128];
    snprintf(desc, sizeof desc, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    for (int i = 0; i < c->nnodes; i++)
        if (strcmp(c->nodes[i].ep.desc, desc) == 0)
            return i;
    if (c->nnodes == DLOCK__NODES_MAX)
        return -1;
    dlock__node *nd = &c->nodes[c->nnodes];
    memset(nd, 0, sizeof *nd);
    if (dlock__endpoint_copy(&nd->ep, &c->nodes[0].ep) != 0)
        return -1;
    dlock__free(nd->ep.host);
    if (!(nd->ep.host = dlock__strdup(host))) {
        dlock__endpoint_clear(&nd->ep);
        return -1;
    }
    nd->ep.port = port;
    snprintf(nd->ep.desc, sizeof nd->ep.desc, "%s", desc);
    return c->nnodes++;
}

int dlock__cluster_refresh(dlock_client *c)
{
    char why[300] = "no node answered";
    pthread_mutex_lock(&c->mu);
    int n = c->nnodes;
    pthread_mutex_unlock(&c->mu);
    for (int i = 0; i < n; i++) {
        dlock__conn *conn;
        int reused;
        if (dlock__pool_get(c, i, &conn, &reused, c->connect_timeout_ms) != 0) {
            snprintf(why, sizeof why, "%s", dlock_last_errmsg());
            continue;
        }
        const char *argv[2] = { "CLUSTER", "SLOTS" };
        dlock__reply *r = NULL;
        int rc = dlock__conn_command(conn, &r, 2, argv, NULL);
        dlock__pool_put(c, i, conn);
        if (rc || r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
            snprintf(why, sizeof why, "%s",
                     rc                             ? dlock_last_errmsg()
                     : r->type == REDIS_REPLY_ERROR ? r->str
                                                    : "empty slot map");
            dlock__reply_free(r);
            continue;
        }
        pthread_mutex_lock(&c->mu);
        int ok = 0;
        for (size_t k = 0; k < r->elements; k++) {
            dlock__reply *e = r->element[k];
            if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
                e->element[0]->type != REDIS_REPLY_INTEGER ||
                e->element[1]->type != REDIS_REPLY_INTEGER ||
                e->element[2]->type != REDIS_REPLY_ARRAY || e->element[2]->elements < 2 ||
                e->element[2]->element[0]->type != REDIS_REPLY_STRING ||
                e->element[2]->element[1]->type != REDIS_REPLY_INTEGER)
                continue;
            long long lo = e->element[0]->integer, hi = e->element[1]->integer;
            const char *host = e->element[2]->element[0]->str;
            if (!host[0])
                host = c->nodes[i].ep.host; /* "" means: the node you asked */
            int idx = node_for(c, host, (int)e->element[2]->element[1]->integer);
            if (idx < 0 || lo < 0 || hi > 16383 || lo > hi)
                continue;
            for (long long s = lo; s <= hi; s++)
                c->slots[s] = (uint8_t)idx;
            ok = 1;
        }
        pthread_mutex_unlock(&c->mu);
        dlock__reply_free(r);
        if (ok)
            return 0;
    }
    return dlock__err(DLOCK_ECONN, "cannot read the cluster's slot map: %s", why);
}

/* Parse "MOVED 1234 host:port" / "ASK ..." into the target node. */
static int redirect_target(dlock_client *c, const char *msg)
{
    const char *sp = strchr(msg, ' ');
    sp = sp ? strchr(sp + 1, ' ') : NULL;
    if (!sp)
        return -1;
    const char *colon = strrchr(sp + 1, ':');
    if (!colon)
        return -1;
    char host[128];
    snprintf(host, sizeof host, "%.*s", (int)(colon - sp - 1), sp + 1);
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || port < 1 || port > 65535)
        return -1;
    pthread_mutex_lock(&c->mu);
    int idx = node_for(c, host, (int)port);
    pthread_mutex_unlock(&c->mu);
    return idx;
}

/* One call on node `node` preceded by ASKING (a slot being migrated). */
static int run_asking(dlock_client *c, int node, const dlock__call *call, dlock__reply **out,
                      int max_ms)
{
    dlock__conn *conn;
    int reused;
    int rc = dlock__pool_get(c, node, &conn, &reused, max_ms);
    if (rc)
        return rc;
    const char *asking[1] = { "ASKING" };
    dlock__reply *r[2] = { NULL, NULL };
    /* EVALSHA; if the target does not know the script yet, ASKING again
     * and EVAL */
    for (int sha = 1; sha >= 0; sha--) {
        rc = dlock__conn_append(conn, 1, asking, NULL);
        if (rc == 0)
            rc = dlock__scripts_append(conn, call, sha);
        if (rc == 0)
            rc = dlock__conn_exchange(conn, r, 2, max_ms);
        dlock__reply_free(r[0]);
        r[0] = NULL;
        if (rc != 0 || !sha || !dlock__reply_is_error(r[1], "NOSCRIPT"))
            break;
        dlock__reply_free(r[1]);
        r[1] = NULL;
    }
    if (rc == 0)
        *out = r[1];
    else
        dlock__conn_mark_broken(conn); /* ASKING may be queued and never sent */
    dlock__pool_put(c, node, conn);
    return rc;
}

int dlock__cluster_node_of(dlock_client *c, const char *name)
{
    pthread_mutex_lock(&c->mu);
    int node = c->slots[dlock__key_slot(name)];
    pthread_mutex_unlock(&c->mu);
    return node;
}

/* The state of one dlock__cluster_run: the calls, where each goes this
 * round, which still wait for an answer, and what the round saw. */
typedef struct {
    dlock_client *c;
    const dlock__call *calls;
    dlock__reply **replies;
    int *answered_by; /* call -> the node that answered it (may be NULL) */
    int n;
    int64_t end;        /* the caller's deadline (ns) */
    int *node_of;       /* call -> node, this round */
    int *pending;       /* call still needs an answer */
    int *idx;           /* batch position -> call */
    dlock__call *batch; /* one node's calls */
    dlock__reply **got; /* their replies */
    int refresh;        /* the slot map needs a fresh look */
    int tryagain;       /* a slot is mid-migration */
    int unreachable;    /* a node could not be reached */
    char why[300];      /* the last node error */
} route;

/* Milliseconds left before the deadline, at least 1. */
static int ms_left(const route *rt)
{
    int64_t left = (rt->end - dlock__now_ns()) / 1000000;
    return left > 0 ? (int)(left < INT32_MAX ? left : INT32_MAX) : 1;
}

/* Assigns each pending call its node from the slot map. Returns how many
 * are pending; *nnodes gets the number of known nodes. */
static int route_pending(route *rt, int *nnodes)
{
    int left = 0;
    pthread_mutex_lock(&rt->c->mu);
    for (int i = 0; i < rt->n; i++)
        if (rt->pending[i]) {
            const dlock__call *call = &rt->calls[i];
            rt->node_of[i] = call->nkeys > 0 ? rt->c->slots[dlock__key_slot(call->keys[0])] : 0;
            left++;
        }
    *nnodes = rt->c->nnodes;
    pthread_mutex_unlock(&rt->c->mu);
    return left;
}

/* Files reply r (owned) from node `node` to call i: an answer, or a
 * redirection to follow (MOVED: refresh the map; ASK: one call to the
 * target now; TRYAGAIN: wait for the migration; CLUSTERDOWN: the cluster
 * is between a master's failure and its replica's promotion, so like an
 * unreachable node). Returns 0, or DLOCK_EINVAL for keys that span slots. */
static int settle(route *rt, int node, int i, dlock__reply *r)
{
    if (dlock__reply_is_error(r, "CLUSTERDOWN")) {
        snprintf(rt->why, sizeof rt->why, "%s: %s", rt->c->nodes[node].ep.desc, r->str);
        rt->unreachable = rt->refresh = 1;
        dlock__reply_free(r);
        return 0;
    }
    if (dlock__reply_is_error(r, "MOVED")) {
        rt->refresh = 1;
        dlock__reply_free(r);
        return 0;
    }
    if (dlock__reply_is_error(r, "CROSSSLOT")) {
        dlock__reply_free(r);
        return dlock__err(DLOCK_EINVAL, "cluster: the keys of one call are in different slots "
                                        "(give them a common {hash tag})");
    }
    if (dlock__reply_is_error(r, "ASK")) {
        int target = redirect_target(rt->c, r->str);
        dlock__reply_free(r);
        r = NULL;
        if (target < 0 || run_asking(rt->c, target, &rt->calls[i], &r, ms_left(rt)) != 0)
            return 0; /* asked again next round */
        node = target;
    }
    if (dlock__reply_is_error(r, "TRYAGAIN")) {
        rt->tryagain = 1; /* a multi-key script while its slot is split */
        dlock__reply_free(r);
        return 0;
    }
    rt->replies[i] = r;
    rt->pending[i] = 0;
    if (rt->answered_by)
        rt->answered_by[i] = node;
    return 0;
}

/* A WAIT whose call went elsewhere (MOVED, ASK, TRYAGAIN) waited for
 * nothing: it goes again, after its call. m: the batch just sent. */
static void requeue_waits(route *rt, int m)
{
    for (int k = 0; k < m; k++) {
        int i = rt->idx[k];
        if (!rt->pending[i])
            continue;
        int slot = dlock__key_slot(rt->calls[i].keys[0]);
        for (int j = k + 1; j < m; j++) {
            int w = rt->idx[j];
            if (rt->calls[w].script == DLOCK__S_WAIT && !rt->pending[w] &&
                dlock__key_slot(rt->calls[w].keys[0]) == slot) {
                dlock__reply_free(rt->replies[w]);
                rt->replies[w] = NULL;
                rt->pending[w] = 1;
            }
        }
    }
}

/* Sends node `node` its pending calls as one pipelined batch and files the
 * replies. A node that cannot be reached only marks the round (maybe a
 * failover). Returns 0, or an error that ends the whole run. */
static int run_node(route *rt, int node)
{
    int m = 0;
    for (int i = 0; i < rt->n; i++)
        if (rt->pending[i] && rt->node_of[i] == node) {
            rt->batch[m] = rt->calls[i];
            rt->idx[m++] = i;
        }
    if (m == 0)
        return 0;
    int left = ms_left(rt);
    dlock__conn *conn;
    int reused;
    int rc = dlock__pool_get(rt->c, node, &conn, &reused, left);
    if (rc == 0) {
        rc = dlock__scripts_run(conn, rt->batch, m, rt->got,
                                left < rt->c->command_timeout_ms ? left : 0);
        dlock__pool_put(rt->c, node, conn);
    }
    if (rc == DLOCK_ENOMEM || rc == DLOCK_EINVAL)
        return rc;
    if (rc) {
        snprintf(rt->why, sizeof rt->why, "%s", dlock_last_errmsg());
        rt->unreachable = rt->refresh = 1;
        return 0;
    }
    for (int k = 0; k < m; k++) {
        int src = settle(rt, node, rt->idx[k], rt->got[k]);
        if (src && !rc)
            rc = src;
    }
    if (rc == 0)
        requeue_waits(rt, m);
    return rc;
}

/* Between two rounds: refresh the slot map after a redirection or an
 * unreachable node (pausing briefly while a master is down, since until a
 * replica is promoted the map still names it), or wait out a migration.
 * Returns 0, or DLOCK_ECONN when the deadline leaves no room to wait. */
static int between_rounds(route *rt)
{
    if (rt->refresh) {
        dlock__cluster_refresh(rt->c);
        if (rt->unreachable) {
            int left = ms_left(rt);
            poll(NULL, 0, left < FAILOVER_PAUSE_MS ? left : FAILOVER_PAUSE_MS);
        }
    } else if (rt->tryagain) {
        if (dlock__now_ns() + 20000000 >= rt->end)
            return dlock__err(DLOCK_ECONN, "cluster: the slot is being migrated; try again later");
        poll(NULL, 0, 20);
    }
    return 0;
}

int dlock__cluster_run(dlock_client *c, const dlock__call *calls, int n, dlock__reply **replies,
                       int *answered_by, int max_ms)
{
    route rt = { .c = c, .calls = calls, .replies = replies, .answered_by = answered_by, .n = n };
    rt.end = dlock__now_ns() + (int64_t)max_ms * 1000000;
    rt.node_of = dlock__calloc((size_t)n, sizeof *rt.node_of);
    rt.pending = dlock__calloc((size_t)n, sizeof *rt.pending);
    rt.idx = dlock__calloc((size_t)n, sizeof *rt.idx);
    rt.batch = dlock__calloc((size_t)n, sizeof *rt.batch);
    rt.got = dlock__calloc((size_t)n, sizeof *rt.got);
    int rc = rt.node_of && rt.pending && rt.idx && rt.batch && rt.got
                 ? 0
                 : dlock__err(DLOCK_ENOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        replies[i] = NULL;
        if (rt.pending)
            rt.pending[i] = 1;
    }
    int round = 0, nnodes;
    while (rc == 0 && route_pending(&rt, &nnodes) > 0) {
        if (round == ROUNDS_MAX || dlock__now_ns() >= rt.end) {
            rc = rt.unreachable
                     ? dlock__err(DLOCK_ECONN, "%s", rt.why)
                     : dlock__err(DLOCK_ECONN, "cluster: the slot map kept changing; gave up");
            break;
        }
        rt.refresh = rt.tryagain = rt.unreachable = 0;
        for (int node = 0; node < nnodes && rc == 0; node++)
            rc = run_node(&rt, node);
        if (rc == 0)
            rc = between_rounds(&rt);
        if (rt.refresh || !rt.tryagain)
            round++; /* waiting out a migration is bounded by the deadline */
    }
    if (rc)
        for (int i = 0; i < n; i++) {
            dlock__reply_free(replies[i]);
            replies[i] = NULL;
        }
    dlock__free(rt.node_of);
    dlock__free(rt.pending);
    dlock__free(rt.idx);
    dlock__free(rt.batch);
    dlock__free(rt.got);
    return rc;
}
