/*
 * lock.c — lock handles: acquire (one attempt or waiting) for every kind of
 * lock (mutex, read side of a read-write lock, semaphore permit, multi-lock,
 * leadership), release, extend, local validity, key templates, dlock_with().
 *
 * A handle holds one or more "parts" (user keys with their Redis names and
 * fencing tokens) and a kind; the kind picks the scripts (scripts.h). An
 * acquisition is one round trip. Its validity starts from the moment we
 * *sent* the request (the server may have granted it any time after), so the
 * local view never outlives the server's: valid_until = send time + TTL -
 * drift, on CLOCK_BOOTTIME.
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
#include <stdlib.h>
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

#define ENTRY_TTL_MS 10000            /* a waiter's queue entry lives this long... */
#define REFRESH_MS (ENTRY_TTL_MS / 3) /* ...and is refreshed this often */
#define UNCONFIRMED_RECHECK_MS 100    /* re-check interval while not subscribed */
#define SEM_LIMIT_MAX 100000
#define DLOCK__TTL_MIN_MS 10

static const char *const mutex_kinds[DLOCK__NAMES] = {"lock",  "readers", "rinfo", "fence",
                                                      "queue", "qinfo",   "chan"};
static const char *const sem_kinds[DLOCK__NAMES] = {"sem",    "sinfo",  "sfence", "squeue",
                                                    "sqinfo", "schan",  NULL};

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* Validate a lock options struct (NULL means defaults) into *dst. */
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
    if (o->ttl_ms < DLOCK__TTL_MIN_MS)
        return dlock__err(DLOCK_EINVAL, "ttl_ms must be at least %d ms (got %lld): the clock drift "
                          "allowance (1%% + 2 ms) would leave no validity", DLOCK__TTL_MIN_MS, (long long)o->ttl_ms);
    if (o->ttl_ms > (int64_t)1 << 40)
        return dlock__err(DLOCK_EINVAL, "ttl_ms is too large (got %lld)", (long long)o->ttl_ms);
    if (o->wait_ms < 0 && o->wait_ms != DLOCK_WAIT_FOREVER)
        return dlock__err(DLOCK_EINVAL, "wait_ms must be >= 0 or DLOCK_WAIT_FOREVER (got %lld)",
                          (long long)o->wait_ms);
    if (o->wait_ms > (int64_t)1 << 40)
        return dlock__err(DLOCK_EINVAL, "wait_ms is too large (got %lld)", (long long)o->wait_ms);
    if (!(o->renew_fraction > 0.0 && o->renew_fraction < 1.0))
        return dlock__err(DLOCK_EINVAL, "renew_fraction must be between 0 and 1, exclusive (got %g)",
                          o->renew_fraction);
    if (o->fair != 0 && o->fair != 1)
        return dlock__err(DLOCK_EINVAL, "fair must be 0 or 1 (got %d)", o->fair);
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

void dlock__lock_free(dlock_lock *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->nparts; i++) {
        dlock__free(l->parts[i].key);
        for (int k = 0; k < DLOCK__NAMES; k++)
            dlock__free(l->parts[i].names[k]);
    }
    dlock__free(l->parts);
    dlock__free(l);
}

/* A new, not yet held handle of `kind` for keys[0..n) (already validated
 * and free of duplicates). */
static int lock_new(dlock_lock **out, dlock_client *c, int kind, const char *const *keys,
                    size_t n, const dlock_lock_opts *o)
{
    *out = NULL;
    dlock_lock *l = dlock__calloc(1, sizeof *l);
    if (!l)
        return dlock__err(DLOCK_ENOMEM, "out of memory");
    l->parts = dlock__calloc(n, sizeof *l->parts);
    int rc = l->parts ? 0 : dlock__err(DLOCK_ENOMEM, "out of memory");
    if (rc == 0)
        l->nparts = n;
    const char *const *kinds = kind == DLOCK__KIND_SEM ? sem_kinds : mutex_kinds;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (!(l->parts[i].key = dlock__strdup(keys[i])))
            rc = dlock__err(DLOCK_ENOMEM, "out of memory");
        for (int k = 0; k < DLOCK__NAMES && rc == 0; k++)
            if (kinds[k])
                rc = dlock__key_name(&l->parts[i].names[k], c, keys[i], kinds[k]);
    }
    if (rc == 0)
        rc = make_token(l->token);
    if (rc) {
        dlock__lock_free(l);
        return rc;
    }
    l->client = c;
    l->kind = kind;
    l->slot = -1;
    l->release_args[0] = l->token;
    l->release_args[1] = DLOCK__HANDOFF_TTL_S;
    l->release_args[2] = "0";
    l->ttl_ms = o->ttl_ms;
    l->auto_renew = o->auto_renew;
    l->renew_fraction = o->renew_fraction;
    l->on_lost = o->on_lost;
    l->on_lost_arg = o->on_lost_arg;
    l->fair = o->fair;
    *out = l;
    return 0;
}

void dlock__lock_extend_calls(const dlock_lock *l, dlock__call *calls, const char **args,
                              const char *ttl)
{
    for (size_t i = 0; i < l->nparts; i++) {
        args[2 * i] = l->token;
        args[2 * i + 1] = ttl;
        const dlock__part *p = &l->parts[i];
        if (l->kind == DLOCK__KIND_READ)
            calls[i] = (dlock__call){&dlock__script_member_extend, 2, 2,
                                     (const char *const *)&p->names[1], &args[2 * i]};
        else if (l->kind == DLOCK__KIND_SEM)
            calls[i] = (dlock__call){&dlock__script_member_extend, 2, 2,
                                     (const char *const *)&p->names[0], &args[2 * i]};
        else
            calls[i] = (dlock__call){&dlock__script_extend, 1, 2,
                                     (const char *const *)&p->names[0], &args[2 * i]};
    }
}

