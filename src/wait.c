/*
 * wait.c — waiting for a lock: the protocol that survives kill -9, stalls,
 * dropped connections and close. Its server side is src/lua/helpers.lua.
 *
 * States of one waiter W for one key (a multi-lock is in one per key):
 *
 *   QUEUED  W has an entry in the key's queue: its place (arrival time) and
 *           a life of ENTRY_TTL, renewed every KEEPALIVE by the client's
 *           watchdog (keepalive.lua), batched with its renewals.
 *   LEASED  a handoff put the lock in W's name (the mutex value, or a
 *           reader or permit entry) for LEASE_TTL (at most the rest of W's
 *           entry life), took W out of the queue and pushed "<fence>:<lease
 *           ms>:<slots>" onto W's signal list. The keepalive renews a lease
 *           like an entry, so only a dead or stalled W loses it.
 *   HELD    W confirmed: the lock has W's own TTL and W returns.
 *   GONE    no entry and no lease: W stopped keeping them alive (it died,
 *           or stalled past ENTRY_TTL) or left.
 *
 *   event                           what happens on the server
 *   W's attempt finds it busy       QUEUED: a new place or the old one kept;
 *                                   W's signal list is CLEARED
 *   W's attempt while LEASED        HELD: validity from this attempt's send
 *   W takes its signal (BLPOP)      HELD: validity from the send of W's last
 *                                   busy attempt (below); renewed at once
 *   keepalive                       entries and leases get a fresh life; the
 *                                   answer says LEASED / LOST / FREE
 *   any script finding the lock     handoff: the first live waiter becomes
 *     free (a release, a TTL run    LEASED (a writer, a multi-lock part, or
 *     out, a dead head dropped, a   the whole run of readers at the head; for
 *     lease run out)                a semaphore, waiters while permits fit)
 *   ENTRY_TTL without keepalive     QUEUED/LEASED -> GONE; a dead entry is
 *                                   dropped where a script meets it
 *   W gives up (timeout, cancel,    release script: entry, signal and lease
 *     close, error)                 gone, the lock handed on
 *
 * The rules this keeps (DESIGN.md, "Waiting protocol"):
 * - Success only after proof. W returns only on a reply on its own
 *   connection: an attempt answering GRANTED, or a signal from its own list.
 *   Every busy answer clears the list, so a signal in it was pushed by a
 *   grant made after that attempt ran — and after the latest keepalive that
 *   found W still queued (a handoff dequeues W, and only W's own attempt
 *   queues it again). W counts its validity from the later of those two
 *   SENDS (before the grant) with the lease's length, which the server gave
 *   no earlier: a safe bound. Without enough of it left (a stalled W) W
 *   confirms with an attempt instead, which may find the lease gone: busy
 *   again, never a false success.
 * - Dead waiters cost at most one entry life: a lease to a dead W runs out
 *   within LEASE_TTL, a dead head entry within ENTRY_TTL, and the keepalive of
 *   any live waiter — scheduled for the moment the lease or the holder's
 *   TTL ends — finds the lock free and hands it on. Nothing sleeps on a
 *   timer while the lock is free.
 * - One FIFO per key across writers, readers and multi-locks; a multi-lock
 *   queues with one arrival time on all its keys (multi_acquire.lua).
 * - The wait budget bounds the whole call: each round trip's budget is
 *   capped by what is left (the last look gets a short grace), and a grant
 *   that arrives too late to be valid is given back.
 * - W's keepalive is out of the schedule while W's own attempt is on the
 *   wire, so the two never race.
 *
 * Waking. A queued waiter (one server, Sentinel, Cluster) blocks in BLPOP
 * on its signal lists, on a connection of its own: the server answers the
 * moment a handoff pushes, with no thread in between. Unqueued waiters
 * (fair = 0, every Redlock waiter) watch instead: pub/sub messages and the
 * keepalive's FREE. Either way the keepalive's news reaches the waiting
 * thread through its eventfd, and close and cancel through their own
 * descriptors (dlock__sleep).
 */
