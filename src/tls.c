/*
 * tls.c — TLS over a connected socket, with OpenSSL, as a dlock transport.
 *
 * hiredis 0.14 has no TLS; dlock's transport seam lets a TLS stream stand in
 * for a plain socket: the handshake runs non-blocking under the connect
 * deadline, and reads/writes map OpenSSL's WANT_READ/WANT_WRITE onto the
 * transport's "wait for POLLIN/POLLOUT". The server certificate is always
 * verified: against cacert= (else the system's CAs), and its name against
 * sni= (else the host or IP address of the URL). cert=/key= present a
 * client certificate. Data OpenSSL has already decrypted but not handed
 * out is reported by pending(), so nobody waits on the socket for it.
 *
 * OpenSSL writes to the socket with write(), which raises SIGPIPE when the
 * server has gone (plain sockets use send(MSG_NOSIGNAL)). A library must not
 * kill its host process, so every OpenSSL call runs with SIGPIPE blocked in
 * the calling thread, and a SIGPIPE it raised is consumed before unblocking.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>

#include "alloc.h"
#include "clock.h"
#include "error.h"
#include "tls.h"

typedef struct tls_transport {
    dlock__transport base;
    dlock__transport *inner;
    SSL_CTX *ctx;
    SSL *ssl;
} tls_transport;

typedef struct sigpipe_guard {
    sigset_t old;
    int was_pending;
} sigpipe_guard;

/* Block SIGPIPE in this thread (remembering whether one was pending). */
static void sigpipe_block(sigpipe_guard *g)
{
    sigset_t set, pend;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigemptyset(&pend);
    sigpending(&pend);
    g->was_pending = sigismember(&pend, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &set, &g->old);
}

/* Consume a SIGPIPE our call raised, then restore the signal mask. */
static void sigpipe_unblock(sigpipe_guard *g)
{
    sigset_t set, pend;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigemptyset(&pend);
    sigpending(&pend);
    if (!g->was_pending && sigismember(&pend, SIGPIPE) == 1) {
        struct timespec zero = { 0, 0 };
        while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR) {
        }
    }
    pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

/* The hint added when a handshake fails the way it does against a server
 * that does not speak TLS at all (a plain redis:// port answers the
 * ClientHello with an error line, or not at all). */
#define NOT_TLS_HINT " (the server may not speak TLS: is it a plain redis:// port?)"

/* 1 if the pending OpenSSL error says the peer's bytes were not TLS. */
static int peer_not_tls(void)
{
    unsigned long e = ERR_peek_error();
    if (ERR_GET_LIB(e) != ERR_LIB_SSL)
        return 0;
    switch (ERR_GET_REASON(e)) {
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_UNKNOWN_PROTOCOL:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
    case SSL_R_RECORD_LENGTH_MISMATCH:
#ifdef SSL_R_UNEXPECTED_EOF_WHILE_READING
    case SSL_R_UNEXPECTED_EOF_WHILE_READING:
#endif
        return 1;
    default:
        return 0;
    }
}

/* The most recent OpenSSL error as text. */
static const char *ssl_reason(void)
{
    static _Thread_local char buf[160];
    unsigned long e = ERR_get_error();
    if (!e)
        return "unknown error";
    ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    return buf;
}

/* Map an SSL I/O result to the transport convention. */
static ssize_t io_result(tls_transport *t, int r, int *want, const char *what)
{
    if (r > 0)
        return r;
    int e = SSL_get_error(t->ssl, r);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        *want = POLLIN;
        return DLOCK__IO_AGAIN;
    case SSL_ERROR_WANT_WRITE:
        *want = POLLOUT;
        return DLOCK__IO_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return dlock__err(DLOCK_ECONN, "%s: TLS connection closed by the server", t->base.desc);
    case SSL_ERROR_SYSCALL:
        ERR_clear_error();
        return dlock__err(DLOCK_ECONN, "%s: %s: %s", t->base.desc, what,
                          errno ? strerror(errno) : "connection closed by the server");
    default:
        return dlock__err(DLOCK_ECONN, "%s: %s: %s", t->base.desc, what, ssl_reason());
    }
}

/* One SSL_read into rbuf or SSL_write from wbuf (the other is NULL), with
 * SIGPIPE held off (a peer that closed must not kill the process). */
static ssize_t tls_io(dlock__transport *tr, void *rbuf, const void *wbuf, size_t n, int *want)
{
    tls_transport *t = (tls_transport *)tr;
    int len = n > INT32_MAX ? INT32_MAX : (int)n;
    sigpipe_guard g;
    sigpipe_block(&g);
    errno = 0;
    int r = rbuf ? SSL_read(t->ssl, rbuf, len) : SSL_write(t->ssl, wbuf, len);
    ssize_t res = io_result(t, r, want, rbuf ? "TLS read" : "TLS write");
    sigpipe_unblock(&g);
    return res;
}

static ssize_t tls_read(dlock__transport *tr, void *buf, size_t n, int *want)
{
    return tls_io(tr, buf, NULL, n, want);
}

static ssize_t tls_write(dlock__transport *tr, const void *buf, size_t n, int *want)
{
    return tls_io(tr, NULL, buf, n, want);
}

static int tls_poll_fd(dlock__transport *tr)
{
    tls_transport *t = (tls_transport *)tr;
    return t->inner->ops->poll_fd(t->inner);
}

static int tls_pending(dlock__transport *tr)
{
    return SSL_pending(((tls_transport *)tr)->ssl) > 0;
}

