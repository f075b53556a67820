/*
 * glue.c — the dlock side of the harness: owner ids, clients, lock
 * options, the client's counters, a key's queue, and the group setup that
 * starts a test file's server.
 *
 * Design. These are the few lines every test file used to write again:
 * a client whose owner id is unique (so dh_find_key can find its keys and
 * tests cannot see each other's locks), options with a TTL and a wait, the
 * number of waiters the server has for a key, a bounded wait for that
 * number, and a Redlock deployment of three servers. Helpers that fail the
 * test (cmocka) say so; they are for the test's main thread. dh_client()
 * and dh_waiters() only report, so threads and forked children may use
 * them.
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

int dh_group_start(dh_redis **out, const char *const *extra_args)
{
    *out = dh_redis_start(extra_args);
    return *out ? 0 : -1;
}

/* The group's own client (dh_group_start_client), closed by the group
 * teardown before the servers stop. */
static dlock_client *group_client;

int dh_group_start_client(dh_redis **out, dlock_client **client, const char *owner)
{
    if (dh_group_start(out, NULL) != 0)
        return -1;
    *client = group_client = dh_client((*out)->url, owner);
    return group_client ? 0 : -1;
}

void dh__group_client_close(void)
{
    dlock_client_close(group_client);
    group_client = NULL;
}

void dh_owner(char *out, size_t outlen, const char *tag)
{
    static unsigned seq;
    snprintf(out, outlen, "%s-%d-%u", tag, (int)getpid(), ++seq);
}

dlock_client *dh_client(const char *url, const char *owner)
{
    dlock_client_opts o = DLOCK_CLIENT_OPTS_INIT;
    o.owner_id = owner;
    dlock_client *c = NULL;
    int rc = dlock_client_open(&c, url, &o);
    if (rc != 0) {
        fprintf(stderr, "harness: dlock_client_open(%s): %s: %s\n", url, dlock_strerror(rc),
                dlock_last_errmsg());
        return NULL;
    }
    return c;
}

dlock_client *dh_client_tagged(const dh_redis *r, const char *tag, char *owner)
{
    char own[DH_OWNER_MAX];
    dh_owner(own, sizeof own, tag);
    if (owner)
        memcpy(owner, own, sizeof own);
    dlock_client *c = dh_client(r->url, own);
    if (!c)
        fail_msg("could not open a client (owner %s) to %s", own, r->url);
    return c;
}

dlock_client_opts dh_client_opts(char *owner, const char *tag)
{
    dh_owner(owner, DH_OWNER_MAX, tag);
    dlock_client_opts o = DLOCK_CLIENT_OPTS_INIT;
    o.owner_id = owner;
    return o;
}

dlock_client *dh_client_with(const char *url, const dlock_client_opts *opts)
{
    dlock_client *c = NULL;
    dh_assert_rc(dlock_client_open(&c, url, opts), 0);
    return c;
}

dlock_lock_opts dh_opts(int64_t ttl_ms, int64_t wait_ms)
{
    dlock_lock_opts o = DLOCK_LOCK_OPTS_INIT;
    if (ttl_ms > 0)
        o.ttl_ms = ttl_ms;
    o.wait_ms = wait_ms;
    return o;
}

dlock_lock_opts dh_opts_fixed(int64_t ttl_ms, int64_t wait_ms)
{
    dlock_lock_opts o = dh_opts(ttl_ms, wait_ms);
    o.auto_renew = 0;
    return o;
}

static dlock_client_stats stats_of(dlock_client *c)
{
    dlock_client_stats s;
    memset(&s, 0, sizeof s);
    if (dlock_stats(&s, c) != 0)
        memset(&s, 0, sizeof s);
    return s;
}

uint64_t dh_round_trips(dlock_client *c)
{
    return stats_of(c).round_trips;
}

uint64_t dh_attempts(dlock_client *c)
{
    return stats_of(c).attempts;
}

uint64_t dh_keepalives(dlock_client *c)
{
    return stats_of(c).keepalives;
}

int64_t dh_waiters(dlock_client *c, const char *key)
{
    dlock_info info;
    if (dlock_inspect(&info, c, key) != 0)
        return -1;
    return info.waiters;
}

struct queue_wait {
    dlock_client *c;
    const char *key;
    int64_t n;
};

static int queue_reached(void *arg)
{
    struct queue_wait *q = arg;
    return dh_waiters(q->c, q->key) >= q->n;
}

int dh_wait_waiters(dlock_client *c, const char *key, int64_t n, int timeout_ms)
{
    struct queue_wait q = { c, key, n };
    return dh_wait_until(queue_reached, &q, timeout_ms);
}

void dh_redlock_start(dh_redlock *rl, const dh_redis *first)
{
    memset(rl, 0, sizeof *rl);
    for (int i = 0; i < 2; i++)
        if (!(rl->more[i] = dh_redis_start(NULL)))
            fail_msg("could not start a Redlock server");
    snprintf(rl->url, sizeof rl->url, "%s,%s,%s", first->url, rl->more[0]->url, rl->more[1]->url);
}

dlock_client *dh_redlock_open(dh_redlock *rl, const dh_redis *first, const char *owner)
{
    dh_redlock_start(rl, first);
    if (!(rl->c = dh_client(rl->url, owner)))
        fail_msg("could not open a client of %s", rl->url);
    return rl->c;
}

void dh_redlock_stop(dh_redlock *rl)
{
    dlock_client_close(rl->c);
    rl->c = NULL;
    for (int i = 0; i < 2; i++)
        dh_redis_stop(rl->more[i]);
}

void dh_release_frees(dlock_lock *l, dlock_client *other, const char *key)
{
    dlock_lock *x = NULL;
    dh_assert_rc(dlock_try_acquire(&x, other, key, NULL), DLOCK_EBUSY);
    dh_assert_rc(dlock_release(l), 0);
    dh_assert_rc(dlock_try_acquire(&x, other, key, NULL), 0);
    dh_assert_rc(dlock_release(x), 0);
}
