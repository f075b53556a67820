/*
 * test_redlock.c — several servers: Redlock over five independent masters
 * (exclusion, two servers down, three down, a server restarted empty,
 * fencing across holders), and Sentinel (one master, one replica, three
 * sentinels; after SENTINEL FAILOVER the client finds the new master).
 *
 * Design. The harness starts every server on loopback; sentinels are
 * redis-server --sentinel processes with a config file in a temp dir, run
 * through dh_spawn (killed at cleanup). All waits are bounded polls.
 */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

enum { N = 5 };
static dh_redis *srv[N];
static char urls[N * 40];

static void build_urls(void)
{
    urls[0] = '\0';
    for (int i = 0; i < N; i++) {
        size_t len = strlen(urls);
        snprintf(urls + len, sizeof urls - len, "%s%s", i ? "," : "", srv[i]->url);
    }
}

static int group_setup(void **state)
{
    (void)state;
    for (int i = 0; i < N; i++)
        if (dh_group_start(&srv[i], NULL) != 0)
            return -1;
    build_urls();
    return 0;
}

/* Bring every server back (a test may have killed some). */
static void all_up(void)
{
    for (int i = 0; i < N; i++)
        if (srv[i]->pid == 0)
            assert_int_equal(dh_redis_restart(srv[i]), 0);
}

static dlock_client *rl_client(void)
{
    dlock_client_opts o = DLOCK_CLIENT_OPTS_INIT;
    o.connect_timeout_ms = 500;
    o.command_timeout_ms = 500;
    dlock_client *c = NULL;
    dh_assert_rc(dlock_client_open(&c, urls, &o), 0);
    return c;
}

/* Several processes increment a counter under a Redlock lock. */
static void test_redlock_exclusion(void **state)
{
    (void)state;
    enum { PROCS = 4, ROUNDS = 40 };
    atomic_int *sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(sh != MAP_FAILED);
    atomic_store(&sh[0], 0); /* counter */
    atomic_store(&sh[1], 0); /* inside */
    atomic_store(&sh[2], 0); /* overlaps */
    atomic_store(&sh[3], 0); /* errors */
    pid_t pids[PROCS];
    for (int p = 0; p < PROCS; p++) {
        if ((pids[p] = dh_fork()) == 0) {
            dlock_client *c = NULL;
            if (dlock_client_open(&c, urls, NULL) != 0)
                _exit(2);
            for (int i = 0; i < ROUNDS; i++) {
                dlock_lock *l;
                if (dlock_acquire(&l, c, "rl:counter", NULL) != 0) {
                    atomic_fetch_add(&sh[3], 1);
                    continue;
                }
                if (atomic_fetch_add(&sh[1], 1) != 0)
                    atomic_fetch_add(&sh[2], 1);
                int v = atomic_load(&sh[0]);
                for (volatile int k = 0; k < 20000; k++) {
                }
                atomic_store(&sh[0], v + 1);
                atomic_fetch_sub(&sh[1], 1);
                if (dlock_release(l) != 0)
                    atomic_fetch_add(&sh[3], 1);
            }
            dlock_client_close(c);
            _exit(0);
        }
        assert_true(pids[p] > 0);
    }
    assert_true(dh_wait_children(pids, PROCS, 120000));
    assert_int_equal(atomic_load(&sh[3]), 0);
    assert_int_equal(atomic_load(&sh[2]), 0);
    assert_int_equal(atomic_load(&sh[0]), PROCS * ROUNDS);
    munmap(sh, 4096);
}

/* Two servers down: still works. Three down: DLOCK_EQUORUM quickly, and
 * nothing was taken. */
