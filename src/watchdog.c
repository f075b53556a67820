/*
 * watchdog.c — renewals and keepalives, batched (see watchdog.h).
 *
 * Scheduling. A held lock is due for renewal at renew_at = t + TTL *
 * renew_fraction (t: the send time of the request that last confirmed it)
 * and may go up to a quarter of that interval early, so locks taken at
 * about the same time travel together. A waiter is due every
 * DLOCK__KEEPALIVE_MS, or sooner when its last answer said something may
 * change earlier (a holder's TTL, a lease running out): then a keepalive is
 * what notices the change and, on the server, hands the lock on.
 *
 * Coordination with release and close: an entry being served is flagged
 * in-flight; dlock__watchdog_remove / dlock__waiter_remove wait for the
 * flag to clear before they return, so nothing is sent for a lock after its
 * release or for a waiter after it stopped waiting. Close stops the thread
 * only after every API call has left (client.c), then releases what is
 * still held in one round.
 *
 * This file is the thread, the schedule's entries and close's part; a tick
 * (what is sent, and what the answers do) is renew.c.
 */
#include "watchdog.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "calls.h"
#include "clock.h"
#include "error.h"
#include "fanout.h"
#include "renew.h"

/* Wait on client->cv until CLOCK_BOOTTIME reaches until_ns (INT64_MAX:
 * until signalled). c->mu held. */
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

static void *watchdog_main(void *arg)
{
    dlock_client *c = arg;
    dlock__batch b = { 0 };
    pthread_mutex_lock(&c->mu);
    while (!c->wd->stop) {
        int64_t next = dlock__watchdog_tick(c, &b);
        if (!c->wd->stop && next > dlock__now_ns()) {
            c->wd->wake_ns = next;
            wait_until(c, next);
            c->wd->wake_ns = INT64_MAX;
        }
    }
    pthread_mutex_unlock(&c->mu);
    dlock__batch_free(&b);
    return NULL;
}

/* ---------------------------------------------------- close's part */

/* Stop the thread, release every lock still held in one pipelined round,
 * free their handles (client->shutdown; no API call is active). */
static void shutdown_locks(dlock_client *c)
{
    struct dlock__watchdog *wd = c->wd;
    pthread_mutex_lock(&c->mu);
    wd->stop = 1;
    pthread_cond_broadcast(&c->cv);
    int started = wd->started;
    pthread_mutex_unlock(&c->mu);
    if (started)
        pthread_join(wd->thread, NULL);
    int n = 0;
    for (dlock_lock *l = wd->locks; l; l = l->next)
        n += (int)l->nparts;
    dlock__call *calls = n ? dlock__calloc((size_t)n, sizeof *calls) : NULL;
    size_t nlocks = 0;
    for (dlock_lock *l = wd->locks; l; l = l->next)
        nlocks++;
    dlock__call_args *args = nlocks ? dlock__calloc(nlocks, sizeof *args) : NULL;
    if (calls && args) {
        int i = 0;
        size_t k = 0;
        for (dlock_lock *l = wd->locks; l; l = l->next, k++) {
            dlock__calls_release(l, &calls[i], &args[k]);
            i += (int)l->nparts;
        }
        dlock__fanout f;
        dlock__fanout_run(c, calls, n, 0, &f);
        dlock__fanout_free(&f);
    }
    dlock__free(calls);
    dlock__free(args);
    while (wd->locks) {
        dlock_lock *next = wd->locks->next;
        dlock__lock_free(wd->locks);
        wd->locks = next;
    }
    dlock__sched_free(&wd->q);
    dlock__free(wd);
    c->wd = NULL;
}

/* The client's watchdog state, made on first use (c->mu held). */
static int ensure(dlock_client *c)
{
    if (c->wd)
        return 0;
    if (!(c->wd = dlock__calloc(1, sizeof *c->wd)))
        return dlock__err(DLOCK_ENOMEM, "out of memory");
    c->wd->wake_ns = INT64_MAX;
    c->shutdown = shutdown_locks;
    return 0;
}

/* Start the thread if it is not running (c->mu held). */
static int start(dlock_client *c)
{
    if (c->wd->started)
        return 0;
    int e = pthread_create(&c->wd->thread, NULL, watchdog_main, c);
    if (e != 0)
        return dlock__err(DLOCK_ESYS, "cannot start the watchdog thread: %s", strerror(e));
    c->wd->started = 1;
    return 0;
}

/* Wake the thread if `due` is before its plan (c->mu held). */
static void poke(dlock_client *c, int64_t due)
{
    if (due < c->wd->wake_ns)
        pthread_cond_broadcast(&c->cv);
}

/* ---------------------------------------------------------- the API */

