/*
 * lock.c — the mutex: acquire (one attempt or waiting), release, extend,
 * local validity, key templates and dlock_with().
 *
 * An acquisition is one round trip: the acquire script checks the key, sets
 * it with our random token and TTL, and hands out the fencing token. The
 * lock's validity starts from the moment we *sent* that request (the server
 * may have granted it any time after), so the local view never outlives the
 * server's: valid_until = send time + TTL - drift, on CLOCK_BOOTTIME.
 *
 * Waiting is event-driven and fair (see wait_for()): a waiter joins the
 * key's queue in Redis, subscribes to the key's channel through the client's
 * listener, and then sleeps until a release hands it the lock (one message,
 * then one confirming round trip) or until the holder's TTL would have run
 * out. It wakes at least every REFRESH_MS to keep its queue entry alive, so
 * a waiter that dies leaves the queue within ENTRY_TTL_MS. Sleeps also watch
 * the client's close pipe and the cancel token.
 */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include "alloc.h"
#include "cancel.h"
#include "client.h"
#include "clock.h"
#include "error.h"
#include "pubsub.h"

#define ENTRY_TTL_MS 10000              /* a waiter's queue entry lives this long... */
#define REFRESH_MS (ENTRY_TTL_MS / 3)    /* ...and is refreshed this often */
#define UNCONFIRMED_RECHECK_MS 100       /* re-check interval while not subscribed */

/* Validate a lock options struct (NULL means defaults). */
static int check_opts(dlock_lock_opts *dst, const dlock_lock_opts *o)
{
    dlock_lock_opts defaults = DLOCK_LOCK_OPTS_INIT;
    if (!o)
        o = &defaults;
    if (o->version < 1 || o->version > DLOCK_LOCK_OPTS_VERSION)
        return dlock__err(DLOCK_EINVAL, "dlock_lock_opts.version %u is not supported "
                          "(initialise with DLOCK_LOCK_OPTS_INIT)", o->version);
    if (o->ttl_ms <= 0)
        return dlock__err(DLOCK_EINVAL, "ttl_ms must be > 0 (got %lld)", (long long)o->ttl_ms);
    if (o->ttl_ms > (int64_t)1 << 40)
        return dlock__err(DLOCK_EINVAL, "ttl_ms is too large (got %lld)", (long long)o->ttl_ms);
    if (o->wait_ms < 0 && o->wait_ms != DLOCK_WAIT_FOREVER)
        return dlock__err(DLOCK_EINVAL, "wait_ms must be >= 0 or DLOCK_WAIT_FOREVER (got %lld)",
                          (long long)o->wait_ms);
    if (o->version >= 1 && o->fair != 0 && o->fair != 1)
        return dlock__err(DLOCK_EINVAL, "fair must be 0 or 1 (got %d)", o->fair);
    if (!(o->renew_fraction > 0.0 && o->renew_fraction < 1.0))
        return dlock__err(DLOCK_EINVAL, "renew_fraction must be between 0 and 1, exclusive (got %g)",
                          o->renew_fraction);
    *dst = *o;
    return 0;
}

/* 32 hex digits of fresh randomness from getrandom(). */
static int make_token(char out[DLOCK__TOKEN_LEN + 1])
{
    unsigned char raw[DLOCK__TOKEN_LEN / 2];
    size_t got = 0;
    while (got < sizeof raw) {
        ssize_t r = getrandom(raw + got, sizeof raw - got, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return dlock__err(DLOCK_ENOMEM, "getrandom: %s", strerror(errno));
        }
        got += (size_t)r;
    }
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof raw; i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[DLOCK__TOKEN_LEN] = '\0';
    return 0;
}

int64_t dlock__validity_end(int64_t start_ns, int64_t ttl_ms)
{
    /* Clock drift allowance as in Redlock: 1% of the TTL plus 2 ms. */
    int64_t drift_ns = ttl_ms * 10000 + 2000000;
    return start_ns + ttl_ms * 1000000 - drift_ns;
}

static void lock_free(dlock_lock *l)
{
    if (!l)
        return;
    dlock__free(l->key);
    dlock__free(l->lock_key);
    dlock__free(l->fence_key);
    dlock__free(l->queue_key);
    dlock__free(l->qinfo_key);
    dlock__free(l->chan_key);
    dlock__free(l);
}

