/*
 * inspect.c — reading lock state for people and operators: who holds a key
 * (dlock_inspect, with the majority's view on Redlock), everything about a
 * key (dlock_key_state_get), every lock in use (dlock_scan), and removing a
 * stuck lock (dlock_force_unlock). Behind `dlock status`, `leader`,
 * `metrics`, `top` and `unlock --force`.
 *
 * State is read atomically by one script per key (state.lua). A holder's
 * age comes from the grant time stored with it. dlock_scan walks the
 * keyspace with SCAN MATCH <prefix>* (never KEYS), turns each name back
 * into its user key (keys.c) and reads each lock once.
 */
#include <fnmatch.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "client.h"
#include "error.h"
#include "fanout.h"
#include "grant.h"
#include "keys.h"
#include "pool.h"

void dlock_key_state_free(dlock_key_state *s)
{
    if (!s)
        return;
    dlock__free(s->holders);
    dlock__free(s);
}

/* Each server's view of a mutex; with Redlock the lock is held only if a
 * majority holds the same token, and its fencing token is the largest of
 * theirs (the one the holder got). */
static int majority_view(dlock_info *out, const dlock_client *c, dlock__fanout *f)
{
    dlock_info views[DLOCK__NODES_MAX];
    char tokens[DLOCK__NODES_MAX][DLOCK__TOKEN_LEN + 1];
    int held[DLOCK__NODES_MAX] = { 0 }, answered = 0;
    for (int i = 0; i < f->nnodes; i++) {
        if (f->rc[i])
            continue;
        dlock__reply *r = f->replies[i][0];
        memset(&views[i], 0, sizeof views[i]);
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
            r->element[1]->type != REDIS_REPLY_INTEGER ||
            r->element[2]->type != REDIS_REPLY_INTEGER)
            return dlock__reply_fail(r, c->nodes[i].ep.desc, "inspect");
        answered++;
        views[i].waiters = r->element[2]->integer;
        if (r->element[0]->type == REDIS_REPLY_STRING &&
            dlock__parse_lock_value(&views[i], tokens[i], r->element[0]->str, r->element[0]->len) ==
                0) {
            held[i] = 1;
            views[i].ttl_ms = r->element[1]->integer;
        }
        if (views[i].waiters > out->waiters)
            out->waiters = views[i].waiters;
    }
    if (answered == 0)
        return dlock__fanout_error(f, "inspect");
    for (int i = 0; i < f->nnodes && !out->held; i++) {
        if (!held[i])
            continue;
        int same = 0;
        dlock_info best = views[i];
        for (int k = 0; k < f->nnodes; k++)
            if (held[k] && strcmp(tokens[k], tokens[i]) == 0) {
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
    return 0;
}

/* The Redis names of the mutex `key` (checked first) into names; free
 * them with dlock__key_group_free. 0, DLOCK_EINVAL or DLOCK_ENOMEM. */
static int mutex_names(char **names, const dlock_client *c, const char *key)
{
    int rc = dlock__key_check(key);
    return rc ? rc : dlock__key_group(names, c->prefix, key, DLOCK__FAM_MUTEX);
}

int dlock_inspect(dlock_info *out, dlock_client *c, const char *key)
{
    dlock__err_clear();
    if (!out || !c)
        return dlock__err(DLOCK_EINVAL, "NULL argument");
    memset(out, 0, sizeof *out);
    char *names[DLOCK__GROUP_MUTEX];
    int rc = mutex_names(names, c, key);
    if (rc)
        return rc;
    if ((rc = dlock__client_enter(c)) == 0) {
        dlock__call call = { DLOCK__S_INSPECT, DLOCK__GROUP_MUTEX, 0, (const char *const *)names,
                             NULL };
        dlock__fanout f;
        rc = dlock__fanout_run(c, &call, 1, 0, &f);
        if (rc != DLOCK_ENOMEM) {
            if (rc == 0)
                rc = majority_view(out, c, &f);
            dlock__fanout_free(&f);
        }
        dlock__client_leave(c);
    }
    dlock__key_group_free(names, DLOCK__FAM_MUTEX);
    return rc;
}

/* Fill s from a state.lua reply r (kind MUTEX or SEMAPHORE). */
static int parse_state(dlock_key_state *s, const dlock__reply *r, const char *key, int kind)
{
    int ok =
        r->type == REDIS_REPLY_ARRAY && r->elements >= 5 && r->elements % 2 == 1 &&
        r->element[0]->type == REDIS_REPLY_INTEGER && r->element[1]->type == REDIS_REPLY_INTEGER &&
        r->element[3]->type == REDIS_REPLY_INTEGER && r->element[4]->type == REDIS_REPLY_INTEGER;
    if (!ok) {
        char what[DLOCK_KEY_MAX + 16];
        snprintf(what, sizeof what, "state of %s", key);
        return dlock__reply_fail(r, "the server", what);
    }
    size_t members = (r->elements - 5) / 2;
    int has_value = r->element[2]->type == REDIS_REPLY_STRING;
    int64_t now_ms = r->element[0]->integer;
    s->kind = kind;
    s->waiters = r->element[1]->integer;
    s->limit = (int)r->element[4]->integer;
    snprintf(s->key, sizeof s->key, "%s", key);
    if (members + (size_t)has_value > 0 &&
        !(s->holders = dlock__calloc(members + (size_t)has_value, sizeof *s->holders)))
        return dlock__err(DLOCK_ENOMEM, "out of memory");
    if (has_value) {
        int rc = dlock__parse_holder(&s->holders[0], DLOCK_WRITE, r->element[2]->str, now_ms);
        if (rc)
            return rc;
        s->holders[0].ttl_ms = r->element[3]->integer;
        s->nholders = 1;
    }
    for (size_t i = 0; i < members; i++) {
        const dlock__reply *ttl = r->element[5 + 2 * i], *info = r->element[6 + 2 * i];
        if (ttl->type != REDIS_REPLY_INTEGER || info->type != REDIS_REPLY_STRING)
            return dlock__err(DLOCK_EPROTO, "state of %s: unexpected reply", key);
        dlock_holder *h = &s->holders[s->nholders];
        if (dlock__parse_holder(h, kind == DLOCK_KIND_SEMAPHORE ? 0 : DLOCK_READ, info->str,
                                now_ms) != 0)
            continue; /* an entry being written or cleaned: skip it */
        h->ttl_ms = ttl->integer;
        s->nholders++;
    }
    return 0;
}

/* One state script round trip for `key` of `kind` (MUTEX or SEMAPHORE). */
static int state_of(dlock_key_state **out, dlock_client *c, const char *key, int kind)
{
    *out = NULL;
    int family = kind == DLOCK_KIND_SEMAPHORE ? DLOCK__FAM_SEM : DLOCK__FAM_MUTEX;
    char *names[DLOCK__GROUP_SEM];
    int rc = dlock__key_group(names, c->prefix, key, family);
    if (rc)
        return rc;
    const char *arg = family == DLOCK__FAM_SEM ? "s" : "m";
    dlock__call call = { DLOCK__S_STATE, dlock__group_size(family), 1, (const char *const *)names,
                         &arg };
    dlock__reply *r = NULL;
    rc = dlock__fanout_one(c, &call, 1, &r);
    dlock_key_state *s = NULL;
    if (rc == 0 && !(s = dlock__calloc(1, sizeof *s)))
        rc = dlock__err(DLOCK_ENOMEM, "out of memory");
    if (rc == 0)
        rc = parse_state(s, r, key, kind);
    dlock__reply_free(r);
    dlock__key_group_free(names, family);
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
    if (rc == 0 && kind != DLOCK_KIND_ANY && kind != DLOCK_KIND_MUTEX &&
        kind != DLOCK_KIND_SEMAPHORE)
        rc = dlock__err(DLOCK_EINVAL, "kind must be DLOCK_KIND_ANY, _MUTEX or _SEMAPHORE (got %d)",
                        kind);
    if (rc == 0)
        rc = dlock__client_enter(c);
    if (rc)
        return rc;
    rc = state_of(out, c, key,
                  kind == DLOCK_KIND_SEMAPHORE ? DLOCK_KIND_SEMAPHORE : DLOCK_KIND_MUTEX);
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

/* Add the names in a SCAN reply's batch that mark a lock in use and whose
 * user key matches `pattern` to *list. 0 or DLOCK_ENOMEM. */
static int collect_names(const dlock_client *c, const dlock__reply *batch, const char *pattern,
                         found **list, size_t *n, size_t *cap)
{
    for (size_t i = 0; i < batch->elements; i++) {
        const dlock__reply *e = batch->element[i];
        char *key;
        int family, d;
        if (e->type != REDIS_REPLY_STRING ||
            (d = dlock__key_decode(c->prefix, e->str, e->len, &key, &family)) == 0)
            continue;
        if (d < 0)
            return dlock__err(DLOCK_ENOMEM, "out of memory");
        if (fnmatch(pattern, key, 0) != 0) {
            dlock__free(key);
            continue;
        }
        if (*n == *cap) {
            size_t nc = *cap ? *cap * 2 : 64;
            found *nl = dlock__realloc(*list, nc * sizeof *nl);
            if (!nl) {
                dlock__free(key);
                return dlock__err(DLOCK_ENOMEM, "out of memory");
            }
            *list = nl;
            *cap = nc;
        }
        (*list)[(*n)++] =
            (found){ key, family == DLOCK__FAM_SEM ? DLOCK_KIND_SEMAPHORE : DLOCK_KIND_MUTEX };
    }
    return 0;
}

/* SCAN one node's keyspace for names under the prefix. */
static int scan_node(dlock_client *c, int node, const char *match, const char *pattern,
                     found **list, size_t *n, size_t *cap)
{
    char cursor[32] = "0";
    int rc = 0;
    do {
        dlock__conn *conn;
        int reused;
        dlock__reply *r = NULL;
        if ((rc = dlock__pool_get(c, node, &conn, &reused, c->connect_timeout_ms)) != 0)
            break;
        const char *argv[6] = { "SCAN", cursor, "MATCH", match, "COUNT", "1000" };
        rc = dlock__conn_command(conn, &r, 6, argv, NULL);
        dlock__pool_put(c, node, conn);
        if (rc)
            break;
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY) {
            rc = dlock__reply_fail(r, c->nodes[node].ep.desc, "SCAN");
            dlock__reply_free(r);
            break;
        }
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        rc = collect_names(c, r->element[1], pattern, list, n, cap);
        dlock__reply_free(r);
    } while (rc == 0 && strcmp(cursor, "0") != 0);
    return rc;
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
    char match[300];
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
    int nodes = c->backend == DLOCK__BACKEND_CLUSTER || c->backend == DLOCK__BACKEND_REDLOCK
                    ? c->nnodes
                    : 1;
    pthread_mutex_unlock(&c->mu);
    for (int node = 0; node < nodes; node++) {
        rc = scan_node(c, node, match, pattern, &list, &n, &cap);
        if (c->backend != DLOCK__BACKEND_REDLOCK ? rc != 0 : rc == 0 || rc == DLOCK_ENOMEM)
            break; /* Redlock: the first server that answers has every lock */
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

int dlock_force_unlock(int *out_removed, dlock_client *c, const char *key)
{
    dlock__err_clear();
    if (!out_removed || !c)
        return dlock__err(DLOCK_EINVAL, "NULL argument");
    *out_removed = 0;
    char *names[DLOCK__GROUP_MUTEX];
    int rc = mutex_names(names, c, key);
    if (rc)
        return rc;
    if ((rc = dlock__client_enter(c)) == 0) {
        /* the release script with force: the next waiter gets the lock */
        static const char *const args[2] = { "", "1" };
        dlock__call call = { DLOCK__S_RELEASE, DLOCK__GROUP_MUTEX, 2, (const char *const *)names,
                             args };
        dlock__fanout f;
        rc = dlock__fanout_run(c, &call, 1, 0, &f);
        if (rc != DLOCK_ENOMEM) {
            /* every server that answered has no lock on the key now */
            for (int i = 0; rc == 0 && i < f.nnodes; i++) {
                const dlock__reply *r = f.rc[i] == 0 ? f.replies[i][0] : NULL;
                if (r && r->type != REDIS_REPLY_INTEGER)
                    rc = dlock__reply_fail(r, c->nodes[i].ep.desc, "unlock");
                else if (r && r->integer == 1)
                    *out_removed = 1;
            }
            dlock__fanout_free(&f);
        }
        dlock__client_leave(c);
    }
    dlock__key_group_free(names, DLOCK__FAM_MUTEX);
    return rc;
}
