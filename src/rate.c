/*
 * rate.c — the rate limiter: at most `count` starts per `period_ms`, in
 * bursts of up to `burst`, across every process that uses the key
 * (dlock_rate_acquire; the server side is src/lua/rate.lua).
 *
 * GCRA, the generic cell rate algorithm: the state is one number, TAT,
 * the theoretical arrival time, on the server's clock in microseconds. With
 * the emission interval t = period / count (rounded UP to a microsecond,
 * so the rate can only err on the slow side) and the tolerance
 * tau = (burst - 1) * t, a request at `now` conforms from TAT - tau on, and
 * a conforming request moves TAT to max(TAT, now) + t. Over any interval of
 * length L at most burst + L / t requests conform: exact, whatever the
 * number of processes, because one script decides every request on one
 * clock. A request that does not conform yet learns exactly when it will.
 *
 * Waiting is a reservation: when the next slot is within the caller's
 * wait budget, the script takes it at once (TAT moves on) and answers how
 * long to wait; the caller sleeps exactly that long (on its own clock, from
 * the reply: never earlier than the server's instant) and returns. So one
 * round trip per call, no retries, no polling, and callers are served in
 * the order they asked. A slot further away than the budget is not taken:
 * the call returns at once (DLOCK_EBUSY with no budget, DLOCK_ETIMEDOUT
 * with one). A cancelled sleep gives its slot back if no later one was
 * reserved (rate.lua 'back'); a process killed in its sleep wastes its
 * slot, which only slows the rate.
 */
#include <stdio.h>
#include <string.h>

#include "cancel.h"
#include "clock.h"
#include "error.h"
#include "primitive.h"
#include "wait.h"

#define COUNT_MAX 1000000         /* starts per period */
#define BURST_MAX 1000000         /* starts at once */
#define WINDOW_MAX_US (1LL << 50) /* burst * interval: about 35 years */
#define GIVEBACK_MS 1000

/* Check the arguments; *t_us is the emission interval. */
static int check(const char *key, int count, int64_t period_ms, int burst, int64_t wait_ms,
                 int64_t *t_us)
{
    if (count < 1 || count > COUNT_MAX)
        return dlock__err(DLOCK_EINVAL, "rate limiter %s: count must be from 1 to %d (got %d)", key,
                          COUNT_MAX, count);
    if (period_ms < 1 || period_ms > (int64_t)1 << 40)
        return dlock__err(DLOCK_EINVAL,
                          "rate limiter %s: period_ms must be from 1 to 2^40 (got "
                          "%lld)",
                          key, (long long)period_ms);
    if (burst < 1 || burst > BURST_MAX)
        return dlock__err(DLOCK_EINVAL, "rate limiter %s: burst must be from 1 to %d (got %d)", key,
                          BURST_MAX, burst);
    *t_us = (period_ms * 1000 + count - 1) / count;
    if (*t_us > WINDOW_MAX_US / burst) /* burst * t_us, without overflowing */
        return dlock__err(DLOCK_EINVAL,
                          "rate limiter %s: burst x period / count is too long "
                          "(at most 2^50 us)",
                          key);
    return dlock__prim_check_wait(wait_ms);
}

/* Sleep until `until` after a reservation. 0, or DLOCK_ECANCELED,
 * DLOCK_ECLOSED, DLOCK_ESYS: the caller gives the slot back. */
static int sleep_until(dlock_client *c, const char *key, int64_t until, dlock_cancel *cancel)
{
    for (;;) {
        if (dlock__now_ns() >= until)
            return 0;
        switch (dlock__sleep(c, until, -1, -1, cancel)) {
        case DLOCK__WOKE_CLOSED:
            return dlock__err(DLOCK_ECLOSED,
                              "the client was closed while waiting for a slot of "
                              "rate limiter %s",
                              key);
        case DLOCK__WOKE_CANCEL:
            return dlock__err(DLOCK_ECANCELED,
                              "the wait for a slot of rate limiter %s was "
                              "cancelled",
                              key);
        case DLOCK__WOKE_TIMER:
            continue;
        default:
            return DLOCK_ESYS; /* poll failed: dlock__sleep said why */
        }
    }
}

/* Give back the slot reserved at TAT `tat` (if no later one was taken);
 * keeps the caller's error message. */
