/*
 * commands.c — talking to a test server directly with hiredis: one
 * command on a fresh connection, and finding a lock's key by what it holds.
 *
 * Design. Tests check the state in Redis through the harness's own
 * connections, never through the library under test. Each call opens its
 * own connection (authenticated with the server's --requirepass, the
 * database selected), so these functions may be used from any thread and
 * from a forked child. dh_find_key locates a key by part of its name and a
 * value it holds (an owner id), so tests do not depend on the library's key
 * layout. dh_store_* are the exception: the fenced store that tests of
 * mutual exclusion write through, on the caller's own connection (a
 * contender's, in its process).
 */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Run one command on c; 1 if it got a reply that is not an error. */
static int cmd_ok_on(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(c, fmt, ap);
    va_end(ap);
    int ok = rep && rep->type != REDIS_REPLY_ERROR;
    if (rep)
        freeReplyObject(rep);
    return ok;
}

redisContext *dh_connect(const dh_redis *r, int db)
{
    struct timeval tv = { 2, 0 };
    redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
    if (!c || c->err) {
        fprintf(stderr, "harness: connect to port %d: %s\n", r->port,
                c ? c->errstr : "out of memory");
        if (c)
            redisFree(c);
        return NULL;
    }
    struct timeval ctv = { 5, 0 };
    redisSetTimeout(c, ctv);
    if ((r->password[0] && !cmd_ok_on(c, "AUTH %s", r->password)) ||
        (db != 0 && !cmd_ok_on(c, "SELECT %d", db))) {
        redisFree(c);
        return NULL;
    }
    return c;
}

/* One command on a fresh connection (closed again); the reply, or NULL
 * (with a message on stderr). */
static redisReply *vcmd(const dh_redis *r, int db, const char *fmt, va_list ap)
{
    redisContext *c = dh_connect(r, db);
    if (!c)
        return NULL;
    redisReply *rep = redisvCommand(c, fmt, ap);
    if (!rep)
        fprintf(stderr, "harness: command on port %d failed: %s\n", r->port, c->errstr);
    redisFree(c);
    return rep;
}

/* Declare rep, the reply (vcmd) to the command that the enclosing
 * variadic function's own arguments (fmt, ...) name: the first step of
 * dh_cmd and of each dh_cmd_* reader. */
#define REPLY_TO_OWN_ARGS(rep, r, db, fmt)                                                         \
    redisReply *rep;                                                                               \
    do {                                                                                           \
        va_list ap_;                                                                               \
        va_start(ap_, fmt);                                                                        \
        rep = vcmd(r, db, fmt, ap_);                                                               \
        va_end(ap_);                                                                               \
    } while (0)

redisReply *dh_cmd(const dh_redis *r, int db, const char *fmt, ...)
{
    REPLY_TO_OWN_ARGS(rep, r, db, fmt);
    return rep;
}

/* The readers of a reply: each takes (frees) it; NULL is a failure. */

static int64_t take_int(redisReply *rep)
{
    int64_t v = rep && rep->type == REDIS_REPLY_INTEGER ? rep->integer : INT64_MIN;
    freeReplyObject(rep);
    return v;
}

static int take_str(char *buf, size_t len, redisReply *rep)
{
    int n = -1;
    if (len)
        buf[0] = '\0';
    if (rep && (rep->type == REDIS_REPLY_STRING || rep->type == REDIS_REPLY_STATUS)) {
        snprintf(buf, len, "%.*s", (int)rep->len, rep->str);
        n = (int)rep->len;
    }
    freeReplyObject(rep);
    return n;
}

static int take_ok(redisReply *rep)
{
    int ok = rep && rep->type != REDIS_REPLY_ERROR;
    if (rep && !ok)
        fprintf(stderr, "harness: error reply: %.*s\n", (int)rep->len, rep->str);
    freeReplyObject(rep);
    return ok ? 0 : -1;
}

