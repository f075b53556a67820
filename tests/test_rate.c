/*
 * test_rate.c — the rate limiter (dlock_rate_acquire): burst and rate on
 * one client, the wait budget, bad input and a parameter conflict, one
 * round trip per slot, a cancelled wait giving its slot back, and the
 * exactness check: processes taking slots as fast as they can, one of them
 * killed with SIGKILL half-way, never more starts than burst + elapsed x
 * rate on the server's clock.
 *
 * Design. One private redis-server for the group. Workers are processes
 * (dh_fork, forked while this process has no threads and no client); each
 * records the server time (TIME, microseconds) at which each of its slots
 * was granted to it, right after dlock_rate_acquire returned, in shared
 * memory. The check is cumulative from T0, the server time read before
 * any worker started: after the k-th start (in time order), k <= burst +
 * (t_k - T0) x rate. It is exact whatever the delay between a grant and its
 * record (a record is never earlier than its slot), so it cannot flake; a
 * progress bound (at least half the slots the rate allows) is generous.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "harness.h"

static dh_redis *srv;

static int group_setup(void **state)
{
    (void)state;
    return dh_group_start(&srv, NULL);
}

/* "... the next slot is in N ms ..." in the last message: N, or -1. */
static long next_slot_ms(void)
{
    const char *p = strstr(dlock_last_errmsg(), "next slot is in ");
    return p ? strtol(p + 16, NULL, 10) : -1;
}

/* The next free slot of r:cancel is more than one interval (10 s) away:
 * someone reserved the one after the current holder's. */
static int slot_reserved(void *arg)
{
    return dlock_rate_acquire(arg, "r:cancel", 1, 10000, 1, 0, NULL) == DLOCK_EBUSY &&
           next_slot_ms() > 10000;
}

/* ------------------------------------------------------------------ tests */

/* 5 per second, burst 5: five at once, the sixth over the rate (EBUSY
 * with no budget, ETIMEDOUT at once with a budget too short), and with a
 * budget long enough it waits about one interval (200 ms). */
static void test_burst_and_rate(void **state)
{
    (void)state;
    dlock_client *c = dh_client_tagged(srv, "br", NULL);
    for (int i = 0; i < 5; i++)
        dh_assert_rc(dlock_rate_acquire(c, "r:br", 5, 1000, 5, 0, NULL), 0);
    dh_assert_rc(dlock_rate_acquire(c, "r:br", 5, 1000, 5, 0, NULL), DLOCK_EBUSY);
    long next = next_slot_ms();
    assert_true(next > 0 && next <= 200);
    int64_t t0 = dh_now_ms();
    dh_assert_rc(dlock_rate_acquire(c, "r:br", 5, 1000, 5, 20, NULL), DLOCK_ETIMEDOUT);
    assert_non_null(strstr(dlock_last_errmsg(), "beyond the wait budget of 20 ms"));
    assert_true(dh_now_ms() - t0 < 150); /* at once: waiting could not help */
    uint64_t r0 = dh_round_trips(c);
    t0 = dh_now_ms();
    dh_assert_rc(dlock_rate_acquire(c, "r:br", 5, 1000, 5, 1000, NULL), 0);
    int64_t waited = dh_now_ms() - t0;
    dh_assert_rc(dlock_rate_acquire(c, "r:br", 5, 1000, 5, DLOCK_WAIT_FOREVER, NULL), 0);
    int64_t waited2 = dh_now_ms() - t0 - waited;
    uint64_t rts = dh_round_trips(c) - r0;
    print_message("over the rate: waited %lld ms and %lld ms for the next slots (interval 200 "
                  "ms), %llu round trips for both\n",
                  (long long)waited, (long long)waited2, (unsigned long long)rts);
    assert_true(waited > 0 && waited < 1500);
    assert_true(waited2 >= 150 && waited2 < 1500);
    assert_int_equal(rts, 2); /* a reservation: one round trip, no retries */
    dlock_client_close(c);
}

