/*
 * test_examples.c — the programs in examples/ (one per pattern, and the
 * recipes) run as the README shows them: several processes against one
 * private server, and what each promises holds. The mutex keeps a shared
 * counter exact; try-lock and timeout answer 75; dlock_with charges once
 * and the store refuses a stale token; the semaphore reaches its limit and
 * never passes it; the pool never gives one resource twice; transfers in
 * opposite lock orders neither deadlock nor lose money; readers share and
 * writers are alone; one leader at a time, a killed one replaced; a payment
 * is made once, and a holder paused past its TTL is refused by the fenced
 * store; stock is never oversold; a long job stops when its lock is taken;
 * the scheduler runs each tick once; each job is claimed once; the rate
 * limiter never lets more than PER calls into any interval.
 *
 * Design. The programs are the ones built in build/examples and run with
 * the harness's process helpers (their own process group, captured output,
 * a bound on every wait; an environment without DLOCK_* settings). They
 * check their own critical sections (a CONFLICT, DUPLICATE or VIOLATION
 * makes them exit 1); the test checks the totals they leave in their files
 * and print. Where a moment matters (four readers inside, a worker paused)
 * the test polls for it, bounded; timing is asserted only where it is the
 * contract (the rate limiter's window) or as generous progress (a killed
 * leader is replaced within its TTL plus 5 s). These checks used to live in
 * scripts/demo.sh, which now only shows the patterns.
 */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli_runner.h"

#ifndef DLOCK_BUILD_DIR
#error "DLOCK_BUILD_DIR must be defined by the build"
#endif

#define EX_DIR DLOCK_BUILD_DIR "/examples/"
#define ARGS(...) ((const char *const[]){ __VA_ARGS__, NULL })
#define MAX_GROUP 16
#define OUT_MAX (64 * 1024)

static dh_redis *srv;
static dlock_client *holder; /* the test's own client */

static int group_setup(void **state)
{
    (void)state;
    return dh_group_start_client(&srv, &holder, "examples-test");
}

/* ---------------------------------------------------------------- helpers */

/* Start examples/NAME with the server's URL and args (NULL-ended) in the
 * background; fails the test if it cannot start. */
static dh_proc *ex_start(const char *name, const char *const *args)
{
    char path[DH_PATH_MAX];
    const char *argv[16], *env[DH_CLI_MAX_ENV];
    int n = 0;
    snprintf(path, sizeof path, EX_DIR "%s", name);
    argv[n++] = path;
    argv[n++] = srv->url;
    for (; *args && n < 15; args++)
        argv[n++] = *args;
    argv[n] = NULL;
    dh_cli_make_env(env, NULL);
    dh_proc *p = dh_spawn(argv, env);
    if (!p)
        fail_msg("could not start %s", path);
    return p;
}

static char last_err[OUT_MAX]; /* the stderr of the last process ended */

/* Wait (30 s at most) for p, append its stdout to out (OUT_MAX), keep its
 * stderr in last_err, free it, and return its exit status. */
static int ex_end(dh_proc *p, char *out)
{
    static char o[OUT_MAX];
    int st = dh_proc_wait(p, 30000);
    dh_proc_output(p, o, sizeof o, last_err, sizeof last_err);
    dh_proc_free(p);
    size_t len = strlen(out);
    snprintf(out + len, OUT_MAX - len, "%s", o);
    return st;
}

/* Fail the test, with the output, unless the exit status is `want`. */
static void ex_expect(int got, int want, const char *out)
{
    if (got != want)
        fail_msg("exit status %d, want %d\nstdout:\n%s\nstderr:\n%s", got, want, out, last_err);
}

/* Run one example to completion: its exit status, its stdout in out. */
static int ex_run(const char *name, const char *const *args, char *out)
{
    out[0] = '\0';
    return ex_end(ex_start(name, args), out);
}

/* Processes started together and ended together. */
typedef struct ex_group {
    dh_proc *p[MAX_GROUP];
    int n;
} ex_group;

static void ex_add(ex_group *g, const char *name, const char *const *args)
{
    assert_true(g->n < MAX_GROUP);
    g->p[g->n++] = ex_start(name, args);
}

