/*
 * test_patterns.c — the patterns: semaphore (limit reached, never exceeded,
 * a killed holder's permit comes back, slots, mixed limits, double release),
 * multi-lock (all-or-nothing, no deadlock with opposite orders, duplicates,
 * bad input), leader election (one leader, a killed leader is replaced
 * within its TTL, dlock_leader_wait follows changes) and the read-write lock
 * (readers share, writers exclude, writers are not starved).
 *
 * Design. Concurrency across processes uses dh_fork(), before the test
 * opens any client of its own: each child opens its own client and reports
 * through a shared anonymous mapping (atomics), the parent asserts; a
 * failing test's children are killed by its teardown. Concurrency levels are measured inside the critical
 * sections with atomic counters (current and maximum). Every wait is
 * bounded.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static dh_redis *srv;

static int group_setup(void **state)
{
    (void)state;
    return dh_group_start(&srv, NULL);
}

typedef struct shared {
    atomic_int cur, max, sections, errors, slot_clash;
    atomic_int slot_used[16];
    atomic_int readers_cur, writers_cur, max_readers, overlap;
    atomic_int ready;
} shared;

static shared *shared_new(void)
{
    shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(sh != MAP_FAILED);
    memset(sh, 0, sizeof *sh);
    return sh;
}

static void bump_max(atomic_int *max, int v)
{
    int m = atomic_load(max);
    while (v > m && !atomic_compare_exchange_weak(max, &m, v)) {
    }
}

/* Busy work inside a critical section (no sleeping). */
static void spin(int n)
{
    volatile unsigned x = 0;
    for (int i = 0; i < n; i++)
        x += (unsigned)i;
}

static dlock_client *open_client(void)
{
    return dh_client(srv->url, NULL);
}

/* Release l in a worker: a failure counts in sh->errors. */
static void release_counted(dlock_lock *l, shared *sh)
{
    if (dlock_release(l) != 0)
        atomic_fetch_add(&sh->errors, 1);
}

/* Fork a holder: a process with a client of its own (owner id owner; NULL:
 * the default) that takes a lock with take(c, &o), o a 1 s TTL, renewed,
 * and a wait without end, reports in sh->ready (1 holds, -1 failed) and
 * holds until killed. Returns its pid once it holds; fails the test if it
 * does not. */
static pid_t fork_holder(shared *sh, const char *owner,
                         int (*take)(dlock_client *c, const dlock_lock_opts *o))
{
    pid_t pid = dh_fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dlock_client *c = dh_client(srv->url, owner);
        dlock_lock_opts o = dh_opts(1000, DLOCK_WAIT_FOREVER);
        int ok = c && take(c, &o) == 0;
        atomic_store(&sh->ready, ok ? 1 : -1);
        for (;;)
            pause(); /* holds (and renews) until killed */
    }
    assert_true(dh_wait_until(dh_flag_set, &sh->ready, 10000)); /* 1 holds, -1 failed */
    assert_int_equal(atomic_load(&sh->ready), 1);
    return pid;
}

/* Run worker(c, p, sh) in n processes (p = 0..n-1, at most 16), each with
 * a client of its own, and wait at most timeout_ms for every one of them
 * to exit with 0. The workers report through sh. */
static void run_workers(int n, shared *sh, void (*worker)(dlock_client *c, int p, shared *sh),
                        int timeout_ms)
{
    pid_t pids[16];
    assert_true(n <= 16);
    for (int p = 0; p < n; p++) {
        if ((pids[p] = dh_fork()) == 0) {
            dlock_client *c = open_client();
            if (!c)
                _exit(2);
            worker(c, p, sh);
            dlock_client_close(c);
            _exit(0);
        }
        assert_true(pids[p] > 0);
    }
    assert_true(dh_wait_children(pids, n, timeout_ms));
}

/* ------------------------------------------------------------ semaphore */

/* test_semaphore_limit's workers: SEM_ROUNDS sections each. */
enum { SEM_PROCS = 12, SEM_ROUNDS = 15, SEM_LIMIT = 3 };

