/*
 * test_transport.c — the connection layer under faults: short reads and
 * writes, connection resets, replies that never come, and a server restart
 * (reconnect). Faults come from dlock's fault-injecting transport
 * (dlock__client_set_faults), wrapped around real connections to a real
 * redis-server.
 */
#include <string.h>

#include "client.h"
#include "harness.h"

static dh_redis *srv;

static int group_setup(void **state)
{
    (void)state;
    return dh_group_start(&srv, NULL);
}

static dlock_client *open_client(int command_timeout_ms)
{
    dlock_client_opts o = DLOCK_CLIENT_OPTS_INIT;
    o.command_timeout_ms = command_timeout_ms;
    dlock_client *c = NULL;
    dh_assert_rc(dlock_client_open(&c, srv->url, &o), 0);
    return c;
}

/* Acquire, check the fencing token, release: the basic cycle. */
static void cycle(dlock_client *c, const char *key)
{
    dlock_lock *l = NULL;
    dh_assert_rc(dlock_acquire(&l, c, key, NULL), 0);
    assert_true(dlock_lock_fencing_token(l) > 0);
    dh_assert_rc(dlock_release(l), 0);
}

/* One byte per read and per write: replies are reassembled correctly. */
static void test_short_reads_and_writes(void **state)
{
    (void)state;
    dlock_client *c = open_client(2000);
    dlock__faults f = { 0 };
    f.short_read = 1;
    f.short_write = 1;
    dlock__client_set_faults(c, &f);
    for (int i = 0; i < 5; i++)
        cycle(c, "short");
    dlock_info info;
    dh_assert_rc(dlock_inspect(&info, c, "short"), 0);
    assert_int_equal(info.held, 0);
    dlock_client_close(c);
}

/* A reset in the middle of a reply: a clear DLOCK_ECONN, then recovery on
 * a new connection once the fault is gone. */
static void test_reset(void **state)
{
    (void)state;
    dlock_client *c = open_client(2000);
    dlock__faults f = { 0 };
    f.reset_after_reads = 2; /* the handshake reads once, the command dies */
    dlock__client_set_faults(c, &f);
    dlock_lock *l = NULL;
    dh_assert_rc(dlock_try_acquire(&l, c, "reset", NULL), DLOCK_ECONN);
    assert_non_null(strstr(dlock_last_errmsg(), "reset"));
    assert_null(l);
    dlock__client_set_faults(c, NULL);
    /* the server may have granted the try before the reply was lost; that
     * lock would stay until its TTL, so clear it before the next cycle */
    int removed;
    dh_assert_rc(dlock_force_unlock(&removed, c, "reset"), 0);
    cycle(c, "reset");
    dlock_client_close(c);
}

/* A reply that never comes: DLOCK_ECONN after the command timeout, not a
 * hang; the connection is dropped and the next call works. */
static void test_stall_times_out(void **state)
{
    (void)state;
    dlock_client *c = open_client(300);
    dlock__faults f = { 0 };
    f.stall_after_reads = 2;
    dlock__client_set_faults(c, &f);
    dlock_info info;
    int64_t t0 = dh_now_ms();
    dh_assert_rc(dlock_inspect(&info, c, "stall"), DLOCK_ECONN);
    int64_t took = dh_now_ms() - t0;
    assert_true(took >= 300);
    assert_true(took < 3000);
    assert_non_null(strstr(dlock_last_errmsg(), "no answer within"));
    dlock__client_set_faults(c, NULL);
    cycle(c, "stall");
    dlock_client_close(c);
}

/* The server restarts (losing its data and every connection): pooled
 * connections are stale, the client reconnects transparently. */
static void test_reconnect_after_restart(void **state)
{
    (void)state;
    dlock_client *c = open_client(2000);
    cycle(c, "restart");
    assert_int_equal(dh_redis_restart(srv), 0);
    cycle(c, "restart");
    dlock_client_stats st;
    dh_assert_rc(dlock_stats(&st, c), 0);
    assert_true(st.connects >= 2);
    dlock_client_close(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_short_reads_and_writes),
        cmocka_unit_test(test_reset),
        cmocka_unit_test(test_stall_times_out),
        cmocka_unit_test(test_reconnect_after_restart),
    };
    return cmocka_run_group_tests_name("transport", tests, group_setup, dh_group_teardown);
}
