/*
 * pool.h — each node's pool of idle connections.
 *
 * Thread safety comes from the pool: a call borrows a connection, does its
 * round trips on it alone and gives it back, so concurrent calls never
 * share a socket and never wait on each other's network time. Up to
 * DLOCK__IDLE_MAX idle connections are kept per node; broken ones, ones
 * of an older generation of the node's address (a Sentinel failover) and
 * any given back while the client closes are closed instead.
 */
#ifndef DLOCK_POOL_H
#define DLOCK_POOL_H
#include "client.h"

/* Borrow a connection to node `node`: an idle one, or a new one made
 * within max_connect_ms (capped by the connect timeout). *reused says
 * whether it came from the pool (a pooled connection may have gone
 * stale). Returns 0 or the connect error. */
int dlock__pool_get(dlock_client *c, int node, dlock__conn **out, int *reused, int max_connect_ms);

/* Give it back (NULL is a no-op). */
void dlock__pool_put(dlock_client *c, int node, dlock__conn *conn);

/* Close a node's idle connections (c->mu held, or no other threads). */
void dlock__pool_drain(dlock__node *nd);

#endif