/* A new, not yet held handle for `key`. */
static int lock_new(dlock_lock **out, dlock_client *c, const char *key, const dlock_lock_opts *o)
{
    *out = NULL;
    dlock_lock *l = dlock__calloc(1, sizeof *l);
    if (!l)
        return dlock__err(DLOCK_ENOMEM, "out of memory");
    int rc = 0;
    if (!(l->key = dlock__strdup(key)))
        rc = dlock__err(DLOCK_ENOMEM, "out of memory");
    if (rc == 0)
        rc = dlock__key_name(&l->lock_key, c, key, "lock");
    if (rc == 0)
        rc = dlock__key_name(&l->fence_key, c, key, "fence");
    if (rc == 0)
        rc = dlock__key_name(&l->queue_key, c, key, "queue");
    if (rc == 0)
        rc = dlock__key_name(&l->qinfo_key, c, key, "qinfo");
    if (rc == 0)
        rc = dlock__key_name(&l->chan_key, c, key, "chan");
    if (rc == 0)
        rc = make_token(l->token);
    if (rc) {
        lock_free(l);
        return rc;
    }
    l->client = c;
    l->ttl_ms = o->ttl_ms;
    l->auto_renew = o->auto_renew;
    l->renew_fraction = o->renew_fraction;
    l->on_lost = o->on_lost;
    l->on_lost_arg = o->on_lost_arg;
    l->fair = o->fair;
    *out = l;
    return 0;
}

/* One acquire round trip. Returns 0 (held; fence and validity set),
 * DLOCK_EBUSY (*holder_pttl = holder's remaining TTL), or an error. */
static int attempt(dlock_lock *l, int mode, int64_t *holder_pttl)
{
    char ttl[24], mode_s[4], entry_ttl[24];
    snprintf(ttl, sizeof ttl, "%lld", (long long)l->ttl_ms);
    snprintf(mode_s, sizeof mode_s, "%d", mode);
    snprintf(entry_ttl, sizeof entry_ttl, "%d", ENTRY_TTL_MS);
    dlock__call call = {&dlock__script_acquire, 4, 5,
                        {l->lock_key, l->fence_key, l->queue_key, l->qinfo_key},
                        {l->token, l->client->owner, ttl, mode_s, entry_ttl}};
    dlock__reply *r = NULL;
    int64_t start = dlock__now_ns();
    int rc = dlock__client_run(l->client, &call, 1, &r);
    if (rc)
        return dlock__err_prefix(rc, "acquire %s", l->key);
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_INTEGER || r->element[1]->type != REDIS_REPLY_INTEGER) {
        rc = dlock__err(DLOCK_EPROTO, "acquire %s: unexpected reply%s%s", l->key,
                        r->type == REDIS_REPLY_ERROR ? ": " : "",
                        r->type == REDIS_REPLY_ERROR ? r->str : "");
    } else if (r->element[0]->integer == 1) {
        l->fence = (uint64_t)r->element[1]->integer;
        atomic_store(&l->valid_until_ns, dlock__validity_end(start, l->ttl_ms));
        atomic_store(&l->state, DLOCK__HELD);
        l->renew_at_ns = start + (int64_t)((double)l->ttl_ms * l->renew_fraction * 1e6);
    } else {
        *holder_pttl = r->element[1]->integer;
        rc = DLOCK_EBUSY;
    }
    dlock__reply_free(r);
    return rc;
}

/* Give up a wait: leave the queue, and if a release handed us the lock in
 * the meantime, release it again (to the next waiter). Keeps the caller's
 * error message. */
static void abandon(dlock_lock *l)
{
    char msg[512];
    snprintf(msg, sizeof msg, "%s", dlock_last_errmsg());
    dlock__call call = {&dlock__script_release, 5, 3,
                        {l->lock_key, l->fence_key, l->queue_key, l->qinfo_key, l->chan_key},
                        {l->token, DLOCK__HANDOFF_TTL_S, "0"}};
    dlock__reply *r = NULL;
    if (dlock__client_run(l->client, &call, 1, &r) == 0)
        dlock__reply_free(r);
    dlock__err(0, "%s", msg);
}

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* Wait for the lock after a first attempt found it busy (holder_pttl: the
 * holder's TTL as of that attempt) until `deadline` (CLOCK_BOOTTIME ns,
 * INT64_MAX: forever). Returns 0 (held), DLOCK_ETIMEDOUT, DLOCK_ECANCELED,
 * DLOCK_ECLOSED or a transport error.
 *
 * Order matters: subscribe first, then attempt again, then sleep. A release
 * between the first attempt and the subscription is caught by the second
 * attempt; any release after it is caught by the subscription. The timer
 * covers what sends no message: a holder whose TTL runs out, a handoff to a
 * waiter that died, and the periodic refresh of our queue entry. */