int64_t dh_cmd_int(const dh_redis *r, int db, const char *fmt, ...)
{
    REPLY_TO_OWN_ARGS(rep, r, db, fmt);
    return take_int(rep);
}

int dh_cmd_str(char *buf, size_t len, const dh_redis *r, int db, const char *fmt, ...)
{
    REPLY_TO_OWN_ARGS(rep, r, db, fmt);
    return take_str(buf, len, rep);
}

int dh_cmd_ok(const dh_redis *r, int db, const char *fmt, ...)
{
    REPLY_TO_OWN_ARGS(rep, r, db, fmt);
    return take_ok(rep);
}

/* TIME's reply (freed) as microseconds, or -1. */
static int64_t take_time_us(redisReply *r)
{
    int64_t us = -1;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2)
        us =
            strtoll(r->element[0]->str, NULL, 10) * 1000000 + strtoll(r->element[1]->str, NULL, 10);
    freeReplyObject(r);
    return us;
}

int64_t dh_time_us(redisContext *c)
{
    return take_time_us(redisCommand(c, "TIME"));
}

int64_t dh_server_us(const dh_redis *r)
{
    return take_time_us(dh_cmd(r, 0, "TIME"));
}

int64_t dh_dbsize(const dh_redis *r, int db)
{
    int64_t n = dh_cmd_int(r, db, "DBSIZE");
    return n == INT64_MIN ? -1 : n;
}

static int elem_has(const redisReply *e, const char *needle)
{
    if (!e || (e->type != REDIS_REPLY_STRING && e->type != REDIS_REPLY_STATUS))
        return 0;
    return memmem(e->str, e->len, needle, strlen(needle)) != NULL;
}

/* 1 if the reply (a string, or any element of an array) contains needle. */
static int reply_has(const redisReply *rep, const char *needle)
{
    if (!rep)
        return 0;
    if (rep->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < rep->elements; i++)
            if (elem_has(rep->element[i], needle))
                return 1;
        return 0;
    }
    return elem_has(rep, needle);
}

/* The KEYS pattern "*<part>*" with glob characters in part escaped. */
static void contains_pattern(char *pat, size_t len, const char *part)
{
    size_t n = 0;
    pat[n++] = '*';
    for (const char *p = part; *p && n < len - 3; p++) {
        if (strchr("*?[]\\", *p))
            pat[n++] = '\\';
        pat[n++] = *p;
    }
    pat[n++] = '*';
    pat[n] = '\0';
}

/* The whole value of key k (whatever its type) as a reply, or NULL. */
static redisReply *value_of(redisContext *c, const redisReply *k)
{
    static const char *const reads[][2] = {
        { "string", "GET %b" },   { "hash", "HGETALL %b" },     { "list", "LRANGE %b 0 -1" },
        { "set", "SMEMBERS %b" }, { "zset", "ZRANGE %b 0 -1" },
    };
    redisReply *t = redisCommand(c, "TYPE %b", k->str, k->len);
    if (!t)
        return NULL;
    redisReply *v = NULL;
    for (size_t i = 0; i < sizeof reads / sizeof reads[0]; i++)
        if (t->type == REDIS_REPLY_STATUS && strcmp(t->str, reads[i][0]) == 0)
            v = redisCommand(c, reads[i][1], k->str, k->len);
    freeReplyObject(t);
    return v;
}

int dh_find_key(char *out, size_t outlen, const dh_redis *r, int db, const char *name_part,
                const char *needle)
{
    char pat[2 * 600 + 4];
    contains_pattern(pat, sizeof pat, name_part);
    redisContext *c = dh_connect(r, db);
    if (!c)
        return -1;
    int found = 0;
    redisReply *keys = redisCommand(c, "KEYS %s", pat);
    if (!keys || keys->type != REDIS_REPLY_ARRAY) {
        if (keys)
            freeReplyObject(keys);
        redisFree(c);
        return -1;
    }
    for (size_t i = 0; i < keys->elements && !found; i++) {
        const redisReply *k = keys->element[i];
        redisReply *v = value_of(c, k);
        if (reply_has(v, needle)) {
            snprintf(out, outlen, "%.*s", (int)k->len, k->str);
            found = 1;
        }
        if (v)
            freeReplyObject(v);
    }
    freeReplyObject(keys);
    redisFree(c);
    return found;
}

