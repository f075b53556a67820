/*
 * bench.c — dlock's benchmark, always side by side with a floor measured in
 * the same run against the same Redis server.
 *
 *   1. uncontended acquire+release pairs/s on one connection:
 *      floor = bare hiredis, SET NX PX and a compare-and-delete script;
 *      with the server's CPU (INFO cpu) and command time (INFO
 *      commandstats) per pair for both.
 *   2. contended: P processes, one key, critical section = GET + SET of a
 *      counter: sections/s, acquire wait p50/p99/max, Jain's fairness index
 *      over per-worker counts, counter checked exact. Run for dlock (fair),
 *      dlock (fair=0) and a polling SET NX lock (the floor most libraries use:
 *      retry every 10 ms).
 *   3. handoff latency: A releases, B (already waiting) returns from acquire;
 *      median compared with the median PING round trip.
 *   4. renewal cost: N (10k, 100k) held auto-renewed locks on one client;
 *      round trips per watchdog tick, client and server memory per held
 *      lock, what is left after releasing them all; server memory per
 *      queued waiter; threads sharing one client vs a client per thread.
 *   5. (with --redlock P2,P3,P4,P5) Redlock over 5 masters (PORT and the
 *      four others): acquire+release latency as a ratio to bare hiredis
 *      doing the same two parallel rounds on the same masters, and to one
 *      server, rounds alternating in the same run; parallel rounds per
 *      pair counted from the client's statistics.
 *
 * Usage: dlock_bench HOST PORT [--quick] [--redlock P2,P3,P4,P5]. Needs
 * Redis servers it may flush.
 */
#include <hiredis/hiredis.h>
#include <malloc.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <pthread.h>
#include <unistd.h>

#include "client.h"
#include "dlock.h"

static const char *host;
static int port;
static char url[256];

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i];
}

static redisContext *rconnect(void)
{
    redisContext *c = redisConnect(host, port);
    if (!c || c->err) {
        fprintf(stderr, "bench: cannot connect to %s:%d\n", host, port);
        exit(1);
    }
    return c;
}

static dlock_client *dconnect(void)
{
    dlock_client *c;
    if (dlock_client_open(&c, url, NULL) != 0) {
        fprintf(stderr, "bench: dlock_client_open: %s\n", dlock_last_errmsg());
        exit(1);
    }
    return c;
}

static void flushall(void)
{
    redisContext *c = rconnect();
    freeReplyObject(redisCommand(c, "FLUSHALL"));
    redisFree(c);
}

/* ---------------------------------------------------------------- 1 */

/* The floor: the simplest correct lock through bare hiredis, as most
 * libraries do it: SET NX PX to take it, a compare-and-delete script to
 * give it back. */
static const char cad_src[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

static double floor_pairs(int n)
{
    redisContext *c = rconnect();
    redisReply *r1 = redisCommand(c, "SCRIPT LOAD %s", cad_src);
    char sha_r[64];
    snprintf(sha_r, sizeof sha_r, "%s", r1->str);
    freeReplyObject(r1);
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        char tok[40];
        snprintf(tok, sizeof tok, "%032x", i);
        redisReply *a = redisCommand(c, "SET floor:lock %s NX PX 30000", tok);
        if (!a || a->type != REDIS_REPLY_STATUS) {
            fprintf(stderr, "bench: floor acquire failed: %s\n", a && a->str ? a->str : "?");
            exit(1);
        }
        freeReplyObject(a);
        redisReply *r = redisCommand(c, "EVALSHA %s 1 floor:lock %s", sha_r, tok);
        freeReplyObject(r);
    }
    double dt = now_s() - t0;
    redisFree(c);
    return n / dt;
}

/* The server's own cost so far: CPU seconds of its main thread (INFO cpu)
 * and microseconds spent in commands (INFO commandstats; the INFO calls
 * themselves excluded). */
typedef struct {
    double cpu_s, cmd_us;
} usage;

