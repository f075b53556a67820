/*
 * test_wait.c — waiting and keeping: wake-up on release without polling,
 * FIFO handoff, dead waiters, expiry, timeouts leaving the queue, the
 * watchdog's batching, lost-lock detection and no renewal after release.
 *
 * Design. One private redis-server for the group. "No polling" is proved by
 * counting a waiter's round trips (its client's dlock_stats counter) while
 * the lock stays held, not by the clock. Threads never call cmocka asserts;
 * they record results for the main thread. Observation windows (e.g. "the
 * waiter must not get the lock while it is held") are bounded waits on a
 * condition that must stay false; every other wait is a bounded wait on the
 * condition itself.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static dh_redis *srv;

static int group_setup(void **state)
{
    (void)state;
    return dh_group_start(&srv, NULL);
}

/* ---- a thread that acquires, records when and in which order, releases */

typedef struct waiter {
    dh_thread t; /* t.rc: the acquire's result */
    dlock_client *c;
    const char *key;
    dlock_lock_opts o;
    int id;
    uint64_t fence;
    int64_t got_ms; /* when the acquire returned */
    int hold;       /* keep the lock (main thread releases) */
    dlock_lock *lock;
    int *order, *norder; /* shared, under order_mu */
} waiter;

static pthread_mutex_t order_mu = PTHREAD_MUTEX_INITIALIZER;

static int waiter_fn(void *arg)
{
    waiter *w = arg;
    dlock_lock *l = NULL;
    int rc = dlock_acquire(&l, w->c, w->key, &w->o);
    w->got_ms = dh_now_ms();
    if (rc == 0) {
        w->fence = dlock_lock_fencing_token(l);
        if (w->order) {
            pthread_mutex_lock(&order_mu);
            w->order[(*w->norder)++] = w->id;
            pthread_mutex_unlock(&order_mu);
        }
        if (w->hold)
            w->lock = l;
        else
            dlock_release(l);
    }
    return rc;
}

/* Start w acquiring key through c (w->o, or the default options) on a
 * thread of its own. A waiter must outlive a test that fails while it
 * waits: they are static. */
static void waiter_start(waiter *w, dlock_client *c, const char *key)
{
    w->c = c;
    w->key = key;
    if (w->o.version == 0)
        w->o = dh_opts(0, DLOCK_WAIT_FOREVER);
    dh_thread_start(&w->t, waiter_fn, w);
}

/* Two clients, tagged TAG-a and TAG-b (into *a and *b), and a lock on key
 * that a holds, taken with o (NULL: the default options): returned. */
static dlock_lock *a_holds(dlock_client **a, dlock_client **b, const char *tag, const char *key,
                           const dlock_lock_opts *o)
{
    char ta[32], tb[32];
    snprintf(ta, sizeof ta, "%s-a", tag);
    snprintf(tb, sizeof tb, "%s-b", tag);
    *a = dh_client_tagged(srv, ta, NULL);
    *b = dh_client_tagged(srv, tb, NULL);
    dlock_lock *held;
    dh_assert_rc(dlock_acquire(&held, *a, key, o), 0);
    return held;
}

/* ------------------------------------------------------------------ tests */

/* A waiter blocked on a held lock makes no acquire attempt while it waits
 * (only its entry's keepalive, a few a second, batched by the watchdog) and
 * gets the lock as soon as it is released, from the release's signal. */
