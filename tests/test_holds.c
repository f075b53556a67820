/*
 * test_holds.c — ways of holding beyond one key, one holder, one mode:
 * several permits of a semaphore at once (all or nothing, FIFO so a large
 * request is not starved, given back when the holder dies), reentrant
 * holds (the same thread gets its lock again at once; other threads and
 * clients wait), and downgrading a write lock to a read lock (queued
 * readers come in, a queued writer does not).
 *
 * Design. One private redis-server for the group. A process that must die
 * holding permits is forked before the test opens any client (dh_fork),
 * and reports through a pipe. Waits are bounded polls of the server's view
 * (dlock_key_state_get) or of a thread's result.
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

/* A thread that acquires with a given function and records the result. */
typedef struct taker {
    pthread_t th;
    dlock_client *c;
    const char *key;
    int kind; /* 0 mutex, 1 read, 2 write, 3 permits */
    int limit, permits;
    dlock_lock_opts o;
    atomic_int done;
    int rc;
    dlock_lock *l;
} taker;

static void *taker_main(void *arg)
{
    taker *t = arg;
    switch (t->kind) {
    case 1:
        t->rc = dlock_rw_acquire(&t->l, t->c, t->key, DLOCK_READ, &t->o);
        break;
    case 2:
        t->rc = dlock_rw_acquire(&t->l, t->c, t->key, DLOCK_WRITE, &t->o);
        break;
    case 3:
        t->rc = dlock_sem_acquire_n(&t->l, t->c, t->key, t->limit, t->permits, &t->o);
        break;
    default:
        t->rc = dlock_acquire(&t->l, t->c, t->key, &t->o);
    }
    atomic_store(&t->done, 1);
    return NULL;
}

static void take_async(taker *t)
{
    atomic_store(&t->done, 0);
    assert_int_equal(pthread_create(&t->th, NULL, taker_main, t), 0);
}

static int taker_done(void *arg)
{
    return atomic_load(&((taker *)arg)->done);
}

/* Wait (5 s at most) for the taker to return, join its thread, and check
 * that it returned want. */
static void taker_join(taker *t, int want)
{
    assert_true(dh_wait_until(taker_done, t, 5000));
    pthread_join(t->th, NULL);
    dh_assert_rc(t->rc, want);
}

/* taker_join for a taker that must be granted, then release its lock. */
static void taker_release(taker *t)
{
    taker_join(t, 0);
    dh_assert_rc(dlock_release(t->l), 0);
}

typedef struct waiting {
    dlock_client *c;
    const char *key;
    int kind;
    int64_t n;
} waiting;

static int queued(void *arg)
{
    waiting *w = arg;
    dlock_key_state *st;
    if (dlock_key_state_get(&st, w->c, w->key, w->kind) != 0)
        return 0;
    int ok = st->waiters >= w->n;
    dlock_key_state_free(st);
    return ok;
}

/* ------------------------------------------------------------- permits */

/* K of N permits: all or none, their slots distinct, status shows them. */
static void test_permits_all_or_nothing(void **state)
{
    (void)state;
    dlock_client *c = dh_client_tagged(srv, "perm", NULL);
    dlock_lock *a, *b, *x;
    dlock_lock_opts once = dh_opts(30000, 0);
    dh_assert_rc(dlock_sem_acquire_n(&a, c, "h:perm", 5, 3, NULL), 0);
    assert_int_equal(dlock_lock_permits(a), 3);
    assert_int_equal(dlock_lock_slot(a), 0);
    dh_assert_rc(dlock_sem_acquire_n(&x, c, "h:perm", 5, 3, &once), DLOCK_EBUSY); /* 2 left */
    dh_assert_rc(dlock_sem_acquire_n(&b, c, "h:perm", 5, 2, &once), 0);
    assert_int_equal(dlock_lock_slot(b), 3);
    dh_assert_rc(dlock_sem_acquire(&x, c, "h:perm", 5, &once), DLOCK_EBUSY);
    dlock_key_state *st;
    dh_assert_rc(dlock_key_state_get(&st, c, "h:perm", DLOCK_KIND_SEMAPHORE), 0);
    assert_int_equal(st->nholders, 2);
    assert_int_equal(st->limit, 5);
    assert_int_equal(st->holders[0].permits + st->holders[1].permits, 5);
    dlock_key_state_free(st);
    dh_assert_rc(dlock_release(a), 0);
    dh_assert_rc(dlock_sem_acquire_n(&x, c, "h:perm", 5, 3, &once), 0); /* its slots came back */
    assert_int_equal(dlock_lock_slot(x), 0);
    dh_assert_rc(dlock_release(x), 0);
    dh_assert_rc(dlock_release(b), 0);
    /* bad input */
    dh_assert_rc(dlock_sem_acquire_n(&x, c, "h:perm", 5, 6, NULL), DLOCK_EINVAL);
    assert_non_null(strstr(dlock_last_errmsg(), "permits"));
    dh_assert_rc(dlock_sem_acquire_n(&x, c, "h:perm", 5, 0, NULL), DLOCK_EINVAL);
    assert_null(x);
    dlock_client_close(c);
}