static usage server_usage(void)
{
    usage u = { 0, 0 };
    redisContext *c = rconnect();
    redisReply *r = redisCommand(c, "INFO cpu");
    const char *k1 = "used_cpu_sys_main_thread:", *k2 = "used_cpu_user_main_thread:";
    if (r && r->type == REDIS_REPLY_STRING) {
        const char *p;
        if ((p = strstr(r->str, k1)))
            u.cpu_s += atof(p + strlen(k1));
        if ((p = strstr(r->str, k2)))
            u.cpu_s += atof(p + strlen(k2));
    }
    freeReplyObject(r);
    r = redisCommand(c, "INFO commandstats");
    if (r && r->type == REDIS_REPLY_STRING) {
        for (const char *p = r->str; (p = strstr(p, "cmdstat_")); p++) {
            const char *us = strstr(p, ",usec=");
            const char *eol = strchr(p, '\n');
            if (!us || (eol && us > eol))
                continue;
            if (strncmp(p, "cmdstat_info:", 13) != 0)
                u.cmd_us += atof(us + 6);
        }
    }
    freeReplyObject(r);
    redisFree(c);
    return u;
}

static double dlock_pairs_metrics(int n, int metrics_on)
{
    dlock_client *c = dconnect();
    c->metrics.off = !metrics_on;
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        dlock_lock *l;
        if (dlock_acquire(&l, c, "pairs", NULL) != 0) {
            fprintf(stderr, "bench: acquire: %s\n", dlock_last_errmsg());
            exit(1);
        }
        dlock_release(l);
    }
    double dt = now_s() - t0;
    dlock_client_close(c);
    return n / dt;
}

static double dlock_pairs(int n)
{
    return dlock_pairs_metrics(n, 1);
}

static double ping_rtt_median(int n)
{
    redisContext *c = rconnect();
    double *v = malloc(sizeof *v * (size_t)n);
    for (int i = 0; i < n; i++) {
        double t0 = now_s();
        freeReplyObject(redisCommand(c, "PING"));
        v[i] = now_s() - t0;
    }
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    double m = pct(v, (size_t)n, 0.5);
    free(v);
    redisFree(c);
    return m;
}

/* ---------------------------------------------------------------- 2 */

enum { KIND_FAIR, KIND_UNFAIR, KIND_POLL };

#define MAX_SAMPLES 200000

typedef struct shared {
    double waits[MAX_SAMPLES];
    int nwaits;
    int per_worker[64];
    pthread_mutex_t mu;
} shared;

/* One contended worker process: sections until `until`. */
static void worker(shared *sh, int id, int kind, double until)
{
    redisContext *rc = rconnect();
    dlock_client *c = kind == KIND_POLL ? NULL : dconnect();
    dlock_lock_opts o = DLOCK_LOCK_OPTS_INIT;
    o.fair = kind == KIND_FAIR;
    double *local = malloc(sizeof *local * MAX_SAMPLES);
    int nl = 0, count = 0;
    char tok[40];
    snprintf(tok, sizeof tok, "worker-%d", id);
    while (now_s() < until) {
        double t0 = now_s();
        dlock_lock *l = NULL;
        if (kind == KIND_POLL) {
            for (;;) {
                redisReply *r = redisCommand(rc, "SET poll:lock %s NX PX 30000", tok);
                int ok = r && r->type == REDIS_REPLY_STATUS;
                freeReplyObject(r);
                if (ok)
                    break;
                usleep(10000);
            }
        } else if (dlock_acquire(&l, c, "contended", &o) != 0) {
            fprintf(stderr, "bench: worker acquire: %s\n", dlock_last_errmsg());
            exit(1);
        }
        double waited = now_s() - t0;
        redisReply *g = redisCommand(rc, "GET counter");
        long v = g && g->type == REDIS_REPLY_STRING ? strtol(g->str, NULL, 10) : 0;
        freeReplyObject(g);
        freeReplyObject(redisCommand(rc, "SET counter %ld", v + 1));
        if (kind == KIND_POLL)
            freeReplyObject(redisCommand(rc, "DEL poll:lock"));
        else
            dlock_release(l);
        if (nl < MAX_SAMPLES)
            local[nl++] = waited;
        count++;
    }
    pthread_mutex_lock(&sh->mu);
    for (int i = 0; i < nl && sh->nwaits < MAX_SAMPLES; i++)
        sh->waits[sh->nwaits++] = local[i];
    sh->per_worker[id] = count;
    pthread_mutex_unlock(&sh->mu);
    free(local);
    dlock_client_close(c);
    redisFree(rc);
}

