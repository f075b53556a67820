/*
 * url.h — where a Redis server is and how to log in to it.
 *
 * A dlock__endpoint is the parsed form of one server URL:
 *   redis://[user[:pass]@]host[:port][/db][?replicas=N]   host may be [IPv6]
 *   rediss://... the same over TLS, [?cacert=F&cert=F&key=F&sni=NAME&replicas=N]
 *   unix://[user[:pass]@]/path/to.sock[?db=N&replicas=N]
 * User and password may be percent-encoded. Everything is validated here, so
 * the connection code can trust the fields.
 */
#ifndef DLOCK_URL_H
#define DLOCK_URL_H
#include <stddef.h>

enum { DLOCK__EP_TCP = 1, DLOCK__EP_UNIX = 2 };

typedef struct dlock__endpoint {
    int kind;
    char *host;                      /* TCP: host name or address (no brackets) */
    int port;                        /* TCP */
    char *path;                      /* UNIX: socket path */
    int db;                          /* SELECT index, 0 = default */
    int replicas;                    /* ?replicas=N: replicas that must acknowledge; -1 not given */
    char *user;                      /* NULL: none */
    char *pass;                      /* NULL: none */
    int tls;                         /* rediss:// */
    char *cacert, *cert, *key, *sni; /* TLS files and server name; NULL: none */
    char desc[128];                  /* "host:port" or the socket path: for messages, no secrets */
} dlock__endpoint;

/* Parse `url` into *out (zeroed first). Returns 0, DLOCK_EINVAL with a
 * message naming the problem (never the password), or DLOCK_ENOMEM. On
 * failure *out holds nothing to free. */
int dlock__url_parse(dlock__endpoint *out, const char *url);

/* Apply one "name=value" URL parameter (n bytes at q) to ep: cacert, cert,
 * key, sni (TLS only), replicas, and db if allow_db. 0 or DLOCK_EINVAL
 * (unknown name, bad value), DLOCK_ENOMEM. */
int dlock__url_param(dlock__endpoint *ep, const char *q, size_t n, int allow_db);

/* Free the strings of *ep and zero it. */
void dlock__endpoint_clear(dlock__endpoint *ep);

/* Deep copy. Returns 0 or DLOCK_ENOMEM. */
int dlock__endpoint_copy(dlock__endpoint *out, const dlock__endpoint *in);

#endif
