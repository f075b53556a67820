/*
 * conn.c — a Redis connection on a dlock transport (see conn.h).
 *
 * Writes go out of one buffer that holds every pipelined command; replies
 * are read into the hiredis reader and taken out one by one. The reader's
 * unparsed input is capped (DLOCK__REPLY_MAX_BUF) and the reply builder
 * bounds each object, so neither a slow nor a hostile server can make the
 * client allocate without limit or wait past its deadline.
 */
#include "conn.h"

#include <hiredis/hiredis.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "error.h"
#include "replicas.h"
#include "tls.h"

struct dlock__conn {
    dlock__transport *t;
    redisReader *reader;
    char *obuf;
    size_t olen, ocap;
    int queued;
    int broken;
    int timed_out;           /* the last failure was a deadline, not a closed socket */
    int64_t last_timeout_ms; /* the budget of the exchange in progress, for messages */
    int replicas;            /* replicas attached to its server (at connect); -1 unknown */
    int role_only;           /* INFO refused (an ACL): replicas are read from ROLE */
    int need;                /* replicas that must acknowledge its writes; -1: automatic */
    int need_sent;           /* what the last WAIT queued on it asked for */
    dlock__replicas *seen;   /* automatic: its node's replicas, kept current by INFO */
    int command_timeout_ms;
    dlock__counters *counters;
    dlock__conn *next;
    unsigned tag;
};

#define COUNT(c, field, n)                                                                         \
    do {                                                                                           \
        if ((c)->counters)                                                                         \
            atomic_fetch_add_explicit(&(c)->counters->field, (n), memory_order_relaxed);           \
    } while (0)

void dlock__conn_close(dlock__conn *c)
{
    if (!c)
        return;
    if (c->t)
        c->t->ops->close(c->t);
    if (c->reader)
        redisReaderFree(c->reader);
    dlock__free(c->obuf);
    dlock__free(c);
}

int dlock__conn_broken(const dlock__conn *c)
{
    return c->broken;
}

int dlock__conn_timed_out(const dlock__conn *c)
{
    return c->timed_out;
}

int dlock__conn_replicas(const dlock__conn *c)
{
    return c->replicas;
}

void dlock__conn_set_need(dlock__conn *c, int need, dlock__replicas *r)
{
    c->need = need;
    c->seen = r;
}

void dlock__conn_set_need_sent(dlock__conn *c, int need)
{
    c->need_sent = need;
}

int dlock__conn_need_sent(const dlock__conn *c)
{
    return c->need_sent;
}

int dlock__conn_need(const dlock__conn *c)
{
    if (c->need >= 0)
        return c->need;
    return c->seen && atomic_load(&c->seen->seen) > 0 ? 1 : 0;
}

int dlock__conn_replicas_gone(const dlock__conn *c)
{
    return c->seen && atomic_load(&c->seen->gone_ns) != 0;
}

int dlock__conn_append_replication(dlock__conn *c)
{
    const char *info[2] = { "INFO", "replication" }, *role[1] = { "ROLE" };
    return c->role_only ? dlock__conn_append(c, 1, role, NULL)
                        : dlock__conn_append(c, 2, info, NULL);
}

void dlock__conn_saw_replication(dlock__conn *c, const dlock__reply *r)
{
    int n = dlock__replicas_parse(r);
    if (c->seen && n >= 0)
        dlock__replicas_saw(c->seen, n);
}

void dlock__conn_mark_broken(dlock__conn *c)
{
    c->broken = 1;
}

const char *dlock__conn_desc(const dlock__conn *c)
{
    return c->t->desc;
}

dlock__conn **dlock__conn_next(dlock__conn *c)
{
    return &c->next;
}

unsigned *dlock__conn_tag(dlock__conn *c)
{
    return &c->tag;
}

void dlock__conn_count_round_trip(dlock__conn *c)
{
    COUNT(c, round_trips, 1);
}

/* Mark the connection unusable and count the error. Returns rc. */
static int fail(dlock__conn *c, int rc)
{
    c->broken = 1;
    COUNT(c, errors, 1);
    return rc;
}

/* Writes "<c><n>\r\n" (a RESP header) at p; returns the bytes written. */
static size_t resp_header(char *p, char c, size_t n)
{
    char digits[24];
    size_t k = 0;
    do
        digits[k++] = (char)('0' + n % 10);
    while ((n /= 10) > 0);
    size_t len = 0;
    p[len++] = c;
    while (k > 0)
        p[len++] = digits[--k];
    p[len++] = '\r';
    p[len++] = '\n';
    return len;
}

