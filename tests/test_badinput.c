/*
 * test_badinput.c — invalid arguments, bad URLs, unreachable servers and
 * authentication.
 *
 * Design. Every rejection must come back as its documented code with a
 * non-empty dlock_last_errmsg(), must not crash on NULL, and must leave any
 * `out` parameter NULL. Unreachable servers are loopback only: a closed port
 * (bound, never listening) and a listener that never accepts (its accept
 * queue is full, so connects stall); both must fail with DLOCK_ECONN within
 * a generous bound of the configured timeout. Authentication runs against a
 * second private server started with --requirepass and an ACL user created
 * through the harness; no error message may contain a password.
 */
#include <stdio.h>
#include <string.h>

#include "harness.h"

#define PW "Sekr1t-pw-7781"
#define WRONG_PW "Wr0ng-pw-4410"
#define ACL_PW "Al1ce-pw-5523"

static dh_redis *srv;  /* plain */
static dh_redis *auth; /* --requirepass PW */

static int group_setup(void **state)
{
    (void)state;
    static const char *const extra[] = { "--requirepass", PW, NULL };
    if (dh_group_start(&srv, NULL) != 0 || dh_group_start(&auth, extra) != 0)
        return -1;
    return dh_cmd_ok(auth, 0, "ACL SETUSER alice on >%s ~* &* +@all", ACL_PW);
}

static void assert_msg(void)
{
    const char *m = dlock_last_errmsg();
    assert_non_null(m);
    if (m[0] == '\0')
        fail_msg("dlock_last_errmsg() is empty after a failure");
}

/* The last error message must not contain any of the passwords. */
static void assert_no_secret(void)
{
    const char *m = dlock_last_errmsg();
    const char *secrets[] = { PW, WRONG_PW, ACL_PW };
    for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++)
        if (strstr(m, secrets[i]))
            fail_msg("error message reveals a password: \"%s\"", m);
}

/* Acquire with these options must fail with EINVAL, a message, NULL out. */
static void expect_lock_einval(dlock_client *c, const char *key, const dlock_lock_opts *o,
                               const char *what)
{
    dlock_lock *l = (dlock_lock *)&l;
    int rc = dlock_acquire(&l, c, key, o);
    if (rc != DLOCK_EINVAL)
        fail_msg("%s: dlock_acquire gave %d (%s), want DLOCK_EINVAL", what, rc, dlock_strerror(rc));
    assert_msg();
    if (l != NULL)
        fail_msg("%s: *out not NULL after a failure", what);
    l = (dlock_lock *)&l;
    rc = dlock_try_acquire(&l, c, key, o);
    if (rc != DLOCK_EINVAL)
        fail_msg("%s: dlock_try_acquire gave %d (%s), want DLOCK_EINVAL", what, rc,
                 dlock_strerror(rc));
    assert_msg();
    assert_null(l);
}

