/*
 * renew.h — one tick of the watchdog (renew.c), for watchdog.c alone: the
 * watchdog's state, the batch a tick fills, and the tick itself.
 */
#ifndef DLOCK_RENEW_H
#define DLOCK_RENEW_H

#include <pthread.h>

#include "calls.h"
#include "lock.h"
#include "schedule.h"

/* The watchdog of one client (client->wd), under client->mu. */
struct dlock__watchdog {
    pthread_t thread;
    int started, stop;
    int64_t wake_ns;   /* when the thread plans to wake (INT64_MAX: when told) */
    dlock__schedule q; /* renewals and keepalives by due time */
    dlock_lock *locks; /* every held lock, renewed or not */
};

/* One tick's work: the entries served and their calls (kept between
 * ticks by the watchdog thread, so the arrays are reused). */
typedef struct dlock__batch {
    dlock__sched **items;
    dlock__call_args *args; /* one per item */
    dlock__call *calls;
    int n, ncalls, cap, callcap;
    int nall; /* ncalls and the WAITs after them */
    char wait_ms[24];
    const char *wait_args[1];
} dlock__batch;

void dlock__batch_free(dlock__batch *b);

/* Serve the due entries: take them out of the schedule, send their
 * renewals and keepalives in one pipelined round per node (with the WAITs
 * a replicated node needs), apply the answers, put each entry back at its
 * next due time and run the callbacks of locks found lost. Called and
 * returns with c->mu held; drops it for the round trip and the callbacks.
 * Returns when to look again (INT64_MAX: when told). */
int64_t dlock__watchdog_tick(dlock_client *c, dlock__batch *b);

/* How long after a confirmation a held lock is due for renewal. */
int64_t dlock__renew_interval_ns(const dlock_lock *l);

#endif