static int wait_for(dlock_lock *l, const dlock_lock_opts *o, int64_t deadline, int64_t holder_pttl)
{
    dlock_client *c = l->client;
    int mode = l->fair ? DLOCK__MODE_WAIT : DLOCK__MODE_UNFAIR;
    dlock__waiter w = {.channel = l->chan_key, .token = l->token};
    w.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (w.efd < 0) {
        int rc = dlock__err(DLOCK_ENOMEM, "eventfd: %s", strerror(errno));
        abandon(l);
        return rc;
    }
    int rc = dlock__listener_join(c, &w, c->command_timeout_ms);
    int subscribed = rc == 0;
    if (rc == DLOCK_ETIMEDOUT)
        rc = 0; /* not confirmed yet: re-check on a short timer meanwhile */
    int must_try = 1;
    int64_t timer = INT64_MAX;
    while (rc == 0) {
        int64_t now = dlock__now_ns();
        if (must_try) {
            must_try = 0;
            rc = attempt(l, mode, &holder_pttl);
            if (rc != DLOCK_EBUSY)
                break;
            rc = 0;
            now = dlock__now_ns();
            int64_t t = REFRESH_MS;
            if (holder_pttl > 0)
                t = min64(t, holder_pttl + 1);
            if (!subscribed)
                t = min64(t, UNCONFIRMED_RECHECK_MS);
            timer = now + t * 1000000;
        }
        if (now >= deadline) {
            /* one last look, leaving the queue if still busy */
            rc = attempt(l, DLOCK__MODE_ONCE, &holder_pttl);
            if (rc == DLOCK_EBUSY) {
                rc = dlock__err(DLOCK_ETIMEDOUT, "%s: still held by someone else after %lld ms",
                                l->key, (long long)o->wait_ms);
                atomic_fetch_add(&c->timeouts, 1);
            }
            break;
        }
        if (now >= timer) {
            must_try = 1;
            continue;
        }
        int64_t until = min64(timer, deadline);
        struct pollfd p[3] = {{.fd = w.efd, .events = POLLIN},
                              {.fd = c->wake_pipe[0], .events = POLLIN},
                              {.fd = o->cancel ? o->cancel->fd : -1, .events = POLLIN}};
        int64_t ms = (until - now + 999999) / 1000000;
        int n = poll(p, 3, (int)min64(ms, 60000));
        if (n < 0 && errno != EINTR) {
            rc = dlock__err(DLOCK_ENOMEM, "poll: %s", strerror(errno));
            abandon(l);
            break;
        }
        if (p[1].revents & POLLIN) {
            rc = dlock__err(DLOCK_ECLOSED, "the client was closed while waiting for %s", l->key);
            abandon(l);
            break;
        }
        if ((p[2].revents & POLLIN) || (o->cancel && atomic_load(&o->cancel->triggered))) {
            rc = dlock__err(DLOCK_ECANCELED, "the wait for %s was cancelled", l->key);
            abandon(l);
            break;
        }
        if (p[0].revents & POLLIN) {
            int news = dlock__listener_take(c, &w);
            if (news & (DLOCK__NEWS_MINE | DLOCK__NEWS_RESET))
                must_try = 1;
            else if (news & DLOCK__NEWS_OTHER) /* if that waiter never confirms... */
                timer = min64(timer, dlock__now_ns() + (int64_t)(DLOCK__HANDOFF_TTL_MS + 10) * 1000000);
            subscribed = subscribed || w.confirmed;
        }
    }
    dlock__listener_leave(c, &w);
    close(w.efd);
    return rc;
}

