/*
 * test_fencing.c — fencing tokens and ownership.
 *
 * Design. Fencing tokens must strictly increase per key for the life of the
 * deployment: across holders, after the lock and every per-key key in Redis
 * has expired, and after the server restarted with its data lost. The test
 * keeps the largest token seen so far and checks every new grant against it.
 * Expiry is real: keys are given a short TTL (the lock by its own ttl; the
 * other per-key keys, which the library may keep longer, by PEXPIRE through
 * the harness) and the test polls, bounded, until Redis no longer has them —
 * no fixed sleeps. Restart uses the harness (kill -9, same port, empty dir).
 * A fence key set far above the server's clock (as a clock stepped back, or
 * a Redlock write-back from a faster node, leaves it) is the last token
 * handed out: the next grant of every kind (mutex, reader, permit, handoff)
 * is above it; on Redlock, also once the master that was ahead is gone.
 * Ownership: a lock that expired and was taken over can neither be extended
 * nor released by its old handle, and the new holder's lock is untouched.
 * The same holds for an old handle whose local validity is still running
 * (its key was deleted, then another client took the lock): its extend, its
 * release and its watchdog's renewal all reach the server (counted round
 * trips), all fail, and the new holder keeps its value and its TTL.
 */
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

/* Acquire `key` through c (ttl_ms, not renewed) and keep it; check its
 * token is larger than *max and below 2^53, and raise *max. */
static dlock_lock *grant_above(dlock_client *c, const char *key, int64_t ttl_ms, uint64_t *max,
                               const char *when)
{
    dlock_lock_opts o = dh_opts_fixed(ttl_ms, 0);
    dlock_lock *l = NULL;
    dh_assert_rc(dlock_acquire(&l, c, key, &o), 0);
    uint64_t t = dlock_lock_fencing_token(l);
    if (t <= *max)
        fail_msg("%s: fencing token %llu not above the earlier %llu", when, (unsigned long long)t,
                 (unsigned long long)*max);
    if (t >= (UINT64_C(1) << 53))
        fail_msg("%s: fencing token %llu not below 2^53", when, (unsigned long long)t);
    *max = t;
    return l;
}

/* Acquire `key` once through c, check its token is larger than *max, raise
 * *max, release. */
static void grant_and_check(dlock_client *c, const char *key, uint64_t *max, const char *when)
{
    dh_assert_rc(dlock_release(grant_above(c, key, 10000, max, when)), 0);
}

struct key_gone {
    const char *part;
    const char *needle;
};

static int key_gone(void *arg)
{
    struct key_gone *k = arg;
    char name[1024];
    return dh_find_key(name, sizeof name, srv, 0, k->part, k->needle) == 0;
}

/* Number of keys whose name contains `part`, or -1. */
static int64_t count_keys(const char *part)
{
    char pat[256];
    snprintf(pat, sizeof pat, "*%s*", part);
    redisReply *r = dh_cmd(srv, 0, "KEYS %s", pat);
    if (!r)
        return -1;
    int64_t n = r->type == REDIS_REPLY_ARRAY ? (int64_t)r->elements : -1;
    freeReplyObject(r);
    return n;
}

static int no_keys(void *arg)
{
    return count_keys(arg) == 0;
}

static void test_increase_across_holders(void **state)
{
    (void)state;
    dlock_client *a = dh_client(srv->url, "fence-a");
    dlock_client *b = dh_client(srv->url, "fence-b");
    assert_non_null(a);
    assert_non_null(b);
    uint64_t max = 0;
    for (int i = 0; i < 10; i++)
        grant_and_check(i % 2 ? a : b, "f:holders", &max, "alternating holders");

    /* Tokens are per key but still never go back when another key is used. */
    uint64_t other = 0;
    grant_and_check(a, "f:other", &other, "another key");
    grant_and_check(b, "f:holders", &max, "after another key");
    dlock_client_close(a);
    dlock_client_close(b);
}

