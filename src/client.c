/*
 * client.c — dlock_client: options, the connection pool, key names,
 * inspection and statistics.
 *
 * Thread safety comes from the pool: a call borrows a connection, does its
 * round trips on it alone, and gives it back, so concurrent calls never
 * share a socket and never wait on each other's network time. Idle
 * connections are kept (up to DLOCK__IDLE_MAX) to avoid reconnecting; one
 * that turns out dead (the server restarted) is replaced once, transparently,
 * which is safe because every script is idempotent for its token.
 *
 * Key layout: "<prefix>{<key>}:<kind>" — or "<prefix>#<key>:<kind>" when the
 * user key already has a non-empty {hash tag} (Redis Cluster's rule), so all
 * keys of one lock share a slot and callers can co-locate several locks.
 * The first character after the prefix tells the two forms apart ('{' or
 * '#'), and kinds ("lock", "fence", ...) contain no ':', so the mapping from
 * (user key, kind) to names is one-to-one and can be reversed (dlock_scan).
 */
#include "client.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "clock.h"
#include "error.h"
#include "pubsub.h"

int dlock__key_check(const char *key)
{
    if (!key)
        return dlock__err(DLOCK_EINVAL, "key is NULL");
    size_t n = strlen(key);
    if (n == 0)
        return dlock__err(DLOCK_EINVAL, "key is empty");
    if (n > DLOCK_KEY_MAX)
        return dlock__err(DLOCK_EINVAL, "key is %zu bytes long; the limit is %d", n, DLOCK_KEY_MAX);
    return 0;
}

/* 1 if key contains "{x...}" with at least one byte between the braces at
 * the first '{' (the part Redis Cluster hashes). */
static int has_hash_tag(const char *key)
{
    const char *l = strchr(key, '{');
    if (!l)
        return 0;
    const char *r = strchr(l + 1, '}');
    return r && r > l + 1;
}

int dlock__key_name(char **out, const dlock_client *c, const char *key, const char *suffix)
{
    *out = NULL;
    int rc = dlock__key_check(key);
    if (rc)
        return rc;
    int tagged = has_hash_tag(key);
    size_t n = strlen(c->prefix) + strlen(key) + strlen(suffix) + 4;
    char *s = dlock__malloc(n);
    if (!s)
        return dlock__err(DLOCK_ENOMEM, "out of memory");
    snprintf(s, n, tagged ? "%s#%s:%s" : "%s{%s}:%s", c->prefix, key, suffix);
    *out = s;
    return 0;
}

int dlock__client_enter(dlock_client *c)
{
    pthread_mutex_lock(&c->mu);
    int closing = c->closing;
    if (!closing)
        c->active++;
    pthread_mutex_unlock(&c->mu);
    return closing ? dlock__err(DLOCK_ECLOSED, "the client is closing") : 0;
}

void dlock__client_leave(dlock_client *c)
{
    pthread_mutex_lock(&c->mu);
    if (--c->active == 0 && c->closing)
        pthread_cond_broadcast(&c->idle_cv);
    pthread_mutex_unlock(&c->mu);
}

