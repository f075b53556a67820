/* cancel.h — the inside of dlock_cancel (see cancel.c). */
#ifndef DLOCK_CANCEL_H
#define DLOCK_CANCEL_H
#include <stdatomic.h>

#include "dlock.h"

struct dlock_cancel {
    int fd; /* eventfd: readable once triggered */
    atomic_int triggered;
};

#endif