/* Acquire with the given (validated) options; wait_ms as given. */
static int acquire(dlock_lock **out, dlock_client *c, const char *key, const dlock_lock_opts *o)
{
    dlock_lock *l;
    int rc = lock_new(&l, c, key, o);
    if (rc)
        return rc;
    if ((rc = dlock__client_enter(c)) != 0) {
        lock_free(l);
        return rc;
    }
    int64_t start = dlock__now_ns();
    int64_t deadline = o->wait_ms == DLOCK_WAIT_FOREVER ? INT64_MAX : start + o->wait_ms * 1000000;
    int64_t holder_pttl = 0;
    int mode = o->wait_ms == 0 ? DLOCK__MODE_ONCE : l->fair ? DLOCK__MODE_WAIT : DLOCK__MODE_UNFAIR;
    if (o->cancel && atomic_load(&o->cancel->triggered))
        rc = dlock__err(DLOCK_ECANCELED, "the wait for %s was cancelled", key);
    else
        rc = attempt(l, mode, &holder_pttl);
    if (rc == DLOCK_EBUSY && o->wait_ms == 0) {
        rc = dlock__err(DLOCK_EBUSY, "%s is held by someone else", key);
        atomic_fetch_add(&c->busy, 1);
    } else if (rc == DLOCK_EBUSY) {
        rc = wait_for(l, o, deadline, holder_pttl);
    }
    if (rc == 0 && (rc = dlock__watchdog_add(c, l)) != 0)
        abandon(l); /* held but cannot be kept: give it back */
    if (rc == 0)
        atomic_fetch_add(&c->acquired, 1);
    dlock__client_leave(c);
    if (rc) {
        lock_free(l);
        return rc;
    }
    *out = l;
    return 0;
}

int dlock_acquire(dlock_lock **out, dlock_client *client, const char *key,
                  const dlock_lock_opts *opts)
{
    dlock__err_clear();
    if (!out)
        return dlock__err(DLOCK_EINVAL, "out is NULL");
    *out = NULL;
    if (!client)
        return dlock__err(DLOCK_EINVAL, "client is NULL");
    dlock_lock_opts o;
    int rc = check_opts(&o, opts);
    if (rc == 0)
        rc = dlock__key_check(key);
    if (rc)
        return rc;
    return acquire(out, client, key, &o);
}

int dlock_try_acquire(dlock_lock **out, dlock_client *client, const char *key,
                      const dlock_lock_opts *opts)
{
    dlock__err_clear();
    if (!out)
        return dlock__err(DLOCK_EINVAL, "out is NULL");
    *out = NULL;
    if (!client)
        return dlock__err(DLOCK_EINVAL, "client is NULL");
    dlock_lock_opts o;
    int rc = check_opts(&o, opts);
    if (rc == 0)
        rc = dlock__key_check(key);
    if (rc)
        return rc;
    o.wait_ms = 0;
    return acquire(out, client, key, &o);
}

int dlock_release(dlock_lock *l)
{
    dlock__err_clear();
    if (!l)
        return 0;
    dlock_client *c = l->client;
    pthread_mutex_lock(&c->mu);
    int on_watchdog = c->watchdog_started && pthread_equal(pthread_self(), c->watchdog);
    pthread_mutex_unlock(&c->mu);
    if (on_watchdog)
        return dlock__err(DLOCK_EINVAL, "dlock_release() cannot be called from the on_lost callback");
    /* Stop renewal first: after this no renewal of this lock is in flight
     * or will be sent, so nothing can follow our delete. */
    dlock__watchdog_remove(c, l);
    int was_valid = dlock_is_held(l);
    int lost_by_server = atomic_load(&l->state) == DLOCK__LOST && !was_valid &&
                         atomic_load(&l->renew_error) == DLOCK_ENOTHELD;
    atomic_store(&l->state, DLOCK__RELEASED);
    int rc = 0;
    if (lost_by_server) {
        rc = dlock__err(DLOCK_ENOTHELD, "release %s: the lock had been taken over", l->key);
    } else if ((rc = dlock__client_enter(c)) == 0) {
        dlock__call call = {&dlock__script_release, 5, 3,
                            {l->lock_key, l->fence_key, l->queue_key, l->qinfo_key, l->chan_key},
                            {l->token, DLOCK__HANDOFF_TTL_S, "0"}};
        dlock__reply *r = NULL;
        rc = dlock__client_run(c, &call, 1, &r);
        if (rc)
            dlock__err_prefix(rc, "release %s", l->key);
        else if (r->type != REDIS_REPLY_INTEGER)
            rc = dlock__err(DLOCK_EPROTO, "release %s: unexpected reply%s%s", l->key,
                            r->type == REDIS_REPLY_ERROR ? ": " : "", r->type == REDIS_REPLY_ERROR ? r->str : "");
        else if (r->integer != 1)
            rc = dlock__err(DLOCK_ENOTHELD, "release %s: the lock had expired or been taken over", l->key);
        else if (!was_valid)
            rc = dlock__err(DLOCK_ENOTHELD, "release %s: the lock's validity had run out before the release", l->key);
        dlock__reply_free(r);
        dlock__client_leave(c);
    }
    lock_free(l);
    return rc;
}