static void test_wakeup_without_polling(void **state)
{
    (void)state;
    dlock_client *a, *b;
    dlock_lock *held = a_holds(&a, &b, "np", "np", NULL);
    static waiter w; /* static: outlives a failed test */
    memset(&w, 0, sizeof w);
    w.hold = 1; /* kept until the end: the server must name it */
    waiter_start(&w, b, "np");
    assert_true(dh_wait_waiters(a, "np", 1, 5000));
    uint64_t at0 = dh_attempts(b), ka0 = dh_keepalives(b);
    /* 1.5 s with the lock held: the waiter must neither get it nor poll */
    assert_false(dh_wait_until(dh_thread_done, &w.t, 1500));
    uint64_t at1 = dh_attempts(b), ka1 = dh_keepalives(b);
    print_message("while the lock was held for 1.5 s: %llu attempts, %llu keepalives\n",
                  (unsigned long long)(at1 - at0), (unsigned long long)(ka1 - ka0));
    assert_int_equal(at1 - at0, 0);           /* a polling waiter would show dozens */
    assert_true(ka1 - ka0 >= 1);              /* its place is kept alive... */
    assert_true(ka1 - ka0 <= 1500 / 200 + 2); /* ...every 200 ms, not more */
    int64_t released = dh_now_ms();
    dh_assert_rc(dlock_release(held), 0);
    /* the release itself handed the lock on (leased to the waiter, or
     * already confirmed): it is never free for a keepalive to find */
    dlock_info info;
    dh_assert_rc(dlock_inspect(&info, a, "np"), 0);
    assert_int_equal(info.held, 1);
    dh_assert_rc(dh_thread_join(&w.t, 5000), 0);
    assert_true(w.got_ms - released < 1000);
    /* the release's signal was the proof: no confirming attempt */
    assert_int_equal(dh_attempts(b) - at1, 0);
    dh_assert_rc(dlock_release(w.lock), 0);
    dlock_client_close(a);
    dlock_client_close(b);
}

/* Five waiters queued one after the other get the lock in that order. */
static void test_fifo_order(void **state)
{
    (void)state;
    enum { N = 5 };
    dlock_client *h = dh_client_tagged(srv, "fifo-h", NULL);
    dlock_client *cs[N];
    static waiter ws[N]; /* static: outlive a failed test */
    static int order[N], norder;
    memset(ws, 0, sizeof ws);
    norder = 0;
    dlock_lock *held;
    dh_assert_rc(dlock_acquire(&held, h, "fifo", NULL), 0);
    for (int i = 0; i < N; i++) {
        cs[i] = dh_client_tagged(srv, "fifo-w", NULL);
        ws[i].id = i;
        ws[i].order = order;
        ws[i].norder = &norder;
        waiter_start(&ws[i], cs[i], "fifo");
        assert_true(dh_wait_waiters(h, "fifo", i + 1, 5000));
    }
    /* a newcomer's try-lock must not barge in even at the moment of release */
    dh_assert_rc(dlock_release(held), 0);
    dlock_lock *barger = NULL;
    int rc = dlock_try_acquire(&barger, h, "fifo", NULL);
    if (rc == 0)
        dlock_release(barger);
    assert_int_equal(rc, DLOCK_EBUSY);
    for (int i = 0; i < N; i++) {
        dh_assert_rc(dh_thread_join(&ws[i].t, 10000), 0);
    }
    assert_int_equal(norder, N);
    for (int i = 0; i < N; i++)
        assert_int_equal(order[i], i);
    for (int i = 1; i < N; i++)
        assert_true(ws[i].fence > ws[i - 1].fence);
    for (int i = 0; i < N; i++)
        dlock_client_close(cs[i]);
    dlock_client_close(h);
}

/* A waiter killed with SIGKILL while queued does not block the queue: the
 * live waiter behind it gets the lock within the handoff TTL. The doomed
 * waiter is forked first, while the test has no threads, and queues when
 * the test writes its pipe. */
static void test_dead_waiter_leaves_queue(void **state)
{
    (void)state;
    int go[2];
    assert_int_equal(pipe(go), 0);
    pid_t pid = dh_fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char b;
        close(go[1]);
        if (read(go[0], &b, 1) != 1)
            _exit(0); /* the test ended without starting it */
        dlock_client *c = dh_client(srv->url, NULL);
        if (!c)
            _exit(2);
        dlock_lock *l;
        dlock_acquire(&l, c, "deadq", NULL); /* blocks until killed */
        _exit(3);
    }
    close(go[0]);
    dlock_client *h = dh_client_tagged(srv, "dead-h", NULL);
    dlock_lock *held;
    dh_assert_rc(dlock_acquire(&held, h, "deadq", NULL), 0);
    assert_int_equal(write(go[1], "g", 1), 1);
    close(go[1]);
    assert_true(dh_wait_waiters(h, "deadq", 1, 5000));
    kill(pid, SIGKILL);
    int st;
    assert_int_equal(dh_waitpid(pid, &st, 5000), 1);

    dlock_client *c = dh_client_tagged(srv, "dead-w", NULL);
    static waiter w; /* static: outlives a failed test */
    memset(&w, 0, sizeof w);
    waiter_start(&w, c, "deadq");
    assert_true(dh_wait_waiters(h, "deadq", 2, 5000));
    int64_t released = dh_now_ms();
    dh_assert_rc(dlock_release(held), 0); /* hands it to the dead waiter */
    dh_assert_rc(dh_thread_join(&w.t, 15000), 0);
    int64_t took = w.got_ms - released;
    print_message("live waiter got the lock %lld ms after the release (dead waiter ahead)\n",
                  (long long)took);
    assert_true(took < 1000); /* the dead waiter's lease: LEASE_TTL, not its TTL */
    dlock_client_close(c);
    dlock_client_close(h);
}

