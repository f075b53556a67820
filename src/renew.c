/*
 * renew.c — one watchdog tick (see renew.h, and watchdog.h for the
 * schedule and its rules).
 *
 * A tick collects what is due (or nearly: a quarter of a renewal interval
 * early, so locks taken together travel together), up to BATCH_MAX calls;
 * builds each lock's extend calls and each waiter's keepalive; sends them
 * all in one fan-out round, bounded by half the smallest validity left in
 * it; then applies the verdicts: a renewal confirmed counts from the round's
 * start, a transport failure retries soon (never past the validity instant,
 * where the lock is declared lost), the server's "not ours" marks it lost at
 * once; a keepalive's news is passed to its waiter. on_lost callbacks run
 * with client->mu dropped, the lock kept in flight so its release waits.
 */
#include "renew.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <unistd.h>

#include "alloc.h"
#include "clock.h"
#include "error.h"
#include "fanout.h"
#include "watchdog.h"

#define RETRY_MIN_MS 20
#define RETRY_MAX_MS 500
#define BATCH_MAX 4096 /* calls per round; more go in the next round at once */

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

void dlock__batch_free(dlock__batch *b)
{
    dlock__free(b->items);
    dlock__free(b->args);
    dlock__free(b->calls);
}

/* Room for one more item of `ncalls` calls. 0 or DLOCK_ENOMEM. */
static int batch_grow(dlock__batch *b, int ncalls)
{
    if (b->n == b->cap) {
        int cap = b->cap ? b->cap * 2 : 64;
        dlock__sched **items = dlock__realloc(b->items, (size_t)cap * sizeof *items);
        if (items)
            b->items = items;
        dlock__call_args *args = dlock__realloc(b->args, (size_t)cap * sizeof *args);
        if (args)
            b->args = args;
        if (!items || !args)
            return DLOCK_ENOMEM;
        b->cap = cap;
    }
    if (b->ncalls + ncalls + 2 * DLOCK__NODES_MAX > b->callcap) { /* room for WAIT, INFO */
        int cap = b->callcap ? b->callcap : 64;
        while (cap < b->ncalls + ncalls + 2 * DLOCK__NODES_MAX)
            cap *= 2;
        dlock__call *calls = dlock__realloc(b->calls, (size_t)cap * sizeof *calls);
        if (!calls)
            return DLOCK_ENOMEM;
        b->calls = calls;
        b->callcap = cap;
    }
    return 0;
}

int64_t dlock__renew_interval_ns(const dlock_lock *l)
{
    return (int64_t)((double)l->ttl_ms * l->renew_fraction * 1e6);
}

static int64_t retry_delay_ns(const dlock_lock *l)
{
    int64_t ms = l->ttl_ms / 10;
    ms = ms < RETRY_MIN_MS ? RETRY_MIN_MS : ms > RETRY_MAX_MS ? RETRY_MAX_MS : ms;
    return ms * 1000000;
}

/* A lock whose validity ran out while renewals kept failing: mark it lost
 * and run its callback (c->mu dropped meanwhile; the lock is in flight so
 * its release waits). */
static void expire_lock(dlock_client *c, dlock_lock *l)
{
    int why = atomic_load(&l->renew_error);
    if (!dlock__watchdog_mark_lost(l, why ? why : DLOCK_ETIMEDOUT))
        return;
    l->inflight = 1;
    pthread_mutex_unlock(&c->mu);
    if (l->on_lost)
        l->on_lost(l, l->on_lost_arg);
    pthread_mutex_lock(&c->mu);
    l->inflight = 0;
    pthread_cond_broadcast(&c->cv);
}

/* Take the due entries out of the schedule into b (c->mu held). Returns
 * when the next entry is due if nothing is due now. */