static void test_increase_after_expiry(void **state)
{
    (void)state;
    char owner[DH_OWNER_MAX];
    dlock_client *c = dh_client_tagged(srv, "fence-exp", owner);
    uint64_t max = 0;
    grant_and_check(c, "f:expiry", &max, "first grant");

    /* A lock that is never released: let its TTL run out. */
    dlock_lock *l = grant_above(c, "f:expiry", 150, &max, "a lock left to expire");
    struct key_gone kg = { "f:expiry", owner };
    assert_true(dh_wait_until(key_gone, &kg, 10000));
    /* The local validity cannot outlast the server's TTL. */
    assert_int_equal(dlock_is_held(l), 0);
    assert_int_equal(dlock_lock_remaining_ms(l), 0);
    dh_assert_rc(dlock_release(l), DLOCK_ENOTHELD);
    grant_and_check(c, "f:expiry", &max, "after the lock expired");

    /* Now let every per-key key (fence state, queues, ...) expire too. */
    redisReply *keys = dh_cmd(srv, 0, "KEYS %s", "*f:expiry*");
    assert_non_null(keys);
    assert_int_equal(keys->type, REDIS_REPLY_ARRAY);
    for (size_t i = 0; i < keys->elements; i++)
        assert_int_equal(
            dh_cmd_ok(srv, 0, "PEXPIRE %b 1", keys->element[i]->str, keys->element[i]->len), 0);
    freeReplyObject(keys);
    char part[] = "f:expiry";
    assert_true(dh_wait_until(no_keys, part, 10000));
    grant_and_check(c, "f:expiry", &max, "after all per-key state expired");
    dlock_client_close(c);
}

static void test_increase_after_restart(void **state)
{
    (void)state;
    dlock_client *c = dh_client(srv->url, "fence-restart");
    assert_non_null(c);
    uint64_t max = 0;
    for (int i = 0; i < 3; i++)
        grant_and_check(c, "f:restart", &max, "before restart");

    assert_int_equal(dh_redis_restart(srv), 0);
    assert_int_equal(dh_dbsize(srv, 0), 0); /* the data is really gone */

    /* The old client reconnects on demand. */
    grant_and_check(c, "f:restart", &max, "after restart (old client)");
    dlock_client *fresh = dh_client(srv->url, "fence-restart-2");
    assert_non_null(fresh);
    grant_and_check(fresh, "f:restart", &max, "after restart (new client)");

    /* And once more, with a lock held across the restart. */
    dlock_lock *l = grant_above(c, "f:restart", 10000, &max, "held across a restart");
    assert_int_equal(dh_redis_restart(srv), 0);
    grant_and_check(fresh, "f:restart", &max, "second holder after a restart");
    /* The first holder's lock is gone with the data: its release says so. */
    dh_assert_rc(dlock_release(l), DLOCK_ENOTHELD);
    dlock_client_close(c);
    dlock_client_close(fresh);
}

static void test_expired_lock_taken_over(void **state)
{
    (void)state;
    char owner_a[DH_OWNER_MAX], owner_b[DH_OWNER_MAX];
    dlock_client *a = dh_client_tagged(srv, "own-a", owner_a);
    dlock_client *b = dh_client_tagged(srv, "own-b", owner_b);

    dlock_lock_opts oa = dh_opts_fixed(300, 0);
    dlock_lock *la = NULL, *lb = NULL;
    dh_assert_rc(dlock_acquire(&la, a, "f:owner", &oa), 0);
    struct key_gone kg = { "f:owner", owner_a };
    assert_true(dh_wait_until(key_gone, &kg, 10000));
    assert_int_equal(dlock_is_held(la), 0);

    dlock_lock_opts ob = dh_opts_fixed(20000, 0);
    dh_assert_rc(dlock_acquire(&lb, b, "f:owner", &ob), 0);
    assert_true(dlock_lock_fencing_token(lb) > dlock_lock_fencing_token(la));
    char name[1024], before[1024], after[1024];
    assert_int_equal(dh_find_key(name, sizeof name, srv, 0, "f:owner", owner_b), 1);
    assert_true(dh_cmd_str(before, sizeof before, srv, 0, "GET %s", name) > 0);
    int64_t pttl_before = dh_cmd_int(srv, 0, "PTTL %s", name);

    dh_assert_rc(dlock_extend(la, 60000), DLOCK_ENOTHELD);
    assert_int_equal(dlock_is_held(la), 0);
    dh_assert_rc(dlock_release(la), DLOCK_ENOTHELD);

    /* B's lock is untouched: same value, TTL not raised by A's extend. */
    assert_true(dh_cmd_str(after, sizeof after, srv, 0, "GET %s", name) > 0);
    assert_string_equal(before, after);
    assert_non_null(strstr(after, owner_b));
    int64_t pttl_after = dh_cmd_int(srv, 0, "PTTL %s", name);
    assert_true(pttl_after > 0 && pttl_after <= pttl_before);
    assert_int_equal(dlock_is_held(lb), 1);
    dh_assert_rc(dlock_release(lb), 0);
    assert_int_equal(dh_find_key(name, sizeof name, srv, 0, "f:owner", owner_b), 0);
    dlock_client_close(a);
    dlock_client_close(b);
}

