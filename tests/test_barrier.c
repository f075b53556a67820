/*
 * test_barrier.c — the barrier (dlock_barrier_wait): parties released
 * together and the barrier reused, a party that times out leaves, bad input
 * and a parties conflict, waking without polling, cancel and close, and
 * processes at a barrier, one of them killed with SIGKILL while waiting.
 *
 * Design. One private redis-server for the group. Threads (each with its
 * own client) are the parties of the in-process tests and record their
 * results for the main thread; processes (dh_fork, forked while this
 * process has no threads and no client) are the parties of the SIGKILL
 * test and report in shared memory. The server's view of the arrivals is
 * read directly (ZCARD of the documented key dlock:{KEY}:barr). Every wait
 * is bounded; figures are printed.
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

/* Live arrivals of the barrier `key` as the server counts them. */
static int64_t arrivals(const char *key)
{
    return dh_cmd_int(srv, 0, "ZCARD dlock:{%s}:barr", key);
}

struct arr_arg {
    const char *key;
    int64_t n;
};

static int arrivals_are(void *arg)
{
    struct arr_arg *a = arg;
    return arrivals(a->key) == a->n;
}

static void wait_arrivals(const char *key, int64_t n, int timeout_ms)
{
    struct arr_arg a = { key, n };
    if (!dh_wait_until(arrivals_are, &a, timeout_ms))
        fail_msg("barrier %s never had %lld arrivals (it has %lld)", key, (long long)n,
                 (long long)arrivals(key));
}

/* ---- a thread that waits at a barrier (dh_thread) */

typedef struct party {
    dh_thread t;
    dlock_client *c;
    const char *key;
    int parties;
    int64_t wait_ms;
    dlock_cancel *cancel;
} party;

static int party_call(void *arg)
{
    party *p = arg;
    return dlock_barrier_wait(p->c, p->key, p->parties, p->wait_ms, p->cancel);
}

/* Start a party waiting at key (of `parties`) through c on a thread. */
static void party_start(party *p, dlock_client *c, const char *key, int parties, int64_t wait_ms)
{
    p->c = c;
    p->key = key;
    p->parties = parties;
    p->wait_ms = wait_ms;
    dh_thread_start(&p->t, party_call, p);
}

/* ------------------------------------------------------------------ tests */

/* Three parties go on together, three times over the same key (the
 * generations), and nothing waits in between. */
static void test_trip_and_reuse(void **state)
{
    (void)state;
    enum { N = 3 };
    dlock_client *cs[N];
    for (int i = 0; i < N; i++)
        cs[i] = dh_client_tagged(srv, "trip", NULL);
    for (int round = 0; round < 3; round++) {
        party ps[N];
        memset(ps, 0, sizeof ps);
        for (int i = 0; i < N - 1; i++)
            party_start(&ps[i], cs[i], "b:trip", N, 10000);
        wait_arrivals("b:trip", N - 1, 5000);
        for (int i = 0; i < N - 1; i++)
            assert_false(dh_thread_done(&ps[i].t));
        int64_t t0 = dh_now_ms();
        party_start(&ps[N - 1], cs[N - 1], "b:trip", N, 10000);
        for (int i = 0; i < N; i++)
            dh_thread_expect(&ps[i].t, 15000, 0, "barrier wait");
        int64_t last = 0;
        for (int i = 0; i < N; i++)
            if (ps[i].t.ended_ms - t0 > last)
                last = ps[i].t.ended_ms - t0;
        print_message("round %d: all %d parties out %lld ms after the last arrived\n", round, N,
                      (long long)last);
        assert_int_equal(arrivals("b:trip"), 0);
    }
    /* one party is a barrier of one */
    dh_assert_rc(dlock_barrier_wait(cs[0], "b:one", 1, 0, NULL), 0);
    for (int i = 0; i < N; i++)
        dlock_client_close(cs[i]);
}

