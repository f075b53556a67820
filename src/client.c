/*
 * client.c — dlock_client: options, open and close.
 *
 * Open parses the URL list (topology.c), finds the master or the slot map
 * (Sentinel, Cluster), and connects once so a wrong host, port or password
 * fails there and not at the first lock. Broken connections are made again
 * on demand later (pool.c).
 *
 * Close is safe against everything in flight: it marks the client closing
 * (new calls fail with DLOCK_ECLOSED; an acquire that completes now gives
 * its lock back and fails too, see acquire.c), wakes every waiter through
 * the wake pipe, waits until no API call is active, then lets the lock
 * layer stop the watchdog and release what is held (c->shutdown), stops the
 * pub/sub listeners, and frees. No thread outlives the client.
 */
#include "client.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "cluster.h"
#include "error.h"
#include "pool.h"
#include "pubsub.h"
#include "sentinel.h"
#include "topology.h"

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

/* The client's owner id: `id` if given (1 to 200 bytes, no control
 * characters), else "host:pid". Returns 0, DLOCK_EINVAL or DLOCK_ENOMEM. */
static int set_owner(dlock_client *c, const char *id)
{
    char owner[256];
    if (id) {
        size_t n = strlen(id);
        if (n == 0 || n > 200)
            return dlock__err(DLOCK_EINVAL, "owner_id must be 1 to 200 bytes long");
        for (const char *p = id; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                return dlock__err(DLOCK_EINVAL, "owner_id must not contain control characters");
        snprintf(owner, sizeof owner, "%s", id);
    } else {
        char host[128];
        if (gethostname(host, sizeof host) != 0)
            snprintf(host, sizeof host, "unknown");
        host[sizeof host - 1] = '\0';
        snprintf(owner, sizeof owner, "%s:%ld", host, (long)getpid());
    }
    if (!(c->owner = dlock__strdup(owner)))
        return dlock__err(DLOCK_ENOMEM, "out of memory");
    return 0;
}

/* Options' credentials override the URL's on every node (a password of ""
 * removes it). Returns 0 or DLOCK_ENOMEM. */
static int set_credentials(dlock_client *c, const char *user, const char *pass)
{
    for (int i = 0; i < c->nnodes; i++) {
        dlock__endpoint *ep = &c->nodes[i].ep;
        if (user) {
            dlock__free(ep->user);
            if (!(ep->user = dlock__strdup(user)))
                return dlock__err(DLOCK_ENOMEM, "out of memory");
        }
        if (pass) {
            dlock__free(ep->pass);
            ep->pass = NULL;
            if (pass[0] && !(ep->pass = dlock__strdup(pass)))
                return dlock__err(DLOCK_ENOMEM, "out of memory");
        }
    }
    return 0;
}

/* Validate the options and fill the client's copies. */
static int apply_opts(dlock_client *c, const dlock_client_opts *o)
{
    if (o->version < 1 || o->version > DLOCK_CLIENT_OPTS_VERSION)
        return dlock__err(DLOCK_EINVAL,
                          "dlock_client_opts.version %u is not supported "
                          "(initialise with DLOCK_CLIENT_OPTS_INIT)",
                          o->version);
    int min_replicas = o->version >= 2 ? o->min_replicas : -1;
    if (min_replicas < -1 || min_replicas > 100)
        return dlock__err(DLOCK_EINVAL, "min_replicas must be -1 (automatic) or 0 to 100 (got %d)",
                          min_replicas);
    c->min_replicas = min_replicas;
    if (o->connect_timeout_ms <= 0)
        return dlock__err(DLOCK_EINVAL, "connect_timeout_ms must be > 0 (got %d)",
                          o->connect_timeout_ms);
    if (o->command_timeout_ms <= 0)
        return dlock__err(DLOCK_EINVAL, "command_timeout_ms must be > 0 (got %d)",
                          o->command_timeout_ms);
    c->connect_timeout_ms = o->connect_timeout_ms;
    c->command_timeout_ms = o->command_timeout_ms;

    const char *prefix = o->prefix ? o->prefix : "dlock:";
    if (strlen(prefix) > 128)
        return dlock__err(DLOCK_EINVAL, "prefix is longer than 128 bytes");
    if (strpbrk(prefix, "{}"))
        return dlock__err(DLOCK_EINVAL,
                          "prefix must not contain '{' or '}' (they would change the hash slot)");
    if (!(c->prefix = dlock__strdup(prefix)))
        return dlock__err(DLOCK_ENOMEM, "out of memory");

    int rc = set_owner(c, o->owner_id);
    if (rc)
        return rc;
    if (o->log_level < DLOCK_LOG_ERROR || o->log_level > DLOCK_LOG_DEBUG)
        return dlock__err(DLOCK_EINVAL,
                          "log_level must be DLOCK_LOG_ERROR..DLOCK_LOG_DEBUG (got %d)",
                          o->log_level);
    if (o->metrics_by_key_prefix != 0 && o->metrics_by_key_prefix != 1)
        return dlock__err(DLOCK_EINVAL, "metrics_by_key_prefix must be 0 or 1");
    c->log_fn = o->log_fn;
    c->log_arg = o->log_arg;
    c->log_level = o->log_level;
    c->metrics.by_prefix = o->metrics_by_key_prefix;

    return set_credentials(c, o->username, o->password);
}

/* Free everything of a client that has no threads or waiters left. */
static void client_free(dlock_client *c)
{
    dlock__sentinel_watch_stop(c);
    dlock__topology_free(c);
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

/* Connect to every node once (not a cluster: its map was just read), so
 * that a wrong address or password fails at open. A Redlock client needs
 * a majority; the message names every server that failed. */
static int check_reachable(dlock_client *c)
{
    int reachable = 0, auth_rc = 0, rc = 0;
    char first_err[512] = "";
    for (int i = 0; c->backend != DLOCK__BACKEND_CLUSTER && i < c->nnodes; i++) {
        dlock__conn *conn = NULL;
        int reused, crc = dlock__pool_get(c, i, &conn, &reused, c->connect_timeout_ms);
        if (crc == 0) {
            reachable++;
            dlock__pool_put(c, i, conn);
            continue;
        }
        if (crc == DLOCK_EAUTH || c->voters == 1) {
            snprintf(first_err, sizeof first_err, "%s", dlock_last_errmsg());
        } else {
            size_t len = strlen(first_err);
            snprintf(first_err + len, sizeof first_err - len, "%s%s", len ? "; " : "",
                     dlock_last_errmsg());
        }
        if (crc == DLOCK_EAUTH || crc == DLOCK_EINVAL || crc == DLOCK_ENOMEM)
            auth_rc = crc;
        if (c->voters == 1)
            return crc;
    }
    if (auth_rc)
        rc = dlock__err(auth_rc, "%s", first_err);
    else if (c->backend == DLOCK__BACKEND_REDLOCK && reachable < c->quorum)
        rc = dlock__err(DLOCK_EQUORUM, "only %d of %d servers reachable, %d needed (%s)", reachable,
                        c->nnodes, c->quorum, first_err);
    return rc;
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
    int rc = dlock__topology_parse(c, url);
    if (rc == 0)
        rc = apply_opts(c, opts);
    if (rc == 0 && pipe2(c->wake_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
        rc = dlock__err(DLOCK_ESYS, "pipe: %s", strerror(errno));
    if (rc == 0 && c->backend == DLOCK__BACKEND_SENTINEL)
        rc = dlock__sentinel_resolve(c);
    if (rc == 0 && c->backend == DLOCK__BACKEND_SENTINEL)
        rc = dlock__sentinel_watch_start(c);
    if (rc == 0 && c->backend == DLOCK__BACKEND_CLUSTER)
        rc = dlock__cluster_refresh(c);
    if (rc == 0)
        rc = check_reachable(c);
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

    /* Wait for calls in progress: waiters are on their way out, and an
     * acquire finishing now gives its lock back (it sees `closing`). */
    pthread_mutex_lock(&c->mu);
    while (c->active > 0)
        pthread_cond_wait(&c->idle_cv, &c->mu);
    void (*shutdown)(dlock_client *) = c->shutdown;
    pthread_mutex_unlock(&c->mu);
    if (shutdown)
        shutdown(c); /* stop the watchdog, release held locks, free their handles */
    dlock__listener_stop(c);
    client_free(c);
}

int dlock__client_wants_acks(dlock_client *c)
{
    /* Sentinel and Cluster deployments are replicated by design: track
     * them from the start (a master with no replica right after a failover
     * gets one back later, and must be waited for then) */
    return atomic_load(&c->acks) || c->backend == DLOCK__BACKEND_SENTINEL ||
           c->backend == DLOCK__BACKEND_CLUSTER;
}

int dlock__client_tracks_role(dlock_client *c)
{
    return c->min_replicas < 0 && dlock__client_wants_acks(c);
}

void dlock__client_set_faults(dlock_client *c, const dlock__faults *f)
{
    pthread_mutex_lock(&c->mu);
    c->has_faults = f != NULL;
    if (f)
        c->faults = *f;
    for (int i = 0; i < c->nnodes; i++)
        dlock__pool_drain(&c->nodes[i]);
    pthread_mutex_unlock(&c->mu);
}