/* Queue one command in RESP (an array of bulk strings), written straight
 * into the output buffer: no formatting library, no allocation once the
 * buffer has grown. lens may be NULL (argv are C strings). */
int dlock__conn_append(dlock__conn *c, int argc, const char **argv, const size_t *lens)
{
    enum { HDR = 24 }; /* the longest "$<len>\r\n" */
    size_t need = HDR;
    for (int i = 0; i < argc; i++)
        need += HDR + (lens ? lens[i] : strlen(argv[i])) + 2;
    if (c->olen + need > c->ocap) {
        size_t cap = c->ocap ? c->ocap : 256;
        while (cap < c->olen + need)
            cap *= 2;
        char *nb = dlock__realloc(c->obuf, cap);
        if (!nb)
            return fail(c, dlock__err(DLOCK_ENOMEM, "out of memory queueing a command"));
        c->obuf = nb;
        c->ocap = cap;
    }
    char *p = c->obuf + c->olen;
    p += resp_header(p, '*', (size_t)argc);
    for (int i = 0; i < argc; i++) {
        size_t n = lens ? lens[i] : strlen(argv[i]);
        p += resp_header(p, '$', n);
        memcpy(p, argv[i], n);
        p += n;
        *p++ = '\r';
        *p++ = '\n';
    }
    c->olen = (size_t)(p - c->obuf);
    c->queued++;
    return 0;
}

/* Write the whole output buffer before the deadline. */
static int flush_out(dlock__conn *c, int64_t deadline)
{
    size_t off = 0;
    while (off < c->olen) {
        int want = 0;
        ssize_t w = c->t->ops->write(c->t, c->obuf + off, c->olen - off, &want);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0)
            return w;
        int rc = dlock__transport_wait(c->t, want, deadline);
        if (rc == DLOCK_ETIMEDOUT) {
            c->timed_out = 1;
            return dlock__err(DLOCK_ECONN, "%s: timed out sending a command", c->t->desc);
        }
        if (rc)
            return rc;
    }
    c->olen = 0;
    return 0;
}

/* Wait until the transport is ready for `events` (POLLIN/POLLOUT) or the
 * deadline passes: 0, or DLOCK_ECONN naming the exchange's budget (and the
 * connection marked timed out), or the transport's error. */
static int wait_io(dlock__conn *c, int events, int64_t deadline)
{
    int rc = dlock__transport_wait(c->t, events, deadline);
    if (rc == DLOCK_ETIMEDOUT) {
        c->timed_out = 1;
        return dlock__err(DLOCK_ECONN, "%s: no answer within %lld ms", c->t->desc,
                          (long long)c->last_timeout_ms);
    }
    return rc;
}

/* Read until one complete reply is available; *out gets it. With
 * poll_first, wait for readability before the first read: right after a
 * request the reply cannot be there yet, and a read would only say EAGAIN
 * (one system call saved per round trip). */
static int read_reply(dlock__conn *c, dlock__reply **out, int64_t deadline, int poll_first)
{
    char buf[16384];
    for (;;) {
        void *obj = NULL;
        if (redisReaderGetReply(c->reader, &obj) != REDIS_OK) {
            if (dlock__reader_take_over_limit())
                return dlock__err(DLOCK_EPROTO, "%s: reply exceeds the size limit", c->t->desc);
            if (c->reader->err == REDIS_ERR_OOM)
                return dlock__err(DLOCK_ENOMEM, "out of memory reading a reply");
            return dlock__err(DLOCK_EPROTO,
                              "%s: protocol error: %s (the server does not look "
                              "like a Redis server: is the URL's port right?)",
                              c->t->desc, c->reader->errstr);
        }
        if (obj) {
            *out = obj;
            return 0;
        }
        if (c->reader->len - c->reader->pos > DLOCK__REPLY_MAX_BUF)
            return dlock__err(DLOCK_EPROTO, "%s: reply exceeds the size limit", c->t->desc);
        if (poll_first) {
            poll_first = 0;
            int rc = wait_io(c, POLLIN, deadline);
            if (rc)
                return rc;
        }
        int want = 0;
        ssize_t r = c->t->ops->read(c->t, buf, sizeof buf, &want);
        if (r < 0)
            return (int)r;
        if (r == 0) {
            if (deadline == 1)
                return DLOCK__IO_AGAIN; /* non-blocking read: nothing complete yet */
            int rc = wait_io(c, want, deadline);
            if (rc)
                return rc;
            continue;
        }
        if (redisReaderFeed(c->reader, buf, (size_t)r) != REDIS_OK)
            return dlock__err(DLOCK_ENOMEM, "out of memory reading a reply");
    }
}

