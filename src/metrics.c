/*
 * metrics.c — recording and exposing the client's metrics (see metrics.h).
 *
 * The exposition follows Prometheus' text format 0.0.4: a # HELP and # TYPE
 * line per family, base units (seconds), counters ending in _total,
 * histograms as cumulative _bucket{le=...} series ending with le="+Inf"
 * equal to _count, then _sum and _count.
 */
#include "metrics.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "conn.h"
#include "error.h"
#include "watchdog.h"

static const double bounds[DLOCK_HIST_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1,    0.25,    0.5,    1,     2.5,    5,     10,   30,    60,
};

double dlock_hist_bound(int i)
{
    return i >= 0 && i < DLOCK_HIST_BUCKETS ? bounds[i] : 0;
}

static void observe(dlock__hist *h, int64_t ns)
{
    if (ns < 0)
        ns = 0;
    double s = (double)ns / 1e9;
    int i = 0;
    while (i < DLOCK_HIST_BUCKETS && s > bounds[i])
        i++;
    atomic_fetch_add_explicit(&h->b[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_ns, (uint64_t)ns, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}

/* The class of `key` (its text up to the first ':'), claiming a free slot
 * for a new prefix; the overflow class once the table is full. */
static dlock__class *class_of(dlock__metrics *m, const char *key)
{
    if (!m->by_prefix || !key)
        return NULL;
    size_t n = strcspn(key, ":");
    if (n > DLOCK__CLASS_NAME_MAX)
        n = DLOCK__CLASS_NAME_MAX;
    for (int i = 0; i < DLOCK__CLASSES; i++) {
        char *name = atomic_load(&m->classes[i].name);
        if (!name) {
            char *mine = dlock__strndup(key, n);
            if (!mine)
                return &m->other;
            char *expect = NULL;
            if (atomic_compare_exchange_strong(&m->classes[i].name, &expect, mine))
                return &m->classes[i];
            dlock__free(mine);
            name = expect;
        }
        if (strlen(name) == n && memcmp(name, key, n) == 0)
            return &m->classes[i];
    }
    return &m->other;
}

static void count_acquire(dlock__class *k, int rc, int64_t wait_ns)
{
    if (rc == 0) {
        atomic_fetch_add_explicit(&k->acquired, 1, memory_order_relaxed);
        observe(&k->wait, wait_ns);
    } else if (rc == DLOCK_EBUSY) {
        atomic_fetch_add_explicit(&k->busy, 1, memory_order_relaxed);
    } else if (rc == DLOCK_ETIMEDOUT) {
        atomic_fetch_add_explicit(&k->timeouts, 1, memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(&k->errors, 1, memory_order_relaxed);
    }
}

void dlock__metrics_acquire(dlock__metrics *m, const char *key, int rc, int64_t wait_ns)
{
    if (m->off)
        return;
    count_acquire(&m->total, rc, wait_ns);
    dlock__class *k = class_of(m, key);
    if (k)
        count_acquire(k, rc, wait_ns);
}

void dlock__metrics_release(dlock__metrics *m, const char *key, int rc, int64_t hold_ns)
{
    if (m->off)
        return;
    atomic_uint_fast64_t *ctr = rc == 0                ? &m->released
                                : rc == DLOCK_ENOTHELD ? &m->release_not_held
                                                       : &m->release_errors;
    atomic_fetch_add_explicit(ctr, 1, memory_order_relaxed);
    observe(&m->total.hold, hold_ns);
    dlock__class *k = class_of(m, key);
    if (k)
        observe(&k->hold, hold_ns);
}

static void hist_snapshot(dlock__hist *h, dlock_histogram *out)
{
    uint64_t cum = 0;
    for (int i = 0; i < DLOCK_HIST_BUCKETS; i++) {
        cum += atomic_load_explicit(&h->b[i], memory_order_relaxed);
        out->le[i] = cum;
    }
    /* count last, and never below the buckets (they may race ahead) */
    uint64_t count = cum + atomic_load_explicit(&h->b[DLOCK_HIST_BUCKETS], memory_order_relaxed);
    out->count = count;
    out->sum_seconds = (double)atomic_load_explicit(&h->sum_ns, memory_order_relaxed) / 1e9;
}

void dlock__metrics_snapshot(dlock__metrics *m, dlock_client_stats *out)
{
    out->acquired = atomic_load(&m->total.acquired);
    out->busy = atomic_load(&m->total.busy);
    out->timeouts = atomic_load(&m->total.timeouts);
    out->acquire_errors = atomic_load(&m->total.errors);
    out->renewals = atomic_load(&m->renewals);
    out->attempts = atomic_load(&m->attempts);
    out->keepalives = atomic_load(&m->keepalives);
    out->renew_failures = atomic_load(&m->renew_failures);
    out->lost = atomic_load(&m->lost);
    out->released = atomic_load(&m->released);
    out->release_not_held = atomic_load(&m->release_not_held);
    out->release_errors = atomic_load(&m->release_errors);
    hist_snapshot(&m->total.wait, &out->wait);
    hist_snapshot(&m->total.hold, &out->hold);
}

/* Write a label value with \, " and newline escaped. */
static void put_label(FILE *f, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            fputc('\\', f), fputc(*v, f);
        else if (*v == '\n')
            fputs("\\n", f);
        else
            fputc(*v, f);
    }
}

static void put_hist(FILE *f, const char *name, const char *labels, const dlock_histogram *h)
{
    const char *sep = labels[0] ? "," : "";
    for (int i = 0; i < DLOCK_HIST_BUCKETS; i++)
        fprintf(f, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, bounds[i],
                (unsigned long long)h->le[i]);
    fprintf(f, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
            (unsigned long long)h->count);
    fprintf(f, "%s_sum%s%s%s %.9f\n", name, labels[0] ? "{" : "", labels, labels[0] ? "}" : "",
            h->sum_seconds);
    fprintf(f, "%s_count%s%s%s %llu\n", name, labels[0] ? "{" : "", labels, labels[0] ? "}" : "",
            (unsigned long long)h->count);
}

/* The label text for class k: `key_prefix="..."` (escaped), or "" for the
 * total. */
static void class_label(char *buf, size_t n, const char *name)
{
    if (!name) {
        buf[0] = '\0';
        return;
    }
    size_t j = (size_t)snprintf(buf, n, "key_prefix=\"");
    for (const char *p = name; *p && j + 4 < n; p++) {
        if (*p == '\\' || *p == '"')
            buf[j++] = '\\';
        if (*p == '\n') {
            buf[j++] = '\\';
            buf[j++] = 'n';
            continue;
        }
        buf[j++] = *p;
    }
    snprintf(buf + j, n - j, "\"");
}

/* The classes to write: the total alone, or each used class and "_other". */
static int classes(dlock__metrics *m, dlock__class **list, const char **names)
{
    int n = 0;
    if (!m->by_prefix) {
        list[n] = &m->total;
        names[n++] = NULL;
        return n;
    }
    for (int i = 0; i < DLOCK__CLASSES; i++) {
        char *name = atomic_load(&m->classes[i].name);
        if (name) {
            list[n] = &m->classes[i];
            names[n++] = name;
        }
    }
    list[n] = &m->other;
    names[n++] = "_other";
    return n;
}

int dlock__metrics_write(dlock__metrics *m, FILE *f, int nnodes, const char *const *nodes,
                         struct dlock__counters *const *counters, int64_t held_now,
                         const dlock_client_stats *st)
{
    dlock__class *list[DLOCK__CLASSES + 2];
    const char *names[DLOCK__CLASSES + 2];
    int n = classes(m, list, names);
    char label[160];

    fprintf(f, "# HELP dlock_acquisitions_total Lock acquisitions by result.\n"
               "# TYPE dlock_acquisitions_total counter\n");
    for (int i = 0; i < n; i++) {
        class_label(label, sizeof label, names[i]);
        const char *sep = label[0] ? "," : "";
        fprintf(f, "dlock_acquisitions_total{%s%sresult=\"acquired\"} %llu\n", label, sep,
                (unsigned long long)atomic_load(&list[i]->acquired));
        fprintf(f, "dlock_acquisitions_total{%s%sresult=\"busy\"} %llu\n", label, sep,
                (unsigned long long)atomic_load(&list[i]->busy));
        fprintf(f, "dlock_acquisitions_total{%s%sresult=\"timeout\"} %llu\n", label, sep,
                (unsigned long long)atomic_load(&list[i]->timeouts));
        fprintf(f, "dlock_acquisitions_total{%s%sresult=\"error\"} %llu\n", label, sep,
                (unsigned long long)atomic_load(&list[i]->errors));
    }
    fprintf(f, "# HELP dlock_acquire_wait_seconds Time from the start of an acquisition to the "
               "lock being held.\n"
               "# TYPE dlock_acquire_wait_seconds histogram\n");
    for (int i = 0; i < n; i++) {
        dlock_histogram h;
        hist_snapshot(&list[i]->wait, &h);
        class_label(label, sizeof label, names[i]);
        put_hist(f, "dlock_acquire_wait_seconds", label, &h);
    }
    fprintf(f, "# HELP dlock_hold_seconds Time from acquisition to release.\n"
               "# TYPE dlock_hold_seconds histogram\n");
    for (int i = 0; i < n; i++) {
        dlock_histogram h;
        hist_snapshot(&list[i]->hold, &h);
        class_label(label, sizeof label, names[i]);
        put_hist(f, "dlock_hold_seconds", label, &h);
    }
    fprintf(f,
            "# HELP dlock_locks_held Locks held through this client now.\n"
            "# TYPE dlock_locks_held gauge\n"
            "dlock_locks_held %lld\n",
            (long long)held_now);
    fprintf(f,
            "# HELP dlock_renewals_total Watchdog renewals by result.\n"
            "# TYPE dlock_renewals_total counter\n"
            "dlock_renewals_total{result=\"ok\"} %llu\n"
            "dlock_renewals_total{result=\"failed\"} %llu\n",
            (unsigned long long)st->renewals, (unsigned long long)st->renew_failures);
    fprintf(f,
            "# HELP dlock_locks_lost_total Locks found lost while held.\n"
            "# TYPE dlock_locks_lost_total counter\n"
            "dlock_locks_lost_total %llu\n",
            (unsigned long long)st->lost);
    fprintf(f,
            "# HELP dlock_releases_total Releases by result.\n"
            "# TYPE dlock_releases_total counter\n"
            "dlock_releases_total{result=\"released\"} %llu\n"
            "dlock_releases_total{result=\"not_held\"} %llu\n"
            "dlock_releases_total{result=\"error\"} %llu\n",
            (unsigned long long)st->released, (unsigned long long)st->release_not_held,
            (unsigned long long)st->release_errors);
    static const char *const fams[4][2] = {
        { "dlock_round_trips_total", "Request/reply exchanges with Redis." },
        { "dlock_commands_total", "Commands sent to Redis." },
        { "dlock_connects_total", "Connections opened to Redis." },
        { "dlock_errors_total", "Transport or protocol errors talking to Redis." },
    };
    for (int i = 0; i < 4; i++) {
        fprintf(f, "# HELP %s %s\n# TYPE %s counter\n", fams[i][0], fams[i][1], fams[i][0]);
        for (int k = 0; k < nnodes; k++) {
            dlock__counters *cs = counters[k];
            uint64_t v = i == 0   ? atomic_load(&cs->round_trips)
                         : i == 1 ? atomic_load(&cs->commands)
                         : i == 2 ? atomic_load(&cs->connects)
                                  : atomic_load(&cs->errors);
            fprintf(f, "%s{node=\"", fams[i][0]);
            put_label(f, nodes[k]);
            fprintf(f, "\"} %llu\n", (unsigned long long)v);
        }
    }
    if (fflush(f) != 0 || ferror(f))
        return dlock__err(DLOCK_ESYS, "writing the metrics failed: %s", strerror(errno));
    return 0;
}

void dlock__metrics_free(dlock__metrics *m)
{
    for (int i = 0; i < DLOCK__CLASSES; i++)
        dlock__free(atomic_load(&m->classes[i].name));
}

/* ------------------------------------------------------- the client's */

int dlock_stats(dlock_client_stats *out, dlock_client *c)
{
    if (!out || !c)
        return dlock__err(DLOCK_EINVAL, "NULL argument");
    memset(out, 0, sizeof *out);
    out->version = DLOCK_STATS_VERSION;
    pthread_mutex_lock(&c->mu);
    int nnodes = c->nnodes;
    pthread_mutex_unlock(&c->mu);
    for (int i = 0; i < nnodes; i++) {
        out->round_trips += atomic_load(&c->nodes[i].counters.round_trips);
        out->commands += atomic_load(&c->nodes[i].counters.commands);
        out->connects += atomic_load(&c->nodes[i].counters.connects);
        out->errors += atomic_load(&c->nodes[i].counters.errors);
    }
    dlock__metrics_snapshot(&c->metrics, out);
    out->held_now = dlock__watchdog_held_now(c);
    return 0;
}

int dlock_metrics_write(dlock_client *c, FILE *f)
{
    dlock__err_clear();
    if (!c || !f)
        return dlock__err(DLOCK_EINVAL, "NULL argument");
    dlock_client_stats st;
    dlock_stats(&st, c);
    const char *nodes[DLOCK__NODES_MAX];
    dlock__counters *counters[DLOCK__NODES_MAX];
    char descs[DLOCK__NODES_MAX][128];
    pthread_mutex_lock(&c->mu);
    int nnodes = c->nnodes;
    for (int i = 0; i < nnodes; i++) {
        snprintf(descs[i], sizeof descs[i], "%s", c->nodes[i].ep.desc);
        nodes[i] = descs[i];
        counters[i] = &c->nodes[i].counters;
    }
    pthread_mutex_unlock(&c->mu);
    return dlock__metrics_write(&c->metrics, f, nnodes, nodes, counters, st.held_now, &st);
}