/* A party whose wait runs out leaves: it counts neither then nor later. */
static void test_timeout_leaves(void **state)
{
    (void)state;
    dlock_client *a = dh_client_tagged(srv, "to-a", NULL), *b = dh_client_tagged(srv, "to-b", NULL);
    int64_t t0 = dh_now_ms();
    dh_assert_rc(dlock_barrier_wait(a, "b:to", 2, 300, NULL), DLOCK_ETIMEDOUT);
    int64_t took = dh_now_ms() - t0;
    assert_non_null(strstr(dlock_last_errmsg(), "1 of 2 parties arrived"));
    assert_true(took >= 300 && took < 3000);
    assert_int_equal(arrivals("b:to"), 0);
    /* the next party does not meet the one that left */
    dh_assert_rc(dlock_barrier_wait(b, "b:to", 2, 0, NULL), DLOCK_ETIMEDOUT);
    assert_int_equal(arrivals("b:to"), 0);
    dlock_client_close(a);
    dlock_client_close(b);
}

/* Bad input and a parties conflict are DLOCK_EINVAL with a message. */
static void test_bad_input(void **state)
{
    (void)state;
    dlock_client *a = dh_client_tagged(srv, "bad-a", NULL),
                 *b = dh_client_tagged(srv, "bad-b", NULL);
    dh_assert_rc(dlock_barrier_wait(a, "b:bad", 0, 0, NULL), DLOCK_EINVAL);
    assert_non_null(strstr(dlock_last_errmsg(), "parties must be from 1"));
    dh_assert_rc(dlock_barrier_wait(a, "b:bad", -2, 0, NULL), DLOCK_EINVAL);
    dh_assert_rc(dlock_barrier_wait(a, "b:bad", 100001, 0, NULL), DLOCK_EINVAL);
    dh_assert_rc(dlock_barrier_wait(a, "b:bad", 2, -7, NULL), DLOCK_EINVAL);
    dh_assert_rc(dlock_barrier_wait(a, "", 2, 0, NULL), DLOCK_EINVAL);
    dh_assert_rc(dlock_barrier_wait(NULL, "b:bad", 2, 0, NULL), DLOCK_EINVAL);
    party p = { 0 };
    party_start(&p, a, "b:bad", 3, 10000);
    wait_arrivals("b:bad", 1, 5000);
    dh_assert_rc(dlock_barrier_wait(b, "b:bad", 2, 0, NULL), DLOCK_EINVAL);
    assert_non_null(strstr(dlock_last_errmsg(), "waiting for 2 parties"));
    assert_non_null(strstr(dlock_last_errmsg(), "expect 3"));
    assert_int_equal(arrivals("b:bad"), 1); /* the refused one was not counted */
    dlock_client_close(b);
    dlock_client_close(a); /* ends the waiting party */
    dh_thread_expect(&p.t, 15000, DLOCK_ECLOSED, "barrier wait");
}

/* A waiting party sends only its refresh (one a second) and leaves at the
 * trip, woken by it. */
static void test_wakeup_without_polling(void **state)
{
    (void)state;
    dlock_client *a = dh_client_tagged(srv, "np-a", NULL), *b = dh_client_tagged(srv, "np-b", NULL);
    party p = { 0 };
    party_start(&p, a, "b:np", 2, 20000);
    wait_arrivals("b:np", 1, 5000);
    uint64_t r0 = dh_round_trips(a);
    assert_false(dh_wait_until(dh_thread_done, &p.t, 2000));
    uint64_t r1 = dh_round_trips(a);
    int64_t t0 = dh_now_ms();
    dh_assert_rc(dlock_barrier_wait(b, "b:np", 2, 1000, NULL), 0);
    dh_thread_expect(&p.t, 15000, 0, "barrier wait");
    uint64_t r2 = dh_round_trips(a);
    print_message("barrier party: %llu round trips in 2 s of waiting (refresh every 1 s), %llu "
                  "to leave; out %lld ms after the trip\n",
                  (unsigned long long)(r1 - r0), (unsigned long long)(r2 - r1),
                  (long long)(p.t.ended_ms - t0));
    assert_true(r1 - r0 <= 3); /* a polling party would show dozens */
    assert_true(r2 - r1 <= 2);
    assert_true(p.t.ended_ms - t0 < 2000);
    dlock_client_close(a);
    dlock_client_close(b);
}

