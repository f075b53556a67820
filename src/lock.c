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
 * Waiting is, for now, retrying with exponential backoff and full jitter
 * (sleep a random time in [0, min(cap, base * 2^n)]) so that contenders
 * spread out instead of retrying in lockstep. The sleeps poll the client's
 * close pipe and the cancel token, so close and cancel end a wait at once.
 */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "alloc.h"
#include "cancel.h"
#include "client.h"
#include "clock.h"
#include "error.h"

#define BACKOFF_BASE_MS 4
#define BACKOFF_CAP_MS 256

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
    *out = l;
    return 0;
}

/* One acquire round trip. Returns 0 (held; fence and validity set),
 * DLOCK_EBUSY (*holder_pttl = holder's remaining TTL), or an error. */
static int attempt(dlock_lock *l, int64_t *holder_pttl)
{
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%lld", (long long)l->ttl_ms);
    dlock__call call = {&dlock__script_acquire, 2, 3,
                        {l->lock_key, l->fence_key}, {l->token, l->client->owner, ttl}};
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

/* Sleep up to ms, waking early (with the code) on client close or cancel. */
static int nap(dlock_client *c, dlock_cancel *cancel, int64_t ms)
{
    struct pollfd p[2] = {{.fd = c->wake_pipe[0], .events = POLLIN},
                          {.fd = cancel ? cancel->fd : -1, .events = POLLIN}};
    int64_t end = dlock__now_ns() + ms * 1000000;
    for (;;) {
        if (cancel && atomic_load(&cancel->triggered))
            return dlock__err(DLOCK_ECANCELED, "the wait was cancelled");
        int64_t left = (end - dlock__now_ns()) / 1000000;
        if (left <= 0)
            return 0;
        int r = poll(p, 2, (int)(left > 1000 ? 1000 : left));
        if (r > 0 && (p[0].revents & POLLIN))
            return dlock__err(DLOCK_ECLOSED, "the client was closed while waiting");
        if (r > 0 && (p[1].revents & POLLIN))
            return dlock__err(DLOCK_ECANCELED, "the wait was cancelled");
    }
}

/* Uniform random integer in [0, n]. */
static int64_t jitter(int64_t n)
{
    uint32_t r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r)
        r = (uint32_t)dlock__now_ns();
    return n > 0 ? (int64_t)(r % (uint64_t)(n + 1)) : 0;
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
    for (int n = 0;; n++) {
        if (o->cancel && atomic_load(&o->cancel->triggered)) {
            rc = dlock__err(DLOCK_ECANCELED, "the wait was cancelled");
            break;
        }
        int64_t holder_pttl = 0;
        rc = attempt(l, &holder_pttl);
        if (rc != DLOCK_EBUSY)
            break;
        int64_t now = dlock__now_ns();
        if (o->wait_ms == 0) {
            rc = dlock__err(DLOCK_EBUSY, "%s is held by someone else", key);
            atomic_fetch_add(&c->busy, 1);
            break;
        }
        if (now >= deadline) {
            rc = dlock__err(DLOCK_ETIMEDOUT, "%s: still held by someone else after %lld ms", key,
                            (long long)o->wait_ms);
            atomic_fetch_add(&c->timeouts, 1);
            break;
        }
        int64_t cap = (int64_t)BACKOFF_BASE_MS << (n < 6 ? n : 6);
        if (cap > BACKOFF_CAP_MS)
            cap = BACKOFF_CAP_MS;
        int64_t sleep_ms = jitter(cap);
        if (holder_pttl >= 0 && sleep_ms > holder_pttl + 1)
            sleep_ms = holder_pttl + 1;
        if (deadline != INT64_MAX && sleep_ms > (deadline - now + 999999) / 1000000)
            sleep_ms = (deadline - now + 999999) / 1000000;
        if ((rc = nap(c, o->cancel, sleep_ms)) != 0)
            break;
    }
    if (rc == 0)
        rc = dlock__watchdog_add(c, l);
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
        dlock__call call = {&dlock__script_release, 1, 1, {l->lock_key}, {l->token}};
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
