/*
 * rw.c — read-write locks. The write side is the key's mutex itself; the
 * read side is an entry in the key's HOLDERS set, taken only while no
 * writer holds and nobody is queued ahead (read_acquire.lua), so writers
 * are never starved; a run of queued readers is admitted together.
 * A writer can become a reader in one step (downgrade.lua), letting the
 * readers queued behind it in, never a writer.
 */
#include <stdio.h>

#include "acquire.h"
#include "calls.h"
#include "clock.h"
#include "error.h"
#include "fanout.h"
#include "watchdog.h"

int dlock_rw_acquire(dlock_lock **out, dlock_client *client, const char *key, int mode,
                     const dlock_lock_opts *opts)
{
    dlock_lock_opts o;
    int rc = dlock__acquire_check(out, client, &o, opts);
    if (rc == 0)
        rc = dlock__key_check(key);
    if (rc == 0 && mode != DLOCK_READ && mode != DLOCK_WRITE)
        rc = dlock__err(DLOCK_EINVAL, "mode must be DLOCK_READ or DLOCK_WRITE (got %d)", mode);
    if (rc)
        return rc;
    return dlock__acquire(out, client, mode == DLOCK_READ ? DLOCK__KIND_READ : DLOCK__KIND_MUTEX,
                          &key, 1, 0, 1, &o);
}

int dlock_rw_downgrade(dlock_lock *l)
{
    dlock__err_clear();
    if (!l)
        return dlock__err(DLOCK_EINVAL, "lock is NULL");
    if (l->kind != DLOCK__KIND_MUTEX || l->holds > 1)
        return dlock__err(DLOCK_EINVAL, "only a write lock held once can be downgraded");
    if (!dlock_is_held(l))
        return dlock__err(DLOCK_ENOTHELD, "downgrade %s: the lock is no longer held",
                          l->parts[0].key);
    dlock_client *c = l->client;
    int rc = dlock__client_enter(c);
    if (rc)
        return rc;
    dlock__watchdog_suspend(c, l);
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%lld", (long long)l->ttl_ms);
    const char *args[2] = { l->token, ttl };
    dlock__call calls[1 + 2 * DLOCK__NODES_MAX] = {
        { DLOCK__S_DOWNGRADE, DLOCK__GROUP_MUTEX, 2, (const char *const *)l->parts[0].names, args }
    };
    char what[DLOCK_KEY_MAX + 16], wait_ms[24];
    const char *wait_args[1];
    snprintf(what, sizeof what, "downgrade %s", l->parts[0].key);
    int64_t start = dlock__now_ns();
    int64_t left_ms = (atomic_load(&l->valid_until_ns) - start) / 1000000;
    int n = 1;
    dlock__fanout_add_waits(c, calls, &n, left_ms / 2, wait_ms, wait_args);
    dlock__fanout f;
    rc = dlock__fanout_run(c, calls, n, left_ms < 1 ? 1 : (int)left_ms, &f);
    if (rc != DLOCK_ENOMEM) {
        rc = dlock__fanout_verdict_acked(c, &f, calls, n, 0, 1, what);
        dlock__fanout_free(&f);
    }
    if (rc == 0) {
        pthread_mutex_lock(&c->mu);
        l->kind = DLOCK__KIND_READ; /* renewed as a reader from now on */
        pthread_mutex_unlock(&c->mu);
        atomic_store(&l->valid_until_ns, dlock__validity_end(start, l->ttl_ms));
    } else if (rc == DLOCK_ENOTHELD) {
        dlock__watchdog_mark_lost(l, DLOCK_ENOTHELD);
    }
    dlock__watchdog_replan(c, l,
                           rc == 0 ? start + (int64_t)((double)l->ttl_ms * l->renew_fraction * 1e6)
                                   : dlock__now_ns());
    dlock__client_leave(c);
    return rc;
}
