/*
 * test_metrics.c — the client's metrics and the inspection API: counters
 * match a scripted workload, the held gauge is exact after release, loss,
 * expiry and close, the Prometheus exposition parses (the harness's
 * checker, dh_check_exposition), key-prefix labels stay bounded, the log
 * callback reports losses without secrets, and dlock_scan /
 * dlock_key_state_get report holders, slots and waiters.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static dh_redis *srv;

static int group_setup(void **state)
{
    (void)state;
    return dh_group_start(&srv, NULL);
}

static dlock_client *open_client(const dlock_client_opts *o)
{
    dlock_client *c = NULL;
    dh_assert_rc(dlock_client_open(&c, srv->url, o), 0);
    return c;
}

static char *metrics_text(dlock_client *c)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    dh_assert_rc(dlock_metrics_write(c, f), 0);
    fclose(f);
    return buf;
}

/* --------------------------------------------------------------- tests */

/* A scripted workload: 5 acquired, 2 busy, 1 timeout, 1 cancelled; 4
 * released, 1 released after being taken over. */
static void test_counters_match_workload(void **state)
{
    (void)state;
    dlock_client *c = open_client(NULL), *other = open_client(NULL);
    dlock_lock *l[5], *x = NULL;
    for (int i = 0; i < 5; i++) {
        char key[32];
        snprintf(key, sizeof key, "wl:%d", i);
        dh_assert_rc(dlock_acquire(&l[i], c, key, NULL), 0);
    }
    dh_assert_rc(dlock_try_acquire(&x, other, "wl:0", NULL), DLOCK_EBUSY);
    dh_assert_rc(dlock_try_acquire(&x, c, "wl:1", NULL), DLOCK_EBUSY);
    dlock_lock_opts o = dh_opts(0, 100);
    dh_assert_rc(dlock_acquire(&x, c, "wl:2", &o), DLOCK_ETIMEDOUT);
    dlock_cancel *cancel;
    dh_assert_rc(dlock_cancel_new(&cancel), 0);
    dlock_cancel_trigger(cancel);
    o.cancel = cancel;
    o.wait_ms = DLOCK_WAIT_FOREVER;
    dh_assert_rc(dlock_acquire(&x, c, "wl:3", &o), DLOCK_ECANCELED);
    dlock_cancel_free(cancel);
    int removed;
    dh_assert_rc(dlock_force_unlock(&removed, other, "wl:4"), 0);
    for (int i = 0; i < 4; i++)
        dh_assert_rc(dlock_release(l[i]), 0);
    dh_assert_rc(dlock_release(l[4]), DLOCK_ENOTHELD);
    dlock_client_stats st;
    dh_assert_rc(dlock_stats(&st, c), 0);
    assert_int_equal(st.acquired, 5);
    assert_int_equal(st.busy, 1);
    assert_int_equal(st.timeouts, 1);
    assert_int_equal(st.acquire_errors, 1);
    assert_int_equal(st.released, 4);
    assert_int_equal(st.release_not_held, 1);
    assert_int_equal(st.release_errors, 0);
    assert_int_equal(st.wait.count, 5);
    assert_int_equal(st.hold.count, 5);
    assert_int_equal(st.held_now, 0);
    dh_assert_rc(dlock_stats(&st, other), 0);
    assert_int_equal(st.busy, 1);
    assert_int_equal(st.acquired, 0);
    dlock_client_close(c);
    dlock_client_close(other);
}

static int held_is(dlock_client *c, int64_t n)
{
    dlock_client_stats st;
    return dlock_stats(&st, c) == 0 && st.held_now == n;
}

typedef struct held_arg {
    dlock_client *c;
    int64_t n;
} held_arg;

static int held_pred(void *arg)
{
    held_arg *h = arg;
    return held_is(h->c, h->n);
}

/* The held gauge after each path: acquire, release, loss, expiry. */
static void test_held_gauge_every_path(void **state)
{
    (void)state;
    char owner[64];
    dlock_client *c = dh_client_tagged(srv, "gauge", owner);
    dlock_lock *a, *b, *e;
    dh_assert_rc(dlock_acquire(&a, c, "g:a", NULL), 0);
    dlock_lock_opts lo = dh_opts(600, DLOCK_WAIT_FOREVER);
    dh_assert_rc(dlock_acquire(&b, c, "g:b", &lo), 0);
    dlock_lock_opts eo = dh_opts_fixed(300, DLOCK_WAIT_FOREVER);
    dh_assert_rc(dlock_acquire(&e, c, "g:e", &eo), 0);
    assert_true(held_is(c, 3));
    dh_assert_rc(dlock_release(a), 0); /* release */
    assert_true(held_is(c, 2));
    held_arg h = { c, 1 };
    assert_true(dh_wait_until(held_pred, &h, 3000));          /* expiry of e */
    assert_int_equal(dh_delete_key(srv, 0, "g:b", owner), 1); /* loss of b */
    h.n = 0;
    assert_true(dh_wait_until(held_pred, &h, 5000));
    dlock_client_stats st;
    dh_assert_rc(dlock_stats(&st, c), 0);
    assert_int_equal(st.lost, 1);
    dh_assert_rc(dlock_release(b), DLOCK_ENOTHELD);
    dh_assert_rc(dlock_release(e), DLOCK_ENOTHELD);
    assert_true(held_is(c, 0));
    /* close: a client closed with locks held releases them in Redis */
    dlock_lock *z;
    dh_assert_rc(dlock_acquire(&z, c, "g:z", NULL), 0);
    assert_true(held_is(c, 1));
    dlock_client_close(c);
    dlock_client *d = open_client(NULL);
    dh_assert_rc(dlock_try_acquire(&z, d, "g:z", NULL), 0);
    dh_assert_rc(dlock_release(z), 0);
    dlock_client_close(d);
}

