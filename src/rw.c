/*
 * rw.c — read-write locks. The write side is the key's mutex itself; the
 * read side is an entry in the key's HOLDERS set, taken only while no
 * writer holds and nobody is queued ahead (read_acquire.lua), so writers
 * are never starved; a run of queued readers is admitted together.
 */
#include "acquire.h"
#include "error.h"

int dlock_rw_acquire(dlock_lock **out, dlock_client *client, const char *key, int mode,
                     const dlock_lock_opts *opts)
{
    dlock_lock_opts o;
    int rc = dlock__acquire_check(out, client, &o, opts);
    if (rc == 0)
        rc = dlock__key_check(key);
    if (rc == 0 && mode != DLOCK_READ && mode != DLOCK_WRITE)
        rc = dlock__err(DLOCK_EINVAL, "mode must be DLOCK_READ or DLOCK_WRITE (got %d)", mode);
    if (rc)
        return rc;
    return dlock__acquire(out, client, mode == DLOCK_READ ? DLOCK__KIND_READ : DLOCK__KIND_MUTEX,
                          &key, 1, 0, 1, &o);
}