static int64_t collect(dlock_client *c, dlock__batch *b)
{
    struct dlock__watchdog *wd = c->wd;
    int64_t now = dlock__now_ns();
    b->n = b->ncalls = 0;
    dlock__sched *s;
    while ((s = dlock__sched_first(&wd->q)) && b->ncalls < BATCH_MAX) {
        if (s->due_ns - s->early_ns > now)
            break;
        int ncalls = s->is_waiter
                         ? 1
                         : (int)((dlock_lock *)((char *)s - offsetof(dlock_lock, sched)))->nparts;
        if (batch_grow(b, ncalls) != 0)
            break; /* out of memory: serve what fits, try the rest later */
        dlock__sched_remove(&wd->q, s);
        if (s->is_waiter) {
            ((dlock__waitreg *)s)->inflight = 1;
        } else {
            dlock_lock *l = (dlock_lock *)((char *)s - offsetof(dlock_lock, sched));
            if (atomic_load(&l->state) != DLOCK__HELD)
                continue;
            if (now >= atomic_load(&l->valid_until_ns)) {
                expire_lock(c, l);
                break; /* c->mu was dropped: serve what we have, then look again */
            }
            l->inflight = 1;
        }
        b->items[b->n++] = s;
        b->ncalls += ncalls;
    }
    /* the arrays are final now: calls may point into them */
    for (int i = 0, k = 0; i < b->n; i++) {
        dlock__sched *e = b->items[i];
        if (e->is_waiter) {
            dlock__waitreg *w = (dlock__waitreg *)e;
            dlock__calls_keepalive(w->lock, w->watching, &b->calls[k++], &b->args[i]);
        } else {
            dlock_lock *l = (dlock_lock *)((char *)e - offsetof(dlock_lock, sched));
            dlock__calls_extend(l, &b->calls[k], &b->args[i], l->ttl_ms);
            k += (int)l->nparts;
        }
    }
    dlock__sched *first = dlock__sched_first(&wd->q);
    return b->n > 0 ? now : first ? first->due_ns : INT64_MAX;
}

/* Apply one renewal's verdict (c->mu held). Returns 1 if the lock was lost
 * by the server's word (its callback is still to run; it stays in flight). */
static int renewed(dlock_client *c, dlock_lock *l, int res, int64_t start)
{
    struct dlock__watchdog *wd = c->wd;
    if (res == 0) {
        atomic_store(&l->valid_until_ns, dlock__validity_end(start, l->ttl_ms));
        atomic_store(&l->renew_error, 0);
        atomic_fetch_add(&c->metrics.renewals, 1);
        dlock__log(c, DLOCK_LOG_DEBUG, "renewed %s", l->parts[0].key);
        l->inflight = 0;
        l->sched.early_ns = dlock__renew_interval_ns(l) / 4;
        dlock__sched_push(&wd->q, &l->sched, start + dlock__renew_interval_ns(l));
        return 0;
    }
    if (res == DLOCK_ENOTHELD) {
        if (dlock__watchdog_mark_lost(l, DLOCK_ENOTHELD))
            return 1;
        l->inflight = 0;
        return 0;
    }
    atomic_store(&l->renew_error, res);
    atomic_fetch_add(&c->metrics.renew_failures, 1);
    int64_t until = atomic_load(&l->valid_until_ns);
    dlock__log(
        c, DLOCK_LOG_WARN, "renewing %s failed (%s); retrying until its validity ends in %lld ms",
        l->parts[0].key, dlock_last_errmsg(), (long long)((until - dlock__now_ns()) / 1000000));
    l->inflight = 0;
    l->sched.early_ns = 0;
    dlock__sched_push(&wd->q, &l->sched, min64(dlock__now_ns() + retry_delay_ns(l), until));
    return 0;
}

/* Apply one keepalive's answers (call k of fan-out f; c->mu held): news
 * from any node wakes the waiter; the soonest change decides the next one. */
static void kept(dlock_client *c, dlock__waitreg *w, const dlock__fanout *f, int ok, int k,
                 int64_t sent_ns)
{
    int64_t now = dlock__now_ns(), next = now + (int64_t)DLOCK__KEEPALIVE_MS * 1000000;
    int bits = 0, answered = 0;
    for (int i = 0; ok && i < f->nnodes; i++) {
        const dlock__reply *r = f->rc[i] == 0 ? f->replies[i][k] : NULL;
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_INTEGER ||
            r->element[1]->type != REDIS_REPLY_INTEGER)
            continue;
        answered++;
        long long state = r->element[0]->integer, hint = r->element[1]->integer;
        if (state == DLOCK__KA_QUEUED && f->nnodes == 1 && sent_ns > atomic_load(&w->queued_ns))
            atomic_store(&w->queued_ns, sent_ns);
        bits |= state == DLOCK__KA_LEASED ? DLOCK__WN_LEASED
                : state == DLOCK__KA_LOST ? DLOCK__WN_LOST
                : state == DLOCK__KA_FREE ? DLOCK__WN_FREE
                                          : 0;
        if (hint > 0 && hint < DLOCK__KEEPALIVE_MS)
            next = min64(next, now + (hint + 1) * 1000000); /* just after the change */
    }
    if (!answered)
        next = now + (int64_t)RETRY_MIN_MS * 2 * 1000000; /* failed: again soon */
    if (bits) {
        atomic_fetch_or(&w->news, bits);
        uint64_t one = 1;
        ssize_t wr = write(w->efd, &one, sizeof one);
        (void)wr;
    }
    atomic_fetch_add(&c->metrics.keepalives, 1);
    w->inflight = 0;
    w->sched.early_ns = 0;
    dlock__sched_push(&c->wd->q, &w->sched, next);
}

