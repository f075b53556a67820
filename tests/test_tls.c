/*
 * test_tls.c — rediss://: a TLS redis-server started by the harness with
 * throwaway certificates made here (a CA, a server certificate for
 * 127.0.0.1 and "localhost", a client certificate, and a second, unrelated
 * CA). Locks work over TLS; a wrong CA fails with a clear "certificate
 * verify failed"; the server name can be checked through sni=; a server
 * that requires client certificates accepts cert=/key=; a plain-text port
 * given as rediss:// fails cleanly.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static dh_redis *srv;
static int tls_port;
static char dir[256];

/* Run a shell command line (openssl) with a bound; 0 on success. */
static int sh(const char *cmd)
{
    return dh_sh(cmd, 30000);
}

static int make_certs(void)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && "
             "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=dlock-test-ca "
             "  -keyout ca.key -out ca.pem && "
             "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=other-ca "
             "  -keyout other.key -out other.pem && "
             "openssl req -newkey rsa:2048 -nodes -subj /CN=localhost "
             "  -keyout server.key -out server.csr && "
             "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > san.ext && "
             "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
             "  -extfile san.ext -out server.pem && "
             "openssl req -newkey rsa:2048 -nodes -subj /CN=dlock-client "
             "  -keyout client.key -out client.csr && "
             "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
             "  -out client.pem",
             dir);
    return sh(cmd);
}

static int group_setup(void **state)
{
    (void)state;
    if (dh_tmpdir(dir, sizeof dir, "tls") != 0 || make_certs() != 0)
        return -1;
    static char port[16], cert[300], key[300], ca[300];
    tls_port = dh_free_port();
    snprintf(port, sizeof port, "%d", tls_port);
    snprintf(cert, sizeof cert, "%s/server.pem", dir);
    snprintf(key, sizeof key, "%s/server.key", dir);
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    /* One option and its value a line. */
    /* clang-format off */
    const char *args[] = {
        "--tls-port", port,
        "--tls-cert-file", cert,
        "--tls-key-file", key,
        "--tls-ca-cert-file", ca,
        "--tls-auth-clients", "optional",
        NULL,
    };
    /* clang-format on */
    return dh_group_start(&srv, args);
}

static void url_for(char *out, size_t n, const char *params)
{
    snprintf(out, n, "rediss://127.0.0.1:%d%s", tls_port, params);
}

/* The TLS URL that trusts the CA file `ca` of the test's dir, with more
 * query parameters after it ("" for none). */
static void url_ca(char *out, size_t n, const char *ca, const char *more)
{
    char params[600];
    snprintf(params, sizeof params, "?cacert=%s/%s%s", dir, ca, more);
    url_for(out, n, params);
}

static void test_tls_lock_works(void **state)
{
    (void)state;
    char url[800];
    url_ca(url, sizeof url, "ca.pem", "");
    dlock_client *a = NULL, *b = NULL;
    dh_assert_rc(dlock_client_open(&a, url, NULL), 0);
    dh_assert_rc(dlock_client_open(&b, url, NULL), 0);
    dlock_lock *l, *x = NULL;
    dh_assert_rc(dlock_acquire(&l, a, "tls:job", NULL), 0);
    dh_assert_rc(dlock_try_acquire(&x, b, "tls:job", NULL), DLOCK_EBUSY);
    /* a waiter over TLS is woken by the release (pub/sub over TLS) */
    dlock_lock_opts o = dh_opts(0, 300);
    dh_assert_rc(dlock_acquire(&x, b, "tls:job", &o), DLOCK_ETIMEDOUT);
    dh_assert_rc(dlock_release(l), 0);
    dh_assert_rc(dlock_try_acquire(&x, b, "tls:job", NULL), 0);
    dh_assert_rc(dlock_release(x), 0);
    dlock_client_close(a);
    dlock_client_close(b);
}