static void contended(const char *name, int kind, int procs, double secs)
{
    flushall();
    shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    memset(sh, 0, sizeof *sh);
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutex_init(&sh->mu, &a);
    double start = now_s(), until = start + secs;
    for (int i = 0; i < procs; i++)
        if (fork() == 0) {
            worker(sh, i, kind, until);
            _exit(0);
        }
    for (int i = 0; i < procs; i++)
        wait(NULL);
    double dt = now_s() - start;
    long total = 0;
    double sum = 0, sumsq = 0;
    for (int i = 0; i < procs; i++) {
        total += sh->per_worker[i];
        sum += sh->per_worker[i];
        sumsq += (double)sh->per_worker[i] * sh->per_worker[i];
    }
    double jain = sumsq > 0 ? sum * sum / (procs * sumsq) : 0;
    redisContext *rc = rconnect();
    redisReply *g = redisCommand(rc, "GET counter");
    long counter = g && g->type == REDIS_REPLY_STRING ? strtol(g->str, NULL, 10) : 0;
    freeReplyObject(g);
    redisFree(rc);
    qsort(sh->waits, (size_t)sh->nwaits, sizeof sh->waits[0], cmp_double);
    printf("  %-22s %8.0f sections/s  wait p50 %7.3f ms  p99 %8.3f ms  max %8.3f ms  fairness %.4f  counter %ld/%ld %s\n",
           name, total / dt, pct(sh->waits, (size_t)sh->nwaits, 0.5) * 1e3,
           pct(sh->waits, (size_t)sh->nwaits, 0.99) * 1e3,
           sh->nwaits ? sh->waits[sh->nwaits - 1] * 1e3 : 0, jain, counter, total,
           counter == total ? "exact" : "WRONG");
    fflush(stdout);
    munmap(sh, sizeof *sh);
}

/* ---------------------------------------------------------------- 3 */

typedef struct handoff_ctx {
    dlock_client *b;
    double t_ret;
    int ok;
} handoff_ctx;

static void *waiter_thread(void *arg)
{
    handoff_ctx *h = arg;
    dlock_lock *l;
    h->ok = dlock_acquire(&l, h->b, "handoff", NULL) == 0;
    h->t_ret = now_s();
    if (h->ok)
        dlock_release(l);
    return NULL;
}

static double handoff_median(int n)
{
    dlock_client *a = dconnect(), *b = dconnect();
    double *v = malloc(sizeof *v * (size_t)n);
    for (int i = 0; i < n; i++) {
        dlock_lock *l;
        if (dlock_acquire(&l, a, "handoff", NULL) != 0)
            exit(1);
        handoff_ctx h = {b, 0, 0};
        pthread_t t;
        pthread_create(&t, NULL, waiter_thread, &h);
        /* wait until B is queued (and subscribed: it queues first) */
        dlock_info info;
        for (int k = 0; k < 2000; k++) {
            if (dlock_inspect(&info, a, "handoff") == 0 && info.waiters >= 1)
                break;
            usleep(500);
        }
        usleep(2000); /* B's subscription round trip follows its queueing */
        double t0 = now_s();
        dlock_release(l);
        pthread_join(t, NULL);
        v[i] = h.t_ret - t0;
    }
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    double m = pct(v, (size_t)n, 0.5);
    free(v);
    dlock_client_close(a);
    dlock_client_close(b);
    return m;
}

/* ---------------------------------------------------------------- 4 */

/* Bytes of heap in use by this process (glibc). */
static size_t heap_used(void)
{
    struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
}

/* The server's used_memory (INFO memory). */
static long long server_used_memory(void)
{
    redisContext *c = rconnect();
    redisReply *r = redisCommand(c, "INFO memory");
    long long v = 0;
    const char *p = r && r->type == REDIS_REPLY_STRING ? strstr(r->str, "used_memory:") : NULL;
    if (p)
        v = atoll(p + strlen("used_memory:"));
    freeReplyObject(r);
    redisFree(c);
    return v;
}