/* End every process of g; each must exit 0 (or 75, busy, if busy_ok).
 * Their stdout, concatenated, into out. Returns how many answered 75. */
static int ex_finish(ex_group *g, char *out, int busy_ok)
{
    int busy = 0;
    out[0] = '\0';
    for (int i = 0; i < g->n; i++) {
        int st = ex_end(g->p[i], out);
        if (st == 75 && busy_ok)
            busy++;
        else
            ex_expect(st, 0, out);
    }
    g->n = 0;
    return busy;
}

/* n copies of NAME with args, to the end. */
static void ex_many(int n, const char *name, const char *const *args, char *out)
{
    ex_group g = { .n = 0 };
    for (int i = 0; i < n; i++)
        ex_add(&g, name, args);
    ex_finish(&g, out, 0);
}

/* The sum of the numbers that follow each occurrence of `prefix`. */
static long sum_after(const char *text, const char *prefix)
{
    long sum = 0;
    for (const char *p = text; (p = strstr(p, prefix)) != NULL; p += strlen(prefix))
        sum += strtol(p + strlen(prefix), NULL, 10);
    return sum;
}

/* The number in the file at path (-1 if none). */
static long file_number(const char *path)
{
    char buf[64];
    return dh_read_file(buf, sizeof buf, path) > 0 ? strtol(buf, NULL, 10) : -1;
}

/* A file at path holding the text s; path made from name. */
static void make_file(char *path, size_t len, const char *name, const char *s)
{
    assert_int_equal(dh_tmpfile(path, len, name), 0);
    assert_int_equal(dh_write_file(path, s), 0);
}

/* The wall clock in microseconds (the examples print t_us in it). */
static long long wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

struct outwait {
    dh_proc *p;
    const char *needle;
};

/* p's stdout or stderr so far contains the needle. */
static int output_has(void *arg)
{
    static char o[OUT_MAX], e[OUT_MAX];
    struct outwait *w = arg;
    dh_proc_output(w->p, o, sizeof o, e, sizeof e);
    return strstr(o, w->needle) || strstr(e, w->needle);
}

static void wait_output(dh_proc *p, const char *needle)
{
    struct outwait w = { p, needle };
    if (!dh_wait_until(output_has, &w, 15000))
        fail_msg("never printed \"%s\"", needle);
}

/* ------------------------------------------------------- the basic patterns */

/* Six processes, 50 locked read-modify-write increments each. */
static void test_mutex_counter(void **state)
{
    (void)state;
    static char out[OUT_MAX];
    char counter[DH_PATH_MAX];
    assert_int_equal(dh_tmpfile(counter, sizeof counter, "counter"), 0);
    ex_many(6, "mutex_counter", ARGS(counter, "50"), out);
    assert_int_equal(file_number(counter), 300);
}

/* While the key is held, try-lock answers busy and a bounded wait gives
 * up; both exit 75. Free, try-lock claims it. */
static void test_trylock_and_timeout(void **state)
{
    (void)state;
    static char out[OUT_MAX];
    dlock_lock *l = NULL;
    dh_assert_rc(dlock_try_acquire(&l, holder, "ex:job:7", NULL), 0);
    ex_expect(ex_run("trylock", ARGS("ex:job:7"), out), 75, out);
    assert_non_null(strstr(out, "busy"));
    ex_expect(ex_run("timeout", ARGS("ex:job:7", "300"), out), 75, out);
    assert_non_null(strstr(out, "gave up"));
    dh_assert_rc(dlock_release(l), 0);
    ex_expect(ex_run("trylock", ARGS("ex:job:7"), out), 0, out);
    assert_non_null(strstr(out, "claimed ex:job:7"));
}

/* dlock_with: the payment is charged once; a late write with an old
 * token is refused by the fenced store. */
static void test_with_fn(void **state)
{
    (void)state;
    static char out[OUT_MAX];
    ex_expect(ex_run("with_fn", ARGS("42"), out), 0, out);
    assert_int_equal(dh_count_of(out, "charged 19.99"), 1);
    assert_non_null(strstr(out, "refused"));
}