/* A lock that expires without a release still wakes its waiter. */
static void test_expiry_wakes_waiter(void **state)
{
    (void)state;
    dlock_client *a, *b;
    dlock_lock_opts o = dh_opts_fixed(700, DLOCK_WAIT_FOREVER);
    dlock_lock *held = a_holds(&a, &b, "exp", "expw", &o);
    static waiter w; /* static: outlives a failed test */
    memset(&w, 0, sizeof w);
    waiter_start(&w, b, "expw");
    dh_assert_rc(dh_thread_join(&w.t, 8000), 0);
    assert_true(w.fence > dlock_lock_fencing_token(held));
    dh_assert_rc(dlock_release(held), DLOCK_ENOTHELD);
    dlock_client_close(a);
    dlock_client_close(b);
}

/* A waiter that times out returns DLOCK_ETIMEDOUT no earlier than wait_ms
 * and leaves the queue; so does a cancelled one. */
static void test_timeout_and_cancel_leave_queue(void **state)
{
    (void)state;
    dlock_client *a, *b;
    dlock_lock *l = NULL, *held = a_holds(&a, &b, "tq", "tq", NULL);
    dlock_lock_opts o = dh_opts(0, 300);
    int64_t t0 = dh_now_ms();
    dh_assert_rc(dlock_acquire(&l, b, "tq", &o), DLOCK_ETIMEDOUT);
    int64_t took = dh_now_ms() - t0;
    assert_true(took >= 300);
    assert_true(took < 3000);
    assert_int_equal(dh_waiters(a, "tq"), 0);

    dlock_cancel *cancel;
    dh_assert_rc(dlock_cancel_new(&cancel), 0);
    static waiter w; /* static: outlives a failed test */
    memset(&w, 0, sizeof w);
    dlock_lock_opts wo = DLOCK_LOCK_OPTS_INIT;
    wo.cancel = cancel;
    w.o = wo;
    waiter_start(&w, b, "tq");
    assert_true(dh_wait_waiters(a, "tq", 1, 5000));
    dlock_cancel_trigger(cancel);
    dh_assert_rc(dh_thread_join(&w.t, 5000), DLOCK_ECANCELED);
    assert_int_equal(dh_waiters(a, "tq"), 0);
    dlock_cancel_free(cancel);
    /* with nobody queued, the holder's release leaves the key free */
    dh_assert_rc(dlock_release(held), 0);
    dh_assert_rc(dlock_try_acquire(&l, b, "tq", NULL), 0);
    dh_assert_rc(dlock_release(l), 0);
    dlock_client_close(a);
    dlock_client_close(b);
}

/* fair = 0: waiters are still woken by the release, without queueing. */
static void test_unfair_mode(void **state)
{
    (void)state;
    dlock_client *a, *b;
    dlock_lock *held = a_holds(&a, &b, "uf", "unfair", NULL);
    static waiter w; /* static: outlives a failed test */
    memset(&w, 0, sizeof w);
    dlock_lock_opts o = DLOCK_LOCK_OPTS_INIT;
    o.fair = 0;
    w.o = o;
    waiter_start(&w, b, "unfair");
    /* hold for a while: it must not get the lock, nor queue, nor poll */
    assert_false(dh_wait_until(dh_thread_done, &w.t, 1000));
    assert_int_equal(dh_waiters(a, "unfair"), 0); /* did not queue */
    uint64_t at1 = dh_attempts(b);
    assert_false(dh_wait_until(dh_thread_done, &w.t, 1000));
    assert_int_equal(dh_attempts(b) - at1, 0);
    dh_assert_rc(dlock_release(held), 0);
    dh_assert_rc(dh_thread_join(&w.t, 5000), 0);
    dlock_client_close(a);
    dlock_client_close(b);
}

