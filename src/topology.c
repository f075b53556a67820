/*
 * topology.c — URL lists into nodes (see topology.h).
 */
#include "topology.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "pool.h"

/* Split a URL list into its URLs: a comma followed by "scheme://" starts a
 * new URL; other commas belong to the URL (Sentinel seed hosts). Calls fn
 * for each; stops at the first error. */
static int split_urls(const char *list, int (*fn)(dlock_client *, const char *, size_t),
                      dlock_client *c)
{
    const char *start = list;
    for (const char *p = list;; p++) {
        int boundary = *p == '\0';
        if (*p == ',') {
            const char *q = p + 1;
            while ((*q >= 'a' && *q <= 'z') || *q == '-')
                q++;
            boundary = q > p + 1 && strncmp(q, "://", 3) == 0;
        }
        if (!boundary)
            continue;
        int rc = fn(c, start, (size_t)(p - start));
        if (rc || *p == '\0')
            return rc;
        start = p + 1;
    }
}

/* Copy the "user:pass@" part of a multi-host URL (everything up to the
 * last '@': a password may hold '/', '?' or ',') into userinfo, "" if none,
 * and advance *p past it. 0 or DLOCK_EINVAL (too long: never cut). */
static int take_userinfo(const char **p, char *userinfo, size_t n)
{
    const char *at = strrchr(*p, '@');
    userinfo[0] = '\0';
    if (!at)
        return 0;
    if ((size_t)(at - *p) + 2 > n)
        return dlock__err(DLOCK_EINVAL, "invalid URL: user name and password longer than %zu bytes",
                          n - 2);
    snprintf(userinfo, n, "%.*s@", (int)(at - *p), *p);
    *p = at + 1;
    return 0;
}

/* The parts of a Sentinel or Cluster URL:
 * "<scheme>://[user:pass@]h1:p1[,h2:p2...][/name][?params]". */
typedef struct multi_url {
    const char *scheme;  /* "redis://" or "rediss://", for each host's own URL */
    char userinfo[1024]; /* "user:pass@" or "" */
    const char *hosts;   /* the host list ... */
    size_t hosts_len;
    const char *name; /* ... and what follows '/' (the master), or NULL */
    size_t name_len;
    char tls_query[1024]; /* "?cacert=..." for each host's URL, or "" */
    int db, replicas;     /* ?db=N (Sentinel), ?replicas=N (-1: not given) */
} multi_url;

/* Split the parameters "a=b&c=d": validate each (TLS ones only with TLS,
 * db only if allowed), keep the TLS ones as text for the hosts' URLs. */
static int multi_params(multi_url *m, const char *q, int tls, int allow_db)
{
    dlock__endpoint scratch;
    memset(&scratch, 0, sizeof scratch);
    scratch.tls = tls;
    scratch.replicas = -1;
    size_t len = 0;
    int rc = 0;
    while (*q && rc == 0) {
        const char *amp = strchr(q, '&');
        size_t n = amp ? (size_t)(amp - q) : strlen(q);
        rc = dlock__url_param(&scratch, q, n, allow_db);
        int is_tls = strncmp(q, "replicas=", 9) != 0 && strncmp(q, "db=", 3) != 0;
        if (rc == 0 && is_tls) {
            if (len + n + 2 >= sizeof m->tls_query)
                rc = dlock__err(DLOCK_EINVAL, "invalid URL: parameters longer than %zu bytes",
                                sizeof m->tls_query - 2);
            else
                len += (size_t)snprintf(m->tls_query + len, sizeof m->tls_query - len, "%c%.*s",
                                        len ? '&' : '?', (int)n, q);
        }
        q += n + (amp ? 1 : 0);
    }
    m->db = scratch.db;
    m->replicas = scratch.replicas;
    dlock__endpoint_clear(&scratch);
    return rc;
}

/* Parse a Sentinel or Cluster URL after its scheme (plain or TLS). */
static int parse_multi(multi_url *m, const char *p, int tls, int with_name)
{
    memset(m, 0, sizeof *m);
    m->scheme = tls ? "rediss://" : "redis://";
    int rc = take_userinfo(&p, m->userinfo, sizeof m->userinfo);
    if (rc)
        return rc;
    const char *q = strchr(p, '?');
    const char *end = q ? q : p + strlen(p);
    const char *slash = memchr(p, '/', (size_t)(end - p));
    if (with_name && (!slash || slash + 1 == end))
        return dlock__err(DLOCK_EINVAL,
                          "invalid URL: a Sentinel URL needs /mastername after the hosts");
    if (!with_name && slash)
        return dlock__err(DLOCK_EINVAL,
                          "invalid URL: a Cluster URL takes only hosts (a cluster has "
                          "one database)");
    m->hosts = p;
    m->hosts_len = (size_t)((slash ? slash : end) - p);
    if (slash) {
        m->name = slash + 1;
        m->name_len = (size_t)(end - slash - 1);
        if (m->name_len > 200)
            return dlock__err(DLOCK_EINVAL, "invalid URL: bad master name");
    }
    if (m->hosts_len == 0)
        return dlock__err(DLOCK_EINVAL, "invalid URL: no hosts");
    m->replicas = -1;
    return q ? multi_params(m, q + 1, tls, with_name) : 0;
}