static void sem_worker(dlock_client *c, int p, shared *sh)
{
    (void)p;
    for (int i = 0; i < SEM_ROUNDS; i++) {
        dlock_lock *l;
        if (dlock_sem_acquire(&l, c, "sem:api", SEM_LIMIT, NULL) != 0) {
            atomic_fetch_add(&sh->errors, 1);
            continue;
        }
        int slot = dlock_lock_slot(l);
        if (slot < 0 || slot >= SEM_LIMIT || atomic_fetch_add(&sh->slot_used[slot], 1) != 0)
            atomic_fetch_add(&sh->slot_clash, 1);
        int now = atomic_fetch_add(&sh->cur, 1) + 1;
        bump_max(&sh->max, now);
        /* stay inside until the limit is reached (12 workers want in,
         * so it is), bounded: the maximum must then be exactly SEM_LIMIT */
        int64_t until = dh_now_ms() + 2000;
        while (atomic_load(&sh->max) < SEM_LIMIT && dh_now_ms() < until)
            spin(1000);
        spin(20000);
        atomic_fetch_sub(&sh->cur, 1);
        if (slot >= 0 && slot < SEM_LIMIT)
            atomic_fetch_sub(&sh->slot_used[slot], 1);
        atomic_fetch_add(&sh->sections, 1);
        release_counted(l, sh);
    }
}

/* 12 processes, limit 3: never more than 3 inside, and 3 is reached; slots
 * are unique among the holders. */
static void test_semaphore_limit(void **state)
{
    (void)state;
    shared *sh = shared_new();
    run_workers(SEM_PROCS, sh, sem_worker, 60000);
    print_message("semaphore: %d workers, limit %d, max concurrent observed %d, %d sections\n",
                  SEM_PROCS, SEM_LIMIT, atomic_load(&sh->max), atomic_load(&sh->sections));
    assert_int_equal(atomic_load(&sh->errors), 0);
    assert_int_equal(atomic_load(&sh->slot_clash), 0);
    assert_int_equal(atomic_load(&sh->sections), SEM_PROCS * SEM_ROUNDS);
    assert_int_equal(atomic_load(&sh->max), SEM_LIMIT);
    munmap(sh, sizeof *sh);
}

/* The one permit of "sem:crash" (a fork_holder's take). */
static int take_sem_crash(dlock_client *c, const dlock_lock_opts *o)
{
    dlock_lock *l;
    return dlock_sem_acquire(&l, c, "sem:crash", 1, o);
}

/* A holder killed with SIGKILL: its permit comes back when its TTL runs
 * out; a double release is harmless. The holder is forked first (no
 * threads in the test yet) and holds, renewing, until killed; if the test
 * fails before it kills it, dh_test_teardown does. */
static void test_semaphore_crash_and_double_release(void **state)
{
    (void)state;
    shared *sh = shared_new();
    pid_t pid = fork_holder(sh, NULL, take_sem_crash);
    dlock_client *c = open_client();
    dlock_lock *l = NULL;
    dlock_lock_opts once = dh_opts(30000, 0);
    dh_assert_rc(dlock_sem_acquire(&l, c, "sem:crash", 1, &once), DLOCK_EBUSY);
    kill(pid, SIGKILL);
    int st;
    assert_int_equal(dh_waitpid(pid, &st, 5000), 1);
    int64_t t0 = dh_now_ms();
    dlock_lock_opts o = dh_opts(0, 10000);
    dh_assert_rc(dlock_sem_acquire(&l, c, "sem:crash", 1, &o), 0);
    int64_t took = dh_now_ms() - t0;
    print_message("killed holder's permit came back after %lld ms (ttl 1000)\n", (long long)took);
    assert_true(took <= 3000);
    assert_int_equal(dlock_lock_slot(l), 0);
    dh_assert_rc(dlock_release(l), 0);
    /* A "double release": A's permit already came back by expiry and B holds
     * it now; A's late release must neither free B's permit nor push the
     * count below zero. */
    dlock_lock_opts short_ttl = dh_opts_fixed(300, DLOCK_WAIT_FOREVER);
    dlock_lock *a, *b, *x;
    dh_assert_rc(dlock_sem_acquire(&a, c, "sem:twice", 1, &short_ttl), 0);
    o.wait_ms = 5000;
    dh_assert_rc(dlock_sem_acquire(&b, c, "sem:twice", 1, &o), 0); /* after a expired */
    dh_assert_rc(dlock_release(a), DLOCK_ENOTHELD);
    once = dh_opts(0, 0);
    dh_assert_rc(dlock_sem_acquire(&x, c, "sem:twice", 1, &once), DLOCK_EBUSY);
    dh_assert_rc(dlock_release(b), 0);
    dh_assert_rc(dlock_sem_acquire(&x, c, "sem:twice", 1, &once), 0);
    dh_assert_rc(dlock_release(x), 0);
    dlock_client_close(c);
    munmap(sh, sizeof *sh);
}

