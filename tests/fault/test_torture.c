/*
 * test_torture.c — the fault-injection torture run. Worker processes take
 * one lock in a loop; inside each critical section a worker first checks
 * that its lock is still valid (dlock_is_held), then writes to a fenced
 * store: a separate redis-server whose script accepts a write only with a
 * token above the last one it accepted. Every section is logged (token,
 * start, end, whether the lock was still valid at its end, whether the
 * store took the write) in shared memory. Meanwhile the harness injects
 * faults: kill -9 of a holder (it is replaced), SIGSTOP of a holder past
 * its TTL, SIGSTOP/SIGCONT of the lock server, and a restart of the lock
 * server that loses its data. The checkers then verify:
 *   1. fencing tokens increase in the order sections were granted;
 *   2. the store never rejected a write from a holder whose lock was valid
 *      from before the write to after it;
 *   3. no two valid sections overlap, except across the data-loss restart
 *      (which fencing covers: check 1 and 2 still hold there).
 * Counts (sections, faults, violations) are printed; violations must be 0.
 */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

enum { WORKERS = 4, MAX_SECTIONS = 200000, RUN_MS = 12000, TTL_MS = 600 };

typedef struct section {
    uint64_t token;
    int64_t start_ns, end_ns;
    int valid;   /* the lock was still valid at the end of the section */
    int written; /* the fenced store accepted the write */
    int rejected_while_valid;
    int worker;
} section;

typedef struct shared {
    atomic_int n;
    atomic_int stop;
    section s[MAX_SECTIONS];
} shared;

static dh_redis *locks_srv, *store;
static shared *sh;
static char lock_url[512]; /* one server, or five for Redlock */

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#define FENCED_WRITE                                                                               \
    "local last = tonumber(redis.call('GET', 'fence') or '0') "                                    \
    "if tonumber(ARGV[1]) <= last then return 0 end "                                              \
    "redis.call('SET', 'fence', ARGV[1]) redis.call('INCR', 'writes') return 1"

/* One worker: sections until told to stop. */
static void worker(int id)
{
    dlock_client_opts co = DLOCK_CLIENT_OPTS_INIT;
    co.connect_timeout_ms = 300;
    co.command_timeout_ms = 300;
    dlock_client *c = NULL;
    redisContext *st = dh_connect(store, 0);
    while (!c && !atomic_load(&sh->stop))
        if (dlock_client_open(&c, lock_url, &co) != 0)
            usleep(50000); /* the server may be down right now: retry */
    while (!atomic_load(&sh->stop) && st) {
        dlock_lock *l = NULL;
        dlock_lock_opts o = dh_opts(TTL_MS, 1000);
        if (dlock_acquire(&l, c, "torture", &o) != 0)
            continue;
        section sec = { .token = dlock_lock_fencing_token(l), .start_ns = mono_ns(), .worker = id };
        for (volatile int k = 0; k < 100000; k++) { /* the critical section's work */
        }
        if (dlock_is_held(l)) { /* check validity before the protected write */
            char tok[32];
            snprintf(tok, sizeof tok, "%llu", (unsigned long long)sec.token);
            redisReply *r = redisCommand(st, "EVAL %s 0 %s", FENCED_WRITE, tok);
            sec.written = r && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
            freeReplyObject(r);
            sec.valid = dlock_is_held(l);
            sec.rejected_while_valid = !sec.written && sec.valid;
        }
        sec.end_ns = mono_ns();
        dlock_release(l);
        int i = atomic_fetch_add(&sh->n, 1);
        if (i < MAX_SECTIONS)
            sh->s[i] = sec;
    }
    dlock_client_close(c);
    if (st)
        redisFree(st);
}

/* Fork worker `id` (the test process has no client, so no threads: a
 * safe fork); it dies with the test (dh_fork). */
static pid_t spawn_worker(int id)
{
    pid_t p = dh_fork();
    if (p == 0) {
        worker(id);
        _exit(0);
    }
    assert_true(p > 0);
    return p;
}

/* The shared log, fresh, and WORKERS workers on it. */
static void start_workers(pid_t *pids)
{
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(sh != MAP_FAILED);
    memset(sh, 0, sizeof *sh);
    for (int i = 0; i < WORKERS; i++)
        pids[i] = spawn_worker(i);
}

static int cmp_start(const void *a, const void *b)
{
    const section *x = a, *y = b;
    return x->start_ns < y->start_ns ? -1 : x->start_ns > y->start_ns;
}

