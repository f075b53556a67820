/*
 * scripts.c — composing the embedded Lua, and EVALSHA with its NOSCRIPT
 * fallback (see scripts.h).
 */
#include "scripts.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "keys.h"
#include "lua_sources.h" /* generated: dlock__lua_<name>[] */
#include <hiredis/hiredis.h>

typedef struct script {
    const char *name;
    const char *body;
    char *src; /* composed, after init */
    char sha[41];
} script;

static script scripts[DLOCK__S_COUNT] = {
    [DLOCK__S_ACQUIRE] = { "acquire", dlock__lua_acquire, NULL, "" },
    [DLOCK__S_READ_ACQUIRE] = { "read_acquire", dlock__lua_read_acquire, NULL, "" },
    [DLOCK__S_MULTI_ACQUIRE] = { "multi_acquire", dlock__lua_multi_acquire, NULL, "" },
    [DLOCK__S_SEM_ACQUIRE] = { "sem_acquire", dlock__lua_sem_acquire, NULL, "" },
    [DLOCK__S_RELEASE] = { "release", dlock__lua_release, NULL, "" },
    [DLOCK__S_READ_RELEASE] = { "read_release", dlock__lua_read_release, NULL, "" },
    [DLOCK__S_SEM_RELEASE] = { "sem_release", dlock__lua_sem_release, NULL, "" },
    [DLOCK__S_EXTEND] = { "extend", dlock__lua_extend, NULL, "" },
    [DLOCK__S_MEMBER_EXTEND] = { "member_extend", dlock__lua_member_extend, NULL, "" },
    [DLOCK__S_KEEPALIVE] = { "keepalive", dlock__lua_keepalive, NULL, "" },
    [DLOCK__S_FENCE_FLOOR] = { "fence_floor", dlock__lua_fence_floor, NULL, "" },
    [DLOCK__S_INSPECT] = { "inspect", dlock__lua_inspect, NULL, "" },
    [DLOCK__S_STATE] = { "state", dlock__lua_state, NULL, "" },
    [DLOCK__S_DOWNGRADE] = { "downgrade", dlock__lua_downgrade, NULL, "" },
    [DLOCK__S_LATCH] = { "latch", dlock__lua_latch, NULL, "" },
    [DLOCK__S_BARRIER] = { "barrier", dlock__lua_barrier, NULL, "" },
    [DLOCK__S_RATE] = { "rate", dlock__lua_rate, NULL, "" },
};

static pthread_mutex_t init_mu = PTHREAD_MUTEX_INITIALIZER;
static int ready; /* under init_mu; read without it only after it was set */

#define HELPERS_MARK "-- @helpers\n"

/* Constants + core + body, with helpers.lua in place of the marker line. */
static char *compose(const char *body)
{
    const char *consts = dlock__lua_constants();
    const char *mark = strstr(body, HELPERS_MARK);
    size_t head = mark ? (size_t)(mark - body) : strlen(body);
    const char *tail = mark ? mark + strlen(HELPERS_MARK) : "";
    const char *helpers = mark ? dlock__lua_helpers : "";
    size_t n = strlen(consts) + strlen(dlock__lua_core) + head + strlen(helpers) + strlen(tail) + 1;
    char *s = dlock__malloc(n);
    if (!s)
        return NULL;
    snprintf(s, n, "%s%s%.*s%s%s", consts, dlock__lua_core, (int)head, body, helpers, tail);
    return s;
}

static int sha1_hex(char out[41], const char *s)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    if (EVP_Digest(s, strlen(s), md, &len, EVP_sha1(), NULL) != 1 || len != 20)
        return -1;
    for (unsigned i = 0; i < len; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    return 0;
}

int dlock__scripts_init(void)
{
    pthread_mutex_lock(&init_mu);
    int rc = 0;
    for (int i = 0; !ready && i < DLOCK__S_COUNT && rc == 0; i++) {
        if (scripts[i].src)
            continue;
        char *s = compose(scripts[i].body);
        if (!s) {
            rc = dlock__err(DLOCK_ENOMEM, "out of memory");
        } else if (sha1_hex(scripts[i].sha, s) != 0) {
            dlock__free(s);
            rc = dlock__err(DLOCK_ENOMEM, "SHA-1 of script %s failed", scripts[i].name);
        } else {
            scripts[i].src = s;
        }
    }
    if (rc == 0)
        ready = 1;
    pthread_mutex_unlock(&init_mu);
    return rc;
}

const char *dlock__script_src(int id)
{
    return id < DLOCK__S_COUNT ? scripts[id].src : "";
}

const char *dlock__script_sha(int id)
{
    return scripts[id].sha;
}

const char *dlock__script_name(int id)
{
    return id < DLOCK__S_COUNT ? scripts[id].name : id == DLOCK__S_WAIT ? "WAIT" : "INFO";
}

