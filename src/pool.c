/*
 * pool.c — idle connections per node (see pool.h).
 */
#include "pool.h"

void dlock__pool_drain(dlock__node *nd)
{
    while (nd->idle) {
        dlock__conn *n = *dlock__conn_next(nd->idle);
        dlock__conn_close(nd->idle);
        nd->idle = n;
    }
    nd->nidle = 0;
}

int dlock__pool_get(dlock_client *c, int node, dlock__conn **out, int *reused, int max_connect_ms)
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
    int has_faults = c->has_faults && (!faults.node_mask || (faults.node_mask >> node) & 1);
    unsigned gen = nd->gen;
    dlock__endpoint ep;
    int rc = conn ? 0 : dlock__endpoint_copy(&ep, &nd->ep);
    pthread_mutex_unlock(&c->mu);
    *reused = conn != NULL;
    *out = conn;
    if (conn || rc)
        return rc;
    int connect_ms =
        c->connect_timeout_ms < max_connect_ms ? c->connect_timeout_ms : max_connect_ms;
    /* automatic min_replicas: ask the server how many replicas it has */
    int want_role = c->min_replicas < 0 && ep.replicas < 0;
    dlock__conn_cfg cfg = { &ep,
                            connect_ms > 0 ? connect_ms : 1,
                            c->command_timeout_ms,
                            has_faults ? &faults : NULL,
                            &nd->counters,
                            want_role };
    rc = dlock__conn_open(out, &cfg);
    if (rc == 0) {
        *dlock__conn_tag(*out) = gen;
        if (want_role && dlock__conn_replicas(*out) >= 0)
            atomic_store(&nd->replicas_seen, dlock__conn_replicas(*out));
        int explicit_need = c->min_replicas >= 0 ? c->min_replicas : ep.replicas;
        dlock__conn_set_need(*out, explicit_need, &nd->replicas_seen);
        if (explicit_need > 0 || (want_role && dlock__conn_replicas(*out) > 0))
            atomic_store(&c->acks, 1); /* replicated: from now on grants carry WAIT */
    }
    dlock__endpoint_clear(&ep);
    return rc;
}

void dlock__pool_put(dlock_client *c, int node, dlock__conn *conn)
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
