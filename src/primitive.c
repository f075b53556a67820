/*
 * primitive.c — the shared parts of the latch, the barrier and the rate
 * limiter (see primitive.h).
 */
#include "primitive.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "alloc.h"
#include "clock.h"
#include "error.h"
#include "fanout.h"
#include "wait.h"

#define NEWS_RECHECK_MS 100 /* look this often while the subscription is unconfirmed */

int dlock__prim_begin(dlock__prim *p, dlock_client *c, const char *key, int family,
                      const char *what)
{
    memset(p, 0, sizeof *p);
    dlock__err_clear();
    if (!c)
        return dlock__err(DLOCK_EINVAL, "client is NULL");
    int rc = dlock__key_check(key);
    if (rc)
        return rc;
    if (c->backend == DLOCK__BACKEND_REDLOCK)
        return dlock__err(DLOCK_EINVAL,
                          "%s %s: not available on Redlock: a count kept separately on "
                          "each server could disagree between them (use one server, "
                          "Sentinel or Cluster)",
                          what, key);
    p->c = c;
    p->key = key;
    p->what = what;
    p->family = family;
    if ((rc = dlock__key_group(p->names, c->prefix, key, family)) != 0)
        return rc;
    if ((rc = dlock__client_enter(c)) != 0) {
        dlock__key_group_free(p->names, family);
        return rc;
    }
    p->entered = 1;
    return 0;
}

void dlock__prim_end(dlock__prim *p)
{
    if (p->entered)
        dlock__client_leave(p->c);
    p->entered = 0;
    if (p->c)
        dlock__key_group_free(p->names, p->family);
}

int dlock__prim_call(dlock__reply **out, dlock__prim *p, int script, const char *const *args,
                     int nargs, int64_t max_ms, const char *op, int acked)
{
    *out = NULL;
    /* the call, and room for a WAIT and an INFO per node (add_waits) */
    dlock__call calls[1 + 2 * DLOCK__NODES_MAX] = { { script, dlock__group_size(p->family), nargs,
                                                      (const char *const *)p->names, args } };
    int ncalls = 1;
    char wait_ms[24];
    const char *wait_args[1];
    int64_t budget = max_ms > 0 ? max_ms : p->c->connect_timeout_ms + p->c->command_timeout_ms;
    if (acked) /* on a replicated master: a WAIT for its replicas, in the same round trip */
        dlock__fanout_add_waits(p->c, calls, &ncalls,
                                budget / 2 < p->c->command_timeout_ms ? budget / 2
                                                                      : p->c->command_timeout_ms,
                                wait_ms, wait_args);
    dlock__fanout f;
    int rc =
        dlock__fanout_run(p->c, calls, ncalls, budget > INT32_MAX ? INT32_MAX : (int)budget, &f);
    if (rc == DLOCK_ENOMEM)
        return rc;
    char what[DLOCK_KEY_MAX + 64], why[200];
    snprintf(what, sizeof what, "%s %s %s", p->what, op, p->key);
    if (rc == 0) {
        dlock__reply *r = f.replies[0][0];
        if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
            r->element[0]->type != REDIS_REPLY_INTEGER) {
            rc = dlock__reply_fail(r, p->c->nodes[0].ep.desc, what);
        } else if (!dlock__fanout_acked(p->c, &f, calls, ncalls, 0, 0, why, sizeof why)) {
            rc = dlock__err(DLOCK_EQUORUM,
                            "%s: done on the master, but %s: it may not survive "
                            "a failover",
                            what, why);
        } else {
            *out = r;
            f.replies[0][0] = NULL;
        }
    } else {
        rc = dlock__err_prefix(rc, "%s", what);
    }
    dlock__fanout_free(&f);
    return rc;
}

long long dlock__prim_int(const dlock__reply *r, size_t i)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || i >= r->elements ||
        r->element[i]->type != REDIS_REPLY_INTEGER)
        return 0;
    return r->element[i]->integer;
}

int dlock__news_start(dlock__news *n, dlock_client *c, const char *channel)
{
    memset(n, 0, sizeof *n);
    n->c = c;
    n->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (n->efd < 0)
        return dlock__err(DLOCK_ESYS, "eventfd: %s", strerror(errno));
    /* Cluster: a PUBLISH reaches every node, so node 0's listener hears it */
    n->sub = (dlock__sub){ .node = 0, .channel = channel, .token = "", .efd = n->efd };
    int rc = dlock__listener_join(c, &n->sub, c->command_timeout_ms);
    if (rc != 0 && rc != DLOCK_ETIMEDOUT)
        return rc;
    n->joined = 1;
    n->confirmed = rc == 0;
    return 0;
}

/* Sleep until `until`, news, close or cancel; see primitive.h. Every
 * wake-up that may carry news is answered with "look again", also a reset
 * of the listener (messages may have been lost meanwhile). */
int dlock__news_sleep(dlock__news *n, int64_t until, dlock_cancel *cancel, const char *what,
                      const char *key)
{
    int64_t wake = until;
    int recheck = 0;
    if (!n->confirmed) {
        int64_t soon = dlock__now_ns() + (int64_t)NEWS_RECHECK_MS * 1000000;
        if (soon < wake) {
            wake = soon;
            recheck = 1;
        }
    }
    int woke = dlock__sleep(n->c, wake, -1, n->efd, cancel);
    switch (woke) {
    case DLOCK__WOKE_CLOSED:
        return dlock__err(DLOCK_ECLOSED, "the client was closed while waiting for %s %s", what,
                          key);
    case DLOCK__WOKE_CANCEL:
        return dlock__err(DLOCK_ECANCELED, "the wait for %s %s was cancelled", what, key);
    case DLOCK__WOKE_NEWS:
        dlock__listener_take(n->c, &n->sub, &n->confirmed);
        return 1;
    case DLOCK__WOKE_TIMER:
        if (!recheck)
            return 0;
        dlock__listener_take(n->c, &n->sub, &n->confirmed);
        return 1;
    default:
        return woke; /* DLOCK_ESYS */
    }
}

void dlock__news_stop(dlock__news *n)
{
    if (!n->c)
        return; /* never started */
    if (n->joined)
        dlock__listener_leave(n->c, &n->sub);
    n->joined = 0;
    if (n->efd >= 0)
        close(n->efd);
    n->efd = -1;
}

int64_t dlock__prim_deadline(int64_t wait_ms)
{
    return wait_ms == DLOCK_WAIT_FOREVER ? INT64_MAX : dlock__now_ns() + wait_ms * 1000000;
}

int dlock__prim_check_wait(int64_t wait_ms)
{
    if (wait_ms < 0 && wait_ms != DLOCK_WAIT_FOREVER)
        return dlock__err(DLOCK_EINVAL, "wait_ms must be >= 0 or DLOCK_WAIT_FOREVER (got %lld)",
                          (long long)wait_ms);
    if (wait_ms > (int64_t)1 << 40)
        return dlock__err(DLOCK_EINVAL, "wait_ms is too large (got %lld; at most 2^40)",
                          (long long)wait_ms);
    return 0;
}
