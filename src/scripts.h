/*
 * scripts.h — the Lua scripts that make every lock operation atomic on the
 * server, and how they are called.
 *
 * Each script is sent as EVALSHA with a SHA-1 computed locally; a NOSCRIPT
 * reply (a restarted server, SCRIPT FLUSH) is answered by sending the same
 * call as EVAL, which also loads it. Calls can be batched: n calls, one
 * pipelined exchange (plus one more only for those that hit NOSCRIPT).
 */
#ifndef DLOCK_SCRIPTS_H
#define DLOCK_SCRIPTS_H
#include "conn.h"

typedef struct dlock__script {
    const char *name;
    const char *src;
    char sha[41];
} dlock__script;

/* KEYS: lock, fence, queue, qinfo. ARGV: token, owner, ttl_ms, mode
 * (DLOCK__MODE_*), queue entry TTL ms. Reply {1, fencing_token} when
 * granted (or already ours with this token: a retry, or a handoff being
 * confirmed), {0, pttl_of_holder} (0: free but a waiter is ahead) if not. */
extern dlock__script dlock__script_acquire;
enum { DLOCK__MODE_ONCE = 0, DLOCK__MODE_WAIT = 1, DLOCK__MODE_UNFAIR = 2 };
/* KEYS: lock, fence, queue, qinfo, chan. ARGV: token, handoff TTL cap ms,
 * force ("1": whoever holds it). Reply 1 released (and handed to the next
 * waiter), 0 not ours. Also removes the token from the queue. */
extern dlock__script dlock__script_release;
/* KEYS: lock. ARGV: token, ttl_ms. Reply 1 extended, 0 not ours. */
extern dlock__script dlock__script_extend;
/* KEYS: lock, queue. Reply {value or nil, pttl, waiters}. */
extern dlock__script dlock__script_inspect;

#define DLOCK__SCRIPT_MAX_KEYS 8
#define DLOCK__SCRIPT_MAX_ARGS 6

typedef struct dlock__call {
    const dlock__script *script;
    int nkeys, nargs;
    const char *keys[DLOCK__SCRIPT_MAX_KEYS];
    const char *args[DLOCK__SCRIPT_MAX_ARGS];
} dlock__call;

/* Run calls[0..n) on c in one pipelined exchange; replies[i] answers
 * calls[i] (an error reply is a reply). timeout_ms > 0 overrides the
 * connection's command timeout. Returns 0 or the exchange's error (then no
 * replies). */
int dlock__scripts_run(dlock__conn *c, const dlock__call *calls, int n, dlock__reply **replies,
                       int timeout_ms);

#endif