/* Parse host number `i` ("host:port", n bytes at h) of m into *ep, as
 * scheme + [userinfo] + host + TLS parameters. */
static int multi_host(dlock__endpoint *ep, const multi_url *m, const char *h, size_t n,
                      int with_userinfo, const char *what, int i)
{
    char one[2600];
    if (n > 300)
        return dlock__err(DLOCK_EINVAL, "invalid URL: %s %d is too long", what, i + 1);
    snprintf(one, sizeof one, "%s%s%.*s%s", m->scheme, with_userinfo ? m->userinfo : "", (int)n, h,
             m->tls_query);
    int rc = dlock__url_parse(ep, one);
    if (rc)
        return dlock__err_prefix(rc, "%s %d", what, i + 1);
    ep->replicas = m->replicas;
    return 0;
}

/* Parse "redis[s]-sentinel://[user:pass@]h1:p1[,h2:p2...]/master[?db=N&
 * replicas=N&cacert=...]": the sentinels, and node 0 for the master (its
 * address found by the first look-up; the URL's credentials, database and
 * TLS settings apply to it, the TLS settings to the sentinels too). */
static int parse_sentinel(dlock_client *c, const char *p, int tls)
{
    multi_url m;
    int rc = parse_multi(&m, p, tls, 1);
    if (rc == 0 && !(c->master_name = dlock__strndup(m.name, m.name_len)))
        rc = dlock__err(DLOCK_ENOMEM, "out of memory");
    for (const char *h = m.hosts, *e; rc == 0 && h < m.hosts + m.hosts_len; h = e + 1) {
        e = memchr(h, ',', (size_t)(m.hosts + m.hosts_len - h));
        if (!e)
            e = m.hosts + m.hosts_len;
        if (c->nsentinels == DLOCK__NODES_MAX)
            return dlock__err(DLOCK_EINVAL, "invalid URL: more than %d sentinels",
                              DLOCK__NODES_MAX);
        dlock__endpoint *s = dlock__realloc(c->sentinels, (size_t)(c->nsentinels + 1) * sizeof *s);
        if (!s)
            return dlock__err(DLOCK_ENOMEM, "out of memory");
        c->sentinels = s;
        rc = multi_host(&c->sentinels[c->nsentinels], &m, h, (size_t)(e - h), 0, "sentinel",
                        c->nsentinels);
        if (rc == 0)
            c->nsentinels++;
    }
    if (rc)
        return rc;
    c->nodes = dlock__calloc(1, sizeof *c->nodes);
    if (!c->nodes)
        return dlock__err(DLOCK_ENOMEM, "out of memory");
    char master[16];
    int n = snprintf(master, sizeof master, "0.0.0.0/%d", m.db);
    if ((rc = multi_host(&c->nodes[0].ep, &m, master, (size_t)n, 1, "master", 0)) == 0)
        c->nnodes = 1;
    return rc;
}

/* Parse "redis[s]-cluster://[user:pass@]h1:p1[,h2:p2...][?replicas=N&
 * cacert=...]": the seed nodes. The node array gets its full capacity now:
 * nodes found later in the slot map are added in place (listeners and
 * pools keep their addresses) with the seeds' credentials and TLS. */
static int parse_cluster(dlock_client *c, const char *p, int tls)
{
    multi_url m;
    int rc = parse_multi(&m, p, tls, 0);
    if (rc)
        return rc;
    if (!(c->nodes = dlock__calloc(DLOCK__NODES_MAX, sizeof *c->nodes)))
        return dlock__err(DLOCK_ENOMEM, "out of memory");
    for (const char *h = m.hosts, *e; rc == 0 && h < m.hosts + m.hosts_len; h = e + 1) {
        e = memchr(h, ',', (size_t)(m.hosts + m.hosts_len - h));
        if (!e)
            e = m.hosts + m.hosts_len;
        if (c->nnodes == DLOCK__NODES_MAX)
            return dlock__err(DLOCK_EINVAL, "invalid URL: more than %d cluster nodes",
                              DLOCK__NODES_MAX);
        rc = multi_host(&c->nodes[c->nnodes].ep, &m, h, (size_t)(e - h), 1, "cluster node",
                        c->nnodes);
        if (rc == 0)
            c->nnodes++;
    }
    return rc;
}