/* Cancel ends a wait with DLOCK_ECANCELED, and the party leaves. */
static void test_cancel(void **state)
{
    (void)state;
    dlock_client *a = dh_client_tagged(srv, "cc", NULL);
    dlock_cancel *cancel;
    dh_assert_rc(dlock_cancel_new(&cancel), 0);
    party p = { 0 };
    p.cancel = cancel;
    party_start(&p, a, "b:cc", 2, DLOCK_WAIT_FOREVER);
    wait_arrivals("b:cc", 1, 5000);
    dlock_cancel_trigger(cancel);
    dh_thread_expect(&p.t, 15000, DLOCK_ECANCELED, "barrier wait");
    assert_int_equal(arrivals("b:cc"), 0);
    dlock_cancel_free(cancel);
    dlock_client_close(a);
}

/* ---- processes (dh_fork_call) */

struct barrier_arg {
    const char *key;
    int parties;
};

/* A party's wait in a forked helper (20 s at most). */
static int barrier_call(dlock_client *c, void *arg)
{
    struct barrier_arg *b = arg;
    return dlock_barrier_wait(c, b->key, b->parties, 20000, NULL);
}

/* Parties of 3: two arrive, one of them is killed with SIGKILL. Its
 * arrival stops counting within its life (3 s), so the next arrival does
 * not trip the barrier with a dead party; the one after it does, and the
 * three live parties go on. */
static void test_party_killed(void **state)
{
    (void)state;
    enum { N = 4 };
    dh_slot *s = dh_slots_new(N);
    int ctl[N];
    pid_t pid[N];
    struct barrier_arg ba = { "b:kill", 3 };
    for (int i = 0; i < N; i++)
        pid[i] = dh_fork_call(&s[i], &ctl[i], srv->url, "barrier-party", barrier_call, &ba);
    assert_int_equal(write(ctl[0], "g", 1), 1);
    assert_int_equal(write(ctl[1], "g", 1), 1);
    wait_arrivals("b:kill", 2, 10000);
    int st;
    int64_t t0 = dh_now_ms();
    kill(pid[1], SIGKILL);
    assert_int_equal(dh_waitpid(pid[1], &st, 5000), 1);
    wait_arrivals("b:kill", 1, 10000); /* the dead arrival expired */
    int64_t gone = dh_now_ms() - t0;
    assert_int_equal(write(ctl[2], "g", 1), 1);
    wait_arrivals("b:kill", 2, 10000);
    assert_false(dh_wait_until(dh_slot_done, &s[0], 500)); /* two live of three: no trip */
    assert_int_equal(atomic_load(&s[2].state), DH_SLOT_RUNNING);
    assert_int_equal(write(ctl[3], "g", 1), 1);
    for (int i = 0; i < N; i++) {
        if (i == 1)
            continue;
        char what[32];
        snprintf(what, sizeof what, "party %d", i);
        dh_slot_expect(&s[i], 10000, 0, what);
    }
    print_message("a party killed with SIGKILL stopped counting after %lld ms (its life: 3 s)\n",
                  (long long)gone);
    assert_true(gone <= 6000);
    for (int i = 0; i < N; i++)
        close(ctl[i]);
    dh_slots_free(s, N);
}

/* Redlock: refused. */
static void test_redlock_refused(void **state)
{
    (void)state;
    dh_redlock rl;
    dlock_client *c = dh_redlock_open(&rl, srv, "redlock");
    dh_assert_rc(dlock_barrier_wait(c, "b:rl", 2, 0, NULL), DLOCK_EINVAL);
    assert_non_null(strstr(dlock_last_errmsg(), "not available on Redlock"));
    dh_redlock_stop(&rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        dh_unit_test(test_party_killed),           cmocka_unit_test(test_trip_and_reuse),
        dh_unit_test(test_timeout_leaves),         cmocka_unit_test(test_bad_input),
        dh_unit_test(test_wakeup_without_polling), cmocka_unit_test(test_cancel),
        dh_unit_test(test_redlock_refused),
    };
    return cmocka_run_group_tests_name("barrier", tests, group_setup, dh_group_teardown);
}
