/*
 * test_mutex.c — the mutex API against one private redis-server.
 *
 * Design. One server for the whole group (group setup/teardown; the
 * harness's atexit handler stops it too if the run dies). Each test uses its
 * own keys and owner ids so tests cannot see each other's locks. The state
 * in Redis is checked with the harness's own hiredis connection, and the lock
 * key is found by its owner id (dh_find_key), so the tests do not depend on
 * the library's key layout. Threads never call cmocka asserts: they record
 * results that the main thread checks. A "blocked" waiter is detected by its
 * client's round-trip counter growing (its first attempt came back busy),
 * never by sleeping; every wait has a generous bound.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static dh_redis *srv;

static int group_setup(void **state)
{
    (void)state;
    return dh_group_start(&srv, NULL);
}

/* 1 if a key for `key` holding `owner` exists in db. */
static int lock_in_redis(const char *key, const char *owner, int db)
{
    char name[1024];
    int found = dh_find_key(name, sizeof name, srv, db, key, owner);
    assert_true(found >= 0);
    return found;
}

/* ---- waiting for another thread's client to have made a round trip */

struct rt_wait {
    dlock_client *c;
    uint64_t base;
};

static int rt_grew(void *arg)
{
    struct rt_wait *w = arg;
    return dh_round_trips(w->c) > w->base;
}

/* ---- an acquisition on a thread of its own (dh_thread) */

struct acq {
    dh_thread t;
    dlock_client *client;
    const char *key;
    dlock_lock_opts opts;
    dlock_lock *lock;
};

static int acq_fn(void *arg)
{
    struct acq *a = arg;
    return dlock_acquire(&a->lock, a->client, a->key, &a->opts);
}

/* Start acquiring key through c with a wait of wait_ms on a thread, and
 * return once its first attempt came back busy (c's round trips grew). */
static void start_blocked_acq(struct acq *a, dlock_client *c, const char *key, int64_t wait_ms,
                              dlock_cancel *cancel)
{
    memset(a, 0, sizeof *a);
    a->client = c;
    a->key = key;
    a->opts = dh_opts(20000, wait_ms);
    a->opts.cancel = cancel;
    struct rt_wait rw = { c, dh_round_trips(c) };
    dh_thread_start(&a->t, acq_fn, a);
    assert_true(dh_wait_until(rt_grew, &rw, 5000));
    assert_false(dh_thread_done(&a->t)); /* blocked, not failed */
}

/* A client tagged `tag` (its owner id copied to owner unless NULL) that
 * holds key: the lock, taken with o, goes into *l (it must be granted). */
static dlock_client *client_holding(dlock_lock **l, const char *tag, char *owner, const char *key,
                                    dlock_lock_opts o)
{
    dlock_client *c = dh_client_tagged(srv, tag, owner);
    *l = NULL;
    dh_assert_rc(dlock_acquire(l, c, key, &o), 0);
    return c;
}

/* Wait (10 s at most) for the blocked acquisition a to end: it must have
 * returned want and no lock. Returns how long after `since` it ended (ms). */
static int64_t blocked_acq_ended(struct acq *a, int want, int64_t since)
{
    dh_assert_rc(dh_thread_join(&a->t, 10000), want);
    assert_null(a->lock);
    return a->t.ended_ms - since;
}

/* ------------------------------------------------------------------ tests */

static void test_acquire_release(void **state)
{
    (void)state;
    char owner[64];
    dlock_lock_opts o = dh_opts(5000, 0);
    dlock_lock *l;
    dlock_client *c = client_holding(&l, "basic", owner, "m:basic", o);
    assert_non_null(l);
    assert_int_equal(dlock_is_held(l), 1);
    assert_string_equal(dlock_lock_key(l), "m:basic");
    assert_true(dlock_lock_fencing_token(l) > 0);
    assert_true(dlock_lock_fencing_token(l) < (UINT64_C(1) << 53));
    assert_int_equal(lock_in_redis("m:basic", owner, 0), 1);

    dh_assert_rc(dlock_release(l), 0);
    assert_int_equal(lock_in_redis("m:basic", owner, 0), 0);

    /* Free again: a second acquisition works and gets a larger token. */
    dh_assert_rc(dlock_acquire(&l, c, "m:basic", &o), 0);
    dh_assert_rc(dlock_release(l), 0);
    dh_assert_rc(dlock_release(NULL), 0);
    dlock_client_close(c);
    dlock_client_close(NULL);
}

