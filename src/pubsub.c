/*
 * pubsub.c — the client's pub/sub listener (see pubsub.h).
 *
 * The listener thread owns one connection in subscribe mode. Requests from
 * waiting threads (subscribe to a channel, drop one) go through a list under
 * the listener's mutex and a control pipe that wakes the thread's poll().
 * The thread never holds the mutex across I/O. When the connection breaks,
 * every waiter is told (DLOCK__NEWS_RESET: messages may have been lost, so
 * it re-checks the lock), and the thread reconnects and subscribes again.
 */
#include "pubsub.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "client.h"
#include "pool.h"
#include "clock.h"
#include "error.h"

enum { CH_NEW, CH_SENT, CH_ACTIVE };

typedef struct channel {
    char *name;
    int refs;
    int state;
    struct channel *next;
} channel;

struct dlock__listener {
    dlock_client *client;
    int node;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    int ctl[2];
    dlock__sub *waiters;
    channel *channels;
    int stop;
};

/* Wake w with news bits (listener mutex held). */
static void notify(dlock__sub *w, int bits)
{
    w->news |= bits;
    uint64_t one = 1;
    ssize_t r = write(w->efd, &one, sizeof one);
    (void)r;
}

static void poke(dlock__listener *ls)
{
    ssize_t r = write(ls->ctl[1], "x", 1);
    (void)r;
}

/* The connection broke: every channel must be subscribed again, and every
 * waiter re-checks its lock since messages may have been missed. */
static void reset_all(dlock__listener *ls)
{
    for (channel *ch = ls->channels; ch; ch = ch->next)
        ch->state = CH_NEW;
    for (dlock__sub *w = ls->waiters; w; w = w->next) {
        w->confirmed = 0;
        notify(w, DLOCK__NEWS_RESET);
    }
}

/* Handle one pushed reply from the subscribe connection (mutex held). */
static void dispatch(dlock__listener *ls, const dlock__reply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = r->element[0]->str, *name = r->element[1]->str;
    if (strcmp(kind, "subscribe") == 0) {
        for (channel *ch = ls->channels; ch; ch = ch->next)
            if (strcmp(ch->name, name) == 0 && ch->state == CH_SENT)
                ch->state = CH_ACTIVE;
        for (dlock__sub *w = ls->waiters; w; w = w->next)
            if (strcmp(w->channel, name) == 0)
                w->confirmed = 1;
        pthread_cond_broadcast(&ls->cv);
    } else if (strcmp(kind, "message") == 0 && r->element[2]->type == REDIS_REPLY_STRING) {
        const char *payload = r->element[2]->str;
        for (dlock__sub *w = ls->waiters; w; w = w->next)
            if (strcmp(w->channel, name) == 0)
                notify(w, payload[0] == '\0' || strcmp(payload, w->token) == 0 ? DLOCK__NEWS_MINE
                                                                               : DLOCK__NEWS_OTHER);
    }
}

/* Queue SUBSCRIBE/UNSUBSCRIBE for channels that need it (mutex held).
 * Returns the number of commands queued, or a negative code. */
static int plan(dlock__listener *ls, dlock__conn *conn)
{
    int n = 0;
    channel **pp = &ls->channels;
    while (*pp) {
        channel *ch = *pp;
        if (ch->refs == 0) {
            if (ch->state != CH_NEW) {
                const char *av[2] = { "UNSUBSCRIBE", ch->name };
                if (dlock__conn_append(conn, 2, av, NULL) != 0)
                    return DLOCK_ENOMEM;
                n++;
            }
            *pp = ch->next;
            dlock__free(ch->name);
            dlock__free(ch);
            continue;
        }
        if (ch->state == CH_NEW) {
            const char *av[2] = { "SUBSCRIBE", ch->name };
            if (dlock__conn_append(conn, 2, av, NULL) != 0)
                return DLOCK_ENOMEM;
            ch->state = CH_SENT;
            n++;
        }
        pp = &ch->next;
    }
    return n;
}

