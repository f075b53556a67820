/*
 * acquire.c — the path every acquisition takes, and the mutex's entry
 * points (dlock_acquire, dlock_try_acquire, dlock_with).
 *
 *   1. a handle, not held yet, with a fresh token (lock.c);
 *   2. one attempt (grant.c) — mode ONCE for a try-lock, WAIT to queue,
 *      UNFAIR for fair = 0 and on Redlock (no queue: nodes' queues could
 *      disagree) — its round trip capped by the wait budget;
 *   3. busy: wait (wait.c) until held, the budget ends, cancel or close;
 *   4. held: adopted by the watchdog (renewal, close) in the same step as
 *      the call leaves the client, so a close that began meanwhile makes
 *      the acquisition give its lock back and fail with DLOCK_ECLOSED
 *      rather than hand the caller a handle close is about to free.
 * Anything that fails after a request may have reached the server gives
 * back what it may have taken (bounded), so no entry or lease is left.
 */
#include "acquire.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "cancel.h"
#include "clock.h"
#include "error.h"
#include "grant.h"
#include "wait.h"
#include "watchdog.h"

#define GIVEBACK_MS 1000 /* giving back, when no wait budget bounds it */
#define GRACE_MS 500     /* how far past its wait budget a call may run */

int dlock__acquire_check(dlock_lock **out, dlock_client *client, dlock_lock_opts *dst,
                         const dlock_lock_opts *o)
{
    dlock__err_clear();
    if (!out)
        return dlock__err(DLOCK_EINVAL, "out is NULL");
    *out = NULL;
    if (!client)
        return dlock__err(DLOCK_EINVAL, "client is NULL");
    dlock_lock_opts defaults = DLOCK_LOCK_OPTS_INIT;
    if (!o)
        o = &defaults;
    if (o->version < 1 || o->version > DLOCK_LOCK_OPTS_VERSION)
        return dlock__err(DLOCK_EINVAL,
                          "dlock_lock_opts.version %u is not supported "
                          "(initialise with DLOCK_LOCK_OPTS_INIT)",
                          o->version);
    if (o->version == 1) { /* an older caller's struct ends before `reentrant` */
        dlock_lock_opts v1 = DLOCK_LOCK_OPTS_INIT;
        memcpy(&v1, o, offsetof(dlock_lock_opts, reentrant));
        v1.version = 1;
        defaults = v1;
        o = &defaults;
    }
    if (o->ttl_ms < DLOCK__TTL_MIN_MS)
        return dlock__err(DLOCK_EINVAL,
                          "ttl_ms must be at least %d ms (got %lld): the clock "
                          "drift allowance (1%% + 2 ms) would leave no validity",
                          DLOCK__TTL_MIN_MS, (long long)o->ttl_ms);
    if (o->ttl_ms > (int64_t)1 << 40)
        return dlock__err(DLOCK_EINVAL, "ttl_ms is too large (got %lld; at most 2^40)",
                          (long long)o->ttl_ms);
    if (o->wait_ms < 0 && o->wait_ms != DLOCK_WAIT_FOREVER)
        return dlock__err(DLOCK_EINVAL, "wait_ms must be >= 0 or DLOCK_WAIT_FOREVER (got %lld)",
                          (long long)o->wait_ms);
    if (o->wait_ms > (int64_t)1 << 40)
        return dlock__err(DLOCK_EINVAL, "wait_ms is too large (got %lld; at most 2^40)",
                          (long long)o->wait_ms);
    if (!(o->renew_fraction > 0.0 && o->renew_fraction < 1.0))
        return dlock__err(DLOCK_EINVAL,
                          "renew_fraction must be between 0 and 1, exclusive (got %g)",
                          o->renew_fraction);
    if (o->fair != 0 && o->fair != 1)
        return dlock__err(DLOCK_EINVAL, "fair must be 0 or 1 (got %d)", o->fair);
    if (o->reentrant != 0 && o->reentrant != 1)
        return dlock__err(DLOCK_EINVAL, "reentrant must be 0 or 1 (got %d)", o->reentrant);
    *dst = *o;
    return 0;
}