/* A semaphore remembers its limit while it is in use: another limit is
 * refused with both named (three holders under limits 2 and 3 never run at
 * once), and once nobody holds or waits a new limit applies. */
static void test_semaphore_limit_conflict(void **state)
{
    (void)state;
    dlock_client *c = open_client();
    dlock_lock *a, *b, *x;
    dh_assert_rc(dlock_sem_acquire(&a, c, "sem:mixed", 2, NULL), 0);
    dh_assert_rc(dlock_sem_acquire(&b, c, "sem:mixed", 2, NULL), 0);
    dh_assert_rc(dlock_try_acquire(&x, c, "sem:mixed", NULL), 0); /* a mutex is another lock */
    dh_assert_rc(dlock_release(x), 0);
    dlock_lock_opts once = dh_opts(0, 0);
    dh_assert_rc(dlock_sem_acquire(&x, c, "sem:mixed", 3, &once), DLOCK_EINVAL);
    assert_non_null(strstr(dlock_last_errmsg(), "limit of 2"));
    assert_non_null(strstr(dlock_last_errmsg(), "limit of 3"));
    dh_assert_rc(dlock_sem_acquire(&x, c, "sem:mixed", 5, NULL), DLOCK_EINVAL); /* also waiting */
    dh_assert_rc(dlock_sem_acquire(&x, c, "sem:mixed", 2, &once), DLOCK_EBUSY);
    dlock_key_state *st;
    dh_assert_rc(dlock_key_state_get(&st, c, "sem:mixed", DLOCK_KIND_SEMAPHORE), 0);
    assert_int_equal(st->limit, 2);
    assert_int_equal(st->nholders, 2);
    dlock_key_state_free(st);
    dh_assert_rc(dlock_release(a), 0);
    dh_assert_rc(dlock_sem_acquire(&x, c, "sem:mixed", 3, &once), DLOCK_EINVAL); /* b holds */
    dh_assert_rc(dlock_release(b), 0);
    dh_assert_rc(dlock_sem_acquire(&x, c, "sem:mixed", 3, &once), 0); /* idle: a new limit */
    dh_assert_rc(dlock_release(x), 0);
    dlock_client_close(c);
}

static void test_semaphore_bad_input(void **state)
{
    (void)state;
    dlock_client *c = open_client();
    dlock_lock *l = NULL;
    dh_assert_rc(dlock_sem_acquire(&l, c, "sem:bad", 0, NULL), DLOCK_EINVAL);
    assert_non_null(strstr(dlock_last_errmsg(), "limit"));
    dh_assert_rc(dlock_sem_acquire(&l, c, "sem:bad", -3, NULL), DLOCK_EINVAL);
    dh_assert_rc(dlock_sem_acquire(&l, c, "", 2, NULL), DLOCK_EINVAL);
    assert_null(l);
    dlock_client_close(c);
}