/* ---- keeping */

static atomic_int lost_calls;
static void on_lost(dlock_lock *l, void *arg)
{
    (void)l;
    (void)arg;
    atomic_fetch_add(&lost_calls, 1);
}

/* Renewal of many locks costs one pipelined round trip per tick. */
static void test_watchdog_batches(void **state)
{
    (void)state;
    enum { N = 300 };
    dlock_client *c = dh_client_tagged(srv, "batch", NULL);
    dlock_lock *locks[N];
    atomic_store(&lost_calls, 0);
    dlock_lock_opts o = DLOCK_LOCK_OPTS_INIT;
    o.on_lost = on_lost;
    o.ttl_ms = 900; /* renewed every 300 ms */
    for (int i = 0; i < N; i++) {
        char key[32];
        snprintf(key, sizeof key, "batch:%d", i);
        dh_assert_rc(dlock_acquire(&locks[i], c, key, &o), 0);
    }
    dlock_client_stats s0, s1;
    dlock_stats(&s0, c);
    /* observe ~4 renewal rounds; every lock must stay held throughout */
    assert_false(dh_wait_until(dh_flag_set, &lost_calls, 1300));
    dlock_stats(&s1, c);
    uint64_t renewals = s1.renewals - s0.renewals, rts = s1.round_trips - s0.round_trips;
    print_message("%d locks: %llu renewals in %llu round trips\n", N, (unsigned long long)renewals,
                  (unsigned long long)rts);
    assert_true(renewals >= 2 * N);
    /* one round per tick (plus a little slack for a split tick) */
    assert_true(rts * N <= renewals * 2);
    for (int i = 0; i < N; i++) {
        assert_true(dlock_is_held(locks[i]));
        dh_assert_rc(dlock_release(locks[i]), 0);
    }
    dlock_client_close(c);
}

/* The key deleted behind the holder's back: the watchdog finds out, marks
 * the lock lost, runs on_lost; is_held says so without a round trip. */
static void test_lost_when_deleted(void **state)
{
    (void)state;
    atomic_store(&lost_calls, 0);
    char owner[64];
    dlock_client *c = dh_client_tagged(srv, "lostdel", owner);
    dlock_lock_opts o = dh_opts(600, DLOCK_WAIT_FOREVER);
    o.on_lost = on_lost;
    dlock_lock *l;
    dh_assert_rc(dlock_acquire(&l, c, "lostdel", &o), 0);
    assert_int_equal(dh_delete_key(srv, 0, "lostdel", owner), 1);
    assert_true(dh_wait_until(dh_flag_set, &lost_calls, 5000));
    uint64_t rt = dh_round_trips(c);
    assert_false(dlock_is_held(l));
    assert_int_equal(dlock_lock_remaining_ms(l), 0);
    assert_int_equal(dlock_lock_renew_error(l), DLOCK_ENOTHELD);
    assert_int_equal(dh_round_trips(c), rt);
    assert_int_equal(atomic_load(&lost_calls), 1);
    dh_assert_rc(dlock_release(l), DLOCK_ENOTHELD);
    dlock_client_close(c);
}

/* The server paused (SIGSTOP) past the TTL: renewals time out, the lock is
 * marked lost at its validity instant, on_lost runs. */
