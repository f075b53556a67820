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
static int split_urls(const char *list, int (*fn)(dlock_client *, const char *, size_t), dlock_client *c)
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
        return dlock__err(DLOCK_EINVAL, "invalid URL: user name and password longer than %zu bytes", n - 2);
    snprintf(userinfo, n, "%.*s@", (int)(at - *p), *p);
    *p = at + 1;
    return 0;
}

/* Parse "redis-sentinel://[user:pass@]h1:p1[,h2:p2...]/master[?db=N]". */
static int parse_sentinel(dlock_client *c, const char *url)
{
    const char *p = url + strlen("redis-sentinel://");
    char userinfo[1024];
    int rc = take_userinfo(&p, userinfo, sizeof userinfo);
    if (rc)
        return rc;
    const char *slash = strchr(p, '/');
    if (!slash || !slash[1])
        return dlock__err(DLOCK_EINVAL, "invalid URL: redis-sentinel:// needs /mastername after the hosts");
    const char *q = strchr(slash, '?');
    size_t mlen = q ? (size_t)(q - slash - 1) : strlen(slash + 1);
    if (mlen == 0 || mlen > 200)
        return dlock__err(DLOCK_EINVAL, "invalid URL: bad master name");
    if (!(c->master_name = dlock__strndup(slash + 1, mlen)))
        return dlock__err(DLOCK_ENOMEM, "out of memory");
    int db = 0;
    if (q) {
        char *end;
        long v = strncmp(q, "?db=", 4) == 0 ? strtol(q + 4, &end, 10) : -1;
        if (v < 0 || v > 1000000 || q[4] == '\0' || *end)
            return dlock__err(DLOCK_EINVAL, "invalid URL: only ?db=N may follow the master name");
        db = (int)v;
    }
    /* sentinels: each host of the list */
    const char *h = p;
    while (h < slash) {
        const char *e = memchr(h, ',', (size_t)(slash - h));
        if (!e)
            e = slash;
        if (c->nsentinels == DLOCK__NODES_MAX)
            return dlock__err(DLOCK_EINVAL, "invalid URL: more than %d sentinels", DLOCK__NODES_MAX);
        char one[300];
        if ((size_t)(e - h) + 9 > sizeof one)
            return dlock__err(DLOCK_EINVAL, "invalid URL: sentinel host %d is too long", c->nsentinels + 1);
        snprintf(one, sizeof one, "redis://%.*s", (int)(e - h), h);
        dlock__endpoint *s = dlock__realloc(c->sentinels, (size_t)(c->nsentinels + 1) * sizeof *s);
        if (!s)
            return dlock__err(DLOCK_ENOMEM, "out of memory");
        c->sentinels = s;
        rc = dlock__url_parse(&c->sentinels[c->nsentinels], one);
        if (rc)
            return dlock__err_prefix(rc, "sentinel %d", c->nsentinels + 1);
        c->nsentinels++;
        h = e + 1;
    }
    if (c->nsentinels == 0)
        return dlock__err(DLOCK_EINVAL, "invalid URL: no sentinel hosts");
    /* node 0: the master, address filled in by the first look-up; the
     * credentials and database of the URL apply to it */
    char master_url[1100];
    snprintf(master_url, sizeof master_url, "redis://%s0.0.0.0/%d", userinfo, db);
    c->nodes = dlock__calloc(1, sizeof *c->nodes);
    if (!c->nodes)
        return dlock__err(DLOCK_ENOMEM, "out of memory");
    c->nnodes = 1;
    return dlock__url_parse(&c->nodes[0].ep, master_url);
}

/* Parse "redis-cluster://[user:pass@]h1:p1[,h2:p2...]": the seed nodes.
 * The node array gets its full capacity now: nodes found later in the slot
 * map are added in place (listeners and pools keep their addresses). */
static int parse_cluster(dlock_client *c, const char *url)
{
    const char *p = url + strlen("redis-cluster://");
    char userinfo[1024];
    int rc = take_userinfo(&p, userinfo, sizeof userinfo);
    if (rc)
        return rc;
    if (strpbrk(p, "/?"))
        return dlock__err(DLOCK_EINVAL, "invalid URL: redis-cluster:// takes only hosts (a cluster has one database)");
    if (!(c->nodes = dlock__calloc(DLOCK__NODES_MAX, sizeof *c->nodes)))
        return dlock__err(DLOCK_ENOMEM, "out of memory");
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (c->nnodes == DLOCK__NODES_MAX)
            return dlock__err(DLOCK_EINVAL, "invalid URL: more than %d cluster nodes", DLOCK__NODES_MAX);
        char one[1400];
        if (n > 300)
            return dlock__err(DLOCK_EINVAL, "invalid URL: cluster node %d is too long", c->nnodes + 1);
        snprintf(one, sizeof one, "redis://%s%.*s", userinfo, (int)n, p);
        rc = dlock__url_parse(&c->nodes[c->nnodes].ep, one);
        if (rc)
            return dlock__err_prefix(rc, "cluster node %d", c->nnodes + 1);
        c->nnodes++;
        p += n + (e ? 1 : 0);
    }
    if (c->nnodes == 0)
        return dlock__err(DLOCK_EINVAL, "invalid URL: no cluster nodes");
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
    if (strncmp(buf, "redis-sentinel://", 17) == 0) {
        if (c->nnodes || c->backend == DLOCK__BACKEND_SENTINEL)
            return dlock__err(DLOCK_EINVAL, "invalid URL: a redis-sentinel:// URL cannot be combined with other URLs");
        c->backend = DLOCK__BACKEND_SENTINEL;
        return parse_sentinel(c, buf);
    }
    if (strncmp(buf, "redis-cluster://", 16) == 0) {
        if (c->nnodes || c->backend != DLOCK__BACKEND_SINGLE)
            return dlock__err(DLOCK_EINVAL, "invalid URL: a redis-cluster:// URL cannot be combined with other URLs");
        c->backend = DLOCK__BACKEND_CLUSTER;
        return parse_cluster(c, buf);
    }
    if (c->backend == DLOCK__BACKEND_CLUSTER)
        return dlock__err(DLOCK_EINVAL, "invalid URL: a redis-cluster:// URL cannot be combined with other URLs");
    if (c->backend == DLOCK__BACKEND_SENTINEL)
        return dlock__err(DLOCK_EINVAL, "invalid URL: a redis-sentinel:// URL cannot be combined with other URLs");
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