static void test_bad_keys_and_options(void **state)
{
    (void)state;
    dlock_client *c = dh_client_tagged(srv, "badinput", NULL);
    dlock_lock_opts o = dh_opts(0, 0);

    expect_lock_einval(c, "", &o, "empty key");
    char big[DLOCK_KEY_MAX + 2];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    expect_lock_einval(c, big, &o, "key of DLOCK_KEY_MAX+1 bytes");
    /* Nothing invalid reached Redis. */
    assert_int_equal(dh_dbsize(srv, 0), 0);

    /* Exactly DLOCK_KEY_MAX bytes is fine. */
    big[DLOCK_KEY_MAX] = '\0';
    dlock_lock *l = NULL;
    dh_assert_rc(dlock_acquire(&l, c, big, &o), 0);
    dh_assert_rc(dlock_release(l), 0);

    dlock_lock_opts b = o;
    b.ttl_ms = 0;
    expect_lock_einval(c, "b:k", &b, "ttl 0");
    b.ttl_ms = -1000;
    expect_lock_einval(c, "b:k", &b, "negative ttl");
    b.ttl_ms = 2; /* the drift allowance (1% + 2 ms) would leave no validity */
    expect_lock_einval(c, "b:k", &b, "ttl 2 ms");
    b = o;
    b.wait_ms = -5;
    expect_lock_einval(c, "b:k", &b, "wait_ms -5");
    b.wait_ms = -2;
    expect_lock_einval(c, "b:k", &b, "wait_ms -2");
    b = o;
    b.renew_fraction = 0.0;
    expect_lock_einval(c, "b:k", &b, "renew_fraction 0");
    b.renew_fraction = 1.0;
    expect_lock_einval(c, "b:k", &b, "renew_fraction 1.0");
    b.renew_fraction = -0.5;
    expect_lock_einval(c, "b:k", &b, "renew_fraction -0.5");
    b.renew_fraction = 1.5;
    expect_lock_einval(c, "b:k", &b, "renew_fraction 1.5");

    /* NULL arguments. */
    dh_assert_rc(dlock_acquire(NULL, c, "b:k", &o), DLOCK_EINVAL);
    assert_msg();
    l = (dlock_lock *)&l;
    dh_assert_rc(dlock_acquire(&l, NULL, "b:k", &o), DLOCK_EINVAL);
    assert_msg();
    assert_null(l);
    l = (dlock_lock *)&l;
    dh_assert_rc(dlock_acquire(&l, c, NULL, &o), DLOCK_EINVAL);
    assert_msg();
    assert_null(l);
    dh_assert_rc(dlock_try_acquire(NULL, c, "b:k", &o), DLOCK_EINVAL);
    dh_assert_rc(dlock_try_acquire(&l, NULL, "b:k", &o), DLOCK_EINVAL);
    dh_assert_rc(dlock_try_acquire(&l, c, NULL, &o), DLOCK_EINVAL);
    dh_assert_rc(dlock_with(NULL, "b:k", &o, NULL, NULL), DLOCK_EINVAL);
    dh_assert_rc(dlock_with(c, "b:k", &o, NULL, NULL), DLOCK_EINVAL);
    dh_assert_rc(dlock_with(c, "", &o, NULL, NULL), DLOCK_EINVAL);
    dlock_info info;
    dh_assert_rc(dlock_inspect(NULL, c, "b:k"), DLOCK_EINVAL);
    dh_assert_rc(dlock_inspect(&info, NULL, "b:k"), DLOCK_EINVAL);
    dh_assert_rc(dlock_inspect(&info, c, NULL), DLOCK_EINVAL);
    dh_assert_rc(dlock_inspect(&info, c, ""), DLOCK_EINVAL);
    int removed;
    dh_assert_rc(dlock_force_unlock(NULL, c, "b:k"), DLOCK_EINVAL);
    dh_assert_rc(dlock_force_unlock(&removed, NULL, "b:k"), DLOCK_EINVAL);
    dh_assert_rc(dlock_force_unlock(&removed, c, ""), DLOCK_EINVAL);
    dh_assert_rc(dlock_stats(NULL, c), DLOCK_EINVAL);
    dlock_client_stats st;
    dh_assert_rc(dlock_stats(&st, NULL), DLOCK_EINVAL);
    dh_assert_rc(dlock_cancel_new(NULL), DLOCK_EINVAL);
    dlock_cancel_trigger(NULL); /* no crash */
    assert_int_equal(dlock_is_held(NULL), 0);
    assert_int_equal(dlock_lock_remaining_ms(NULL), 0);
    assert_int_equal(dlock_lock_fencing_token(NULL), 0);

    /* Nothing of all that reached Redis except the one valid lock, gone. */
    assert_int_equal(dh_dbsize(srv, 0) <= 1, 1); /* at most its fence state */

    /* NULL options mean the defaults (30 s ttl, wait forever) on a free key. */
    dh_assert_rc(dlock_acquire(&l, c, "b:defaults", NULL), 0);
    int64_t rem = dlock_lock_remaining_ms(l);
    assert_true(rem > 20000 && rem <= 30000);
    dh_assert_rc(dlock_release(l), 0);
    dlock_client_close(c);
}

static void expect_open_einval(const char *url, const dlock_client_opts *o)
{
    dlock_client *c = (dlock_client *)&c;
    int rc = dlock_client_open(&c, url, o);
    if (rc != DLOCK_EINVAL)
        fail_msg("dlock_client_open(\"%s\") gave %d (%s), want DLOCK_EINVAL", url ? url : "NULL",
                 rc, dlock_strerror(rc));
    if (c != NULL)
        fail_msg("dlock_client_open(\"%s\"): *out not NULL after a failure", url ? url : "NULL");
    assert_msg();
}

