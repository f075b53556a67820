/*
 * barrier.c — the barrier: `parties` processes wait for each other, and
 * all go on when the last one arrives (dlock_barrier_wait; the server side
 * is src/lua/barrier.lua).
 *
 * Generations. The barrier counts the arrivals of the generation waiting
 * now; the arrival that makes `parties` trips it: every party counted in
 * it is recorded as having passed that generation (BDONE), the next
 * generation starts empty, and the tripped generation is published. So the
 * barrier is reusable at once, and a party that arrives right after a trip
 * waits for the next one.
 *
 * Live parties only. An arrival is a member of a sorted set scored by its
 * expiry, DLOCK__BARRIER_LIFE_MS after the party's last word; the waiting
 * call refreshes it every third of that (the same script call as the
 * arrival, which also tells it whether its generation tripped). So a party
 * killed while waiting stops counting within one life, and a barrier is
 * never wedged by the dead: the state of an idle barrier expires (BAR and
 * BDONE after DLOCK__BARRIER_DONE_MS, arrivals after two lives). A party
 * that gives up (its wait budget, a cancel, close) takes its arrival back
 * in the same step as it learns whether it had passed meanwhile: if it had,
 * it returns 0, since the others went on counting it.
 *
 * Waking. Subscribed to the barrier's channel before arriving; a trip
 * publishes, and the party confirms with one refresh (BDONE says it
 * passed). Between trips it sends only its refreshes, one per third of a
 * life: a heartbeat, not a poll for the state.
 */
#include <stdio.h>
#include <string.h>

#include "clock.h"
#include "error.h"
#include "lock.h"
#include "primitive.h"

#define GRACE_MS 500     /* a call at the deadline may take this much longer */
#define GIVEBACK_MS 1000 /* budget of a leave when no wait budget bounds it */

/* One party's state. */
typedef struct party {
    dlock__prim *p;
    char token[DLOCK__TOKEN_LEN + 1];
    int parties;
    long long gen;     /* the generation it is counted in (0: not yet) */
    long long arrived; /* arrivals in it at the last answer */
    int64_t deadline;
} party;

/* What the server answered. */
enum { B_PASSED, B_WAITING };

/* The budget of one call: the default, capped by the wait budget's rest. */
static int64_t call_budget(const party *pt)
{
    int64_t dflt = (int64_t)pt->p->c->connect_timeout_ms + pt->p->c->command_timeout_ms;
    if (pt->deadline == INT64_MAX)
        return dflt;
    int64_t left = (pt->deadline - dlock__now_ns()) / 1000000 + GRACE_MS;
    return left < 1 ? 1 : left < dflt ? left : dflt;
}

/* Run barrier.lua's `op` ("arrive" or "leave") for the party. Returns
 * B_PASSED, B_WAITING (pt->gen and pt->arrived updated), or an error
 * (DLOCK_EINVAL for a parties conflict). */
static int call(party *pt, const char *op, int64_t max_ms)
{
    char parties[16], life[16], known[24];
    snprintf(parties, sizeof parties, "%d", pt->parties);
    snprintf(life, sizeof life, "%d", DLOCK__BARRIER_LIFE_MS);
    snprintf(known, sizeof known, "%lld", pt->gen);
    const char *args[5] = { op, pt->token, parties, life, known };
    dlock__reply *r = NULL;
    int rc = dlock__prim_call(&r, pt->p, DLOCK__S_BARRIER, args, 5, max_ms, op, 1);
    if (rc)
        return rc;
    long long code = dlock__prim_int(r, 0);
    if (code == DLOCK__P_OK && r->elements == 2) {
        rc = B_PASSED;
    } else if (code == DLOCK__P_BUSY && r->elements == 3) {
        pt->gen = dlock__prim_int(r, 1);
        pt->arrived = dlock__prim_int(r, 2);
        rc = B_WAITING;
    } else if (code == DLOCK__P_CONFLICT && r->elements == 2) {
        rc = dlock__err(DLOCK_EINVAL,
                        "barrier %s: waiting for %d parties, but the parties "
                        "waiting there now expect %lld",
                        pt->p->key, pt->parties, dlock__prim_int(r, 1));
    } else {
        rc = dlock__reply_fail(r, "the server", "barrier");
    }
    dlock__reply_free(r);
    return rc;
}