static void renewal_cost(int n)
{
    flushall();
    dlock_client *c = dconnect();
    dlock_lock **locks = malloc(sizeof *locks * (size_t)n);
    dlock_lock_opts o = DLOCK_LOCK_OPTS_INIT;
    o.ttl_ms = 3000; /* renewed every second */
    size_t heap0 = heap_used();
    long long srv0 = server_used_memory();
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        char key[32];
        snprintf(key, sizeof key, "renew:%d", i);
        if (dlock_acquire(&locks[i], c, key, &o) != 0) {
            fprintf(stderr, "bench: %s\n", dlock_last_errmsg());
            exit(1);
        }
    }
    double acq = now_s() - t0;
    size_t heap1 = heap_used();
    long long srv1 = server_used_memory();
    dlock_client_stats s0, s1;
    usleep(1500000); /* past the first renewals, which overlap the acquisitions */
    dlock_stats(&s0, c);
    usleep(4500000);
    dlock_stats(&s1, c);
    uint64_t renewals = s1.renewals - s0.renewals;
    uint64_t rts = s1.round_trips - s0.round_trips;
    double ticks = (double)renewals / n;
    int held = 0;
    for (int i = 0; i < n; i++)
        held += dlock_is_held(locks[i]);
    printf("  %d locks (acquired in %.2f s), steady state: %llu renewals, %llu round trips in 4.5 s = %.2f round trips per tick"
           " (%.1f renewal rounds), all still held: %s\n",
           n, acq, (unsigned long long)renewals, (unsigned long long)rts,
           ticks > 0 ? rts / ticks : 0, ticks, held == n ? "yes" : "NO");
    printf("  memory per held lock: client %.0f bytes (heap in use, mallinfo2), server %.0f bytes "
           "(INFO used_memory)\n",
           (double)(heap1 - heap0) / n, (double)(srv1 - srv0) / n);
    for (int i = 0; i < n; i++)
        dlock_release(locks[i]);
    free(locks);
    dlock_client_close(c);
    redisContext *r = rconnect();
    redisReply *keys = redisCommand(r, "KEYS *");
    size_t fences = 0, other = 0;
    for (size_t i = 0; keys && i < keys->elements; i++) {
        const char *k = keys->element[i]->str;
        size_t len = strlen(k);
        if (len > 6 && strcmp(k + len - 6, ":fence") == 0)
            fences++;
        else
            other++;
    }
    freeReplyObject(keys);
    redisReply *ttl = redisCommand(r, "PTTL dlock:{renew:0}:fence");
    printf("  left after releasing all %d: %zu fence keys (expiring: PTTL %lld ms), %zu other keys\n", n,
           fences, ttl ? ttl->integer : -9, other);
    freeReplyObject(ttl);
    redisFree(r);
}

/* Server memory per queued waiter: W threads wait (each on a connection of
 * its own, as a blocked waiter does) for one held key; MEMORY USAGE of the
 * key's queue and its entries' info, divided by W. */
typedef struct {
    dlock_client *c;
    int ok;
} wait_arg;

static void *queued_waiter(void *arg)
{
    wait_arg *w = arg;
    dlock_lock_opts o = DLOCK_LOCK_OPTS_INIT;
    o.wait_ms = 20000;
    dlock_lock *l;
    w->ok = dlock_acquire(&l, w->c, "queued", &o) == 0;
    if (w->ok)
        dlock_release(l);
    return NULL;
}

static void waiter_memory(int w)
{
    flushall();
    dlock_client *holder = dconnect(), *c = dconnect();
    dlock_lock *l;
    if (dlock_acquire(&l, holder, "queued", NULL) != 0)
        exit(1);
    pthread_t *t = malloc(sizeof *t * (size_t)w);
    wait_arg *a = malloc(sizeof *a * (size_t)w);
    for (int i = 0; i < w; i++) {
        a[i] = (wait_arg){ c, 0 };
        pthread_create(&t[i], NULL, queued_waiter, &a[i]);
    }
    dlock_info info = { 0 };
    for (int k = 0; k < 4000 && info.waiters < w; k++) {
        dlock_inspect(&info, holder, "queued");
        usleep(1000);
    }
    redisContext *r = rconnect();
    long long bytes = 0;
    const char *names[] = { "dlock:{queued}:queue", "dlock:{queued}:qinfo" };
    for (int i = 0; i < 2; i++) {
        redisReply *m = redisCommand(r, "MEMORY USAGE %s SAMPLES 0", names[i]);
        bytes += m && m->type == REDIS_REPLY_INTEGER ? m->integer : 0;
        freeReplyObject(m);
    }
    redisReply *lm = redisCommand(r, "MEMORY USAGE dlock:{queued}:lock");
    printf("  %lld waiters queued: %.0f bytes each (MEMORY USAGE of the queue and its info); the "
           "held lock's key: %lld bytes\n",
           (long long)info.waiters, info.waiters ? (double)bytes / info.waiters : 0,
           lm ? lm->integer : -1);
    freeReplyObject(lm);
    redisFree(r);
    dlock_release(l);
    int served = 0;
    for (int i = 0; i < w; i++) {
        pthread_join(t[i], NULL);
        served += a[i].ok;
    }
    printf("  then all %d served in turn: %s\n", w, served == w ? "yes" : "NO");
    free(t);
    free(a);
    dlock_client_close(c);
    dlock_client_close(holder);
}

