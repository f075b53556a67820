/*
 * test_cluster.c — Redis Cluster: three masters created by the harness
 * (redis-server --cluster-enabled yes, then redis-cli --cluster create
 * ... --cluster-yes, since CI has no standard input). Locks spread across
 * slots and nodes; a multi-lock needs one slot; a waiter is woken through
 * pub/sub in the cluster; the latch, barrier and rate limiter work on every
 * master; after a slot migration the client follows MOVED (and ASK while
 * the slot is moving).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

enum { N = 3 };
static dh_redis *node[N];
static char url[256];

/* Every node says cluster_state:ok (a dh_wait_until condition). */
static int cluster_ok(void *arg)
{
    (void)arg;
    return dh_cluster_ok(node, N);
}

static int group_setup(void **state)
{
    (void)state;
    /* One option and its value a line. */
    /* clang-format off */
    const char *args[] = {
        "--cluster-enabled", "yes",
        "--cluster-config-file", "nodes.conf",
        "--cluster-node-timeout", "3000",
        NULL,
    };
    /* clang-format on */
    char hosts[N][32];
    const char *argv[16] = { "redis-cli", "--cluster", "create" };
    int a = 3;
    for (int i = 0; i < N; i++) {
        if (dh_group_start(&node[i], args) != 0)
            return -1;
        snprintf(hosts[i], sizeof hosts[i], "127.0.0.1:%d", node[i]->port);
        argv[a++] = hosts[i];
    }
    argv[a++] = "--cluster-yes";
    argv[a] = NULL;
    char out[8192], err[2048];
    int rc = dh_run(argv, NULL, 60000, out, sizeof out, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "cluster create failed (%d): %s\n%s\n", rc, out, err);
        return -1;
    }
    if (!dh_wait_until(cluster_ok, NULL, 20000))
        return -1;
    snprintf(url, sizeof url, "redis-cluster://%s,%s", hosts[0], hosts[1]);
    return 0;
}

static dlock_client *open_client(void)
{
    dlock_client *c = NULL;
    dh_assert_rc(dlock_client_open(&c, url, NULL), 0);
    return c;
}

/* Locks on many keys land on every master, and work. */
static void test_locks_spread(void **state)
{
    (void)state;
    dlock_client *c = open_client();
    dlock_lock *l[30];
    for (int i = 0; i < 30; i++) {
        char key[32];
        snprintf(key, sizeof key, "spread:%d", i);
        dh_assert_rc(dlock_acquire(&l[i], c, key, NULL), 0);
    }
    for (int i = 0; i < N; i++)
        assert_true(dh_dbsize(node[i], 0) > 0);
    dlock_info info;
    dh_assert_rc(dlock_inspect(&info, c, "spread:7"), 0);
    assert_int_equal(info.held, 1);
    for (int i = 0; i < 30; i++)
        dh_assert_rc(dlock_release(l[i]), 0);
    dlock_client_close(c);
}

/* A multi-lock needs its keys in one slot. */
static void test_multi_same_slot(void **state)
{
    (void)state;
    dlock_client *c = open_client();
    const char *same[2] = { "acct:{u42}:from", "acct:{u42}:to" };
    const char *apart[2] = { "acct:u1", "acct:u2" };
    dlock_lock *l = NULL;
    dh_assert_rc(dlock_acquire_all(&l, c, same, 2, NULL), 0);
    dh_assert_rc(dlock_release(l), 0);
    dh_assert_rc(dlock_acquire_all(&l, c, apart, 2, NULL), DLOCK_EINVAL);
    assert_non_null(strstr(dlock_last_errmsg(), "slot"));
    dlock_client_close(c);
}

typedef struct waiter {
    dlock_client *c;
    const char *key;
    atomic_int done;
    int rc;
    dlock_lock *l;
} waiter;

static void *wait_main(void *arg)
{
    waiter *w = arg;
    w->rc = dlock_acquire(&w->l, w->c, w->key, NULL);
    atomic_store(&w->done, 1);
    return NULL;
}

static int done(void *arg)
{
    return atomic_load(&((waiter *)arg)->done);
}

