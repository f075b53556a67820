/*
 * calls.h — the script calls that several modules send for one handle:
 * giving it back (release, close, a late grant, a waiter giving up),
 * renewing it (dlock_extend, the watchdog) and keeping a waiter in line
 * (the watchdog). Acquire calls are built where they are sent (grant.c).
 * Keys come from the handle's key groups, so positions match the scripts'
 * roles by construction (keys.h).
 */
#ifndef DLOCK_CALLS_H
#define DLOCK_CALLS_H
#include "lock.h"
#include "scripts.h"

/* Arguments a call points to; the caller keeps this alive until it ran. */
typedef struct dlock__call_args {
    const char *v[4];
    char ttl[24];
} dlock__call_args;

/* One release call per part into calls[0..l->nparts). */
void dlock__calls_release(const dlock_lock *l, dlock__call *calls, dlock__call_args *args);

/* One extend call per part (TTL ttl_ms) into calls[0..l->nparts). */
void dlock__calls_extend(const dlock_lock *l, dlock__call *calls, dlock__call_args *args,
                         int64_t ttl_ms);

/* The keepalive call of a waiting handle (one call for all its parts);
 * watching: an unqueued watcher rather than a queued waiter. */
void dlock__calls_keepalive(const dlock_lock *l, int watching, dlock__call *call,
                            dlock__call_args *args);

#endif