static void test_try_acquire_busy(void **state)
{
    (void)state;
    dlock_lock_opts o = dh_opts(5000, DLOCK_WAIT_FOREVER);
    dlock_lock *la, *lb = (dlock_lock *)&o;
    dlock_client *a = client_holding(&la, "busy-a", NULL, "m:busy", o);
    dlock_client *b = dh_client_tagged(srv, "busy-b", NULL);

    /* try_acquire ignores wait_ms (here: forever) and makes one attempt. */
    dh_assert_rc(dlock_try_acquire(&lb, b, "m:busy", &o), DLOCK_EBUSY);
    assert_null(lb);
    /* wait_ms = 0 is one attempt too. */
    dlock_lock_opts o0 = dh_opts(5000, 0);
    lb = (dlock_lock *)&o;
    dh_assert_rc(dlock_acquire(&lb, b, "m:busy", &o0), DLOCK_EBUSY);
    assert_null(lb);
    /* Not reentrant: the holder's own client is busy too. */
    dh_assert_rc(dlock_try_acquire(&lb, a, "m:busy", &o), DLOCK_EBUSY);

    dh_assert_rc(dlock_release(la), 0);
    dh_assert_rc(dlock_try_acquire(&lb, b, "m:busy", &o), 0);
    dh_assert_rc(dlock_release(lb), 0);
    dlock_client_close(a);
    dlock_client_close(b);
}

static void test_wait_timeout(void **state)
{
    (void)state;
    dlock_lock *la, *lb = NULL;
    dlock_client *a = client_holding(&la, "to-a", NULL, "m:timeout", dh_opts(10000, 0));
    dlock_client *b = dh_client_tagged(srv, "to-b", NULL);

    dlock_lock_opts w = dh_opts(10000, 200);
    int64_t t0 = dh_now_ms();
    dh_assert_rc(dlock_acquire(&lb, b, "m:timeout", &w), DLOCK_ETIMEDOUT);
    int64_t took = dh_now_ms() - t0;
    assert_null(lb);
    /* It waited the budget (a little slack for clock granularity), and not
     * absurdly longer. */
    if (took < 190 || took > 5000)
        fail_msg("wait_ms=200 returned after %lld ms", (long long)took);
    assert_int_equal(dlock_is_held(la), 1);
    dh_assert_rc(dlock_release(la), 0);
    dlock_client_close(a);
    dlock_client_close(b);
}

/* The holder releases from its own thread once the waiter is blocked. */
struct holder {
    pthread_t th;
    dlock_lock *lock;
    dlock_client *waiter_client;
    uint64_t waiter_base;
    int saw_waiter;
    int release_rc;
    atomic_int waiter_done; /* set by the main thread after acquire returns */
    int waiter_done_at_release;
};

static void *holder_main(void *arg)
{
    struct holder *h = arg;
    struct rt_wait w = { h->waiter_client, h->waiter_base };
    h->saw_waiter = dh_wait_until(rt_grew, &w, 5000);
    h->waiter_done_at_release = atomic_load(&h->waiter_done);
    h->release_rc = dlock_release(h->lock);
    return NULL;
}

static void test_wait_then_acquire(void **state)
{
    (void)state;
    dlock_client *a = dh_client_tagged(srv, "wait-a", NULL);
    dlock_client *b = dh_client_tagged(srv, "wait-b", NULL);
    dlock_lock_opts o = dh_opts(10000, 0);
    static struct holder h; /* static: outlives a failed test */
    memset(&h, 0, sizeof h);
    dh_assert_rc(dlock_acquire(&h.lock, a, "m:handoff", &o), 0);
    uint64_t first_token = dlock_lock_fencing_token(h.lock);
    h.waiter_client = b;
    h.waiter_base = dh_round_trips(b);
    assert_int_equal(pthread_create(&h.th, NULL, holder_main, &h), 0);

    dlock_lock_opts w = dh_opts(10000, 10000);
    dlock_lock *lb = NULL;
    int rc = dlock_acquire(&lb, b, "m:handoff", &w);
    atomic_store(&h.waiter_done, 1);
    pthread_join(h.th, NULL);

    dh_assert_rc(rc, 0);
    assert_true(h.saw_waiter);
    assert_int_equal(h.waiter_done_at_release, 0); /* it was really waiting */
    dh_assert_rc(h.release_rc, 0);
    assert_int_equal(dlock_is_held(lb), 1);
    assert_true(dlock_lock_fencing_token(lb) > first_token);
    dh_assert_rc(dlock_release(lb), 0);
    dlock_client_close(a);
    dlock_client_close(b);
}