int dlock__watchdog_adopt(dlock_client *c, dlock_lock *l)
{
    pthread_mutex_lock(&c->mu);
    int rc = c->closing ? dlock__err(DLOCK_ECLOSED, "the client was closed while acquiring %s",
                                     l->parts[0].key)
                        : ensure(c);
    if (rc == 0 && l->auto_renew)
        rc = start(c);
    if (rc == 0 && l->auto_renew && (rc = dlock__sched_reserve(&c->wd->q)) == 0) {
        l->sched.is_waiter = 0;
        l->sched.early_ns = dlock__renew_interval_ns(l) / 4;
        dlock__sched_push(&c->wd->q, &l->sched, l->sched.due_ns);
        poke(c, l->sched.due_ns);
    }
    if (rc == 0) {
        l->prev = NULL;
        l->next = c->wd->locks;
        if (c->wd->locks)
            c->wd->locks->prev = l;
        c->wd->locks = l;
        l->linked = 1;
        if (--c->active == 0 && c->closing)
            pthread_cond_broadcast(&c->idle_cv);
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

void dlock__watchdog_remove(dlock_client *c, dlock_lock *l)
{
    pthread_mutex_lock(&c->mu);
    while (l->inflight)
        pthread_cond_wait(&c->cv, &c->mu);
    if (l->linked && l->auto_renew) {
        dlock__sched_remove(&c->wd->q, &l->sched);
        dlock__sched_unreserve(&c->wd->q);
    }
    if (l->linked) {
        if (l->prev)
            l->prev->next = l->next;
        else
            c->wd->locks = l->next;
        if (l->next)
            l->next->prev = l->prev;
        l->prev = l->next = NULL;
        l->linked = 0;
    }
    pthread_mutex_unlock(&c->mu);
}

void dlock__watchdog_suspend(dlock_client *c, dlock_lock *l)
{
    pthread_mutex_lock(&c->mu);
    while (l->inflight)
        pthread_cond_wait(&c->cv, &c->mu);
    if (c->wd && l->linked && l->auto_renew)
        dlock__sched_remove(&c->wd->q, &l->sched);
    pthread_mutex_unlock(&c->mu);
}

void dlock__watchdog_replan(dlock_client *c, dlock_lock *l, int64_t renew_at_ns)
{
    pthread_mutex_lock(&c->mu);
    if (c->wd && l->linked && l->auto_renew && atomic_load(&l->state) == DLOCK__HELD) {
        dlock__sched_remove(&c->wd->q, &l->sched);
        l->sched.early_ns = dlock__renew_interval_ns(l) / 4;
        dlock__sched_push(&c->wd->q, &l->sched, renew_at_ns);
        poke(c, renew_at_ns);
    }
    pthread_mutex_unlock(&c->mu);
}

dlock_lock *dlock__watchdog_rehold(dlock_client *c, int kind, const char *key)
{
    dlock_lock *found = NULL;
    int64_t now = dlock__now_ns();
    pthread_mutex_lock(&c->mu);
    for (dlock_lock *l = c->wd ? c->wd->locks : NULL; l && !found; l = l->next)
        if (l->reentrant && l->kind == kind && l->nparts == 1 &&
            pthread_equal(l->thread, pthread_self()) && strcmp(l->parts[0].key, key) == 0 &&
            atomic_load(&l->state) == DLOCK__HELD && now < atomic_load(&l->valid_until_ns)) {
            l->holds++;
            found = l;
        }
    pthread_mutex_unlock(&c->mu);
    return found;
}

int dlock__watchdog_on_thread(dlock_client *c)
{
    pthread_mutex_lock(&c->mu);
    int on = c->wd && c->wd->started && pthread_equal(pthread_self(), c->wd->thread);
    pthread_mutex_unlock(&c->mu);
    return on;
}

int dlock__watchdog_mark_lost(dlock_lock *l, int why)
{
    int expect = DLOCK__HELD;
    atomic_store(&l->renew_error, why);
    if (!atomic_compare_exchange_strong(&l->state, &expect, DLOCK__LOST))
        return 0;
    atomic_fetch_add(&l->client->metrics.lost, 1);
    dlock__log(l->client, DLOCK_LOG_ERROR, "lock %s lost: %s", l->parts[0].key,
               why == DLOCK_ENOTHELD ? "the server says it is no longer ours"
                                     : "renewal could not confirm it before its validity ran out");
    return 1;
}

int dlock__waiter_add(dlock_client *c, dlock__waitreg *w, int64_t due_ns)
{
    pthread_mutex_lock(&c->mu);
    int rc = c->closing ? dlock__err(DLOCK_ECLOSED, "the client was closed") : ensure(c);
    if (rc == 0)
        rc = start(c);
    if (rc == 0 && !w->linked && (rc = dlock__sched_reserve(&c->wd->q)) == 0) {
        w->sched.is_waiter = 1;
        w->sched.early_ns = 0;
        dlock__sched_push(&c->wd->q, &w->sched, due_ns);
        w->linked = 1;
        poke(c, due_ns);
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

void dlock__waiter_remove(dlock_client *c, dlock__waitreg *w)
{
    pthread_mutex_lock(&c->mu);
    while (w->inflight)
        pthread_cond_wait(&c->cv, &c->mu);
    if (w->linked) {
        dlock__sched_remove(&c->wd->q, &w->sched);
        dlock__sched_unreserve(&c->wd->q);
    }
    w->linked = 0;
    pthread_mutex_unlock(&c->mu);
}

int64_t dlock__watchdog_held_now(dlock_client *c)
{
    int64_t n = 0, now = dlock__now_ns();
    pthread_mutex_lock(&c->mu);
    for (dlock_lock *l = c->wd ? c->wd->locks : NULL; l; l = l->next)
        if (atomic_load(&l->state) == DLOCK__HELD && now < atomic_load(&l->valid_until_ns))
            n++;
    pthread_mutex_unlock(&c->mu);
    return n;
}