void dlock__lock_release_calls(const dlock_lock *l, dlock__call *calls)
{
    for (size_t i = 0; i < l->nparts; i++) {
        const char *const *keys = (const char *const *)l->parts[i].names;
        if (l->kind == DLOCK__KIND_READ)
            calls[i] = (dlock__call){&dlock__script_read_release, 7, 2, keys, l->release_args};
        else if (l->kind == DLOCK__KIND_SEM)
            calls[i] = (dlock__call){&dlock__script_sem_release, 6, 2, keys, l->release_args};
        else
            calls[i] = (dlock__call){&dlock__script_release, 7, 3, keys, l->release_args};
    }
}

/* Run the release calls of every part on every node in one round trip.
 * Returns 0 if the lock was ours (on a quorum of nodes), DLOCK_ENOTHELD if
 * it was not, or a transport error. */
static int release_parts(dlock_lock *l)
{
    dlock__call calls[DLOCK_MULTI_MAX];
    dlock__lock_release_calls(l, calls);
    dlock__fanout f;
    char what[DLOCK_KEY_MAX + 16];
    snprintf(what, sizeof what, "release %s", l->parts[0].key);
    int rc = dlock__fanout_run(l->client, calls, (int)l->nparts, 0, &f);
    rc = rc == DLOCK_ENOMEM ? rc : dlock__fanout_verdict(l->client, &f, 0, (int)l->nparts, what);
    dlock__fanout_free(&f);
    return rc;
}

/* One acquire round trip. Returns 0 (held; fences, slot and validity set),
 * DLOCK_EBUSY (*wait_hint_ms: when the holder's TTL runs out, 0 unknown),
 * or an error. */
static int attempt(dlock_lock *l, int mode, int64_t *wait_hint_ms)
{
    dlock_client *c = l->client;
    char ttl[24], mode_s[4], entry_ttl[24], limit[24];
    snprintf(ttl, sizeof ttl, "%lld", (long long)l->ttl_ms);
    snprintf(mode_s, sizeof mode_s, "%d", mode);
    snprintf(entry_ttl, sizeof entry_ttl, "%d", ENTRY_TTL_MS);
    snprintf(limit, sizeof limit, "%d", l->limit);
    const char *args[6] = {l->token, c->owner, ttl, mode_s, entry_ttl,
                           l->kind == DLOCK__KIND_SEM ? limit : l->announce ? "1" : "0"};
    const char *const *names = (const char *const *)l->parts[0].names;
    const char *multi_small[12], **multi_keys = NULL;
    dlock__call call;
    switch (l->kind) {
    case DLOCK__KIND_READ:
        call = (dlock__call){&dlock__script_read_acquire, 7, 5, names, args};
        break;
    case DLOCK__KIND_SEM:
        call = (dlock__call){&dlock__script_sem_acquire, 6, 6, names, args};
        break;
    case DLOCK__KIND_MULTI:
        multi_keys = l->nparts <= 4 ? multi_small : dlock__calloc(3 * l->nparts, sizeof *multi_keys);
        if (!multi_keys)
            return dlock__err(DLOCK_ENOMEM, "out of memory");
        for (size_t i = 0; i < l->nparts; i++) {
            multi_keys[3 * i] = l->parts[i].names[0];     /* lock */
            multi_keys[3 * i + 1] = l->parts[i].names[1]; /* readers */
            multi_keys[3 * i + 2] = l->parts[i].names[3]; /* fence */
        }
        call = (dlock__call){&dlock__script_multi_acquire, (int)(3 * l->nparts), 3, multi_keys, args};
        break;
    default:
        call = (dlock__call){&dlock__script_acquire, 7, 6, names, args};
    }
    int64_t start = dlock__now_ns();
    dlock__fanout f;
    int rc = dlock__fanout_run(c, &call, 1, 0, &f);
    if (multi_keys && multi_keys != multi_small)
        dlock__free(multi_keys);
    if (rc == DLOCK_ENOMEM)
        return rc;
    size_t want = l->kind == DLOCK__KIND_MULTI ? 1 + l->nparts : l->kind == DLOCK__KIND_SEM ? 3 : 2;
    int granted = 0, busy = 0;
    int64_t hint = 0;
    uint64_t fences[DLOCK_MULTI_MAX] = {0};
    int slot = -1;
    for (int i = 0; i < f.nnodes; i++) {
        if (f.rc[i])
            continue;
        dlock__reply *r = f.replies[i][0];
        int ok = r->type == REDIS_REPLY_ARRAY && r->elements >= 2;
        for (size_t k = 0; ok && k < r->elements; k++)
            ok = r->element[k]->type == REDIS_REPLY_INTEGER;
        if (ok && r->element[0]->integer == 1 && r->elements != want)
            ok = 0;
        if (!ok) {
            f.rc[i] = dlock__err(DLOCK_EPROTO, "%s: unexpected reply%s%s", c->nodes[i].ep.desc,
                                 r->type == REDIS_REPLY_ERROR ? ": " : "",
                                 r->type == REDIS_REPLY_ERROR ? r->str : "");
            snprintf(f.err[i], sizeof f.err[i], "%s", dlock_last_errmsg());
        } else if (r->element[0]->integer == 1) {
            granted++;
            for (size_t p = 0; p < l->nparts; p++) {
                uint64_t v = (uint64_t)r->element[l->kind == DLOCK__KIND_MULTI ? 1 + p : 1]->integer;
                if (v > fences[p])
                    fences[p] = v;
            }
            if (l->kind == DLOCK__KIND_SEM && slot < 0)
                slot = (int)r->element[2]->integer;
        } else {
            busy++;
            if (r->element[1]->integer > hint)
                hint = r->element[1]->integer;
        }
    }
    char what[DLOCK_KEY_MAX + 16];
    snprintf(what, sizeof what, "acquire %s", l->parts[0].key);
    int won = granted >= c->quorum && dlock__now_ns() < dlock__validity_end(start, l->ttl_ms);
    if (won && c->voters > 1) {
        /* write the lock's tokens back, so every later majority (which
         * shares a node with this one) hands out larger ones */
        dlock__call floor_calls[DLOCK_MULTI_MAX];
        char tokens[DLOCK_MULTI_MAX][24];
        const char *targs[DLOCK_MULTI_MAX];
        for (size_t p = 0; p < l->nparts; p++) {
            snprintf(tokens[p], sizeof tokens[p], "%llu", (unsigned long long)fences[p]);
            targs[p] = tokens[p];
            floor_calls[p] = (dlock__call){&dlock__script_fence_floor, 1, 1,
                                           (const char *const *)&l->parts[p].names[l->kind == DLOCK__KIND_SEM ? 2 : 3],
                                           &targs[p]};
        }
        dlock__fanout g;
        int grc = dlock__fanout_run(c, floor_calls, (int)l->nparts, 0, &g);
        won = grc == 0 && dlock__fanout_verdict(c, &g, 0, (int)l->nparts, what) == 0 &&
              dlock__now_ns() < dlock__validity_end(start, l->ttl_ms);
        dlock__fanout_free(&g);
    }
    if (won) {
        for (size_t p = 0; p < l->nparts; p++)
            l->parts[p].fence = fences[p];
        l->slot = slot;
        atomic_store(&l->valid_until_ns, dlock__validity_end(start, l->ttl_ms));
        atomic_store(&l->state, DLOCK__HELD);
        l->renew_at_ns = start + (int64_t)((double)l->ttl_ms * l->renew_fraction * 1e6);
        rc = 0;
    } else {
        if (granted > 0) {
            /* a minority, or a grant that came back too late to be valid:
             * give it back at once */
            char msg[512];
            snprintf(msg, sizeof msg, "%s", dlock_last_errmsg());
            release_parts(l);
            dlock__err(0, "%s", msg);
        }
        int failed = f.nnodes - granted - busy;
        if (failed > 0 && (f.nnodes == 1 || failed > f.nnodes - c->quorum)) {
            rc = dlock__fanout_error(&f, what);
        } else {
            *wait_hint_ms = hint;
            rc = DLOCK_EBUSY;
        }
    }
    dlock__fanout_free(&f);
    return rc;
}