/* A large request at the head of the queue is not overtaken by smaller
 * ones behind it, however many: it gets in as soon as enough is free. */
static void test_permits_large_request_not_starved(void **state)
{
    (void)state;
    dlock_client *c = dh_client_tagged(srv, "big", NULL), *d = dh_client_tagged(srv, "big-w", NULL),
                 *e = dh_client_tagged(srv, "big-s", NULL);
    dlock_lock *one, *two;
    dh_assert_rc(dlock_sem_acquire_n(&one, c, "h:big", 3, 1, NULL), 0);
    dh_assert_rc(dlock_sem_acquire_n(&two, c, "h:big", 3, 1, NULL), 0);
    taker big = {
        .c = d, .key = "h:big", .kind = 3, .limit = 3, .permits = 3, .o = dh_opts(30000, 10000)
    };
    take_async(&big);
    waiting w = { c, "h:big", DLOCK_KIND_SEMAPHORE, 1 };
    assert_true(dh_wait_until(queued, &w, 5000));
    /* one permit is free, but the large request is first in line */
    dlock_lock *small;
    dlock_lock_opts once = dh_opts(30000, 0);
    dh_assert_rc(dlock_sem_acquire_n(&small, e, "h:big", 3, 1, &once), DLOCK_EBUSY);
    taker small_waiter = {
        .c = e, .key = "h:big", .kind = 3, .limit = 3, .permits = 1, .o = dh_opts(30000, 10000)
    };
    take_async(&small_waiter);
    w.n = 2;
    assert_true(dh_wait_until(queued, &w, 5000));
    dh_assert_rc(dlock_release(one), 0);
    assert_false(dh_wait_until(taker_done, &small_waiter, 300)); /* not ahead of the big one */
    dh_assert_rc(dlock_release(two), 0);
    taker_join(&big, 0);
    assert_int_equal(dlock_lock_permits(big.l), 3);
    assert_false(taker_done(&small_waiter));
    dh_assert_rc(dlock_release(big.l), 0);
    taker_release(&small_waiter);
    dlock_client_close(c);
    dlock_client_close(d);
    dlock_client_close(e);
}

/* A holder killed with SIGKILL gives its permits back when its TTL ends. */
static void test_permits_back_from_killed_holder(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = dh_fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char owner[64];
        dh_owner(owner, sizeof owner, "perm-dead");
        dlock_client *c = dh_client(srv->url, owner);
        dlock_lock *l;
        dlock_lock_opts o = dh_opts(1000, 0);
        char ok = c && dlock_sem_acquire_n(&l, c, "h:dead", 4, 3, &o) == 0 ? 'y' : 'n';
        if (write(p[1], &ok, 1) != 1)
            _exit(2);
        for (;;)
            pause(); /* holds (renewed) until killed */
    }
    char ok = 0;
    assert_int_equal(read(p[0], &ok, 1), 1);
    assert_int_equal(ok, 'y');
    close(p[0]);
    close(p[1]);
    dlock_client *c = dh_client_tagged(srv, "perm-live", NULL);
    dlock_lock *l;
    dlock_lock_opts once = dh_opts(30000, 0);
    dh_assert_rc(dlock_sem_acquire_n(&l, c, "h:dead", 4, 2, &once), DLOCK_EBUSY);
    kill(pid, SIGKILL);
    int st;
    assert_int_equal(dh_waitpid(pid, &st, 5000), 1);
    dlock_lock_opts o = dh_opts(30000, 5000);
    int64_t t0 = dh_now_ms();
    dh_assert_rc(dlock_sem_acquire_n(&l, c, "h:dead", 4, 4, &o), 0);
    print_message("3 permits of a killed holder came back after %lld ms (TTL 1000)\n",
                  (long long)(dh_now_ms() - t0));
    dh_assert_rc(dlock_release(l), 0);
    dlock_client_close(c);
}

/* ----------------------------------------------------------- reentrancy */

/* The same thread gets a reentrant lock again at once, as the same handle;
 * the lock stays held until the last release. Another client, and another
 * thread of the same client, wait for it. Without the option, the same
 * thread waits like anyone else. */
