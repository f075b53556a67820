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
    srv = dh_redis_start(NULL);
    return srv ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    dh_redis_stop(srv);
    srv = NULL;
    dh_cleanup();
    return 0;
}

static dlock_client *client(const char *tag)
{
    char owner[64];
    dh_owner(owner, sizeof owner, tag);
    dlock_client *c = dh_client(srv->url, owner);
    assert_non_null(c);
    return c;
}

static int64_t waiters(dlock_client *c, const char *key)
{
    dlock_info info;
    if (dlock_inspect(&info, c, key) != 0)
        return -1;
    return info.waiters;
}

/* ---- a thread that acquires, records when and in which order, releases */

typedef struct waiter {
    pthread_t th;
    dlock_client *c;
    const char *key;
    dlock_lock_opts o;
    int id;
    atomic_int done;
    int rc;
    uint64_t fence;
    int64_t got_ms;
    int hold;               /* keep the lock (main thread releases) */
    dlock_lock *lock;
    int *order, *norder;    /* shared, under order_mu */
} waiter;

static pthread_mutex_t order_mu = PTHREAD_MUTEX_INITIALIZER;

static void *waiter_main(void *arg)
{
    waiter *w = arg;
    dlock_lock *l = NULL;
    w->rc = dlock_acquire(&l, w->c, w->key, &w->o);
    w->got_ms = dh_now_ms();
    if (w->rc == 0) {
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
    atomic_store(&w->done, 1);
    return NULL;
}

static void waiter_start(waiter *w, dlock_client *c, const char *key)
{
    w->c = c;
    w->key = key;
    if (w->o.version == 0) {
        dlock_lock_opts o = DLOCK_LOCK_OPTS_INIT;
        w->o = o;
    }
    atomic_store(&w->done, 0);
    assert_int_equal(pthread_create(&w->th, NULL, waiter_main, w), 0);
}

static int waiter_done(void *arg)
{
    return atomic_load(&((waiter *)arg)->done);
}

typedef struct qwait {
    dlock_client *c;
    const char *key;
    int64_t n;
} qwait;

static int queue_has(void *arg)
{
    qwait *q = arg;
    return waiters(q->c, q->key) >= q->n;
}

/* ------------------------------------------------------------------ tests */

/* A waiter blocked on a held lock makes no acquire attempt while it waits
 * (only its entry's keepalive, a few a second, batched by the watchdog) and
 * gets the lock as soon as it is released, from the release's signal. */
static void test_wakeup_without_polling(void **state)
{
    (void)state;
    dlock_client *a = client("np-a"), *b = client("np-b");
    dlock_lock *held;
    dh_assert_rc(dlock_acquire(&held, a, "np", NULL), 0);
    waiter w = {0};
    waiter_start(&w, b, "np");
    qwait q = {a, "np", 1};
    assert_true(dh_wait_until(queue_has, &q, 5000));
    uint64_t at0 = dh_attempts(b), ka0 = dh_keepalives(b);
    /* 1.5 s with the lock held: the waiter must neither get it nor poll */
    assert_false(dh_wait_until(waiter_done, &w, 1500));
    uint64_t at1 = dh_attempts(b), ka1 = dh_keepalives(b);
    print_message("while the lock was held for 1.5 s: %llu attempts, %llu keepalives\n",
                  (unsigned long long)(at1 - at0), (unsigned long long)(ka1 - ka0));
    assert_int_equal(at1 - at0, 0); /* a polling waiter would show dozens */
    assert_true(ka1 - ka0 >= 1);    /* its place is kept alive... */
    assert_true(ka1 - ka0 <= 1500 / 200 + 2); /* ...every 200 ms, not more */
    int64_t released = dh_now_ms();
    dh_assert_rc(dlock_release(held), 0);
    assert_true(dh_wait_until(waiter_done, &w, 5000));
    pthread_join(w.th, NULL);
    dh_assert_rc(w.rc, 0);
    assert_true(w.got_ms - released < 1000);
    /* the release's signal was the proof: no confirming attempt */
    assert_int_equal(dh_attempts(b) - at1, 0);
    dlock_client_close(a);
    dlock_client_close(b);
}

/* Five waiters queued one after the other get the lock in that order. */
static void test_fifo_order(void **state)
{
    (void)state;
    enum { N = 5 };
    dlock_client *h = client("fifo-h");
    dlock_client *cs[N];
    waiter ws[N];
    int order[N], norder = 0;
    memset(ws, 0, sizeof ws);
    dlock_lock *held;
    dh_assert_rc(dlock_acquire(&held, h, "fifo", NULL), 0);
    for (int i = 0; i < N; i++) {
        cs[i] = client("fifo-w");
        ws[i].id = i;
        ws[i].order = order;
        ws[i].norder = &norder;
        waiter_start(&ws[i], cs[i], "fifo");
        qwait q = {h, "fifo", i + 1};
        assert_true(dh_wait_until(queue_has, &q, 5000));
    }
    /* a newcomer's try-lock must not barge in even at the moment of release */
    dh_assert_rc(dlock_release(held), 0);
    dlock_lock *barger = NULL;
    int rc = dlock_try_acquire(&barger, h, "fifo", NULL);
    if (rc == 0)
        dlock_release(barger);
    assert_int_equal(rc, DLOCK_EBUSY);
    for (int i = 0; i < N; i++) {
        assert_true(dh_wait_until(waiter_done, &ws[i], 10000));
        pthread_join(ws[i].th, NULL);
        dh_assert_rc(ws[i].rc, 0);
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
 * live waiter behind it gets the lock within the handoff TTL. */
static void test_dead_waiter_leaves_queue(void **state)
{
    (void)state;
    dlock_client *h = client("dead-h");
    dlock_lock *held;
    dh_assert_rc(dlock_acquire(&held, h, "deadq", NULL), 0);
    pid_t pid = fork();
    if (pid == 0) {
        dlock_client *c = NULL;
        if (dlock_client_open(&c, srv->url, NULL) != 0)
            _exit(2);
        dlock_lock *l;
        dlock_acquire(&l, c, "deadq", NULL); /* blocks until killed */
        _exit(3);
    }
    qwait q = {h, "deadq", 1};
    assert_true(dh_wait_until(queue_has, &q, 5000));
    kill(pid, SIGKILL);
    int st;
    assert_int_equal(dh_waitpid(pid, &st, 5000), 1);

    dlock_client *c = client("dead-w");
    waiter w = {0};
    waiter_start(&w, c, "deadq");
    q.n = 2;
    assert_true(dh_wait_until(queue_has, &q, 5000));
    int64_t released = dh_now_ms();
    dh_assert_rc(dlock_release(held), 0); /* hands it to the dead waiter */
    assert_true(dh_wait_until(waiter_done, &w, 15000));
    pthread_join(w.th, NULL);
    dh_assert_rc(w.rc, 0);
    int64_t took = w.got_ms - released;
    print_message("live waiter got the lock %lld ms after the release (dead waiter ahead)\n",
                  (long long)took);
    assert_true(took < 12000);
    dlock_client_close(c);
    dlock_client_close(h);
}

/* A lock that expires without a release still wakes its waiter. */
static void test_expiry_wakes_waiter(void **state)
{
    (void)state;
    dlock_client *a = client("exp-a"), *b = client("exp-b");
    dlock_lock_opts o = DLOCK_LOCK_OPTS_INIT;
    o.ttl_ms = 700;
    o.auto_renew = 0;
    dlock_lock *held;
    dh_assert_rc(dlock_acquire(&held, a, "expw", &o), 0);
    waiter w = {0};
    waiter_start(&w, b, "expw");
    assert_true(dh_wait_until(waiter_done, &w, 8000));
    pthread_join(w.th, NULL);
    dh_assert_rc(w.rc, 0);
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
    dlock_client *a = client("tq-a"), *b = client("tq-b");
    dlock_lock *held, *l = NULL;
    dh_assert_rc(dlock_acquire(&held, a, "tq", NULL), 0);
    dlock_lock_opts o = DLOCK_LOCK_OPTS_INIT;
    o.wait_ms = 300;
    int64_t t0 = dh_now_ms();
    dh_assert_rc(dlock_acquire(&l, b, "tq", &o), DLOCK_ETIMEDOUT);
    int64_t took = dh_now_ms() - t0;
    assert_true(took >= 300);
    assert_true(took < 3000);
    assert_int_equal(waiters(a, "tq"), 0);

    dlock_cancel *cancel;
    dh_assert_rc(dlock_cancel_new(&cancel), 0);
    waiter w = {0};
    dlock_lock_opts wo = DLOCK_LOCK_OPTS_INIT;
    wo.cancel = cancel;
    w.o = wo;
    waiter_start(&w, b, "tq");
    qwait q = {a, "tq", 1};
    assert_true(dh_wait_until(queue_has, &q, 5000));
    dlock_cancel_trigger(cancel);
    assert_true(dh_wait_until(waiter_done, &w, 5000));
    pthread_join(w.th, NULL);
    dh_assert_rc(w.rc, DLOCK_ECANCELED);
    assert_int_equal(waiters(a, "tq"), 0);
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
    dlock_client *a = client("uf-a"), *b = client("uf-b");
    dlock_lock *held;
    dh_assert_rc(dlock_acquire(&held, a, "unfair", NULL), 0);
    waiter w = {0};
    dlock_lock_opts o = DLOCK_LOCK_OPTS_INIT;
    o.fair = 0;
    w.o = o;
    waiter_start(&w, b, "unfair");
    /* hold for a while: it must not get the lock, nor queue, nor poll */
    assert_false(dh_wait_until(waiter_done, &w, 1000));
    assert_int_equal(waiters(a, "unfair"), 0); /* did not queue */
    uint64_t at1 = dh_attempts(b);
    assert_false(dh_wait_until(waiter_done, &w, 1000));
    assert_int_equal(dh_attempts(b) - at1, 0);
    dh_assert_rc(dlock_release(held), 0);
    assert_true(dh_wait_until(waiter_done, &w, 5000));
    pthread_join(w.th, NULL);
    dh_assert_rc(w.rc, 0);
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

static int lost_seen(void *arg)
{
    (void)arg;
    return atomic_load(&lost_calls) > 0;
}

/* Renewal of many locks costs one pipelined round trip per tick. */
static void test_watchdog_batches(void **state)
{
    (void)state;
    enum { N = 300 };
    dlock_client *c = client("batch");
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
    assert_false(dh_wait_until(lost_seen, NULL, 1300));
    dlock_stats(&s1, c);
    uint64_t renewals = s1.renewals - s0.renewals, rts = s1.round_trips - s0.round_trips;
    print_message("%d locks: %llu renewals in %llu round trips\n", N,
                  (unsigned long long)renewals, (unsigned long long)rts);
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
    dh_owner(owner, sizeof owner, "lostdel");
    dlock_client *c = dh_client(srv->url, owner);
    dlock_lock_opts o = DLOCK_LOCK_OPTS_INIT;
    o.ttl_ms = 600;
    o.on_lost = on_lost;
    dlock_lock *l;
    dh_assert_rc(dlock_acquire(&l, c, "lostdel", &o), 0);
    char name[512];
    assert_int_equal(dh_find_key(name, sizeof name, srv, 0, "lostdel", owner), 1);
    assert_int_equal(dh_cmd_int(srv, 0, "DEL %s", name), 1);
    assert_true(dh_wait_until(lost_seen, NULL, 5000));
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
    dh_owner(owner, sizeof owner, "lostpause");
    dlock_client_opts co = DLOCK_CLIENT_OPTS_INIT;
    co.owner_id = owner;
    co.command_timeout_ms = 200;
    dlock_client *c;
    dh_assert_rc(dlock_client_open(&c, srv->url, &co), 0);
    dlock_lock_opts o = DLOCK_LOCK_OPTS_INIT;
    o.ttl_ms = 800;
    o.on_lost = on_lost;
    dlock_lock *l;
    dh_assert_rc(dlock_acquire(&l, c, "lostpause", &o), 0);
    int64_t t0 = dh_now_ms();
    assert_int_equal(dh_redis_pause(srv), 0);
    int seen = dh_wait_until(lost_seen, NULL, 5000);
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
    dh_owner(owner, sizeof owner, "norenew");
    dlock_client *c = dh_client(srv->url, owner);
    atomic_store(&lost_calls, 0);
    dlock_lock_opts o = DLOCK_LOCK_OPTS_INIT;
    o.ttl_ms = 300;
    o.on_lost = on_lost;
    dlock_lock *l;
    dh_assert_rc(dlock_acquire(&l, c, "norenew", &o), 0);
    char name[512];
    assert_int_equal(dh_find_key(name, sizeof name, srv, 0, "norenew", owner), 1);
    dlock_client_stats s0, s1, s2;
    dlock_stats(&s0, c);
    /* renewals keep it alive past its TTL */
    assert_false(dh_wait_until(lost_seen, NULL, 700));
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
    dlock_client *a = client("drop-a"), *b = client("drop-b");
    dlock_lock *held;
    dh_assert_rc(dlock_acquire(&held, a, "drop", NULL), 0);
    waiter w = {0};
    waiter_start(&w, b, "drop");
    qwait q = {a, "drop", 1};
    assert_true(dh_wait_until(queue_has, &q, 5000));
    assert_int_equal(dh_cmd_ok(srv, 0, "CLIENT KILL TYPE normal"), 0);
    assert_false(dh_wait_until(waiter_done, &w, 500)); /* still waiting, not failed */
    dh_assert_rc(dlock_release(held), 0);
    assert_true(dh_wait_until(waiter_done, &w, 8000));
    pthread_join(w.th, NULL);
    dh_assert_rc(w.rc, 0);
    dlock_client_close(a);
    dlock_client_close(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wakeup_without_polling),
        cmocka_unit_test(test_fifo_order),
        cmocka_unit_test(test_dead_waiter_leaves_queue),
        cmocka_unit_test(test_expiry_wakes_waiter),
        cmocka_unit_test(test_timeout_and_cancel_leave_queue),
        cmocka_unit_test(test_unfair_mode),
        cmocka_unit_test(test_waiter_survives_connection_drop),
        cmocka_unit_test(test_watchdog_batches),
        cmocka_unit_test(test_lost_when_deleted),
        cmocka_unit_test(test_lost_when_server_paused),
        cmocka_unit_test(test_no_renewal_after_release),
    };
    return cmocka_run_group_tests_name("wait", tests, group_setup, group_teardown);
}
