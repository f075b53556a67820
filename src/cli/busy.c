/*
 * busy.c — the answer to "why did I not get the lock?": after a `dlock
 * run` or `dlock elect` came back busy (--no-wait) or timed out (--wait),
 * name who holds it and since when, and, with several keys, which key.
 *
 * The library's answer is only a code (DLOCK_EBUSY, DLOCK_ETIMEDOUT), so
 * this looks again, through the public API: dlock_key_state_get() on each
 * key, one round trip each, after the attempt failed. The lock may have
 * changed hands in between; the message reports what the second look saw
 * and says so when the key has become free. A failed look costs nothing
 * but detail: the message is then the short one without a holder.
 *
 *   dlock: job:7: lock is busy: held by web1:4242 for 3.2s
 *   dlock: deploy: timed out after 10s: lock is busy: held by ci:77 for 2m05s
 *   dlock: acct:2: lock is busy (key 2 of 3): held by pay:91 for 0.8s
 *   dlock: gpu: all 4 permits are in use: held by t:1 (slot 2) for 5m, and 3 more holders
 *   dlock: cron: another process is the leader: node-b (leader for 1h02m)
 */
#include "cli.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* What the key's holders look like, for the message. */
typedef struct busy_key {
    size_t index;           /* which of the keys */
    size_t nbusy;           /* how many of the keys are busy */
    int looked;             /* every key was looked at */
    dlock_key_state *state; /* the first busy key's state, or NULL */
} busy_key;

/* The holder that has held the key longest (holders of a semaphore or
 * readers can be many). */
static const dlock_holder *oldest_holder(const dlock_key_state *s)
{
    size_t i, best = 0;

    for (i = 1; i < s->nholders; i++)
        if (s->holders[i].age_ms > s->holders[best].age_ms)
            best = i;
    return &s->holders[best];
}

/* Look at every key; keep the state of the first one that is held (or
 * has waiters queued), count the others. If a look fails, found->looked
 * stays 0 and found->state NULL. */
static void find_busy(busy_key *found, dlock_client *client, const cli_busy *b)
{
    dlock_key_state *s;
    size_t i;

    memset(found, 0, sizeof *found);
    for (i = 0; i < b->nkeys; i++) {
        if (dlock_key_state_get(&s, client, b->keys[i], b->kind) != 0) {
            dlock_key_state_free(found->state);
            found->state = NULL;
            found->nbusy = 0;
            return;
        }
        if (s->nholders == 0 && s->waiters == 0) {
            dlock_key_state_free(s);
            continue;
        }
        if (found->nbusy++ == 0) {
            found->index = i;
            found->state = s;
        } else {
            dlock_key_state_free(s);
        }
    }
    found->looked = 1;
}

/* Append the holder part (": held by OWNER (MODE) for AGE, and N more
 * holders")
 * to the message in f. */
static void put_holder(FILE *f, const cli_busy *b, const dlock_key_state *s)
{
    const dlock_holder *h;
    char *owner, age[32];

    if (s->nholders == 0) {
        fprintf(f, ": %" PRId64 " waiter%s queued first", s->waiters, s->waiters > 1 ? "s" : "");
        return;
    }
    h = oldest_holder(s);
    owner = cli_text_dup(h->owner);
    if (owner != NULL)
        cli_text_cut(owner, 64);
    cli_duration_format(age, sizeof age, h->age_ms);
    if (b->leader) {
        fprintf(f, ": %s (leader for %s)", owner != NULL ? owner : "?", age);
        free(owner);
        return;
    }
    fprintf(f, ": held by %s", owner != NULL ? owner : "?");
    if (h->slot >= 0 && h->permits > 1)
        fprintf(f, " (slot %d, %d permits)", h->slot, h->permits);
    else if (h->slot >= 0)
        fprintf(f, " (slot %d)", h->slot);
    else if (h->mode == DLOCK_READ)
        fputs(" (read)", f);
    fprintf(f, " for %s", age);
    if (s->nholders > 1)
        fprintf(f, ", and %zu more holder%s", s->nholders - 1, s->nholders > 2 ? "s" : "");
    /* Readers do not keep out a reader; what does is a writer queued
     * before it (first come, first served). */
    if (b->shared && h->mode == DLOCK_READ && s->waiters > 0)
        fprintf(f, "; %" PRId64 " queued first", s->waiters);
    free(owner);
}

/* The permits the holders of a semaphore hold together. */
static int permits_held(const dlock_key_state *s)
{
    int n = 0;
    for (size_t i = 0; i < s->nholders; i++)
        n += s->holders[i].permits;
    return n;
}

/* The message without its "dlock: KEY: " start, in a new string (free()
 * it), or NULL when out of memory. */
static char *busy_message(const cli_busy *b, const busy_key *k)
{
    char *buf = NULL, d[32];
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    if (f == NULL)
        return NULL;
    if (b->waited_ms >= 0) {
        cli_duration_format(d, sizeof d, b->waited_ms);
        fprintf(f, "timed out after %s: ", d);
    }
    if (b->leader)
        fputs("another process is the leader", f);
    else if (b->kind == DLOCK_KIND_SEMAPHORE && b->permits > 1 && k->state != NULL)
        fprintf(f, "%d permits wanted, %d of %d free", b->permits,
                b->limit - permits_held(k->state) > 0 ? b->limit - permits_held(k->state) : 0,
                b->limit);
    else if (b->kind == DLOCK_KIND_SEMAPHORE)
        fprintf(f, "all %d permits are in use", b->limit);
    else
        fputs("lock is busy", f);
    if (b->nkeys > 1 && k->state != NULL)
        fprintf(f, " (key %zu of %zu%s)", k->index + 1, b->nkeys,
                k->nbusy > 1 ? ", and others" : "");
    if (k->state != NULL)
        put_holder(f, b, k->state);
    else if (k->looked)
        fputs(" (free again by now)", f);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* See cli.h. */
void cli_report_busy(dlock_client *client, const cli_busy *b)
{
    busy_key k;
    char *msg;

    find_busy(&k, client, b);
    msg = busy_message(b, &k);
    if (k.state != NULL && b->nkeys > 1)
        cli_key_err(b->keys[k.index], "%s", msg != NULL ? msg : "lock is busy");
    else
        cli_keys_err(b->keys[0], b->nkeys - 1, "%s", msg != NULL ? msg : "lock is busy");
    free(msg);
    dlock_key_state_free(k.state);
}