/* Mark l lost (once): counters, and the caller runs the callback. Returns 1
 * if this call made the transition. */
int dlock__lock_mark_lost(dlock_lock *l, int why)
{
    int expect = DLOCK__HELD;
    atomic_store(&l->renew_error, why);
    if (!atomic_compare_exchange_strong(&l->state, &expect, DLOCK__LOST))
        return 0;
    atomic_fetch_add(&l->client->lost, 1);
    atomic_fetch_sub(&l->client->held_now, 1);
    return 1;
}

int dlock_extend(dlock_lock *l, int64_t ttl_ms)
{
    dlock__err_clear();
    if (!l)
        return dlock__err(DLOCK_EINVAL, "lock is NULL");
    if (ttl_ms <= 0 || ttl_ms > (int64_t)1 << 40)
        return dlock__err(DLOCK_EINVAL, "ttl_ms must be > 0 (got %lld)", (long long)ttl_ms);
    if (!dlock_is_held(l))
        return dlock__err(DLOCK_ENOTHELD, "extend %s: the lock is no longer held", l->key);
    dlock_client *c = l->client;
    int rc = dlock__client_enter(c);
    if (rc)
        return rc;
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%lld", (long long)ttl_ms);
    dlock__call call = {&dlock__script_extend, 1, 2, {l->lock_key}, {l->token, ttl}};
    dlock__reply *r = NULL;
    int64_t start = dlock__now_ns();
    rc = dlock__client_run(c, &call, 1, &r);
    if (rc) {
        dlock__err_prefix(rc, "extend %s", l->key);
    } else if (r->type != REDIS_REPLY_INTEGER) {
        rc = dlock__err(DLOCK_EPROTO, "extend %s: unexpected reply", l->key);
    } else if (r->integer != 1) {
        rc = dlock__err(DLOCK_ENOTHELD, "extend %s: the lock had expired or been taken over", l->key);
        dlock__lock_mark_lost(l, DLOCK_ENOTHELD);
    } else {
        pthread_mutex_lock(&c->mu);
        l->ttl_ms = ttl_ms;
        l->renew_at_ns = start + (int64_t)((double)ttl_ms * l->renew_fraction * 1e6);
        atomic_store(&l->valid_until_ns, dlock__validity_end(start, ttl_ms));
        if (l->renew_at_ns < c->wd_wake_ns)
            pthread_cond_broadcast(&c->cv); /* the watchdog re-plans */
        pthread_mutex_unlock(&c->mu);
    }
    dlock__reply_free(r);
    dlock__client_leave(c);
    return rc;
}

int dlock_is_held(const dlock_lock *l)
{
    if (!l)
        return 0;
    return atomic_load(&((dlock_lock *)l)->state) == DLOCK__HELD &&
           dlock__now_ns() < atomic_load(&((dlock_lock *)l)->valid_until_ns);
}

int64_t dlock_lock_remaining_ms(const dlock_lock *l)
{
    if (!l || atomic_load(&((dlock_lock *)l)->state) != DLOCK__HELD)
        return 0;
    int64_t left = atomic_load(&((dlock_lock *)l)->valid_until_ns) - dlock__now_ns();
    return left > 0 ? left / 1000000 : 0;
}

int dlock_lock_renew_error(const dlock_lock *l)
{
    return l ? atomic_load(&((dlock_lock *)l)->renew_error) : DLOCK_EINVAL;
}

uint64_t dlock_lock_fencing_token(const dlock_lock *l)
{
    return l ? l->fence : 0;
}

const char *dlock_lock_key(const dlock_lock *l)
{
    return l ? l->key : NULL;
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
        rc = dlock__err(DLOCK_EINVAL, "dlock_keyf: key of %d bytes exceeds DLOCK_KEY_MAX (%d)", n, DLOCK_KEY_MAX);
    if (rc)
        buf[0] = '\0';
    return rc;
}

int dlock_with(dlock_client *client, const char *key, const dlock_lock_opts *opts,
               dlock_fn fn, void *arg)
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
