/*
 * alloc.c — allocation wrappers with failure injection (see alloc.h).
 *
 * The countdown is a process-wide atomic so that the watchdog thread's
 * allocations count too; when injection is off the cost is one relaxed load.
 */
#include "alloc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static atomic_long fail_after = -1; /* < 0: never fail */
static atomic_long alloc_count = 0;

/* One allocation attempt is about to happen: 1 if it must fail. Exactly
 * one allocation fails (the countdown's), so the paths that recover from a
 * failure and go on are exercised too. */
static int should_fail(void)
{
    atomic_fetch_add_explicit(&alloc_count, 1, memory_order_relaxed);
    long left = atomic_load_explicit(&fail_after, memory_order_relaxed);
    if (left < 0)
        return 0;
    return atomic_fetch_sub_explicit(&fail_after, 1, memory_order_relaxed) == 0;
}

long dlock__alloc_fail_after(long n)
{
    long made = atomic_exchange(&alloc_count, 0);
    atomic_store(&fail_after, n);
    return made;
}

void *dlock__malloc(size_t n)
{
    return should_fail() ? NULL : malloc(n ? n : 1);
}

void *dlock__calloc(size_t n, size_t size)
{
    return should_fail() ? NULL : calloc(n ? n : 1, size ? size : 1);
}

void *dlock__realloc(void *p, size_t n)
{
    return should_fail() ? NULL : realloc(p, n ? n : 1);
}

void dlock__free(void *p)
{
    free(p);
}

char *dlock__strndup(const char *s, size_t n)
{
    char *d = dlock__malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

char *dlock__strdup(const char *s)
{
    return dlock__strndup(s, strlen(s));
}
