/*
 * scripts.h — the Lua scripts that make every lock operation atomic on the
 * server, and how they are called.
 *
 * Each script is sent as EVALSHA with a SHA-1 computed locally; a NOSCRIPT
 * reply (a restarted server, SCRIPT FLUSH) is answered by sending the same
 * call as EVAL, which also loads it. Calls can be batched: n calls, one
 * pipelined exchange (plus one more only for those that hit NOSCRIPT).
 *
 * Keys of one user key (all share its hash tag; see client.c):
 *   mutex / read-write:  lock readers rinfo fence queue qinfo chan
 *   semaphore:           sem  sinfo   sfence squeue sqinfo schan
 * in exactly that order, so a call can pass a contiguous slice.
 *
 *   lock     string  "<token>:<fence>:<owner>" of the writer / mutex holder
 *   readers  zset    reader token -> expiry (server ms)
 *   rinfo    hash    reader token -> "<fence>:<owner>"
 *   sem      zset    permit token -> expiry (server ms)
 *   sinfo    hash    permit token -> "<slot>:<fence>:<owner>"
 *   fence    string  last fencing token handed out for the key
 *   queue    zset    waiter token -> arrival (server us): FIFO order
 *   qinfo    hash    waiter token -> "<expiry ms>:<ttl>:<kind>:<owner>",
 *                    kind 'w' (writer/mutex), 'r' (reader) or a semaphore
 *                    limit; a waiter refreshes its expiry while it waits
 *   chan     channel releases publish the token of the waiter they handed
 *                    the lock to ("" for nobody); a campaign announces its
 *                    new leader as "!<token>"
 */
#ifndef DLOCK_SCRIPTS_H
#define DLOCK_SCRIPTS_H
#include "conn.h"

typedef struct dlock__script {
    const char *name;
    const char *src;
    char sha[41];
} dlock__script;

enum { DLOCK__MODE_ONCE = 0, DLOCK__MODE_WAIT = 1, DLOCK__MODE_UNFAIR = 2 };

/* Acquire scripts. ARGV: token owner ttl mode entry_ttl [extra].
 * mode ONCE: one attempt (leave the queue if busy); WAIT: join or refresh
 * the queue if busy; UNFAIR: take it if free, whatever the queue.
 * Reply {1, fencing_token[, slot]} when granted (or already ours with this
 * token: a retry, or a handoff being confirmed), {0, ms} when not, ms being
 * when the current holder's TTL runs out (0: free but a waiter is ahead). */
extern dlock__script dlock__script_acquire;      /* KEYS lock..chan (7); extra: announce "1"/"0" */
extern dlock__script dlock__script_read_acquire; /* KEYS lock..chan (7) */
extern dlock__script dlock__script_sem_acquire;  /* KEYS sem..schan (6); extra: limit */
/* KEYS: lock_i readers_i fence_i for each key. ARGV token owner ttl.
 * All or nothing, no queue. Reply {1, fence_1..fence_n} or {0, ms}. */
extern dlock__script dlock__script_multi_acquire;

/* Release scripts: leave the queue in any case (a waiter giving up calls
 * them too); if the lock is ours, free it and hand it straight to the first
 * live waiter(s) — with fresh fencing tokens and a short TTL that the
 * waiter's own confirming round trip replaces — and publish. Reply 1
 * released, 0 not ours. ARGV: token handoff_cap_ms [force "1"]. */
extern dlock__script dlock__script_release;      /* KEYS lock..chan (7) */
extern dlock__script dlock__script_read_release; /* KEYS lock..chan (7) */
extern dlock__script dlock__script_sem_release;  /* KEYS sem..schan (6) */

/* KEYS: fence. ARGV: token. Raise the key's last fencing token to at least
 * the given one (Redlock: the lock's token is the largest of the majority's,
 * written back so every later majority, which shares a node with this one,
 * hands out larger tokens). Reply 1. */
extern dlock__script dlock__script_fence_floor;

/* Extend: ARGV token ttl. Reply 1 extended, 0 not ours. */
extern dlock__script dlock__script_extend;        /* KEYS lock */
extern dlock__script dlock__script_member_extend; /* KEYS readers rinfo | sem sinfo */

/* KEYS: lock, queue. Reply {value or nil, pttl, waiters}. */
extern dlock__script dlock__script_inspect;
/* Full state, for dlock_key_state_get() and dlock_scan(). Reply {now_us,
 * waiters, value-or-nil, pttl, then (expiry_ms, info) pairs of the live
 * members, at most 1000}. KEYS: lock readers rinfo queue (mutex), or
 * nil-lock sem sinfo squeue (semaphore). */
extern dlock__script dlock__script_state;

typedef struct dlock__call {
    const dlock__script *script;
    int nkeys, nargs;
    const char *const *keys; /* caller-owned, alive until the call ran */
    const char *const *args;
} dlock__call;

/* Run calls[0..n) on c in one pipelined exchange; replies[i] answers
 * calls[i] (an error reply is a reply). timeout_ms > 0 overrides the
 * connection's command timeout. Returns 0 or the exchange's error (then no
 * replies). */
int dlock__scripts_run(dlock__conn *c, const dlock__call *calls, int n, dlock__reply **replies,
                       int timeout_ms);
/* Queue one call as EVALSHA on c (for callers that send and read
 * themselves, e.g. the parallel fan-out). 0 or DLOCK_ENOMEM. */
int dlock__scripts_append(dlock__conn *c, const dlock__call *call);
/* The same as EVALSHA (use_sha) or EVAL. */
int dlock__scripts_append_mode(dlock__conn *c, const dlock__call *call, int use_sha);

#endif
