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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "cluster.h"
#include "keys.h"
#include "pool.h"

#define ROUNDS_MAX 100        /* redirections followed in one call, at most */
#define FAILOVER_PAUSE_MS 100 /* between looks at the slot map while a node is down */
#include "clock.h"
#include "error.h"

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
        const char *argv[2] = {"CLUSTER", "SLOTS"};
        dlock__reply *r = NULL;
        int rc = dlock__conn_command(conn, &r, 2, argv, NULL);
        dlock__pool_put(c, i, conn);
        if (rc || r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
            snprintf(why, sizeof why, "%s", rc ? dlock_last_errmsg()
                                               : r->type == REDIS_REPLY_ERROR ? r->str : "empty slot map");
            dlock__reply_free(r);
            continue;
        }
        pthread_mutex_lock(&c->mu);
        int ok = 0;
        for (size_t k = 0; k < r->elements; k++) {
            dlock__reply *e = r->element[k];
            if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 || e->element[0]->type != REDIS_REPLY_INTEGER ||
                e->element[1]->type != REDIS_REPLY_INTEGER || e->element[2]->type != REDIS_REPLY_ARRAY ||
                e->element[2]->elements < 2 || e->element[2]->element[0]->type != REDIS_REPLY_STRING ||
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
    const char *asking[1] = {"ASKING"};
    dlock__reply *r[2] = {NULL, NULL};
    rc = dlock__conn_append(conn, 1, asking, NULL);
    if (rc == 0)
        rc = dlock__scripts_append(conn, call, 1);
    if (rc == 0)
        rc = dlock__conn_exchange(conn, r, 2, max_ms);
    dlock__reply_free(r[0]);
    if (rc == 0 && dlock__reply_is_error(r[1], "NOSCRIPT")) {
        /* the target does not know the script yet: ASKING again, then EVAL */
        dlock__reply_free(r[1]);
        r[0] = r[1] = NULL;
        rc = dlock__conn_append(conn, 1, asking, NULL);
        if (rc == 0)
            rc = dlock__scripts_append(conn, call, 0);
        if (rc == 0)
            rc = dlock__conn_exchange(conn, r, 2, max_ms);
        dlock__reply_free(r[0]);
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

int dlock__cluster_run(dlock_client *c, const dlock__call *calls, int n, dlock__reply **replies, int max_ms)
{
    int64_t end = dlock__now_ns() + (int64_t)max_ms * 1000000;
    int *node_of = dlock__calloc((size_t)n, sizeof *node_of);
    int *pending = dlock__calloc((size_t)n, sizeof *pending);
    dlock__call *batch = dlock__calloc((size_t)n, sizeof *batch);
    dlock__reply **got = dlock__calloc((size_t)n, sizeof *got);
    int *idx = dlock__calloc((size_t)n, sizeof *idx);
    int rc = node_of && pending && batch && got && idx ? 0 : dlock__err(DLOCK_ENOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        replies[i] = NULL;
        if (pending)
            pending[i] = 1;
    }
    int round = 0, unreachable = 0;
    char why[300] = "";
    while (rc == 0) {
        int left_calls = 0;
        pthread_mutex_lock(&c->mu);
        for (int i = 0; i < n; i++)
            if (pending[i]) {
                node_of[i] = calls[i].nkeys > 0 ? c->slots[dlock__key_slot(calls[i].keys[0])] : 0;
                left_calls++;
            }
        int nnodes = c->nnodes;
        pthread_mutex_unlock(&c->mu);
        if (left_calls == 0)
            break;
        if (round == ROUNDS_MAX || dlock__now_ns() >= end) {
            rc = unreachable ? dlock__err(DLOCK_ECONN, "%s", why)
                             : dlock__err(DLOCK_ECONN, "cluster: the slot map kept changing; gave up");
            break;
        }
        int refresh = 0, tryagain = 0;
        unreachable = 0;
        for (int node = 0; node < nnodes && rc == 0; node++) {
            int m = 0;
            for (int i = 0; i < n; i++)
                if (pending[i] && node_of[i] == node) {
                    batch[m] = calls[i];
                    idx[m++] = i;
                }
            if (m == 0)
                continue;
            int64_t left = (end - dlock__now_ns()) / 1000000;
            dlock__conn *conn;
            int reused;
            int crc = dlock__pool_get(c, node, &conn, &reused, left > 0 ? (int)left : 1);
            if (crc == 0) {
                crc = dlock__scripts_run(conn, batch, m, got, left > 0 && left < c->command_timeout_ms ? (int)left : 0);
                dlock__pool_put(c, node, conn);
            }
            if (crc == DLOCK_ENOMEM || crc == DLOCK_EINVAL) {
                rc = crc;
                break;
            }
            if (crc) { /* node unreachable: maybe a failover; look again */
                snprintf(why, sizeof why, "%s", dlock_last_errmsg());
                unreachable = refresh = 1;
                continue;
            }
            for (int k = 0; k < m; k++) {
                int i = idx[k];
                if (dlock__reply_is_error(got[k], "MOVED")) {
                    refresh = 1;
                    dlock__reply_free(got[k]);
                } else if (dlock__reply_is_error(got[k], "ASK")) {
                    int target = redirect_target(c, got[k]->str);
                    dlock__reply_free(got[k]);
                    int64_t l2 = (end - dlock__now_ns()) / 1000000;
                    dlock__reply *ar = NULL;
                    if (target >= 0 && run_asking(c, target, &calls[i], &ar, l2 > 0 ? (int)l2 : 1) == 0) {
                        if (dlock__reply_is_error(ar, "TRYAGAIN")) {
                            tryagain = 1; /* a multi-key script mid-migration */
                            dlock__reply_free(ar);
                        } else {
                            replies[i] = ar;
                            pending[i] = 0;
                        }
                    }
                } else if (dlock__reply_is_error(got[k], "TRYAGAIN")) {
                    tryagain = 1; /* the slot is being migrated: wait for it */
                    dlock__reply_free(got[k]);
                } else if (dlock__reply_is_error(got[k], "CROSSSLOT")) {
                    rc = dlock__err(DLOCK_EINVAL, "cluster: the keys of one call are in different slots "
                                                  "(give them a common {hash tag})");
                    dlock__reply_free(got[k]);
                } else {
                    replies[i] = got[k];
                    pending[i] = 0;
                }
            }
            /* a WAIT whose call went elsewhere (MOVED, ASK, TRYAGAIN) waited
             * for nothing: it goes again, after its call */
            for (int k = 0; k < m; k++)
                if (pending[idx[k]])
                    for (int j = k + 1; j < m; j++)
                        if (calls[idx[j]].script == DLOCK__S_WAIT && !pending[idx[j]] &&
                            dlock__key_slot(calls[idx[j]].keys[0]) == dlock__key_slot(calls[idx[k]].keys[0])) {
                            dlock__reply_free(replies[idx[j]]);
                            replies[idx[j]] = NULL;
                            pending[idx[j]] = 1;
                        }
        }
        if (rc == 0 && refresh) {
            dlock__cluster_refresh(c);
            if (unreachable) {
                /* a master is down: until a replica is promoted the map still
                 * names it; look again shortly, within the budget */
                int64_t left = (end - dlock__now_ns()) / 1000000;
                poll(NULL, 0, (int)(left < FAILOVER_PAUSE_MS ? (left > 0 ? left : 0) : FAILOVER_PAUSE_MS));
            }
            round++;
        } else if (rc == 0 && tryagain) {
            /* Redis cannot run a multi-key script while its slot is split
             * between two nodes: wait (bounded by the deadline) for the
             * migration to finish */
            if (dlock__now_ns() + 20000000 >= end) {
                rc = dlock__err(DLOCK_ECONN, "cluster: the slot is being migrated; try again later");
                break;
            }
            poll(NULL, 0, 20);
        } else if (rc == 0) {
            round++;
        }
    }
    if (rc)
        for (int i = 0; i < n; i++) {
            dlock__reply_free(replies[i]);
            replies[i] = NULL;
        }
    dlock__free(node_of);
    dlock__free(pending);
    dlock__free(batch);
    dlock__free(got);
    dlock__free(idx);
    return rc;
}
