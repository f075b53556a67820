/*
 * test_chaos.c — a randomized fault run of the waiting protocol. The seed
 * is printed; DLOCK_CHAOS_SEED=N repeats a run, DLOCK_CHAOS_SECONDS=S
 * changes its length (default 20 s per phase).
 *
 * Six worker processes contend for one key. In each critical section a
 * worker (1) asks the server who holds the key — a violation if the server
 * names someone else while the worker's handle is still valid after the
 * answer (validity is conservative, so that must never happen); (2) reads a
 * counter from a fenced store (a separate redis-server), and (3) writes it
 * back incremented, with its fencing token: the store accepts a token only
 * if it is not below the last one. Meanwhile the injector:
 *
 *   phase 1 (TTL 1 s): every 300 ms SIGKILLs a worker, and starts a new
 *   one: every other kill a holder (one holding at that moment), the others
 *   a random worker, mostly waiters; half the workers run over connections
 *   that the fault-injecting transport resets every few dozen replies; a
 *   closer process keeps opening a client, blocking an acquisition on it
 *   and closing the client under it.
 *   phase 2 (TTL 20 ms): every 300 ms SIGSTOPs a random worker, holder or
 *   waiter, for 10-120 ms — past its lease and its TTL.
 *
 * The checkers: at-acquisition exclusion (the server check above), fencing
 * order (the store never rejected a write from a holder valid before and
 * after it), lost updates (the store's accepted writes equal its counter:
 * two holders reading the same value would lose one), the closer's results
 * (0 or DLOCK_ECLOSED only), and progress in phase 1: the longest time
 * with no holder (a killed holder counts as holding until it was killed;
 * its lock then lives on the server until its TTL) at most TTL + 1 s.
 * Safety is asserted exactly (0), progress generously; all figures are
 * printed.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "harness.h"

enum { WORKERS = 6, MAX_SPANS = 400000, KEY_PHASE1 = 1, KEY_PHASE2 = 2 };

/* A span of time with a holder: [start, end]. */
typedef struct span {
    int64_t start, end;
} span;

typedef struct wslot {
    atomic_int pid;
    atomic_llong in_since; /* mono ns of its current acquisition, 0: not holding */
} wslot;

typedef struct shared {
    atomic_int stop;
    atomic_int phase;
    atomic_int acquisitions, not_me, rejected_valid, errors, timeouts;
    atomic_int closer_rounds, closer_ok, closer_closed, closer_bad;
    wslot w[WORKERS];
    atomic_int nspans;
    span spans[MAX_SPANS];
} shared;

static dh_redis *lock_srv, *store;
static shared *sh;

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void log_span(int64_t start, int64_t end)
{
    int i = atomic_fetch_add(&sh->nspans, 1);
    if (i < MAX_SPANS)
        sh->spans[i] = (span){ start, end };
}

/* One critical section: the server check, then read-modify-write. */
static void section(dlock_lock *l, dlock_client *c, redisContext *st, const char *owner,
                    const char *key, unsigned *seed)
{
    dlock_info info;
    if (dlock_inspect(&info, c, key) == 0 && (!info.held || strcmp(info.owner, owner) != 0) &&
        dlock_is_held(l))
        atomic_fetch_add(&sh->not_me, 1);
    long long v = dh_store_counter(st);
    int work_us = (int)(rand_r(seed) % (atomic_load(&sh->phase) == KEY_PHASE1 ? 3000 : 1000));
    for (int64_t until = mono_ns() + (int64_t)work_us * 1000; mono_ns() < until;) {
    }
    if (!dlock_is_held(l))
        return; /* too late to write safely */
    if (!dh_store_write(st, dlock_lock_fencing_token(l), v + 1) && dlock_is_held(l))
        atomic_fetch_add(&sh->rejected_valid, 1);
}

static int trace_id;

static void trace_log(int level, const char *msg, void *arg)
{
    (void)level;
    (void)arg;
    fprintf(stderr, "%lld w%d log %s\n", (long long)(mono_ns() / 1000000), trace_id, msg);
}