#include "wait.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "alloc.h"
#include "cancel.h"
#include "clock.h"
#include "cluster.h"
#include "error.h"
#include "fanout.h"
#include "pool.h"
#include "pubsub.h"
#include "watchdog.h"

#define LAST_LOOK_MS 400  /* budget of the last attempt, at the deadline */
#define GRACE_MS 500      /* how far past the wait budget a wait may run */
#define GIVEBACK_MS 1000  /* budget of giving back, on cancel, close or error */
#define BACKOFF_MIN_MS 50 /* after a transport failure, try again after... */
#define BACKOFF_MAX_MS 1000
#define BLPOP_MAX_MS 30000 /* one BLPOP blocks at most this long */
/* A signal is taken as the grant only with this much of its validity left,
 * enough for the watchdog's first renewal (sent at once) to arrive in time;
 * with less, W confirms with an attempt, which gives it its TTL at once. */
#define SIGNAL_MARGIN_NS 40000000

enum {
    AGAIN = 1, /* try_now: a transport failure, to be retried; blpop_read: attempt now */
    TAKEN = 2  /* blpop_read, on_wake: the signal made W the holder */
};

typedef struct waiter {
    dlock_lock *l;
    dlock_client *c;
    const dlock_lock_opts *o;
    int64_t deadline;
    int efd;            /* news: keepalive answers and pub/sub messages */
    dlock__waitreg reg; /* keepalive registration */
    int watching;       /* not queued: pub/sub and the keepalive's FREE */
    dlock__conn *bconn; /* queued: the BLPOP connection */
    int bnode, blocked;
    int64_t reply_by; /* a blocked BLPOP must answer by then */
    int64_t blpop_at; /* after a BLPOP failure: block again then */
    dlock__sub *subs; /* watching: one per part and voter */
    size_t nsubs;
    int64_t since; /* send time of the last attempt that found it busy */
    int64_t hint_ms;
    int64_t retry_at; /* after a transport failure: try again then */
    int backoff_ms;
    int failing;
    char why[256]; /* the last transport failure */
} waiter;

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

int dlock__sleep(dlock_client *c, int64_t until, int fd, int news_fd, dlock_cancel *cancel)
{
    int64_t now = dlock__now_ns();
    int ms = until == INT64_MAX ? 60000 : (int)min64((until - now + 999999) / 1000000, 60000);
    struct pollfd p[4] = { { .fd = c->wake_pipe[0], .events = POLLIN },
                           { .fd = cancel ? cancel->fd : -1, .events = POLLIN },
                           { .fd = fd, .events = POLLIN },
                           { .fd = news_fd, .events = POLLIN } };
    int n = ms > 0 ? poll(p, 4, ms) : poll(p, 4, 0);
    if (n < 0 && errno != EINTR)
        return dlock__err(DLOCK_ESYS, "poll: %s", strerror(errno));
    if (p[0].revents & POLLIN)
        return DLOCK__WOKE_CLOSED;
    if ((p[1].revents & POLLIN) || (cancel && atomic_load(&cancel->triggered)))
        return DLOCK__WOKE_CANCEL;
    if (p[2].revents & (POLLIN | POLLHUP | POLLERR))
        return DLOCK__WOKE_FD;
    if (p[3].revents & POLLIN)
        return DLOCK__WOKE_NEWS;
    return DLOCK__WOKE_TIMER;
}

/* The budget (ms) of a round trip now: the default, capped by what is left
 * of the wait plus `grace_ms`. */
static int64_t budget(const waiter *w, int64_t grace_ms)
{
    int64_t dflt = (int64_t)w->c->connect_timeout_ms + w->c->command_timeout_ms;
    if (w->deadline == INT64_MAX)
        return dflt;
    int64_t left = (w->deadline - dlock__now_ns()) / 1000000 + grace_ms;
    return left < 1 ? 1 : min64(left, dflt);
}

/* Put W's keepalive in the schedule: due after a keepalive interval, or
 * just after the moment the last answer said the lock may change. */
static int keepalive_on(waiter *w)
{
    int64_t ms = DLOCK__KEEPALIVE_MS;
    if (w->hint_ms > 0 && w->hint_ms < ms)
        ms = w->hint_ms + 1;
    return dlock__waiter_add(w->c, &w->reg, dlock__now_ns() + ms * 1000000);
}