/* The listener's connection, taken from the pool (it becomes the
 * listener's for good) with every channel to subscribe again; NULL after a
 * pause that doubles up to 1 s while the node cannot be reached (a wake-up
 * on the control pipe cuts it short). ls->mu held, released meanwhile. */
static dlock__conn *listener_connect(dlock__listener *ls, int *backoff_ms)
{
    dlock_client *c = ls->client;
    dlock__conn *conn;
    int reused;
    pthread_mutex_unlock(&ls->mu);
    int rc = dlock__pool_get(c, ls->node, &conn, &reused, c->connect_timeout_ms);
    pthread_mutex_lock(&ls->mu);
    if (rc == 0) {
        *backoff_ms = 10;
        for (channel *ch = ls->channels; ch; ch = ch->next)
            ch->state = CH_NEW;
        return conn;
    }
    reset_all(ls);
    pthread_mutex_unlock(&ls->mu);
    struct pollfd p = { .fd = ls->ctl[0], .events = POLLIN };
    poll(&p, 1, *backoff_ms);
    *backoff_ms = *backoff_ms < 1000 ? *backoff_ms * 2 : 1000;
    pthread_mutex_lock(&ls->mu);
    return NULL;
}

/* One turn of the listener: send the (un)subscriptions planned, dispatch
 * every message already here, then wait up to 1 s for more or for a
 * wake-up. Returns 0, or an error when the connection is lost. ls->mu
 * held, released meanwhile. */
static int listener_turn(dlock__listener *ls, dlock__conn *conn)
{
    dlock_client *c = ls->client;
    int n = plan(ls, conn);
    pthread_mutex_unlock(&ls->mu);
    int rc = n < 0 ? n : n > 0 ? dlock__conn_send(conn, c->command_timeout_ms) : 0;
    while (rc == 0) {
        dlock__reply *r = NULL;
        rc = dlock__conn_read(conn, &r, 0);
        if (rc || !r)
            break;
        pthread_mutex_lock(&ls->mu);
        dispatch(ls, r);
        pthread_mutex_unlock(&ls->mu);
        dlock__reply_free(r);
    }
    if (rc == 0) {
        struct pollfd p[2] = { { .fd = dlock__conn_poll_fd(conn), .events = POLLIN },
                               { .fd = ls->ctl[0], .events = POLLIN } };
        poll(p, 2, 1000);
        if (p[1].revents & POLLIN) {
            char buf[64];
            while (read(ls->ctl[0], buf, sizeof buf) > 0) {
            }
        }
    }
    pthread_mutex_lock(&ls->mu);
    return rc;
}

/* The listener thread: one connection to its node, reconnected (and every
 * channel subscribed again) whenever it is lost, until ls->stop. */
static void *listener_main(void *arg)
{
    dlock__listener *ls = arg;
    dlock__conn *conn = NULL;
    int backoff_ms = 10;
    pthread_mutex_lock(&ls->mu);
    while (!ls->stop) {
        if (!conn && !(conn = listener_connect(ls, &backoff_ms)))
            continue;
        if (listener_turn(ls, conn) != 0) {
            dlock__conn_close(conn);
            conn = NULL;
            reset_all(ls);
        }
    }
    pthread_mutex_unlock(&ls->mu);
    dlock__conn_close(conn);
    return NULL;
}

/* Create and start node's listener on first use (client->mu held). */
static int listener_start(dlock_client *c, int node)
{
    dlock__listener *ls = dlock__calloc(1, sizeof *ls);
    if (!ls)
        return dlock__err(DLOCK_ENOMEM, "out of memory");
    if (pipe2(ls->ctl, O_CLOEXEC | O_NONBLOCK) != 0) {
        dlock__free(ls);
        return dlock__err(DLOCK_ESYS, "pipe: %s", strerror(errno));
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&ls->mu, NULL);
    pthread_cond_init(&ls->cv, &ca);
    pthread_condattr_destroy(&ca);
    ls->client = c;
    ls->node = node;
    c->nodes[node].listener = ls;
    int e = pthread_create(&ls->thread, NULL, listener_main, ls);
    if (e != 0) {
        c->nodes[node].listener = NULL;
        close(ls->ctl[0]);
        close(ls->ctl[1]);
        pthread_cond_destroy(&ls->cv);
        pthread_mutex_destroy(&ls->mu);
        dlock__free(ls);
        return dlock__err(DLOCK_ESYS, "cannot start the listener thread: %s", strerror(e));
    }
    return 0;
}