/* ------------------------------------------------- a fence ahead of the clock */

/* The clock of server r in microseconds (TIME); fails the test if it
 * cannot be read. */
static int64_t server_us_of(const dh_redis *r)
{
    int64_t us = dh_server_us(r);
    assert_true(us > 0);
    return us;
}

/* Set the fence key `name` (which must exist: the layout is the documented
 * dlock:{KEY}:fence / :sfence) 10^12 us (11.6 days) ahead of the server's
 * clock; returns the value set. */
static uint64_t fence_ahead(const char *name)
{
    assert_int_equal(dh_cmd_int(srv, 0, "EXISTS %s", name), 1);
    int64_t ahead = server_us_of(srv) + 1000000000000LL;
    assert_int_equal(dh_cmd_ok(srv, 0, "SET %s %lld", name, (long long)ahead), 0);
    return (uint64_t)ahead;
}

/* Check a new token against the last one (strictly above) and keep it. */
static void above(uint64_t *last, uint64_t t, const char *when)
{
    print_message("%s: token %llu\n", when, (unsigned long long)t);
    if (t <= *last)
        fail_msg("%s: fencing token %llu not above %llu", when, (unsigned long long)t,
                 (unsigned long long)*last);
    if (t >= (UINT64_C(1) << 53))
        fail_msg("%s: fencing token %llu not below 2^53", when, (unsigned long long)t);
    *last = t;
}

struct handoff_waiter {
    dlock_client *c;
    const char *key;
    dlock_lock *l;
};

static int handoff_wait(void *arg)
{
    struct handoff_waiter *w = arg;
    dlock_lock_opts o = dh_opts_fixed(10000, 10000);
    return dlock_acquire(&w->l, w->c, w->key, &o);
}

/* The fence key 10^12 us ahead of the server's time: it stands for a token
 * already handed out, so the next grant must be above it, and the ones after
 * that above each other: for a mutex, for readers (one after the other and
 * two at once), for a semaphore's permits (its own fence key), and for a
 * waiter handed the lock by a release. */