/* One attempt: 0 (held), DLOCK_EBUSY, AGAIN (a transport failure: retry
 * at w->retry_at), or a fatal error. */
static int try_now(waiter *w)
{
    dlock__waiter_remove(w->c, &w->reg); /* no keepalive on the wire meanwhile */
    dlock__attempt a = { .mode = w->watching ? DLOCK__MODE_UNFAIR : DLOCK__MODE_WAIT,
                         .max_ms = budget(w, LAST_LOOK_MS) };
    int rc = dlock__grant_attempt(w->l, &a);
    dlock__log(w->c, DLOCK_LOG_DEBUG, "waiting for %s: attempt: %s (hint %lld ms)",
               w->l->parts[0].key, rc == 0 ? "granted" : dlock_strerror(rc), (long long)a.hint_ms);
    if (rc == 0)
        return 0;
    if (rc == DLOCK_EBUSY) {
        w->since = a.sent_ns;
        w->hint_ms = a.hint_ms;
        w->failing = 0;
        w->backoff_ms = BACKOFF_MIN_MS;
    } else if (rc == DLOCK_ECONN || rc == DLOCK_EQUORUM || rc == DLOCK_EPROTO) {
        /* the server is away or answering strangely: keep waiting, retry */
        snprintf(w->why, sizeof w->why, "%s", dlock_last_errmsg());
        if (!w->failing)
            dlock__log(w->c, DLOCK_LOG_WARN, "waiting for %s: %s; retrying", w->l->parts[0].key,
                       w->why);
        w->failing = 1;
        w->retry_at = dlock__now_ns() + (int64_t)w->backoff_ms * 1000000;
        w->backoff_ms = w->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : w->backoff_ms * 2;
        rc = AGAIN;
    } else {
        return rc;
    }
    int krc = keepalive_on(w);
    return krc ? krc : rc;
}

/* The last look at the deadline: one attempt with a short budget that
 * leaves the queue if the lock is still busy. */
static int last_look(waiter *w, int *answered)
{
    dlock__waiter_remove(w->c, &w->reg);
    dlock__attempt a = { .mode = DLOCK__MODE_ONCE,
                         .max_ms = min64(budget(w, 0) + LAST_LOOK_MS, LAST_LOOK_MS) };
    int rc = dlock__grant_attempt(w->l, &a);
    *answered = rc == 0 || rc == DLOCK_EBUSY;
    int64_t waited = w->o->wait_ms;
    if (rc == DLOCK_EBUSY)
        return dlock__err(DLOCK_ETIMEDOUT, "%s: still held by someone else after %lld ms",
                          w->l->parts[0].key, (long long)waited);
    if (rc == DLOCK_ECONN || rc == DLOCK_EQUORUM || rc == DLOCK_EPROTO)
        return dlock__err(DLOCK_ETIMEDOUT,
                          "%s: timed out after %lld ms; the server did not "
                          "answer the last attempt (%s)",
                          w->l->parts[0].key, (long long)waited, dlock_last_errmsg());
    return rc;
}

/* A handoff signal popped by W: take the lock without another round trip
 * if enough of the lease's validity, counted from W's last busy attempt,
 * is left. Returns 1 if taken (held), 0 if W must confirm with an attempt
 * (multi-locks always do: they need every key's token). */