/* Give up a wait: leave the queue(s), and if a release handed us the lock
 * in the meantime, release it again (to the next waiter). Keeps the
 * caller's error message. */
static void abandon(dlock_lock *l)
{
    char msg[512];
    snprintf(msg, sizeof msg, "%s", dlock_last_errmsg());
    release_parts(l);
    dlock__err(0, "%s", msg);
}

/* Wait for the lock after a first attempt found it busy (hint: when the
 * holder's TTL runs out, ms) until `deadline` (CLOCK_BOOTTIME ns,
 * INT64_MAX: forever). Returns 0 (held), DLOCK_ETIMEDOUT, DLOCK_ECANCELED,
 * DLOCK_ECLOSED or a transport error.
 *
 * Order matters: subscribe first, then attempt again, then sleep. A release
 * between the first attempt and the subscription is caught by the second
 * attempt; any release after it is caught by the subscription. The timer
 * covers what sends no message: a holder whose TTL runs out, a handoff to a
 * waiter that died, and the periodic refresh of our queue entry. */
static int wait_for(dlock_lock *l, const dlock_lock_opts *o, int64_t deadline, int64_t hint)
{
    dlock_client *c = l->client;
    int mode = l->fair ? DLOCK__MODE_WAIT : DLOCK__MODE_UNFAIR;
    dlock__waiter small[8], *ws = small;
    size_t nw = l->nparts * (size_t)c->voters; /* Redlock: every node's channel */
    if (nw > 8 && !(ws = dlock__calloc(nw, sizeof *ws))) {
        int rc = dlock__err(DLOCK_ENOMEM, "out of memory");
        abandon(l);
        return rc;
    }
    int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0) {
        int rc = dlock__err(DLOCK_ENOMEM, "eventfd: %s", strerror(errno));
        if (ws != small)
            dlock__free(ws);
        abandon(l);
        return rc;
    }
    int rc = 0, subscribed = 1;
    size_t joined = 0;
    int chan = l->kind == DLOCK__KIND_SEM ? DLOCK__N_SCHAN : DLOCK__N_CHAN;
    for (; joined < nw; joined++) {
        ws[joined] = (dlock__waiter){.node = (int)(joined % (size_t)c->voters),
                                     .channel = l->parts[joined / (size_t)c->voters].names[chan],
                                     .token = l->token, .efd = efd};
        int jrc = dlock__listener_join(c, &ws[joined], c->command_timeout_ms);
        if (jrc == DLOCK_ETIMEDOUT) {
            subscribed = 0; /* not confirmed yet: re-check on a short timer */
        } else if (jrc) {
            rc = jrc;
            break;
        }
    }
    if (rc)
        abandon(l);
    int must_try = 1;
    int64_t timer = INT64_MAX;
    while (rc == 0) {
        int64_t now = dlock__now_ns();
        if (must_try) {
            must_try = 0;
            rc = attempt(l, mode, &hint);
            if (rc != DLOCK_EBUSY)
                break;
            rc = 0;
            now = dlock__now_ns();
            int64_t t = REFRESH_MS;
            if (hint > 0)
                t = min64(t, hint + 1);
            if (!subscribed)
                t = min64(t, UNCONFIRMED_RECHECK_MS);
            timer = now + t * 1000000;
        }
        if (now >= deadline) {
            /* one last look, leaving the queue if still busy */
            rc = attempt(l, DLOCK__MODE_ONCE, &hint);
            if (rc == DLOCK_EBUSY) {
                rc = dlock__err(DLOCK_ETIMEDOUT, "%s: still held by someone else after %lld ms",
                                l->parts[0].key, (long long)o->wait_ms);
            }
            break;
        }
        if (now >= timer) {
            must_try = 1;
            continue;
        }
        int64_t until = min64(timer, deadline);
        struct pollfd p[3] = {{.fd = efd, .events = POLLIN},
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
            rc = dlock__err(DLOCK_ECLOSED, "the client was closed while waiting for %s", l->parts[0].key);
            abandon(l);
            break;
        }
        if ((p[2].revents & POLLIN) || (o->cancel && atomic_load(&o->cancel->triggered))) {
            rc = dlock__err(DLOCK_ECANCELED, "the wait for %s was cancelled", l->parts[0].key);
            abandon(l);
            break;
        }
        if (p[0].revents & POLLIN) {
            int news = 0, all = 1;
            for (size_t i = 0; i < joined; i++) {
                int confirmed;
                news |= dlock__listener_take(c, &ws[i], &confirmed);
                all = all && confirmed;
            }
            subscribed = all;
            if (news & (DLOCK__NEWS_MINE | DLOCK__NEWS_RESET))
                must_try = 1;
            else if (news & DLOCK__NEWS_OTHER) /* if that waiter never confirms... */
                timer = min64(timer, dlock__now_ns() + (int64_t)(DLOCK__HANDOFF_TTL_MS + 10) * 1000000);
        }
    }
    for (size_t i = 0; i < joined; i++)
        dlock__listener_leave(c, &ws[i]);
    close(efd);
    if (ws != small)
        dlock__free(ws);
    return rc;
}

