/*
 * test_validity.c — a lock's local validity counts from the SEND of the
 * request that granted or confirmed it (DESIGN.md, "Safety model"): send +
 * TTL - drift, never from the reply. A server that answers late must
 * shorten the validity by at least the delay, on every path that sets it:
 * the acquire's round trip, dlock_extend, the watchdog's renewal, and a
 * waiter that takes a handoff signal as its grant. A grant whose reply
 * arrives after its validity ended is given back, not returned; so is one
 * that arrives after dlock_client_close began.
 *
 * Design. The delay comes from dlock's fault-injecting transport
 * (dlock__client_set_faults with delay_ms): every reply is held back until
 * delay_ms after its request was written, on real connections to a real
 * redis-server. The bound each test checks is TTL - drift - delay (drift:
 * 1% of the TTL + 2 ms), read with dlock_lock_remaining_ms() right after the
 * call returned; the figures are printed. Nothing here sleeps: waits are
 * bounded polls (dh_wait_until) of counters and server state.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "client.h"
#include "harness.h"
#include "keys.h"

static dh_redis *srv;

static int group_setup(void **state)
{
    (void)state;
    return dh_group_start(&srv, NULL);
}

/* The longest validity a grant with this TTL may have after a round trip
 * that took at least delay_ms (TTL - drift - delay). */
static int64_t bound_ms(int64_t ttl_ms, int64_t delay_ms)
{
    return ttl_ms - (ttl_ms / 100 + 2) - delay_ms;
}

static void check_within(const char *what, int64_t left_ms, int64_t ttl_ms, int64_t delay_ms)
{
    int64_t most = bound_ms(ttl_ms, delay_ms);
    print_message("%s: %lld ms of validity left (TTL %lld, delay %lld: at most %lld)\n", what,
                  (long long)left_ms, (long long)ttl_ms, (long long)delay_ms, (long long)most);
    if (left_ms > most)
        fail_msg("%s: %lld ms of validity left after a round trip of at least %lld ms; at most "
                 "%lld allowed (TTL %lld - drift - delay): counted from the reply, not the send?",
                 what, (long long)left_ms, (long long)delay_ms, (long long)most, (long long)ttl_ms);
    if (left_ms <= 0)
        fail_msg("%s: no validity left at all", what);
}

/* Every reply of c held back delay_ms after its request. */
static void delay_replies(dlock_client *c, long delay_ms)
{
    dlock__faults f = { 0 };
    f.delay_ms = delay_ms;
    dlock__client_set_faults(c, &f);
}

/* A delay of D between the acquire's send and its reply: the handle's
 * validity is at most TTL - drift - D. */
static void test_acquire_counts_from_send(void **state)
{
    (void)state;
    const int64_t ttl = 2000, delay = 200;
    dlock_client *c = dh_client_tagged(srv, "v-acq", NULL);
    delay_replies(c, delay);
    dlock_lock_opts o = dh_opts_fixed(ttl, 0);
    dlock_lock *l = NULL;
    int64_t t0 = dh_now_ms();
    dh_assert_rc(dlock_try_acquire(&l, c, "v:acquire", &o), 0);
    int64_t left = dlock_lock_remaining_ms(l);
    int64_t took = dh_now_ms() - t0;
    assert_true(took >= delay); /* the delay was there */
    check_within("acquire", left, ttl, delay);
    dlock__client_set_faults(c, NULL);
    dh_assert_rc(dlock_release(l), 0);
    dlock_client_close(c);
}

/* The same for dlock_extend: the new validity counts from the extend's
 * send. */
