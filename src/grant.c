/*
 * grant.c — one acquire round trip (see grant.h).
 *
 * Validity. The server may grant any time after the request leaves, so the
 * handle's validity counts from the moment it was SENT: valid until send +
 * TTL - drift, on CLOCK_BOOTTIME. The local view never outlives the
 * server's, even when the server was slow to answer.
 *
 * Redlock. The request goes to every master in parallel; the lock is ours
 * with a quorum (N/2+1) of grants within the validity. Each master keeps
 * its own fencing counter (core.lua: INCR, seeded from its clock when
 * missing), and the lock's token T is the largest the granting masters
 * answered. The rule that keeps tokens increasing without trusting any
 * clock: after an acquisition, a quorum of masters must have a counter of
 * at least T. Every later acquisition needs a quorum too, and two quorums
 * share a master, whose counter then answers more than T. The granting
 * masters that answered T already satisfy the rule; if they are fewer than
 * a quorum, T is written back (fence_floor.lua) to the other granting
 * masters before the lock counts, and the acquisition fails if that write
 * does not reach a quorum. In the steady state (every master up, none
 * restarted) all counters move together, every master answers the same T,
 * and the write-back is skipped: one round to acquire, one to release.
 * It is paid after a master missed grants (it was down or slow: its
 * counter lags) or lost its data (its counter restarts from its clock),
 * after which the counters agree again.
 */
#include "grant.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "calls.h"
#include "clock.h"
#include "error.h"
#include "fanout.h"

/* The acquire call of l's kind. */
static dlock__call acquire_call(const dlock_lock *l, const char **args)
{
    int gs = dlock__group_size(l->family);
    switch (l->kind) {
    case DLOCK__KIND_READ:
        return (dlock__call){ DLOCK__S_READ_ACQUIRE, gs, 4, (const char *const *)l->names, args };
    case DLOCK__KIND_SEM:
        return (dlock__call){ DLOCK__S_SEM_ACQUIRE, gs, 6, (const char *const *)l->names, args };
    case DLOCK__KIND_MULTI:
        return (dlock__call){ DLOCK__S_MULTI_ACQUIRE, l->nnames, 4, (const char *const *)l->names,
                              args };
    default:
        return (dlock__call){ DLOCK__S_ACQUIRE, gs, 4, (const char *const *)l->names, args };
    }
}

/* What one node answered. */
enum { ANS_FAILED, ANS_GRANTED, ANS_BUSY, ANS_CONFLICT };

/* Read node i's reply into fences[] (granted), *hint (busy) or *limit
 * (conflict). Marks the node failed in f on a malformed or error reply. */
static int answer(const dlock_lock *l, dlock__fanout *f, int i, uint64_t *fences, int *slot,
                  int64_t *hint, int *limit)
{
    dlock_client *c = l->client;
    if (f->rc[i])
        return ANS_FAILED;
    const dlock__reply *r = f->replies[i][0];
    size_t want = l->kind == DLOCK__KIND_MULTI ? 1 + l->nparts : l->kind == DLOCK__KIND_SEM ? 3 : 2;
    int ok = r->type == REDIS_REPLY_ARRAY && r->elements >= 2 &&
             r->element[0]->type == REDIS_REPLY_INTEGER;
    long long code = ok ? r->element[0]->integer : -1;
    if (ok && code == DLOCK__R_GRANTED) {
        ok = r->elements == want;
        for (size_t k = 1; ok && k < 1 + l->nparts; k++) {
            ok = r->element[k]->type == REDIS_REPLY_INTEGER && r->element[k]->integer > 0 &&
                 (uint64_t)r->element[k]->integer <= DLOCK__FENCE_MAX;
            if (ok)
                fences[k - 1] = (uint64_t)r->element[k]->integer;
        }
        if (ok && l->kind == DLOCK__KIND_SEM) {
            uint64_t fence;
            int64_t px;
            char sig[64];
            ok = r->element[2]->type == REDIS_REPLY_STRING && r->element[2]->len < 40;
            /* "<slots>" is parsed as the slot part of a signal */
            if (ok) {
                snprintf(sig, sizeof sig, "1:1:%s", r->element[2]->str);
                ok = dlock__parse_signal(&fence, &px, slot, sig, strlen(sig)) == 0;
            }
        }
    } else if (ok && (code == DLOCK__R_BUSY || code == DLOCK__R_CONFLICT)) {
        ok = r->element[1]->type == REDIS_REPLY_INTEGER;
    } else {
        ok = 0;
    }
    if (!ok) {
        dlock__fanout_bad_reply(c, f, i, r);
        return ANS_FAILED;
    }
    if (code == DLOCK__R_GRANTED)
        return ANS_GRANTED;
    if (code == DLOCK__R_CONFLICT) {
        *limit = (int)r->element[1]->integer;
        return ANS_CONFLICT;
    }
    if (r->element[1]->integer > *hint)
        *hint = r->element[1]->integer;
    return ANS_BUSY;
}