/* Threads sharing one client vs as many clients, each thread taking and
 * giving back its own key for `secs`: total pairs/s. */
typedef struct {
    dlock_client *c;
    int id;
    double until;
    long pairs;
} scale_arg;

static void *scale_worker(void *arg)
{
    scale_arg *s = arg;
    char key[32];
    snprintf(key, sizeof key, "scale:%d", s->id);
    dlock_lock_opts o = DLOCK_LOCK_OPTS_INIT;
    while (now_s() < s->until) {
        dlock_lock *l;
        if (dlock_acquire(&l, s->c, key, &o) != 0)
            exit(1);
        dlock_release(l);
        s->pairs++;
    }
    return NULL;
}

static double scale_run(int threads, int one_client, double secs)
{
    dlock_client *one = one_client ? dconnect() : NULL;
    pthread_t t[16];
    scale_arg a[16];
    double until = now_s() + secs;
    for (int i = 0; i < threads; i++) {
        a[i] = (scale_arg){ one_client ? one : dconnect(), i, until, 0 };
        pthread_create(&t[i], NULL, scale_worker, &a[i]);
    }
    long total = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        total += a[i].pairs;
        if (!one_client)
            dlock_client_close(a[i].c);
    }
    if (one)
        dlock_client_close(one);
    return total / secs;
}

static void scaling(double secs)
{
    printf("  threads  one shared client  one client each  shared/each\n");
    for (int n = 1; n <= 16; n *= 2) {
        double sh = scale_run(n, 1, secs), each = scale_run(n, 0, secs);
        printf("  %7d  %11.0f pairs/s  %9.0f pairs/s  %11.2f\n", n, sh, each, sh / each);
    }
}

/* Median acquire+release latency (seconds) over n pairs on `u`. */
static double pair_latency(const char *u, int n)
{
    dlock_client *c;
    if (dlock_client_open(&c, u, NULL) != 0) {
        fprintf(stderr, "bench: %s: %s\n", u, dlock_last_errmsg());
        exit(1);
    }
    double *v = malloc(sizeof *v * (size_t)n);
    for (int i = 0; i < n; i++) {
        double t0 = now_s();
        dlock_lock *l;
        if (dlock_acquire(&l, c, "latency", NULL) != 0) {
            fprintf(stderr, "bench: %s\n", dlock_last_errmsg());
            exit(1);
        }
        dlock_release(l);
        v[i] = now_s() - t0;
    }
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    double m = pct(v, (size_t)n, 0.5);
    free(v);
    dlock_client_close(c);
    return m;
}

/* The Redlock floor: bare hiredis doing the same two rounds per pair on
 * the same masters, each round sent to all of them before any reply is
 * read (SET NX PX to grant, the compare-and-delete script to release).
 * Returns the median latency per pair (seconds). */
