/*
 * election.c — leader election on a mutex: the leadership of KEY is its
 * mutex, the leader's identity its owner id and its term its fencing token
 * (a new leader always has a larger one). Campaigning is acquiring
 * (auto-renewed, lost-signalled like any lock); resigning is releasing.
 *
 * Watching (dlock_leader_wait) registers the watcher on the key (WATCH), so
 * grants, handoffs and releases publish to it, and lets the watchdog keep
 * the registration alive; the keepalive also reports a leadership that ran
 * out without a release (a dead leader), at the moment its TTL ends. The
 * watcher looks again only on such news: no polling.
 */
#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "acquire.h"
#include "calls.h"
#include "clock.h"
#include "error.h"
#include "fanout.h"
#include "pubsub.h"
#include "wait.h"
#include "watchdog.h"

int dlock_campaign(dlock_lock **out, dlock_client *client, const char *key,
                   const dlock_lock_opts *opts)
{
    return dlock_acquire(out, client, key, opts);
}

int dlock_resign(dlock_lock *leadership)
{
    return dlock_release(leadership);
}

int dlock_leader(dlock_info *out, dlock_client *client, const char *key)
{
    return dlock_inspect(out, client, key);
}

/* The watch loop of dlock_leader_wait, with the registration made. */
static int watch_loop(dlock_info *out, dlock_client *c, const char *key, uint64_t known,
                      int64_t deadline, int64_t wait_ms, dlock_cancel *cancel, int efd,
                      dlock__waitreg *reg, dlock__sub *subs, int nsubs)
{
    for (;;) {
        int rc = dlock_inspect(out, c, key);
        if (rc)
            return rc;
        uint64_t term = out->held ? out->fencing_token : 0;
        if (term != known)
            return 0;
        int woke = DLOCK__WOKE_TIMER;
        while (woke == DLOCK__WOKE_TIMER || woke == DLOCK__WOKE_NEWS) {
            if (dlock__now_ns() >= deadline)
                return dlock__err(DLOCK_ETIMEDOUT, "%s: the leadership did not change in %lld ms",
                                  key, (long long)wait_ms);
            woke = dlock__sleep(c, deadline, -1, efd, cancel);
            if (woke != DLOCK__WOKE_NEWS)
                continue;
            uint64_t v;
            ssize_t r = read(efd, &v, sizeof v);
            (void)r;
            int bits = atomic_exchange(&reg->news, 0), news = 0;
            for (int i = 0; i < nsubs; i++)
                news |= dlock__listener_take(c, &subs[i], NULL);
            /* a message, a reconnected listener, or (with a leader) its end */
            if (news || (out->held && (bits & DLOCK__WN_FREE)))
                break;
        }
        if (woke == DLOCK__WOKE_CLOSED)
            return dlock__err(DLOCK_ECLOSED, "the client was closed");
        if (woke == DLOCK__WOKE_CANCEL)
            return dlock__err(DLOCK_ECANCELED, "the wait was cancelled");
        if (woke < 0)
            return woke;
    }
}

int dlock_leader_wait(dlock_info *out, dlock_client *c, const char *key, uint64_t known_token,
                      int64_t wait_ms, dlock_cancel *cancel)
{
    dlock__err_clear();
    if (!out || !c)
        return dlock__err(DLOCK_EINVAL, "NULL argument");
    if (wait_ms < 0 && wait_ms != DLOCK_WAIT_FOREVER)
        return dlock__err(DLOCK_EINVAL, "wait_ms must be >= 0 or DLOCK_WAIT_FOREVER");
    int rc = dlock__key_check(key);
    if (rc)
        return rc;
    dlock_lock_opts o = DLOCK_LOCK_OPTS_INIT;
    dlock_lock *l; /* the watcher's names and token, never held */
    if ((rc = dlock__lock_new(&l, c, DLOCK__KIND_MUTEX, &key, 1, &o)) != 0)
        return rc;
    if ((rc = dlock__client_enter(c)) != 0) {
        dlock__lock_free(l);
        return rc;
    }
    int64_t deadline =
        wait_ms == DLOCK_WAIT_FOREVER ? INT64_MAX : dlock__now_ns() + wait_ms * 1000000;
    int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    dlock__sub subs[DLOCK__NODES_MAX];
    int nsubs = 0;
    dlock__waitreg reg = { .lock = l, .watching = 1, .efd = efd };
    reg.sched.idx = (size_t)-1;
    if (efd < 0)
        rc = dlock__err(DLOCK_ESYS, "eventfd: %s", strerror(errno));
    /* subscribed on every server (Redlock: any may carry the news) before
     * the first look, so no change between the look and the wait is missed */
    while (rc == 0 && nsubs < c->voters) {
        subs[nsubs] = (dlock__sub){
            .node = nsubs, .channel = l->names[DLOCK__K_CHAN], .token = "", .efd = efd
        };
        int jrc = dlock__listener_join(c, &subs[nsubs], c->command_timeout_ms);
        if (jrc == 0 || jrc == DLOCK_ETIMEDOUT)
            nsubs++;
        else
            rc = jrc;
    }
    if (rc == 0) {
        /* register as a watcher now, before the first look: from here on
         * every change publishes; the watchdog keeps the registration */
        dlock__call call;
        dlock__call_args args;
        dlock__calls_keepalive(l, 1, &call, &args);
        dlock__fanout f;
        rc = dlock__fanout_run(c, &call, 1, 0, &f);
        if (rc != DLOCK_ENOMEM)
            dlock__fanout_free(&f);
    }
    if (rc == 0)
        rc = dlock__waiter_add(c, &reg, dlock__now_ns() + (int64_t)DLOCK__KEEPALIVE_MS * 1000000);
    if (rc == 0)
        rc =
            watch_loop(out, c, key, known_token, deadline, wait_ms, cancel, efd, &reg, subs, nsubs);
    dlock__waiter_remove(c, &reg);
    for (int i = 0; i < nsubs; i++)
        dlock__listener_leave(c, &subs[i]);
    if (efd >= 0)
        close(efd);
    dlock__client_leave(c);
    dlock__lock_free(l);
    return rc;
}