/* Redlock: make sure a quorum of masters counts at least the lock's
 * tokens (see the top of the file). got[i][p]: master i's token for part p
 * (0: it did not grant). Returns 1 if the rule holds (after a write-back if
 * one was needed), 0 if not. */
static int fences_agree(dlock_lock *l, uint64_t (*got)[DLOCK_MULTI_MAX], const uint64_t *top,
                        int64_t max_ms)
{
    dlock_client *c = l->client;
    int need_write = 0;
    for (size_t p = 0; p < l->nparts; p++) {
        int same = 0;
        for (int i = 0; i < c->voters; i++)
            same += got[i][p] == top[p];
        if (same < c->quorum)
            need_write = 1;
    }
    if (!need_write)
        return 1;
    dlock__call calls[DLOCK_MULTI_MAX];
    char tokens[DLOCK_MULTI_MAX][24];
    const char *targs[DLOCK_MULTI_MAX][2];
    for (size_t p = 0; p < l->nparts; p++) {
        snprintf(tokens[p], sizeof tokens[p], "%llu", (unsigned long long)top[p]);
        targs[p][0] = tokens[p];
        targs[p][1] = l->token;
        calls[p] = (dlock__call){ DLOCK__S_FENCE_FLOOR, DLOCK__GROUP_MUTEX, 2,
                                  (const char *const *)l->parts[p].names, targs[p] };
    }
    dlock__fanout g;
    int rc = dlock__fanout_run(c, calls, (int)l->nparts, (int)max_ms, &g);
    int ok = 1;
    for (size_t p = 0; ok && p < l->nparts; p++) {
        int have = 0;
        for (int i = 0; i < c->voters; i++)
            have += got[i][p] == top[p] ||
                    (rc != DLOCK_ENOMEM && g.rc[i] == 0 &&
                     g.replies[i][p]->type == REDIS_REPLY_INTEGER && g.replies[i][p]->integer == 1);
        ok = have >= c->quorum;
    }
    if (!ok && rc != DLOCK_ENOMEM) {
        char what[DLOCK_KEY_MAX + 32];
        snprintf(what, sizeof what, "acquire %s: fencing write-back", l->parts[0].key);
        dlock__fanout_error(&g, what);
    }
    dlock__fanout_free(&g);
    return ok;
}

/* What the nodes answered to one attempt, counted. */
typedef struct {
    uint64_t got[DLOCK__NODES_MAX][DLOCK_MULTI_MAX]; /* node, part -> token (0: no grant) */
    uint64_t top[DLOCK_MULTI_MAX];                   /* the largest token of each part */
    int granted, busy, conflict, unacked, failed;    /* nodes that answered so */
    int known_limit;                                 /* a conflicting semaphore's limit */
    int slot;                                        /* the semaphore slot granted */
    int64_t hint;                                    /* the largest "try again in" (ms) */
    char why[200];                                   /* why a grant was not acknowledged */
} tally;

/* Counts the answers in f into t. A grant that the node's replicas did not
 * acknowledge (calls[] carries the WAITs) does not count as a grant. */
static void count_answers(const dlock_lock *l, dlock__fanout *f, const dlock__call *calls,
                          int ncalls, tally *t)
{
    /* only the rows and columns in use: the whole table is 8 KiB */
    t->granted = t->busy = t->conflict = t->unacked = t->failed = t->known_limit = 0;
    t->hint = 0;
    t->why[0] = '\0';
    t->slot = -1;
    memset(t->top, 0, l->nparts * sizeof t->top[0]);
    for (int i = 0; i < f->nnodes; i++) {
        memset(t->got[i], 0, l->nparts * sizeof t->got[i][0]);
        int ans = answer(l, f, i, t->got[i], &t->slot, &t->hint, &t->known_limit);
        if (ans == ANS_GRANTED &&
            !dlock__fanout_acked(l->client, f, calls, ncalls, i, 0, t->why, sizeof t->why)) {
            memset(t->got[i], 0, sizeof t->got[i]);
            t->unacked++;
            ans = ANS_FAILED;
        }
        if (ans == ANS_GRANTED) {
            t->granted++;
            for (size_t p = 0; p < l->nparts; p++)
                if (t->got[i][p] > t->top[p])
                    t->top[p] = t->got[i][p];
        }
        t->busy += ans == ANS_BUSY;
        t->conflict += ans == ANS_CONFLICT;
    }
    t->failed = f->nnodes - t->granted - t->busy - t->conflict;
}

/* The outcome of an attempt that did not win: grants given back, and the
 * error that says why (EQUORUM: not acknowledged by the replicas; EINVAL:
 * a semaphore limit conflict; the nodes' errors when too few answered;
 * EBUSY with a.hint_ms otherwise). Returns that error code. */