static void test_extend_counts_from_send(void **state)
{
    (void)state;
    const int64_t ttl = 5000, delay = 200;
    dlock_client *c = dh_client_tagged(srv, "v-ext", NULL);
    dlock_lock_opts o = dh_opts_fixed(2000, 0);
    dlock_lock *l = NULL;
    dh_assert_rc(dlock_try_acquire(&l, c, "v:extend", &o), 0);
    delay_replies(c, delay);
    dh_assert_rc(dlock_extend(l, ttl), 0);
    check_within("extend", dlock_lock_remaining_ms(l), ttl, delay);
    dlock__client_set_faults(c, NULL);
    dh_assert_rc(dlock_release(l), 0);
    dlock_client_close(c);
}

/* The first renewal's landing: when the client counts a renewal, the
 * lock's remaining validity at that moment. */
struct renewal_seen {
    dlock_client *c;
    dlock_lock *l;
    int64_t left;
};

static int renewal_landed(void *arg)
{
    struct renewal_seen *r = arg;
    dlock_client_stats s;
    if (dlock_stats(&s, r->c) != 0 || s.renewals == 0)
        return 0;
    r->left = dlock_lock_remaining_ms(r->l);
    return 1;
}

/* The same for the watchdog's renewals: after a renewal whose reply came
 * D late, the validity is at most TTL - drift - D. */
static void test_renewal_counts_from_send(void **state)
{
    (void)state;
    const int64_t ttl = 3000, delay = 300;
    dlock_client *c = dh_client_tagged(srv, "v-renew", NULL);
    dlock_lock_opts o = dh_opts(ttl, 0);
    o.renew_fraction = 0.25; /* every 750 ms */
    dlock_lock *l = NULL;
    dh_assert_rc(dlock_try_acquire(&l, c, "v:renew", &o), 0);
    delay_replies(c, delay);
    struct renewal_seen r = { c, l, -1 };
    assert_int_equal(dh_attempts(c), 1);
    if (!dh_wait_until(renewal_landed, &r, 10000))
        fail_msg("no renewal within 10 s (renew error %d)", dlock_lock_renew_error(l));
    check_within("renewal", r.left, ttl, delay);
    assert_int_equal(dlock_is_held(l), 1);
    dlock__client_set_faults(c, NULL);
    dh_assert_rc(dlock_release(l), 0);
    dlock_client_close(c);
}

/* A waiter handed the lock by a release may take the handoff signal as its
 * grant, with the lease's length counted from its last request sent before
 * the grant (its busy attempt, or a later keepalive), never from the
 * signal's arrival. With every reply D late, a signal taken is worth at
 * most LEASE - drift - D; if the waiter confirmed with an attempt instead,
 * that attempt's own bound applies. */
struct sig_waiter {
    dlock_client *c;
    dlock_lock *l;
    int rc;
    int64_t left;                /* remaining validity right after the grant */
    uint64_t attempts, renewals; /* when it was read */
};

static int sig_wait(void *arg)
{
    struct sig_waiter *w = arg;
    dlock_lock_opts o = dh_opts(5000, 10000);
    w->rc = dlock_acquire(&w->l, w->c, "v:signal", &o);
    if (w->rc == 0) {
        w->left = dlock_lock_remaining_ms(w->l);
        dlock_client_stats s;
        dlock_stats(&s, w->c);
        w->attempts = s.attempts;
        w->renewals = s.renewals;
    }
    return w->rc;
}