int dlock__conn_exchange(dlock__conn *c, dlock__reply **replies, int n, int timeout_ms)
{
    if (c->broken)
        return dlock__err(DLOCK_ECONN, "%s: connection is broken", c->t->desc);
    if (n != c->queued)
        return fail(
            c, dlock__err(DLOCK_EINVAL, "internal: %d replies expected, %d queued", n, c->queued));
    c->last_timeout_ms = timeout_ms > 0 ? timeout_ms : c->command_timeout_ms;
    int64_t deadline = dlock__now_ns() + c->last_timeout_ms * 1000000;
    COUNT(c, round_trips, 1);
    COUNT(c, commands, (uint64_t)n);
    int rc = flush_out(c, deadline);
    if (rc)
        return fail(c, rc);
    c->queued = 0;
    for (int i = 0; i < n; i++) {
        if ((rc = read_reply(c, &replies[i], deadline, i == 0)) != 0) {
            while (i-- > 0) {
                dlock__reply_free(replies[i]);
                replies[i] = NULL;
            }
            return fail(c, rc);
        }
    }
    return 0;
}

int dlock__conn_send(dlock__conn *c, int timeout_ms)
{
    if (c->broken)
        return dlock__err(DLOCK_ECONN, "%s: connection is broken", c->t->desc);
    int64_t deadline = dlock__now_ns() + (int64_t)timeout_ms * 1000000;
    COUNT(c, commands, (uint64_t)c->queued);
    int rc = flush_out(c, deadline);
    if (rc)
        return fail(c, rc);
    c->queued = 0;
    return 0;
}

int dlock__conn_read(dlock__conn *c, dlock__reply **out, int64_t deadline_ns)
{
    *out = NULL;
    if (c->broken)
        return dlock__err(DLOCK_ECONN, "%s: connection is broken", c->t->desc);
    /* deadline 1 (long past) tells read_reply not to wait */
    if (deadline_ns)
        c->last_timeout_ms = (deadline_ns - dlock__now_ns()) / 1000000;
    int rc = read_reply(c, out, deadline_ns ? deadline_ns : 1, 0);
    return rc ? fail(c, rc) : 0;
}

int dlock__conn_poll_fd(dlock__conn *c)
{
    return c->t->ops->poll_fd(c->t);
}

int dlock__conn_command(dlock__conn *c, dlock__reply **out, int argc, const char **argv,
                        const size_t *lens)
{
    *out = NULL;
    int rc = dlock__conn_append(c, argc, argv, lens);
    if (rc)
        return rc;
    return dlock__conn_exchange(c, out, 1, 0);
}

/* Map a handshake error reply to a code and message (no secrets in it). */
static int handshake_error(dlock__conn *c, const dlock__reply *r, const char *step)
{
    const char *msg = r->str ? r->str : "";
    if (dlock__reply_is_error(r, "WRONGPASS") || dlock__reply_is_error(r, "NOAUTH") ||
        strstr(msg, "invalid password") || strstr(msg, "invalid username") ||
        strstr(msg, "without any password configured"))
        return dlock__err(DLOCK_EAUTH, "%s: %s: %s", c->t->desc, step, msg);
    if (dlock__reply_is_error(r, "NOPERM"))
        return dlock__err(DLOCK_EAUTH, "%s: %s: %s", c->t->desc, step, msg);
    if (strcmp(step, "SELECT") == 0 && strstr(msg, "out of range"))
        return dlock__err(DLOCK_EINVAL,
                          "%s: the database in the URL does not exist on this server (%s)",
                          c->t->desc, msg);
    return dlock__err(DLOCK_EPROTO, "%s: %s: %s", c->t->desc, step, msg);
}

/* 1 if a reply refuses a command the handshake may go without (ACL, an old
 * or renamed command). */
static int refused(const dlock__reply *r)
{
    return r->type == REDIS_REPLY_ERROR &&
           (dlock__reply_is_error(r, "NOPERM") || dlock__reply_is_error(r, "ERR unknown"));
}

/* INFO was refused: ask ROLE instead, from now on (its count misses a
 * replica still synchronising: see dlock__replicas_parse in replicas.c). */
