/*
 * sentinel.h — finding the master of a Sentinel deployment.
 *
 * Node 0 of a Sentinel client is the master the sentinels name. When it
 * cannot be reached, or answers READONLY / MASTERDOWN (a failover demoted
 * it), the client asks the sentinels again and switches node 0 to the new
 * address; connections to the old one are dropped by generation.
 */
#ifndef DLOCK_SENTINEL_H
#define DLOCK_SENTINEL_H
#include "client.h"

/* Ask the sentinels where the master is now; switch node 0 there if it
 * moved. Returns 0 or DLOCK_ECONN (no sentinel answered with an address). */
int dlock__sentinel_resolve(dlock_client *c);

#endif