static int take_signal(waiter *w, const char *v, size_t len)
{
    dlock_lock *l = w->l;
    uint64_t fence;
    int64_t px;
    int slot;
    if (l->kind == DLOCK__KIND_MULTI || !l->auto_renew || w->since <= 0 ||
        dlock__client_wants_acks(w->c) || /* the grant counts once replicas have it */
        dlock__parse_signal(&fence, &px, &slot, v, len) != 0)
        return 0; /* without the watchdog the lock must get its full TTL now */
    /* The grant came after W's last busy attempt and after the latest
     * keepalive that still found W queued (a handoff takes W out of the
     * queue; only W's own attempt puts it back, and that clears the list). */
    int64_t since = w->since, queued = atomic_load(&w->reg.queued_ns);
    if (queued > since)
        since = queued;
    int64_t valid_until = dlock__validity_end(since, px);
    int64_t now = dlock__now_ns();
    dlock__log(w->c, DLOCK_LOG_DEBUG, "waiting for %s: handed over (lease %lld ms, %lld ms left)",
               l->parts[0].key, (long long)px, (long long)((valid_until - now) / 1000000));
    if (now + SIGNAL_MARGIN_NS >= valid_until)
        return 0;
    l->parts[0].fence = fence;
    if (l->kind == DLOCK__KIND_SEM)
        l->slot = slot;
    dlock__lock_set_held(l, now, valid_until);
    l->sched.due_ns = now; /* the lease is short: the watchdog renews it at once */
    return 1;
}

/* Block in BLPOP on W's signal lists (one per part: the QUEUE key's name
 * and the token). Failures are not fatal: the keepalive still tells W
 * what it needs, and BLPOP is tried again later. */
static void blpop_send(waiter *w)
{
    dlock_lock *l = w->l;
    int64_t now = dlock__now_ns();
    if (!w->bconn) {
        w->bnode = dlock__fanout_node_of(w->c, l->parts[0].names[DLOCK__K_QUEUE]);
        int reused;
        if (dlock__pool_get(w->c, w->bnode, &w->bconn, &reused, (int)budget(w, 0)) != 0) {
            w->bconn = NULL;
            w->blpop_at = now + (int64_t)BACKOFF_MAX_MS * 1000000;
            return;
        }
    }
    char *sigs[DLOCK_MULTI_MAX];
    const char *argv[DLOCK_MULTI_MAX + 2];
    size_t n = 0;
    argv[n++] = "BLPOP";
    for (size_t i = 0; i < l->nparts; i++) {
        const char *q = l->parts[i].names[DLOCK__K_QUEUE];
        size_t ql = strlen(q);
        if (!(sigs[i] = dlock__malloc(ql + DLOCK__TOKEN_LEN + 1))) {
            while (i-- > 0)
                dlock__free(sigs[i]);
            w->blpop_at = now + (int64_t)BACKOFF_MIN_MS * 1000000;
            return;
        }
        memcpy(sigs[i], q, ql);
        memcpy(sigs[i] + ql, l->token, DLOCK__TOKEN_LEN + 1);
        argv[n++] = sigs[i];
    }
    int64_t ms = min64(BLPOP_MAX_MS,
                       w->deadline == INT64_MAX ? BLPOP_MAX_MS : (w->deadline - now) / 1000000);
    if (ms < 10)
        ms = 10;
    char secs[32];
    snprintf(secs, sizeof secs, "%lld.%03lld", (long long)(ms / 1000), (long long)(ms % 1000));
    argv[n++] = secs;
    int rc = dlock__conn_append(w->bconn, (int)n, argv, NULL);
    if (rc == 0)
        rc = dlock__conn_send(w->bconn, w->c->command_timeout_ms);
    for (size_t i = 0; i < l->nparts; i++)
        dlock__free(sigs[i]);
    if (rc) {
        dlock__conn_close(w->bconn);
        w->bconn = NULL;
        w->blpop_at = now + (int64_t)BACKOFF_MIN_MS * 1000000;
        return;
    }
    w->blocked = 1;
    w->reply_by = now + (ms + w->c->command_timeout_ms) * 1000000;
    dlock__log(w->c, DLOCK_LOG_DEBUG, "waiting for %s: blocked in BLPOP for %lld ms",
               l->parts[0].key, (long long)ms);
}

/* The BLPOP connection is no good any more (dropped, dead, redirected). */
static void blpop_drop(waiter *w, int64_t retry_ms)
{
    dlock__conn_close(w->bconn);
    w->bconn = NULL;
    w->blocked = 0;
    w->blpop_at = dlock__now_ns() + retry_ms * 1000000;
}

/* Read the BLPOP's answer if it is complete. Returns TAKEN if W took the
 * lock, AGAIN if W should attempt now, 0 otherwise. */
