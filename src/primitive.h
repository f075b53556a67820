/*
 * primitive.h — what the primitives that hold nothing (latch.c, barrier.c,
 * rate.c) share: checking the call, naming the keys, one script round trip
 * with a time budget, a party's random token, and waiting for news on a
 * channel.
 *
 * These primitives have no handle, no renewal and no queue: each call is a
 * few round trips of one script on the node of the key's hash tag (one
 * server, the Sentinel master, or the Cluster node of the slot). They are
 * refused on Redlock: a count or a schedule kept separately on each master
 * cannot be made to agree (a count-down that reached only some of them
 * would leave them disagreeing for good).
 *
 * Waiting for news follows the rule of the lock waiters (pubsub.h):
 * subscribe BEFORE the look that decides to wait, so that a change between
 * the look and the sleep is not missed. While the subscription is not
 * confirmed (the listener is connecting, or reconnected and messages may
 * have been lost) the waiter looks again every NEWS_RECHECK_MS instead of
 * trusting messages; once confirmed it looks only when told.
 */
#ifndef DLOCK_PRIMITIVE_H
#define DLOCK_PRIMITIVE_H
#include "client.h"
#include "keys.h"
#include "pubsub.h"
#include "reply.h"
#include "scripts.h"

/* Backoff after a transport failure while waiting (ms): doubles up to max. */
#define DLOCK__PRIM_BACKOFF_MIN_MS 50
#define DLOCK__PRIM_BACKOFF_MAX_MS 1000

/* One call of a primitive on one key: its key group and the client. */
typedef struct dlock__prim {
    dlock_client *c;
    const char *key;
    const char *what; /* "latch", "barrier", "rate limiter": for messages */
    int family;
    int entered; /* inside dlock__client_enter */
    char *names[DLOCK__GROUP_BARRIER];
} dlock__prim;

/* Check the common arguments (client, key), refuse Redlock, name the keys
 * and enter the client. Returns 0 (then dlock__prim_end() must follow) or
 * an error (nothing to undo). */
int dlock__prim_begin(dlock__prim *p, dlock_client *c, const char *key, int family,
                      const char *what);
void dlock__prim_end(dlock__prim *p);

/* Run `script` with p's keys and args[0..nargs) within max_ms (<= 0: the
 * client's default budget). On success *out is the reply, an array whose
 * first element is an integer (anything else is reported as the reply of
 * `op` and returned as DLOCK_EPROTO or DLOCK_EAUTH); free it with
 * dlock__reply_free(). With `acked` (a write), on a master with replicas
 * the call is followed by a WAIT in the same round trip, as grants are
 * (DESIGN.md, "Replicated deployments"): a write that not enough replicas
 * acknowledged in time is DLOCK_EQUORUM, saying so (it was made on the
 * master, and may or may not survive a failover). */
int dlock__prim_call(dlock__reply **out, dlock__prim *p, int script, const char *const *args,
                     int nargs, int64_t max_ms, const char *op, int acked);

/* The integer element i of an array reply (0 if it is not one). */
long long dlock__prim_int(const dlock__reply *r, size_t i);

/* A subscription to one channel of p's group, and its eventfd. */
typedef struct dlock__news {
    dlock_client *c;
    dlock__sub sub;
    int efd;
    int joined;
    int confirmed;
} dlock__news;

/* Subscribe to `channel` (a name in p's group). 0, or DLOCK_ENOMEM,
 * DLOCK_ESYS, DLOCK_ECLOSED. dlock__news_stop() undoes it, also after a
 * failure, and is a no-op on a zeroed dlock__news that was never started. */
int dlock__news_start(dlock__news *n, dlock_client *c, const char *channel);

/* Sleep until `until` (CLOCK_BOOTTIME ns; INT64_MAX: no limit), news on
 * the channel, close or cancel. Returns 1 if the caller should look again
 * (a message, a reconnected listener, or an unconfirmed subscription's
 * re-check), 0 when `until` was reached, or DLOCK_ECLOSED, DLOCK_ECANCELED,
 * DLOCK_ESYS (with a message naming `what` and `key`). */
int dlock__news_sleep(dlock__news *n, int64_t until, dlock_cancel *cancel, const char *what,
                      const char *key);

void dlock__news_stop(dlock__news *n);

/* A deadline from a wait budget: INT64_MAX for DLOCK_WAIT_FOREVER. */
int64_t dlock__prim_deadline(int64_t wait_ms);

/* Check a wait budget: >= 0 (at most 2^40) or DLOCK_WAIT_FOREVER. */
int dlock__prim_check_wait(int64_t wait_ms);

#endif
