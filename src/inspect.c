/*
 * inspect.c — reading lock state for people: dlock_key_state_get() and
 * dlock_scan(), behind `dlock status`, `dlock metrics` and `dlock top`.
 *
 * One script reads a key's holders and queue length atomically. A holder's
 * age comes from its fencing token, which is the server time in
 * microseconds at the grant (or a little above it if tokens ran ahead).
 * dlock_scan() walks the keyspace with SCAN MATCH <prefix>*, turns each
 * dlock key name back into its user key, and inspects each lock once.
 */
#include <fnmatch.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "client.h"
#include "error.h"

void dlock_key_state_free(dlock_key_state *s)
{
    if (!s)
        return;
    dlock__free(s->holders);
    dlock__free(s);
}

/* Parse a decimal prefix of s into *v; returns the rest or NULL. */
static const char *num(const char *s, uint64_t *v)
{
    uint64_t x = 0;
    int n = 0;
    while (*s >= '0' && *s <= '9' && n < 19) {
        x = x * 10 + (uint64_t)(*s++ - '0');
        n++;
    }
    *v = x;
    return n ? s : NULL;
}

/* Fill holder h from an info string: mutex value "<token>:<fence>:<owner>",
 * reader "<fence>:<owner>" or permit "<slot>:<fence>:<owner>". */
int dlock__parse_holder(dlock_holder *h, int mode, const char *info, uint64_t now_us)
{
    uint64_t fence = 0, slot = 0;
    const char *p = info;
    h->mode = mode;
    h->slot = -1;
    if (mode == DLOCK_WRITE) {
        if (strlen(info) < DLOCK__TOKEN_LEN + 1 || info[DLOCK__TOKEN_LEN] != ':')
            return dlock__err(DLOCK_EPROTO, "lock value has an unexpected format");
        p = info + DLOCK__TOKEN_LEN + 1;
    } else if (mode == 0) {
        if (!(p = num(p, &slot)) || *p++ != ':')
            return dlock__err(DLOCK_EPROTO, "permit entry has an unexpected format");
        h->slot = (int)slot;
    }
    if (!(p = num(p, &fence)) || *p++ != ':')
        return dlock__err(DLOCK_EPROTO, "holder entry has an unexpected format");
    h->fencing_token = fence;
    h->age_ms = now_us > fence ? (int64_t)((now_us - fence) / 1000) : 0;
    snprintf(h->owner, sizeof h->owner, "%s", p);
    return 0;
}

