/*
 * cluster.h — Redis Cluster: the slot map and routing by slot.
 */
#ifndef DLOCK_CLUSTER_H
#define DLOCK_CLUSTER_H
#include "client.h"
#include "scripts.h"

/* Read the slot map (CLUSTER SLOTS) from any node that answers; nodes
 * found in it are added. 0 or DLOCK_ECONN. */
int dlock__cluster_refresh(dlock_client *c);

/* Run calls[0..n) routed by slot (one pipelined batch per node),
 * following MOVED and ASK, within max_ms. 0 or an error (no replies).
 * answered_by (NULL, or n ints) gets the node that answered each call. */
int dlock__cluster_run(dlock_client *c, const dlock__call *calls, int n, dlock__reply **replies,
                       int *answered_by, int max_ms);

/* The node serving the slot of key name `name` (per the current map). */
int dlock__cluster_node_of(dlock_client *c, const char *name);

#endif
