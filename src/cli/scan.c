/*
 * scan.c — one look at every lock under the prefix, for `dlock metrics`
 * and `dlock top`.
 *
 * dlock_scan() walks the keyspace with SCAN (never KEYS, so a big keyspace
 * does not block the server) and calls back once per lock that has a holder
 * or a waiter; the state it passes is valid during the call only. The
 * snapshot keeps what the two commands show of each lock in its own row,
 * so they can print families or columns in any order afterwards, and the
 * totals (locks held, waiters) are counted on the way. A lock that changes
 * during the walk may be seen in either state: a snapshot is a survey, not
 * a transaction.
 */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

const char *cli_kind_name(int kind)
{
    return kind == DLOCK_KIND_SEMAPHORE ? "semaphore" : "mutex";
}

const char *cli_mode_name(int mode)
{
    switch (mode) {
    case DLOCK_WRITE:
        return "write";
    case DLOCK_READ:
        return "read";
    default:
        return "permit";
    }
}

/* dlock_scan()'s callback: append a row for `st`. Returns 0, or
 * DLOCK_ENOMEM, which stops the scan and becomes its result. */
static int add_row(const dlock_key_state *st, void *arg)
{
    cli_snapshot *s = arg;
    cli_lockrow *r;
    size_t i, oldest = 0;

    if (s->n == s->cap) {
        size_t cap = s->cap > 0 ? s->cap * 2 : 32;
        cli_lockrow *rows = realloc(s->rows, cap * sizeof *rows);
        if (rows == NULL)
            return DLOCK_ENOMEM;
        s->rows = rows;
        s->cap = cap;
    }
    r = &s->rows[s->n];
    memset(r, 0, sizeof *r);
    r->key = strdup(st->key);
    if (r->key == NULL)
        return DLOCK_ENOMEM;
    s->n++;
    r->kind = st->kind;
    r->nholders = st->nholders;
    r->waiters = st->waiters;
    r->slot = -1;
    for (i = 1; i < st->nholders; i++)
        if (st->holders[i].age_ms > st->holders[oldest].age_ms)
            oldest = i;
    if (st->nholders > 0) {
        const dlock_holder *h = &st->holders[oldest];
        snprintf(r->owner, sizeof r->owner, "%s", h->owner);
        r->mode = h->mode;
        r->slot = h->slot;
        r->ttl_ms = h->ttl_ms;
        r->age_ms = h->age_ms;
        s->held++;
    }
    if (st->waiters > 0)
        s->waiters += st->waiters;
    return 0;
}

/* See cli.h. */
int cli_snapshot_take(cli_snapshot *out, dlock_client *client, const char *pattern)
{
    int rc;

    memset(out, 0, sizeof *out);
    rc = dlock_scan(client, pattern, add_row, out);
    if (rc != 0)
        cli_snapshot_free(out);
    return rc;
}

void cli_snapshot_free(cli_snapshot *s)
{
    size_t i;

    for (i = 0; i < s->n; i++)
        free(s->rows[i].key);
    free(s->rows);
    memset(s, 0, sizeof *s);
}
