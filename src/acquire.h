/*
 * acquire.h — the acquire family's common path, used by every pattern's
 * entry points (acquire.c: mutex; rw.c, semaphore.c, multi.c, election.c).
 */
#ifndef DLOCK_ACQUIRE_H
#define DLOCK_ACQUIRE_H
#include "lock.h"

/* Check the arguments every acquire takes: out, client, options (NULL:
 * defaults) copied into *o. 0 or DLOCK_EINVAL. */
int dlock__acquire_check(dlock_lock **out, dlock_client *client, dlock_lock_opts *o,
                         const dlock_lock_opts *opts);

/* Acquire a new handle of `kind` on keys[0..n) (validated, no duplicates)
 * with validated options: one attempt, then waiting (wait.c) as o says.
 * On success *out is held, auto-renewed if asked, and linked to the client. */
int dlock__acquire(dlock_lock **out, dlock_client *c, int kind, const char *const *keys, size_t n,
                   int limit, int permits, const dlock_lock_opts *o);

#endif
