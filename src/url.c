/*
 * url.c — Redis URL parser (see url.h).
 *
 * The parser is strict: an unknown scheme, an empty host, a port outside
 * 1..65535, a database that is not a small non-negative number, or an unknown
 * query parameter is an error with a message, never a silent default. It
 * works on (pointer, length) slices of the input so nothing is copied until
 * the result is known to be valid.
 */
#include "url.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"

void dlock__endpoint_clear(dlock__endpoint *ep)
{
    if (!ep)
        return;
    dlock__free(ep->host);
    dlock__free(ep->path);
    dlock__free(ep->user);
    if (ep->pass) {
        /* do not leave the secret in freed memory */
        volatile char *p = ep->pass;
        while (*p)
            *p++ = 0;
    }
    dlock__free(ep->pass);
    dlock__free(ep->cacert);
    dlock__free(ep->cert);
    dlock__free(ep->key);
    dlock__free(ep->sni);
    memset(ep, 0, sizeof *ep);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decode s[0..n) into a new string. *out is NULL on failure.
 * Returns 0, DLOCK_EINVAL (bad escape or NUL byte) or DLOCK_ENOMEM. */
static int pct_decode(char **out, const char *s, size_t n, const char *what)
{
    *out = NULL;
    char *d = dlock__malloc(n + 1);
    if (!d)
        return dlock__err(DLOCK_ENOMEM, "out of memory parsing the URL");
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            if (i + 2 >= n) {
                dlock__free(d);
                return dlock__err(DLOCK_EINVAL, "invalid URL: bad %%-escape in the %s", what);
            }
            int a = hexval(s[i + 1]), b = hexval(s[i + 2]);
            if (a < 0 || b < 0 || (a == 0 && b == 0)) {
                dlock__free(d);
                return dlock__err(DLOCK_EINVAL, "invalid URL: bad %%-escape in the %s", what);
            }
            d[j++] = (char)(a * 16 + b);
            i += 2;
        } else {
            d[j++] = s[i];
        }
    }
    d[j] = '\0';
    *out = d;
    return 0;
}