static void worker(int id, unsigned seed)
{
    char owner[64], key[32];
    snprintf(owner, sizeof owner, "chaos-%d-%d", id, (int)getpid());
    int phase = atomic_load(&sh->phase);
    snprintf(key, sizeof key, "chaos:%d", phase);
    dlock_client_opts co = DLOCK_CLIENT_OPTS_INIT;
    co.owner_id = owner;
    co.connect_timeout_ms = co.command_timeout_ms = 1000;
    if (getenv("DLOCK_CHAOS_TRACE")) {
        trace_id = id;
        co.log_fn = trace_log;
        co.log_level = DLOCK_LOG_DEBUG;
    }
    dlock_client *c = NULL;
    if (dlock_client_open(&c, lock_srv->url, &co) != 0)
        _exit(2);
    if (phase == KEY_PHASE1 && id % 2 && !getenv("DLOCK_CHAOS_NO_RESETS")) {
        dlock__faults f = { 0 };
        f.reset_after_reads = 20 + (long)(rand_r(&seed) % 60);
        dlock__client_set_faults(c, &f);
    }
    redisContext *st = dh_connect(store, 0);
    if (!st)
        _exit(2);
    while (!atomic_load(&sh->stop)) {
        dlock_lock_opts o = DLOCK_LOCK_OPTS_INIT;
        o.ttl_ms = phase == KEY_PHASE1 ? 1000 : 20;
        o.wait_ms = 10000;
        dlock_lock *l;
        int rc = dlock_acquire(&l, c, key, &o);
        if (rc == DLOCK_ETIMEDOUT) {
            atomic_fetch_add(&sh->timeouts, 1);
            continue;
        }
        if (rc) {
            atomic_fetch_add(&sh->errors, 1);
            continue;
        }
        int64_t t0 = mono_ns();
        if (getenv("DLOCK_CHAOS_TRACE"))
            fprintf(stderr, "%lld w%d acquired\n", (long long)(t0 / 1000000), id);
        atomic_store(&sh->w[id].in_since, t0);
        atomic_fetch_add(&sh->acquisitions, 1);
        section(l, c, st, owner, key, &seed);
        atomic_store(&sh->w[id].in_since, 0);
        log_span(t0, mono_ns());
        int rrc = dlock_release(l);
        if (getenv("DLOCK_CHAOS_TRACE"))
            fprintf(stderr, "%lld w%d released %d %s\n", (long long)(mono_ns() / 1000000), id, rrc,
                    rrc ? dlock_last_errmsg() : "");
    }
    redisFree(st);
    dlock_client_close(c);
    _exit(0);
}

static pid_t spawn_worker(int id, unsigned seed)
{
    pid_t p = dh_fork();
    if (p == 0)
        worker(id, seed);
    if (p > 0)
        atomic_store(&sh->w[id].pid, p);
    return p;
}

/* ---- the closer: close a client under a blocked acquisition, again and again */

typedef struct blocked {
    dlock_client *c;
    int rc;
} blocked;

static void *blocked_acquire(void *arg)
{
    blocked *b = arg;
    dlock_lock *l;
    dlock_lock_opts o = DLOCK_LOCK_OPTS_INIT;
    o.ttl_ms = 1000;
    b->rc = dlock_acquire(&l, b->c, "chaos:1", &o); /* a handle, if any, is close's */
    return NULL;
}

static void closer(unsigned seed)
{
    while (!atomic_load(&sh->stop)) {
        blocked b = { NULL, 0 };
        if (dlock_client_open(&b.c, lock_srv->url, NULL) != 0)
            _exit(2);
        pthread_t t;
        if (pthread_create(&t, NULL, blocked_acquire, &b) != 0)
            _exit(2);
        usleep(rand_r(&seed) % 30000);
        dlock_client_close(b.c);
        pthread_join(t, NULL);
        atomic_fetch_add(&sh->closer_rounds, 1);
        if (b.rc == 0)
            atomic_fetch_add(&sh->closer_ok, 1);
        else if (b.rc == DLOCK_ECLOSED)
            atomic_fetch_add(&sh->closer_closed, 1);
        else
            atomic_fetch_add(&sh->closer_bad, 1);
    }
    _exit(0);
}