static double fanout_floor_latency(const char *others, int n)
{
    redisContext *c[5];
    int m = 0;
    c[m++] = rconnect();
    for (const char *p = others; *p && m < 5;) {
        c[m++] = redisConnect(host, atoi(p));
        const char *e = strchr(p, ',');
        p = e ? e + 1 : p + strlen(p);
    }
    for (int i = 0; i < m; i++)
        if (!c[i] || c[i]->err) {
            fprintf(stderr, "bench: cannot connect to a Redlock master\n");
            exit(1);
        }
    double *v = malloc(sizeof *v * (size_t)n);
    for (int k = 0; k < n; k++) {
        char tok[40];
        snprintf(tok, sizeof tok, "%032x", k);
        double t0 = now_s();
        for (int round = 0; round < 2; round++) {
            for (int i = 0; i < m; i++) {
                if (round == 0)
                    redisAppendCommand(c[i], "SET fanout:lock %s NX PX 30000", tok);
                else
                    redisAppendCommand(c[i], "EVAL %s 1 fanout:lock %s", cad_src, tok);
                int done = 0;
                while (!done)
                    if (redisBufferWrite(c[i], &done) != REDIS_OK)
                        exit(1);
            }
            for (int i = 0; i < m; i++) {
                redisReply *r;
                if (redisGetReply(c[i], (void **)&r) != REDIS_OK)
                    exit(1);
                freeReplyObject(r);
            }
        }
        v[k] = now_s() - t0;
    }
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    double med = pct(v, (size_t)n, 0.5);
    free(v);
    for (int i = 0; i < m; i++)
        redisFree(c[i]);
    return med;
}

/* Parallel rounds per acquire+release on `u` (n pairs): the client's round
 * trips divided by its nodes. */
static double rounds_per_pair(const char *u, int nodes, int n)
{
    dlock_client *c;
    if (dlock_client_open(&c, u, NULL) != 0)
        exit(1);
    dlock_client_stats s0, s1;
    dlock_lock *l;
    dlock_acquire(&l, c, "rounds", NULL); /* warm: scripts loaded, connections open */
    dlock_release(l);
    dlock_stats(&s0, c);
    for (int i = 0; i < n; i++) {
        if (dlock_acquire(&l, c, "rounds", NULL) != 0)
            exit(1);
        dlock_release(l);
    }
    dlock_stats(&s1, c);
    dlock_client_close(c);
    return (double)(s1.round_trips - s0.round_trips) / nodes / n;
}