/* Twelve workers, limit 3: the limit is reached and never exceeded. */
static void test_semaphore(void **state)
{
    (void)state;
    static char out[OUT_MAX];
    char st[DH_PATH_MAX];
    assert_int_equal(dh_tmpfile(st, sizeof st, "sem.state"), 0);
    ex_many(12, "semaphore", ARGS("ex:sem", "3", st, "200"), out);
    char buf[64];
    assert_true(dh_read_file(buf, sizeof buf, st) > 0);
    assert_string_equal(buf, "0 3\n"); /* none left inside; 3 at most, reached */
}

/* Eight workers over gpu0..gpu3: each uses one of them, all four were
 * busy at once (and none twice: the program exits 1 on a CONFLICT). */
static void test_resource_pool(void **state)
{
    (void)state;
    static char out[OUT_MAX];
    char dir[DH_PATH_MAX], all[DH_PATH_MAX + 16];
    assert_int_equal(dh_tmpdir(dir, sizeof dir, "pool"), 0);
    ex_many(8, "resource_pool", ARGS("ex:gpus", dir, "4", "200"), out);
    assert_int_equal(dh_count_of(out, ": using gpu"), 8);
    for (const char *p = out; (p = strstr(p, ": using gpu")) != NULL; p++)
        if (p[11] < '0' || p[11] > '3' || p[12] != ' ')
            fail_msg("a worker used a GPU outside gpu0..gpu3:\n%s", out);
    snprintf(all, sizeof all, "%s/all-busy", dir);
    assert_true(dh_file_exists(all));
}

/* Six processes move money between A and B, half locking A+B, half B+A:
 * no deadlock, and the balances match the transfers made. */
static void test_transfer(void **state)
{
    (void)state;
    static char out[OUT_MAX];
    char dir[DH_PATH_MAX], a[DH_PATH_MAX + 8], b[DH_PATH_MAX + 8];
    assert_int_equal(dh_tmpdir(dir, sizeof dir, "bank"), 0);
    snprintf(a, sizeof a, "%s/A", dir);
    snprintf(b, sizeof b, "%s/B", dir);
    assert_int_equal(dh_write_file(a, "1000\n"), 0);
    assert_int_equal(dh_write_file(b, "1000\n"), 0);
    ex_group g = { .n = 0 };
    for (int i = 0; i < 3; i++) {
        ex_add(&g, "transfer", ARGS(dir, "20", "a2b"));
        ex_add(&g, "transfer", ARGS(dir, "20", "b2a"));
    }
    ex_finish(&g, out, 0);
    long net = sum_after(out, "net moved A->B: "), done = 0, n;
    for (const char *l = out; (l = strstr(l, "transfer ")) != NULL; l++)
        if (sscanf(l, "transfer %*d: %ld transfers", &n) == 1)
            done += n;
    assert_int_equal(done, 120);
    assert_int_equal(file_number(a), 1000 - net);
    assert_int_equal(file_number(b), 1000 + net);
}

/* The rwlock state file "READERS WRITERS MAX_READERS" shows four readers
 * in at once. */
static int four_readers(void *path)
{
    char buf[64];
    long r, w, m;
    return dh_read_file(buf, sizeof buf, path) > 0 && sscanf(buf, "%ld %ld %ld", &r, &w, &m) == 3 &&
           m >= 4;
}

/* Four readers share the key; two writers (and two readers behind them)
 * come only then: each writer is alone, no reader beside a writer (the
 * program exits 1 on a VIOLATION). */
static void test_rwlock(void **state)
{
    (void)state;
    static char out[OUT_MAX];
    char st[DH_PATH_MAX];
    assert_int_equal(dh_tmpfile(st, sizeof st, "rw.state"), 0);
    ex_group g = { .n = 0 };
    for (int i = 0; i < 4; i++)
        ex_add(&g, "rwlock", ARGS("ex:catalog", "read", st, "200", "4"));
    if (!dh_wait_until(four_readers, st, 15000))
        fail_msg("four readers were never inside together");
    for (int i = 0; i < 2; i++) {
        ex_add(&g, "rwlock", ARGS("ex:catalog", "write", st, "100"));
        ex_add(&g, "rwlock", ARGS("ex:catalog", "read", st, "100"));
    }
    ex_finish(&g, out, 0);
    char buf[64];
    long r = -1, w = -1, m = -1;
    assert_true(dh_read_file(buf, sizeof buf, st) > 0);
    assert_int_equal(sscanf(buf, "%ld %ld %ld", &r, &w, &m), 3);
    assert_int_equal(r, 0);
    assert_int_equal(w, 0);
    assert_true(m >= 4);
    assert_int_equal(dh_count_of(out, "with 0 reader(s) and 1 writer(s) inside"), 2);
}

