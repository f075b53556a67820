/*
 * test_latch.c — the countdown latch (dlock_latch_*): counting, the rules
 * (never below zero, a live latch not re-armed, bad input), waking without
 * polling, waiting for a latch that does not exist yet, expiry, cancel and
 * close, and processes that count down and wait, one of them killed with
 * SIGKILL.
 *
 * Design. One private redis-server for the group. "No polling" is proved
 * by counting the waiter's round trips (dlock_stats) while the latch stays
 * closed. Processes (dh_fork) are forked at the start of their test, while
 * the test process has no threads and no client; each starts when the test
 * writes its pipe and reports its result in shared memory. Threads never
 * call cmocka asserts. Every wait is bounded; timing figures are printed,
 * never asserted tightly.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static dh_redis *srv;

static int group_setup(void **state)
{
    (void)state;
    return dh_group_start(&srv, NULL);
}

/* ---- a thread that waits for a latch (dh_thread) */

typedef struct waiter {
    dh_thread t;
    dlock_client *c;
    const char *key;
    int64_t wait_ms;
    dlock_cancel *cancel;
} waiter;

static int waiter_call(void *arg)
{
    waiter *w = arg;
    return dlock_latch_wait(w->c, w->key, w->wait_ms, w->cancel);
}

/* Start waiting for the latch key through c on a thread. */
static void waiter_start(waiter *w, dlock_client *c, const char *key, int64_t wait_ms)
{
    w->c = c;
    w->key = key;
    w->wait_ms = wait_ms;
    dh_thread_start(&w->t, waiter_call, w);
}

/* The client has made more round trips than `base` (its first look). */
struct rt_arg {
    dlock_client *c;
    uint64_t base;
};

static int round_trips_above(void *arg)
{
    struct rt_arg *a = arg;
    return dh_round_trips(a->c) > a->base;
}

/* The number of subscribers of the latch's channel (its first look comes
 * right after the subscription). */
static int64_t subscribers(const char *key)
{
    char chan[256];
    snprintf(chan, sizeof chan, "dlock:{%s}:lchan", key);
    redisReply *r = dh_cmd(srv, 0, "PUBSUB NUMSUB %s", chan);
    int64_t n = -1;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2)
        n = r->element[1]->integer;
    freeReplyObject(r);
    return n;
}

struct sub_arg {
    const char *key;
    int64_t n;
};

/* The latch's channel has at least a->n subscribers. */
static int has_subscribers(void *arg)
{
    struct sub_arg *a = arg;
    return subscribers(a->key) >= a->n;
}

static void wait_subscribers(const char *key, int64_t n)
{
    struct sub_arg a = { key, n };
    if (!dh_wait_until(has_subscribers, &a, 10000))
        fail_msg("latch %s never had %lld waiters subscribed", key, (long long)n);
}

/* ------------------------------------------------------------------ tests */

/* Counting: init, get, down to zero, never below; a live latch is not
 * armed again, a latch at zero is. */
static void test_counting(void **state)
{
    (void)state;
    dlock_client *c = dh_client_tagged(srv, "cnt", NULL);
    int n = 99;
    dh_assert_rc(dlock_latch_get(&n, c, "l:cnt"), 0);
    assert_int_equal(n, -1); /* no such latch */
    dh_assert_rc(dlock_latch_count_down(&n, c, "l:cnt"), DLOCK_EINVAL);
    assert_non_null(strstr(dlock_last_errmsg(), "does not exist"));
    dh_assert_rc(dlock_latch_init(c, "l:cnt", 3, 60000), 0);
    dh_assert_rc(dlock_latch_get(&n, c, "l:cnt"), 0);
    assert_int_equal(n, 3);
    dh_assert_rc(dlock_latch_init(c, "l:cnt", 5, 60000), DLOCK_EBUSY);
    assert_non_null(strstr(dlock_last_errmsg(), "3 count-downs left"));
    dh_assert_rc(dlock_latch_wait(c, "l:cnt", 0, NULL), DLOCK_ETIMEDOUT);
    assert_non_null(strstr(dlock_last_errmsg(), "3 count-downs left"));
    dh_assert_rc(dlock_latch_count_down(&n, c, "l:cnt"), 0);
    assert_int_equal(n, 2);
    dh_assert_rc(dlock_latch_count_down(NULL, c, "l:cnt"), 0);
    dh_assert_rc(dlock_latch_count_down(&n, c, "l:cnt"), 0);
    assert_int_equal(n, 0);
    dh_assert_rc(dlock_latch_wait(c, "l:cnt", 0, NULL), 0);
    dh_assert_rc(dlock_latch_wait(c, "l:cnt", DLOCK_WAIT_FOREVER, NULL), 0);
    /* below zero: refused, the count stays 0 */
    n = 7;
    dh_assert_rc(dlock_latch_count_down(&n, c, "l:cnt"), DLOCK_EINVAL);
    assert_int_equal(n, 0);
    assert_non_null(strstr(dlock_last_errmsg(), "already at zero"));
    dh_assert_rc(dlock_latch_get(&n, c, "l:cnt"), 0);
    assert_int_equal(n, 0);
    /* a latch at zero is armed again: a new generation */
    dh_assert_rc(dlock_latch_init(c, "l:cnt", 1, 60000), 0);
    dh_assert_rc(dlock_latch_get(&n, c, "l:cnt"), 0);
    assert_int_equal(n, 1);
    dh_assert_rc(dlock_latch_count_down(&n, c, "l:cnt"), 0);
    assert_int_equal(n, 0);
    /* the latch is a key of its own: the mutex of the same name is free */
    dlock_lock *l;
    dh_assert_rc(dlock_try_acquire(&l, c, "l:cnt", NULL), 0);
    dh_assert_rc(dlock_release(l), 0);
    dlock_client_close(c);
}