static void test_redlock_minority_and_majority_down(void **state)
{
    (void)state;
    all_up();
    dlock_client *c = rl_client();
    assert_int_equal(dh_redis_kill9(srv[0]), 0);
    assert_int_equal(dh_redis_kill9(srv[1]), 0);
    dlock_lock *l = NULL;
    dh_assert_rc(dlock_acquire(&l, c, "rl:down", NULL), 0);
    assert_true(dlock_lock_fencing_token(l) > 0);
    dh_assert_rc(dlock_extend(l, 20000), 0);
    dh_assert_rc(dlock_release(l), 0);

    assert_int_equal(dh_redis_kill9(srv[2]), 0);
    dlock_lock_opts o = dh_opts(0, 0);
    int64_t t0 = dh_now_ms();
    dh_assert_rc(dlock_acquire(&l, c, "rl:down", &o), DLOCK_EQUORUM);
    int64_t took = dh_now_ms() - t0;
    print_message("EQUORUM after %lld ms: %s\n", (long long)took, dlock_last_errmsg());
    assert_true(took < 5000);
    assert_non_null(strstr(dlock_last_errmsg(), "3 of 5"));
    /* no false acquisition: the two live servers hold nothing */
    assert_int_equal(dh_dbsize(srv[3], 0) >= 0, 1);
    char name[256];
    assert_int_equal(dh_find_key(name, sizeof name, srv[3], 0, "rl:down", ":"), 0);
    assert_int_equal(dh_find_key(name, sizeof name, srv[4], 0, "rl:down", ":"), 0);
    dlock_client_close(c);
    all_up();
}

/* A holder on all five; one server restarts empty: a second client still
 * cannot get a majority while the holder's lock stands on the other four. */
static void test_redlock_restart_empty(void **state)
{
    (void)state;
    all_up();
    dlock_client *a = rl_client(), *b = rl_client();
    dlock_lock *l, *x = NULL;
    dh_assert_rc(dlock_acquire(&l, a, "rl:restart", NULL), 0);
    uint64_t t1 = dlock_lock_fencing_token(l);
    assert_int_equal(dh_redis_restart(srv[0]), 0);
    dh_assert_rc(dlock_try_acquire(&x, b, "rl:restart", NULL), DLOCK_EBUSY);
    assert_true(dlock_is_held(l));
    dh_assert_rc(dlock_release(l), 0);
    dh_assert_rc(dlock_try_acquire(&x, b, "rl:restart", NULL), 0);
    assert_true(dlock_lock_fencing_token(x) > t1);
    dh_assert_rc(dlock_release(x), 0);
    dlock_client_close(a);
    dlock_client_close(b);
}

/* Fencing tokens keep increasing across holders even when the servers
 * that granted the last one restart empty. */
static void test_redlock_fencing(void **state)
{
    (void)state;
    all_up();
    dlock_client *c = rl_client();
    uint64_t last = 0;
    for (int round = 0; round < 6; round++) {
        dlock_lock *l;
        dh_assert_rc(dlock_acquire(&l, c, "rl:fence", NULL), 0);
        uint64_t t = dlock_lock_fencing_token(l);
        assert_true(t > last);
        last = t;
        dh_assert_rc(dlock_release(l), 0);
        /* restart a different minority each round */
        assert_int_equal(dh_redis_restart(srv[round % N]), 0);
        assert_int_equal(dh_redis_restart(srv[(round + 1) % N]), 0);
    }
    dlock_client_close(c);
}

/* Leadership on Redlock: dlock_leader reports the majority's holder with
 * the holder's own (largest) token, also with the first server down, and
 * a watcher sees the resignation. */
static void test_redlock_leader(void **state)
{
    (void)state;
    all_up();
    dlock_client_opts co = DLOCK_CLIENT_OPTS_INIT;
    co.owner_id = "rl-leader";
    co.connect_timeout_ms = 500;
    co.command_timeout_ms = 500;
    dlock_client *c = NULL, *w = rl_client();
    dh_assert_rc(dlock_client_open(&c, urls, &co), 0);
    dlock_lock *l;
    dh_assert_rc(dlock_campaign(&l, c, "rl:lead", NULL), 0);
    dlock_info info;
    dh_assert_rc(dlock_leader(&info, w, "rl:lead"), 0);
    assert_int_equal(info.held, 1);
    assert_string_equal(info.owner, "rl-leader");
    assert_int_equal(info.fencing_token, dlock_lock_fencing_token(l));
    assert_int_equal(dh_redis_kill9(srv[0]), 0);
    dh_assert_rc(dlock_leader(&info, w, "rl:lead"), 0);
    assert_int_equal(info.held, 1);
    assert_int_equal(info.fencing_token, dlock_lock_fencing_token(l));
    uint64_t term = info.fencing_token;
    dh_assert_rc(dlock_resign(l), 0);
    dh_assert_rc(dlock_leader_wait(&info, w, "rl:lead", term, 5000, NULL), 0);
    assert_int_equal(info.held, 0);
    dlock_client_close(c);
    dlock_client_close(w);
    all_up();
}

