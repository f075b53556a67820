/*
 * sentinel.c — asking the sentinels for the master (see sentinel.h).
 */
#include "sentinel.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "pool.h"

/* Point node 0 at host:port if it is not there already (takes host). */
static void switch_master(dlock_client *c, char *host, int port)
{
    dlock__node *nd = &c->nodes[0];
    pthread_mutex_lock(&c->mu);
    int moved = !nd->ep.host || strcmp(nd->ep.host, host) != 0 || nd->ep.port != port;
    if (moved) {
        dlock__free(nd->ep.host);
        nd->ep.host = host;
        host = NULL;
        nd->ep.port = port;
        snprintf(nd->ep.desc, sizeof nd->ep.desc, strchr(nd->ep.host, ':') ? "[%s]:%d" : "%s:%d",
                 nd->ep.host, nd->ep.port);
        nd->gen++;
        dlock__pool_drain(nd);
    }
    char desc[sizeof nd->ep.desc];
    snprintf(desc, sizeof desc, "%s", nd->ep.desc);
    pthread_mutex_unlock(&c->mu);
    dlock__free(host);
    if (moved)
        dlock__log(c, DLOCK_LOG_INFO, "master '%s' is now %s", c->master_name, desc);
}

int dlock__sentinel_resolve(dlock_client *c)
{
    char why[300] = "no sentinel answered";
    for (int i = 0; i < c->nsentinels; i++) {
        dlock__conn_cfg cfg = {
            &c->sentinels[i], c->connect_timeout_ms, c->command_timeout_ms, NULL, NULL, 0
        };
        dlock__conn *conn;
        if (dlock__conn_open(&conn, &cfg) != 0) {
            snprintf(why, sizeof why, "%s", dlock_last_errmsg());
            continue;
        }
        const char *argv[3] = { "SENTINEL", "get-master-addr-by-name", c->master_name };
        dlock__reply *r = NULL;
        int rc = dlock__conn_command(conn, &r, 3, argv, NULL);
        dlock__conn_close(conn);
        if (rc) {
            snprintf(why, sizeof why, "%s", dlock_last_errmsg());
            continue;
        }
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING ||
            r->element[1]->type != REDIS_REPLY_STRING) {
            snprintf(why, sizeof why, "sentinel %s does not know master '%s'", c->sentinels[i].desc,
                     c->master_name);
            dlock__reply_free(r);
            continue;
        }
        char *end;
        long port = strtol(r->element[1]->str, &end, 10);
        int bad_port = *end || port < 1 || port > 65535;
        char *host = bad_port ? NULL : dlock__strdup(r->element[0]->str);
        dlock__reply_free(r);
        if (bad_port) {
            snprintf(why, sizeof why, "sentinel %s gave a bad port", c->sentinels[i].desc);
            continue;
        }
        if (!host)
            return dlock__err(DLOCK_ENOMEM, "out of memory");
        switch_master(c, host, (int)port);
        return 0;
    }
    return dlock__err(DLOCK_ECONN, "cannot find master '%s' through the sentinels: %s",
                      c->master_name, why);
}

/* ---------------------------------------------------- the +switch-master watcher */

struct dlock__sentinel_watch {
    pthread_t thread;
    int ctl[2]; /* written at stop */
    atomic_int stop;
};

/* A "+switch-master" message: "<name> <old ip> <old port> <new ip> <new
 * port>". Switch node 0 if it is about our master. */
static void on_switch(dlock_client *c, const char *msg)
{
    char name[256], oldip[128], newip[128];
    int oldport, newport;
    if (sscanf(msg, "%255s %127s %d %127s %d", name, oldip, &oldport, newip, &newport) != 5 ||
        strcmp(name, c->master_name) != 0 || newport < 1 || newport > 65535)
        return;
    char *host = dlock__strdup(newip);
    if (host)
        switch_master(c, host, newport);
}

/* Subscribed on sentinel i: read announcements until the connection fails
 * or we are told to stop. */
static void listen_on(dlock_client *c, struct dlock__sentinel_watch *w, dlock__conn *conn)
{
    const char *av[2] = { "SUBSCRIBE", "+switch-master" };
    if (dlock__conn_append(conn, 2, av, NULL) != 0 ||
        dlock__conn_send(conn, c->command_timeout_ms) != 0)
        return;
    int subscribed = 0;
    while (!atomic_load(&w->stop)) {
        dlock__reply *r = NULL;
        if (dlock__conn_read(conn, &r, 0) != 0)
            return;
        if (!r) {
            struct pollfd p[2] = { { .fd = dlock__conn_poll_fd(conn), .events = POLLIN },
                                   { .fd = w->ctl[0], .events = POLLIN } };
            poll(p, 2, 5000);
            continue;
        }
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
            r->element[0]->type == REDIS_REPLY_STRING) {
            if (!subscribed && strcmp(r->element[0]->str, "subscribe") == 0) {
                subscribed = 1;
                dlock__sentinel_resolve(c); /* a switch before we listened */
            } else if (strcmp(r->element[0]->str, "message") == 0 &&
                       r->element[2]->type == REDIS_REPLY_STRING) {
                on_switch(c, r->element[2]->str);
            }
        }
        dlock__reply_free(r);
    }
}

static void *watch_main(void *arg)
{
    dlock_client *c = arg;
    struct dlock__sentinel_watch *w = c->sentinel_watch;
    for (int i = 0; !atomic_load(&w->stop); i = (i + 1) % c->nsentinels) {
        dlock__conn_cfg cfg = {
            &c->sentinels[i], c->connect_timeout_ms, c->command_timeout_ms, NULL, NULL, 0
        };
        dlock__conn *conn = NULL;
        if (dlock__conn_open(&conn, &cfg) == 0)
            listen_on(c, w, conn);
        dlock__conn_close(conn);
        if (!atomic_load(&w->stop)) { /* then the next sentinel, after a pause */
            struct pollfd p = { .fd = w->ctl[0], .events = POLLIN };
            poll(&p, 1, 200);
        }
    }
    return NULL;
}

int dlock__sentinel_watch_start(dlock_client *c)
{
    struct dlock__sentinel_watch *w = dlock__calloc(1, sizeof *w);
    if (!w)
        return dlock__err(DLOCK_ENOMEM, "out of memory");
    if (pipe2(w->ctl, O_CLOEXEC | O_NONBLOCK) != 0) {
        dlock__free(w);
        return dlock__err(DLOCK_ESYS, "pipe: %s", strerror(errno));
    }
    c->sentinel_watch = w;
    int e = pthread_create(&w->thread, NULL, watch_main, c);
    if (e != 0) {
        close(w->ctl[0]);
        close(w->ctl[1]);
        dlock__free(w);
        c->sentinel_watch = NULL;
        return dlock__err(DLOCK_ESYS, "cannot start the sentinel watcher: %s", strerror(e));
    }
    return 0;
}

void dlock__sentinel_watch_stop(dlock_client *c)
{
    struct dlock__sentinel_watch *w = c->sentinel_watch;
    if (!w)
        return;
    atomic_store(&w->stop, 1);
    ssize_t r = write(w->ctl[1], "x", 1);
    (void)r;
    pthread_join(w->thread, NULL);
    close(w->ctl[0]);
    close(w->ctl[1]);
    dlock__free(w);
    c->sentinel_watch = NULL;
}
