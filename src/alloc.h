/*
 * alloc.h — the library's allocator.
 *
 * Every allocation in libdlock goes through these wrappers so that tests can
 * make the Nth allocation fail (curl's torture mode, SQLite's OOM tests) and
 * prove that each out-of-memory path returns DLOCK_ENOMEM without a leak or a
 * crash. In normal use they are plain malloc/calloc/realloc/free.
 */
#ifndef DLOCK_ALLOC_H
#define DLOCK_ALLOC_H
#include <stddef.h>

void *dlock__malloc(size_t n);
void *dlock__calloc(size_t n, size_t size);
void *dlock__realloc(void *p, size_t n);
void dlock__free(void *p);
char *dlock__strdup(const char *s);
char *dlock__strndup(const char *s, size_t n);

/* Test hook: after `n` more successful allocations, the next one fails
 * (only that one; n < 0 turns failure injection off). Returns how many
 * allocations were made since the last call (for enumerating failure
 * points). Process-wide. */
long dlock__alloc_fail_after(long n);

#endif
