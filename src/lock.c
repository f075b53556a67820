/*
 * lock.c — the handle: making and freeing it, release, extend, and the
 * accessors that read its local view (no round trips).
 *
 * Release stops renewal first (dlock__watchdog_remove waits out a renewal
 * in flight), so nothing can follow the delete. A handle whose lock the
 * server already said is gone is not sent again; any other release goes to
 * every node, also one whose local validity ran out (the server may still
 * hold it, and a waiter may be waiting for it).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "calls.h"
#include "clock.h"
#include "error.h"
#include "fanout.h"
#include "lock.h"
#include "watchdog.h"

int64_t dlock__validity_end(int64_t start_ns, int64_t ttl_ms)
{
    /* Clock drift allowance as in Redlock: 1% of the TTL plus 2 ms. */
    int64_t drift_ns = ttl_ms * 10000 + 2000000;
    return start_ns + ttl_ms * 1000000 - drift_ns;
}

void dlock__lock_set_held(dlock_lock *l, int64_t start_ns, int64_t valid_until_ns)
{
    atomic_store(&l->valid_until_ns, valid_until_ns);
    atomic_store(&l->state, DLOCK__HELD);
    l->sched.due_ns = start_ns + (int64_t)((double)l->ttl_ms * l->renew_fraction * 1e6);
}

void dlock__lock_free(dlock_lock *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->nparts; i++)
        dlock__free(l->parts[i].key);
    for (int i = 0; i < l->nnames; i++)
        dlock__free(l->names[i]);
    dlock__free(l->names);
    dlock__free(l->parts);
    dlock__free(l);
}

int dlock__lock_new(dlock_lock **out, dlock_client *c, int kind, const char *const *keys, size_t n,
                    const dlock_lock_opts *o)
{
    *out = NULL;
    dlock_lock *l = dlock__calloc(1, sizeof *l);
    if (!l)
        return dlock__err(DLOCK_ENOMEM, "out of memory");
    l->family = kind == DLOCK__KIND_SEM ? DLOCK__FAM_SEM : DLOCK__FAM_MUTEX;
    int gs = dlock__group_size(l->family);
    l->parts = dlock__calloc(n, sizeof *l->parts);
    l->names = dlock__calloc(n * (size_t)gs, sizeof *l->names);
    int rc = l->parts && l->names ? 0 : dlock__err(DLOCK_ENOMEM, "out of memory");
    if (rc == 0) {
        l->nparts = n;
        l->nnames = (int)n * gs;
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        l->parts[i].names = &l->names[i * (size_t)gs];
        if (!(l->parts[i].key = dlock__strdup(keys[i])))
            rc = dlock__err(DLOCK_ENOMEM, "out of memory");
        else
            rc = dlock__key_group(l->parts[i].names, c->prefix, keys[i], l->family);
    }
    if (rc == 0)
        rc = dlock__token_new(l->token);
    if (rc) {
        dlock__lock_free(l);
        return rc;
    }
    l->client = c;
    l->kind = kind;
    l->slot = -1;
    l->permits = 1;
    l->ttl_ms = o->ttl_ms;
    l->auto_renew = o->auto_renew;
    l->renew_fraction = o->renew_fraction;
    l->on_lost = o->on_lost;
    l->on_lost_arg = o->on_lost_arg;
    l->fair = o->fair;
    l->sched.idx = (size_t)-1;
    *out = l;
    return 0;
}

/* Run the release calls of every part on every node in one round trip.
 * Returns 0 if the lock was ours (on a quorum of nodes), DLOCK_ENOTHELD if
 * it was not, or a transport error. */
static int release_parts(dlock_lock *l)
{
    dlock__call calls[DLOCK_MULTI_MAX];
    dlock__call_args args;
    dlock__calls_release(l, calls, &args);
    dlock__fanout f;
    int rc = dlock__fanout_run(l->client, calls, (int)l->nparts, 0, &f);
    if (rc == DLOCK_ENOMEM)
        return rc;
    if (dlock__fanout_all_ones(&f, 0, (int)l->nparts)) {
        rc = 0;
    } else {
        char what[DLOCK_KEY_MAX + 16];
        snprintf(what, sizeof what, "release %s", l->parts[0].key);
        rc = dlock__fanout_verdict(l->client, &f, 0, (int)l->nparts, what);
    }
    dlock__fanout_free(&f);
    return rc;
}