/* ----------------------------------------------------------- multi-lock */

/* test_multi_no_deadlock's workers: a transfer takes both accounts, in
 * the order that alternates with the process and the round. */
enum { BANK_PROCS = 6, BANK_ROUNDS = 30 };

static void bank_worker(dlock_client *c, int p, shared *sh)
{
    const char *ab[2] = { "acct:{bank}:A", "acct:{bank}:B" };
    const char *ba[2] = { "acct:{bank}:B", "acct:{bank}:A" };
    for (int i = 0; i < BANK_ROUNDS; i++) {
        dlock_lock *l;
        dlock_lock_opts o = dh_opts(0, 20000);
        if (dlock_acquire_all(&l, c, (p + i) % 2 ? ab : ba, 2, &o) != 0) {
            atomic_fetch_add(&sh->errors, 1);
            continue;
        }
        int now = atomic_fetch_add(&sh->cur, 1) + 1;
        bump_max(&sh->max, now);
        spin(100000);
        atomic_fetch_sub(&sh->cur, 1);
        atomic_fetch_add(&sh->sections, 1);
        if (dlock_lock_count(l) != 2 || dlock_release(l) != 0)
            atomic_fetch_add(&sh->errors, 1);
    }
}

/* Transfers between two accounts in opposite key orders from several
 * processes: no deadlock, and the pair is always taken together. */
static void test_multi_no_deadlock(void **state)
{
    (void)state;
    shared *sh = shared_new();
    run_workers(BANK_PROCS, sh, bank_worker, 90000);
    assert_int_equal(atomic_load(&sh->errors), 0);
    assert_int_equal(atomic_load(&sh->sections), BANK_PROCS * BANK_ROUNDS);
    assert_int_equal(atomic_load(&sh->max), 1);
    munmap(sh, sizeof *sh);
}

/* All or nothing: with one key of the set held elsewhere, none is taken;
 * a single-key holder of the other key is unaffected. */
static void test_multi_all_or_nothing(void **state)
{
    (void)state;
    dlock_client *c = open_client(), *d = open_client();
    dlock_lock *b, *all = NULL, *a;
    dh_assert_rc(dlock_acquire(&b, d, "m:{x}:b", NULL), 0);
    const char *keys[3] = { "m:{x}:a", "m:{x}:b", "m:{x}:a" }; /* duplicate a */
    dlock_lock_opts once = dh_opts(0, 0);
    dh_assert_rc(dlock_acquire_all(&all, c, keys, 3, &once), DLOCK_EBUSY);
    /* a was not taken */
    dh_assert_rc(dlock_try_acquire(&a, d, "m:{x}:a", NULL), 0);
    dh_assert_rc(dlock_release(a), 0);
    /* waiting: woken by b's release, then holds both */
    dlock_lock_opts o = dh_opts(0, 300);
    dh_assert_rc(dlock_acquire_all(&all, c, keys, 3, &o), DLOCK_ETIMEDOUT);
    dh_assert_rc(dlock_release(b), 0);
    dh_assert_rc(dlock_acquire_all(&all, c, keys, 3, &once), 0);
    assert_int_equal(dlock_lock_count(all), 2);
    assert_string_equal(dlock_lock_key_at(all, 0), "m:{x}:a");
    assert_string_equal(dlock_lock_key_at(all, 1), "m:{x}:b");
    assert_true(dlock_lock_fencing_token_at(all, 0) > 0);
    assert_true(dlock_lock_fencing_token_at(all, 1) > 0);
    assert_int_equal(dlock_lock_fencing_token(all), dlock_lock_fencing_token_at(all, 0));
    dh_assert_rc(dlock_try_acquire(&a, d, "m:{x}:a", NULL), DLOCK_EBUSY);
    dh_release_frees(all, d, "m:{x}:b");
    dlock_client_close(c);
    dlock_client_close(d);
}