int dh_delete_key(const dh_redis *r, int db, const char *name_part, const char *needle)
{
    char name[1024];
    int found = dh_find_key(name, sizeof name, r, db, name_part, needle);
    if (found != 1)
        return found;
    return dh_cmd_int(r, db, "DEL %s", name) == 1 ? 1 : -1;
}

/* The store's write: accepted only with a token not below the fence. */
#define STORE_WRITE                                                                                \
    "local last = tonumber(redis.call('GET', 'fence') or '0') "                                    \
    "if tonumber(ARGV[1]) < last then return 0 end "                                               \
    "redis.call('SET', 'fence', ARGV[1]) redis.call('SET', 'counter', ARGV[2]) "                   \
    "redis.call('INCR', 'writes') return 1"

long long dh_store_counter(redisContext *st)
{
    redisReply *r = redisCommand(st, "GET counter");
    long long v = r && r->type == REDIS_REPLY_STRING ? atoll(r->str) : 0;
    freeReplyObject(r);
    return v;
}

int dh_store_write(redisContext *st, uint64_t token, long long value)
{
    char tok[32], val[32];
    snprintf(tok, sizeof tok, "%llu", (unsigned long long)token);
    snprintf(val, sizeof val, "%lld", value);
    redisReply *r = redisCommand(st, "EVAL %s 0 %s %s", STORE_WRITE, tok, val);
    int accepted = r && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    freeReplyObject(r);
    return accepted;
}

/* The store's integer `name` (0 if unset). */
static long long store_get(const dh_redis *store, const char *name)
{
    char buf[32] = "";
    dh_cmd_str(buf, sizeof buf, store, 0, "GET %s", name);
    return atoll(buf);
}

long long dh_store_lost(const dh_redis *store)
{
    long long writes = store_get(store, "writes"); /* first: the writers are stopped */
    return writes - store_get(store, "counter");
}

int dh_cluster_ok(dh_redis *const *nodes, int n)
{
    for (int i = 0; i < n; i++) {
        if (!nodes[i])
            continue;
        redisReply *r = dh_cmd(nodes[i], 0, "CLUSTER INFO");
        int ok = r && r->type == REDIS_REPLY_STRING && strstr(r->str, "cluster_state:ok");
        freeReplyObject(r);
        if (!ok)
            return 0;
    }
    return 1;
}

/* The value of field `f` in a flat field/value array reply, or NULL. */
static const char *field_of(const redisReply *r, const char *f)
{
    for (size_t k = 0; k + 1 < r->elements; k += 2)
        if (r->element[k]->type == REDIS_REPLY_STRING && strcmp(r->element[k]->str, f) == 0 &&
            r->element[k + 1]->type == REDIS_REPLY_STRING)
            return r->element[k + 1]->str;
    return NULL;
}

int dh_sentinel_replica_ready(int port, const char *name)
{
    redisContext *c = redisConnect("127.0.0.1", port);
    redisReply *r = c && !c->err ? redisCommand(c, "SENTINEL REPLICAS %s", name) : NULL;
    int ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
             r->element[0]->type == REDIS_REPLY_ARRAY;
    if (ok) {
        const char *flags = field_of(r->element[0], "flags");
        const char *link = field_of(r->element[0], "master-link-status");
        const char *refresh = field_of(r->element[0], "info-refresh");
        ok = flags && strcmp(flags, "slave") == 0 && link && strcmp(link, "ok") == 0 && refresh &&
             atoll(refresh) < 5000;
    }
    freeReplyObject(r);
    if (c)
        redisFree(c);
    return ok;
}