int dlock_release(dlock_lock *l)
{
    dlock__err_clear();
    if (!l)
        return 0;
    dlock_client *c = l->client;
    if (dlock__watchdog_on_thread(c))
        return dlock__err(DLOCK_EINVAL,
                          "dlock_release() cannot be called from an on_lost callback");
    pthread_mutex_lock(&c->mu);
    int more = l->holds > 1; /* a reentrant hold taken again: drop one */
    if (more)
        l->holds--;
    pthread_mutex_unlock(&c->mu);
    if (more)
        return 0;
    /* Stop renewal first: after this no renewal of this lock is in flight
     * or will be sent, so nothing can follow our delete. */
    dlock__watchdog_remove(c, l);
    int was_valid = dlock_is_held(l);
    int lost_by_server =
        atomic_load(&l->state) == DLOCK__LOST && atomic_load(&l->renew_error) == DLOCK_ENOTHELD;
    atomic_store(&l->state, DLOCK__RELEASED);
    int rc = 0;
    if (lost_by_server) {
        rc =
            dlock__err(DLOCK_ENOTHELD, "release %s: the lock had been taken over", l->parts[0].key);
    } else if ((rc = dlock__client_enter(c)) == 0) {
        rc = release_parts(l);
        if (rc == 0 && !was_valid)
            rc = dlock__err(DLOCK_ENOTHELD,
                            "release %s: the lock's validity had run out before the release",
                            l->parts[0].key);
        dlock__client_leave(c);
    }
    dlock__metrics_release(&c->metrics, l->parts[0].key, rc, dlock__now_ns() - l->acquired_ns);
    dlock__lock_free(l);
    return rc;
}

int dlock_extend(dlock_lock *l, int64_t ttl_ms)
{
    dlock__err_clear();
    if (!l)
        return dlock__err(DLOCK_EINVAL, "lock is NULL");
    if (ttl_ms < DLOCK__TTL_MIN_MS || ttl_ms > (int64_t)1 << 40)
        return dlock__err(DLOCK_EINVAL, "ttl_ms must be from %d ms to 2^40 ms (got %lld)",
                          DLOCK__TTL_MIN_MS, (long long)ttl_ms);
    if (!dlock_is_held(l))
        return dlock__err(DLOCK_ENOTHELD, "extend %s: the lock is no longer held", l->parts[0].key);
    dlock_client *c = l->client;
    int rc = dlock__client_enter(c);
    if (rc)
        return rc;
    dlock__call calls[DLOCK_MULTI_MAX + 2 * DLOCK__NODES_MAX];
    dlock__call_args args;
    dlock__calls_extend(l, calls, &args, ttl_ms);
    int64_t start = dlock__now_ns();
    dlock__fanout f;
    char what[DLOCK_KEY_MAX + 16], wait_ms[24];
    const char *wait_args[1];
    snprintf(what, sizeof what, "extend %s", l->parts[0].key);
    /* never wait past the lock's own validity for the answer */
    int64_t left_ms = (atomic_load(&l->valid_until_ns) - start) / 1000000;
    int n = (int)l->nparts;
    dlock__fanout_add_waits(c, calls, &n, left_ms / 2, wait_ms, wait_args);
    rc = dlock__fanout_run(c, calls, n, left_ms < 1 ? 1 : (int)left_ms, &f);
    if (rc != DLOCK_ENOMEM)
        rc = dlock__fanout_verdict_acked(c, &f, calls, n, 0, (int)l->nparts, what);
    dlock__fanout_free(&f);
    if (rc == DLOCK_ENOTHELD) {
        dlock__watchdog_mark_lost(l, DLOCK_ENOTHELD);
    } else if (rc == 0) {
        dlock__watchdog_suspend(c, l); /* a renewal in flight used the old TTL */
        pthread_mutex_lock(&c->mu);
        l->ttl_ms = ttl_ms;
        pthread_mutex_unlock(&c->mu);
        atomic_store(&l->valid_until_ns, dlock__validity_end(start, ttl_ms));
        dlock__watchdog_replan(c, l, start + (int64_t)((double)ttl_ms * l->renew_fraction * 1e6));
    }
    dlock__client_leave(c);
    return rc;
}

int dlock_is_held(const dlock_lock *l)
{
    if (!l)
        return 0;
    return atomic_load(&((dlock_lock *)l)->state) == DLOCK__HELD &&
           dlock__now_ns() < atomic_load(&((dlock_lock *)l)->valid_until_ns);
}

int64_t dlock_lock_remaining_ms(const dlock_lock *l)
{
    if (!l || atomic_load(&((dlock_lock *)l)->state) != DLOCK__HELD)
        return 0;
    int64_t left = atomic_load(&((dlock_lock *)l)->valid_until_ns) - dlock__now_ns();
    return left > 0 ? left / 1000000 : 0;
}

int dlock_lock_renew_error(const dlock_lock *l)
{
    return l ? atomic_load(&((dlock_lock *)l)->renew_error) : DLOCK_EINVAL;
}

uint64_t dlock_lock_fencing_token(const dlock_lock *l)
{
    return l ? l->parts[0].fence : 0;
}

const char *dlock_lock_key(const dlock_lock *l)
{
    return l ? l->parts[0].key : NULL;
}

int dlock_lock_slot(const dlock_lock *l)
{
    return l && l->kind == DLOCK__KIND_SEM ? l->slot : -1;
}

int dlock_lock_permits(const dlock_lock *l)
{
    return l && l->kind == DLOCK__KIND_SEM ? l->permits : 1;
}

size_t dlock_lock_count(const dlock_lock *l)
{
    return l ? l->nparts : 0;
}

const char *dlock_lock_key_at(const dlock_lock *l, size_t i)
{
    return l && i < l->nparts ? l->parts[i].key : NULL;
}

uint64_t dlock_lock_fencing_token_at(const dlock_lock *l, size_t i)
{
    return l && i < l->nparts ? l->parts[i].fence : 0;
}
