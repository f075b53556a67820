/*
 * sentinel.h — finding the master of a Sentinel deployment.
 *
 * Node 0 of a Sentinel client is the master the sentinels name. Two ways
 * keep it current:
 * - a watcher thread subscribes to "+switch-master" on a sentinel and
 *   switches node 0 the moment a failover is announced, so renewals go to
 *   the new master at once (the old one can stay writable for seconds
 *   before it is reconfigured, and renewing there would let the lock's copy
 *   on the new master expire);
 * - a call that cannot reach node 0, or is told READONLY / MASTERDOWN, asks
 *   the sentinels again (fanout.c).
 * Connections to an old address are dropped by generation (pool.c).
 */
#ifndef DLOCK_SENTINEL_H
#define DLOCK_SENTINEL_H
#include "client.h"

/* Ask the sentinels where the master is now; switch node 0 there if it
 * moved. Returns 0 or DLOCK_ECONN (no sentinel answered with an address). */
int dlock__sentinel_resolve(dlock_client *c);

/* Start / stop the +switch-master watcher (Sentinel clients, at open and
 * close). Start returns 0 or DLOCK_ESYS / DLOCK_ENOMEM. */
int dlock__sentinel_watch_start(dlock_client *c);
void dlock__sentinel_watch_stop(dlock_client *c);

#endif