static int blpop_read(waiter *w)
{
    dlock__reply *r = NULL;
    if (dlock__conn_read(w->bconn, &r, 0) != 0) {
        dlock__log(w->c, DLOCK_LOG_INFO, "waiting for %s: %s; blocking again", w->l->parts[0].key,
                   dlock_last_errmsg());
        blpop_drop(w, BACKOFF_MIN_MS);
        return AGAIN; /* a signal may have been popped and lost: look */
    }
    if (!r)
        return 0;
    dlock__conn_count_round_trip(w->bconn);
    w->blocked = 0;
    int res = 0;
    if (r->type == REDIS_REPLY_ERROR) {
        /* MOVED (a cluster slot moved), READONLY (a demoted master),
         * NOPERM, ...: find the server again and look */
        dlock__log(w->c, DLOCK_LOG_INFO, "waiting for %s: BLPOP: %s", w->l->parts[0].key, r->str);
        if (dlock__reply_is_error(r, "MOVED") && w->c->backend == DLOCK__BACKEND_CLUSTER)
            dlock__cluster_refresh(w->c);
        blpop_drop(w, BACKOFF_MIN_MS);
        res = AGAIN;
    } else if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
               r->element[1]->type == REDIS_REPLY_STRING) {
        res = take_signal(w, r->element[1]->str, r->element[1]->len) ? TAKEN : AGAIN;
    }
    dlock__reply_free(r);
    return res;
}

/* Watching: subscribe to every part's channel on every voting node before
 * the next attempt. A subscription not confirmed in time is fine: the
 * keepalive reports a free lock anyway. */
static int subscribe(waiter *w)
{
    dlock_lock *l = w->l;
    size_t n = l->nparts * (size_t)w->c->voters;
    if (!(w->subs = dlock__calloc(n, sizeof *w->subs)))
        return dlock__err(DLOCK_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        w->subs[i] =
            (dlock__sub){ .node = (int)(i % (size_t)w->c->voters),
                          .channel = l->parts[i / (size_t)w->c->voters].names[DLOCK__K_CHAN],
                          .token = l->token,
                          .efd = w->efd };
        int rc = dlock__listener_join(w->c, &w->subs[i], w->c->command_timeout_ms);
        if (rc != 0 && rc != DLOCK_ETIMEDOUT)
            return rc;
        w->nsubs++;
    }
    return 0;
}

/* Take the news: 1 if something asks for an attempt. */
static int take_news(waiter *w)
{
    uint64_t v;
    ssize_t r = read(w->efd, &v, sizeof v);
    (void)r;
    int bits = atomic_exchange(&w->reg.news, 0);
    int news = 0;
    for (size_t i = 0; i < w->nsubs; i++)
        news |= dlock__listener_take(w->c, &w->subs[i], NULL);
    dlock__log(w->c, DLOCK_LOG_DEBUG, "waiting for %s: news%s%s%s%s", w->l->parts[0].key,
               bits & DLOCK__WN_LEASED ? " leased" : "", bits & DLOCK__WN_LOST ? " lost" : "",
               bits & DLOCK__WN_FREE ? " free" : "", news ? " (pub/sub)" : "");
    return (bits & (DLOCK__WN_LEASED | DLOCK__WN_LOST | DLOCK__WN_FREE)) ||
           (news & (DLOCK__NEWS_MINE | DLOCK__NEWS_RESET));
}

static void cleanup(waiter *w)
{
    dlock__waiter_remove(w->c, &w->reg);
    for (size_t i = 0; i < w->nsubs; i++)
        dlock__listener_leave(w->c, &w->subs[i]);
    dlock__free(w->subs);
    if (w->bconn) {
        if (w->blocked)
            dlock__conn_close(w->bconn); /* a BLPOP is still pending on it */
        else
            dlock__pool_put(w->c, w->bnode, w->bconn);
    }
    if (w->efd >= 0)
        close(w->efd);
}

/* What the loop does when the sleep ends. Returns 0 to go on (with
 * *must_try set if an attempt is due), TAKEN if W took the lock, or an
 * error. */