/* A waiter is woken by the release through the cluster's pub/sub. */
static void test_wakeup(void **state)
{
    (void)state;
    dlock_client *a = open_client(), *b = open_client();
    for (int k = 0; k < 3; k++) {
        char key[32];
        snprintf(key, sizeof key, "wake:%d", k);
        dlock_lock *l;
        dh_assert_rc(dlock_acquire(&l, a, key, NULL), 0);
        waiter w = { .c = b, .key = key };
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, wait_main, &w), 0);
        assert_false(dh_wait_until(done, &w, 500));
        uint64_t rt = dh_round_trips(b);
        int64_t t0 = dh_now_ms();
        dh_assert_rc(dlock_release(l), 0);
        assert_true(dh_wait_until(done, &w, 5000));
        pthread_join(t, NULL);
        dh_assert_rc(w.rc, 0);
        assert_true(dh_now_ms() - t0 < 1500); /* woken, not its 3.3 s refresh timer */
        assert_true(dh_round_trips(b) - rt <= 3);
        dh_assert_rc(dlock_release(w.l), 0);
    }
    dlock_client_close(a);
    dlock_client_close(b);
}

/* ---- the primitives that hold nothing, on keys that live on each master */

typedef struct prim_waiter {
    dlock_client *c;
    const char *key;
    int barrier; /* 0: wait for the latch; 1: a barrier of two */
    atomic_int done;
    int rc;
} prim_waiter;

static void *prim_main(void *arg)
{
    prim_waiter *w = arg;
    w->rc = w->barrier ? dlock_barrier_wait(w->c, w->key, 2, 10000, NULL)
                       : dlock_latch_wait(w->c, w->key, 10000, NULL);
    atomic_store(&w->done, 1);
    return NULL;
}

static int prim_done(void *arg)
{
    return atomic_load(&((prim_waiter *)arg)->done);
}

/* A latch waiter is woken by the count-down (the channel's message reaches
 * the listener whichever master published it), a barrier of two trips,
 * and a rate limiter counts, for keys on each of the masters. */
static void test_primitives(void **state)
{
    (void)state;
    dlock_client *a = open_client(), *b = open_client();
    for (int k = 0; k < 6; k++) {
        char key[32];
        snprintf(key, sizeof key, "prim:%d", k);
        prim_waiter w = { .c = b, .key = key, .barrier = k % 2 };
        if (!w.barrier)
            dh_assert_rc(dlock_latch_init(a, key, 1, 10000), 0);
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, prim_main, &w), 0);
        assert_false(dh_wait_until(prim_done, &w, 300));
        int64_t t0 = dh_now_ms();
        if (w.barrier)
            dh_assert_rc(dlock_barrier_wait(a, key, 2, 10000, NULL), 0);
        else
            dh_assert_rc(dlock_latch_count_down(NULL, a, key), 0);
        assert_true(dh_wait_until(prim_done, &w, 5000));
        pthread_join(t, NULL);
        dh_assert_rc(w.rc, 0);
        assert_true(dh_now_ms() - t0 < 1500); /* woken, not a timer */
        dh_assert_rc(dlock_rate_acquire(a, key, 2, 60000, 2, 0, NULL), 0);
        dh_assert_rc(dlock_rate_acquire(b, key, 2, 60000, 2, 0, NULL), 0);
        dh_assert_rc(dlock_rate_acquire(a, key, 2, 60000, 2, 0, NULL), DLOCK_EBUSY);
    }
    dlock_client_close(a);
    dlock_client_close(b);
}

static int64_t keyslot(const char *name)
{
    return dh_cmd_int(node[0], 0, "CLUSTER KEYSLOT %s", name);
}

/* Index of the node serving `slot`. */
static int owner_of(int64_t slot)
{
    for (int i = 0; i < N; i++) {
        redisReply *r = dh_cmd(node[i], 0, "CLUSTER COUNTKEYSINSLOT %lld", (long long)slot);
        int err = !r || r->type == REDIS_REPLY_ERROR;
        freeReplyObject(r);
        if (err)
            continue;
        /* ask the node which node it believes serves the slot */
        redisReply *s = dh_cmd(node[i], 0, "CLUSTER SLOTS");
        int found = -1;
        for (size_t k = 0; s && k < s->elements; k++) {
            redisReply *e = s->element[k];
            if (e->element[0]->integer <= slot && slot <= e->element[1]->integer)
                for (int j = 0; j < N; j++)
                    if (e->element[2]->element[1]->integer == node[j]->port)
                        found = j;
        }
        freeReplyObject(s);
        return found;
    }
    return -1;
}

static void myid(char *out, size_t n, int i)
{
    dh_cmd_str(out, n, node[i], 0, "CLUSTER MYID");
}