static int lost(dlock_lock *l, dlock__attempt *a, dlock__fanout *f, const tally *t)
{
    dlock_client *c = l->client;
    a->unknown = t->failed > 0;
    if (t->granted > 0 || t->unacked > 0) {
        /* a minority, a grant that came too late to be valid or one not on
         * enough replicas: give it back now rather than block others until
         * its TTL */
        dlock__grant_giveback(l, a->max_ms);
        a->unknown = 0;
    }
    if (t->unacked > 0) {
        a->unacked = 1; /* a failed attempt: retried within a wait */
        return dlock__err(DLOCK_EQUORUM, "acquire %s: granted, but %s; given back", l->parts[0].key,
                          t->why);
    }
    if (t->conflict > 0)
        return dlock__err(
            DLOCK_EINVAL,
            "%s: the semaphore is in use with a limit of %d; asked with a limit of %d",
            l->parts[0].key, t->known_limit, l->limit);
    if (t->failed > 0 && (f->nnodes == 1 || t->failed > f->nnodes - c->quorum)) {
        char what[DLOCK_KEY_MAX + 16];
        snprintf(what, sizeof what, "acquire %s", l->parts[0].key);
        return dlock__fanout_error(f, what);
    }
    a->hint_ms = t->hint;
    return dlock__err(DLOCK_EBUSY, "%s is held by someone else", l->parts[0].key);
}

int dlock__grant_attempt(dlock_lock *l, dlock__attempt *a)
{
    dlock_client *c = l->client;
    char ttl[24], mode[24], limit[24], permits[24];
    const char *args[6] = { l->token,
                            c->owner,
                            dlock__fmt_ll(ttl, l->ttl_ms),
                            dlock__fmt_ll(mode, a->mode),
                            dlock__fmt_ll(limit, l->limit),
                            dlock__fmt_ll(permits, l->permits) };
    /* the call, and on a replicated master a WAIT for its replicas */
    dlock__call calls[1 + 2 * DLOCK__NODES_MAX] = { acquire_call(l, args) };
    char wait_ms[24];
    const char *wait_args[1];
    int64_t budget = a->max_ms > 0 ? a->max_ms : c->connect_timeout_ms + c->command_timeout_ms;
    int ncalls = 1;
    dlock__fanout_add_waits(c, calls, &ncalls, budget / 2, wait_ms, wait_args);
    a->unknown = a->unacked = 0;
    a->hint_ms = 0;
    a->sent_ns = dlock__now_ns();
    atomic_fetch_add(&c->metrics.attempts, 1);
    dlock__fanout f;
    int rc = dlock__fanout_run(c, calls, ncalls, (int)a->max_ms, &f);
    if (rc == DLOCK_ENOMEM)
        return rc;

    tally t;
    count_answers(l, &f, calls, ncalls, &t);
    int64_t valid_until = dlock__validity_end(a->sent_ns, l->ttl_ms);
    int won = t.granted >= c->quorum && dlock__now_ns() < valid_until;
    if (won && c->voters > 1) {
        int64_t left_ms = (valid_until - dlock__now_ns()) / 1000000;
        won =
            left_ms > 0 && fences_agree(l, t.got, t.top, left_ms) && dlock__now_ns() < valid_until;
    }
    if (won) {
        a->unknown = 0;
        for (size_t p = 0; p < l->nparts; p++)
            l->parts[p].fence = t.top[p];
        l->slot = t.slot;
        dlock__lock_set_held(l, a->sent_ns, valid_until);
        rc = 0;
    } else {
        /* a quorum granted, but the answers came after the validity ended */
        int64_t late_ns = t.granted >= c->quorum && t.unacked == 0 && t.conflict == 0
                              ? dlock__now_ns() - valid_until
                              : -1;
        int64_t late_ms = late_ns / 1000000;
        rc = lost(l, a, &f, &t);
        if (rc == DLOCK_EBUSY && late_ns >= 0)
            rc = dlock__err(DLOCK_EBUSY,
                            "acquire %s: granted, but the answer came %lld ms after the "
                            "lock's validity (TTL %lld ms) had ended; given back",
                            l->parts[0].key, (long long)late_ms, (long long)l->ttl_ms);
    }
    dlock__fanout_free(&f);
    return rc;
}

void dlock__grant_giveback(dlock_lock *l, int64_t max_ms)
{
    char msg[512];
    snprintf(msg, sizeof msg, "%s", dlock_last_errmsg());
    dlock__log(l->client, DLOCK_LOG_DEBUG, "giving back %s (%s)", l->parts[0].key, msg);
    int code = 0;
    dlock__call calls[DLOCK_MULTI_MAX];
    dlock__call_args args;
    dlock__calls_release(l, calls, &args);
    dlock__fanout f;
    if (dlock__fanout_run(l->client, calls, (int)l->nparts, (int)max_ms, &f) != DLOCK_ENOMEM)
        dlock__fanout_free(&f);
    dlock__err(code, "%s", msg);
}
