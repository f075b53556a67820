/*
 * test_security.c — who can do what: a Redis ACL user limited to dlock's
 * keys, channels and commands can use every feature; such a user cannot
 * touch other keys; another client — even with a copied owner id — cannot
 * release or extend a lock it does not hold; a guessed token does nothing;
 * credentials never appear in messages.
 */
#include <stdio.h>
#include <string.h>

#include "harness.h"

static dh_redis *srv;

/* The ACL rule documented in the README. */
#define DLOCK_ACL                                                                                  \
    "ACL SETUSER locker on >locker-pw resetkeys ~dlock:* resetchannels &dlock:* "                  \
    "-@all +ping +select +evalsha +eval +subscribe +unsubscribe +scan +blpop "                     \
    "+get +set +del +exists +incr +pexpire +pttl +time +publish +rpush +wait +role +info "         \
    "+zadd +zrem +zrange +zrangebyscore +zcard +zscore +zpopmin +hset +hget +hdel +hincrby"

static int group_setup(void **state)
{
    (void)state;
    if (dh_group_start(&srv, NULL) != 0)
        return -1;
    return dh_cmd_ok(srv, 0, DLOCK_ACL);
}

/* Everything works for the limited user: mutex (with a waiter woken by
 * pub/sub), semaphore, read lock, multi-lock, inspection, scan, unlock,
 * latch, barrier, rate limiter. */
static int scan_count(const dlock_key_state *st, void *arg)
{
    (void)st;
    (*(int *)arg)++;
    return 0;
}

static void test_acl_user_can_use_dlock(void **state)
{
    (void)state;
    char url[128];
    snprintf(url, sizeof url, "redis://locker:locker-pw@127.0.0.1:%d", srv->port);
    dlock_client *a = NULL, *b = NULL;
    dh_assert_rc(dlock_client_open(&a, url, NULL), 0);
    dh_assert_rc(dlock_client_open(&b, url, NULL), 0);
    dlock_lock *l, *s, *r, *m, *w = NULL;
    dh_assert_rc(dlock_acquire(&l, a, "acl:mutex", NULL), 0);
    dlock_lock_opts o = dh_opts(0, 300);
    dh_assert_rc(dlock_acquire(&w, b, "acl:mutex", &o), DLOCK_ETIMEDOUT); /* queued, subscribed */
    dh_assert_rc(dlock_sem_acquire(&s, a, "acl:sem", 2, NULL), 0);
    dh_assert_rc(dlock_rw_acquire(&r, a, "acl:rw", DLOCK_READ, NULL), 0);
    const char *keys[2] = { "acl:{m}:1", "acl:{m}:2" };
    dh_assert_rc(dlock_acquire_all(&m, a, keys, 2, NULL), 0);
    dlock_info info;
    dh_assert_rc(dlock_inspect(&info, b, "acl:mutex"), 0);
    assert_int_equal(info.held, 1);
    int n = 0;
    dh_assert_rc(dlock_scan(b, "acl:*", scan_count, &n), 0);
    assert_int_equal(n, 5); /* mutex, semaphore, read lock, two multi-lock keys */
    dh_assert_rc(dlock_release(l), 0);
    dh_assert_rc(dlock_release(s), 0);
    dh_assert_rc(dlock_release(r), 0);
    dh_assert_rc(dlock_release(m), 0);
    int removed;
    dh_assert_rc(dlock_force_unlock(&removed, b, "acl:mutex"), 0);
    /* the primitives that hold nothing: latch (with a waiter woken through
     * pub/sub), barrier, rate limiter, several permits */
    int left;
    dh_assert_rc(dlock_latch_init(a, "acl:latch", 1, 10000), 0);
    dh_assert_rc(dlock_latch_wait(b, "acl:latch", 200, NULL), DLOCK_ETIMEDOUT);
    dh_assert_rc(dlock_latch_count_down(&left, a, "acl:latch"), 0);
    dh_assert_rc(dlock_latch_wait(b, "acl:latch", 0, NULL), 0);
    dh_assert_rc(dlock_latch_get(&left, b, "acl:latch"), 0);
    dh_assert_rc(dlock_barrier_wait(a, "acl:barrier", 1, 0, NULL), 0);
    dh_assert_rc(dlock_barrier_wait(a, "acl:barrier", 2, 100, NULL), DLOCK_ETIMEDOUT);
    dh_assert_rc(dlock_rate_acquire(a, "acl:rate", 1, 1000, 1, 0, NULL), 0);
    dh_assert_rc(dlock_rate_acquire(b, "acl:rate", 1, 1000, 1, 0, NULL), DLOCK_EBUSY);
    dh_assert_rc(dlock_sem_acquire_n(&s, a, "acl:sem", 3, 2, NULL), 0);
    dh_assert_rc(dlock_release(s), 0);
    dlock_client_close(a);
    dlock_client_close(b);
}