/* The time left until `until` as BLPOP's timeout (seconds, ms precision,
 * at least 10 ms). */
static void blpop_timeout(char *buf, size_t n, int64_t until, int64_t now)
{
    int64_t ms = (until - now) / 1000000;
    if (ms < 10)
        ms = 10;
    snprintf(buf, n, "%lld.%03lld", (long long)(ms / 1000), (long long)(ms % 1000));
}

/* A handoff signal "<fence>:<px>:<slot>" popped by this waiter: the lock
 * was set for it with a TTL of px ms at some moment after `since` (the send
 * time of its last attempt that found the lock busy, so nothing had been
 * handed to it then). Counting the validity from `since` is conservative,
 * and the waiter's own BLPOP round trip is what confirmed the grant; if
 * enough validity is left, take the lock (the watchdog brings its TTL back
 * to the full TTL at once) and return 1; else 0 (confirm with an attempt,
 * which also sets the full TTL: always so for locks without auto-renew). */
static int take_signal(dlock_lock *l, const char *v, int64_t since)
{
    char *end;
    errno = 0;
    unsigned long long fence = strtoull(v, &end, 10);
    if (errno || *end != ':' || fence == 0)
        return 0;
    long long px = strtoll(end + 1, &end, 10);
    if (*end != ':' || px <= 0)
        return 0;
    long slot = strtol(end + 1, &end, 10);
    if (*end || since <= 0 || !l->auto_renew)
        return 0; /* without the watchdog the lock must get its full TTL now */
    int64_t valid_until = dlock__validity_end(since, px);
    int64_t now = dlock__now_ns();
    if (now + 5000000 >= valid_until) /* less than 5 ms left: confirm instead */
        return 0;
    l->parts[0].fence = fence;
    if (l->kind == DLOCK__KIND_SEM)
        l->slot = (int)slot;
    atomic_store(&l->valid_until_ns, valid_until);
    atomic_store(&l->state, DLOCK__HELD);
    l->renew_at_ns = now; /* renew at once: the server TTL is only px */
    return 1;
}

/* Fair waiting on one server (or the Sentinel master): the waiter blocks in
 * BLPOP on its own signal list (<queue key><token>), into which a release
 * that hands it the lock pushes an element. The wake-up goes straight from
 * the server to this thread's socket (no listener thread in between), and
 * the list keeps a signal that arrives before the BLPOP does, so nothing is
 * missed between a failed attempt and the wait. Each BLPOP times out at the
 * next timer (the holder's TTL, the queue-entry refresh, the deadline).
 * Returns as wait_for(). */