/* --------------------------------------------------------------- leaders */

/* One candidate's term: elected at, last work stamp (t_us). */
typedef struct term {
    unsigned long long term;
    long long elected_us, last_us;
} term;

static void parse_term(const char *out, term *t)
{
    const char *e = strstr(out, "elected term=");
    if (!e || sscanf(e, "elected term=%llu", &t->term) != 1)
        fail_msg("no election in:\n%s", out);
    const char *us = strstr(e, "t_us=");
    t->elected_us = t->last_us = us ? atoll(us + 5) : 0;
    for (const char *w = e; (w = strstr(w, "\nwork ")) != NULL; w++) {
        const char *wus = strstr(w, "t_us=");
        if (wus)
            t->last_us = atoll(wus + 5);
    }
}

static int cmp_term(const void *a, const void *b)
{
    const term *x = a, *y = b;
    return x->term < y->term ? -1 : x->term > y->term;
}

/* Three candidates; the leader is killed (SIGKILL, no resignation): the
 * others lead one at a time, terms increase, each leader's last work comes
 * before the next one's election, and the killed one is replaced within
 * its TTL (plus a generous 5 s). */
static void test_leader(void **state)
{
    (void)state;
    static char out[3][OUT_MAX];
    dh_proc *c1 = ex_start("leader", ARGS("ex:svc", "30000", "2000"));
    wait_output(c1, "elected");
    dh_proc *c2 = ex_start("leader", ARGS("ex:svc", "1000", "2000"));
    dh_proc *c3 = ex_start("leader", ARGS("ex:svc", "1000", "2000"));
    wait_output(c2, "waiting");
    wait_output(c3, "waiting");
    assert_int_equal(dh_proc_signal(c1, SIGKILL), 0);
    long long killed_us = wall_us();
    out[0][0] = out[1][0] = out[2][0] = '\0';
    ex_expect(ex_end(c1, out[0]), 128 + SIGKILL, out[0]);
    ex_expect(ex_end(c2, out[1]), 0, out[1]);
    ex_expect(ex_end(c3, out[2]), 0, out[2]);
    term t[3];
    for (int i = 0; i < 3; i++)
        parse_term(out[i], &t[i]);
    qsort(t, 3, sizeof t[0], cmp_term);
    for (int i = 1; i < 3; i++) {
        if (t[i].term <= t[i - 1].term || t[i].elected_us <= t[i - 1].last_us)
            fail_msg("term %llu (elected at %lld) overlaps term %llu (last work at %lld)",
                     t[i].term, t[i].elected_us, t[i - 1].term, t[i - 1].last_us);
    }
    long long took_ms = (t[1].elected_us - killed_us) / 1000;
    print_message("killed leader replaced after %lld ms (ttl 2000)\n", took_ms);
    assert_true(took_ms <= 2000 + 5000);
}

/* ------------------------------------------------------------------ recipes */

/* Five workers race for one payment: paid once; the others were busy or
 * found it paid. */
static void test_payment_once(void **state)
{
    (void)state;
    static char out[OUT_MAX];
    char store[DH_PATH_MAX];
    assert_int_equal(dh_tmpfile(store, sizeof store, "pay7.store"), 0);
    ex_group g = { .n = 0 };
    for (int i = 0; i < 5; i++)
        ex_add(&g, "recipe_payment", ARGS("7", store));
    ex_finish(&g, out, 1);
    assert_int_equal(dh_count_of(out, "paid with token"), 1);
}

static int stopped(void *proc)
{
    return dh_pid_state(dh_proc_pid(proc)) == 'T';
}

struct payer {
    const char *store;
    int st;
    char *out;
};

