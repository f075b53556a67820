/*
 * latch.c — the countdown latch: a count armed once, counted down by any
 * process, and waited for until it reaches zero (dlock_latch_*; the server
 * side is src/lua/latch.lua).
 *
 * State. One hash per latch (keys.h: LATCH) with the count left, the
 * generation (the server time in microseconds of the init that armed it)
 * and `opened`, the last generation that reached zero. The hash expires
 * `ttl_ms` after the init: a latch abandoned half-way (its counters died)
 * leaves nothing behind, and the TTL is the longest anyone can wait for it.
 *
 * Rules. A latch never goes below zero: a count-down at zero is refused
 * (DLOCK_EINVAL), so a surplus count-down is heard rather than absorbed.
 * A live latch (count above zero) is not re-armed (DLOCK_EBUSY); a latch
 * at zero may be, which starts a new generation.
 *
 * Waiting. The waiter subscribes to the latch's channel, then looks.
 * Counting down to zero publishes, and so does arming (a waiter may have
 * come before the init). The waiter remembers the generation it saw, g:
 * it returns 0 when the count is zero, or when `opened` >= g (g reached
 * zero and the latch was re-armed before the waiter looked again); it
 * returns DLOCK_ETIMEDOUT when g disappeared without opening (the latch
 * expired, or expired and was armed again). Between messages nothing is
 * sent, except one look at the instant the latch expires (its TTL, from
 * the last look): an expiry publishes nothing. A transport failure while
 * waiting is retried with a backoff until the wait budget runs out.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "clock.h"
#include "error.h"
#include "primitive.h"

#define LAST_LOOK_MS 500 /* a look at the deadline may take this much longer */

/* The latch as one look saw it. */
typedef struct latch_view {
    int exists;
    long long count, gen, opened, ttl_ms;
} latch_view;

/* What a look means for a waiter. */
enum { L_WAIT, L_OPEN, L_EXPIRED };

static int check_ttl(int64_t ttl_ms)
{
    if (ttl_ms <= 0 || ttl_ms > (int64_t)1 << 40)
        return dlock__err(DLOCK_EINVAL, "ttl_ms must be from 1 to 2^40 (got %lld)",
                          (long long)ttl_ms);
    return 0;
}

int dlock_latch_init(dlock_client *client, const char *key, int count, int64_t ttl_ms)
{
    dlock__prim p;
    int rc = dlock__prim_begin(&p, client, key, DLOCK__FAM_LATCH, "latch");
    if (rc)
        return rc;
    if (count < 1)
        rc = dlock__err(DLOCK_EINVAL, "latch %s: count must be at least 1 (got %d)", key, count);
    if (rc == 0)
        rc = check_ttl(ttl_ms);
    dlock__reply *r = NULL;
    if (rc == 0) {
        char n[24], ttl[24];
        snprintf(n, sizeof n, "%d", count);
        snprintf(ttl, sizeof ttl, "%lld", (long long)ttl_ms);
        const char *args[3] = { "init", n, ttl };
        rc = dlock__prim_call(&r, &p, DLOCK__S_LATCH, args, 3, 0, "init", 1);
    }
    if (rc == 0 && dlock__prim_int(r, 0) == DLOCK__P_BUSY)
        rc = dlock__err(DLOCK_EBUSY,
                        "latch %s is live: %lld count-downs left (a latch is armed "
                        "again only at zero, or after it expired)",
                        key, dlock__prim_int(r, 1));
    else if (rc == 0 && dlock__prim_int(r, 0) != DLOCK__P_OK)
        rc = dlock__reply_fail(r, "the server", "latch init");
    dlock__reply_free(r);
    dlock__prim_end(&p);
    return rc;
}

int dlock_latch_count_down(int *out_remaining, dlock_client *client, const char *key)
{
    if (out_remaining)
        *out_remaining = 0;
    dlock__prim p;
    int rc = dlock__prim_begin(&p, client, key, DLOCK__FAM_LATCH, "latch");
    if (rc)
        return rc;
    dlock__reply *r = NULL;
    const char *args[1] = { "down" };
    rc = dlock__prim_call(&r, &p, DLOCK__S_LATCH, args, 1, 0, "count down", 1);
    long long code = rc == 0 ? dlock__prim_int(r, 0) : -1;
    if (rc == 0 && code == DLOCK__P_OK) {
        long long left = dlock__prim_int(r, 1);
        if (out_remaining)
            *out_remaining = left > INT_MAX ? INT_MAX : (int)left;
    } else if (rc == 0 && code == DLOCK__P_ZERO) {
        rc = dlock__err(DLOCK_EINVAL, "latch %s is already at zero: it cannot be counted below",
                        key);
    } else if (rc == 0 && code == DLOCK__P_MISSING) {
        rc = dlock__err(DLOCK_EINVAL,
                        "latch %s does not exist (it was never initialised, or it "
                        "expired)",
                        key);
    } else if (rc == 0) {
        rc = dlock__reply_fail(r, "the server", "latch count down");
    }
    dlock__reply_free(r);
    dlock__prim_end(&p);
    return rc;
}

/* One look at the latch within max_ms. */
static int look(latch_view *v, dlock__prim *p, int64_t max_ms)
{
    dlock__reply *r = NULL;
    const char *args[1] = { "look" };
    int rc = dlock__prim_call(&r, p, DLOCK__S_LATCH, args, 1, max_ms, "look at", 0);
    if (rc)
        return rc;
    if (r->elements != 5) {
        rc = dlock__reply_fail(r, "the server", "latch look");
    } else {
        v->exists = (int)dlock__prim_int(r, 0);
        v->count = dlock__prim_int(r, 1);
        v->gen = dlock__prim_int(r, 2);
        v->opened = dlock__prim_int(r, 3);
        v->ttl_ms = dlock__prim_int(r, 4);
    }
    dlock__reply_free(r);
    return rc;
}

