/*
 * semaphore.c — counting locks: at most `limit` permits of a key held at
 * once, each permit with a slot number unique among the holders.
 * A holder may take several permits at once (dlock_sem_acquire_n), all or
 * none; FIFO by request, so a large request is not starved by small ones.
 * Crash-safe (a dead holder's permits expire with its TTL), and
 * O(log N) per grant in the number of holders (sem_acquire.lua: slots come
 * from a sorted set of free ones). A semaphore remembers its limit while
 * it has holders or waiters; asking with another limit is refused.
 * Refused on Redlock: permits counted separately on each server could let
 * more than `limit` holders in.
 */
#include "acquire.h"
#include "error.h"

int dlock_sem_acquire(dlock_lock **out, dlock_client *client, const char *key, int limit,
                      const dlock_lock_opts *opts)
{
    return dlock_sem_acquire_n(out, client, key, limit, 1, opts);
}

int dlock_sem_acquire_n(dlock_lock **out, dlock_client *client, const char *key, int limit,
                        int permits, const dlock_lock_opts *opts)
{
    dlock_lock_opts o;
    int rc = dlock__acquire_check(out, client, &o, opts);
    if (rc == 0)
        rc = dlock__key_check(key);
    if (rc == 0 && (limit < 1 || limit > DLOCK__LIMIT_MAX))
        rc = dlock__err(DLOCK_EINVAL, "limit must be from 1 to %d (got %d)", DLOCK__LIMIT_MAX,
                        limit);
    if (rc == 0 && (permits < 1 || permits > limit))
        rc = dlock__err(DLOCK_EINVAL, "permits must be from 1 to the limit %d (got %d)", limit,
                        permits);
    if (rc == 0 && client->backend == DLOCK__BACKEND_REDLOCK)
        rc = dlock__err(DLOCK_EINVAL,
                        "semaphores are not available on Redlock: permits counted "
                        "separately on each server could admit more than `limit` holders");
    return rc ? rc : dlock__acquire(out, client, DLOCK__KIND_SEM, &key, 1, limit, permits, &o);
}