static void give_back(dlock__prim *p, const char *const *args, long long tat)
{
    char msg[512], tats[24];
    snprintf(msg, sizeof msg, "%s", dlock_last_errmsg());
    snprintf(tats, sizeof tats, "%lld", tat);
    const char *back[6] = { "back", args[1], args[2], args[3], args[4], tats };
    dlock__reply *r = NULL;
    if (dlock__prim_call(&r, p, DLOCK__S_RATE, back, 6, GIVEBACK_MS, "give back", 1) == 0)
        dlock__reply_free(r);
    dlock__err(DLOCK_OK, "%s", msg);
}

/* The verdict of a 'take' reply r (asked: the count, period and burst
 * asked for, as text). Returns 0 with *wait_us and *tat set, or an
 * error. */
static int verdict(const dlock__reply *r, const char *key, int64_t wait_ms,
                   const char *const *asked, int64_t *wait_us, long long *tat)
{
    long long code = dlock__prim_int(r, 0);
    if (code == DLOCK__P_OK && r->elements == 3) {
        *wait_us = dlock__prim_int(r, 1);
        *tat = dlock__prim_int(r, 2);
        return 0;
    }
    if (code == DLOCK__P_BUSY && r->elements == 2) {
        long long next_ms = (dlock__prim_int(r, 1) + 999) / 1000;
        if (wait_ms == 0)
            return dlock__err(DLOCK_EBUSY,
                              "rate limiter %s: over the rate; the next slot is in "
                              "%lld ms",
                              key, next_ms);
        return dlock__err(DLOCK_ETIMEDOUT,
                          "rate limiter %s: the next slot is in %lld ms, "
                          "beyond the wait budget of %lld ms",
                          key, next_ms, (long long)wait_ms);
    }
    if (code == DLOCK__P_CONFLICT && r->elements == 4)
        return dlock__err(DLOCK_EINVAL,
                          "rate limiter %s is in use at %lld per %lld ms (burst %lld), not at "
                          "%s per %s ms (burst %s): use the same rate everywhere",
                          key, dlock__prim_int(r, 1), dlock__prim_int(r, 2), dlock__prim_int(r, 3),
                          asked[0], asked[1], asked[2]);
    return dlock__reply_fail(r, "the server", "rate limiter");
}

int dlock_rate_acquire(dlock_client *client, const char *key, int count, int64_t period_ms,
                       int burst, int64_t wait_ms, dlock_cancel *cancel)
{
    dlock__prim p;
    int rc = dlock__prim_begin(&p, client, key, DLOCK__FAM_RATE, "rate limiter");
    if (rc)
        return rc;
    int64_t t_us = 0, wait_us = 0;
    long long tat = 0;
    char ts[24], bs[24], cs[24], ps[24], ws[24];
    const char *args[6] = { "take", ts, bs, cs, ps, ws };
    const char *asked[3] = { cs, ps, bs };
    rc = check(key, count, period_ms, burst, wait_ms, &t_us);
    if (rc == 0 && cancel && atomic_load(&cancel->triggered))
        rc = dlock__err(DLOCK_ECANCELED, "the wait for rate limiter %s was cancelled", key);
    dlock__reply *r = NULL;
    if (rc == 0) {
        snprintf(ts, sizeof ts, "%lld", (long long)t_us);
        snprintf(bs, sizeof bs, "%d", burst);
        snprintf(cs, sizeof cs, "%d", count);
        snprintf(ps, sizeof ps, "%lld", (long long)period_ms);
        snprintf(ws, sizeof ws, "%lld",
                 wait_ms == DLOCK_WAIT_FOREVER ? -1LL : (long long)wait_ms * 1000);
        rc = dlock__prim_call(&r, &p, DLOCK__S_RATE, args, 6, 0, "take a slot of", 1);
    }
    if (rc == 0)
        rc = verdict(r, key, wait_ms, asked, &wait_us, &tat);
    dlock__reply_free(r);
    if (rc == 0 && wait_us > 0) {
        /* the slot is ours from now + wait_us on the server's clock; this
         * clock reads the reply later than the server wrote it */
        rc = sleep_until(client, key, dlock__now_ns() + wait_us * 1000, cancel);
        if (rc)
            give_back(&p, args, tat);
    }
    dlock__prim_end(&p);
    return rc;
}
