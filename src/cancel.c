/*
 * cancel.c — cancel tokens for blocked acquisitions.
 *
 * A token is an eventfd plus a flag. Waiting code polls the eventfd together
 * with its other wake-up sources, so a trigger from any thread ends the wait
 * at once; the flag makes the answer sticky and cheap to check.
 */
#include "cancel.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"

int dlock_cancel_new(dlock_cancel **out)
{
    if (!out)
        return dlock__err(DLOCK_EINVAL, "out is NULL");
    *out = NULL;
    dlock_cancel *c = dlock__calloc(1, sizeof *c);
    if (!c)
        return dlock__err(DLOCK_ENOMEM, "out of memory");
    c->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (c->fd < 0) {
        int e = errno;
        dlock__free(c);
        return dlock__err(DLOCK_ENOMEM, "eventfd: %s", strerror(e));
    }
    *out = c;
    return 0;
}

void dlock_cancel_trigger(dlock_cancel *c)
{
    if (!c)
        return;
    if (!atomic_exchange(&c->triggered, 1)) {
        uint64_t one = 1;
        ssize_t w = write(c->fd, &one, sizeof one);
        (void)w;
    }
}

void dlock_cancel_free(dlock_cancel *c)
{
    if (!c)
        return;
    close(c->fd);
    dlock__free(c);
}