static void test_bad_urls(void **state)
{
    (void)state;
    char buf[DH_PATH_MAX + 64];
    expect_open_einval("", NULL);
    expect_open_einval("redis://", NULL);
    expect_open_einval("redis://host:99999", NULL);
    expect_open_einval("redis://host:abc", NULL);
    expect_open_einval("redis://127.0.0.1:-1", NULL);
    expect_open_einval("http://x", NULL);
    expect_open_einval("ftp://127.0.0.1:21", NULL);
    expect_open_einval("127.0.0.1:6390", NULL);
    expect_open_einval("unix://", NULL);
    snprintf(buf, sizeof buf, "redis://127.0.0.1:%d/notanumber", srv->port);
    expect_open_einval(buf, NULL);
    snprintf(buf, sizeof buf, "redis://127.0.0.1:%d/3x", srv->port);
    expect_open_einval(buf, NULL);
    snprintf(buf, sizeof buf, "%s?db=abc", srv->unix_url);
    expect_open_einval(buf, NULL);
    expect_open_einval(NULL, NULL);
    dh_assert_rc(dlock_client_open(NULL, srv->url, NULL), DLOCK_EINVAL);
    assert_msg();

    /* Bad client options. */
    dlock_client_opts o = DLOCK_CLIENT_OPTS_INIT;
    o.connect_timeout_ms = 0;
    expect_open_einval(srv->url, &o);
    o = (dlock_client_opts)DLOCK_CLIENT_OPTS_INIT;
    o.command_timeout_ms = -1;
    expect_open_einval(srv->url, &o);
    o = (dlock_client_opts)DLOCK_CLIENT_OPTS_INIT;
    o.prefix = "my{prefix}:";
    expect_open_einval(srv->url, &o);

    /* And the good forms work. */
    dlock_client *c = NULL;
    dh_assert_rc(dlock_client_open(&c, srv->url, NULL), 0);
    dlock_client_close(c);
    snprintf(buf, sizeof buf, "%s/0", srv->url);
    dh_assert_rc(dlock_client_open(&c, buf, NULL), 0);
    dlock_client_close(c);
}

static void expect_econn(const char *url, int64_t bound_ms)
{
    dlock_client_opts o = DLOCK_CLIENT_OPTS_INIT;
    o.connect_timeout_ms = 500;
    o.command_timeout_ms = 500;
    dlock_client *c = (dlock_client *)&c;
    int64_t t0 = dh_now_ms();
    int rc = dlock_client_open(&c, url, &o);
    int64_t took = dh_now_ms() - t0;
    if (rc != DLOCK_ECONN)
        fail_msg("%s: dlock_client_open gave %d (%s: %s), want DLOCK_ECONN", url, rc,
                 dlock_strerror(rc), dlock_last_errmsg());
    assert_null(c);
    assert_msg();
    if (took > bound_ms)
        fail_msg("%s: took %lld ms to fail (bound %lld)", url, (long long)took,
                 (long long)bound_ms);
}

static void test_closed_port(void **state)
{
    (void)state;
    int port = dh_closed_port();
    assert_true(port > 0);
    char url[64], portstr[16];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    expect_econn(url, 5000);
    /* The message says which server. */
    snprintf(portstr, sizeof portstr, "%d", port);
    if (!strstr(dlock_last_errmsg(), portstr))
        fail_msg("message does not name the port: \"%s\"", dlock_last_errmsg());
}

static void test_never_accepting(void **state)
{
    (void)state;
    int port = dh_noaccept_listener();
    assert_true(port > 0);
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    expect_econn(url, 5000);
}

static void test_missing_socket(void **state)
{
    (void)state;
    char url[DH_PATH_MAX + 32];
    snprintf(url, sizeof url, "unix://%s/nonexistent.sock", srv->dir);
    expect_econn(url, 5000);
}

/* A server that dies or stops answering after the client was opened: the
 * next acquire fails with DLOCK_ECONN within a bound of the timeouts, and
 * the client works again once a server is back on the same port. */