/* ------------------------------------------------------------- Sentinel */

typedef struct sentinel_ctx {
    int port;
    const char *expect; /* "127.0.0.1:PORT" */
    int need_replica;   /* also require one known replica */
} sentinel_ctx;

/* 1 when the sentinel at ctx->port names ctx->expect as the master and
 * (with need_replica) could promote its one replica. */
static int sentinel_ready(void *arg)
{
    sentinel_ctx *s = arg;
    redisContext *rc = redisConnect("127.0.0.1", s->port);
    if (!rc || rc->err) {
        if (rc)
            redisFree(rc);
        return 0;
    }
    int ok = 0;
    redisReply *r = redisCommand(rc, "SENTINEL get-master-addr-by-name mymaster");
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
        char addr[64];
        snprintf(addr, sizeof addr, "%s:%s", r->element[0]->str, r->element[1]->str);
        ok = strcmp(addr, s->expect) == 0;
    }
    freeReplyObject(r);
    if (ok && s->need_replica)
        ok = dh_sentinel_replica_ready(s->port, "mymaster");
    redisFree(rc);
    return ok;
}

/* 1 when the server reports role:slave. */
static int is_replica(void *arg)
{
    redisReply *r = dh_cmd(arg, 0, "INFO replication");
    int ok = r && r->type == REDIS_REPLY_STRING && strstr(r->str, "role:slave");
    freeReplyObject(r);
    return ok;
}

/* Ask the sentinel at *port for a failover: 1 once it accepts. It may
 * refuse (NOGOODSLAVE) while its view of the replica is not fresh enough. */
static int failover_accepted(void *port)
{
    redisContext *c = redisConnect("127.0.0.1", *(int *)port);
    redisReply *r = c && !c->err ? redisCommand(c, "SENTINEL FAILOVER mymaster") : NULL;
    int ok = r && r->type != REDIS_REPLY_ERROR;
    if (r && !ok)
        print_message("SENTINEL FAILOVER: %s (asking again)\n", r->str ? r->str : "?");
    freeReplyObject(r);
    if (c)
        redisFree(c);
    return ok;
}