int dlock__scripts_append(dlock__conn *c, const dlock__call *call, int use_sha)
{
    if (call->script == DLOCK__S_WAIT) {
        char need[16];
        dlock__conn_set_need_sent(c, dlock__conn_need(c));
        snprintf(need, sizeof need, "%d", dlock__conn_need_sent(c));
        const char *argv[3] = { "WAIT", need, call->args[0] };
        return dlock__conn_append(c, 3, argv, NULL);
    }
    if (call->script == DLOCK__S_REPLICATION)
        return dlock__conn_append_replication(c);
    int rc = dlock__scripts_init();
    if (rc)
        return rc;
    const char *small[24];
    int argc = 3 + call->nkeys + call->nargs;
    const char **argv = small;
    if (argc > (int)(sizeof small / sizeof small[0]) &&
        !(argv = dlock__malloc((size_t)argc * sizeof *argv)))
        return dlock__err(DLOCK_ENOMEM, "out of memory");
    char nkeys[16];
    snprintf(nkeys, sizeof nkeys, "%d", call->nkeys);
    int i = 0;
    argv[i++] = use_sha ? "EVALSHA" : "EVAL";
    argv[i++] = use_sha ? scripts[call->script].sha : scripts[call->script].src;
    argv[i++] = nkeys;
    for (int k = 0; k < call->nkeys; k++)
        argv[i++] = call->keys[k];
    for (int k = 0; k < call->nargs; k++)
        argv[i++] = call->args[k];
    rc = dlock__conn_append(c, argc, argv, NULL);
    if (argv != small)
        dlock__free(argv);
    return rc;
}

int dlock__scripts_wait_replies(dlock__conn *c, const dlock__call *calls, int n,
                                dlock__reply **replies)
{
    /* The WAITs asked for the replicas known before this round; the INFO
     * replication that ran after them may know more (a replica that attached
     * since: it did not acknowledge what this round wrote). Needed is the
     * larger. */
    int before = dlock__conn_need_sent(c);
    for (int i = 0; i < n; i++)
        if (calls[i].script == DLOCK__S_REPLICATION && replies[i])
            dlock__conn_saw_replication(c, replies[i]);
    int now = dlock__conn_need(c), need = now > before ? now : before;
    for (int i = 0; i < n; i++) {
        if (calls[i].script != DLOCK__S_WAIT || !replies[i] ||
            replies[i]->type != REDIS_REPLY_INTEGER)
            continue;
        long long v[3] = { replies[i]->integer, need, before };
        dlock__reply *p = dlock__reply_ints(v, 3);
        if (!p)
            return dlock__err(DLOCK_ENOMEM, "out of memory");
        dlock__reply_free(replies[i]);
        replies[i] = p;
    }
    return 0;
}

int dlock__scripts_redo(const dlock__call *calls, int n, dlock__reply **replies, int *redo)
{
    int m = 0, after = 0;
    for (int i = 0; i < n; i++) {
        int missing = dlock__reply_is_error(replies[i], "NOSCRIPT");
        after |= missing;
        if (missing || (after && calls[i].script == DLOCK__S_WAIT))
            redo[m++] = i;
    }
    return m;
}

int dlock__scripts_fix_noscript(dlock__conn *c, const dlock__call *calls, int n,
                                dlock__reply **replies, int timeout_ms)
{
    int small_redo[16], *redo = small_redo;
    if (n > 16 && !(redo = dlock__malloc((size_t)n * sizeof *redo)))
        return dlock__err(DLOCK_ENOMEM, "out of memory");
    int m = dlock__scripts_redo(calls, n, replies, redo), rc = 0;
    dlock__reply *small[16], **again = small;
    if (m > 16 && !(again = dlock__calloc((size_t)m, sizeof *again)))
        rc = dlock__err(DLOCK_ENOMEM, "out of memory");
    for (int k = 0; k < m && rc == 0; k++)
        rc = dlock__scripts_append(c, &calls[redo[k]], 0);
    if (m > 0 && rc == 0)
        rc = dlock__conn_exchange(c, again, m, timeout_ms);
    for (int k = 0; k < m && rc == 0; k++) {
        dlock__reply_free(replies[redo[k]]);
        replies[redo[k]] = again[k];
    }
    if (rc == 0)
        rc = dlock__scripts_wait_replies(c, calls, n, replies);
    if (rc) {
        for (int i = 0; i < n; i++) {
            dlock__reply_free(replies[i]);
            replies[i] = NULL;
        }
        dlock__conn_mark_broken(c); /* EVALs may be queued and never sent */
    }
    if (again != small)
        dlock__free(again);
    if (redo != small_redo)
        dlock__free(redo);
    return rc;
}

int dlock__scripts_run(dlock__conn *c, const dlock__call *calls, int n, dlock__reply **replies,
                       int timeout_ms)
{
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++)
        rc = dlock__scripts_append(c, &calls[i], 1);
    if (rc == 0)
        rc = dlock__conn_exchange(c, replies, n, timeout_ms);
    if (rc) {
        dlock__conn_mark_broken(c);
        return rc;
    }
    return dlock__scripts_fix_noscript(c, calls, n, replies, timeout_ms);
}

int dlock__scripts_dump(const char *dir)
{
    if (dlock__scripts_init() != 0)
        return -1;
    for (int i = 0; i < DLOCK__S_COUNT; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.lua", dir, scripts[i].name);
        FILE *f = fopen(path, "w");
        if (!f)
            return -1;
        int bad = fputs(scripts[i].src, f) < 0;
        if (fclose(f) != 0 || bad)
            return -1;
    }
    return 0;
}