static int wait_signal(dlock_lock *l, const dlock_lock_opts *o, int64_t deadline, int64_t hint)
{
    dlock_client *c = l->client;
    const char *queue = l->parts[0].names[l->kind == DLOCK__KIND_SEM ? 3 : 4];
    size_t qlen = strlen(queue);
    char *sig = dlock__malloc(qlen + DLOCK__TOKEN_LEN + 1);
    if (!sig) {
        int rc = dlock__err(DLOCK_ENOMEM, "out of memory");
        abandon(l);
        return rc;
    }
    memcpy(sig, queue, qlen);
    memcpy(sig + qlen, l->token, DLOCK__TOKEN_LEN + 1);
    dlock__conn *conn = NULL;
    int rc = 0, blocked = 0, must_try = 1, signal_failed = 0;
    int64_t timer = INT64_MAX, reply_by = INT64_MAX, last_busy = 0;
    while (rc == 0) {
        int64_t now = dlock__now_ns();
        if (must_try) {
            must_try = 0;
            int64_t sent = dlock__now_ns();
            rc = attempt(l, DLOCK__MODE_WAIT, &hint);
            if (rc != DLOCK_EBUSY)
                break;
            rc = 0;
            last_busy = sent; /* nothing was handed to us before this */
            now = dlock__now_ns();
            int64_t t = REFRESH_MS;
            if (hint > 0)
                t = min64(t, hint + 1);
            timer = now + t * 1000000;
        }
        if (!blocked && now >= deadline) {
            /* one last look, leaving the queue if still busy */
            rc = attempt(l, DLOCK__MODE_ONCE, &hint);
            if (rc == DLOCK_EBUSY)
                rc = dlock__err(DLOCK_ETIMEDOUT, "%s: still held by someone else after %lld ms",
                                l->parts[0].key, (long long)o->wait_ms);
            break;
        }
        if (!blocked) {
            int reused;
            if (!conn && dlock__client_conn_get(c, 0, &conn, &reused, c->connect_timeout_ms) != 0) {
                signal_failed = 1;
                break;
            }
            char secs[32];
            int64_t until = min64(timer, deadline);
            blpop_timeout(secs, sizeof secs, until, now);
            const char *argv[3] = {"BLPOP", sig, secs};
            rc = dlock__conn_append(conn, 3, argv, NULL);
            if (rc == 0)
                rc = dlock__conn_send(conn, c->command_timeout_ms);
            if (rc) {
                signal_failed = rc != DLOCK_ENOMEM;
                if (signal_failed)
                    rc = 0;
                break;
            }
            blocked = 1;
            /* the server answers by then (nil at its timeout) */
            reply_by = until + (int64_t)c->command_timeout_ms * 1000000;
        }
        struct pollfd p[3] = {{.fd = dlock__conn_poll_fd(conn), .events = POLLIN},
                              {.fd = c->wake_pipe[0], .events = POLLIN},
                              {.fd = o->cancel ? o->cancel->fd : -1, .events = POLLIN}};
        dlock__reply *r = NULL;
        rc = dlock__conn_read(conn, &r, 0); /* a reply may already be buffered */
        if (rc) {
            signal_failed = 1;
            rc = 0;
            break;
        }
        if (!r) {
            int64_t ms = (reply_by - now + 999999) / 1000000;
            int n = poll(p, 3, (int)min64(ms > 0 ? ms : 0, 60000));
            if (n < 0 && errno != EINTR) {
                rc = dlock__err(DLOCK_ENOMEM, "poll: %s", strerror(errno));
                break;
            }
            if (p[1].revents & POLLIN) {
                rc = dlock__err(DLOCK_ECLOSED, "the client was closed while waiting for %s", l->parts[0].key);
                break;
            }
            if ((p[2].revents & POLLIN) || (o->cancel && atomic_load(&o->cancel->triggered))) {
                rc = dlock__err(DLOCK_ECANCELED, "the wait for %s was cancelled", l->parts[0].key);
                break;
            }
            if (dlock__now_ns() >= reply_by) {
                dlock__err(DLOCK_ECONN, "%s: no answer to BLPOP", dlock__conn_desc(conn));
                signal_failed = 1;
                break;
            }
            if (dlock__conn_read(conn, &r, 0) != 0) {
                signal_failed = 1;
                break;
            }
            if (!r)
                continue;
        }
        /* the BLPOP came back: signalled, or timed out at our next timer */
        dlock__conn_count_round_trip(conn);
        blocked = 0;
        if (r->type == REDIS_REPLY_ERROR) {
            /* e.g. READONLY after a failover, or NOPERM */
            dlock__err(DLOCK_EPROTO, "BLPOP: %s", r->str);
            dlock__reply_free(r);
            signal_failed = 1;
            break;
        }
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[1]->type == REDIS_REPLY_STRING &&
            take_signal(l, r->element[1]->str, last_busy)) {
            dlock__reply_free(r);
            rc = 0;
            break; /* handed to us: held, no confirming round trip needed */
        }
        dlock__reply_free(r);
        must_try = 1;
    }
    if (conn) {
        if (blocked || signal_failed)
            dlock__conn_close(conn); /* a BLPOP may still be pending on it */
        else
            dlock__client_conn_put(c, 0, conn);
    }
    dlock__free(sig);
    if (signal_failed) {
        /* the BLPOP connection failed (dropped, server restarted, master
         * demoted): keep waiting through pub/sub, which reconnects */
        dlock__log(c, DLOCK_LOG_INFO, "waiting for %s: %s; waiting through pub/sub instead",
                   l->parts[0].key, dlock_last_errmsg());
        return wait_for(l, o, deadline, hint);
    }
    if (rc && rc != DLOCK_ETIMEDOUT && atomic_load(&l->state) != DLOCK__HELD)
        abandon(l);
    return rc;
}