static void test_sentinel_failover(void **state)
{
    (void)state;
    dh_redis *master = dh_redis_start(NULL);
    assert_non_null(master);
    dh_redis *replica = dh_replica_start(master);
    assert_non_null(replica);

    int sports[3];
    dh_proc *sent[3];
    char surl[256] = "redis-sentinel://";
    for (int i = 0; i < 3; i++) {
        sports[i] = dh_free_port();
        assert_true(sports[i] > 0);
        char conf[256], text[512];
        char name[32];
        snprintf(name, sizeof name, "sentinel-%d.conf", i);
        assert_int_equal(dh_tmpfile(conf, sizeof conf, name), 0);
        snprintf(text, sizeof text,
                 "port %d\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 %d 2\n"
                 "sentinel down-after-milliseconds mymaster 1000\n"
                 "sentinel failover-timeout mymaster 4000\n",
                 sports[i], master->port);
        assert_int_equal(dh_write_file(conf, text), 0);
        const char *argv[] = { "redis-server", conf, "--sentinel", NULL };
        sent[i] = dh_spawn(argv, NULL);
        assert_non_null(sent[i]);
        size_t len = strlen(surl);
        snprintf(surl + len, sizeof surl - len, "%s127.0.0.1:%d", i ? "," : "", sports[i]);
    }
    strncat(surl, "/mymaster", sizeof surl - strlen(surl) - 1);
    char expect[64];
    snprintf(expect, sizeof expect, "127.0.0.1:%d", master->port);
    sentinel_ctx sc = { sports[0], expect, 1 };
    assert_true(dh_wait_until(sentinel_ready, &sc, 15000));

    dlock_client *c = NULL;
    dh_assert_rc(dlock_client_open(&c, surl, NULL), 0);
    dlock_lock *l;
    dh_assert_rc(dlock_acquire(&l, c, "sent:job", NULL), 0);
    uint64_t t1 = dlock_lock_fencing_token(l);
    dh_assert_rc(dlock_release(l), 0);

    /* wait until the replica has caught up, then fail over */
    redisReply *r = dh_cmd(master, 0, "WAIT 1 2000");
    freeReplyObject(r);
    assert_true(dh_wait_until(failover_accepted, &sports[0], 20000));
    snprintf(expect, sizeof expect, "127.0.0.1:%d", replica->port);
    sc.need_replica = 0;
    if (!dh_wait_until(sentinel_ready, &sc, 20000)) {
        char out[8192], err[256];
        dh_proc_output(sent[0], out, sizeof out, err, sizeof err);
        print_message("sentinel 0 did not report the new master; its log:\n%s\n", out);
        fail();
    }
    /* once the old master is a replica (READONLY), the client must follow */
    assert_true(dh_wait_until(is_replica, master, 20000));
    dh_assert_rc(dlock_acquire(&l, c, "sent:job2", NULL), 0);
    char name[256];
    assert_int_equal(dh_find_key(name, sizeof name, replica, 0, "sent:job2", ":"), 1);
    dh_assert_rc(dlock_release(l), 0);
    dh_assert_rc(dlock_acquire(&l, c, "sent:job", NULL), 0);
    assert_true(dlock_lock_fencing_token(l) > t1);
    dh_assert_rc(dlock_release(l), 0);
    dlock_client_close(c);
    for (int i = 0; i < 3; i++)
        dh_proc_free(sent[i]);
    dh_redis_stop(replica);
    dh_redis_stop(master);
}

static void test_bad_urls(void **state)
{
    (void)state;
    dlock_client *c = NULL;
    char cl[64];
    snprintf(cl, sizeof cl, "redis-cluster://127.0.0.1:%d", dh_closed_port());
    dh_assert_rc(dlock_client_open(&c, cl, NULL), DLOCK_ECONN);
    assert_non_null(strstr(dlock_last_errmsg(), "slot map"));
    dh_assert_rc(dlock_client_open(&c, "redis-sentinel://127.0.0.1:1", NULL), DLOCK_EINVAL);
    assert_non_null(strstr(dlock_last_errmsg(), "master"));
    /* passwords with '/', '?' or '@' never show up in messages */
    const char *secret_urls[3] = { "redis-sentinel://admin:12345/TopSecret@127.0.0.1:%d/mymaster",
                                   "rediss://:abc?TopSecret@127.0.0.1:%d",
                                   "redis://u:Top@Secret/x@127.0.0.1:%d" };
    for (int i = 0; i < 3; i++) {
        char u[200];
        snprintf(u, sizeof u, secret_urls[i], dh_closed_port());
        int rc = dlock_client_open(&c, u, NULL);
        assert_true(rc != 0);
        assert_null(strstr(dlock_last_errmsg(), "Secret"));
    }
    char twice[128];
    snprintf(twice, sizeof twice, "%s,%s", srv[0]->url, srv[0]->url);
    dh_assert_rc(dlock_client_open(&c, twice, NULL), DLOCK_EINVAL);
    /* semaphores are refused on Redlock */
    all_up();
    c = rl_client();
    dlock_lock *l = NULL;
    dh_assert_rc(dlock_sem_acquire(&l, c, "rl:sem", 2, NULL), DLOCK_EINVAL);
    dlock_client_close(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        dh_unit_test(test_redlock_exclusion),
        cmocka_unit_test(test_redlock_minority_and_majority_down),
        cmocka_unit_test(test_redlock_restart_empty),
        cmocka_unit_test(test_redlock_fencing),
        cmocka_unit_test(test_redlock_leader),
        cmocka_unit_test(test_sentinel_failover),
        cmocka_unit_test(test_bad_urls),
    };
    return cmocka_run_group_tests_name("redlock", tests, group_setup, dh_group_teardown);
}