/* One state script round trip for `key` of `kind` (MUTEX or SEMAPHORE). */
static int state_of(dlock_key_state **out, dlock_client *c, const char *key, int kind)
{
    *out = NULL;
    static const char *const mutex_k[4] = {"lock", "readers", "rinfo", "queue"};
    static const char *const sem_k[4] = {"schan", "sem", "sinfo", "squeue"};
    const char *const *kinds = kind == DLOCK_KIND_SEMAPHORE ? sem_k : mutex_k;
    char *names[4] = {NULL};
    int rc = 0;
    for (int i = 0; i < 4 && rc == 0; i++)
        rc = dlock__key_name(&names[i], c, key, kinds[i]);
    dlock__reply *r = NULL;
    if (rc == 0) {
        dlock__call call = {&dlock__script_state, 4, 0, (const char *const *)names, NULL};
        rc = dlock__client_run(c, &call, 1, &r);
    }
    dlock_key_state *s = NULL;
    if (rc == 0) {
        int ok = r->type == REDIS_REPLY_ARRAY && r->elements >= 4 && r->elements % 2 == 0 &&
                 r->element[0]->type == REDIS_REPLY_INTEGER && r->element[1]->type == REDIS_REPLY_INTEGER &&
                 r->element[3]->type == REDIS_REPLY_INTEGER;
        if (!ok)
            rc = dlock__err(DLOCK_EPROTO, "state of %s: unexpected reply%s%s", key,
                            r->type == REDIS_REPLY_ERROR ? ": " : "", r->type == REDIS_REPLY_ERROR ? r->str : "");
    }
    if (rc == 0 && !(s = dlock__calloc(1, sizeof *s)))
        rc = dlock__err(DLOCK_ENOMEM, "out of memory");
    if (rc == 0) {
        size_t members = (r->elements - 4) / 2;
        int has_value = r->element[2]->type == REDIS_REPLY_STRING;
        s->kind = kind;
        s->waiters = r->element[1]->integer;
        snprintf(s->key, sizeof s->key, "%s", key);
        if (members + (size_t)has_value > 0 &&
            !(s->holders = dlock__calloc(members + (size_t)has_value, sizeof *s->holders)))
            rc = dlock__err(DLOCK_ENOMEM, "out of memory");
        uint64_t now_us = (uint64_t)r->element[0]->integer;
        if (rc == 0 && has_value) {
            rc = dlock__parse_holder(&s->holders[0], DLOCK_WRITE, r->element[2]->str, now_us);
            s->holders[0].ttl_ms = r->element[3]->integer;
            s->nholders = 1;
        }
        for (size_t i = 0; rc == 0 && i < members; i++) {
            dlock__reply *ttl = r->element[4 + 2 * i], *info = r->element[5 + 2 * i];
            if (ttl->type != REDIS_REPLY_INTEGER || info->type != REDIS_REPLY_STRING) {
                rc = dlock__err(DLOCK_EPROTO, "state of %s: unexpected reply", key);
                break;
            }
            dlock_holder *h = &s->holders[s->nholders];
            if (dlock__parse_holder(h, kind == DLOCK_KIND_SEMAPHORE ? 0 : DLOCK_READ, info->str, now_us) != 0)
                continue; /* an entry being written or cleaned: skip it */
            h->ttl_ms = ttl->integer;
            s->nholders++;
        }
    }
    dlock__reply_free(r);
    for (int i = 0; i < 4; i++)
        dlock__free(names[i]);
    if (rc) {
        dlock_key_state_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

int dlock_key_state_get(dlock_key_state **out, dlock_client *c, const char *key, int kind)
{
    dlock__err_clear();
    if (!out || !c)
        return dlock__err(DLOCK_EINVAL, "NULL argument");
    *out = NULL;
    int rc = dlock__key_check(key);
    if (rc == 0 && kind != DLOCK_KIND_ANY && kind != DLOCK_KIND_MUTEX && kind != DLOCK_KIND_SEMAPHORE)
        rc = dlock__err(DLOCK_EINVAL, "kind must be DLOCK_KIND_ANY, _MUTEX or _SEMAPHORE (got %d)", kind);
    if (rc == 0)
        rc = dlock__client_enter(c);
    if (rc)
        return rc;
    rc = state_of(out, c, key, kind == DLOCK_KIND_SEMAPHORE ? DLOCK_KIND_SEMAPHORE : DLOCK_KIND_MUTEX);
    if (rc == 0 && kind == DLOCK_KIND_ANY && (*out)->nholders == 0 && (*out)->waiters == 0) {
        dlock_key_state *sem = NULL;
        rc = state_of(&sem, c, key, DLOCK_KIND_SEMAPHORE);
        if (rc == 0 && (sem->nholders > 0 || sem->waiters > 0)) {
            dlock_key_state_free(*out);
            *out = sem;
        } else {
            dlock_key_state_free(sem);
        }
        if (rc) {
            dlock_key_state_free(*out);
            *out = NULL;
        }
    }
    dlock__client_leave(c);
    return rc;
}

/* A lock found by the scan: user key and kind. */
typedef struct found {
    char *key;
    int kind;
} found;

static int found_cmp(const void *a, const void *b)
{
    const found *x = a, *y = b;
    int d = strcmp(x->key, y->key);
    return d ? d : x->kind - y->kind;
}

/* Turn a dlock key name into (user key, kind), or return 0 if it is not
 * one of the names that mark a lock in use. */
static int decode(const dlock_client *c, const char *name, size_t len, char **key, int *kind)
{
    static const struct {
        const char *suffix;
        int kind;
    } marks[] = {{":lock", DLOCK_KIND_MUTEX},   {":readers", DLOCK_KIND_MUTEX},
                 {":queue", DLOCK_KIND_MUTEX},  {":sem", DLOCK_KIND_SEMAPHORE},
                 {":squeue", DLOCK_KIND_SEMAPHORE}};
    size_t plen = strlen(c->prefix);
    if (len <= plen || strncmp(name, c->prefix, plen) != 0)
        return 0;
    for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++) {
        size_t sl = strlen(marks[i].suffix);
        if (len < plen + sl + 1 || memcmp(name + len - sl, marks[i].suffix, sl) != 0)
            continue;
        const char *base = name + plen;
        size_t blen = len - plen - sl;
        if (blen >= 3 && base[0] == '{' && base[blen - 1] == '}') {
            base++; /* "{key}": a key without a hash tag */
            blen -= 2;
        } else if (blen >= 2 && base[0] == '#') {
            base++; /* "#key": a key with its own {hash tag} */
            blen--;
        } else {
            return 0;
        }
        if (blen == 0 || blen > DLOCK_KEY_MAX || memchr(base, '\0', blen))
            return 0;
        *key = dlock__strndup(base, blen);
        *kind = marks[i].kind;
        return *key ? 1 : -1;
    }
    return 0;
}

int dlock_scan(dlock_client *c, const char *pattern,
               int (*fn)(const dlock_key_state *state, void *arg), void *arg)
{
    dlock__err_clear();
    if (!c || !fn)
        return dlock__err(DLOCK_EINVAL, "NULL argument");
    if (!pattern)
        pattern = "*";
    int rc = dlock__client_enter(c);
    if (rc)
        return rc;
    found *list = NULL;
    size_t n = 0, cap = 0;
    char match[200], cursor[32];
    /* the prefix is matched literally: escape glob characters in it */
    size_t j = 0;
    for (const char *p = c->prefix; *p && j + 3 < sizeof match; p++) {
        if (strchr("*?[]\\", *p))
            match[j++] = '\\';
        match[j++] = *p;
    }
    match[j++] = '*';
    match[j] = '\0';
    /* a cluster: every master's keyspace; Redlock: the first server that
     * answers (each holds every lock); otherwise the one server */
    pthread_mutex_lock(&c->mu);
    int nodes = c->nnodes;
    pthread_mutex_unlock(&c->mu);
    int redlock = c->backend == DLOCK__BACKEND_REDLOCK;
    for (int node = 0; node < nodes && (rc == 0 || redlock); node++) {
        if (redlock && node > 0 && rc == 0)
            break; /* the previous server answered */
        rc = 0;
        if (!redlock && c->backend != DLOCK__BACKEND_CLUSTER && node > 0)
            break;
        snprintf(cursor, sizeof cursor, "0");
        do {
            dlock__conn *conn;
            int reused;
            dlock__reply *r = NULL;
            if ((rc = dlock__client_conn_get(c, node, &conn, &reused, c->connect_timeout_ms)) != 0)
                break;
            const char *argv[6] = {"SCAN", cursor, "MATCH", match, "COUNT", "1000"};
            rc = dlock__conn_command(conn, &r, 6, argv, NULL);
            dlock__client_conn_put(c, node, conn);
            if (rc)
                break;
            if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING ||
                r->element[1]->type != REDIS_REPLY_ARRAY) {
                rc = dlock__err(DLOCK_EPROTO, "SCAN: unexpected reply%s%s", r->type == REDIS_REPLY_ERROR ? ": " : "",
                                r->type == REDIS_REPLY_ERROR ? r->str : "");
                dlock__reply_free(r);
                break;
            }
            snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
            for (size_t i = 0; rc == 0 && i < r->element[1]->elements; i++) {
                dlock__reply *e = r->element[1]->element[i];
                char *key;
                int kind, d;
                if (e->type != REDIS_REPLY_STRING || (d = decode(c, e->str, e->len, &key, &kind)) == 0)
                    continue;
                if (d < 0) {
                    rc = dlock__err(DLOCK_ENOMEM, "out of memory");
                    break;
                }
                if (fnmatch(pattern, key, 0) != 0) {
                    dlock__free(key);
                    continue;
                }
                if (n == cap) {
                    size_t nc = cap ? cap * 2 : 64;
                    found *nl = dlock__realloc(list, nc * sizeof *nl);
                    if (!nl) {
                        dlock__free(key);
                        rc = dlock__err(DLOCK_ENOMEM, "out of memory");
                        break;
                    }
                    list = nl;
                    cap = nc;
                }
                list[n++] = (found){key, kind};
            }
            dlock__reply_free(r);
        } while (rc == 0 && strcmp(cursor, "0") != 0);
    }
    dlock__client_leave(c);

    if (rc == 0 && n > 0)
        qsort(list, n, sizeof *list, found_cmp);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (i > 0 && list[i].kind == list[i - 1].kind && strcmp(list[i].key, list[i - 1].key) == 0)
            continue;
        dlock_key_state *st = NULL;
        rc = dlock_key_state_get(&st, c, list[i].key, list[i].kind);
        if (rc == DLOCK_EINVAL) { /* a name that is not a valid user key */
            rc = 0;
            continue;
        }
        if (rc == 0 && (st->nholders > 0 || st->waiters > 0))
            rc = fn(st, arg);
        dlock_key_state_free(st);
    }
    for (size_t i = 0; i < n; i++)
        dlock__free(list[i].key);
    dlock__free(list);
    return rc;
}