/* Bad input and other parameters on a busy limiter are DLOCK_EINVAL. */
static void test_bad_input(void **state)
{
    (void)state;
    dlock_client *c = dh_client_tagged(srv, "bad", NULL);
    int64_t keys = dh_dbsize(srv, 0);
    dh_assert_rc(dlock_rate_acquire(c, "r:bad", 0, 1000, 1, 0, NULL), DLOCK_EINVAL);
    assert_non_null(strstr(dlock_last_errmsg(), "count must be from 1"));
    dh_assert_rc(dlock_rate_acquire(c, "r:bad", -1, 1000, 1, 0, NULL), DLOCK_EINVAL);
    dh_assert_rc(dlock_rate_acquire(c, "r:bad", 5, 0, 1, 0, NULL), DLOCK_EINVAL);
    assert_non_null(strstr(dlock_last_errmsg(), "period_ms must be from 1"));
    dh_assert_rc(dlock_rate_acquire(c, "r:bad", 5, 1000, 0, 0, NULL), DLOCK_EINVAL);
    assert_non_null(strstr(dlock_last_errmsg(), "burst must be from 1"));
    dh_assert_rc(dlock_rate_acquire(c, "r:bad", 1, (int64_t)1 << 40, 1000000, 0, NULL),
                 DLOCK_EINVAL);
    dh_assert_rc(dlock_rate_acquire(c, "r:bad", 5, 1000, 1, -3, NULL), DLOCK_EINVAL);
    dh_assert_rc(dlock_rate_acquire(c, "", 5, 1000, 1, 0, NULL), DLOCK_EINVAL);
    dh_assert_rc(dlock_rate_acquire(NULL, "r:bad", 5, 1000, 1, 0, NULL), DLOCK_EINVAL);
    assert_int_equal(dh_dbsize(srv, 0), keys);
    /* in use at 2 per minute: 3 per minute is refused, naming both */
    dh_assert_rc(dlock_rate_acquire(c, "r:bad", 2, 60000, 1, 0, NULL), 0);
    dh_assert_rc(dlock_rate_acquire(c, "r:bad", 3, 60000, 1, 0, NULL), DLOCK_EINVAL);
    assert_non_null(strstr(dlock_last_errmsg(), "in use at 2 per 60000 ms (burst 1), not at 3"));
    dlock_client_close(c);
}

/* ---- a thread that waits for a slot */

typedef struct taker {
    pthread_t th;
    dlock_client *c;
    dlock_cancel *cancel;
    atomic_int done;
    int rc;
} taker;

static void *taker_main(void *arg)
{
    taker *t = arg;
    t->rc = dlock_rate_acquire(t->c, "r:cancel", 1, 10000, 1, DLOCK_WAIT_FOREVER, t->cancel);
    atomic_store(&t->done, 1);
    return NULL;
}

static int taker_done(void *arg)
{
    return atomic_load(&((taker *)arg)->done);
}

/* A wait cancelled in its sleep gives the reserved slot back: the next
 * caller's slot is one interval away, not two. */
static void test_cancel_gives_back(void **state)
{
    (void)state;
    dlock_client *a = dh_client_tagged(srv, "cancel-a", NULL),
                 *b = dh_client_tagged(srv, "cancel-b", NULL);
    dh_assert_rc(dlock_rate_acquire(a, "r:cancel", 1, 10000, 1, 0, NULL), 0);
    taker t = { 0 };
    t.c = b;
    dh_assert_rc(dlock_cancel_new(&t.cancel), 0);
    assert_int_equal(pthread_create(&t.th, NULL, taker_main, &t), 0);
    /* it reserved: the server's next slot moved a second interval away */
    assert_true(dh_wait_until(slot_reserved, a, 5000));
    long reserved = next_slot_ms();
    dlock_cancel_trigger(t.cancel);
    assert_true(dh_wait_until(taker_done, &t, 5000));
    pthread_join(t.th, NULL);
    dh_assert_rc(t.rc, DLOCK_ECANCELED);
    dh_assert_rc(dlock_rate_acquire(a, "r:cancel", 1, 10000, 1, 0, NULL), DLOCK_EBUSY);
    long after = next_slot_ms();
    print_message("next slot with a reservation pending: %ld ms; after it was cancelled: %ld "
                  "ms\n",
                  reserved, after);
    assert_true(reserved > 10000 && reserved <= 20000);
    assert_true(after > 0 && after <= 10000);
    dlock_cancel_free(t.cancel);
    dlock_client_close(a);
    dlock_client_close(b);
}

/* ---- exactness across processes */

#define RATE 25 /* per second */
#define BURST 4
#define RUN_US 2000000
#define MAX_STARTS 512
#define WORKERS 4

typedef struct shared {
    int64_t t0, stop_at; /* server us */
    atomic_int n;
    int64_t starts[MAX_STARTS];
    atomic_int errors;
    char err[200];
    atomic_int ready[WORKERS];
} shared;

/* A worker: take slots (waiting as long as needed) until the server's
 * clock passes stop_at, recording each start's server time. */