static void test_multi_bad_input(void **state)
{
    (void)state;
    dlock_client *c = open_client();
    dlock_lock *l = NULL;
    const char *keys[DLOCK_MULTI_MAX + 1];
    char buf[DLOCK_MULTI_MAX + 1][16];
    for (int i = 0; i <= DLOCK_MULTI_MAX; i++) {
        snprintf(buf[i], sizeof buf[i], "k%d", i);
        keys[i] = buf[i];
    }
    dh_assert_rc(dlock_acquire_all(&l, c, keys, 0, NULL), DLOCK_EINVAL);
    dh_assert_rc(dlock_acquire_all(&l, c, NULL, 2, NULL), DLOCK_EINVAL);
    dh_assert_rc(dlock_acquire_all(&l, c, keys, DLOCK_MULTI_MAX + 1, NULL), DLOCK_EINVAL);
    assert_non_null(strstr(dlock_last_errmsg(), "at most"));
    const char *with_empty[2] = { "k1", "" };
    dh_assert_rc(dlock_acquire_all(&l, c, with_empty, 2, NULL), DLOCK_EINVAL);
    assert_non_null(strstr(dlock_last_errmsg(), "empty"));
    assert_null(l);
    dlock_client_close(c);
}

/* ------------------------------------------------------ leader election */

/* Campaign for "elect:svc" (a fork_holder's take: it leads). */
static int campaign_svc(dlock_client *c, const dlock_lock_opts *o)
{
    dlock_lock *l;
    return dlock_campaign(&l, c, "elect:svc", o);
}

/* A leader killed with SIGKILL is replaced within its TTL; watchers see it
 * through dlock_leader_wait. */
static void test_leader_failover(void **state)
{
    (void)state;
    shared *sh = shared_new();
    pid_t pid = fork_holder(sh, "leader-one", campaign_svc);

    dlock_client *c = dh_client(srv->url, "leader-two");
    assert_non_null(c);
    dlock_info info;
    dh_assert_rc(dlock_leader(&info, c, "elect:svc"), 0);
    assert_int_equal(info.held, 1);
    assert_string_equal(info.owner, "leader-one");
    uint64_t term1 = info.fencing_token;

    kill(pid, SIGKILL);
    int st;
    assert_int_equal(dh_waitpid(pid, &st, 5000), 1);
    int64_t t0 = dh_now_ms();
    dlock_lock *l;
    dlock_lock_opts o = dh_opts(1000, 10000);
    dh_assert_rc(dlock_campaign(&l, c, "elect:svc", &o), 0);
    int64_t took = dh_now_ms() - t0;
    print_message("killed leader replaced after %lld ms (ttl 1000)\n", (long long)took);
    assert_true(took <= 3000);
    dh_assert_rc(dlock_leader(&info, c, "elect:svc"), 0);
    assert_string_equal(info.owner, "leader-two");
    assert_true(info.fencing_token > term1);
    /* a watcher sees the resignation (no leader), without polling */
    dlock_client *w = open_client();
    uint64_t term2 = info.fencing_token;
    dh_assert_rc(dlock_resign(l), 0);
    dh_assert_rc(dlock_leader_wait(&info, w, "elect:svc", term2, 5000, NULL), 0);
    assert_int_equal(info.held, 0);
    dh_assert_rc(dlock_leader_wait(&info, w, "elect:svc", 0, 200, NULL), DLOCK_ETIMEDOUT);
    dlock_client_close(w);
    dlock_client_close(c);
    munmap(sh, sizeof *sh);
}

typedef struct watch_ctx {
    dh_thread t;
    dlock_client *c;
    uint64_t known;
    dlock_info info;
} watch_ctx;

static int watch_fn(void *arg)
{
    watch_ctx *w = arg;
    return dlock_leader_wait(&w->info, w->c, "elect:watch", w->known, 10000, NULL);
}