/* Give up: take the arrival back, unless the generation tripped with it
 * meanwhile. Returns 0 if the party passed, else `why` (the message of the
 * failure that made it give up is kept). */
static int give_up(party *pt, int why)
{
    char msg[512];
    snprintf(msg, sizeof msg, "%s", dlock_last_errmsg());
    int64_t ms = pt->deadline == INT64_MAX ? GIVEBACK_MS : call_budget(pt);
    int rc = pt->gen ? call(pt, "leave", ms < GIVEBACK_MS ? GIVEBACK_MS : ms) : DLOCK_ECONN;
    if (rc == B_PASSED)
        return 0;
    return dlock__err(why, "%s", msg);
}

/* The wait of one party after its arrival was counted. */
static int wait_loop(party *pt, dlock__news *news, int64_t wait_ms, dlock_cancel *cancel)
{
    const int64_t refresh_ns = (int64_t)DLOCK__BARRIER_LIFE_MS / 3 * 1000000;
    int64_t next_refresh = dlock__now_ns() + refresh_ns;
    int backoff_ms = DLOCK__PRIM_BACKOFF_MIN_MS;
    for (;;) {
        int64_t until = next_refresh < pt->deadline ? next_refresh : pt->deadline;
        int s = dlock__news_sleep(news, until, cancel, "barrier", pt->p->key);
        if (s < 0)
            return give_up(pt, s);
        if (dlock__now_ns() >= pt->deadline) {
            dlock__err(DLOCK_ETIMEDOUT,
                       "barrier %s: timed out after %lld ms with %lld of %d "
                       "parties arrived",
                       pt->p->key, (long long)wait_ms, pt->arrived, pt->parties);
            return give_up(pt, DLOCK_ETIMEDOUT);
        }
        if (s == 0 && dlock__now_ns() < next_refresh)
            continue;
        int rc = call(pt, "arrive", call_budget(pt));
        if (rc == B_PASSED)
            return 0;
        if (rc == B_WAITING) {
            backoff_ms = DLOCK__PRIM_BACKOFF_MIN_MS;
            next_refresh = dlock__now_ns() + refresh_ns;
        } else if (rc == DLOCK_ECONN || rc == DLOCK_EQUORUM || rc == DLOCK_EPROTO) {
            dlock__log(pt->p->c, DLOCK_LOG_WARN, "waiting at barrier %s: %s; retrying", pt->p->key,
                       dlock_last_errmsg());
            next_refresh = dlock__now_ns() + (int64_t)backoff_ms * 1000000;
            backoff_ms = backoff_ms * 2 > DLOCK__PRIM_BACKOFF_MAX_MS ? DLOCK__PRIM_BACKOFF_MAX_MS
                                                                     : backoff_ms * 2;
        } else {
            return rc == DLOCK_EINVAL ? rc : give_up(pt, rc);
        }
    }
}

int dlock_barrier_wait(dlock_client *client, const char *key, int parties, int64_t wait_ms,
                       dlock_cancel *cancel)
{
    dlock__prim p;
    int rc = dlock__prim_begin(&p, client, key, DLOCK__FAM_BARRIER, "barrier");
    if (rc)
        return rc;
    party pt = { .p = &p, .parties = parties, .deadline = dlock__prim_deadline(wait_ms) };
    dlock__news news = { 0 };
    if (parties < 1 || parties > DLOCK__LIMIT_MAX)
        rc = dlock__err(DLOCK_EINVAL, "barrier %s: parties must be from 1 to %d (got %d)", key,
                        DLOCK__LIMIT_MAX, parties);
    if (rc == 0)
        rc = dlock__prim_check_wait(wait_ms);
    if (rc == 0)
        rc = dlock__token_new(pt.token);
    /* subscribed before arriving: a trip right after the arrival is heard */
    if (rc == 0)
        rc = dlock__news_start(&news, client, p.names[DLOCK__K_BCHAN]);
    if (rc == 0) {
        rc = call(&pt, "arrive", call_budget(&pt));
        if (rc == B_PASSED)
            rc = 0;
        else if (rc == B_WAITING)
            rc = wait_loop(&pt, &news, wait_ms, cancel);
    }
    dlock__news_stop(&news);
    dlock__prim_end(&p);
    return rc;
}