/* The exposition parses and carries the workload's numbers. */
static void test_exposition_parses(void **state)
{
    (void)state;
    dlock_client *c = open_client(NULL);
    dlock_lock *l, *x;
    dh_assert_rc(dlock_acquire(&l, c, "expo", NULL), 0);
    dh_assert_rc(dlock_try_acquire(&x, c, "expo", NULL), DLOCK_EBUSY);
    char *text = metrics_text(c);
    assert_true(dh_check_exposition(text) > 20);
    assert_non_null(strstr(text, "dlock_acquisitions_total{result=\"acquired\"} 1\n"));
    assert_non_null(strstr(text, "dlock_acquisitions_total{result=\"busy\"} 1\n"));
    assert_non_null(strstr(text, "dlock_locks_held 1\n"));
    assert_non_null(strstr(text, "dlock_acquire_wait_seconds_bucket{le=\"+Inf\"} 1\n"));
    assert_non_null(strstr(text, "dlock_round_trips_total{node=\"127.0.0.1:"));
    free(text);
    dh_assert_rc(dlock_release(l), 0);
    dlock_client_close(c);
}

/* Key-prefix labels: bounded at 32 classes plus _other. */
static void test_prefix_labels_bounded(void **state)
{
    (void)state;
    dlock_client_opts co = DLOCK_CLIENT_OPTS_INIT;
    co.metrics_by_key_prefix = 1;
    dlock_client *c = open_client(&co);
    for (int i = 0; i < 40; i++) {
        char key[32];
        snprintf(key, sizeof key, "p%d:item", i);
        dlock_lock *l;
        dh_assert_rc(dlock_acquire(&l, c, key, NULL), 0);
        dh_assert_rc(dlock_release(l), 0);
    }
    char *text = metrics_text(c);
    dh_check_exposition(text);
    int classes = 0;
    for (const char *p = text; (p = strstr(p, "dlock_acquisitions_total{key_prefix=\"")); p++) {
        const char *acq = strstr(p, "result=\"acquired\"");
        if (acq && acq < strchr(p, '\n'))
            classes++;
    }
    assert_int_equal(classes, 33);
    assert_non_null(strstr(text, "key_prefix=\"p0\""));
    assert_non_null(
        strstr(text, "dlock_acquisitions_total{key_prefix=\"_other\",result=\"acquired\"} 8\n"));
    free(text);
    dlock_client_close(c);
}

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char log_buf[4096];
static atomic_int log_errors;

static void log_fn(int level, const char *msg, void *arg)
{
    (void)arg;
    pthread_mutex_lock(&log_mu);
    size_t n = strlen(log_buf);
    snprintf(log_buf + n, sizeof log_buf - n, "%d %s\n", level, msg);
    pthread_mutex_unlock(&log_mu);
    if (level == DLOCK_LOG_ERROR)
        atomic_fetch_add(&log_errors, 1);
}

/* The log callback reports a lost lock, and never the password. */
static void test_log_callback(void **state)
{
    (void)state;
    const char *args[] = { "--requirepass", "s3cr3t-pw", NULL };
    dh_redis *ps = dh_redis_start(args);
    assert_non_null(ps);
    char owner[64];
    dlock_client_opts co = dh_client_opts(owner, "logger");
    co.log_fn = log_fn;
    co.log_level = DLOCK_LOG_DEBUG;
    co.password = "s3cr3t-pw";
    dlock_client *c = NULL;
    dh_assert_rc(dlock_client_open(&c, ps->url, &co), 0);
    dlock_lock_opts lo = dh_opts(500, DLOCK_WAIT_FOREVER);
    dlock_lock *l;
    dh_assert_rc(dlock_acquire(&l, c, "logged", &lo), 0);
    assert_int_equal(dh_delete_key(ps, 0, "logged", owner), 1);
    assert_true(dh_wait_until(dh_flag_set, &log_errors, 5000));
    dh_assert_rc(dlock_release(l), DLOCK_ENOTHELD);
    dlock_client_close(c);
    pthread_mutex_lock(&log_mu);
    assert_non_null(strstr(log_buf, "logged lost"));
    assert_null(strstr(log_buf, "s3cr3t"));
    pthread_mutex_unlock(&log_mu);
    dh_redis_stop(ps);
}

typedef struct scan_acc {
    int n, sem_holders, waiters;
    char keys[512];
} scan_acc;

