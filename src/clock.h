/*
 * clock.h — time sources.
 *
 * Lock validity is tracked on CLOCK_BOOTTIME, which keeps counting through a
 * suspend (CLOCK_MONOTONIC stops), so a laptop that slept past a lock's TTL
 * knows it lost the lock. All values are milliseconds or nanoseconds since
 * an unspecified origin; only differences mean anything.
 */
#ifndef DLOCK_CLOCK_H
#define DLOCK_CLOCK_H
#include <stdint.h>

int64_t dlock__now_ns(void);
static inline int64_t dlock__now_ms(void)
{
    return dlock__now_ns() / 1000000;
}

#endif
