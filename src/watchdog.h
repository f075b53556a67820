/*
 * watchdog.h — one thread per client that keeps things alive: held locks
 * (renewal) and waiting handles (their queue entries, the keepalive).
 *
 * Both kinds of work sit in one schedule (a binary heap by due time, so a
 * client holding 100k locks pays O(log n) per change, never a scan) and
 * are served together: every tick sends the renewals and keepalives that
 * are due — or nearly due, to batch them — in ONE pipelined round per
 * node. A renewal that fails with a transport error is retried until the
 * lock's validity instant; then the lock is marked lost and its on_lost
 * callback runs on the watchdog thread. A reply saying the lock is not
 * ours any more marks it lost at once. A keepalive's answer that needs the
 * waiter's attention (handed the lock, lost its place, lock free) is
 * passed to the waiting thread through its eventfd.
 *
 * The watchdog also owns the client's list of held locks, which close
 * releases (it installs client->shutdown when first used).
 */
#ifndef DLOCK_WATCHDOG_H
#define DLOCK_WATCHDOG_H
#include "lock.h"

/* What a keepalive told a waiter (bits in dlock__waitreg.news). */
enum { DLOCK__WN_LEASED = 1, DLOCK__WN_LOST = 2, DLOCK__WN_FREE = 4 };

/* A waiting handle registered for keepalive (lives on the waiting thread's
 * stack while registered). */
typedef struct dlock__waitreg {
    dlock__sched sched; /* first: the schedule points here */
    dlock_lock *lock;
    int watching;    /* an unqueued watcher (unfair waiter, leader watcher) */
    int efd;         /* written when news arrives */
    atomic_int news; /* DLOCK__WN_* bits, taken by the waiter */
    /* send time of the latest keepalive that found it still queued: nothing was handed to it before
     * then (wait.c) */
    atomic_int_fast64_t queued_ns;
    int inflight; /* under client->mu: a keepalive for it is on the wire */
    int linked;   /* under client->mu: in the schedule */
} dlock__waitreg;

/* Adopt a freshly acquired lock: link it into the client's held list (and
 * the renewal schedule if auto-renewed) AND leave the API call, in one step
 * under client->mu. If the client is closing, does neither and returns
 * DLOCK_ECLOSED: the caller gives the lock back, then leaves. Returns 0,
 * DLOCK_ECLOSED or DLOCK_ESYS (the thread could not start; not linked,
 * still inside the call). */
int dlock__watchdog_adopt(dlock_client *c, dlock_lock *l);

/* Unlink a lock before its release; waits out a renewal in flight, so no
 * renewal is ever sent after (or races with) the release. */
void dlock__watchdog_remove(dlock_client *c, dlock_lock *l);

/* Take a held lock out of the renewal schedule for a change the caller
 * makes (dlock_extend, dlock_rw_downgrade): waits out a renewal in flight.
 * dlock__watchdog_replan puts it back, due at renew_at_ns. */
void dlock__watchdog_suspend(dlock_client *c, dlock_lock *l);
void dlock__watchdog_replan(dlock_client *c, dlock_lock *l, int64_t renew_at_ns);

/* A reentrant handle of `kind` on `key` that the calling thread holds
 * through c (held and valid): its hold count is raised and it is returned.
 * NULL if there is none. */
dlock_lock *dlock__watchdog_rehold(dlock_client *c, int kind, const char *key);

/* 1 if the calling thread is c's watchdog thread (an on_lost callback). */
int dlock__watchdog_on_thread(dlock_client *c);

/* Mark a lock lost once (why: the error that made it so); returns 1 if
 * this call made the transition (the caller then runs on_lost). */
int dlock__watchdog_mark_lost(dlock_lock *l, int why);

/* Register a waiter for keepalive, first due at due_ns (starts the thread
 * on first use). 0, DLOCK_ECLOSED, DLOCK_ESYS. */
int dlock__waiter_add(dlock_client *c, dlock__waitreg *w, int64_t due_ns);

/* Unregister it; waits out a keepalive in flight, so none runs after. */
void dlock__waiter_remove(dlock_client *c, dlock__waitreg *w);

/* Locks held now: linked, not lost, validity not passed. */
int64_t dlock__watchdog_held_now(dlock_client *c);

#endif