static void redlock_ratio(const char *others, int n)
{
    char rl[512];
    size_t len = (size_t)snprintf(rl, sizeof rl, "%s", url);
    for (const char *p = others; *p;) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        len += (size_t)snprintf(rl + len, sizeof rl - len, ",redis://%s:%.*s", host, (int)l, p);
        p += l + (e ? 1 : 0);
    }
    double s[5], r[5], q[5], fl[5], fq[5];
    for (int i = 0; i < 5; i++) {
        s[i] = pair_latency(url, n);
        r[i] = pair_latency(rl, n);
        fl[i] = fanout_floor_latency(others, n);
        q[i] = r[i] / s[i];
        fq[i] = r[i] / fl[i];
    }
    qsort(s, 5, sizeof s[0], cmp_double);
    qsort(r, 5, sizeof r[0], cmp_double);
    qsort(q, 5, sizeof q[0], cmp_double);
    qsort(fl, 5, sizeof fl[0], cmp_double);
    qsort(fq, 5, sizeof fq[0], cmp_double);
    printf("  single server: median %.1f us per acquire+release\n"
           "  Redlock, 5 masters: median %.1f us per acquire+release\n"
           "  floor: bare hiredis, the same 2 rounds (SET NX PX, compare-and-delete) to the 5 masters: "
           "median %.1f us\n"
           "  ratio Redlock/floor per round: median %.2f (min %.2f, max %.2f)\n"
           "  ratio Redlock/single per round: median %.2f (min %.2f, max %.2f)\n"
           "  parallel rounds per acquire+release (counted, steady state): Redlock %.2f, single %.2f\n",
           s[2] * 1e6, r[2] * 1e6, fl[2] * 1e6, fq[2], fq[0], fq[4], q[2], q[0], q[4],
           rounds_per_pair(rl, 5, 200), rounds_per_pair(url, 1, 200));
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s HOST PORT [--quick]\n", argv[0]);
        return 64;
    }
    host = argv[1];
    port = atoi(argv[2]);
    int quick = 0;
    const char *redlock = NULL;
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            quick = 1;
        else if (strcmp(argv[i], "--redlock") == 0 && i + 1 < argc)
            redlock = argv[++i];
    }
    snprintf(url, sizeof url, "redis://%s:%d", host, port);
    signal(SIGPIPE, SIG_IGN);
    int pairs = quick ? 2000 : 20000;
    double secs = quick ? 2 : 5;

    flushall();
    printf("dlock %s benchmark against redis %s:%d\n", dlock_version(), host, port);
    double rtt = ping_rtt_median(2000);
    printf("PING round trip median: %.1f us\n", rtt * 1e6);

    printf("1. uncontended acquire+release pairs/s (one connection), 7 alternating rounds\n");
    double fr[7], dr[7], rr[7];
    usage fu = { 0, 0 }, du = { 0, 0 };
    for (int i = 0; i < 7; i++) {
        usage u0 = server_usage();
        fr[i] = floor_pairs(pairs / 7);
        usage u1 = server_usage();
        dr[i] = dlock_pairs(pairs / 7);
        usage u2 = server_usage();
        rr[i] = dr[i] / fr[i];
        fu.cpu_s += u1.cpu_s - u0.cpu_s;
        fu.cmd_us += u1.cmd_us - u0.cmd_us;
        du.cpu_s += u2.cpu_s - u1.cpu_s;
        du.cmd_us += u2.cmd_us - u1.cmd_us;
    }
    double np = 7.0 * (pairs / 7);
    qsort(fr, 7, sizeof fr[0], cmp_double);
    qsort(dr, 7, sizeof dr[0], cmp_double);
    qsort(rr, 7, sizeof rr[0], cmp_double);
    printf("  floor (bare hiredis: SET NX PX, compare-and-delete script): median %8.0f pairs/s\n"
           "  dlock (dlock_acquire, dlock_release; fair, auto-renew):     median %8.0f pairs/s\n"
           "  ratio dlock/floor per round: median %.3f (min %.3f, max %.3f)\n",
           fr[3], dr[3], rr[3], rr[0], rr[6]);
    printf("  server CPU per pair (INFO cpu, main thread): floor %.1f us, dlock %.1f us: %.2fx\n"
           "  server command time per pair (INFO commandstats): floor %.1f us, dlock %.1f us\n",
           fu.cpu_s * 1e6 / np, du.cpu_s * 1e6 / np, du.cpu_s / fu.cpu_s, fu.cmd_us / np,
           du.cmd_us / np);

    printf("1b. metrics overhead: acquire+release pairs/s with metrics on and off, 7 alternating rounds\n");
    double on[7], off[7], mr[7];
    for (int i = 0; i < 7; i++) {
        on[i] = dlock_pairs_metrics(pairs / 7, 1);
        off[i] = dlock_pairs_metrics(pairs / 7, 0);
        mr[i] = on[i] / off[i];
    }
    qsort(on, 7, sizeof on[0], cmp_double);
    qsort(off, 7, sizeof off[0], cmp_double);
    qsort(mr, 7, sizeof mr[0], cmp_double);
    printf("  metrics on  median %8.0f pairs/s\n  metrics off median %8.0f pairs/s\n"
           "  ratio on/off per round: median %.3f (min %.3f, max %.3f)\n",
           on[3], off[3], mr[3], mr[0], mr[6]);

    printf("2. contended: 8 processes, 1 key, GET+SET counter, %.0f s each\n", secs);
    contended("dlock (fair, default)", KIND_FAIR, 8, secs);
    contended("dlock (fair=0)", KIND_UNFAIR, 8, secs);
    contended("polling SET NX, 10 ms", KIND_POLL, 8, secs);

    printf("3. handoff latency (release by A -> acquire returns in B)\n");
    double h = handoff_median(quick ? 50 : 300);
    printf("  median %.1f us = %.2f PING round trips\n", h * 1e6, h / rtt);

    printf("4. renewal cost\n");
    renewal_cost(quick ? 2000 : 10000);
    if (!quick)
        renewal_cost(100000);
    printf("4b. server memory per queued waiter\n");
    waiter_memory(quick ? 20 : 100);
    printf("4c. scaling: threads sharing one client vs one client per thread, distinct keys, %.0f s each\n",
           secs / 2);
    scaling(secs / 2);
    if (redlock) {
        printf("5. Redlock over 5 masters vs one server, acquire+release latency, 5 alternating rounds\n");
        redlock_ratio(redlock, quick ? 300 : 2000);
    }
    return 0;
}