/* The limited user cannot reach keys outside the prefix, and the failure is
 * a clear error, not a crash or a silent success. */
static void test_acl_user_confined(void **state)
{
    (void)state;
    char url[128];
    snprintf(url, sizeof url, "redis://locker:locker-pw@127.0.0.1:%d", srv->port);
    dlock_client_opts co = DLOCK_CLIENT_OPTS_INIT;
    co.prefix = "other:";
    dlock_client *c = NULL;
    dh_assert_rc(dlock_client_open(&c, url, &co), 0);
    dlock_lock *l = NULL;
    int rc = dlock_acquire(&l, c, "x", NULL);
    assert_int_equal(rc, DLOCK_EAUTH); /* a permission problem, not a protocol one */
    assert_non_null(strstr(dlock_last_errmsg(), "ACL"));
    assert_null(strstr(dlock_last_errmsg(), "locker-pw"));
    dlock_client_close(c);
    /* a wrong password names neither password */
    snprintf(url, sizeof url, "redis://locker:wrong-pw@127.0.0.1:%d", srv->port);
    dh_assert_rc(dlock_client_open(&c, url, NULL), DLOCK_EAUTH);
    assert_null(strstr(dlock_last_errmsg(), "wrong-pw"));
}

/* Another client with the same owner id is not the owner: it cannot take,
 * release or extend the lock; a guessed token releases nothing. */
static void test_copied_owner_and_guessed_token(void **state)
{
    (void)state;
    dlock_client_opts co = DLOCK_CLIENT_OPTS_INIT;
    co.owner_id = "payments-1";
    dlock_client *a = NULL, *b = NULL;
    dh_assert_rc(dlock_client_open(&a, srv->url, &co), 0);
    dh_assert_rc(dlock_client_open(&b, srv->url, &co), 0);
    dlock_lock *l, *x = NULL;
    dh_assert_rc(dlock_acquire(&l, a, "sec:pay", NULL), 0);
    dh_assert_rc(dlock_try_acquire(&x, b, "sec:pay", NULL), DLOCK_EBUSY);
    /* raw release attempts with guessed tokens (the owner id is public) */
    char name[256];
    assert_int_equal(dh_find_key(name, sizeof name, srv, 0, "sec:pay", "payments-1"), 1);
    const char *guesses[3] = { "payments-1", "00000000000000000000000000000000",
                               "ffffffffffffffffffffffffffffffff" };
    for (int i = 0; i < 3; i++) {
        redisReply *r = dh_cmd(
            srv, 0, "EVAL %s 1 %s %s",
            "local v = redis.call('GET', KEYS[1]) "
            "if v and string.sub(v, 1, 32) == ARGV[1] then return redis.call('DEL', KEYS[1]) end "
            "return 0",
            name, guesses[i]);
        assert_non_null(r);
        assert_int_equal(r->integer, 0);
        freeReplyObject(r);
    }
    assert_true(dlock_is_held(l));
    dlock_info info;
    dh_assert_rc(dlock_inspect(&info, b, "sec:pay"), 0);
    assert_int_equal(info.held, 1);
    assert_int_equal(info.fencing_token, dlock_lock_fencing_token(l));
    dh_assert_rc(dlock_release(l), 0);
    dlock_client_close(a);
    dlock_client_close(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_acl_user_can_use_dlock),
        cmocka_unit_test(test_acl_user_confined),
        cmocka_unit_test(test_copied_owner_and_guessed_token),
    };
    return cmocka_run_group_tests_name("security", tests, group_setup, dh_group_teardown);
}