static void test_fence_ahead_of_clock(void **state)
{
    (void)state;
    dlock_client *c = dh_client(srv->url, "fence-ahead");
    dlock_client *w = dh_client(srv->url, "fence-ahead-w");
    assert_non_null(c);
    assert_non_null(w);
    dlock_lock_opts o = dh_opts_fixed(10000, 0);
    dlock_lock *l = NULL, *l2 = NULL;
    uint64_t last = 0;

    /* mutex */
    dh_assert_rc(dlock_acquire(&l, c, "f:ahead", &o), 0);
    above(&last, dlock_lock_fencing_token(l), "mutex, first");
    dh_assert_rc(dlock_release(l), 0);
    last = fence_ahead("dlock:{f:ahead}:fence");
    for (int i = 0; i < 3; i++) {
        dh_assert_rc(dlock_acquire(&l, c, "f:ahead", &o), 0);
        above(&last, dlock_lock_fencing_token(l), "mutex, fence ahead of the clock");
        dh_assert_rc(dlock_release(l), 0);
    }

    /* readers: one after the other, then two at once */
    last = fence_ahead("dlock:{f:ahead}:fence");
    for (int i = 0; i < 2; i++) {
        dh_assert_rc(dlock_rw_acquire(&l, c, "f:ahead", DLOCK_READ, &o), 0);
        above(&last, dlock_lock_fencing_token(l), "reader, fence ahead of the clock");
        dh_assert_rc(dlock_release(l), 0);
    }
    last = fence_ahead("dlock:{f:ahead}:fence");
    dh_assert_rc(dlock_rw_acquire(&l, c, "f:ahead", DLOCK_READ, &o), 0);
    dh_assert_rc(dlock_rw_acquire(&l2, w, "f:ahead", DLOCK_READ, &o), 0);
    above(&last, dlock_lock_fencing_token(l), "first of two readers");
    above(&last, dlock_lock_fencing_token(l2), "second of two readers");
    dh_assert_rc(dlock_release(l), 0);
    dh_assert_rc(dlock_release(l2), 0);

    /* a semaphore: its own fence key */
    dh_assert_rc(dlock_sem_acquire(&l, c, "f:ahead-sem", 2, &o), 0);
    dh_assert_rc(dlock_release(l), 0);
    last = fence_ahead("dlock:{f:ahead-sem}:sfence");
    dh_assert_rc(dlock_sem_acquire(&l, c, "f:ahead-sem", 2, &o), 0);
    dh_assert_rc(dlock_sem_acquire(&l2, w, "f:ahead-sem", 2, &o), 0);
    above(&last, dlock_lock_fencing_token(l), "first permit, fence ahead of the clock");
    above(&last, dlock_lock_fencing_token(l2), "second permit");
    dh_assert_rc(dlock_release(l), 0);
    dh_assert_rc(dlock_release(l2), 0);

    /* a waiter handed the lock by the release (the handoff's own grant) */
    dh_assert_rc(dlock_acquire(&l, c, "f:ahead", &o), 0);
    static struct handoff_waiter hw; /* static: outlives a failed test */
    hw = (struct handoff_waiter){ w, "f:ahead", NULL };
    static dh_thread t;
    dh_thread_start(&t, handoff_wait, &hw);
    assert_true(dh_wait_waiters(c, "f:ahead", 1, 5000));
    last = fence_ahead("dlock:{f:ahead}:fence");
    dh_assert_rc(dlock_release(l), 0);
    dh_assert_rc(dh_thread_join(&t, 10000), 0);
    above(&last, dlock_lock_fencing_token(hw.l), "waiter handed the lock, fence ahead");
    dh_assert_rc(dlock_release(hw.l), 0);
    dh_assert_rc(dlock_acquire(&l, c, "f:ahead", &o), 0);
    above(&last, dlock_lock_fencing_token(l), "the next holder");
    dh_assert_rc(dlock_release(l), 0);

    dlock_client_close(c);
    dlock_client_close(w);
}

/* Redlock over three masters, one of whose fence keys is far ahead (a
 * write-back from a faster node, a clock stepped back): the token that
 * master gives is the lock's, and it must reach a quorum (the write-back),
 * so that with that master gone the next quorum still counts above it. */