static void test_held_and_remaining(void **state)
{
    (void)state;
    dlock_lock *l;
    dlock_client *c = client_holding(&l, "remaining", NULL, "m:remaining", dh_opts(2000, 0));
    assert_int_equal(dlock_is_held(l), 1);
    int64_t rem = dlock_lock_remaining_ms(l);
    if (rem <= 0 || rem > 2000)
        fail_msg("remaining_ms = %lld with ttl 2000", (long long)rem);
    assert_int_equal(dlock_lock_renew_error(l), 0);
    dh_assert_rc(dlock_release(l), 0);
    dlock_client_close(c);
}

static void test_extend(void **state)
{
    (void)state;
    char owner[64];
    dlock_lock *l;
    dlock_client *c = client_holding(&l, "extend", owner, "m:extend", dh_opts_fixed(2000, 0));
    char name[1024];
    assert_int_equal(dh_find_key(name, sizeof name, srv, 0, "m:extend", owner), 1);
    int64_t pttl = dh_cmd_int(srv, 0, "PTTL %s", name);
    assert_true(pttl > 0 && pttl <= 2000);

    dh_assert_rc(dlock_extend(l, 20000), 0);
    pttl = dh_cmd_int(srv, 0, "PTTL %s", name);
    if (pttl <= 10000 || pttl > 20000)
        fail_msg("PTTL after extend(20000) = %lld", (long long)pttl);
    int64_t rem = dlock_lock_remaining_ms(l);
    if (rem <= 2000 || rem > 20000)
        fail_msg("remaining_ms after extend(20000) = %lld", (long long)rem);
    assert_int_equal(dlock_is_held(l), 1);

    dh_assert_rc(dlock_extend(l, 0), DLOCK_EINVAL);
    assert_true(dlock_last_errmsg()[0] != '\0');
    dh_assert_rc(dlock_extend(l, -5), DLOCK_EINVAL);
    dh_assert_rc(dlock_extend(NULL, 1000), DLOCK_EINVAL);
    /* A rejected extend changed nothing. */
    assert_true(dh_cmd_int(srv, 0, "PTTL %s", name) > 10000);
    assert_int_equal(dlock_is_held(l), 1);
    dh_assert_rc(dlock_release(l), 0);
    dlock_client_close(c);
}

struct with_arg {
    int calls;
    int held_inside;
    int in_redis_inside;
    int ret;
    const char *owner;
};

static int with_fn(dlock_lock *lock, void *arg)
{
    struct with_arg *w = arg;
    w->calls++;
    w->held_inside = dlock_is_held(lock);
    char name[1024];
    w->in_redis_inside = dh_find_key(name, sizeof name, srv, 0, "m:with", w->owner);
    return w->ret;
}

struct with_steal {
    const char *owner;
    int found;
};

/* Deletes its own lock in Redis (as an operator or an expiry would). */
static int steal_fn(dlock_lock *lock, void *arg)
{
    (void)lock;
    struct with_steal *s = arg;
    char name[1024];
    s->found = dh_find_key(name, sizeof name, srv, 0, "m:with-steal", s->owner);
    if (s->found == 1)
        dh_cmd_int(srv, 0, "DEL %s", name);
    return 0;
}