/* A watcher blocked on "no leader" sees a campaign win at once. */
static void test_leader_wait_sees_new_leader(void **state)
{
    (void)state;
    dlock_client *c = open_client(), *wc = open_client();
    static watch_ctx w; /* static: outlives a failed test */
    memset(&w, 0, sizeof w);
    w.c = wc;
    dh_thread_start(&w.t, watch_fn, &w);
    assert_false(dh_wait_until(dh_thread_done, &w.t, 300)); /* no leader: keeps waiting */
    dlock_lock *l;
    dh_assert_rc(dlock_campaign(&l, c, "elect:watch", NULL), 0);
    dh_assert_rc(dh_thread_join(&w.t, 5000), 0);
    assert_int_equal(w.info.held, 1);
    assert_int_equal(w.info.fencing_token, dlock_lock_fencing_token(l));
    dh_assert_rc(dlock_resign(l), 0);
    dlock_client_close(c);
    dlock_client_close(wc);
}

/* ------------------------------------------------------- read-write lock */

/* Readers share; a writer excludes readers and writers. */
static void test_rw_share_and_exclude(void **state)
{
    (void)state;
    dlock_client *c = open_client();
    dlock_lock *r1, *r2, *w = NULL;
    dlock_lock_opts once = dh_opts(0, 0);
    dh_assert_rc(dlock_rw_acquire(&r1, c, "rw:doc", DLOCK_READ, NULL), 0);
    dh_assert_rc(dlock_rw_acquire(&r2, c, "rw:doc", DLOCK_READ, &once), 0);
    assert_true(dlock_lock_fencing_token(r2) > dlock_lock_fencing_token(r1));
    dh_assert_rc(dlock_rw_acquire(&w, c, "rw:doc", DLOCK_WRITE, &once), DLOCK_EBUSY);
    dh_assert_rc(dlock_try_acquire(&w, c, "rw:doc", NULL), DLOCK_EBUSY); /* same lock */
    dh_assert_rc(dlock_release(r1), 0);
    dh_assert_rc(dlock_release(r2), 0);
    dh_assert_rc(dlock_rw_acquire(&w, c, "rw:doc", DLOCK_WRITE, &once), 0);
    dh_assert_rc(dlock_rw_acquire(&r1, c, "rw:doc", DLOCK_READ, &once), DLOCK_EBUSY);
    dh_assert_rc(dlock_release(w), 0);
    dh_assert_rc(dlock_rw_acquire(&w, c, "rw:doc", 3, NULL), DLOCK_EINVAL);
    dlock_client_close(c);
}

enum { RW_READERS = 6, RW_WRITERS = 2, RW_ROUNDS = 25 };

/* test_rw_concurrent_no_starvation's workers: processes 0..RW_READERS-1
 * read, the others write, RW_ROUNDS sections each. */
static void rw_worker(dlock_client *c, int p, shared *sh)
{
    int writer = p >= RW_READERS;
    for (int i = 0; i < RW_ROUNDS; i++) {
        dlock_lock *l;
        dlock_lock_opts o = dh_opts(0, 30000);
        int mode = writer ? DLOCK_WRITE : DLOCK_READ;
        if (dlock_rw_acquire(&l, c, "rw:load", mode, &o) != 0) {
            atomic_fetch_add(&sh->errors, 1);
            continue;
        }
        if (writer) {
            if (atomic_fetch_add(&sh->writers_cur, 1) != 0 || atomic_load(&sh->readers_cur) != 0)
                atomic_fetch_add(&sh->overlap, 1);
            spin(300000);
            if (atomic_load(&sh->readers_cur) != 0)
                atomic_fetch_add(&sh->overlap, 1);
            atomic_fetch_sub(&sh->writers_cur, 1);
            atomic_fetch_add(&sh->sections, 1);
        } else {
            int n = atomic_fetch_add(&sh->readers_cur, 1) + 1;
            bump_max(&sh->max_readers, n);
            if (atomic_load(&sh->writers_cur) != 0)
                atomic_fetch_add(&sh->overlap, 1);
            spin(300000);
            atomic_fetch_sub(&sh->readers_cur, 1);
        }
        release_counted(l, sh);
    }
}

