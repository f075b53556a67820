/*
 * reply.c — the bounded reply builder behind dlock__reader_new().
 *
 * hiredis calls these functions as it parses; each returns the new object or
 * NULL, and NULL makes the reader stop with an out-of-memory error. We use
 * that for our size limits too and record in a thread-local flag that the
 * cause was a limit (parsing runs on the thread that reads the reply), so the
 * connection can report "reply too large" rather than "out of memory".
 */
#include "reply.h"

#include <hiredis/hiredis.h>
#include <string.h>

#include "alloc.h"
#include "error.h"

static _Thread_local int over_limit;

/* Allocate a reply of `type` and hang it into its parent array, if any. */
static dlock__reply *new_reply(const redisReadTask *task, int type)
{
    dlock__reply *r = dlock__calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->type = type;
    if (task->parent) {
        dlock__reply *parent = task->parent->obj;
        parent->element[task->idx] = r;
    }
    return r;
}

static void *create_string(const redisReadTask *task, char *str, size_t len)
{
    if (len > DLOCK__REPLY_MAX_STR) {
        over_limit = 1;
        return NULL;
    }
    char *copy = dlock__malloc(len + 1);
    if (!copy)
        return NULL;
    dlock__reply *r = new_reply(task, task->type);
    if (!r) {
        dlock__free(copy);
        return NULL;
    }
    memcpy(copy, str, len);
    copy[len] = '\0';
    r->str = copy;
    r->len = len;
    return r;
}

static void *create_array(const redisReadTask *task, int elements)
{
    if (elements < 0 || (unsigned)elements > DLOCK__REPLY_MAX_ELEMS) {
        over_limit = 1;
        return NULL;
    }
    dlock__reply **el = NULL;
    if (elements > 0 && !(el = dlock__calloc((size_t)elements, sizeof *el)))
        return NULL;
    dlock__reply *r = new_reply(task, REDIS_REPLY_ARRAY);
    if (!r) {
        dlock__free(el);
        return NULL;
    }
    r->element = el;
    r->elements = (size_t)elements;
    return r;
}

static void *create_integer(const redisReadTask *task, long long value)
{
    dlock__reply *r = new_reply(task, REDIS_REPLY_INTEGER);
    if (r)
        r->integer = value;
    return r;
}

static void *create_nil(const redisReadTask *task)
{
    return new_reply(task, REDIS_REPLY_NIL);
}

void dlock__reply_free(dlock__reply *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->elements; i++)
        dlock__reply_free(r->element[i]);
    dlock__free(r->element);
    dlock__free(r->str);
    dlock__free(r);
}

dlock__reply *dlock__reply_ints(const long long *v, size_t n)
{
    dlock__reply *r = dlock__calloc(1, sizeof *r);
    dlock__reply **e = n ? dlock__calloc(n, sizeof *e) : NULL;
    size_t made = 0;
    while (r && e && made < n && (e[made] = dlock__calloc(1, sizeof **e)) != NULL) {
        e[made]->type = REDIS_REPLY_INTEGER;
        e[made]->integer = v[made];
        made++;
    }
    if (!r || made < n) {
        while (e && made > 0)
            dlock__free(e[--made]);
        dlock__free(e);
        dlock__free(r);
        return NULL;
    }
    r->type = REDIS_REPLY_ARRAY;
    r->elements = n;
    r->element = e;
    return r;
}

static void free_object(void *p)
{
    dlock__reply_free(p);
}

static redisReplyObjectFunctions bounded_fns = {
    create_string, create_array, create_integer, create_nil, free_object,
};

redisReader *dlock__reader_new(void)
{
    redisReader *r = redisReaderCreateWithFunctions(&bounded_fns);
    if (r)
        r->maxbuf = 64 * 1024;
    return r;
}

int dlock__reader_take_over_limit(void)
{
    int v = over_limit;
    over_limit = 0;
    return v;
}

int dlock__reply_is_error(const dlock__reply *r, const char *prefix)
{
    return r && r->type == REDIS_REPLY_ERROR && r->str &&
           strncmp(r->str, prefix, strlen(prefix)) == 0;
}

int dlock__reply_fail(const dlock__reply *r, const char *desc, const char *what)
{
    /* NOPERM from a command; from inside a script Redis 7.0 says "ERR The
     * user executing the script can't run this command" */
    if (r && r->type == REDIS_REPLY_ERROR &&
        (dlock__reply_is_error(r, "NOPERM") || strstr(r->str, "user executing the script can't")))
        return dlock__err(DLOCK_EAUTH, "%s%s%s: permission denied by the server's ACL (%s)",
                          what ? what : "", what ? ": " : "", desc, r->str);
    return dlock__err(DLOCK_EPROTO, "%s%s%s: unexpected reply%s%s", what ? what : "",
                      what ? ": " : "", desc, r && r->type == REDIS_REPLY_ERROR ? ": " : "",
                      r && r->type == REDIS_REPLY_ERROR ? r->str : "");
}