/* One attempt of worker B: done unless it was busy (75). */
static int pay_tried(void *arg)
{
    struct payer *b = arg;
    b->st = ex_run("recipe_payment", ARGS("8", b->store), b->out);
    return b->st != 75;
}

/* Worker A stops itself between its lock check and its write, past its
 * 1.5 s TTL; B takes the lock and pays; A resumes and the fenced store
 * refuses it (exit 3). */
static void test_payment_paused_holder_refused(void **state)
{
    (void)state;
    static char out[OUT_MAX];
    char store[DH_PATH_MAX];
    assert_int_equal(dh_tmpfile(store, sizeof store, "pay8.store"), 0);
    dh_proc *a = ex_start("recipe_payment", ARGS("8", store, "1500", "--pause"));
    wait_output(a, "pausing");
    assert_true(dh_wait_until(stopped, a, 10000));
    /* B: busy until A's lock expired; then it pays. */
    struct payer b = { store, -1, out };
    assert_true(dh_wait_until(pay_tried, &b, 15000));
    assert_int_equal(b.st, 0);
    assert_non_null(strstr(out, "paid with token"));
    assert_int_equal(dh_proc_signal(a, SIGCONT), 0);
    out[0] = '\0';
    ex_expect(ex_end(a, out), 3, out);
    assert_non_null(strstr(out, "store refused"));
}

/* Eight processes reserve 10 units each from a stock of 50: exactly 50
 * reserved, 30 refused, the stock at 0. */
static void test_inventory(void **state)
{
    (void)state;
    static char out[OUT_MAX];
    char stock[DH_PATH_MAX];
    make_file(stock, sizeof stock, "stock", "50\n");
    ex_many(8, "recipe_inventory", ARGS("widget-42", stock, "10"), out);
    assert_int_equal(sum_after(out, "reserved "), 50);
    assert_int_equal(sum_after(out, "refused "), 30);
    assert_int_equal(file_number(stock), 0);
}

/* Two long jobs under a short renewed lock: a second copy of a running job
 * is busy; the job whose lock an operator removes stops (exit 79); the
 * other finishes. */
static void test_data_sync(void **state)
{
    (void)state;
    static char out[OUT_MAX];
    dh_proc *ok = ex_start("recipe_data_sync", ARGS("orders", "25", "100", "1500"));
    dh_proc *lost = ex_start("recipe_data_sync", ARGS("users", "100", "100", "1500"));
    wait_output(lost, "step 3/");
    ex_expect(ex_run("recipe_data_sync", ARGS("users", "5", "10"), out), 75, out);
    int removed = 0;
    dh_assert_rc(dlock_force_unlock(&removed, holder, "sync:users"), 0);
    assert_int_equal(removed, 1);
    out[0] = '\0';
    ex_expect(ex_end(lost, out), 79, out);
    assert_non_null(strstr(out, "lock lost"));
    ex_expect(ex_end(ok, out), 0, out);
    assert_non_null(strstr(out, "sync orders: done, 25 steps"));
}

/* Three schedulers, 250 ms ticks, 4 each: 12 ticks, each slot once and in
 * order, terms never going back, by 3 successive leaders. */
static void test_scheduled_leader(void **state)
{
    (void)state;
    static char out[OUT_MAX], log[OUT_MAX];
    char path[DH_PATH_MAX];
    assert_int_equal(dh_tmpfile(path, sizeof path, "cron.log"), 0);
    ex_many(3, "recipe_scheduled_leader", ARGS("report", path, "250", "4", "2000"), out);
    assert_true(dh_read_file(log, sizeof log, path) > 0);
    assert_int_equal(dh_count_lines(log), 12);
    long long slot, last_slot = -1;
    unsigned long long t, last_t = 0, terms = 0;
    for (const char *l = log; *l; l = strchr(l, '\n') + 1) {
        if (sscanf(l, "slot=%lld term=%llu", &slot, &t) != 2)
            fail_msg("bad log line in:\n%s", log);
        if (slot <= last_slot || t < last_t)
            fail_msg("slot run twice, out of order or by an older term:\n%s", log);
        terms += t != last_t;
        last_slot = slot;
        last_t = t;
    }
    assert_int_equal(terms, 3);
}

