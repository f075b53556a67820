/*
 * topology.h — from a URL list to the client's nodes and backend.
 *
 *   redis://... | rediss://... | unix://...   one server (node 0)
 *   URL,URL,...                               Redlock: one node per URL
 *   redis-sentinel://[auth@]h1:p1,h2:p2/NAME  Sentinel: the sentinels, and
 *                                             node 0 for the master
 *   redis-cluster://[auth@]h1:p1,h2:p2        Cluster: the seed nodes
 *   rediss-sentinel://, rediss-cluster://     the same over TLS: sentinels and
 *                                             every node; ?cacert=&cert=&key=
 *                                             &sni= apply to all of them
 * and ?replicas=N on any of them (replica acknowledgement).
 *
 * A comma followed by "scheme://" starts a new URL; other commas belong to
 * the URL (the hosts of one Sentinel or Cluster deployment).
 */
#ifndef DLOCK_TOPOLOGY_H
#define DLOCK_TOPOLOGY_H
#include "client.h"

/* Parse `list` into c->nodes, c->backend, c->voters, c->quorum (and the
 * sentinels and master name). 0, DLOCK_EINVAL (the message names the bad
 * URL; never a password), DLOCK_ENOMEM. */
int dlock__topology_parse(dlock_client *c, const char *list);

/* Free what dlock__topology_parse allocated. */
void dlock__topology_free(dlock_client *c);

#endif