static void test_with(void **state)
{
    (void)state;
    char owner[64];
    dlock_client *c = dh_client_tagged(srv, "with", owner);
    dlock_client *other = dh_client_tagged(srv, "with-other", NULL);
    dlock_lock_opts o = dh_opts(5000, 0);

    struct with_arg w = { 0, 0, 0, 0, owner };
    dh_assert_rc(dlock_with(c, "m:with", &o, with_fn, &w), 0);
    assert_int_equal(w.calls, 1);
    assert_int_equal(w.held_inside, 1);
    assert_int_equal(w.in_redis_inside, 1);
    assert_int_equal(lock_in_redis("m:with", owner, 0), 0);

    /* fn fails: its code comes back and the lock is released anyway. */
    w.ret = -77;
    assert_int_equal(dlock_with(c, "m:with", &o, with_fn, &w), -77);
    assert_int_equal(w.calls, 2);
    assert_int_equal(w.in_redis_inside, 1);
    assert_int_equal(lock_in_redis("m:with", owner, 0), 0);
    w.ret = DLOCK_EPROTO;
    dh_assert_rc(dlock_with(c, "m:with", &o, with_fn, &w), DLOCK_EPROTO);
    assert_int_equal(lock_in_redis("m:with", owner, 0), 0);
    dlock_lock *l = NULL;
    dh_assert_rc(dlock_try_acquire(&l, other, "m:with", &o), 0);

    /* fn returns 0 but the lock was taken from it meanwhile: ENOTHELD. */
    w.ret = 0;
    struct with_steal ws = { owner };
    dh_assert_rc(dlock_with(c, "m:with-steal", &o, steal_fn, &ws), DLOCK_ENOTHELD);
    assert_int_equal(ws.found, 1);

    /* Busy: the acquire error comes back and fn is not called. */
    w.ret = 0;
    dh_assert_rc(dlock_with(c, "m:with", &o, with_fn, &w), DLOCK_EBUSY);
    assert_int_equal(w.calls, 3);
    dh_assert_rc(dlock_release(l), 0);
    dlock_client_close(c);
    dlock_client_close(other);
}

static void test_keyf(void **state)
{
    (void)state;
    char buf[DLOCK_KEY_MAX + 64];
    dh_assert_rc(dlock_keyf(buf, sizeof buf, "payment:%s:%d", "abc", 42), 0);
    assert_string_equal(buf, "payment:abc:42");

    char small[8];
    dh_assert_rc(dlock_keyf(small, sizeof small, "payment:%s", "12345"), DLOCK_EINVAL);
    assert_true(dlock_last_errmsg()[0] != '\0');
    dh_assert_rc(dlock_keyf(small, sizeof small, "%s", "1234567"), 0); /* 7 + NUL fits */
    assert_string_equal(small, "1234567");
    dh_assert_rc(dlock_keyf(small, sizeof small, "%s", "12345678"), DLOCK_EINVAL);

    dh_assert_rc(dlock_keyf(buf, sizeof buf, "%s", ""), DLOCK_EINVAL);
    assert_true(dlock_last_errmsg()[0] != '\0');

    char big[DLOCK_KEY_MAX + 2];
    memset(big, 'k', sizeof big - 1);
    big[sizeof big - 1] = '\0'; /* DLOCK_KEY_MAX + 1 bytes */
    dh_assert_rc(dlock_keyf(buf, sizeof buf, "%s", big), DLOCK_EINVAL);
    assert_true(dlock_last_errmsg()[0] != '\0');
    big[DLOCK_KEY_MAX] = '\0'; /* exactly DLOCK_KEY_MAX: fine */
    dh_assert_rc(dlock_keyf(buf, sizeof buf, "%s", big), 0);
    assert_int_equal(strlen(buf), DLOCK_KEY_MAX);
    dh_assert_rc(dlock_keyf(NULL, 16, "x"), DLOCK_EINVAL);
    dh_assert_rc(dlock_keyf(buf, 0, "x"), DLOCK_EINVAL);
}

