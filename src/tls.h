/*
 * tls.h — TLS (OpenSSL) as a transport over a connected socket transport.
 */
#ifndef DLOCK_TLS_H
#define DLOCK_TLS_H
#include "transport.h"

/* Run a TLS handshake over the connected *t before deadline_ns and make *t
 * the TLS stream (tls.c). On failure *t is unchanged (the caller closes it):
 * DLOCK_ECONN (handshake failed, e.g. certificate verify failed: the message
 * says why), DLOCK_EINVAL (a CA/cert/key file cannot be loaded), ENOMEM. */
int dlock__tls_wrap(dlock__transport **t, const dlock__endpoint *ep, int64_t deadline_ns);

#endif