/* Validate the options and fill the client's copies. */
static int apply_opts(dlock_client *c, const dlock_client_opts *o)
{
    if (o->version < 1 || o->version > DLOCK_CLIENT_OPTS_VERSION)
        return dlock__err(DLOCK_EINVAL, "dlock_client_opts.version %u is not supported "
                          "(initialise with DLOCK_CLIENT_OPTS_INIT)", o->version);
    if (o->connect_timeout_ms <= 0)
        return dlock__err(DLOCK_EINVAL, "connect_timeout_ms must be > 0 (got %d)", o->connect_timeout_ms);
    if (o->command_timeout_ms <= 0)
        return dlock__err(DLOCK_EINVAL, "command_timeout_ms must be > 0 (got %d)", o->command_timeout_ms);
    c->connect_timeout_ms = o->connect_timeout_ms;
    c->command_timeout_ms = o->command_timeout_ms;

    const char *prefix = o->prefix ? o->prefix : "dlock:";
    if (strlen(prefix) > 128)
        return dlock__err(DLOCK_EINVAL, "prefix is longer than 128 bytes");
    if (strpbrk(prefix, "{}"))
        return dlock__err(DLOCK_EINVAL, "prefix must not contain '{' or '}' (they would change the hash slot)");
    if (!(c->prefix = dlock__strdup(prefix)))
        return dlock__err(DLOCK_ENOMEM, "out of memory");

    char owner[256];
    if (o->owner_id) {
        size_t n = strlen(o->owner_id);
        if (n == 0 || n > 200)
            return dlock__err(DLOCK_EINVAL, "owner_id must be 1 to 200 bytes long");
        for (const char *p = o->owner_id; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                return dlock__err(DLOCK_EINVAL, "owner_id must not contain control characters");
        snprintf(owner, sizeof owner, "%s", o->owner_id);
    } else {
        char host[128];
        if (gethostname(host, sizeof host) != 0)
            snprintf(host, sizeof host, "unknown");
        host[sizeof host - 1] = '\0';
        snprintf(owner, sizeof owner, "%s:%ld", host, (long)getpid());
    }
    if (!(c->owner = dlock__strdup(owner)))
        return dlock__err(DLOCK_ENOMEM, "out of memory");

    if (o->log_level < DLOCK_LOG_ERROR || o->log_level > DLOCK_LOG_DEBUG)
        return dlock__err(DLOCK_EINVAL, "log_level must be DLOCK_LOG_ERROR..DLOCK_LOG_DEBUG (got %d)", o->log_level);
    if (o->metrics_by_key_prefix != 0 && o->metrics_by_key_prefix != 1)
        return dlock__err(DLOCK_EINVAL, "metrics_by_key_prefix must be 0 or 1");
    c->log_fn = o->log_fn;
    c->log_arg = o->log_arg;
    c->log_level = o->log_level;
    c->metrics.by_prefix = o->metrics_by_key_prefix;

    for (int i = 0; i < c->nnodes; i++) {
        dlock__endpoint *ep = &c->nodes[i].ep;
        if (o->username) {
            dlock__free(ep->user);
            if (!(ep->user = dlock__strdup(o->username)))
                return dlock__err(DLOCK_ENOMEM, "out of memory");
        }
        if (o->password) {
            dlock__free(ep->pass);
            ep->pass = NULL;
            if (o->password[0] && !(ep->pass = dlock__strdup(o->password)))
                return dlock__err(DLOCK_ENOMEM, "out of memory");
        }
    }
    return 0;
}

/* Drop a node's idle connections (c->mu held or no other threads). */
static void drain_pool(dlock__node *nd)
{
    while (nd->idle) {
        dlock__conn *n = *dlock__conn_next(nd->idle);
        dlock__conn_close(nd->idle);
        nd->idle = n;
    }
    nd->nidle = 0;
}

/* Free everything of a client that has no threads or waiters left. */
static void client_free(dlock_client *c)
{
    for (int i = 0; i < c->nnodes; i++) {
        drain_pool(&c->nodes[i]);
        dlock__endpoint_clear(&c->nodes[i].ep);
    }
    dlock__free(c->nodes);
    for (int i = 0; i < c->nsentinels; i++)
        dlock__endpoint_clear(&c->sentinels[i]);
    dlock__free(c->sentinels);
    dlock__free(c->master_name);
    if (c->wake_pipe[0] >= 0)
        close(c->wake_pipe[0]);
    if (c->wake_pipe[1] >= 0)
        close(c->wake_pipe[1]);
    pthread_cond_destroy(&c->cv);
    pthread_cond_destroy(&c->idle_cv);
    pthread_mutex_destroy(&c->mu);
    dlock__free(c->prefix);
    dlock__free(c->owner);
    dlock__metrics_free(&c->metrics);
    dlock__free(c);
}

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

void dlock__log(dlock_client *c, int level, const char *fmt, ...)
{
    if (!c->log_fn || level > c->log_level)
        return;
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->log_fn(level, msg, c->log_arg);
}

int dlock_client_open(dlock_client **out, const char *url, const dlock_client_opts *opts)
{
    dlock__err_clear();
    if (!out)
        return dlock__err(DLOCK_EINVAL, "out is NULL");
    *out = NULL;
    if (!url)
        return dlock__err(DLOCK_EINVAL, "url is NULL");
    dlock_client_opts defaults = DLOCK_CLIENT_OPTS_INIT;
    if (!opts)
        opts = &defaults;
    dlock_client *c = dlock__calloc(1, sizeof *c);
    if (!c)
        return dlock__err(DLOCK_ENOMEM, "out of memory");
    c->wake_pipe[0] = c->wake_pipe[1] = -1;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, &ca);
    pthread_cond_init(&c->idle_cv, NULL);
    pthread_condattr_destroy(&ca);
    c->wd_wake_ns = INT64_MAX;
    int rc = url[0] ? split_urls(url, add_node, c)
                    : dlock__err(DLOCK_EINVAL, "invalid URL: empty (expected redis://host:port or unix:///path.sock)");
    if (rc == 0 && c->nnodes > 1 && c->backend == DLOCK__BACKEND_SINGLE)
        c->backend = DLOCK__BACKEND_REDLOCK;
    c->voters = c->backend == DLOCK__BACKEND_REDLOCK ? c->nnodes : 1;
    c->quorum = c->voters / 2 + 1;
    if (rc == 0)
        rc = apply_opts(c, opts);
    if (rc == 0 && pipe2(c->wake_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
        rc = dlock__err(DLOCK_ENOMEM, "pipe: %s", strerror(errno));
    if (rc == 0 && (c->backend == DLOCK__BACKEND_SENTINEL || c->backend == DLOCK__BACKEND_CLUSTER))
        rc = dlock__client_locate(c);
    /* Connect once now so a wrong URL or password fails here, not later;
     * a Redlock client needs a majority of its servers. */
    int reachable = 0, auth_rc = 0;
    char first_err[512] = "";
    for (int i = 0; rc == 0 && c->backend != DLOCK__BACKEND_CLUSTER && i < c->nnodes; i++) {
        dlock__conn *conn = NULL;
        int reused, crc = dlock__client_conn_get(c, i, &conn, &reused, c->connect_timeout_ms);
        if (crc == 0) {
            reachable++;
            dlock__client_conn_put(c, i, conn);
            continue;
        }
        if (crc == DLOCK_EAUTH || c->voters == 1) {
            snprintf(first_err, sizeof first_err, "%s", dlock_last_errmsg());
        } else { /* Redlock: name every server that failed */
            size_t len = strlen(first_err);
            snprintf(first_err + len, sizeof first_err - len, "%s%s", len ? "; " : "", dlock_last_errmsg());
        }
        if (crc == DLOCK_EAUTH || crc == DLOCK_EINVAL || crc == DLOCK_ENOMEM)
            auth_rc = crc;
        if (c->voters == 1)
            rc = crc;
    }
    if (rc == 0 && auth_rc)
        rc = dlock__err(auth_rc, "%s", first_err);
    else if (rc == 0 && c->backend == DLOCK__BACKEND_REDLOCK && reachable < c->quorum)
        rc = dlock__err(DLOCK_EQUORUM, "only %d of %d servers reachable, %d needed (%s)", reachable,
                        c->nnodes, c->quorum, first_err);
    if (rc) {
        client_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void dlock_client_close(dlock_client *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->closing = 1;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    ssize_t w = write(c->wake_pipe[1], "x", 1); /* wakes every waiter, for good */
    (void)w;
    dlock__watchdog_stop(c);

    /* Wait for calls in progress (waiters are on their way out). */
    pthread_mutex_lock(&c->mu);
    while (c->active > 0)
        pthread_cond_wait(&c->idle_cv, &c->mu);
    dlock_lock *held = c->locks;
    c->locks = NULL;
    pthread_mutex_unlock(&c->mu);
    dlock__listener_stop(c);

    /* Release what is still held, in one pipelined round. */
    int n = 0;
    for (dlock_lock *l = held; l; l = l->next)
        n += (int)l->nparts;
    dlock__call *calls = n ? dlock__calloc((size_t)n, sizeof *calls) : NULL;
    if (calls) {
        int i = 0;
        for (dlock_lock *l = held; l; l = l->next) {
            dlock__lock_release_calls(l, &calls[i]);
            i += (int)l->nparts;
        }
        dlock__fanout f;
        dlock__fanout_run(c, calls, n, 0, &f);
        dlock__fanout_free(&f);
    }
    dlock__free(calls);
    while (held) {
        dlock_lock *next = held->next;
        dlock__lock_free(held);
        held = next;
    }
    client_free(c);
}

void dlock__client_set_faults(dlock_client *c, const dlock__faults *f)
{
    pthread_mutex_lock(&c->mu);
    c->has_faults = f != NULL;
    if (f)
        c->faults = *f;
    for (int i = 0; i < c->nnodes; i++)
        drain_pool(&c->nodes[i]);
    pthread_mutex_unlock(&c->mu);
}

/* Locks held now: linked, not lost, validity not passed. */
static int64_t held_now(dlock_client *c)
{
    int64_t n = 0, now = dlock__now_ns();
    pthread_mutex_lock(&c->mu);
    for (dlock_lock *l = c->locks; l; l = l->next)
        if (atomic_load(&l->state) == DLOCK__HELD && now < atomic_load(&l->valid_until_ns))
            n++;
    pthread_mutex_unlock(&c->mu);
    return n;
}

int dlock_stats(dlock_stats_t *out, dlock_client *c)
{
    if (!out || !c)
        return dlock__err(DLOCK_EINVAL, "NULL argument");
    memset(out, 0, sizeof *out);
    out->version = DLOCK_STATS_VERSION;
    pthread_mutex_lock(&c->mu);
    int nnodes = c->nnodes;
    pthread_mutex_unlock(&c->mu);
    for (int i = 0; i < nnodes; i++) {
        out->round_trips += atomic_load(&c->nodes[i].counters.round_trips);
        out->commands += atomic_load(&c->nodes[i].counters.commands);
        out->connects += atomic_load(&c->nodes[i].counters.connects);
        out->errors += atomic_load(&c->nodes[i].counters.errors);
    }
    dlock__metrics_snapshot(&c->metrics, out);
    out->held_now = held_now(c);
    return 0;
}

int dlock_metrics_write(dlock_client *c, FILE *f)
{
    dlock__err_clear();
    if (!c || !f)
        return dlock__err(DLOCK_EINVAL, "NULL argument");
    dlock_stats_t st;
    dlock_stats(&st, c);
    const char *nodes[DLOCK__NODES_MAX];
    dlock__counters *counters[DLOCK__NODES_MAX];
    pthread_mutex_lock(&c->mu);
    char descs[DLOCK__NODES_MAX][128];
    for (int i = 0; i < c->nnodes; i++) {
        snprintf(descs[i], sizeof descs[i], "%s", c->nodes[i].ep.desc);
        nodes[i] = descs[i];
        counters[i] = &c->nodes[i].counters;
    }
    pthread_mutex_unlock(&c->mu);
    return dlock__metrics_write(&c->metrics, f, c->nnodes, nodes, counters, st.held_now, &st);
}

/* Parse "<token>:<fence>:<owner>" into info. Returns 0 or DLOCK_EPROTO. */
int dlock__parse_lock_value(dlock_info *info, const char *v, size_t len)
{
    if (len < DLOCK__TOKEN_LEN + 3 || v[DLOCK__TOKEN_LEN] != ':')
        return dlock__err(DLOCK_EPROTO, "lock value has an unexpected format");
    const char *p = v + DLOCK__TOKEN_LEN + 1;
    uint64_t f = 0;
    int digits = 0;
    while (*p >= '0' && *p <= '9' && digits < 17) {
        f = f * 10 + (uint64_t)(*p++ - '0');
        digits++;
    }
    if (digits == 0 || *p != ':')
        return dlock__err(DLOCK_EPROTO, "lock value has an unexpected format");
    info->fencing_token = f;
    snprintf(info->owner, sizeof info->owner, "%s", p + 1);
    return 0;
}

int dlock_inspect(dlock_info *out, dlock_client *c, const char *key)
{
    dlock__err_clear();
    if (!out || !c)
        return dlock__err(DLOCK_EINVAL, "NULL argument");
    memset(out, 0, sizeof *out);
    char *lock_key = NULL, *queue_key = NULL;
    int rc = dlock__key_name(&lock_key, c, key, "lock");
    if (rc == 0)
        rc = dlock__key_name(&queue_key, c, key, "queue");
    if (rc == 0)
        rc = dlock__client_enter(c);
    if (rc) {
        dlock__free(lock_key);
        dlock__free(queue_key);
        return rc;
    }
    const char *keys[2] = {lock_key, queue_key};
    dlock__call call = {&dlock__script_inspect, 2, 0, keys, NULL};
    dlock__fanout f;
    rc = dlock__fanout_run(c, &call, 1, 0, &f);
    /* Each server's view; with Redlock the lock is held only if a majority
     * holds the same token, and its fencing token is the largest of theirs
     * (the one the holder got). */
    dlock_info views[DLOCK__NODES_MAX];
    char tokens[DLOCK__NODES_MAX][DLOCK__TOKEN_LEN];
    int held[DLOCK__NODES_MAX] = {0}, answered = 0;
    for (int i = 0; rc == 0 && i < f.nnodes; i++) {
        if (f.rc[i])
            continue;
        dlock__reply *r = f.replies[i][0];
        memset(&views[i], 0, sizeof views[i]);
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 || r->element[1]->type != REDIS_REPLY_INTEGER ||
            r->element[2]->type != REDIS_REPLY_INTEGER) {
            rc = dlock__err(DLOCK_EPROTO, "inspect: unexpected reply%s%s", r->type == REDIS_REPLY_ERROR ? ": " : "",
                            r->type == REDIS_REPLY_ERROR ? r->str : "");
            break;
        }
        answered++;
        views[i].waiters = r->element[2]->integer;
        if (r->element[0]->type == REDIS_REPLY_STRING &&
            dlock__parse_lock_value(&views[i], r->element[0]->str, r->element[0]->len) == 0) {
            held[i] = 1;
            views[i].ttl_ms = r->element[1]->integer;
            memcpy(tokens[i], r->element[0]->str, DLOCK__TOKEN_LEN);
        }
        if (views[i].waiters > out->waiters)
            out->waiters = views[i].waiters;
    }
    if (rc == 0 && answered == 0)
        rc = dlock__fanout_error(&f, "inspect");
    for (int i = 0; rc == 0 && i < f.nnodes && !out->held; i++) {
        if (!held[i])
            continue;
        int same = 0;
        dlock_info best = views[i];
        for (int k = 0; k < f.nnodes; k++)
            if (held[k] && memcmp(tokens[k], tokens[i], DLOCK__TOKEN_LEN) == 0) {
                same++;
                if (views[k].fencing_token > best.fencing_token)
                    best.fencing_token = views[k].fencing_token;
                if (views[k].ttl_ms < best.ttl_ms)
                    best.ttl_ms = views[k].ttl_ms;
            }
        if (same >= c->quorum) {
            int64_t waiters = out->waiters;
            *out = best;
            out->held = 1;
            out->waiters = waiters;
        }
    }
    dlock__fanout_free(&f);
    dlock__free(lock_key);
    dlock__free(queue_key);
    dlock__client_leave(c);
    return rc;
}

int dlock_force_unlock(int *out_removed, dlock_client *c, const char *key)
{
    dlock__err_clear();
    if (!out_removed || !c)
        return dlock__err(DLOCK_EINVAL, "NULL argument");
    *out_removed = 0;
    static const char *const kinds[7] = {"lock", "readers", "rinfo", "fence", "queue", "qinfo", "chan"};
    char *names[7] = {NULL};
    int rc = 0;
    for (int i = 0; i < 7 && rc == 0; i++)
        rc = dlock__key_name(&names[i], c, key, kinds[i]);
    if (rc == 0)
        rc = dlock__client_enter(c);
    if (rc == 0) {
        /* the release script with force: the next waiter gets the lock */
        static const char *const args[3] = {"", DLOCK__HANDOFF_TTL_S, "1"};
        dlock__call call = {&dlock__script_release, 7, 3, (const char *const *)names, args};
        dlock__fanout f;
        rc = dlock__fanout_run(c, &call, 1, 0, &f);
        if (rc == 0) {
            /* every server that answered has no lock on the key now */
            for (int i = 0; i < f.nnodes; i++)
                if (f.rc[i] == 0 && f.replies[i][0]->type == REDIS_REPLY_INTEGER && f.replies[i][0]->integer == 1)
                    *out_removed = 1;
            for (int i = 0; i < f.nnodes; i++)
                if (f.rc[i] == 0 && f.replies[i][0]->type != REDIS_REPLY_INTEGER) {
                    rc = dlock__err(DLOCK_EPROTO, "unlock: %s",
                                    f.replies[i][0]->str ? f.replies[i][0]->str : "unexpected reply");
                    break;
                }
        }
        dlock__fanout_free(&f);
        dlock__client_leave(c);
    }
    for (int i = 0; i < 7; i++)
        dlock__free(names[i]);
    return rc;
}