/* Parse a decimal number s[0..n) in [lo, hi]. Returns 0 or -1. */
static int parse_num(const char *s, size_t n, long lo, long hi, long *out)
{
    if (n == 0 || n > 10)
        return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* Split "user:pass" (already located) into ep->user/ep->pass. */
static int parse_userinfo(dlock__endpoint *ep, const char *s, size_t n)
{
    const char *colon = memchr(s, ':', n);
    size_t ulen = colon ? (size_t)(colon - s) : n;
    int rc;
    if (ulen > 0 && (rc = pct_decode(&ep->user, s, ulen, "user name")) != 0)
        return rc;
    if (colon && (rc = pct_decode(&ep->pass, colon + 1, n - ulen - 1, "password")) != 0)
        return rc;
    if (ep->pass && !ep->pass[0]) {
        dlock__free(ep->pass);
        ep->pass = NULL;
    }
    return 0;
}

int dlock__url_param(dlock__endpoint *ep, const char *q, size_t n, int allow_db)
{
    const char *eq = memchr(q, '=', n);
    if (!eq || eq == q + n - 1)
        return dlock__err(DLOCK_EINVAL, "invalid URL: parameter '%.*s' needs a value",
                          (int)(n > 40 ? 40 : n), q);
    size_t kl = (size_t)(eq - q), vl = n - kl - 1;
    long v;
    if (kl == 8 && !strncmp(q, "replicas", 8)) {
        if (parse_num(eq + 1, vl, 0, 100, &v) != 0)
            return dlock__err(DLOCK_EINVAL,
                              "invalid URL: replicas= must be a number from 0 to 100");
        ep->replicas = (int)v;
        return 0;
    }
    if (kl == 2 && !strncmp(q, "db", 2) && allow_db) {
        if (parse_num(eq + 1, vl, 0, 1000000, &v) != 0)
            return dlock__err(DLOCK_EINVAL, "invalid URL: db= must be a number");
        ep->db = (int)v;
        return 0;
    }
    char **dst = !ep->tls                              ? NULL
                 : kl == 6 && !strncmp(q, "cacert", 6) ? &ep->cacert
                 : kl == 4 && !strncmp(q, "cert", 4)   ? &ep->cert
                 : kl == 3 && !strncmp(q, "key", 3)    ? &ep->key
                 : kl == 3 && !strncmp(q, "sni", 3)    ? &ep->sni
                                                       : NULL;
    if (!dst)
        return dlock__err(DLOCK_EINVAL, "invalid URL: unknown parameter '%.*s' (%s)",
                          (int)(kl > 40 ? 40 : kl), q,
                          ep->tls    ? "cacert, cert, key, sni, replicas"
                          : allow_db ? "db, replicas"
                                     : "replicas; TLS files need rediss://");
    dlock__free(*dst);
    *dst = NULL;
    return pct_decode(dst, eq + 1, vl, "TLS parameter");
}

/* The parameters "a=b&c=d" of a URL into ep. */
static int parse_params(dlock__endpoint *ep, const char *q, int allow_db)
{
    while (*q) {
        const char *amp = strchr(q, '&');
        size_t n = amp ? (size_t)(amp - q) : strlen(q);
        int rc = dlock__url_param(ep, q, n, allow_db);
        if (rc)
            return rc;
        q += n + (amp ? 1 : 0);
    }
    if (!ep->cert != !ep->key)
        return dlock__err(DLOCK_EINVAL, "invalid URL: cert= and key= go together");
    return 0;
}

/* host[:port] or [ipv6][:port] between hs and hend into ep->host,
 * ep->port and ep->desc. Returns 0, DLOCK_EINVAL or DLOCK_ENOMEM. */
static int parse_hostport(dlock__endpoint *ep, const char *hs, const char *hend)
{
    const char *he, *portp = NULL;
    if (*hs == '[') {
        const char *rb = memchr(hs, ']', (size_t)(hend - hs));
        if (!rb)
            return dlock__err(DLOCK_EINVAL, "invalid URL: missing ']' after IPv6 address");
        he = rb;
        hs++;
        if (rb + 1 < hend) {
            if (rb[1] != ':')
                return dlock__err(DLOCK_EINVAL, "invalid URL: unexpected text after ']'");
            portp = rb + 2;
        }
    } else {
        const char *colon = memchr(hs, ':', (size_t)(hend - hs));
        he = colon ? colon : hend;
        if (colon)
            portp = colon + 1;
    }
    if (he == hs)
        return dlock__err(DLOCK_EINVAL, "invalid URL: no host name");
    if (portp) {
        long port;
        if (parse_num(portp, (size_t)(hend - portp), 1, 65535, &port) != 0)
            return dlock__err(DLOCK_EINVAL, "invalid URL: port must be a number from 1 to 65535");
        ep->port = (int)port;
    }
    for (const char *q = hs; q < he; q++)
        if (*q <= ' ' || *q == '/' || *q == '@' || *q == ',')
            return dlock__err(DLOCK_EINVAL, "invalid URL: bad character in host name");
    ep->host = dlock__strndup(hs, (size_t)(he - hs));
    if (!ep->host)
        return dlock__err(DLOCK_ENOMEM, "out of memory parsing the URL");
    if (strchr(ep->host, ':'))
        snprintf(ep->desc, sizeof ep->desc, "[%s]:%d", ep->host, ep->port);
    else
        snprintf(ep->desc, sizeof ep->desc, "%s:%d", ep->host, ep->port);
    return 0;
}

/* redis[s]://[userinfo@]host[:port][/db][?tls params] — `p` points after
 * the scheme. */
static int parse_tcp(dlock__endpoint *ep, const char *p)
{
    ep->kind = DLOCK__EP_TCP;
    ep->port = 6379;
    size_t len = strlen(p);
    const char *end = p + len;
    /* The user info ends at the last '@' (a password may hold '@', '?' or
     * '/'); parameters start at the first '?' after it. An '@' in a TLS file
     * name must be written %40. */
    const char *last_at = strrchr(p, '@');
    const char *query = strchr(last_at ? last_at + 1 : p, '?');
    int rc;
    if (query) {
        if ((rc = parse_params(ep, query + 1, 0)) != 0)
            return rc;
        end = query;
    }
    const char *at = NULL;
    for (const char *q = p; q < end; q++)
        if (*q == '@')
            at = q; /* last '@': passwords may contain '@' unescaped */
    const char *host = p;
    if (at) {
        if ((rc = parse_userinfo(ep, p, (size_t)(at - p))) != 0)
            return rc;
        host = at + 1;
    }
    const char *slash = memchr(host, '/', (size_t)(end - host));
    const char *hend = slash ? slash : end;
    if ((rc = parse_hostport(ep, host, hend)) != 0)
        return rc;
    if (slash && slash + 1 < end) {
        long db;
        if (parse_num(slash + 1, (size_t)(end - slash - 1), 0, 1000000, &db) != 0)
            return dlock__err(DLOCK_EINVAL,
                              "invalid URL: database after '/' must be a number (e.g. /0)");
        ep->db = (int)db;
    }
    return 0;
}

/* unix://[userinfo@]/path[?db=N] — `p` points after "unix://". */
static int parse_unix(dlock__endpoint *ep, const char *p)
{
    ep->kind = DLOCK__EP_UNIX;
    const char *path = p;
    int rc;
    const char *at = strchr(p, '@');
    if (at && (path = strchr(p, '/')) != NULL && at < path) {
        if ((rc = parse_userinfo(ep, p, (size_t)(at - p))) != 0)
            return rc;
        path = at + 1;
    } else {
        path = p;
    }
    if (*path != '/')
        return dlock__err(
            DLOCK_EINVAL,
            "invalid URL: unix:// needs an absolute socket path, e.g. unix:///run/redis.sock");
    const char *q = strchr(path, '?');
    size_t plen = q ? (size_t)(q - path) : strlen(path);
    if (plen < 2)
        return dlock__err(DLOCK_EINVAL, "invalid URL: empty socket path");
    if (plen >= 108)
        return dlock__err(DLOCK_EINVAL, "invalid URL: socket path longer than 107 bytes");
    if (q && (rc = parse_params(ep, q + 1, 1)) != 0)
        return rc;
    ep->path = dlock__strndup(path, plen);
    if (!ep->path)
        return dlock__err(DLOCK_ENOMEM, "out of memory parsing the URL");
    snprintf(ep->desc, sizeof ep->desc, "%.120s", ep->path);
    return 0;
}

int dlock__url_parse(dlock__endpoint *out, const char *url)
{
    if (!out)
        return dlock__err(DLOCK_EINVAL, "no endpoint to fill");
    memset(out, 0, sizeof *out);
    out->replicas = -1;
    if (!url || !*url)
        return dlock__err(DLOCK_EINVAL,
                          "invalid URL: empty (expected redis://host:port or unix:///path.sock)");
    if (strlen(url) > 4096)
        return dlock__err(DLOCK_EINVAL, "invalid URL: longer than 4096 bytes");
    for (const char *c = url; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            return dlock__err(DLOCK_EINVAL, "invalid URL: control character");
    int rc;
    if (strncmp(url, "redis://", 8) == 0 || strncmp(url, "rediss://", 9) == 0) {
        out->tls = url[5] == 's';
        if (strchr(url, ','))
            return dlock__err(
                DLOCK_EINVAL,
                "invalid URL: one server per URL (several servers are separate URLs)");
        rc = parse_tcp(out, url + (out->tls ? 9 : 8));
    } else if (strncmp(url, "unix://", 7) == 0) {
        rc = parse_unix(out, url + 7);
    } else {
        const char *sep = strstr(url, "://");
        if (sep)
            rc = dlock__err(DLOCK_EINVAL,
                            "invalid URL: unknown scheme '%.*s' (expected redis://, rediss://, "
                            "unix://, redis[s]-sentinel:// or redis[s]-cluster://)",
                            (int)((sep - url) > 20 ? 20 : (sep - url)), url);
        else
            rc = dlock__err(
                DLOCK_EINVAL,
                "invalid URL: no scheme (expected e.g. redis://host:port or unix:///path.sock)");
    }
    if (rc != 0)
        dlock__endpoint_clear(out);
    return rc;
}

int dlock__endpoint_copy(dlock__endpoint *out, const dlock__endpoint *in)
{
    *out = *in;
    out->host = out->path = out->user = out->pass = NULL;
    out->cacert = out->cert = out->key = out->sni = NULL;
    if ((in->host && !(out->host = dlock__strdup(in->host))) ||
        (in->path && !(out->path = dlock__strdup(in->path))) ||
        (in->user && !(out->user = dlock__strdup(in->user))) ||
        (in->pass && !(out->pass = dlock__strdup(in->pass))) ||
        (in->cacert && !(out->cacert = dlock__strdup(in->cacert))) ||
        (in->cert && !(out->cert = dlock__strdup(in->cert))) ||
        (in->key && !(out->key = dlock__strdup(in->key))) ||
        (in->sni && !(out->sni = dlock__strdup(in->sni)))) {
        dlock__endpoint_clear(out);
        return dlock__err(DLOCK_ENOMEM, "out of memory");
    }
    return 0;
}
