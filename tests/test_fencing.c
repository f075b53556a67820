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
 * Ownership: a lock that expired and was taken over can neither be extended
 * nor released by its old handle, and the new holder's lock is untouched.
 */
#include <stdio.h>
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_increase_across_holders),
        cmocka_unit_test(test_increase_after_expiry),
        cmocka_unit_test(test_expired_lock_taken_over),
        cmocka_unit_test(test_increase_after_restart),
    };
    return cmocka_run_group_tests_name("fencing", tests, group_setup, dh_group_teardown);
}