static void test_signal_counts_from_send(void **state)
{
    (void)state;
    const int64_t delay = 100;
    dlock_client *h = dh_client_tagged(srv, "v-sig-holder", NULL);
    static struct sig_waiter w; /* static: outlives a failed test */
    memset(&w, 0, sizeof w);
    w.c = dh_client_tagged(srv, "v-sig-waiter", NULL);
    dlock_lock *held = NULL;
    dh_assert_rc(dlock_acquire(&held, h, "v:signal", NULL), 0);
    delay_replies(w.c, delay);
    dlock_info info; /* one round trip: the waiter's connection is pooled */
    dh_assert_rc(dlock_inspect(&info, w.c, "v:signal"), 0);
    static dh_thread t;
    dh_thread_start(&t, sig_wait, &w);
    assert_true(dh_wait_waiters(h, "v:signal", 1, 5000));
    dh_assert_rc(dlock_release(held), 0);
    dh_assert_rc(dh_thread_join(&t, 10000), 0);
    print_message("waiter: %llu attempts, %llu renewals when read\n",
                  (unsigned long long)w.attempts, (unsigned long long)w.renewals);
    if (w.renewals == 0 && w.attempts == 1)
        check_within("handoff signal taken", w.left, DLOCK__LEASE_TTL_MS, delay);
    else if (w.renewals == 0)
        check_within("handoff confirmed by an attempt", w.left, 5000, delay);
    else
        print_message("renewed before it was read: nothing to check\n");
    dlock__client_set_faults(w.c, NULL);
    dh_assert_rc(dlock_release(w.l), 0);
    dlock_client_close(h);
    dlock_client_close(w.c);
}

/* A grant whose reply arrives after its validity ended (delay > TTL) does
 * not count: the acquire fails and gives the lock back, so the key is free
 * on the server when the call returns. */
static void test_late_grant_given_back(void **state)
{
    (void)state;
    char owner[DH_OWNER_MAX];
    dlock_client *c = dh_client_tagged(srv, "v-late", owner);
    delay_replies(c, 300);
    dlock_lock_opts o = dh_opts_fixed(100, 0);
    dlock_lock *l = NULL;
    int rc = dlock_try_acquire(&l, c, "v:late", &o);
    print_message("late grant: %s (%s)\n", dlock_strerror(rc), dlock_last_errmsg());
    assert_int_not_equal(rc, 0);
    assert_null(l);
    char name[1024];
    assert_int_equal(dh_find_key(name, sizeof name, srv, 0, "v:late", owner), 0);
    dlock__client_set_faults(c, NULL);
    dlock_client_close(c);
}

/* An acquire whose grant is on its way while dlock_client_close starts:
 * close waits for it, and it must not hand the caller a lock that close
 * would free underneath it. It returns DLOCK_ECLOSED and gives the grant
 * back (the key is free once close returned). */
struct slow_acquire {
    dlock_client *c;
    int rc;
    char msg[256];
};

static int slow_try(void *arg)
{
    struct slow_acquire *s = arg;
    dlock_lock *l = NULL;
    dlock_lock_opts o = dh_opts(10000, 0);
    s->rc = dlock_try_acquire(&l, s->c, "v:close", &o);
    snprintf(s->msg, sizeof s->msg, "%s", dlock_last_errmsg());
    return s->rc; /* l is not touched: with a bug it is freed by close */
}

static int attempted(void *c)
{
    return dh_attempts(c) > 0;
}

static void test_close_during_slow_acquire(void **state)
{
    (void)state;
    char owner[DH_OWNER_MAX];
    static struct slow_acquire s; /* static: outlives a failed test */
    s.c = dh_client_tagged(srv, "v-close", owner);
    s.rc = 1;
    delay_replies(s.c, 300);
    static dh_thread t;
    dh_thread_start(&t, slow_try, &s);
    assert_true(dh_wait_until(attempted, s.c, 5000)); /* its request is on its way */
    dlock_client_close(s.c);
    int rc = dh_thread_join(&t, 5000);
    print_message("acquire racing close: %s (%s)\n", dlock_strerror(rc), s.msg);
    dh_assert_rc(rc, DLOCK_ECLOSED);
    char name[1024];
    assert_int_equal(dh_find_key(name, sizeof name, srv, 0, "v:close", owner), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_acquire_counts_from_send),
        cmocka_unit_test(test_extend_counts_from_send),
        cmocka_unit_test(test_renewal_counts_from_send),
        cmocka_unit_test(test_signal_counts_from_send),
        cmocka_unit_test(test_late_grant_given_back),
        cmocka_unit_test(test_close_during_slow_acquire),
    };
    return cmocka_run_group_tests_name("validity", tests, group_setup, dh_group_teardown);
}