static void test_fence_ahead_on_one_redlock_master(void **state)
{
    (void)state;
    dh_redlock rl;
    dh_redlock_start(&rl, srv);
    dh_redis *m3 = rl.more[1];
    dlock_client_opts co = DLOCK_CLIENT_OPTS_INIT;
    co.connect_timeout_ms = 500;
    co.command_timeout_ms = 500;
    dlock_client *c = NULL;
    dh_assert_rc(dlock_client_open(&c, rl.url, &co), 0);
    dlock_lock_opts o = dh_opts_fixed(10000, 0);
    dlock_lock *l = NULL;
    uint64_t last = 0;
    dh_assert_rc(dlock_acquire(&l, c, "f:rl-ahead", &o), 0);
    above(&last, dlock_lock_fencing_token(l), "Redlock, first");
    dh_assert_rc(dlock_release(l), 0);

    const char *fk = "dlock:{f:rl-ahead}:fence";
    assert_int_equal(dh_cmd_int(m3, 0, "EXISTS %s", fk), 1);
    int64_t ahead = server_us_of(m3) + 1000000000000LL;
    assert_int_equal(dh_cmd_ok(m3, 0, "SET %s %lld", fk, (long long)ahead), 0);
    last = (uint64_t)ahead;
    dh_assert_rc(dlock_acquire(&l, c, "f:rl-ahead", &o), 0);
    above(&last, dlock_lock_fencing_token(l), "Redlock, one master's fence ahead");
    dh_assert_rc(dlock_release(l), 0);

    /* that master gone: the other two are a quorum, and count above it */
    assert_int_equal(dh_redis_kill9(m3), 0);
    for (int i = 0; i < 2; i++) {
        dh_assert_rc(dlock_acquire(&l, c, "f:rl-ahead", &o), 0);
        above(&last, dlock_lock_fencing_token(l), "Redlock, without the master that was ahead");
        dh_assert_rc(dlock_release(l), 0);
    }
    dlock_client_close(c);
    dh_redlock_stop(&rl);
}

/* -------------------------------------------- an old handle, locally valid */

/* A holds `key` (TTL 20 s, not renewed, so it stays locally valid); its key
 * is deleted behind its back (as `dlock unlock --force` or a failover
 * would), and B takes the lock. Fills B's lock, its key name, its value and
 * its PTTL at that moment. */
struct takeover {
    dlock_client *a, *b;
    char owner_a[DH_OWNER_MAX], owner_b[DH_OWNER_MAX];
    dlock_lock *la, *lb;
    char name[1024], value[1024];
    int64_t pttl, at_ms;
};

static void take_over(struct takeover *t, const char *key, const dlock_lock_opts *oa)
{
    t->a = dh_client_tagged(srv, "old", t->owner_a);
    t->b = dh_client_tagged(srv, "new", t->owner_b);
    dh_assert_rc(dlock_acquire(&t->la, t->a, key, oa), 0);
    assert_int_equal(dh_delete_key(srv, 0, key, t->owner_a), 1);
    dlock_lock_opts ob = dh_opts_fixed(20000, 0);
    dh_assert_rc(dlock_acquire(&t->lb, t->b, key, &ob), 0);
    assert_true(dlock_lock_fencing_token(t->lb) > dlock_lock_fencing_token(t->la));
    assert_int_equal(dh_find_key(t->name, sizeof t->name, srv, 0, key, t->owner_b), 1);
    assert_true(dh_cmd_str(t->value, sizeof t->value, srv, 0, "GET %s", t->name) > 0);
    t->pttl = dh_cmd_int(srv, 0, "PTTL %s", t->name);
    t->at_ms = dh_now_ms();
    assert_true(t->pttl > 0);
}

/* B's lock as B left it: the same value (holder, token) and a TTL that only
 * ran down since (never raised, never cut by A's TTL). */
static void new_holder_untouched(const struct takeover *t)
{
    char now[1024];
    assert_true(dh_cmd_str(now, sizeof now, srv, 0, "GET %s", t->name) > 0);
    assert_string_equal(now, t->value);
    int64_t pttl = dh_cmd_int(srv, 0, "PTTL %s", t->name);
    int64_t ran = dh_now_ms() - t->at_ms;
    print_message("new holder's PTTL: %lld ms, %lld ms after %lld ms\n", (long long)t->pttl,
                  (long long)pttl, (long long)ran);
    assert_true(pttl <= t->pttl);
    assert_true(pttl >= t->pttl - ran - 1000);
    assert_int_equal(dlock_is_held(t->lb), 1);
}

static void take_over_end(struct takeover *t)
{
    dh_assert_rc(dlock_release(t->lb), 0);
    dlock_client_close(t->a);
    dlock_client_close(t->b);
}

/* dlock_extend on the old handle goes to the server (the handle still
 * believes itself valid) and fails there: DLOCK_ENOTHELD, the handle is
 * marked lost, B's lock keeps its value and TTL. */