int dlock_latch_get(int *out_count, dlock_client *client, const char *key)
{
    if (!out_count)
        return dlock__err(DLOCK_EINVAL, "out_count is NULL");
    *out_count = -1;
    dlock__prim p;
    int rc = dlock__prim_begin(&p, client, key, DLOCK__FAM_LATCH, "latch");
    if (rc)
        return rc;
    latch_view v;
    if ((rc = look(&v, &p, 0)) == 0 && v.exists)
        *out_count = v.count > INT_MAX ? INT_MAX : (int)v.count;
    dlock__prim_end(&p);
    return rc;
}

/* What look v means to a waiter that saw generation *gen0 before (0: none
 * yet); remembers the generation it sees now. */
static int judge(const latch_view *v, long long *gen0)
{
    if (!v->exists)
        return *gen0 ? L_EXPIRED : L_WAIT; /* not armed yet: wait for the init */
    if (v->count <= 0 || (*gen0 && v->opened >= *gen0))
        return L_OPEN;
    if (*gen0 && v->gen != *gen0)
        return L_EXPIRED; /* ours expired without opening; this one is new */
    *gen0 = v->gen;
    return L_WAIT;
}

/* The budget of one look: the default, capped by what is left of the wait
 * plus a little, so the look at the deadline can still be answered. */
static int64_t look_budget(const dlock_client *c, int64_t deadline)
{
    int64_t dflt = (int64_t)c->connect_timeout_ms + c->command_timeout_ms;
    if (deadline == INT64_MAX)
        return dflt;
    int64_t left = (deadline - dlock__now_ns()) / 1000000 + LAST_LOOK_MS;
    return left < 1 ? 1 : left < dflt ? left : dflt;
}

/* The wait loop of dlock_latch_wait, subscribed. */
static int wait_loop(dlock__prim *p, dlock__news *news, int64_t wait_ms, dlock_cancel *cancel)
{
    int64_t deadline = dlock__prim_deadline(wait_ms);
    long long gen0 = 0;
    int backoff_ms = DLOCK__PRIM_BACKOFF_MIN_MS, failing = 0;
    char why[256] = "";
    latch_view v = { 0 };
    for (;;) {
        int rc = look(&v, p, look_budget(p->c, deadline));
        int64_t now = dlock__now_ns(), until = deadline;
        if (rc == 0) {
            failing = 0;
            backoff_ms = DLOCK__PRIM_BACKOFF_MIN_MS;
            int j = judge(&v, &gen0);
            if (j == L_OPEN)
                return 0;
            if (j == L_EXPIRED)
                return dlock__err(DLOCK_ETIMEDOUT,
                                  "latch %s expired before its count reached "
                                  "zero",
                                  p->key);
            if (v.exists && v.ttl_ms > 0 && now + (v.ttl_ms + 1) * 1000000 < until)
                until = now + (v.ttl_ms + 1) * 1000000; /* look again when it expires */
        } else if (rc == DLOCK_ECONN || rc == DLOCK_EQUORUM || rc == DLOCK_EPROTO) {
            snprintf(why, sizeof why, "%s", dlock_last_errmsg());
            if (!failing)
                dlock__log(p->c, DLOCK_LOG_WARN, "waiting for latch %s: %s; retrying", p->key, why);
            failing = 1;
            if (now + (int64_t)backoff_ms * 1000000 < until)
                until = now + (int64_t)backoff_ms * 1000000;
            backoff_ms = backoff_ms * 2 > DLOCK__PRIM_BACKOFF_MAX_MS ? DLOCK__PRIM_BACKOFF_MAX_MS
                                                                     : backoff_ms * 2;
        } else {
            return rc;
        }
        if (now >= deadline) {
            if (failing)
                return dlock__err(DLOCK_ETIMEDOUT,
                                  "latch %s: timed out after %lld ms; the "
                                  "server did not answer (%s)",
                                  p->key, (long long)wait_ms, why);
            if (!v.exists)
                return dlock__err(DLOCK_ETIMEDOUT,
                                  "latch %s: timed out after %lld ms; it was "
                                  "never initialised",
                                  p->key, (long long)wait_ms);
            return dlock__err(DLOCK_ETIMEDOUT,
                              "latch %s: timed out after %lld ms with %lld "
                              "count-downs left",
                              p->key, (long long)wait_ms, v.count);
        }
        int s = dlock__news_sleep(news, until, cancel, "latch", p->key);
        if (s < 0)
            return s;
    }
}

int dlock_latch_wait(dlock_client *client, const char *key, int64_t wait_ms, dlock_cancel *cancel)
{
    dlock__prim p;
    int rc = dlock__prim_begin(&p, client, key, DLOCK__FAM_LATCH, "latch");
    if (rc)
        return rc;
    dlock__news news = { 0 };
    if ((rc = dlock__prim_check_wait(wait_ms)) == 0 &&
        (rc = dlock__news_start(&news, client, p.names[DLOCK__K_LCHAN])) == 0)
        rc = wait_loop(&p, &news, wait_ms, cancel);
    dlock__news_stop(&news);
    dlock__prim_end(&p);
    return rc;
}