static void tls_close(dlock__transport *tr)
{
    tls_transport *t = (tls_transport *)tr;
    if (t->ssl)
        SSL_free(t->ssl);
    if (t->ctx)
        SSL_CTX_free(t->ctx);
    t->inner->ops->close(t->inner);
    dlock__free(t);
}

static const dlock__transport_ops tls_ops = { tls_read, tls_write, tls_poll_fd, tls_close,
                                              tls_pending };

/* Set up the context: verification, CA file, client certificate. */
static int make_ctx(SSL_CTX **out, const dlock__endpoint *ep)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        return dlock__err(DLOCK_ENOMEM, "TLS: %s", ssl_reason());
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    int ok = ep->cacert ? SSL_CTX_load_verify_locations(ctx, ep->cacert, NULL)
                        : SSL_CTX_set_default_verify_paths(ctx);
    if (!ok) {
        SSL_CTX_free(ctx);
        return dlock__err(DLOCK_EINVAL, "TLS: cannot load the CA certificates %s: %s",
                          ep->cacert ? ep->cacert : "(system)", ssl_reason());
    }
    if (ep->cert && (SSL_CTX_use_certificate_chain_file(ctx, ep->cert) != 1 ||
                     SSL_CTX_use_PrivateKey_file(ctx, ep->key, SSL_FILETYPE_PEM) != 1 ||
                     SSL_CTX_check_private_key(ctx) != 1)) {
        SSL_CTX_free(ctx);
        return dlock__err(DLOCK_EINVAL, "TLS: cannot load the client certificate %s / key %s: %s",
                          ep->cert, ep->key, ssl_reason());
    }
    *out = ctx;
    return 0;
}

/* Names the server t must prove to be: the SNI name (unless an address)
 * and the host name or IP address its certificate is checked against.
 * Returns 0 or DLOCK_EINVAL. */
static int expect_peer(tls_transport *t, const dlock__endpoint *ep)
{
    const char *name = ep->sni ? ep->sni : ep->host;
    unsigned char addr[16];
    int is_ip = inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1;
    X509_VERIFY_PARAM *param = SSL_get0_param(t->ssl);
    if (!is_ip)
        SSL_set_tlsext_host_name(t->ssl, name);
    if ((is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, name)
               : X509_VERIFY_PARAM_set1_host(param, name, 0)) != 1 ||
        SSL_set_fd(t->ssl, t->inner->ops->poll_fd(t->inner)) != 1)
        return dlock__err(DLOCK_EINVAL, "TLS: cannot set up the connection to %s: %s", name,
                          ssl_reason());
    return 0;
}

/* The error for a handshake that failed with SSL error e: a certificate
 * that did not verify, a closed connection, or OpenSSL's reason, with a
 * hint when the server does not seem to speak TLS. Returns DLOCK_ECONN. */
static int handshake_error(tls_transport *t, int e)
{
    long v = SSL_get_verify_result(t->ssl);
    if (v != X509_V_OK)
        return dlock__err(DLOCK_ECONN,
                          "TLS handshake with %s failed: certificate verify failed: %s",
                          t->base.desc, X509_verify_cert_error_string(v));
    if (e == SSL_ERROR_SYSCALL)
        return dlock__err(DLOCK_ECONN, "TLS handshake with %s failed: connection closed%s",
                          t->base.desc, NOT_TLS_HINT);
    int not_tls = peer_not_tls();
    return dlock__err(DLOCK_ECONN, "TLS handshake with %s failed: %s%s", t->base.desc, ssl_reason(),
                      not_tls ? NOT_TLS_HINT : "");
}

/* The TLS handshake, waiting on the inner transport until deadline_ns.
 * Returns 0 or DLOCK_ECONN (or the inner transport's error). */
static int handshake(tls_transport *t, int64_t deadline_ns)
{
    for (;;) {
        ERR_clear_error();
        sigpipe_guard g;
        sigpipe_block(&g);
        int r = SSL_connect(t->ssl);
        int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
        sigpipe_unblock(&g);
        if (r == 1)
            return 0;
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
            return handshake_error(t, e);
        int w = dlock__transport_wait(t->inner, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT,
                                      deadline_ns);
        if (w == DLOCK_ETIMEDOUT)
            return dlock__err(DLOCK_ECONN, "TLS handshake with %s: timed out%s", t->base.desc,
                              NOT_TLS_HINT);
        if (w)
            return w;
    }
}

int dlock__tls_wrap(dlock__transport **tr, const dlock__endpoint *ep, int64_t deadline_ns)
{
    tls_transport *t = dlock__calloc(1, sizeof *t);
    if (!t)
        return dlock__err(DLOCK_ENOMEM, "out of memory");
    t->base.ops = &tls_ops;
    t->base.desc = (*tr)->desc;
    t->inner = *tr;
    int rc = make_ctx(&t->ctx, ep);
    if (rc == 0 && !(t->ssl = SSL_new(t->ctx)))
        rc = dlock__err(DLOCK_ENOMEM, "TLS: %s", ssl_reason());
    if (rc == 0)
        rc = expect_peer(t, ep);
    if (rc == 0)
        rc = handshake(t, deadline_ns);
    if (rc) {
        t->inner = NULL;
        if (t->ssl)
            SSL_free(t->ssl);
        if (t->ctx)
            SSL_CTX_free(t->ctx);
        dlock__free(t);
        return rc; /* *tr is unchanged: the caller closes it */
    }
    *tr = &t->base;
    return 0;
}