/* Acquire a new handle of `kind` on keys[0..n) with validated options. */
static int acquire(dlock_lock **out, dlock_client *c, int kind, const char *const *keys, size_t n,
                   int limit, int announce, const dlock_lock_opts *o)
{
    dlock_lock *l;
    int rc = lock_new(&l, c, kind, keys, n, o);
    if (rc)
        return rc;
    l->limit = limit;
    l->announce = announce;
    if (kind == DLOCK__KIND_MULTI || c->backend == DLOCK__BACKEND_REDLOCK)
        l->fair = 0; /* multi-locks never queue (dlock_acquire_all); on Redlock
                        the nodes' queues could disagree, so nobody queues */
    if ((rc = dlock__client_enter(c)) != 0) {
        dlock__lock_free(l);
        return rc;
    }
    int64_t start = dlock__now_ns();
    int64_t deadline = o->wait_ms == DLOCK_WAIT_FOREVER ? INT64_MAX : start + o->wait_ms * 1000000;
    int64_t hint = 0;
    int mode = o->wait_ms == 0 ? DLOCK__MODE_ONCE : l->fair ? DLOCK__MODE_WAIT : DLOCK__MODE_UNFAIR;
    if (o->cancel && atomic_load(&o->cancel->triggered))
        rc = dlock__err(DLOCK_ECANCELED, "the wait for %s was cancelled", keys[0]);
    else
        rc = attempt(l, mode, &hint);
    if (rc == DLOCK_EBUSY && o->wait_ms == 0) {
        rc = dlock__err(DLOCK_EBUSY, "%s is held by someone else", keys[0]);
    } else if (rc == DLOCK_EBUSY) {
        rc = l->fair && c->voters == 1 && c->backend != DLOCK__BACKEND_CLUSTER && kind != DLOCK__KIND_MULTI
                 ? wait_signal(l, o, deadline, hint)
                 : wait_for(l, o, deadline, hint);
    }
    if (rc == 0 && (rc = dlock__watchdog_add(c, l)) != 0)
        abandon(l); /* held but cannot be kept: give it back */
    int64_t now = dlock__now_ns();
    l->acquired_ns = now;
    dlock__metrics_acquire(&c->metrics, keys[0], rc, now - start);
    if (rc == DLOCK_EBUSY || rc == DLOCK_ETIMEDOUT)
        dlock__log(c, DLOCK_LOG_DEBUG, "acquire: %s", dlock_last_errmsg());
    else if (rc)
        dlock__log(c, DLOCK_LOG_ERROR, "acquire %s failed: %s", keys[0], dlock_last_errmsg());
    dlock__client_leave(c);
    if (rc) {
        dlock__lock_free(l);
        return rc;
    }
    *out = l;
    return 0;
}

/* Common argument checks of the acquire family. */
static int check_acquire(dlock_lock **out, dlock_client *client, dlock_lock_opts *o,
                         const dlock_lock_opts *opts)
{
    dlock__err_clear();
    if (!out)
        return dlock__err(DLOCK_EINVAL, "out is NULL");
    *out = NULL;
    if (!client)
        return dlock__err(DLOCK_EINVAL, "client is NULL");
    return check_opts(o, opts);
}

int dlock_acquire(dlock_lock **out, dlock_client *client, const char *key,
                  const dlock_lock_opts *opts)
{
    dlock_lock_opts o;
    int rc = check_acquire(out, client, &o, opts);
    if (rc == 0)
        rc = dlock__key_check(key);
    return rc ? rc : acquire(out, client, DLOCK__KIND_MUTEX, &key, 1, 0, 0, &o);
}

int dlock_try_acquire(dlock_lock **out, dlock_client *client, const char *key,
                      const dlock_lock_opts *opts)
{
    dlock_lock_opts o;
    int rc = check_acquire(out, client, &o, opts);
    if (rc == 0)
        rc = dlock__key_check(key);
    o.wait_ms = 0;
    return rc ? rc : acquire(out, client, DLOCK__KIND_MUTEX, &key, 1, 0, 0, &o);
}

int dlock_rw_acquire(dlock_lock **out, dlock_client *client, const char *key, int mode,
                     const dlock_lock_opts *opts)
{
    dlock_lock_opts o;
    int rc = check_acquire(out, client, &o, opts);
    if (rc == 0)
        rc = dlock__key_check(key);
    if (rc == 0 && mode != DLOCK_READ && mode != DLOCK_WRITE)
        rc = dlock__err(DLOCK_EINVAL, "mode must be DLOCK_READ or DLOCK_WRITE (got %d)", mode);
    if (rc)
        return rc;
    return acquire(out, client, mode == DLOCK_READ ? DLOCK__KIND_READ : DLOCK__KIND_MUTEX, &key, 1,
                   0, 0, &o);
}

int dlock_sem_acquire(dlock_lock **out, dlock_client *client, const char *key, int limit,
                      const dlock_lock_opts *opts)
{
    dlock_lock_opts o;
    int rc = check_acquire(out, client, &o, opts);
    if (rc == 0)
        rc = dlock__key_check(key);
    if (rc == 0 && (limit < 1 || limit > SEM_LIMIT_MAX))
        rc = dlock__err(DLOCK_EINVAL, "limit must be from 1 to %d (got %d)", SEM_LIMIT_MAX, limit);
    if (rc == 0 && client->backend == DLOCK__BACKEND_REDLOCK)
        rc = dlock__err(DLOCK_EINVAL, "semaphores are not available on Redlock: permits counted "
                        "separately on each server could admit more than `limit` holders");
    return rc ? rc : acquire(out, client, DLOCK__KIND_SEM, &key, 1, limit, 0, &o);
}

