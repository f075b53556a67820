/*
 * watchdog.c — one thread per client that keeps auto-renewed locks alive.
 *
 * Every lock has a renewal instant (acquired/renewed at t: t + TTL *
 * renew_fraction). The thread sleeps until the earliest one, then renews
 * every lock that is due — or nearly due, within a quarter of its own renewal
 * interval, so locks taken at about the same time travel together — in ONE
 * pipelined round trip, however many there are. A renewal that fails with a
 * transport error is retried at short intervals until the lock's validity
 * instant; then the lock is marked lost and its on_lost callback runs here,
 * on the watchdog thread. A reply saying the lock is no longer ours marks it
 * lost at once.
 *
 * Release and close coordinate through client->mu and lock->inflight: a lock
 * being renewed is flagged, and dlock_release() waits for the flag to clear
 * before it unlinks the lock and sends its delete, so no renewal is ever sent
 * after (or races with) a release.
 */
#include <hiredis/hiredis.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "client.h"
#include "clock.h"
#include "error.h"

#define RETRY_MIN_MS 20

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}
#define RETRY_MAX_MS 500

/* Wait on client->cv until CLOCK_BOOTTIME reaches until_ns (INT64_MAX:
 * until signalled). Called with client->mu held. */
static void wait_until(dlock_client *c, int64_t until_ns)
{
    if (until_ns == INT64_MAX) {
        pthread_cond_wait(&c->cv, &c->mu);
        return;
    }
    int64_t delta = until_ns - dlock__now_ns();
    if (delta <= 0)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t ns = ts.tv_nsec + delta % 1000000000;
    ts.tv_sec += (time_t)(delta / 1000000000 + ns / 1000000000);
    ts.tv_nsec = (long)(ns % 1000000000);
    pthread_cond_timedwait(&c->cv, &c->mu, &ts);
}

/* How long to wait before retrying a failed renewal. */
static int64_t retry_delay_ns(const dlock_lock *l)
{
    int64_t ms = l->ttl_ms / 10;
    if (ms < RETRY_MIN_MS)
        ms = RETRY_MIN_MS;
    if (ms > RETRY_MAX_MS)
        ms = RETRY_MAX_MS;
    return ms * 1000000;
}

/* One tick's work: the locks being renewed (n, with their ttl as text),
 * and their calls (ncalls: one per part; a multi-lock has several). */
typedef struct batch {
    dlock_lock **locks;
    char (*ttls)[24];
    int n, cap;
    dlock__call *calls;
    const char **args;
    int ncalls, callcap;
} batch;

static void batch_free(batch *b)
{
    dlock__free(b->locks);
    dlock__free(b->ttls);
    dlock__free(b->calls);
    dlock__free(b->args);
}

/* Make room for one more lock of `parts` parts; 0 or DLOCK_ENOMEM. */
static int batch_grow(batch *b, int parts)
{
    if (b->n == b->cap) {
        int cap = b->cap ? b->cap * 2 : 64;
        dlock_lock **locks = dlock__realloc(b->locks, (size_t)cap * sizeof *locks);
        if (locks)
            b->locks = locks;
        char(*ttls)[24] = dlock__realloc(b->ttls, (size_t)cap * sizeof *ttls);
        if (ttls)
            b->ttls = ttls;
        if (!locks || !ttls)
            return DLOCK_ENOMEM;
        b->cap = cap;
    }
    if (b->ncalls + parts > b->callcap) {
        int cap = b->callcap ? b->callcap : 64;
        while (cap < b->ncalls + parts)
            cap *= 2;
        dlock__call *calls = dlock__realloc(b->calls, (size_t)cap * sizeof *calls);
        if (calls)
            b->calls = calls;
        const char **args = dlock__realloc(b->args, (size_t)cap * 2 * sizeof *args);
        if (args)
            b->args = args;
        if (!calls || !args)
            return DLOCK_ENOMEM;
        b->callcap = cap;
    }
    return 0;
}

/* Renew the due locks of one tick. Called and returns with c->mu held;
 * drops it for the round trip and the callbacks. Returns the next instant
 * at which something is due (INT64_MAX: nothing scheduled). */
