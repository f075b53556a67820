/*
 * wait.h — waiting for a lock after a first attempt found it busy, and the
 * one "sleep until something happens" helper every wait uses.
 */
#ifndef DLOCK_WAIT_H
#define DLOCK_WAIT_H
#include "grant.h"

/* Wait for l until `deadline` (CLOCK_BOOTTIME ns; INT64_MAX: forever)
 * after the attempt `first` said busy. Returns 0 (held), DLOCK_ETIMEDOUT,
 * DLOCK_ECANCELED, DLOCK_ECLOSED, DLOCK_EINVAL (a semaphore limit
 * conflict), DLOCK_EAUTH, DLOCK_ENOMEM or DLOCK_ESYS. Transport failures
 * while waiting are retried until the deadline. Anything but 0 leaves
 * nothing behind: l's queue entries, watch entries and any lease it was
 * handed are given back (bounded in time). */
int dlock__wait(dlock_lock *l, const dlock_lock_opts *o, int64_t deadline,
                const dlock__attempt *first);

/* What woke a dlock__sleep. */
enum {
    DLOCK__WOKE_TIMER = 0,  /* `until` was reached */
    DLOCK__WOKE_FD = 1,     /* fd (the caller's) became readable */
    DLOCK__WOKE_NEWS = 2,   /* the news eventfd became readable */
    DLOCK__WOKE_CLOSED = 3, /* the client is closing */
    DLOCK__WOKE_CANCEL = 4  /* the cancel token fired */
};

/* Sleep until `until` (CLOCK_BOOTTIME ns; INT64_MAX: no limit), fd (-1:
 * none) or news_fd (-1: none) is readable, the client closes, or cancel
 * (NULL: none) fires. Close and cancel win over everything else. Returns a
 * DLOCK__WOKE_* value, or DLOCK_ESYS if poll failed. */
int dlock__sleep(dlock_client *c, int64_t until, int fd, int news_fd, dlock_cancel *cancel);

#endif