int dlock_campaign(dlock_lock **out, dlock_client *client, const char *key,
                   const dlock_lock_opts *opts)
{
    dlock_lock_opts o;
    int rc = check_acquire(out, client, &o, opts);
    if (rc == 0)
        rc = dlock__key_check(key);
    return rc ? rc : acquire(out, client, DLOCK__KIND_MUTEX, &key, 1, 0, 1, &o);
}

int dlock_acquire_all(dlock_lock **out, dlock_client *client, const char *const *keys, size_t n,
                      const dlock_lock_opts *opts)
{
    dlock_lock_opts o;
    int rc = check_acquire(out, client, &o, opts);
    if (rc)
        return rc;
    if (!keys || n == 0)
        return dlock__err(DLOCK_EINVAL, "no keys given");
    if (n > DLOCK_MULTI_MAX)
        return dlock__err(DLOCK_EINVAL, "%zu keys; at most %d can be locked together", n, DLOCK_MULTI_MAX);
    const char *uniq[DLOCK_MULTI_MAX];
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if ((rc = dlock__key_check(keys[i])) != 0)
            return dlock__err_prefix(rc, "key %zu", i + 1);
        size_t j = 0;
        while (j < m && strcmp(uniq[j], keys[i]) != 0)
            j++;
        if (j == m)
            uniq[m++] = keys[i];
    }
    if (client->backend == DLOCK__BACKEND_CLUSTER) {
        /* one script must see every key: they must share a slot */
        char *a = NULL, *b = NULL;
        for (size_t i = 1; rc == 0 && i < m; i++) {
            rc = dlock__key_name(&a, client, uniq[0], "lock");
            if (rc == 0)
                rc = dlock__key_name(&b, client, uniq[i], "lock");
            if (rc == 0 && dlock__key_slot(a) != dlock__key_slot(b))
                rc = dlock__err(DLOCK_EINVAL, "on Redis Cluster the keys of a multi-lock must share a slot: "
                                              "'%s' and '%s' do not (give them a common {hash tag})",
                                uniq[0], uniq[i]);
            dlock__free(a);
            dlock__free(b);
            a = b = NULL;
        }
        if (rc)
            return rc;
    }
    return acquire(out, client, m == 1 ? DLOCK__KIND_MUTEX : DLOCK__KIND_MULTI, uniq, m, 0, 0, &o);
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
    int lost_by_server = atomic_load(&l->state) == DLOCK__LOST &&
                         atomic_load(&l->renew_error) == DLOCK_ENOTHELD;
    atomic_store(&l->state, DLOCK__RELEASED);
    int rc = 0;
    if (lost_by_server) {
        rc = dlock__err(DLOCK_ENOTHELD, "release %s: the lock had been taken over", l->parts[0].key);
    } else if ((rc = dlock__client_enter(c)) == 0) {
        rc = release_parts(l);
        if (rc == 0 && !was_valid)
            rc = dlock__err(DLOCK_ENOTHELD, "release %s: the lock's validity had run out before the release",
                            l->parts[0].key);
        dlock__client_leave(c);
    }
    dlock__metrics_release(&c->metrics, l->parts[0].key, rc, dlock__now_ns() - l->acquired_ns);
    dlock__lock_free(l);
    return rc;
}

int dlock_resign(dlock_lock *leadership)
{
    return dlock_release(leadership);
}

int dlock__lock_mark_lost(dlock_lock *l, int why)
{
    int expect = DLOCK__HELD;
    atomic_store(&l->renew_error, why);
    if (!atomic_compare_exchange_strong(&l->state, &expect, DLOCK__LOST))
        return 0;
    atomic_fetch_add(&l->client->metrics.lost, 1);
    dlock__log(l->client, DLOCK_LOG_ERROR, "lock %s lost: %s", l->parts[0].key,
               why == DLOCK_ENOTHELD ? "the server says it is no longer ours"
                                     : "renewal could not confirm it before its validity ran out");
    return 1;
}

int dlock_extend(dlock_lock *l, int64_t ttl_ms)
{
    dlock__err_clear();
    if (!l)
        return dlock__err(DLOCK_EINVAL, "lock is NULL");
    if (ttl_ms < DLOCK__TTL_MIN_MS || ttl_ms > (int64_t)1 << 40)
        return dlock__err(DLOCK_EINVAL, "ttl_ms must be at least %d ms (got %lld)", DLOCK__TTL_MIN_MS,
                          (long long)ttl_ms);
    if (!dlock_is_held(l))
        return dlock__err(DLOCK_ENOTHELD, "extend %s: the lock is no longer held", l->parts[0].key);
    dlock_client *c = l->client;
    int rc = dlock__client_enter(c);
    if (rc)
        return rc;
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%lld", (long long)ttl_ms);
    dlock__call calls[DLOCK_MULTI_MAX];
    const char *args[2 * DLOCK_MULTI_MAX];
    dlock__lock_extend_calls(l, calls, args, ttl);
    int64_t start = dlock__now_ns();
    dlock__fanout f;
    char what[DLOCK_KEY_MAX + 16];
    snprintf(what, sizeof what, "extend %s", l->parts[0].key);
    rc = dlock__fanout_run(c, calls, (int)l->nparts, 0, &f);
    if (rc != DLOCK_ENOMEM)
        rc = dlock__fanout_verdict(c, &f, 0, (int)l->nparts, what);
    dlock__fanout_free(&f);
    if (rc == DLOCK_ENOTHELD) {
        dlock__lock_mark_lost(l, DLOCK_ENOTHELD);
    } else if (rc == 0) {
        pthread_mutex_lock(&c->mu);
        l->ttl_ms = ttl_ms;
        l->renew_at_ns = start + (int64_t)((double)ttl_ms * l->renew_fraction * 1e6);
        atomic_store(&l->valid_until_ns, dlock__validity_end(start, ttl_ms));
        if (l->renew_at_ns < c->wd_wake_ns)
            pthread_cond_broadcast(&c->cv); /* the watchdog re-plans */
        pthread_mutex_unlock(&c->mu);
    }
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
    return l ? l->parts[0].fence : 0;
}