int dlock__listener_join(dlock_client *c, dlock__sub *w, int timeout_ms)
{
    pthread_mutex_lock(&c->mu);
    int rc = c->closing ? dlock__err(DLOCK_ECLOSED, "the client was closed") : 0;
    if (rc == 0 && !c->nodes[w->node].listener)
        rc = listener_start(c, w->node);
    dlock__listener *ls = c->nodes[w->node].listener;
    pthread_mutex_unlock(&c->mu);
    if (rc)
        return rc;

    pthread_mutex_lock(&ls->mu);
    channel *ch = ls->channels;
    while (ch && strcmp(ch->name, w->channel) != 0)
        ch = ch->next;
    if (!ch) {
        ch = dlock__calloc(1, sizeof *ch);
        if (!ch || !(ch->name = dlock__strdup(w->channel))) {
            dlock__free(ch);
            pthread_mutex_unlock(&ls->mu);
            return dlock__err(DLOCK_ENOMEM, "out of memory");
        }
        ch->state = CH_NEW;
        ch->next = ls->channels;
        ls->channels = ch;
        poke(ls);
    }
    ch->refs++;
    w->news = 0;
    w->confirmed = ch->state == CH_ACTIVE;
    w->next = ls->waiters;
    ls->waiters = w;

    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    while (!w->confirmed && !ls->stop)
        if (pthread_cond_timedwait(&ls->cv, &ls->mu, &ts) == ETIMEDOUT)
            break;
    rc = w->confirmed ? 0 : ls->stop ? DLOCK_ECLOSED : DLOCK_ETIMEDOUT;
    pthread_mutex_unlock(&ls->mu);
    return rc;
}

void dlock__listener_leave(dlock_client *c, dlock__sub *w)
{
    pthread_mutex_lock(&c->mu);
    dlock__listener *ls = c->nodes[w->node].listener;
    pthread_mutex_unlock(&c->mu);
    if (!ls)
        return;
    pthread_mutex_lock(&ls->mu);
    for (dlock__sub **pp = &ls->waiters; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    for (channel *ch = ls->channels; ch; ch = ch->next)
        if (strcmp(ch->name, w->channel) == 0) {
            /* no poke: the listener drops unused channels on its next pass,
             * and a waiter coming back soon finds the channel still active */
            ch->refs--;
            break;
        }
    pthread_mutex_unlock(&ls->mu);
}

int dlock__listener_take(dlock_client *c, dlock__sub *w, int *confirmed)
{
    dlock__listener *ls = c->nodes[w->node].listener;
    uint64_t v;
    ssize_t r = read(w->efd, &v, sizeof v);
    (void)r;
    pthread_mutex_lock(&ls->mu);
    int news = w->news;
    w->news = 0;
    if (confirmed)
        *confirmed = w->confirmed;
    pthread_mutex_unlock(&ls->mu);
    return news;
}

void dlock__listener_stop(dlock_client *c)
{
    for (int i = 0; i < c->nnodes; i++) {
        pthread_mutex_lock(&c->mu);
        dlock__listener *ls = c->nodes[i].listener;
        c->nodes[i].listener = NULL;
        pthread_mutex_unlock(&c->mu);
        if (!ls)
            continue;
        pthread_mutex_lock(&ls->mu);
        ls->stop = 1;
        pthread_cond_broadcast(&ls->cv);
        pthread_mutex_unlock(&ls->mu);
        poke(ls);
        pthread_join(ls->thread, NULL);
        while (ls->channels) {
            channel *n = ls->channels->next;
            dlock__free(ls->channels->name);
            dlock__free(ls->channels);
            ls->channels = n;
        }
        close(ls->ctl[0]);
        close(ls->ctl[1]);
        pthread_cond_destroy(&ls->cv);
        pthread_mutex_destroy(&ls->mu);
        dlock__free(ls);
    }
}