/* The Sentinel and Cluster schemes, plain and TLS. */
static int scheme_is(const char *url, const char *name, int *tls, const char **rest)
{
    char plain[32], secure[32];
    snprintf(plain, sizeof plain, "redis-%s://", name);
    snprintf(secure, sizeof secure, "rediss-%s://", name);
    if (strncmp(url, plain, strlen(plain)) == 0) {
        *tls = 0;
        *rest = url + strlen(plain);
        return 1;
    }
    if (strncmp(url, secure, strlen(secure)) == 0) {
        *tls = 1;
        *rest = url + strlen(secure);
        return 1;
    }
    return 0;
}

/* Add one server URL as a node. */
static int add_node(dlock_client *c, const char *url, size_t len)
{
    char buf[4200];
    if (len >= sizeof buf)
        return dlock__err(DLOCK_EINVAL, "invalid URL: too long");
    memcpy(buf, url, len);
    buf[len] = '\0';
    int tls;
    const char *rest;
    if (scheme_is(buf, "sentinel", &tls, &rest)) {
        if (c->nnodes || c->backend == DLOCK__BACKEND_SENTINEL)
            return dlock__err(
                DLOCK_EINVAL,
                "invalid URL: a redis-sentinel:// URL cannot be combined with other URLs");
        c->backend = DLOCK__BACKEND_SENTINEL;
        return parse_sentinel(c, rest, tls);
    }
    if (scheme_is(buf, "cluster", &tls, &rest)) {
        if (c->nnodes || c->backend != DLOCK__BACKEND_SINGLE)
            return dlock__err(
                DLOCK_EINVAL,
                "invalid URL: a redis-cluster:// URL cannot be combined with other URLs");
        c->backend = DLOCK__BACKEND_CLUSTER;
        return parse_cluster(c, rest, tls);
    }
    if (c->backend == DLOCK__BACKEND_CLUSTER)
        return dlock__err(DLOCK_EINVAL,
                          "invalid URL: a redis-cluster:// URL cannot be combined with other URLs");
    if (c->backend == DLOCK__BACKEND_SENTINEL)
        return dlock__err(
            DLOCK_EINVAL,
            "invalid URL: a redis-sentinel:// URL cannot be combined with other URLs");
    if (c->nnodes == DLOCK__NODES_MAX)
        return dlock__err(DLOCK_EINVAL, "too many servers: at most %d", DLOCK__NODES_MAX);
    dlock__node *nodes = dlock__realloc(c->nodes, (size_t)(c->nnodes + 1) * sizeof *nodes);
    if (!nodes)
        return dlock__err(DLOCK_ENOMEM, "out of memory");
    c->nodes = nodes;
    memset(&c->nodes[c->nnodes], 0, sizeof c->nodes[0]);
    int rc = dlock__url_parse(&c->nodes[c->nnodes].ep, buf);
    if (rc)
        return c->nnodes ? dlock__err_prefix(rc, "URL %d", c->nnodes + 1) : rc;
    for (int i = 0; i < c->nnodes; i++)
        if (strcmp(c->nodes[i].ep.desc, c->nodes[c->nnodes].ep.desc) == 0) {
            dlock__endpoint_clear(&c->nodes[c->nnodes].ep);
            return dlock__err(DLOCK_EINVAL, "server %s is listed twice", c->nodes[i].ep.desc);
        }
    c->nnodes++;
    return 0;
}

int dlock__topology_parse(dlock_client *c, const char *list)
{
    if (!list[0])
        return dlock__err(DLOCK_EINVAL,
                          "invalid URL: empty (expected redis://host:port or unix:///path.sock)");
    int rc = split_urls(list, add_node, c);
    if (rc == 0 && c->nnodes > 1 && c->backend == DLOCK__BACKEND_SINGLE)
        c->backend = DLOCK__BACKEND_REDLOCK;
    c->voters = c->backend == DLOCK__BACKEND_REDLOCK ? c->nnodes : 1;
    c->quorum = c->voters / 2 + 1;
    return rc;
}

void dlock__topology_free(dlock_client *c)
{
    for (int i = 0; i < c->nnodes; i++) {
        dlock__pool_drain(&c->nodes[i]);
        dlock__endpoint_clear(&c->nodes[i].ep);
    }
    dlock__free(c->nodes);
    c->nodes = NULL;
    c->nnodes = 0;
    for (int i = 0; i < c->nsentinels; i++)
        dlock__endpoint_clear(&c->sentinels[i]);
    dlock__free(c->sentinels);
    c->sentinels = NULL;
    c->nsentinels = 0;
    dlock__free(c->master_name);
    c->master_name = NULL;
}