static void test_server_gone(void **state)
{
    (void)state;
    dh_redis *r = dh_redis_start(NULL);
    assert_non_null(r);
    dlock_client_opts co = DLOCK_CLIENT_OPTS_INIT;
    co.connect_timeout_ms = 500;
    co.command_timeout_ms = 500;
    dlock_client *c = NULL;
    dh_assert_rc(dlock_client_open(&c, r->url, &co), 0);
    dlock_lock_opts o = dh_opts(0, 0);
    dlock_lock *l = NULL;
    dh_assert_rc(dlock_acquire(&l, c, "b:gone", &o), 0);
    dh_assert_rc(dlock_release(l), 0);

    /* Stopped (SIGSTOP): connections stay open, replies never come. */
    assert_int_equal(dh_redis_pause(r), 0);
    int64_t t0 = dh_now_ms();
    l = (dlock_lock *)&l;
    dh_assert_rc(dlock_acquire(&l, c, "b:gone", &o), DLOCK_ECONN);
    assert_null(l);
    assert_msg();
    if (dh_now_ms() - t0 > 5000)
        fail_msg("acquire on a stopped server took %lld ms", (long long)(dh_now_ms() - t0));
    assert_int_equal(dh_redis_resume(r), 0);

    /* Killed: refused. */
    assert_int_equal(dh_redis_kill9(r), 0);
    t0 = dh_now_ms();
    dh_assert_rc(dlock_acquire(&l, c, "b:gone", &o), DLOCK_ECONN);
    assert_msg();
    assert_true(dh_now_ms() - t0 < 5000);

    /* Back (empty): the same client reconnects on demand. */
    assert_int_equal(dh_redis_restart(r), 0);
    dh_assert_rc(dlock_acquire(&l, c, "b:gone", &o), 0);
    dh_assert_rc(dlock_release(l), 0);
    dlock_client_close(c);
    dh_redis_stop(r);
}

/* Open with url/opts; want `want`. On success, prove the client works. */
static void check_auth(const char *url, const char *user, const char *pass, int want)
{
    dlock_client_opts o = DLOCK_CLIENT_OPTS_INIT;
    o.username = user;
    o.password = pass;
    dlock_client *c = (dlock_client *)&c;
    int rc = dlock_client_open(&c, url, &o);
    assert_no_secret();
    if (rc != want)
        fail_msg("open(%s, user=%s, pass=%s): %d (%s: %s), want %d (%s)", url, user ? user : "NULL",
                 pass ? "set" : "NULL", rc, dlock_strerror(rc), dlock_last_errmsg(), want,
                 dlock_strerror(want));
    if (want != 0) {
        assert_null(c);
        assert_msg();
        return;
    }
    dlock_lock_opts lo = dh_opts(0, 0);
    dlock_lock *l = NULL;
    dh_assert_rc(dlock_acquire(&l, c, "b:auth", &lo), 0);
    dh_assert_rc(dlock_release(l), 0);
    dlock_client_close(c);
}

static void test_auth(void **state)
{
    (void)state;
    char url[256];
    int p = auth->port;

    /* No credentials at all. */
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", p);
    check_auth(url, NULL, NULL, DLOCK_EAUTH);
    /* Password in the URL. */
    snprintf(url, sizeof url, "redis://:%s@127.0.0.1:%d", WRONG_PW, p);
    check_auth(url, NULL, NULL, DLOCK_EAUTH);
    snprintf(url, sizeof url, "redis://:%s@127.0.0.1:%d", PW, p);
    check_auth(url, NULL, NULL, 0);
    /* Password in the options, also overriding the URL's. */
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", p);
    check_auth(url, NULL, PW, 0);
    check_auth(url, NULL, WRONG_PW, DLOCK_EAUTH);
    snprintf(url, sizeof url, "redis://:%s@127.0.0.1:%d", WRONG_PW, p);
    check_auth(url, NULL, PW, 0);
    snprintf(url, sizeof url, "redis://:%s@127.0.0.1:%d", PW, p);
    check_auth(url, NULL, WRONG_PW, DLOCK_EAUTH);
    /* ACL user, in the URL and in the options. */
    snprintf(url, sizeof url, "redis://alice:%s@127.0.0.1:%d", ACL_PW, p);
    check_auth(url, NULL, NULL, 0);
    snprintf(url, sizeof url, "redis://alice:%s@127.0.0.1:%d", WRONG_PW, p);
    check_auth(url, NULL, NULL, DLOCK_EAUTH);
    snprintf(url, sizeof url, "redis://bob:%s@127.0.0.1:%d", ACL_PW, p);
    check_auth(url, NULL, NULL, DLOCK_EAUTH);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", p);
    check_auth(url, "alice", ACL_PW, 0);
    check_auth(url, "alice", WRONG_PW, DLOCK_EAUTH);
    /* Over the unix socket too. */
    check_auth(auth->unix_url, NULL, PW, 0);
    check_auth(auth->unix_url, NULL, WRONG_PW, DLOCK_EAUTH);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_keys_and_options),
        cmocka_unit_test(test_bad_urls),
        cmocka_unit_test(test_closed_port),
        cmocka_unit_test(test_never_accepting),
        cmocka_unit_test(test_missing_socket),
        cmocka_unit_test(test_server_gone),
        cmocka_unit_test(test_auth),
    };
    return cmocka_run_group_tests_name("badinput", tests, group_setup, dh_group_teardown);
}