static void test_cancel(void **state)
{
    (void)state;
    dlock_cancel *tok = NULL;
    dh_assert_rc(dlock_cancel_new(&tok), 0);
    assert_non_null(tok);
    dlock_lock *la;
    dlock_client *a = client_holding(&la, "cancel-a", NULL, "m:cancel", dh_opts(20000, 0));
    dlock_client *b = dh_client_tagged(srv, "cancel-b", NULL);
    static struct acq t; /* static: outlives a failed test */
    start_blocked_acq(&t, b, "m:cancel", 15000, tok);

    int64_t trig = dh_now_ms();
    dlock_cancel_trigger(tok);
    int64_t took = blocked_acq_ended(&t, DLOCK_ECANCELED, trig);
    if (took > 5000)
        fail_msg("cancel took %lld ms", (long long)took);

    /* A triggered token stays triggered: the next wait is cancelled too. */
    dlock_lock *lb = NULL;
    dlock_lock_opts o2 = dh_opts(20000, 15000);
    o2.cancel = tok;
    int64_t t0 = dh_now_ms();
    dh_assert_rc(dlock_acquire(&lb, b, "m:cancel", &o2), DLOCK_ECANCELED);
    assert_true(dh_now_ms() - t0 < 5000);

    /* The holder is unaffected. */
    assert_int_equal(dlock_is_held(la), 1);
    dh_assert_rc(dlock_release(la), 0);
    dlock_cancel_free(tok);
    dlock_cancel_free(NULL);
    dlock_client_close(a);
    dlock_client_close(b);
}

static void test_close_wakes_waiter(void **state)
{
    (void)state;
    dlock_lock *la;
    dlock_client *a = client_holding(&la, "close-a", NULL, "m:close", dh_opts(20000, 0));
    dlock_client *b = dh_client_tagged(srv, "close-b", NULL);
    static struct acq t; /* static: outlives a failed test */
    start_blocked_acq(&t, b, "m:close", 15000, NULL);

    int64_t t0 = dh_now_ms();
    dlock_client_close(b);
    assert_true(blocked_acq_ended(&t, DLOCK_ECLOSED, t0) < 5000);

    assert_int_equal(dlock_is_held(la), 1);
    dh_assert_rc(dlock_release(la), 0);
    dlock_client_close(a);
}

static void test_close_releases_held(void **state)
{
    (void)state;
    char owner[64];
    dlock_lock *l;
    dlock_client *c = client_holding(&l, "closerel", owner, "m:closerel", dh_opts(20000, 0));
    assert_int_equal(lock_in_redis("m:closerel", owner, 0), 1);
    dlock_client_close(c); /* releases the lock still held */
    assert_int_equal(lock_in_redis("m:closerel", owner, 0), 0);
}

static void test_unix_socket(void **state)
{
    (void)state;
    char owner[64];
    dh_owner(owner, sizeof owner, "unix");
    dlock_client *c = dh_client(srv->unix_url, owner);
    assert_non_null(c);
    dlock_lock_opts o = dh_opts(5000, 0);
    dlock_lock *l = NULL;
    dh_assert_rc(dlock_acquire(&l, c, "m:unix", &o), 0);
    assert_int_equal(lock_in_redis("m:unix", owner, 0), 1);
    /* The same server seen over TCP: busy. */
    dlock_client *t = dh_client_tagged(srv, "unix-tcp", NULL);
    dlock_lock *lt = NULL;
    dh_assert_rc(dlock_try_acquire(&lt, t, "m:unix", &o), DLOCK_EBUSY);
    dh_assert_rc(dlock_release(l), 0);
    assert_int_equal(lock_in_redis("m:unix", owner, 0), 0);
    dlock_client_close(c);
    dlock_client_close(t);
}

static void check_db3(const char *url, const char *key)
{
    char owner[64];
    dh_owner(owner, sizeof owner, "db3");
    dlock_client *c = dh_client(url, owner);
    assert_non_null(c);
    dlock_lock_opts o = dh_opts(5000, 0);
    dlock_lock *l = NULL;
    dh_assert_rc(dlock_acquire(&l, c, key, &o), 0);
    if (lock_in_redis(key, owner, 3) != 1)
        fail_msg("%s: lock not in db 3", url);
    if (lock_in_redis(key, owner, 0) != 0)
        fail_msg("%s: lock in db 0", url);
    dh_assert_rc(dlock_release(l), 0);
    assert_int_equal(lock_in_redis(key, owner, 3), 0);
    dlock_client_close(c);
}