static void test_tls_wrong_ca(void **state)
{
    (void)state;
    char url[800];
    url_ca(url, sizeof url, "other.pem", "");
    dlock_client *c = NULL;
    dh_assert_rc(dlock_client_open(&c, url, NULL), DLOCK_ECONN);
    assert_non_null(strstr(dlock_last_errmsg(), "certificate verify failed"));
    /* the name is checked too: sni=wrong.example does not match the cert */
    url_ca(url, sizeof url, "ca.pem", "&sni=wrong.example");
    dh_assert_rc(dlock_client_open(&c, url, NULL), DLOCK_ECONN);
    assert_non_null(strstr(dlock_last_errmsg(), "verify"));
    url_ca(url, sizeof url, "ca.pem", "&sni=localhost");
    dh_assert_rc(dlock_client_open(&c, url, NULL), 0);
    dlock_client_close(c);
}

static void test_tls_client_cert_and_bad_input(void **state)
{
    (void)state;
    char params[900], url[1200];
    snprintf(params, sizeof params, "?cacert=%s/ca.pem&cert=%s/client.pem&key=%s/client.key", dir,
             dir, dir);
    url_for(url, sizeof url, params);
    dlock_client *c = NULL;
    dh_assert_rc(dlock_client_open(&c, url, NULL), 0);
    dlock_lock *l;
    dh_assert_rc(dlock_acquire(&l, c, "tls:cert", NULL), 0);
    dh_assert_rc(dlock_release(l), 0);
    dlock_client_close(c);
    /* cert without key, a missing file, an unknown parameter */
    snprintf(params, sizeof params, "?cert=%s/client.pem", dir);
    url_for(url, sizeof url, params);
    dh_assert_rc(dlock_client_open(&c, url, NULL), DLOCK_EINVAL);
    url_for(url, sizeof url, "?cacert=/nonexistent/ca.pem");
    dh_assert_rc(dlock_client_open(&c, url, NULL), DLOCK_EINVAL);
    assert_non_null(strstr(dlock_last_errmsg(), "/nonexistent/ca.pem"));
    url_for(url, sizeof url, "?verify=no");
    dh_assert_rc(dlock_client_open(&c, url, NULL), DLOCK_EINVAL);
    /* TLS to a plain-text port fails cleanly */
    snprintf(url, sizeof url, "rediss://127.0.0.1:%d?cacert=%s/ca.pem", srv->port, dir);
    dh_assert_rc(dlock_client_open(&c, url, NULL), DLOCK_ECONN);
    assert_non_null(strstr(dlock_last_errmsg(), "TLS"));
}

/* The server closes the connection under the client; the next calls
 * write into a dead TLS socket: the library must not let SIGPIPE kill the
 * process (a plain write() inside OpenSSL would). */
static void test_tls_no_sigpipe(void **state)
{
    (void)state;
    char url[800];
    url_ca(url, sizeof url, "ca.pem", "");
    dlock_client *c = NULL;
    dh_assert_rc(dlock_client_open(&c, url, NULL), 0);
    dlock_lock *l;
    dh_assert_rc(dlock_acquire(&l, c, "tls:pipe", NULL), 0);
    dh_assert_rc(dlock_release(l), 0);
    assert_int_equal(dh_cmd_ok(srv, 0, "CLIENT KILL TYPE normal"), 0);
    static char keys_buf[64][520];
    const char *keys[64];
    for (int i = 0; i < 64; i++) {
        memset(keys_buf[i], 'k', 500);
        snprintf(keys_buf[i] + 500, 20, "{t}%d", i);
        keys[i] = keys_buf[i];
    }
    dlock_lock_opts o = dh_opts(0, 0);
    int rc = dlock_acquire_all(&l, c, keys, 64, &o);
    /* alive: the stale connection was replaced, or the call failed cleanly */
    assert_true(rc == 0 || rc == DLOCK_ECONN);
    if (rc == 0)
        dh_assert_rc(dlock_release(l), 0);
    dlock_client_close(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tls_lock_works),
        cmocka_unit_test(test_tls_wrong_ca),
        cmocka_unit_test(test_tls_client_cert_and_bad_input),
        cmocka_unit_test(test_tls_no_sigpipe),
    };
    return cmocka_run_group_tests_name("tls", tests, group_setup, dh_group_teardown);
}