/* The first attempt's budget: a connect and a command, capped by the wait
 * budget (plus a short grace, so a zero wait can still be answered). */
static int64_t first_budget(const dlock_client *c, const dlock_lock_opts *o)
{
    int64_t dflt = (int64_t)c->connect_timeout_ms + c->command_timeout_ms;
    if (o->wait_ms == DLOCK_WAIT_FOREVER || o->wait_ms == 0 || o->wait_ms + GRACE_MS >= dflt)
        return dflt; /* a try-lock waits for its one answer like any call */
    return o->wait_ms + GRACE_MS / 2;
}

/* The budget of a give-back: what is left until the wait budget's grace
 * runs out (a request is still sent with 1 ms: a server that is merely
 * slow runs it later), or GIVEBACK_MS without a budget. */
static int64_t giveback_budget(int64_t deadline)
{
    if (deadline == INT64_MAX)
        return GIVEBACK_MS;
    int64_t left = (deadline - dlock__now_ns()) / 1000000 + GRACE_MS;
    return left < 1 ? 1 : left > GIVEBACK_MS ? GIVEBACK_MS : left;
}

/* Attempt, then wait. Returns 0 with l held, or an error with nothing
 * left behind on the server. */
static int take(dlock_lock *l, const dlock_lock_opts *o, int64_t start)
{
    dlock_client *c = l->client;
    if (o->cancel && atomic_load(&o->cancel->triggered))
        return dlock__err(DLOCK_ECANCELED, "the wait for %s was cancelled", l->parts[0].key);
    int64_t deadline = o->wait_ms == DLOCK_WAIT_FOREVER ? INT64_MAX : start + o->wait_ms * 1000000;
    dlock__attempt a = { .mode = o->wait_ms == 0 ? DLOCK__MODE_ONCE
                                 : l->fair       ? DLOCK__MODE_WAIT
                                                 : DLOCK__MODE_UNFAIR,
                         .max_ms = first_budget(c, o) };
    int rc = dlock__grant_attempt(l, &a);
    /* busy, or granted but not acknowledged by the replicas in time (a
     * failed attempt, retried while the wait lasts): wait */
    if ((rc == DLOCK_EBUSY || a.unacked) && o->wait_ms != 0)
        return dlock__wait(l, o, deadline, &a);
    if (rc == DLOCK_ECONN && o->wait_ms > 0 && dlock__now_ns() >= deadline) {
        /* the server stopped answering and the wait budget ran out */
        char msg[400];
        snprintf(msg, sizeof msg, "%s", dlock_last_errmsg());
        rc = dlock__err(DLOCK_ETIMEDOUT,
                        "%s: timed out after %lld ms; the server did not answer "
                        "(%s)",
                        l->parts[0].key, (long long)o->wait_ms, msg);
    }
    if (rc && rc != DLOCK_EBUSY && a.unknown)
        dlock__grant_giveback(l, giveback_budget(o->wait_ms > 0 ? deadline : INT64_MAX));
    return rc;
}

