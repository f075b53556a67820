/*
 * reply.h — Redis replies as dlock's own objects, parsed with a bounded
 * hiredis redisReader.
 *
 * hiredis's default reply builder allocates whatever the server announces.
 * dlock's builder refuses strings over DLOCK__REPLY_MAX_STR and arrays over
 * DLOCK__REPLY_MAX_ELEMS, and the connection refuses to buffer more than
 * DLOCK__REPLY_MAX_BUF of unparsed input, so a hostile or broken server
 * cannot make the client allocate without limit. Reply types are hiredis's
 * REDIS_REPLY_* numbers.
 */
#ifndef DLOCK_REPLY_H
#define DLOCK_REPLY_H
#include <stddef.h>

#define DLOCK__REPLY_MAX_STR (1u << 20)
#define DLOCK__REPLY_MAX_ELEMS (1u << 20)
#define DLOCK__REPLY_MAX_BUF (8u << 20)

typedef struct dlock__reply {
    int type;
    long long integer;
    size_t len;
    char *str; /* NUL-terminated; string, status and error replies */
    size_t elements;
    struct dlock__reply **element;
} dlock__reply;

struct redisReader;

/* A reader that builds dlock__reply objects within the bounds above.
 * NULL on out-of-memory. Free with redisReaderFree(). */
struct redisReader *dlock__reader_new(void);

/* 1 if a reader failure on this thread since the last call was a bound we
 * enforce rather than a real out-of-memory; clears the flag. */
int dlock__reader_take_over_limit(void);

void dlock__reply_free(dlock__reply *r);

/* A reply made here: an array of the n integers v[0..n). NULL on
 * out-of-memory. */
dlock__reply *dlock__reply_ints(const long long *v, size_t n);

/* 1 if r is an error reply starting with `prefix` (e.g. "NOSCRIPT"). */
int dlock__reply_is_error(const dlock__reply *r, const char *prefix);

/* Record why reply r from node `desc` was not what `what` expected, and
 * return the code: an ACL denial (NOPERM, or "can't run this command" from
 * inside a script) is DLOCK_EAUTH, anything else DLOCK_EPROTO. `what` may
 * be NULL when the caller adds it later. */
int dlock__reply_fail(const dlock__reply *r, const char *desc, const char *what);

#endif