static void test_taken_over_extend(void **state)
{
    (void)state;
    static struct takeover t;
    memset(&t, 0, sizeof t);
    dlock_lock_opts oa = dh_opts_fixed(20000, 0);
    take_over(&t, "f:tk-extend", &oa);
    assert_int_equal(dlock_is_held(t.la), 1); /* locally still valid */
    uint64_t rt = dh_round_trips(t.a);
    dh_assert_rc(dlock_extend(t.la, 60000), DLOCK_ENOTHELD);
    assert_true(dh_round_trips(t.a) > rt); /* it asked the server */
    assert_int_equal(dlock_is_held(t.la), 0);
    assert_int_equal(dlock_lock_renew_error(t.la), DLOCK_ENOTHELD);
    new_holder_untouched(&t);
    dh_assert_rc(dlock_release(t.la), DLOCK_ENOTHELD);
    new_holder_untouched(&t);
    take_over_end(&t);
}

/* dlock_release on the old handle goes to the server and fails there:
 * DLOCK_ENOTHELD, and B still holds its lock. */
static void test_taken_over_release(void **state)
{
    (void)state;
    static struct takeover t;
    memset(&t, 0, sizeof t);
    dlock_lock_opts oa = dh_opts_fixed(20000, 0);
    take_over(&t, "f:tk-release", &oa);
    assert_int_equal(dlock_is_held(t.la), 1);
    uint64_t rt = dh_round_trips(t.a);
    dh_assert_rc(dlock_release(t.la), DLOCK_ENOTHELD);
    assert_true(dh_round_trips(t.a) > rt);
    new_holder_untouched(&t);
    take_over_end(&t);
}

static atomic_int tk_lost;
static atomic_llong tk_lost_at;

static void on_tk_lost(dlock_lock *l, void *arg)
{
    (void)l;
    (void)arg;
    atomic_store(&tk_lost_at, (long long)dh_now_ms());
    atomic_fetch_add(&tk_lost, 1);
}

/* The old handle is auto-renewed (TTL 4 s, renewed every 400 ms): its
 * watchdog's next renewal reaches the server, fails there, and the lock is
 * reported lost (on_lost, DLOCK_ENOTHELD) long before its local validity
 * would have run out; B's lock keeps its value and TTL. */
static void test_taken_over_renewal(void **state)
{
    (void)state;
    static struct takeover t;
    memset(&t, 0, sizeof t);
    atomic_store(&tk_lost, 0);
    dlock_lock_opts oa = dh_opts(4000, 0);
    oa.renew_fraction = 0.1;
    oa.on_lost = on_tk_lost;
    int64_t acquired = dh_now_ms();
    take_over(&t, "f:tk-renew", &oa);
    uint64_t rt = dh_round_trips(t.a);
    assert_true(dh_wait_until(dh_flag_set, &tk_lost, 10000));
    int64_t lost_after = atomic_load(&tk_lost_at) - acquired;
    print_message("old handle reported lost %lld ms after its acquisition (TTL 4000 ms)\n",
                  (long long)lost_after);
    assert_true(lost_after < 3000); /* by the server's word, not by its validity */
    assert_true(dh_round_trips(t.a) > rt);
    assert_int_equal(dlock_is_held(t.la), 0);
    assert_int_equal(dlock_lock_renew_error(t.la), DLOCK_ENOTHELD);
    new_holder_untouched(&t);
    dh_assert_rc(dlock_release(t.la), DLOCK_ENOTHELD);
    assert_int_equal(atomic_load(&tk_lost), 1);
    new_holder_untouched(&t);
    take_over_end(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_increase_across_holders),
        cmocka_unit_test(test_increase_after_expiry),
        cmocka_unit_test(test_expired_lock_taken_over),
        cmocka_unit_test(test_fence_ahead_of_clock),
        cmocka_unit_test(test_fence_ahead_on_one_redlock_master),
        cmocka_unit_test(test_taken_over_extend),
        cmocka_unit_test(test_taken_over_release),
        cmocka_unit_test(test_taken_over_renewal),
        cmocka_unit_test(test_increase_after_restart),
    };
    return cmocka_run_group_tests_name("fencing", tests, group_setup, dh_group_teardown);
}