const char *dlock_lock_key(const dlock_lock *l)
{
    return l ? l->parts[0].key : NULL;
}

int dlock_lock_slot(const dlock_lock *l)
{
    return l && l->kind == DLOCK__KIND_SEM ? l->slot : -1;
}

size_t dlock_lock_count(const dlock_lock *l)
{
    return l ? l->nparts : 0;
}

const char *dlock_lock_key_at(const dlock_lock *l, size_t i)
{
    return l && i < l->nparts ? l->parts[i].key : NULL;
}

uint64_t dlock_lock_fencing_token_at(const dlock_lock *l, size_t i)
{
    return l && i < l->nparts ? l->parts[i].fence : 0;
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

/* ------------------------------------------------------- leader election */

int dlock_leader(dlock_info *out, dlock_client *client, const char *key)
{
    return dlock_inspect(out, client, key);
}

int dlock_leader_wait(dlock_info *out, dlock_client *c, const char *key, uint64_t known_token,
                      int64_t wait_ms, dlock_cancel *cancel)
{
    dlock__err_clear();
    if (!out || !c)
        return dlock__err(DLOCK_EINVAL, "NULL argument");
    if (wait_ms < 0 && wait_ms != DLOCK_WAIT_FOREVER)
        return dlock__err(DLOCK_EINVAL, "wait_ms must be >= 0 or DLOCK_WAIT_FOREVER");
    char *chan = NULL;
    int rc = dlock__key_name(&chan, c, key, "chan");
    if (rc)
        return rc;
    if ((rc = dlock__client_enter(c)) != 0) {
        dlock__free(chan);
        return rc;
    }
    int64_t deadline = wait_ms == DLOCK_WAIT_FOREVER ? INT64_MAX : dlock__now_ns() + wait_ms * 1000000;
    int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    dlock__waiter ws[DLOCK__NODES_MAX];
    int joined = 0, subscribed = 1;
    if (efd < 0)
        rc = dlock__err(DLOCK_ENOMEM, "eventfd: %s", strerror(errno));
    /* subscribed on every server (Redlock: any may carry the news) */
    while (rc == 0 && joined < c->voters) {
        ws[joined] = (dlock__waiter){.node = joined, .channel = chan, .token = "", .efd = efd};
        int jrc = dlock__listener_join(c, &ws[joined], c->command_timeout_ms);
        if (jrc == 0 || jrc == DLOCK_ETIMEDOUT)
            joined++; /* registered (confirmed or not yet) */
        if (jrc == DLOCK_ETIMEDOUT)
            subscribed = 0;
        else if (jrc)
            rc = jrc;
    }
    /* subscribed first, so no change between a look and the wait is missed */
    while (rc == 0) {
        if ((rc = dlock_inspect(out, c, key)) != 0)
            break;
        uint64_t term = out->held ? out->fencing_token : 0;
        if (term != known_token)
            break;
        int64_t now = dlock__now_ns();
        if (now >= deadline) {
            rc = dlock__err(DLOCK_ETIMEDOUT, "%s: the leadership did not change in %lld ms", key,
                            (long long)wait_ms);
            break;
        }
        int64_t t = out->held && out->ttl_ms > 0 ? out->ttl_ms + 1 : REFRESH_MS;
        if (!subscribed)
            t = min64(t, UNCONFIRMED_RECHECK_MS);
        int64_t until = min64(deadline, now + t * 1000000);
        struct pollfd p[3] = {{.fd = efd, .events = POLLIN},
                              {.fd = c->wake_pipe[0], .events = POLLIN},
                              {.fd = cancel ? cancel->fd : -1, .events = POLLIN}};
        poll(p, 3, (int)min64((until - now + 999999) / 1000000, 60000));
        if (p[1].revents & POLLIN)
            rc = dlock__err(DLOCK_ECLOSED, "the client was closed");
        else if ((p[2].revents & POLLIN) || (cancel && atomic_load(&cancel->triggered)))
            rc = dlock__err(DLOCK_ECANCELED, "the wait was cancelled");
        else if (p[0].revents & POLLIN) {
            int all = 1;
            for (int i = 0; i < joined; i++) {
                int confirmed;
                dlock__listener_take(c, &ws[i], &confirmed);
                all = all && confirmed;
            }
            subscribed = all;
        }
    }
    for (int i = 0; i < joined; i++)
        dlock__listener_leave(c, &ws[i]);
    if (efd >= 0)
        close(efd);
    dlock__free(chan);
    dlock__client_leave(c);
    return rc;
}