int dlock__acquire(dlock_lock **out, dlock_client *c, int kind, const char *const *keys, size_t n,
                   int limit, int permits, const dlock_lock_opts *o)
{
    if (o->reentrant && kind != DLOCK__KIND_MUTEX && kind != DLOCK__KIND_READ)
        return dlock__err(DLOCK_EINVAL, "reentrant applies to mutexes, read-write locks and "
                                        "leadership, not to semaphores or multi-locks");
    if (o->reentrant && (*out = dlock__watchdog_rehold(c, kind, keys[0])) != NULL)
        return 0; /* this thread holds it already: one more hold */
    dlock_lock *l;
    int rc = dlock__lock_new(&l, c, kind, keys, n, o);
    if (rc)
        return rc;
    l->limit = limit;
    l->permits = permits;
    l->reentrant = o->reentrant;
    l->holds = 1;
    l->thread = pthread_self();
    if (c->backend == DLOCK__BACKEND_REDLOCK)
        l->fair = 0; /* the nodes' queues could disagree: nobody queues */
    if ((rc = dlock__client_enter(c)) != 0) {
        dlock__lock_free(l);
        return rc;
    }
    int64_t start = dlock__now_ns();
    rc = take(l, o, start);
    int64_t now = dlock__now_ns();
    l->acquired_ns = now;
    dlock__metrics_acquire(&c->metrics, keys[0], rc, now - start);
    if (rc == DLOCK_EBUSY || rc == DLOCK_ETIMEDOUT)
        dlock__log(c, DLOCK_LOG_DEBUG, "acquire: %s", dlock_last_errmsg());
    else if (rc)
        dlock__log(c, DLOCK_LOG_ERROR, "acquire %s failed: %s", keys[0], dlock_last_errmsg());
    if (rc == 0 && (rc = dlock__watchdog_adopt(c, l)) == 0) {
        *out = l; /* adopt left the call */
        return 0;
    }
    if (atomic_load(&l->state) == DLOCK__HELD) {
        /* held, but close began (or the watchdog cannot run): give it back */
        char msg[512];
        snprintf(msg, sizeof msg, "%s", dlock_last_errmsg());
        dlock__grant_giveback(l, GIVEBACK_MS);
        dlock__err(rc, "%s", msg);
    }
    dlock__client_leave(c);
    dlock__lock_free(l);
    return rc;
}

/* The mutex `key`, waiting as opts say, or not at all (try = 1). */
static int mutex(dlock_lock **out, dlock_client *client, const char *key,
                 const dlock_lock_opts *opts, int try)
{
    dlock_lock_opts o;
    int rc = dlock__acquire_check(out, client, &o, opts);
    if (rc == 0)
        rc = dlock__key_check(key);
    if (try)
        o.wait_ms = 0;
    return rc ? rc : dlock__acquire(out, client, DLOCK__KIND_MUTEX, &key, 1, 0, 1, &o);
}

int dlock_acquire(dlock_lock **out, dlock_client *client, const char *key,
                  const dlock_lock_opts *opts)
{
    return mutex(out, client, key, opts, 0);
}

int dlock_try_acquire(dlock_lock **out, dlock_client *client, const char *key,
                      const dlock_lock_opts *opts)
{
    return mutex(out, client, key, opts, 1);
}

int dlock_with(dlock_client *client, const char *key, const dlock_lock_opts *opts, dlock_fn fn,
               void *arg)
{
    if (!fn)
        return dlock__err(DLOCK_EINVAL, "fn is NULL");
    dlock_lock *l = NULL;
    int rc = dlock_acquire(&l, client, key, opts);
    if (rc)
        return rc;
    int frc = fn(l, arg);
    char msg[512];
    snprintf(msg, sizeof msg, "%s", dlock_last_errmsg());
    int rrc = dlock_release(l);
    if (frc == 0 && rrc == DLOCK_ENOTHELD)
        return DLOCK_ENOTHELD;
    if (frc != 0)
        dlock__err(frc, "%s", msg); /* keep fn's message, not the release's */
    return frc;
}

int dlock_keyf(char *buf, size_t size, const char *fmt, ...)
{
    dlock__err_clear();
    if (!buf || !fmt || size == 0)
        return dlock__err(DLOCK_EINVAL, "dlock_keyf: NULL buffer or format, or size 0");
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    int rc = 0;
    if (n < 0)
        rc = dlock__err(DLOCK_EINVAL, "dlock_keyf: formatting failed");
    else if ((size_t)n >= size)
        rc = dlock__err(DLOCK_EINVAL, "dlock_keyf: key of %d bytes does not fit in %zu", n, size);
    else if (n == 0)
        rc = dlock__err(DLOCK_EINVAL, "dlock_keyf: the key is empty");
    else if (n > DLOCK_KEY_MAX)
        rc = dlock__err(DLOCK_EINVAL, "dlock_keyf: key of %d bytes exceeds DLOCK_KEY_MAX (%d)", n,
                        DLOCK_KEY_MAX);
    if (rc)
        buf[0] = '\0';
    return rc;
}