static void test_db_select(void **state)
{
    (void)state;
    char url[DH_PATH_MAX + 32];
    snprintf(url, sizeof url, "%s/3", srv->url);
    check_db3(url, "m:db-tcp");
    snprintf(url, sizeof url, "%s?db=3", srv->unix_url);
    check_db3(url, "m:db-unix");
}

struct renew_check {
    const char *owner;
    dlock_lock *lock;
    int checks;
    const char *why;
};

/* True as soon as something is wrong with the renewed lock. */
static int renew_broken(void *arg)
{
    struct renew_check *r = arg;
    char name[1024];
    r->checks++;
    if (dh_find_key(name, sizeof name, srv, 0, "m:renew", r->owner) != 1) {
        r->why = "the key vanished from Redis";
        return 1;
    }
    if (dlock_is_held(r->lock) != 1) {
        r->why = "dlock_is_held() turned 0";
        return 1;
    }
    return 0;
}

static void test_auto_renew(void **state)
{
    (void)state;
    char owner[64];
    dlock_client *c = dh_client_tagged(srv, "renew", owner);
    dlock_lock_opts o = dh_opts(600, 0);
    assert_int_equal(o.auto_renew, 1); /* the default */
    dlock_lock *l = NULL;
    dh_assert_rc(dlock_acquire(&l, c, "m:renew", &o), 0);

    /* For 2 s (more than three TTLs) the lock must stay in Redis and held:
     * poll for anything going wrong; the poll must run out. */
    struct renew_check rc = { owner, l, 0, NULL };
    if (dh_wait_until(renew_broken, &rc, 2000))
        fail_msg("auto-renewed lock (ttl 600 ms): %s after %d checks", rc.why, rc.checks);
    assert_true(rc.checks > 5);
    int64_t rem = dlock_lock_remaining_ms(l);
    assert_true(rem > 0 && rem <= 600);
    assert_int_equal(dlock_lock_renew_error(l), 0);

    dlock_client_stats st;
    memset(&st, 0, sizeof st);
    st.version = DLOCK_STATS_VERSION;
    dh_assert_rc(dlock_stats(&st, c), 0);
    assert_true(st.renewals >= 2);
    assert_int_equal(st.held_now, 1);
    dh_assert_rc(dlock_release(l), 0);
    assert_int_equal(lock_in_redis("m:renew", owner, 0), 0);
    dlock_client_close(c);
}

static void test_inspect(void **state)
{
    (void)state;
    char owner[64];
    dlock_client *c = dh_client_tagged(srv, "inspect", owner);
    dlock_client *obs = dh_client_tagged(srv, "inspect-observer", NULL);

    dlock_info info;
    memset(&info, 0x55, sizeof info);
    dh_assert_rc(dlock_inspect(&info, obs, "m:inspect"), 0);
    assert_int_equal(info.held, 0);
    assert_int_equal(info.ttl_ms, 0);
    assert_int_equal(info.fencing_token, 0);
    assert_string_equal(info.owner, "");

    dlock_lock_opts o = dh_opts_fixed(10000, 0);
    dlock_lock *l = NULL;
    dh_assert_rc(dlock_acquire(&l, c, "m:inspect", &o), 0);
    dh_assert_rc(dlock_inspect(&info, obs, "m:inspect"), 0);
    assert_int_equal(info.held, 1);
    assert_string_equal(info.owner, owner);
    if (info.ttl_ms <= 0 || info.ttl_ms > 10000)
        fail_msg("inspect ttl_ms = %lld", (long long)info.ttl_ms);
    assert_true(info.fencing_token == dlock_lock_fencing_token(l));
    assert_true(info.waiters >= 0);
    dh_assert_rc(dlock_release(l), 0);
    dh_assert_rc(dlock_inspect(&info, obs, "m:inspect"), 0);
    assert_int_equal(info.held, 0);
    dlock_client_close(c);
    dlock_client_close(obs);
}

