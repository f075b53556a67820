/*
 * lock.h — the inside of dlock_lock: one handle for every kind of lock.
 *
 * A handle holds one or more parts (user keys with their Redis key groups
 * and fencing tokens: several for a multi-lock) and a kind, which picks the
 * scripts. It is created not yet held (acquire.c), becomes held by a grant
 * (grant.c) or a handoff (wait.c), is kept alive by the watchdog, and ends
 * in dlock_release (lock.c) or at close.
 *
 * Fields read by dlock_is_held() from any thread (state, valid_until_ns,
 * renew_error) are atomics; the watchdog's bookkeeping is under client->mu.
 */
#ifndef DLOCK_LOCK_H
#define DLOCK_LOCK_H
#include <stdatomic.h>
#include <stdint.h>

#include "client.h"
#include "keys.h"
#include "schedule.h"

enum { DLOCK__KIND_MUTEX, DLOCK__KIND_READ, DLOCK__KIND_SEM, DLOCK__KIND_MULTI };
enum { DLOCK__NEW = 0, DLOCK__HELD = 1, DLOCK__LOST = 2, DLOCK__RELEASED = 3 };

#define DLOCK__TTL_MIN_MS 10
#define DLOCK__LIMIT_MAX 100000

typedef struct dlock__part {
    char *key;    /* user key */
    char **names; /* its key group (points into the handle's names[]) */
    uint64_t fence;
} dlock__part;

struct dlock_lock {
    dlock_client *client;
    int kind;                 /* DLOCK__KIND_* */
    int family;               /* DLOCK__FAM_* */
    int limit, permits, slot; /* semaphore */
    int fair;
    size_t nparts;
    dlock__part *parts;
    char **names; /* nparts key groups, back to back: KEYS of a multi call */
    int nnames;
    char token[DLOCK__TOKEN_LEN + 1];
    int64_t ttl_ms; /* under client->mu once linked */
    int64_t acquired_ns;
    int auto_renew;
    int reentrant;
    int holds;        /* reentrant holds (1 otherwise); the owning thread's */
    pthread_t thread; /* the thread that acquired it (reentrancy) */
    double renew_fraction;
    dlock_lost_fn on_lost;
    void *on_lost_arg;

    atomic_int state;
    atomic_int_fast64_t valid_until_ns; /* CLOCK_BOOTTIME */
    atomic_int renew_error;

    /* watchdog bookkeeping, under client->mu */
    dlock__sched sched;
    int inflight; /* the watchdog is using this lock right now */
    int linked;   /* in the client's list of held locks */
    dlock_lock *prev, *next;
};

/* A new handle of `kind` for keys[0..n) (validated, no duplicates), not
 * held yet, with a fresh token. 0, DLOCK_ENOMEM, DLOCK_ESYS (no randomness). */
int dlock__lock_new(dlock_lock **out, dlock_client *c, int kind, const char *const *keys, size_t n,
                    const dlock_lock_opts *o);
void dlock__lock_free(dlock_lock *l);

/* Validity left for a lock confirmed by a request sent at start_ns:
 * start + ttl - drift (1% of the TTL + 2 ms, as in Redlock). */
int64_t dlock__validity_end(int64_t start_ns, int64_t ttl_ms);

/* Mark l held from a request sent at start_ns with TTL ttl_ms; renewal
 * planned after renew_fraction of it. */
void dlock__lock_set_held(dlock_lock *l, int64_t start_ns, int64_t valid_until_ns);

#endif