static int scan_cb(const dlock_key_state *st, void *arg)
{
    scan_acc *a = arg;
    a->n++;
    size_t len = strlen(a->keys);
    snprintf(a->keys + len, sizeof a->keys - len, "%s ", st->key);
    if (st->kind == DLOCK_KIND_SEMAPHORE)
        a->sem_holders += (int)st->nholders;
    a->waiters += (int)st->waiters;
    return 0;
}

/* Scan finds the locks under the prefix by pattern; key state shows
 * semaphore holders with their slots. */
static void test_scan_and_state(void **state)
{
    (void)state;
    dlock_client_opts co = DLOCK_CLIENT_OPTS_INIT;
    co.prefix = "scan-test:";
    co.owner_id = "scanner";
    dlock_client *c = open_client(&co);
    dlock_lock *m, *s1, *s2, *r;
    dh_assert_rc(dlock_acquire(&m, c, "jobs:{7}", NULL), 0);
    dh_assert_rc(dlock_sem_acquire(&s1, c, "pool", 3, NULL), 0);
    dh_assert_rc(dlock_sem_acquire(&s2, c, "pool", 3, NULL), 0);
    dh_assert_rc(dlock_rw_acquire(&r, c, "doc", DLOCK_READ, NULL), 0);
    scan_acc acc = { 0 };
    dh_assert_rc(dlock_scan(c, "*", scan_cb, &acc), 0);
    assert_int_equal(acc.n, 3);
    assert_int_equal(acc.sem_holders, 2);
    assert_non_null(strstr(acc.keys, "jobs:{7} "));
    memset(&acc, 0, sizeof acc);
    dh_assert_rc(dlock_scan(c, "po*", scan_cb, &acc), 0);
    assert_int_equal(acc.n, 1);
    dlock_key_state *st;
    dh_assert_rc(dlock_key_state_get(&st, c, "pool", DLOCK_KIND_ANY), 0);
    assert_int_equal(st->kind, DLOCK_KIND_SEMAPHORE);
    assert_int_equal(st->nholders, 2);
    assert_true(st->holders[0].slot != st->holders[1].slot);
    assert_string_equal(st->holders[0].owner, "scanner");
    assert_true(st->holders[0].ttl_ms > 0);
    assert_true(st->holders[0].age_ms >= 0 && st->holders[0].age_ms < 60000);
    dlock_key_state_free(st);
    dh_assert_rc(dlock_key_state_get(&st, c, "doc", DLOCK_KIND_ANY), 0);
    assert_int_equal(st->kind, DLOCK_KIND_MUTEX);
    assert_int_equal(st->nholders, 1);
    assert_int_equal(st->holders[0].mode, DLOCK_READ);
    dlock_key_state_free(st);
    dh_assert_rc(dlock_key_state_get(&st, c, "nothing", DLOCK_KIND_ANY), 0);
    assert_int_equal(st->nholders, 0);
    dlock_key_state_free(st);
    dh_assert_rc(dlock_release(m), 0);
    dh_assert_rc(dlock_release(s1), 0);
    dh_assert_rc(dlock_release(s2), 0);
    dh_assert_rc(dlock_release(r), 0);
    memset(&acc, 0, sizeof acc);
    dh_assert_rc(dlock_scan(c, NULL, scan_cb, &acc), 0);
    assert_int_equal(acc.n, 0);
    dlock_client_close(c);
}

/* Keys with and without braces are different locks, and scanning gives
 * each one back under its own name. */
static void test_braced_keys_distinct(void **state)
{
    (void)state;
    dlock_client_opts co = DLOCK_CLIENT_OPTS_INIT;
    co.prefix = "braces:";
    dlock_client *c = open_client(&co);
    const char *keys[4] = { "x", "{x}", "{a}b{c}", "a}b{c}" };
    dlock_lock *l[4];
    for (int i = 0; i < 4; i++)
        dh_assert_rc(dlock_try_acquire(&l[i], c, keys[i], NULL), 0);
    scan_acc acc = { 0 };
    dh_assert_rc(dlock_scan(c, "*", scan_cb, &acc), 0);
    assert_int_equal(acc.n, 4);
    for (int i = 0; i < 4; i++) {
        char want[32];
        snprintf(want, sizeof want, "%s ", keys[i]);
        int found = strncmp(acc.keys, want, strlen(want)) == 0;
        for (const char *p = acc.keys; !found && (p = strchr(p, ' ')); p++)
            found = strncmp(p + 1, want, strlen(want)) == 0;
        assert_true(found);
    }
    for (int i = 0; i < 4; i++)
        dh_assert_rc(dlock_release(l[i]), 0);
    dlock_client_close(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_braced_keys_distinct),
        cmocka_unit_test(test_counters_match_workload),
        cmocka_unit_test(test_held_gauge_every_path),
        cmocka_unit_test(test_exposition_parses),
        cmocka_unit_test(test_prefix_labels_bounded),
        cmocka_unit_test(test_log_callback),
        cmocka_unit_test(test_scan_and_state),
    };
    return cmocka_run_group_tests_name("metrics", tests, group_setup, dh_group_teardown);
}