static void test_force_unlock(void **state)
{
    (void)state;
    char owner[64];
    dlock_client *a = dh_client_tagged(srv, "force", owner);
    dlock_client *op = dh_client(srv->url, "force-operator");
    assert_non_null(op);
    dlock_lock_opts o = dh_opts(20000, 0);
    dlock_lock *la = NULL, *lb = NULL;
    dh_assert_rc(dlock_acquire(&la, a, "m:force", &o), 0);
    uint64_t ta = dlock_lock_fencing_token(la);

    int removed = -1;
    dh_assert_rc(dlock_force_unlock(&removed, op, "m:force"), 0);
    assert_int_equal(removed, 1);
    assert_int_equal(lock_in_redis("m:force", owner, 0), 0);
    removed = -1;
    dh_assert_rc(dlock_force_unlock(&removed, op, "m:force"), 0);
    assert_int_equal(removed, 0);

    /* Someone else takes it, with a larger token; the old holder's release
     * says it no longer held it and leaves the new lock alone. */
    dh_assert_rc(dlock_acquire(&lb, op, "m:force", &o), 0);
    assert_true(dlock_lock_fencing_token(lb) > ta);
    dh_assert_rc(dlock_extend(la, 20000), DLOCK_ENOTHELD);
    assert_int_equal(dlock_is_held(la), 0); /* marked lost */
    dh_assert_rc(dlock_release(la), DLOCK_ENOTHELD);
    assert_int_equal(lock_in_redis("m:force", "force-operator", 0), 1);
    dh_assert_rc(dlock_release(lb), 0);
    dlock_client_close(a);
    dlock_client_close(op);
}

/* Keys are opaque bytes to the caller: spaces, glob characters, braces (a
 * hash tag), UTF-8. Keys sharing a hash tag are still different locks. */
static void test_odd_keys(void **state)
{
    (void)state;
    static const char *const keys[] = {
        "a b", "*?[x]", "x{y}z", "x{y}w", "{y}", "{}", "{", "}", "ü-ключ", "a:b:c", "%s%n",
    };
    const size_t n = sizeof keys / sizeof keys[0];
    dlock_client *a = dh_client_tagged(srv, "odd-a", NULL);
    dlock_client *b = dh_client_tagged(srv, "odd-b", NULL);
    dlock_lock_opts o = dh_opts(10000, 0);
    dlock_lock *held[sizeof keys / sizeof keys[0]];
    for (size_t i = 0; i < n; i++) {
        int rc = dlock_acquire(&held[i], a, keys[i], &o);
        if (rc != 0)
            fail_msg("acquire \"%s\" (with %zu other keys held): %s: %s", keys[i], i,
                     dlock_strerror(rc), dlock_last_errmsg());
        assert_string_equal(dlock_lock_key(held[i]), keys[i]);
    }
    for (size_t i = 0; i < n; i++) {
        dlock_lock *l = NULL;
        int rc = dlock_try_acquire(&l, b, keys[i], &o);
        if (rc != DLOCK_EBUSY)
            fail_msg("try_acquire \"%s\" while held: %d (%s)", keys[i], rc, dlock_strerror(rc));
        dlock_info info;
        dh_assert_rc(dlock_inspect(&info, b, keys[i]), 0);
        assert_int_equal(info.held, 1);
        assert_true(info.fencing_token == dlock_lock_fencing_token(held[i]));
    }
    for (size_t i = 0; i < n; i++)
        dh_assert_rc(dlock_release(held[i]), 0);
    dlock_client_close(a);
    dlock_client_close(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_acquire_release),
        cmocka_unit_test(test_try_acquire_busy),
        cmocka_unit_test(test_wait_timeout),
        cmocka_unit_test(test_wait_then_acquire),
        cmocka_unit_test(test_held_and_remaining),
        cmocka_unit_test(test_extend),
        cmocka_unit_test(test_with),
        cmocka_unit_test(test_keyf),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_close_wakes_waiter),
        cmocka_unit_test(test_close_releases_held),
        cmocka_unit_test(test_unix_socket),
        cmocka_unit_test(test_db_select),
        cmocka_unit_test(test_auto_renew),
        cmocka_unit_test(test_inspect),
        cmocka_unit_test(test_force_unlock),
        cmocka_unit_test(test_odd_keys),
    };
    return cmocka_run_group_tests_name("mutex", tests, group_setup, dh_group_teardown);
}