static void test_lost_when_server_paused(void **state)
{
    (void)state;
    atomic_store(&lost_calls, 0);
    char owner[64];
    dlock_client_opts co = dh_client_opts(owner, "lostpause");
    co.command_timeout_ms = 200;
    dlock_client *c;
    dh_assert_rc(dlock_client_open(&c, srv->url, &co), 0);
    dlock_lock_opts o = dh_opts(800, DLOCK_WAIT_FOREVER);
    o.on_lost = on_lost;
    dlock_lock *l;
    dh_assert_rc(dlock_acquire(&l, c, "lostpause", &o), 0);
    int64_t t0 = dh_now_ms();
    assert_int_equal(dh_redis_pause(srv), 0);
    int seen = dh_wait_until(dh_flag_set, &lost_calls, 5000);
    int64_t took = dh_now_ms() - t0;
    int held = dlock_is_held(l);
    int err = dlock_lock_renew_error(l);
    assert_int_equal(dh_redis_resume(srv), 0);
    assert_true(seen);
    assert_false(held);
    assert_true(err != 0);
    assert_true(took <= 800 + 1000);
    print_message("lost detected %lld ms after the pause (ttl 800)\n", (long long)took);
    dh_assert_rc(dlock_release(l), DLOCK_ENOTHELD);
    dlock_client_close(c);
}

/* After release no renewal is sent and the key does not come back. */
static int key_exists(void *arg)
{
    return dh_cmd_int(srv, 0, "EXISTS %s", (const char *)arg) == 1;
}

static void test_no_renewal_after_release(void **state)
{
    (void)state;
    char owner[64];
    dlock_client *c = dh_client_tagged(srv, "norenew", owner);
    atomic_store(&lost_calls, 0);
    dlock_lock_opts o = dh_opts(300, DLOCK_WAIT_FOREVER);
    o.on_lost = on_lost;
    dlock_lock *l;
    dh_assert_rc(dlock_acquire(&l, c, "norenew", &o), 0);
    char name[512];
    assert_int_equal(dh_find_key(name, sizeof name, srv, 0, "norenew", owner), 1);
    dlock_client_stats s0, s1, s2;
    dlock_stats(&s0, c);
    /* renewals keep it alive past its TTL */
    assert_false(dh_wait_until(dh_flag_set, &lost_calls, 700));
    dlock_stats(&s1, c);
    assert_true(s1.renewals > s0.renewals);
    assert_true(dlock_is_held(l));
    dh_assert_rc(dlock_release(l), 0);
    dlock_stats(&s1, c);
    assert_false(dh_wait_until(key_exists, name, 1000));
    dlock_stats(&s2, c);
    assert_int_equal(s2.renewals, s1.renewals);
    assert_int_equal(s2.round_trips, s1.round_trips);
    dlock_client_close(c);
}

/* The server drops every connection while a waiter waits: it keeps
 * waiting (on a new connection) and gets the lock at the release. */
static void test_waiter_survives_connection_drop(void **state)
{
    (void)state;
    dlock_client *a, *b;
    dlock_lock *held = a_holds(&a, &b, "drop", "drop", NULL);
    static waiter w; /* static: outlives a failed test */
    memset(&w, 0, sizeof w);
    waiter_start(&w, b, "drop");
    assert_true(dh_wait_waiters(a, "drop", 1, 5000));
    assert_int_equal(dh_cmd_ok(srv, 0, "CLIENT KILL TYPE normal"), 0);
    assert_false(dh_wait_until(dh_thread_done, &w.t, 500)); /* still waiting, not failed */
    dh_assert_rc(dlock_release(held), 0);
    dh_assert_rc(dh_thread_join(&w.t, 8000), 0);
    dlock_client_close(a);
    dlock_client_close(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wakeup_without_polling),
        cmocka_unit_test(test_fifo_order),
        dh_unit_test(test_dead_waiter_leaves_queue),
        cmocka_unit_test(test_expiry_wakes_waiter),
        cmocka_unit_test(test_timeout_and_cancel_leave_queue),
        cmocka_unit_test(test_unfair_mode),
        cmocka_unit_test(test_waiter_survives_connection_drop),
        cmocka_unit_test(test_watchdog_batches),
        cmocka_unit_test(test_lost_when_deleted),
        cmocka_unit_test(test_lost_when_server_paused),
        cmocka_unit_test(test_no_renewal_after_release),
    };
    return cmocka_run_group_tests_name("wait", tests, group_setup, dh_group_teardown);
}
