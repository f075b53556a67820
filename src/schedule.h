/*
 * schedule.h — the watchdog's schedule: a binary min-heap of entries by due
 * time, with O(log n) removal of any entry.
 *
 * Entries are embedded in what they schedule (a held lock, a waiter) and
 * know their own position, so removing one needs no search. Room is
 * reserved when an entry is registered (dlock__sched_reserve), not when it
 * is pushed: an entry taken out to be served always goes back without
 * allocating. Not thread-safe: the caller holds the client's mutex.
 */
#ifndef DLOCK_SCHEDULE_H
#define DLOCK_SCHEDULE_H
#include <stddef.h>
#include <stdint.h>

/* An entry in the schedule. */
typedef struct dlock__sched {
    int64_t due_ns;
    int64_t early_ns; /* may be served this much before due, to batch */
    size_t idx;       /* position in the heap; (size_t)-1 when not in it */
    int is_waiter;
} dlock__sched;

typedef struct dlock__schedule {
    dlock__sched **heap; /* min-heap by due_ns */
    size_t n, cap;
    size_t members; /* registered entries, in the heap or being served */
} dlock__schedule;

/* Registers one more entry: makes room for it. Returns 0 or DLOCK_ENOMEM. */
int dlock__sched_reserve(dlock__schedule *q);

/* Unregisters an entry (already removed from the heap). */
void dlock__sched_unreserve(dlock__schedule *q);

/* Puts registered entry s (not in the heap) in, due at due_ns. */
void dlock__sched_push(dlock__schedule *q, dlock__sched *s, int64_t due_ns);

/* Takes s out of the heap; nothing if it is not in it. */
void dlock__sched_remove(dlock__schedule *q, dlock__sched *s);

/* The entry due first, or NULL if the heap is empty. */
dlock__sched *dlock__sched_first(const dlock__schedule *q);

/* Frees the heap's memory (not the entries). */
void dlock__sched_free(dlock__schedule *q);

#endif
