/* clock.c — CLOCK_BOOTTIME reader (see clock.h). */
#include "clock.h"

#include <time.h>

int64_t dlock__now_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_BOOTTIME, &ts) != 0)
        clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