/* Run the on_lost callbacks of the n locks in items, found lost by the
 * server's word, with c->mu dropped; they stay in flight until then, so
 * their release waits for the callback. Called and returns with c->mu held. */
static void run_lost_callbacks(dlock_client *c, dlock__sched **items, int n)
{
    pthread_mutex_unlock(&c->mu);
    for (int i = 0; i < n; i++) {
        dlock_lock *l = (dlock_lock *)((char *)items[i] - offsetof(dlock_lock, sched));
        if (l->on_lost)
            l->on_lost(l, l->on_lost_arg);
    }
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < n; i++)
        ((dlock_lock *)((char *)items[i] - offsetof(dlock_lock, sched)))->inflight = 0;
}

int64_t dlock__watchdog_tick(dlock_client *c, dlock__batch *b)
{
    int64_t next = collect(c, b);
    if (b->n == 0)
        return next;
    /* A round never outlasts the validity of a lock in it (a lock whose
     * validity ends must be declared lost then, not after a slow connect)
     * and gives up after half the validity left, so a failure is known
     * (renew_error) while there is still time to act, e.g. dlock run's
     * --grace; keepalives give up in half an entry's life. */
    int64_t start = dlock__now_ns(), earliest = INT64_MAX;
    for (int i = 0; i < b->n; i++)
        earliest = b->items[i]->is_waiter
                       ? min64(earliest, start + (int64_t)DLOCK__ENTRY_TTL_MS * 1000000)
                       : min64(earliest, atomic_load(&((dlock_lock *)((char *)b->items[i] -
                                                                      offsetof(dlock_lock, sched)))
                                                          ->valid_until_ns));
    int64_t budget_ms = (earliest - start) / 2000000;
    pthread_mutex_unlock(&c->mu);
    /* the WAITs (and INFOs): outside c->mu, which finding a cluster node takes */
    b->nall = b->ncalls;
    dlock__fanout_add_waits(c, b->calls, &b->nall, DLOCK__ENTRY_TTL_MS / 4, b->wait_ms,
                            b->wait_args);
    dlock__fanout f;
    int rc = dlock__fanout_run(c, b->calls, b->nall,
                               budget_ms < 1           ? 1
                               : budget_ms > INT32_MAX ? INT32_MAX
                                                       : (int)budget_ms,
                               &f);
    pthread_mutex_lock(&c->mu);

    int lost_n = 0;
    for (int i = 0, k = 0; i < b->n; i++) {
        dlock__sched *s = b->items[i];
        if (s->is_waiter) {
            dlock__waitreg *w = (dlock__waitreg *)s;
            kept(c, w, &f, rc == 0, k, start);
            k++;
            continue;
        }
        dlock_lock *l = (dlock_lock *)((char *)s - offsetof(dlock_lock, sched));
        char what[DLOCK_KEY_MAX + 16];
        snprintf(what, sizeof what, "renew %s", l->parts[0].key);
        int res = rc == DLOCK_ENOMEM ? rc
                                     : dlock__fanout_verdict_acked(c, &f, b->calls, b->nall, k,
                                                                   (int)l->nparts, what);
        k += (int)l->nparts;
        if (renewed(c, l, res, start))
            b->items[lost_n++] = s; /* keeps in-flight until its callback ran */
    }
    dlock__fanout_free(&f);
    if (lost_n)
        run_lost_callbacks(c, b->items, lost_n);
    pthread_cond_broadcast(&c->cv);
    return dlock__now_ns(); /* look again: more may be due */
}