/* Move slot `slot` from node `from` to node `to`, keys and all. With
 * finish 0 it stops half-way (the slot is MIGRATING/IMPORTING). */
static void migrate_slot(int64_t slot, int from, int to, int finish)
{
    char from_id[64], to_id[64];
    myid(from_id, sizeof from_id, from);
    myid(to_id, sizeof to_id, to);
    assert_int_equal(
        dh_cmd_ok(node[to], 0, "CLUSTER SETSLOT %lld IMPORTING %s", (long long)slot, from_id), 0);
    assert_int_equal(
        dh_cmd_ok(node[from], 0, "CLUSTER SETSLOT %lld MIGRATING %s", (long long)slot, to_id), 0);
    if (!finish)
        return;
    redisReply *keys = dh_cmd(node[from], 0, "CLUSTER GETKEYSINSLOT %lld 1000", (long long)slot);
    for (size_t k = 0; keys && k < keys->elements; k++)
        assert_int_equal(dh_cmd_ok(node[from], 0, "MIGRATE 127.0.0.1 %d %s 0 5000", node[to]->port,
                                   keys->element[k]->str),
                         0);
    freeReplyObject(keys);
    for (int i = 0; i < N; i++)
        assert_int_equal(
            dh_cmd_ok(node[i], 0, "CLUSTER SETSLOT %lld NODE %s", (long long)slot, to_id), 0);
}

/* After a migration the client's map is stale: MOVED is followed. */
static void test_moved_after_migration(void **state)
{
    (void)state;
    dlock_client *c = open_client();
    dlock_lock *l;
    dh_assert_rc(dlock_acquire(&l, c, "{mig}job", NULL), 0);
    uint64_t t1 = dlock_lock_fencing_token(l);
    int64_t slot = keyslot("dlock:#{mig}job:lock");
    int from = owner_of(slot);
    assert_true(from >= 0);
    int to = (from + 1) % N;
    migrate_slot(slot, from, to, 1);
    /* the held lock moved with its keys: renewal and release still work */
    dh_assert_rc(dlock_extend(l, 20000), 0);
    dh_assert_rc(dlock_release(l), 0);
    dh_assert_rc(dlock_acquire(&l, c, "{mig}job", NULL), 0);
    assert_true(dlock_lock_fencing_token(l) > t1);
    char name[256];
    assert_int_equal(dh_find_key(name, sizeof name, node[to], 0, "{mig}job", ":"), 1);
    dh_assert_rc(dlock_release(l), 0);

    /* half-way through moving another slot (MIGRATING/IMPORTING), a new
     * lock's keys are on neither side: the source answers ASK, the target
     * TRYAGAIN (a multi-key script cannot run on a split slot). The
     * acquisition waits, and completes once the migration is finished. */
    int64_t slot2 = keyslot("dlock:#{ask}job:lock");
    int from2 = owner_of(slot2), to2 = (from2 + 1) % N;
    migrate_slot(slot2, from2, to2, 0);
    dlock_client_opts co = DLOCK_CLIENT_OPTS_INIT;
    co.command_timeout_ms = 8000;
    dlock_client *c2 = NULL;
    dh_assert_rc(dlock_client_open(&c2, url, &co), 0);
    waiter w = { .c = c2, .key = "{ask}job" };
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, wait_main, &w), 0);
    assert_false(dh_wait_until(done, &w, 300)); /* held up by the migration */
    char to_id[64];
    myid(to_id, sizeof to_id, to2);
    for (int i = 0; i < N; i++)
        assert_int_equal(
            dh_cmd_ok(node[i], 0, "CLUSTER SETSLOT %lld NODE %s", (long long)slot2, to_id), 0);
    assert_true(dh_wait_until(done, &w, 10000));
    pthread_join(t, NULL);
    dh_assert_rc(w.rc, 0);
    assert_int_equal(dh_find_key(name, sizeof name, node[to2], 0, "{ask}job", ":"), 1);
    dh_assert_rc(dlock_release(w.l), 0);
    dlock_client_close(c2);
    dlock_client_close(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_locks_spread),
        cmocka_unit_test(test_multi_same_slot),
        cmocka_unit_test(test_wakeup),
        cmocka_unit_test(test_primitives),
        cmocka_unit_test(test_moved_after_migration),
    };
    return cmocka_run_group_tests_name("cluster", tests, group_setup, dh_group_teardown);
}