/* ------------------------------------------------------------- checkers */

static int cmp_span(const void *a, const void *b)
{
    const span *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

/* The longest time in [from, to] covered by no span, in ms. */
static int64_t longest_gap_ms(int64_t from, int64_t to)
{
    int n = atomic_load(&sh->nspans);
    if (n > MAX_SPANS)
        n = MAX_SPANS;
    qsort(sh->spans, (size_t)n, sizeof sh->spans[0], cmp_span);
    int64_t covered = from, gap = 0;
    for (int i = 0; i < n; i++) {
        if (sh->spans[i].start > covered && sh->spans[i].start - covered > gap)
            gap = sh->spans[i].start - covered;
        if (sh->spans[i].end > covered)
            covered = sh->spans[i].end;
    }
    if (to - covered > gap)
        gap = to - covered;
    return gap / 1000000;
}

/* ---------------------------------------------------------------- phases */

static int run_seconds(void)
{
    const char *s = getenv("DLOCK_CHAOS_SECONDS");
    int v = s ? atoi(s) : 20;
    return v > 0 && v <= 600 ? v : 20;
}

/* Start the workers of a phase; returns the closer's pid (phase 1) or 0. */
static pid_t start_phase(int phase, unsigned *seed)
{
    atomic_store(&sh->phase, phase);
    atomic_store(&sh->stop, 0);
    atomic_store(&sh->nspans, 0);
    for (int i = 0; i < WORKERS; i++)
        assert_true(spawn_worker(i, rand_r(seed)) > 0);
    if (phase != KEY_PHASE1 || getenv("DLOCK_CHAOS_NO_CLOSER"))
        return 0;
    pid_t p = dh_fork();
    if (p == 0)
        closer(rand_r(seed));
    assert_true(p > 0);
    return p;
}

static void stop_phase(pid_t closer_pid)
{
    atomic_store(&sh->stop, 1);
    for (int i = 0; i < WORKERS; i++) {
        pid_t p = atomic_load(&sh->w[i].pid);
        kill(p, SIGCONT);
        int st;
        if (dh_waitpid(p, &st, 15000) != 1) {
            kill(p, SIGKILL);
            dh_waitpid(p, &st, 5000);
        }
    }
    if (closer_pid > 0) {
        int st;
        if (dh_waitpid(closer_pid, &st, 15000) != 1) {
            kill(closer_pid, SIGKILL);
            dh_waitpid(closer_pid, &st, 5000);
        }
    }
}

/* A worker holding the key now, looked for during at most ms
 * milliseconds (holders hold for a few milliseconds at a time); -1 if
 * none was seen. */
static int holder_now(int ms)
{
    int64_t until = mono_ns() + (int64_t)ms * 1000000;
    do {
        for (int i = 0; i < WORKERS; i++)
            if (atomic_load(&sh->w[i].in_since) != 0)
                return i;
        usleep(200);
    } while (mono_ns() < until);
    return -1;
}

static void test_chaos(void **state)
{
    (void)state;
    const char *env = getenv("DLOCK_CHAOS_SEED");
    unsigned seed =
        env ? (unsigned)strtoul(env, NULL, 10) : (unsigned)time(NULL) ^ (unsigned)getpid();
    print_message("chaos: seed %u (DLOCK_CHAOS_SEED=%u repeats it), %d s per phase\n", seed, seed,
                  run_seconds());
    lock_srv = dh_redis_start(NULL);
    store = dh_redis_start(NULL);
    assert_non_null(lock_srv);
    assert_non_null(store);
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(sh != MAP_FAILED);
    memset(sh, 0, sizeof *sh);

    /* ---- phase 1: kill -9 of holders and waiters, TTL 1 s */
    pid_t closer_pid = start_phase(KEY_PHASE1, &seed);
    int64_t t0 = mono_ns(), end = t0 + (int64_t)run_seconds() * 1000000000;
    int kills = 0, holder_kills = 0;
    while (mono_ns() < end) {
        usleep(300000);                            /* the fault schedule */
        int id = kills % 2 ? holder_now(200) : -1; /* every other kill: a holder */
        if (id < 0)
            id = (int)(rand_r(&seed) % WORKERS);
        pid_t p = atomic_load(&sh->w[id].pid);
        int64_t since = atomic_load(&sh->w[id].in_since);
        kill(p, SIGKILL);
        int64_t at = mono_ns();
        if (getenv("DLOCK_CHAOS_TRACE"))
            fprintf(stderr, "%lld w%d killed%s\n", (long long)(at / 1000000), id,
                    since ? " (holding)" : "");
        int st;
        assert_int_equal(dh_waitpid(p, &st, 10000), 1);
        if (since) { /* it held until now: count that time as held */
            log_span(since, at);
            holder_kills++;
        }
        atomic_store(&sh->w[id].in_since, 0);
        kills++;
        assert_true(spawn_worker(id, rand_r(&seed)) > 0);
    }
    int64_t t1 = mono_ns();
    int64_t gap = longest_gap_ms(t0 + 2000000000LL, t1); /* after the first workers started */
    int acq1 = atomic_load(&sh->acquisitions);
    stop_phase(closer_pid);
    long long lost1 = dh_store_lost(store);
    print_message(
        "chaos phase 1 (kill -9, TTL 1000 ms): %d acquisitions, %d kills (%d holders); "
        "server named another holder: %d; rejected while valid: %d; lost updates: %lld; "
        "longest time with no holder: %lld ms; closer: %d rounds (%d got it, %d ECLOSED, %d "
        "other); errors %d, timeouts %d\n",
        acq1, kills, holder_kills, atomic_load(&sh->not_me), atomic_load(&sh->rejected_valid),
        lost1, (long long)gap, atomic_load(&sh->closer_rounds), atomic_load(&sh->closer_ok),
        atomic_load(&sh->closer_closed), atomic_load(&sh->closer_bad), atomic_load(&sh->errors),
        atomic_load(&sh->timeouts));
    assert_int_equal(atomic_load(&sh->not_me), 0);
    assert_int_equal(atomic_load(&sh->rejected_valid), 0);
    assert_int_equal(lost1, 0);
    assert_int_equal(atomic_load(&sh->closer_bad), 0);
    assert_true(acq1 > 20);
    assert_true(gap <= 1000 + 1000);

    /* ---- phase 2: SIGSTOP of holders and waiters, TTL 20 ms */
    atomic_store(&sh->acquisitions, 0);
    start_phase(KEY_PHASE2, &seed);
    end = mono_ns() + (int64_t)run_seconds() * 1000000000;
    int stops = 0;
    while (mono_ns() < end) {
        usleep(300000); /* the fault schedule */
        int id = (int)(rand_r(&seed) % WORKERS);
        pid_t p = atomic_load(&sh->w[id].pid);
        kill(p, SIGSTOP);
        usleep(10000 + rand_r(&seed) % 110000); /* the stop's length */
        kill(p, SIGCONT);
        stops++;
    }
    int acq2 = atomic_load(&sh->acquisitions);
    stop_phase(0);
    long long lost2 = dh_store_lost(store);
    print_message("chaos phase 2 (SIGSTOP 10-120 ms, TTL 20 ms): %d acquisitions, %d stops; server "
                  "named another holder: %d; rejected while valid: %d; lost updates: %lld\n",
                  acq2, stops, atomic_load(&sh->not_me), atomic_load(&sh->rejected_valid), lost2);
    assert_int_equal(atomic_load(&sh->not_me), 0);
    assert_int_equal(atomic_load(&sh->rejected_valid), 0);
    assert_int_equal(lost2, 0);
    assert_true(acq2 > 20);
    munmap(sh, sizeof *sh);
    dh_redis_stop(lock_srv);
    dh_redis_stop(store);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        dh_unit_test(test_chaos),
    };
    int rc = cmocka_run_group_tests_name("chaos", tests, NULL, NULL);
    dh_cleanup();
    return rc;
}