static int on_wake(waiter *w, int woke, int *must_try)
{
    switch (woke) {
    case DLOCK__WOKE_CLOSED:
        return dlock__err(DLOCK_ECLOSED, "the client was closed while waiting for %s",
                          w->l->parts[0].key);
    case DLOCK__WOKE_CANCEL:
        return dlock__err(DLOCK_ECANCELED, "the wait for %s was cancelled", w->l->parts[0].key);
    case DLOCK__WOKE_FD: {
        int r = blpop_read(w);
        if (r == TAKEN)
            return TAKEN;
        *must_try |= r == AGAIN;
        return 0;
    }
    case DLOCK__WOKE_NEWS:
        *must_try |= take_news(w);
        return 0;
    case DLOCK__WOKE_TIMER: {
        int64_t now = dlock__now_ns();
        if (w->failing && now >= w->retry_at)
            *must_try = 1;
        if (w->blocked && now >= w->reply_by) {
            dlock__log(w->c, DLOCK_LOG_INFO, "waiting for %s: no answer to BLPOP",
                       w->l->parts[0].key);
            blpop_drop(w, BACKOFF_MIN_MS);
            *must_try = 1;
        }
        return 0;
    }
    default:
        return woke; /* DLOCK_ESYS */
    }
}

int dlock__wait(dlock_lock *l, const dlock_lock_opts *o, int64_t deadline,
                const dlock__attempt *first)
{
    dlock_client *c = l->client;
    waiter w = { .l = l,
                 .c = c,
                 .o = o,
                 .deadline = deadline,
                 .efd = -1,
                 .watching = !l->fair || c->voters > 1,
                 .since = first->sent_ns,
                 .hint_ms = first->hint_ms,
                 .backoff_ms = BACKOFF_MIN_MS };
    w.reg.lock = l;
    w.reg.sched.idx = (size_t)-1;
    w.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    w.reg.efd = w.efd;
    w.reg.watching = w.watching;
    int rc = w.efd < 0 ? dlock__err(DLOCK_ESYS, "eventfd: %s", strerror(errno)) : 0;
    int held = 0, must_try = 0, answered = 0;
    if (first->unacked) { /* the first grant was not acknowledged: retry soon */
        w.failing = 1;
        w.retry_at = dlock__now_ns() + (int64_t)BACKOFF_MIN_MS * 1000000;
        snprintf(w.why, sizeof w.why, "%s", dlock_last_errmsg());
    }
    if (rc == 0 && w.watching) {
        rc = subscribe(&w);
        must_try = 1; /* subscribed now: look again, so nothing falls between */
    } else if (rc == 0) {
        rc = keepalive_on(&w);
    }
    while (rc == 0) {
        if (must_try) {
            must_try = 0;
            int r = try_now(&w);
            if (r == 0) {
                held = 1;
                break;
            }
            if (r != DLOCK_EBUSY && r != AGAIN) {
                rc = r;
                break;
            }
        }
        int64_t now = dlock__now_ns();
        if (now >= deadline) {
            rc = last_look(&w, &answered);
            held = rc == 0;
            break;
        }
        if (!w.watching && !w.blocked && now >= w.blpop_at)
            blpop_send(&w);
        int64_t until = deadline;
        if (w.failing)
            until = min64(until, w.retry_at);
        if (w.blocked)
            until = min64(until, w.reply_by);
        else if (!w.watching)
            until = min64(until, w.blpop_at);
        int woke =
            dlock__sleep(c, until, w.blocked ? dlock__conn_poll_fd(w.bconn) : -1, w.efd, o->cancel);
        int r = on_wake(&w, woke, &must_try);
        if (r == TAKEN) {
            held = 1;
            break;
        }
        rc = r;
    }
    cleanup(&w);
    if (!held) {
        /* leave nothing behind: the queue entry, a watch, a lease */
        if (!answered) {
            int64_t ms = deadline == INT64_MAX ? GIVEBACK_MS
                                               : (deadline - dlock__now_ns()) / 1000000 + GRACE_MS;
            dlock__grant_giveback(l, ms < 1 ? 1 : ms > GIVEBACK_MS ? GIVEBACK_MS : ms);
        }
        return rc ? rc : DLOCK_ETIMEDOUT;
    }
    return 0;
}