/* The checkers over the logged sections. Overlaps are not counted across
 * the windows [loss_at, loss_done] in which servers lost data (two
 * windows; 0 = none): there only fencing is promised. */
static void check_sections(int kills, int holder_stops, int server_pauses, int restarts,
                           int64_t restart_at, int64_t restart_done, int64_t loss2_at,
                           int64_t loss2_done)
{
    int n = atomic_load(&sh->n);
    if (n > MAX_SECTIONS)
        n = MAX_SECTIONS;
    qsort(sh->s, (size_t)n, sizeof sh->s[0], cmp_start);
    int order_violations = 0, rejected_valid = 0, overlaps = 0, valid = 0, written = 0;
    for (int i = 0; i < n; i++) {
        section *a = &sh->s[i];
        valid += a->valid;
        written += a->written;
        rejected_valid += a->rejected_while_valid;
        if (i > 0 && a->token <= sh->s[i - 1].token && sh->s[i - 1].valid && a->valid)
            order_violations++;
        if (!a->valid)
            continue;
        for (int j = i + 1; j < n && sh->s[j].start_ns < a->end_ns; j++) {
            section *b = &sh->s[j];
            int across_loss =
                (restart_at && a->start_ns < restart_done && b->end_ns > restart_at) ||
                (loss2_at && a->start_ns < loss2_done && b->end_ns > loss2_at);
            if (b->valid && !across_loss)
                overlaps++;
        }
    }
    char wbuf[32] = "";
    dh_cmd_str(wbuf, sizeof wbuf, store, 0, "GET writes");
    long long store_writes = strtoll(wbuf, NULL, 10);
    print_message("torture: %d sections (%d valid, %d fenced writes, store counted %lld); "
                  "faults: %d kill -9, %d holder SIGSTOP, %d server pauses, "
                  "%d restart with data loss; violations: %d token order, "
                  "%d rejected while valid, %d overlaps\n",
                  n, valid, written, (long long)store_writes, kills, holder_stops, server_pauses,
                  restarts, order_violations, rejected_valid, overlaps);
    assert_true(n > 50);
    assert_true(atomic_load(&sh->n) <= MAX_SECTIONS);

    assert_int_equal(order_violations, 0);
    assert_int_equal(rejected_valid, 0);
    assert_int_equal(overlaps, 0);
    /* a worker killed with -9 may have written without logging its section */
    assert_true(store_writes >= written && store_writes <= written + kills);
}

static void test_torture(void **state)
{
    (void)state;
    locks_srv = dh_redis_start(NULL);
    store = dh_redis_start(NULL);
    assert_non_null(locks_srv);
    assert_non_null(store);
    snprintf(lock_url, sizeof lock_url, "%s", locks_srv->url);
    pid_t pids[WORKERS];
    start_workers(pids);

    int kills = 0, holder_stops = 0, server_pauses = 0, restarts = 0;
    int64_t restart_at = 0, restart_done = 0;
    int64_t t0 = dh_now_ms(), phase = 0;
    while (dh_now_ms() - t0 < RUN_MS) {
        int64_t el = dh_now_ms() - t0;
        if (el > 1500 && phase == 0) { /* kill -9 a worker (likely holding), replace it */
            kill(pids[0], SIGKILL);
            int st;
            assert_int_equal(dh_waitpid(pids[0], &st, 10000), 1);
            pids[0] = spawn_worker(0);
            kills++;
            phase++;
        } else if (el > 3000 && phase == 1) { /* a holder stopped past its TTL */
            kill(pids[1], SIGSTOP);
            holder_stops++;
            phase++;
        } else if (el > 3000 + 3 * TTL_MS && phase == 2) {
            kill(pids[1], SIGCONT);
            phase++;
        } else if (el > 5500 && phase == 3) { /* the lock server paused briefly */
            dh_redis_pause(locks_srv);
            server_pauses++;
            phase++;
        } else if (el > 5500 + TTL_MS / 3 && phase == 4) {
            dh_redis_resume(locks_srv);
            phase++;
        } else if (el > 7000 && phase == 5) { /* paused past the TTL */
            dh_redis_pause(locks_srv);
            server_pauses++;
            phase++;
        } else if (el > 7000 + 2 * TTL_MS && phase == 6) {
            dh_redis_resume(locks_srv);
            phase++;
        } else if (el > 9000 && phase == 7) { /* restart, data lost */
            restart_at = mono_ns();
            assert_int_equal(dh_redis_restart(locks_srv), 0);
            restart_done = mono_ns();
            restarts++;
            phase++;
        }
        struct timespec ts = { 0, 20 * 1000000 }; /* the injector's own pacing */
        nanosleep(&ts, NULL);
    }
    atomic_store(&sh->stop, 1);
    for (int i = 0; i < WORKERS; i++) {
        int st;
        assert_int_equal(dh_waitpid(pids[i], &st, 10000), 1);
    }

    assert_int_equal(kills + holder_stops + restarts, 3);
    assert_int_equal(server_pauses, 2);
    check_sections(kills, holder_stops, server_pauses, restarts, restart_at, restart_done, 0, 0);
    munmap(sh, sizeof *sh);
    dh_redis_stop(locks_srv);
    dh_redis_stop(store);
    dh_cleanup();
}