static int64_t tick(dlock_client *c, batch *b)
{
    int64_t now = dlock__now_ns(), next = INT64_MAX;
    b->n = 0;
    b->ncalls = 0;
    for (dlock_lock *l = c->locks; l; l = l->next) {
        if (!l->auto_renew || atomic_load(&l->state) != DLOCK__HELD)
            continue;
        int64_t interval = (int64_t)((double)l->ttl_ms * l->renew_fraction * 1e6);
        if (l->renew_at_ns - interval / 4 > now) {
            if (l->renew_at_ns < next)
                next = l->renew_at_ns;
            continue;
        }
        if (now >= atomic_load(&l->valid_until_ns)) {
            /* validity ran out while renewals kept failing */
            if (dlock__lock_mark_lost(l, atomic_load(&l->renew_error) ? atomic_load(&l->renew_error)
                                                                       : DLOCK_ETIMEDOUT)) {
                l->inflight = 1;
                pthread_mutex_unlock(&c->mu);
                if (l->on_lost)
                    l->on_lost(l, l->on_lost_arg);
                pthread_mutex_lock(&c->mu);
                l->inflight = 0;
                pthread_cond_broadcast(&c->cv);
            }
            return dlock__now_ns(); /* the list may have changed: rescan */
        }
        if (batch_grow(b, (int)l->nparts) != 0) {
            next = now + (int64_t)RETRY_MIN_MS * 1000000; /* try again soon */
            break;
        }
        snprintf(b->ttls[b->n], sizeof b->ttls[0], "%lld", (long long)l->ttl_ms);
        b->locks[b->n++] = l;
        b->ncalls += (int)l->nparts;
        l->inflight = 1;
    }
    if (b->n == 0)
        return next;
    /* the arrays are final now: calls may point into them */
    int64_t earliest_end = INT64_MAX;
    for (int i = 0, k = 0; i < b->n; i++) {
        dlock_lock *l = b->locks[i];
        dlock__lock_extend_calls(l, &b->calls[k], &b->args[2 * k], b->ttls[i]);
        k += (int)l->nparts;
        earliest_end = min64(earliest_end, atomic_load(&l->valid_until_ns));
    }

    pthread_mutex_unlock(&c->mu);
    /* Never let one round outlast the validity of a lock in it (a lock whose
     * validity ends must be declared lost then, not after a slow connect),
     * and give up after half the validity left, so that a failure is known
     * (renew_error) while there is still time to act on it, e.g. dlock run's
     * --grace. */
    int64_t start = dlock__now_ns();
    int64_t budget_ms = (earliest_end - start) / 2000000;
    dlock__fanout f;
    int rc = dlock__fanout_run(c, b->calls, b->ncalls,
                               budget_ms < 1 ? 1 : budget_ms > INT32_MAX ? INT32_MAX : (int)budget_ms, &f);
    pthread_mutex_lock(&c->mu);

    int lost_n = 0;
    for (int i = 0, k = 0; i < b->n; i++) {
        dlock_lock *l = b->locks[i];
        /* a lock with several parts is renewed only if every part was, on a
         * quorum of nodes */
        char what[DLOCK_KEY_MAX + 16];
        snprintf(what, sizeof what, "renew %s", l->parts[0].key);
        int res = rc == DLOCK_ENOMEM ? rc : dlock__fanout_verdict(c, &f, k, (int)l->nparts, what);
        k += (int)l->nparts;
        int mine = res != DLOCK_ENOTHELD;
        if (res == DLOCK_ENOTHELD)
            res = 0;
        if (res == 0 && mine) {
            atomic_store(&l->valid_until_ns, dlock__validity_end(start, l->ttl_ms));
            l->renew_at_ns = start + (int64_t)((double)l->ttl_ms * l->renew_fraction * 1e6);
            atomic_store(&l->renew_error, 0);
            atomic_fetch_add(&c->metrics.renewals, 1);
            l->inflight = 0;
        } else if (res == 0) {
            /* the server says it is not ours any more */
            if (dlock__lock_mark_lost(l, DLOCK_ENOTHELD))
                b->locks[lost_n++] = l; /* keeps inflight until its callback ran */
            else
                l->inflight = 0;
        } else {
            atomic_store(&l->renew_error, res);
            atomic_fetch_add(&c->metrics.renew_failures, 1);
            int64_t at = dlock__now_ns() + retry_delay_ns(l);
            int64_t until = atomic_load(&l->valid_until_ns);
            dlock__log(c, DLOCK_LOG_WARN, "renewing %s failed (%s); retrying until its validity ends in %lld ms",
                       l->parts[0].key, dlock_last_errmsg(), (long long)((until - dlock__now_ns()) / 1000000));
            l->renew_at_ns = at < until ? at : until;
            l->inflight = 0;
        }
    }
    dlock__fanout_free(&f);
    pthread_mutex_unlock(&c->mu);
    for (int i = 0; i < lost_n; i++)
        if (b->locks[i]->on_lost)
            b->locks[i]->on_lost(b->locks[i], b->locks[i]->on_lost_arg);
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < lost_n; i++)
        b->locks[i]->inflight = 0;
    pthread_cond_broadcast(&c->cv);
    return dlock__now_ns(); /* rescan */
}

static void *watchdog_main(void *arg)
{
    dlock_client *c = arg;
    batch b = {0};
    pthread_mutex_lock(&c->mu);
    while (!c->closing) {
        int64_t next = tick(c, &b);
        if (!c->closing && next > dlock__now_ns()) {
            c->wd_wake_ns = next;
            wait_until(c, next);
            c->wd_wake_ns = INT64_MAX;
        }
    }
    pthread_mutex_unlock(&c->mu);
    batch_free(&b);
    return NULL;
}

int dlock__watchdog_add(dlock_client *c, dlock_lock *l)
{
    int rc = 0;
    pthread_mutex_lock(&c->mu);
    if (l->auto_renew && !c->watchdog_started) {
        if (pthread_create(&c->watchdog, NULL, watchdog_main, c) != 0)
            rc = dlock__err(DLOCK_ENOMEM, "cannot start the watchdog thread");
        else
            c->watchdog_started = 1;
    }
    if (rc == 0) {
        l->prev = NULL;
        l->next = c->locks;
        if (c->locks)
            c->locks->prev = l;
        c->locks = l;
        l->linked = 1;
        /* wake the watchdog only if this lock is due before its plan */
        if (l->auto_renew && l->renew_at_ns < c->wd_wake_ns)
            pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

void dlock__watchdog_remove(dlock_client *c, dlock_lock *l)
{
    pthread_mutex_lock(&c->mu);
    while (l->inflight)
        pthread_cond_wait(&c->cv, &c->mu);
    if (l->linked) {
        if (l->prev)
            l->prev->next = l->next;
        else
            c->locks = l->next;
        if (l->next)
            l->next->prev = l->prev;
        l->prev = l->next = NULL;
        l->linked = 0;
    }
    pthread_mutex_unlock(&c->mu);
}

void dlock__watchdog_stop(dlock_client *c)
{
    pthread_mutex_lock(&c->mu);
    int started = c->watchdog_started;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    if (started)
        pthread_join(c->watchdog, NULL);
    pthread_mutex_lock(&c->mu);
    c->watchdog_started = 0;
    pthread_mutex_unlock(&c->mu);
}