/* Bad input is DLOCK_EINVAL with a message, and nothing reaches Redis. */
static void test_bad_input(void **state)
{
    (void)state;
    dlock_client *c = dh_client_tagged(srv, "bad", NULL);
    int64_t keys = dh_dbsize(srv, 0);
    int n;
    char big[DLOCK_KEY_MAX + 2];
    memset(big, 'k', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    dh_assert_rc(dlock_latch_init(c, "l:bad", 0, 1000), DLOCK_EINVAL);
    assert_non_null(strstr(dlock_last_errmsg(), "count must be at least 1"));
    dh_assert_rc(dlock_latch_init(c, "l:bad", -3, 1000), DLOCK_EINVAL);
    dh_assert_rc(dlock_latch_init(c, "l:bad", 2, 0), DLOCK_EINVAL);
    dh_assert_rc(dlock_latch_init(c, "l:bad", 2, -1), DLOCK_EINVAL);
    dh_assert_rc(dlock_latch_init(c, "", 2, 1000), DLOCK_EINVAL);
    dh_assert_rc(dlock_latch_init(c, big, 2, 1000), DLOCK_EINVAL);
    dh_assert_rc(dlock_latch_init(NULL, "l:bad", 2, 1000), DLOCK_EINVAL);
    dh_assert_rc(dlock_latch_count_down(&n, c, NULL), DLOCK_EINVAL);
    dh_assert_rc(dlock_latch_wait(c, "l:bad", -5, NULL), DLOCK_EINVAL);
    dh_assert_rc(dlock_latch_get(NULL, c, "l:bad"), DLOCK_EINVAL);
    assert_int_equal(dh_dbsize(srv, 0), keys);
    dlock_client_close(c);
}

/* A waiter sends nothing while the latch is counted down but not to zero,
 * and returns at the count-down that reaches zero, woken by it. */
static void test_wakeup_without_polling(void **state)
{
    (void)state;
    dlock_client *a = dh_client_tagged(srv, "np-a", NULL), *b = dh_client_tagged(srv, "np-b", NULL);
    dh_assert_rc(dlock_latch_init(a, "l:np", 3, 60000), 0);
    waiter w = { 0 };
    struct rt_arg rt = { b, dh_round_trips(b) };
    waiter_start(&w, b, "l:np", 20000);
    assert_true(dh_wait_until(round_trips_above, &rt, 5000)); /* it looked */
    uint64_t r0 = dh_round_trips(b);
    int n;
    dh_assert_rc(dlock_latch_count_down(&n, a, "l:np"), 0);
    dh_assert_rc(dlock_latch_count_down(&n, a, "l:np"), 0);
    assert_int_equal(n, 1);
    /* 1 s at one count-down from zero: the waiter must neither return nor poll */
    assert_false(dh_wait_until(dh_thread_done, &w.t, 1000));
    uint64_t r1 = dh_round_trips(b);
    int64_t t0 = dh_now_ms();
    dh_assert_rc(dlock_latch_count_down(&n, a, "l:np"), 0);
    assert_int_equal(n, 0);
    dh_thread_expect(&w.t, 10000, 0, "latch wait");
    int64_t woke_ms = dh_now_ms() - t0;
    uint64_t r2 = dh_round_trips(b);
    print_message("latch waiter: %llu round trips while closed for 1 s, %llu to open; woken "
                  "%lld ms after the last count-down\n",
                  (unsigned long long)(r1 - r0), (unsigned long long)(r2 - r1), (long long)woke_ms);
    assert_int_equal(r1 - r0, 0); /* a polling waiter would show dozens */
    assert_int_equal(r2 - r1, 1); /* one look after the message */
    assert_true(woke_ms < 2000);
    dlock_client_close(a);
    dlock_client_close(b);
}

/* A waiter that comes before the init waits for the latch to be armed and
 * to reach zero. */
static void test_wait_before_init(void **state)
{
    (void)state;
    dlock_client *a = dh_client_tagged(srv, "early-a", NULL),
                 *b = dh_client_tagged(srv, "early-b", NULL);
    waiter w = { 0 };
    waiter_start(&w, b, "l:early", 20000);
    wait_subscribers("l:early", 1);
    assert_false(dh_wait_until(dh_thread_done, &w.t, 300)); /* no latch: not open */
    dh_assert_rc(dlock_latch_init(a, "l:early", 1, 60000), 0);
    assert_false(dh_wait_until(dh_thread_done, &w.t, 300)); /* armed: not open */
    dh_assert_rc(dlock_latch_count_down(NULL, a, "l:early"), 0);
    dh_thread_expect(&w.t, 10000, 0, "latch wait");
    dlock_client_close(a);
    dlock_client_close(b);
}

/* A latch whose counters never come expires at its TTL: the waiter is
 * told (DLOCK_ETIMEDOUT, "expired"), with one look at the expiry instant,
 * and nothing is left in Redis. */
static void test_expiry(void **state)
{
    (void)state;
    dlock_client *a = dh_client_tagged(srv, "exp-a", NULL),
                 *b = dh_client_tagged(srv, "exp-b", NULL);
    int64_t keys = dh_dbsize(srv, 0);
    dh_assert_rc(dlock_latch_init(a, "l:exp", 2, 400), 0);
    dh_assert_rc(dlock_latch_count_down(NULL, a, "l:exp"), 0);
    uint64_t r0 = dh_round_trips(b);
    int64_t t0 = dh_now_ms();
    dh_assert_rc(dlock_latch_wait(b, "l:exp", DLOCK_WAIT_FOREVER, NULL), DLOCK_ETIMEDOUT);
    int64_t took = dh_now_ms() - t0;
    assert_non_null(strstr(dlock_last_errmsg(), "expired before its count reached zero"));
    uint64_t rts = dh_round_trips(b) - r0;
    print_message("waiter of an abandoned latch (ttl 400 ms): told after %lld ms, %llu round "
                  "trips\n",
                  (long long)took, (unsigned long long)rts);
    assert_true(took < 5000);
    assert_true(rts <= 3); /* subscribe, the look, the look at the expiry */
    assert_int_equal(dh_dbsize(srv, 0), keys);
    int n;
    dh_assert_rc(dlock_latch_get(&n, a, "l:exp"), 0);
    assert_int_equal(n, -1);
    dlock_client_close(a);
    dlock_client_close(b);
}

/* Cancel and close end a wait with their codes. */
static void test_cancel_and_close(void **state)
{
    (void)state;
    dlock_client *a = dh_client_tagged(srv, "cc-a", NULL), *b = dh_client_tagged(srv, "cc-b", NULL);
    dh_assert_rc(dlock_latch_init(a, "l:cc", 1, 60000), 0);
    dlock_cancel *cancel;
    dh_assert_rc(dlock_cancel_new(&cancel), 0);
    waiter w = { 0 };
    w.cancel = cancel;
    waiter_start(&w, b, "l:cc", DLOCK_WAIT_FOREVER);
    wait_subscribers("l:cc", 1);
    dlock_cancel_trigger(cancel);
    dh_thread_expect(&w.t, 10000, DLOCK_ECANCELED, "latch wait");
    dlock_cancel_free(cancel);

    /* close only once the waiter is inside its wait (it has looked) */
    waiter w2 = { 0 };
    struct rt_arg rt = { b, dh_round_trips(b) };
    waiter_start(&w2, b, "l:cc", DLOCK_WAIT_FOREVER);
    assert_true(dh_wait_until(round_trips_above, &rt, 5000));
    dlock_client_close(b);
    dh_thread_expect(&w2.t, 10000, DLOCK_ECLOSED, "latch wait");
    dlock_client_close(a);
}

/* ---- processes: waiters and counters, one counter killed (dh_fork_call) */

/* A forked helper's call: wait for the latch arg (20 s at most), or count
 * it down once. */
static int latch_wait_call(dlock_client *c, void *arg)
{
    return dlock_latch_wait(c, arg, 20000, NULL);
}

static int latch_count_down_call(dlock_client *c, void *arg)
{
    return dlock_latch_count_down(NULL, c, arg);
}

/* A helper that, when its pipe says so, waits for the latch (role 'w') or
 * counts it down once (role 'd'). */
static pid_t spawn(dh_slot *s, int role, const char *key, int *ctl)
{
    return dh_fork_call(s, ctl, srv->url, role == 'w' ? "latch-waiter" : "latch-counter",
                        role == 'w' ? latch_wait_call : latch_count_down_call, (void *)key);
}

static void go(int ctl)
{
    assert_int_equal(write(ctl, "g", 1), 1);
}

/* Three waiting processes and three counters: the waiters return when the
 * third count-down arrives, not before. Then a latch of 3 whose third
 * counter is killed with SIGKILL before it counts: the waiters are told
 * at the latch's expiry (documented: the TTL bounds a latch whose counters
 * died), and a waiter killed with SIGKILL leaves nothing that stops the
 * others. */
static void test_processes(void **state)
{
    (void)state;
    enum { W = 3, D = 3 };
    dh_slot *s = dh_slots_new(2 * (W + D));
    int ctl[2 * (W + D)];
    pid_t pid[2 * (W + D)];
    /* forked before this process opens a client: no threads yet */
    for (int i = 0; i < W + D; i++)
        pid[i] = spawn(&s[i], i < W ? 'w' : 'd', "l:proc", &ctl[i]);
    for (int i = W + D; i < 2 * (W + D); i++)
        pid[i] = spawn(&s[i], i < 2 * W + D ? 'w' : 'd', "l:dead", &ctl[i]);

    dlock_client *c = dh_client_tagged(srv, "proc", NULL);
    dh_assert_rc(dlock_latch_init(c, "l:proc", D, 60000), 0);
    for (int i = 0; i < W; i++)
        go(ctl[i]);
    wait_subscribers("l:proc", W);
    for (int i = W; i < W + D; i++) {
        go(ctl[i]);
        dh_slot_expect(&s[i], 15000, 0, "count-down");
        if (i < W + D - 1)
            for (int k = 0; k < W; k++)
                assert_int_equal(atomic_load(&s[k].state), DH_SLOT_RUNNING);
    }
    for (int i = 0; i < W; i++)
        dh_slot_expect(&s[i], 15000, 0, "latch waiter process");

    /* the third counter dies before it counts; a waiter is killed too */
    int64_t keys = dh_dbsize(srv, 0);
    dh_assert_rc(dlock_latch_init(c, "l:dead", D, 1500), 0);
    int base = W + D;
    for (int i = base; i < base + W; i++)
        go(ctl[i]);
    struct sub_arg sa = { "l:dead", W };
    assert_true(dh_wait_until(has_subscribers, &sa, 10000));
    int st;
    kill(pid[base], SIGKILL); /* a waiter, in its wait */
    assert_int_equal(dh_waitpid(pid[base], &st, 5000), 1);
    kill(pid[base + W + D - 1], SIGKILL); /* a counter, before it counted */
    assert_int_equal(dh_waitpid(pid[base + W + D - 1], &st, 5000), 1);
    for (int i = base + W; i < base + W + D - 1; i++) {
        go(ctl[i]);
        dh_slot_expect(&s[i], 15000, 0, "count-down");
    }
    int n;
    dh_assert_rc(dlock_latch_get(&n, c, "l:dead"), 0);
    assert_int_equal(n, 1);
    int64_t t0 = dh_now_ms();
    for (int i = base + 1; i < base + W; i++) {
        dh_slot_expect(&s[i], 15000, DLOCK_ETIMEDOUT, "waiter of a latch whose counter was killed");
        assert_non_null(strstr(s[i].msg, "expired"));
    }
    print_message("waiters of the latch whose counter was killed: told %lld ms after the last "
                  "count-down (ttl 1.5 s)\n",
                  (long long)(dh_now_ms() - t0));
    assert_int_equal(dh_dbsize(srv, 0), keys); /* the latch expired: nothing left */
    for (int i = 0; i < 2 * (W + D); i++)
        close(ctl[i]);
    dlock_client_close(c);
    dh_slots_free(s, 2 * (W + D));
}

/* Redlock: refused, with a message. */
static void test_redlock_refused(void **state)
{
    (void)state;
    dh_redlock rl;
    dlock_client *c = dh_redlock_open(&rl, srv, "redlock");
    dh_assert_rc(dlock_latch_init(c, "l:rl", 2, 1000), DLOCK_EINVAL);
    assert_non_null(strstr(dlock_last_errmsg(), "not available on Redlock"));
    dh_assert_rc(dlock_latch_wait(c, "l:rl", 0, NULL), DLOCK_EINVAL);
    dh_redlock_stop(&rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        dh_unit_test(test_processes),        cmocka_unit_test(test_counting),
        dh_unit_test(test_bad_input),        cmocka_unit_test(test_wakeup_without_polling),
        dh_unit_test(test_wait_before_init), cmocka_unit_test(test_expiry),
        dh_unit_test(test_cancel_and_close), cmocka_unit_test(test_redlock_refused),
    };
    return cmocka_run_group_tests_name("latch", tests, group_setup, dh_group_teardown);
}
