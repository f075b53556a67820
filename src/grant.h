/*
 * grant.h — one acquire round trip for a handle: the request (the kind's
 * script), the verdict (on every Redlock master: a quorum), the fencing
 * token, the local validity; and giving back what an attempt may have
 * taken.
 */
#ifndef DLOCK_GRANT_H
#define DLOCK_GRANT_H
#include "lock.h"

typedef struct dlock__attempt {
    int mode;        /* in: DLOCK__MODE_* */
    int64_t max_ms;  /* in: time budget of the round trip (<= 0: default) */
    int64_t sent_ns; /* out: when the request was sent */
    int64_t hint_ms; /* out, busy: ms until the lock may change (0: unknown) */
    /* out: a node did not answer: it may have granted or queued us (give back if not going on) */
    int unknown;
    /* out: granted, but not acknowledged by enough replicas (given back): a failed attempt to retry */
    int unacked;
} dlock__attempt;

/* One attempt. Returns 0 (held: fencing tokens, slot and validity set, the
 * validity counted from the send), DLOCK_EBUSY, DLOCK_EINVAL (a semaphore
 * limit conflict, the message names both limits), or a transport error
 * (DLOCK_ECONN, DLOCK_EQUORUM, DLOCK_EAUTH for an ACL denial, DLOCK_EPROTO,
 * DLOCK_ENOMEM). A Redlock minority grant, or a grant that arrived too late
 * to be valid, is given back before it returns. */
int dlock__grant_attempt(dlock_lock *l, dlock__attempt *a);

/* Give back whatever l may hold or be queued for, on every node, within
 * max_ms (a release that finds nothing is harmless). Keeps the calling
 * thread's error message. */
void dlock__grant_giveback(dlock_lock *l, int64_t max_ms);

#endif