/* Many readers and writers in processes: a writer is always alone, readers
 * overlap, and writers finish while readers keep coming (no starvation). */
static void test_rw_concurrent_no_starvation(void **state)
{
    (void)state;
    shared *sh = shared_new();
    run_workers(RW_READERS + RW_WRITERS, sh, rw_worker, 120000);
    print_message("rw: max concurrent readers %d, writer sections %d, overlaps %d\n",
                  atomic_load(&sh->max_readers), atomic_load(&sh->sections),
                  atomic_load(&sh->overlap));
    assert_int_equal(atomic_load(&sh->errors), 0);
    assert_int_equal(atomic_load(&sh->overlap), 0);
    assert_int_equal(atomic_load(&sh->sections), RW_WRITERS * RW_ROUNDS);
    assert_true(atomic_load(&sh->max_readers) >= 2);
    munmap(sh, sizeof *sh);
}

typedef struct rw_waiter {
    dh_thread t;
    dlock_client *c;
    int mode;
    dlock_lock *lock;
} rw_waiter;

static int rw_waiter_fn(void *arg)
{
    rw_waiter *w = arg;
    return dlock_rw_acquire(&w->lock, w->c, "rw:fair", w->mode, NULL);
}

/* A writer queued behind a reader is served before readers that come after
 * it: a new reader neither gets in with a try-lock nor overtakes it. */
static void test_rw_writer_not_overtaken(void **state)
{
    (void)state;
    dlock_client *c = open_client(), *wc = open_client(), *rc2 = open_client();
    dlock_lock *r1, *x = NULL;
    dh_assert_rc(dlock_rw_acquire(&r1, c, "rw:fair", DLOCK_READ, NULL), 0);
    static rw_waiter w, r; /* static: outlive a failed test */
    w = (rw_waiter){ .c = wc, .mode = DLOCK_WRITE };
    r = (rw_waiter){ .c = rc2, .mode = DLOCK_READ };
    dh_thread_start(&w.t, rw_waiter_fn, &w);
    assert_true(dh_wait_waiters(c, "rw:fair", 1, 5000));
    dlock_lock_opts once = dh_opts(0, 0);
    dh_assert_rc(dlock_rw_acquire(&x, c, "rw:fair", DLOCK_READ, &once), DLOCK_EBUSY);
    dh_thread_start(&r.t, rw_waiter_fn, &r);
    assert_true(dh_wait_waiters(c, "rw:fair", 2, 5000));
    dh_assert_rc(dlock_release(r1), 0);
    dh_assert_rc(dh_thread_join(&w.t, 5000), 0);
    assert_false(dh_wait_until(dh_thread_done, &r.t, 200)); /* the reader waits for the writer */
    dh_assert_rc(dlock_release(w.lock), 0);
    dh_assert_rc(dh_thread_join(&r.t, 5000), 0);
    assert_true(r.t.ended_ms >= w.t.ended_ms);
    dh_assert_rc(dlock_release(r.lock), 0);
    dlock_client_close(c);
    dlock_client_close(wc);
    dlock_client_close(rc2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        dh_unit_test(test_semaphore_limit),
        dh_unit_test(test_semaphore_crash_and_double_release),
        cmocka_unit_test(test_semaphore_limit_conflict),
        cmocka_unit_test(test_semaphore_bad_input),
        dh_unit_test(test_multi_no_deadlock),
        cmocka_unit_test(test_multi_all_or_nothing),
        cmocka_unit_test(test_multi_bad_input),
        dh_unit_test(test_leader_failover),
        cmocka_unit_test(test_leader_wait_sees_new_leader),
        cmocka_unit_test(test_rw_share_and_exclude),
        dh_unit_test(test_rw_concurrent_no_starvation),
        cmocka_unit_test(test_rw_writer_not_overtaken),
    };
    return cmocka_run_group_tests_name("patterns", tests, group_setup, dh_group_teardown);
}