/* The number of entries in dir. */
static int entries(const char *dir)
{
    int n = 0;
    DIR *d = opendir(dir);
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* Four workers over 40 jobs with try-lock: each job done once (a second
 * done record makes a worker exit 1). */
static void test_job_claim(void **state)
{
    (void)state;
    static char out[OUT_MAX];
    char dir[DH_PATH_MAX];
    assert_int_equal(dh_tmpdir(dir, sizeof dir, "done"), 0);
    ex_many(4, "recipe_job_claim", ARGS("40", dir, "20"), out);
    assert_int_equal(sum_after(out, ": did "), 40);
    assert_int_equal(entries(dir), 40);
}

/* A grant of the rate limiter: token, wall clock before and after asking. */
typedef struct grant {
    unsigned long long token;
    long long t0, t1;
} grant;

static int cmp_grant(const void *a, const void *b)
{
    const grant *x = a, *y = b;
    return x->token < y->token ? -1 : x->token > y->token;
}

/* Over the "allowed" lines, in grant order, any PER+1 consecutive grants
 * span at least one interval (less 1 ms for the server's millisecond
 * expiry). Returns the number of grants. */
static int check_rate(const char *out, int per, long long interval_ms)
{
    static grant g[256];
    int n = 0;
    for (const char *l = out; (l = strstr(l, "allowed token=")) != NULL && n < 256; l++)
        if (sscanf(l, "allowed token=%llu t0_us=%lld t1_us=%lld", &g[n].token, &g[n].t0,
                   &g[n].t1) == 3)
            n++;
    qsort(g, (size_t)n, sizeof g[0], cmp_grant);
    for (int i = 0; i + per < n; i++)
        if (g[i + per].t1 - g[i].t0 < interval_ms * 1000 - 1000)
            fail_msg("grants %d to %d within %lld ms (at most %d per %lld ms)", i, i + per,
                     (g[i + per].t1 - g[i].t0) / 1000, per, interval_ms);
    return n;
}

/* 5 per second: 4 processes x 5 calls 400 ms apart, refused when over the
 * rate, then 3 x 4 calls that wait for a permit: never more than 5 in any
 * second; the first 5 pass, every waiting call passes. */
static void test_rate_limiter(void **state)
{
    (void)state;
    static char out[OUT_MAX];
    char start[32];
    snprintf(start, sizeof start, "%lld", wall_us() / 1000 + 500);
    ex_many(4, "recipe_rate_limiter", ARGS("partner", "5", "1000", "5", "400", "0", start), out);
    int allowed = check_rate(out, 5, 1000);
    assert_int_equal(allowed + dh_count_of(out, "refused t0_us="), 20);
    assert_true(allowed >= 5);

    snprintf(start, sizeof start, "%lld", wall_us() / 1000 + 500);
    ex_many(3, "recipe_rate_limiter", ARGS("partner-wait", "5", "1000", "4", "0", "10000", start),
            out);
    assert_int_equal(check_rate(out, 5, 1000), 12);
}

int main(void)
{
    if (access(EX_DIR "mutex_counter", X_OK) != 0) {
        printf("no examples in " EX_DIR " (built with DLOCK_BUILD_EXAMPLES=OFF): skipped\n");
        return 77; /* ctest: SKIP_RETURN_CODE */
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mutex_counter),
        cmocka_unit_test(test_trylock_and_timeout),
        cmocka_unit_test(test_with_fn),
        cmocka_unit_test(test_semaphore),
        cmocka_unit_test(test_resource_pool),
        cmocka_unit_test(test_transfer),
        cmocka_unit_test(test_rwlock),
        cmocka_unit_test(test_leader),
        cmocka_unit_test(test_payment_once),
        cmocka_unit_test(test_payment_paused_holder_refused),
        cmocka_unit_test(test_inventory),
        cmocka_unit_test(test_data_sync),
        cmocka_unit_test(test_scheduled_leader),
        cmocka_unit_test(test_job_claim),
        cmocka_unit_test(test_rate_limiter),
    };
    return cmocka_run_group_tests_name("examples", tests, group_setup, dh_group_teardown);
}