static void test_reentrant_same_thread(void **state)
{
    (void)state;
    dlock_client *c = dh_client_tagged(srv, "re", NULL),
                 *d = dh_client_tagged(srv, "re-other", NULL);
    dlock_lock_opts re = dh_opts(30000, 0);
    re.reentrant = 1;
    dlock_lock *a, *b, *x;
    dh_assert_rc(dlock_acquire(&a, c, "h:re", &re), 0);
    uint64_t rt = dh_round_trips(c);
    dh_assert_rc(dlock_acquire(&b, c, "h:re", &re), 0);
    assert_ptr_equal(a, b);
    assert_int_equal(dh_round_trips(c), rt); /* no round trip */
    dh_assert_rc(dlock_try_acquire(&x, d, "h:re", NULL), DLOCK_EBUSY);
    taker other = { .c = c, .key = "h:re", .kind = 0, .o = re }; /* same client, another thread */
    other.o.wait_ms = 0;
    take_async(&other);
    taker_join(&other, DLOCK_EBUSY);
    dh_assert_rc(dlock_release(b), 0); /* one hold dropped */
    assert_true(dlock_is_held(a));
    dh_release_frees(a, d, "h:re"); /* a: the last one */
    /* not reentrant: the same thread is a contender like any other */
    dlock_lock_opts plain = dh_opts(30000, 0);
    dh_assert_rc(dlock_acquire(&a, c, "h:re2", &plain), 0);
    dh_assert_rc(dlock_acquire(&b, c, "h:re2", &plain), DLOCK_EBUSY);
    dh_assert_rc(dlock_release(a), 0);
    /* semaphores and multi-locks refuse it */
    dh_assert_rc(dlock_sem_acquire(&x, c, "h:re3", 2, &re), DLOCK_EINVAL);
    dlock_client_close(c);
    dlock_client_close(d);
}

/* ------------------------------------------------------------ downgrade */

/* A writer becomes a reader in one step: the readers queued behind it come
 * in at once, a writer queued behind them does not, and the downgraded
 * holder keeps its token and is renewed as a reader. */
static void test_downgrade(void **state)
{
    (void)state;
    dlock_client *c = dh_client_tagged(srv, "dg", NULL),
                 *r1c = dh_client_tagged(srv, "dg-r1", NULL),
                 *wc = dh_client_tagged(srv, "dg-w", NULL),
                 *r2c = dh_client_tagged(srv, "dg-r2", NULL);
    dlock_lock *w;
    dlock_lock_opts o = dh_opts(600, 10000); /* short TTL: renewed several times below */
    dh_assert_rc(dlock_rw_acquire(&w, c, "h:dg", DLOCK_WRITE, &o), 0);
    uint64_t fence = dlock_lock_fencing_token(w);
    taker r1 = { .c = r1c, .key = "h:dg", .kind = 1, .o = dh_opts(30000, 10000) };
    take_async(&r1);
    waiting q = { c, "h:dg", DLOCK_KIND_MUTEX, 1 };
    assert_true(dh_wait_until(queued, &q, 5000));
    taker wr = { .c = wc, .key = "h:dg", .kind = 2, .o = dh_opts(30000, 10000) };
    take_async(&wr);
    q.n = 2;
    assert_true(dh_wait_until(queued, &q, 5000));
    taker r2 = {
        .c = r2c, .key = "h:dg", .kind = 1, .o = dh_opts(30000, 10000)
    }; /* behind the writer */
    take_async(&r2);
    q.n = 3;
    assert_true(dh_wait_until(queued, &q, 5000));
    dh_assert_rc(dlock_rw_downgrade(w), 0);
    assert_int_equal(dlock_lock_fencing_token(w), fence);
    taker_join(&r1, 0);                                 /* the reader ahead of the writer */
    assert_false(dh_wait_until(taker_done, &wr, 1500)); /* no writer while we read */
    assert_false(taker_done(&r2));                      /* nor the reader behind it */
    assert_true(dlock_is_held(w));                      /* renewed as a reader meanwhile */
    dh_assert_rc(dlock_rw_downgrade(w), DLOCK_EINVAL);  /* a reader now */
    dlock_key_state *st;
    dh_assert_rc(dlock_key_state_get(&st, c, "h:dg", DLOCK_KIND_MUTEX), 0);
    assert_int_equal(st->nholders, 2);
    assert_int_equal(st->holders[0].mode, DLOCK_READ);
    dlock_key_state_free(st);
    dh_assert_rc(dlock_release(w), 0);
    dh_assert_rc(dlock_release(r1.l), 0);
    taker_release(&wr);
    taker_release(&r2);
    dlock_client_close(c);
    dlock_client_close(r1c);
    dlock_client_close(wc);
    dlock_client_close(r2c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        dh_unit_test(test_permits_all_or_nothing),
        dh_unit_test(test_permits_large_request_not_starved),
        dh_unit_test(test_permits_back_from_killed_holder),
        dh_unit_test(test_reentrant_same_thread),
        dh_unit_test(test_downgrade),
    };
    return cmocka_run_group_tests_name("holds", tests, group_setup, dh_group_teardown);
}