static void worker(shared *sh, int fd, int id)
{
    char b;
    if (read(fd, &b, 1) != 1)
        _exit(1);
    dlock_client *c = dh_client(srv->url, "rate-worker");
    redisContext *rc = dh_connect(srv, 0);
    if (!c || !rc)
        _exit(2);
    atomic_store(&sh->ready[id], 1);
    for (;;) {
        int r = dlock_rate_acquire(c, "r:exact", RATE, 1000, BURST, DLOCK_WAIT_FOREVER, NULL);
        int64_t now = dh_time_us(rc);
        if (r != 0 || now < 0) {
            if (atomic_fetch_add(&sh->errors, 1) == 0)
                snprintf(sh->err, sizeof sh->err, "%s", dlock_last_errmsg());
            break;
        }
        if (now >= sh->stop_at)
            break;
        int k = atomic_fetch_add(&sh->n, 1);
        if (k < MAX_STARTS)
            sh->starts[k] = now;
    }
    redisFree(rc);
    dlock_client_close(c);
    _exit(0);
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

struct count_arg {
    shared *sh;
    int n;
};

static int starts_reached(void *arg)
{
    struct count_arg *a = arg;
    return atomic_load(&a->sh->n) >= a->n;
}

static void test_exact_across_processes(void **state)
{
    (void)state;
    shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(sh != MAP_FAILED);
    memset(sh, 0, sizeof *sh);
    int ctl[WORKERS];
    pid_t pid[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        pid[i] = dh_fork();
        assert_true(pid[i] >= 0);
        if (pid[i] == 0) {
            close(fds[1]);
            worker(sh, fds[0], i);
        }
        close(fds[0]);
        ctl[i] = fds[1];
    }
    redisContext *rc = dh_connect(srv, 0);
    assert_non_null(rc);
    sh->t0 = dh_time_us(rc);
    sh->stop_at = sh->t0 + RUN_US;
    for (int i = 0; i < WORKERS; i++)
        assert_int_equal(write(ctl[i], "g", 1), 1);
    /* one worker is killed with SIGKILL half-way: its reserved slot (if it
     * was sleeping in one) is wasted, never given to two */
    struct count_arg ca = { sh, BURST + RATE };
    assert_true(dh_wait_until(starts_reached, &ca, 10000));
    kill(pid[0], SIGKILL);
    int st;
    for (int i = 0; i < WORKERS; i++) {
        assert_int_equal(dh_waitpid(pid[i], &st, 15000), 1);
        close(ctl[i]);
    }
    int64_t end = dh_time_us(rc);
    redisFree(rc);
    if (atomic_load(&sh->errors))
        fail_msg("a worker failed: %s", sh->err);
    int n = atomic_load(&sh->n);
    assert_true(n <= MAX_STARTS);
    /* a start whose worker was killed before writing its time (a 0) is
     * left out: the check then sees one start fewer than there were */
    int kept = 0;
    for (int k = 0; k < n; k++)
        if (sh->starts[k] != 0)
            sh->starts[kept++] = sh->starts[k];
    n = kept;
    qsort(sh->starts, (size_t)n, sizeof sh->starts[0], cmp64);
    int violations = 0;
    double worst = -1e9; /* the largest (k - allowed) seen */
    for (int k = 1; k <= n; k++) {
        double allowed = BURST + (double)(sh->starts[k - 1] - sh->t0) * RATE / 1e6;
        if (k - allowed > worst)
            worst = k - allowed;
        if (k > allowed + 1e-9)
            violations++;
    }
    double elapsed = (double)(end - sh->t0) / 1e6;
    double bound = BURST + (double)RUN_US / 1e6 * RATE;
    print_message("rate %d/s, burst %d, %d processes (one killed with SIGKILL) for %.2f s: %d "
                  "starts, at most %.1f allowed; %d violations; closest to the bound: %.3f "
                  "starts below it\n",
                  RATE, BURST, WORKERS, elapsed, n, bound, violations, -worst);
    assert_int_equal(violations, 0);
    assert_true(n >= (int)(bound / 2)); /* progress, generously */
    munmap(sh, sizeof *sh);
}

/* Redlock: refused (a schedule counted on each server separately). */
static void test_redlock_refused(void **state)
{
    (void)state;
    dh_redlock rl;
    dlock_client *c = dh_redlock_open(&rl, srv, "redlock");
    dh_assert_rc(dlock_rate_acquire(c, "r:rl", 5, 1000, 5, 0, NULL), DLOCK_EINVAL);
    assert_non_null(strstr(dlock_last_errmsg(), "not available on Redlock"));
    dh_redlock_stop(&rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        dh_unit_test(test_exact_across_processes),
        dh_unit_test(test_burst_and_rate),
        dh_unit_test(test_bad_input),
        dh_unit_test(test_cancel_gives_back),
        dh_unit_test(test_redlock_refused),
    };
    return cmocka_run_group_tests_name("rate", tests, group_setup, dh_group_teardown);
}
