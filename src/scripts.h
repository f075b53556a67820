/*
 * scripts.h — the Lua scripts that make every lock operation atomic on the
 * server, and the one way they are sent.
 *
 * The scripts are real Lua files in src/lua/, embedded at build time
 * (cmake/embed_lua.cmake). What Redis runs is composed once per process:
 * the constants prelude from keys.h, core.lua, then the script, with
 * helpers.lua in place of its "-- @helpers" line. Each file's header says
 * what it takes (KEYS, ARGV) and what it answers.
 *
 * Calls go out as EVALSHA with the SHA-1 of the composed text; a NOSCRIPT
 * reply (a restarted server, SCRIPT FLUSH, a new cluster node) is answered
 * by sending the same call again as EVAL, which also loads it. Calls are
 * pipelined: n calls, one exchange (plus one more only for those that hit
 * NOSCRIPT).
 */
#ifndef DLOCK_SCRIPTS_H
#define DLOCK_SCRIPTS_H
#include "conn.h"

enum {
    DLOCK__S_ACQUIRE,
    DLOCK__S_READ_ACQUIRE,
    DLOCK__S_MULTI_ACQUIRE,
    DLOCK__S_SEM_ACQUIRE,
    DLOCK__S_RELEASE,
    DLOCK__S_READ_RELEASE,
    DLOCK__S_SEM_RELEASE,
    DLOCK__S_EXTEND,
    DLOCK__S_MEMBER_EXTEND,
    DLOCK__S_KEEPALIVE,
    DLOCK__S_FENCE_FLOOR,
    DLOCK__S_INSPECT,
    DLOCK__S_STATE,
    DLOCK__S_DOWNGRADE,
    DLOCK__S_LATCH,
    DLOCK__S_BARRIER,
    DLOCK__S_RATE,
    DLOCK__S_COUNT,
    /* Not a script: "WAIT <replicas> <args[0] ms>" for the connection's
     * replicas to acknowledge its writes so far (dlock__conn_need). Its reply
     * becomes {acknowledged, needed}. keys[0] (nkeys 1) only routes it on a
     * Cluster: to the node of the call it follows. */
    DLOCK__S_WAIT = 100,
    /* Not a script: "INFO replication" (ROLE where an ACL refuses INFO),
     * read to keep the node's replica count current (dlock__conn_saw_replication);
     * routed like DLOCK__S_WAIT. */
    DLOCK__S_REPLICATION = 101
};

/* One script call: which script, its keys and arguments (caller-owned,
 * alive until the call ran). */
typedef struct dlock__call {
    int script; /* DLOCK__S_* */
    int nkeys, nargs;
    const char *const *keys;
    const char *const *args;
} dlock__call;

/* Compose the scripts (once per process; retried after a failure).
 * 0 or DLOCK_ENOMEM. Every function below calls it. */
int dlock__scripts_init(void);

/* The composed text and SHA-1 of script `id` (after a successful init). */
const char *dlock__script_src(int id);
const char *dlock__script_sha(int id);
const char *dlock__script_name(int id);

/* Queue one call on c as EVALSHA (use_sha) or EVAL. 0 or DLOCK_ENOMEM. */
int dlock__scripts_append(dlock__conn *c, const dlock__call *call, int use_sha);

/* Run calls[0..n) on c in one pipelined exchange; replies[i] answers
 * calls[i] (an error reply is a reply). timeout_ms > 0 overrides the
 * connection's command timeout. Returns 0 or the exchange's error (then no
 * replies, and c is marked broken). */
int dlock__scripts_run(dlock__conn *c, const dlock__call *calls, int n, dlock__reply **replies,
                       int timeout_ms);

/* After an exchange of calls[0..n) on c: send again, as EVAL, the calls
 * whose reply is NOSCRIPT (and the WAITs after them, so they cover those
 * writes too), and put the new replies in their place (the one NOSCRIPT
 * path; dlock__scripts_run uses it too), then turn WAIT replies into
 * {acknowledged, needed}. 0 or the error of that second exchange (replies
 * are then all freed and NULL). */
int dlock__scripts_fix_noscript(dlock__conn *c, const dlock__call *calls, int n,
                                dlock__reply **replies, int timeout_ms);

/* The pieces of dlock__scripts_fix_noscript, for callers that read replies
 * themselves (the parallel fan-out): which calls to send again (those that
 * hit NOSCRIPT, and every WAIT after the first of them; their indices into
 * redo[], which has room for n; returns how many), and turning each WAIT
 * reply into {acknowledged, needed, asked} (0 or DLOCK_ENOMEM), needed counting
 * the replicas the round's replication query saw as well as those known
 * before, asked what the WAIT asked for (fewer when a replica attached
 * since the client last looked). */
int dlock__scripts_redo(const dlock__call *calls, int n, dlock__reply **replies, int *redo);
int dlock__scripts_wait_replies(dlock__conn *c, const dlock__call *calls, int n,
                                dlock__reply **replies);

/* Write each composed script to DIR/<name>.lua (for luacheck in
 * scripts/test.sh). 0 or -1. */
int dlock__scripts_dump(const char *dir);

#endif
