/*
 * metrics.h — per-client metrics, always on.
 *
 * Every counter is an atomic updated with a relaxed add, so recording costs
 * a few nanoseconds and takes no lock. Histograms keep one counter per
 * bucket (not cumulative) plus a count and a sum; snapshots make them
 * cumulative. Optional per-key-prefix classes are a fixed table of
 * DLOCK__CLASSES entries claimed with compare-and-swap, so label cardinality
 * is bounded and lookups never lock.
 */
#ifndef DLOCK_METRICS_H
#define DLOCK_METRICS_H
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include "dlock.h"

#define DLOCK__CLASSES 32
#define DLOCK__CLASS_NAME_MAX 64

typedef struct dlock__hist {
    atomic_uint_fast64_t count, sum_ns;
    atomic_uint_fast64_t b[DLOCK_HIST_BUCKETS + 1]; /* last: above every bound */
} dlock__hist;

typedef struct dlock__class {
    _Atomic(char *) name; /* NULL: free slot */
    atomic_uint_fast64_t acquired, busy, timeouts, errors;
    dlock__hist wait, hold;
} dlock__class;

typedef struct dlock__metrics {
    int by_prefix;
    int off; /* benchmark hook: record nothing (to measure the cost) */
    dlock__class total;
    dlock__class classes[DLOCK__CLASSES];
    dlock__class other; /* prefixes beyond the table */
    atomic_uint_fast64_t renewals, renew_failures, lost;
    atomic_uint_fast64_t attempts, keepalives;
    atomic_uint_fast64_t released, release_not_held, release_errors;
} dlock__metrics;

/* Record an acquisition's outcome (rc) for `key`, and its wait. */
void dlock__metrics_acquire(dlock__metrics *m, const char *key, int rc, int64_t wait_ns);
/* Record a release's outcome and how long the lock was held. */
void dlock__metrics_release(dlock__metrics *m, const char *key, int rc, int64_t hold_ns);

/* Fill the counter and histogram fields of *out (not held_now). */
void dlock__metrics_snapshot(dlock__metrics *m, dlock_client_stats *out);

struct dlock__counters;
/* Write the exposition text; the per-node counters and held_now come from
 * the client. Returns 0 or DLOCK_ECONN (write error). */
int dlock__metrics_write(dlock__metrics *m, FILE *f, int nnodes, const char *const *nodes,
                         struct dlock__counters *const *counters, int64_t held_now,
                         const dlock_client_stats *st);

void dlock__metrics_free(dlock__metrics *m);

#endif