static int ask_role(dlock__conn *c, int timeout_ms)
{
    const char *av[1] = { "ROLE" };
    dlock__reply *r = NULL;
    int rc = dlock__conn_append(c, 1, av, NULL);
    if (rc == 0)
        rc = dlock__conn_exchange(c, &r, 1, timeout_ms);
    if (rc == 0) {
        c->role_only = 1;
        c->replicas = refused(r) ? -1 : dlock__replicas_parse(r);
    }
    dlock__reply_free(r);
    return rc;
}

/* The handshake, one pipelined exchange: [AUTH] [SELECT] [INFO
 * replication], or PING when there is nothing else to send (so a server
 * that accepts but never answers is found out here); ROLE after it if INFO
 * was refused. */
static int handshake(dlock__conn *c, const dlock__conn_cfg *cfg, int timeout_ms)
{
    const dlock__endpoint *ep = cfg->ep;
    const char *steps[3];
    int n = 0, rc = 0;
    if (ep->pass) {
        const char *av[3] = { "AUTH", ep->user ? ep->user : ep->pass, ep->pass };
        rc = dlock__conn_append(c, ep->user ? 3 : 2, av, NULL);
        steps[n++] = "AUTH";
    } else if (ep->user) {
        return dlock__err(DLOCK_EAUTH, "%s: user '%s' given without a password", ep->desc,
                          ep->user);
    }
    char db[16];
    if (rc == 0 && ep->db != 0) {
        snprintf(db, sizeof db, "%d", ep->db);
        const char *av[2] = { "SELECT", db };
        rc = dlock__conn_append(c, 2, av, NULL);
        steps[n++] = "SELECT";
    }
    if (rc == 0 && cfg->want_role) {
        const char *av[2] = { "INFO", "replication" };
        rc = dlock__conn_append(c, 2, av, NULL);
        steps[n++] = "INFO";
    } else if (rc == 0 && n == 0) {
        const char *av[1] = { "PING" };
        rc = dlock__conn_append(c, 1, av, NULL);
        steps[n++] = "PING";
    }
    dlock__reply *r[3] = { NULL, NULL, NULL };
    int64_t start = dlock__now_ns();
    if (rc == 0) {
        rc = dlock__conn_exchange(c, r, n, timeout_ms);
        if (rc == DLOCK_ECONN && c->timed_out)
            dlock__err(DLOCK_ECONN, "%s: no answer within the connect timeout (%d ms)", ep->desc,
                       cfg->connect_timeout_ms);
    }
    c->replicas = -1;
    int info_refused = 0;
    for (int i = 0; rc == 0 && i < n; i++) {
        if (strcmp(steps[i], "INFO") == 0 && refused(r[i]))
            info_refused = 1; /* refused by the ACL: not fatal */
        else if (strcmp(steps[i], "INFO") == 0 && r[i]->type != REDIS_REPLY_ERROR)
            c->replicas = dlock__replicas_parse(r[i]);
        else if (r[i]->type == REDIS_REPLY_ERROR)
            rc = handshake_error(c, r[i], steps[i]);
    }
    for (int i = 0; i < n; i++)
        dlock__reply_free(r[i]);
    if (rc == 0 && info_refused) {
        int64_t left = timeout_ms - (dlock__now_ns() - start) / 1000000;
        rc = ask_role(c, left < 1 ? 1 : (int)left);
    }
    return rc;
}

int dlock__conn_open(dlock__conn **out, const dlock__conn_cfg *cfg)
{
    *out = NULL;
    dlock__conn *c = dlock__calloc(1, sizeof *c);
    if (!c)
        return dlock__err(DLOCK_ENOMEM, "out of memory");
    c->command_timeout_ms = cfg->command_timeout_ms;
    c->counters = cfg->counters;
    c->reader = dlock__reader_new();
    if (!c->reader) {
        dlock__conn_close(c);
        return dlock__err(DLOCK_ENOMEM, "out of memory");
    }
    int64_t deadline = dlock__now_ns() + (int64_t)cfg->connect_timeout_ms * 1000000;
    int rc = dlock__transport_connect(&c->t, cfg->ep, deadline);
    if (rc == 0 && cfg->ep->tls)
        rc = dlock__tls_wrap(&c->t, cfg->ep, deadline);
    if (rc == 0 && cfg->faults)
        rc = dlock__transport_inject(&c->t, cfg->faults);
    if (rc) {
        dlock__conn_close(c);
        return rc;
    }
    COUNT(c, connects, 1);
    int64_t left_ms = (deadline - dlock__now_ns()) / 1000000;
    if ((rc = handshake(c, cfg, left_ms < 1 ? 1 : (int)left_ms)) != 0) {
        dlock__conn_close(c);
        return rc;
    }
    *out = c;
    return 0;
}