/* Redlock over five masters: kill -9 and restart (empty) a minority, then
 * a majority, while the workers go on. With a majority down acquisitions
 * fail (EQUORUM) and nothing is granted; fencing holds throughout. */
static void test_torture_redlock(void **state)
{
    (void)state;
    enum { M = 5 };
    dh_redis *rl[M];
    lock_url[0] = '\0';
    for (int i = 0; i < M; i++) {
        rl[i] = dh_redis_start(NULL);
        assert_non_null(rl[i]);
        size_t len = strlen(lock_url);
        snprintf(lock_url + len, sizeof lock_url - len, "%s%s", i ? "," : "", rl[i]->url);
    }
    store = dh_redis_start(NULL);
    assert_non_null(store);
    pid_t pids[WORKERS];
    start_workers(pids);
    int64_t loss1_at = 0, loss1_done = 0, loss2_at = 0, loss2_done = 0, majority_back = 0;
    int minority = 0, majority = 0;
    int64_t t0 = dh_now_ms(), phase = 0;
    while (dh_now_ms() - t0 < 9000) {
        int64_t el = dh_now_ms() - t0;
        if (el > 1500 && phase == 0) { /* a minority dies */
            loss1_at = mono_ns();
            dh_redis_kill9(rl[0]);
            dh_redis_kill9(rl[1]);
            minority++;
            phase++;
        } else if (el > 3000 && phase == 1) { /* ...and comes back empty */
            assert_int_equal(dh_redis_restart(rl[0]), 0);
            assert_int_equal(dh_redis_restart(rl[1]), 0);
            loss1_done = mono_ns() + (int64_t)TTL_MS * 1000000;
            phase++;
        } else if (el > 4500 && phase == 2) { /* a majority dies */
            loss2_at = mono_ns();
            for (int i = 2; i < M; i++)
                dh_redis_kill9(rl[i]);
            majority++;
            phase++;
        } else if (el > 6000 && phase == 3) {
            majority_back = mono_ns();
            for (int i = 2; i < M; i++)
                assert_int_equal(dh_redis_restart(rl[i]), 0);
            loss2_done = mono_ns() + (int64_t)TTL_MS * 1000000;
            phase++;
        }
        struct timespec ts = { 0, 20 * 1000000 }; /* the injector's own pacing */
        nanosleep(&ts, NULL);
    }
    atomic_store(&sh->stop, 1);
    for (int i = 0; i < WORKERS; i++) {
        int st;
        assert_int_equal(dh_waitpid(pids[i], &st, 15000), 1);
    }
    assert_int_equal(minority, 1);
    assert_int_equal(majority, 1);
    /* no acquisition while a majority was down */
    int during = 0;
    int n = atomic_load(&sh->n);
    for (int i = 0; i < n && i < MAX_SECTIONS; i++)
        if (sh->s[i].start_ns > loss2_at + 50000000 && sh->s[i].start_ns < majority_back)
            during++;
    print_message("redlock torture: a minority (2 of 5) killed and restarted empty, then a "
                  "majority (3 of 5); sections started while the majority was down: %d\n",
                  during);
    assert_int_equal(during, 0);
    check_sections(0, 0, 0, 2, loss1_at, loss1_done, loss2_at, loss2_done);
    munmap(sh, sizeof *sh);
    for (int i = 0; i < M; i++)
        dh_redis_stop(rl[i]);
    dh_redis_stop(store);
    dh_cleanup();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        dh_unit_test(test_torture),
        dh_unit_test(test_torture_redlock),
    };
    return cmocka_run_group_tests_name("torture", tests, NULL, NULL);
}
