/*
 * scripts.c — Lua sources and the EVALSHA/EVAL runner (see scripts.h).
 *
 * Lock value layout: "<32 hex token>:<fencing token>:<owner id>". Scripts
 * compare only the first 32 bytes (the random token) to decide ownership;
 * the rest is for people (dlock status).
 *
 * Fencing tokens: max(last token + 1, server time in microseconds). The
 * per-key "fence" key remembers the last token for a day after the last
 * acquisition; when it is gone (expired, or the server lost its data) the
 * server clock still carries the sequence upwards, as long as that clock
 * never goes back and a key is not acquired more than once per microsecond
 * on average. Microseconds since 1970 stay below 2^53 until the year 2255,
 * so tokens are exact in Lua's doubles. Numbers are turned into strings with
 * string.format('%d'), because Lua's tostring() would print 1.7e+15.
 */
#include "scripts.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "sha1.h"

/* Shared Lua helpers, prepended to the scripts that need them. */
#define LUA_HELPERS                                                              \
    "local function now()\n"                                                     \
    "  local t = redis.call('TIME')\n"                                           \
    "  local us = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"                   \
    "  return us, math.floor(us / 1000)\n"                                       \
    "end\n"                                                                      \
    "local function dequeue(q, info, tok)\n"                                     \
    "  redis.call('ZREM', q, tok)\n"                                             \
    "  redis.call('HDEL', info, tok)\n"                                          \
    "end\n"                                                                      \
    /* first live waiter; dead ones (entry expired) leave the queue here */      \
    "local function head(q, info, now_ms)\n"                                     \
    "  while true do\n"                                                          \
    "    local h = redis.call('ZRANGE', q, 0, 0)[1]\n"                           \
    "    if not h then return nil, nil end\n"                                    \
    "    local e = redis.call('HGET', info, h)\n"                                \
    "    local exp = e and tonumber(string.match(e, '^(%d+):'))\n"               \
    "    if exp and exp > now_ms then return h, e end\n"                         \
    "    dequeue(q, info, h)\n"                                                  \
    "  end\n"                                                                    \
    "end\n"                                                                      \
    /* max(last + 1, server time in microseconds), as a decimal string */        \
    "local function next_fence(fk, now_us)\n"                                    \
    "  local f = now_us\n"                                                       \
    "  local last = tonumber(redis.call('GET', fk) or '0') or 0\n"               \
    "  if last >= f then f = last + 1 end\n"                                     \
    "  local fs = string.format('%d', f)\n"                                      \
    "  redis.call('SET', fk, fs, 'PX', 86400000)\n"                              \
    "  return fs\n"                                                              \
    "end\n"

/* KEYS: lock fence queue qinfo. ARGV: token owner ttl mode entry_ttl.
 * mode 0: one attempt (leave the queue if busy); 1: wait (join or refresh
 * the queue if busy); 2: unfair (take a free lock whatever the queue). */
dlock__script dlock__script_acquire = {
    "acquire",
    LUA_HELPERS
    "local now_us, now_ms = now()\n"
    "local v = redis.call('GET', KEYS[1])\n"
    "if v and string.sub(v, 1, 32) == ARGV[1] then\n"
    "  redis.call('PEXPIRE', KEYS[1], ARGV[3])\n"
    "  dequeue(KEYS[3], KEYS[4], ARGV[1])\n"
    "  return {1, tonumber(string.match(v, '^%x+:(%d+):'))}\n"
    "end\n"
    "if not v then\n"
    "  local h = head(KEYS[3], KEYS[4], now_ms)\n"
    "  if ARGV[4] == '2' or not h or h == ARGV[1] then\n"
    "    local fs = next_fence(KEYS[2], now_us)\n"
    "    redis.call('SET', KEYS[1], ARGV[1] .. ':' .. fs .. ':' .. ARGV[2], 'PX', ARGV[3])\n"
    "    dequeue(KEYS[3], KEYS[4], ARGV[1])\n"
    "    return {1, tonumber(fs)}\n"
    "  end\n"
    "end\n"
    "if ARGV[4] == '1' then\n"
    "  if not redis.call('ZSCORE', KEYS[3], ARGV[1]) then\n"
    "    redis.call('ZADD', KEYS[3], string.format('%d', now_us), ARGV[1])\n"
    "  end\n"
    "  local e = now_ms + tonumber(ARGV[5])\n"
    "  redis.call('HSET', KEYS[4], ARGV[1], string.format('%d', e) .. ':' .. ARGV[3] .. ':' .. ARGV[2])\n"
    "  redis.call('PEXPIRE', KEYS[3], ARGV[5] * 2)\n"
    "  redis.call('PEXPIRE', KEYS[4], ARGV[5] * 2)\n"
    "else\n"
    "  dequeue(KEYS[3], KEYS[4], ARGV[1])\n"
    "end\n"
    "local pttl = 0\n"
    "if v then pttl = redis.call('PTTL', KEYS[1]) end\n"
    "return {0, pttl}\n",
    ""};

/* KEYS: lock fence queue qinfo chan. ARGV: token handoff_max_ms force.
 * Leaves the queue in any case (a waiter giving up calls this too). If the
 * lock is ours (or force is '1'), deletes it and hands it straight to the
 * first live waiter — with a fresh fencing token and a short TTL that the
 * waiter's own confirming round trip replaces — then publishes the new
 * holder's token ("" if none) so waiters wake. Reply 1 released, 0 not ours. */
dlock__script dlock__script_release = {
    "release",
    LUA_HELPERS
    "local v = redis.call('GET', KEYS[1])\n"
    "if ARGV[1] ~= '' then dequeue(KEYS[3], KEYS[4], ARGV[1]) end\n"
    "if not v or (ARGV[3] ~= '1' and string.sub(v, 1, 32) ~= ARGV[1]) then return 0 end\n"
    "redis.call('DEL', KEYS[1])\n"
    "local now_us, now_ms = now()\n"
    "local h, e = head(KEYS[3], KEYS[4], now_ms)\n"
    "if h then\n"
    "  local ttl, owner = string.match(e, '^%d+:(%d+):(.*)$')\n"
    "  local px = math.min(tonumber(ttl), tonumber(ARGV[2]))\n"
    "  local fs = next_fence(KEYS[2], now_us)\n"
    "  redis.call('SET', KEYS[1], h .. ':' .. fs .. ':' .. owner, 'PX', px)\n"
    "  dequeue(KEYS[3], KEYS[4], h)\n"
    "  redis.call('PUBLISH', KEYS[5], h)\n"
    "else\n"
    "  redis.call('PUBLISH', KEYS[5], '')\n"
    "end\n"
    "return 1\n",
    ""};

dlock__script dlock__script_extend = {
    "extend",
    "local v = redis.call('GET', KEYS[1])\n"
    "if v and string.sub(v, 1, 32) == ARGV[1] then\n"
    "  redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "  return 1\n"
    "end\n"
    "return 0\n",
    ""};

/* KEYS: lock queue. */
dlock__script dlock__script_inspect = {
    "inspect",
    "local v = redis.call('GET', KEYS[1])\n"
    "return {v, redis.call('PTTL', KEYS[1]), redis.call('ZCARD', KEYS[2])}\n",
    ""};

static pthread_once_t sha_once = PTHREAD_ONCE_INIT;

static void compute_shas(void)
{
    dlock__script *all[] = {&dlock__script_acquire, &dlock__script_release,
                            &dlock__script_extend, &dlock__script_inspect};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        dlock__sha1_hex(all[i]->sha, all[i]->src, strlen(all[i]->src));
}

/* Queue one call as EVALSHA (use_sha) or EVAL. */
static int append_call(dlock__conn *c, const dlock__call *call, int use_sha)
{
    const char *argv[2 + 1 + DLOCK__SCRIPT_MAX_KEYS + DLOCK__SCRIPT_MAX_ARGS];
    char nkeys[8];
    int argc = 0;
    snprintf(nkeys, sizeof nkeys, "%d", call->nkeys);
    argv[argc++] = use_sha ? "EVALSHA" : "EVAL";
    argv[argc++] = use_sha ? call->script->sha : call->script->src;
    argv[argc++] = nkeys;
    for (int i = 0; i < call->nkeys; i++)
        argv[argc++] = call->keys[i];
    for (int i = 0; i < call->nargs; i++)
        argv[argc++] = call->args[i];
    return dlock__conn_append(c, argc, argv, NULL);
}

int dlock__scripts_run(dlock__conn *c, const dlock__call *calls, int n, dlock__reply **replies,
                       int timeout_ms)
{
    pthread_once(&sha_once, compute_shas);
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++)
        rc = append_call(c, &calls[i], 1);
    if (rc == 0)
        rc = dlock__conn_exchange(c, replies, n, timeout_ms);
    if (rc)
        return rc;
    /* Re-send, as EVAL, the calls whose script the server did not know. */
    int missing = 0;
    for (int i = 0; i < n && rc == 0; i++)
        if (dlock__reply_is_error(replies[i], "NOSCRIPT")) {
            rc = append_call(c, &calls[i], 0);
            missing++;
        }
    if (missing == 0)
        return 0;
    dlock__reply **again = NULL;
    if (rc == 0 && !(again = dlock__calloc((size_t)missing, sizeof *again)))
        rc = dlock__err(DLOCK_ENOMEM, "out of memory");
    if (rc == 0)
        rc = dlock__conn_exchange(c, again, missing, timeout_ms);
    if (rc == 0) {
        for (int i = 0, j = 0; i < n; i++)
            if (dlock__reply_is_error(replies[i], "NOSCRIPT")) {
                dlock__reply_free(replies[i]);
                replies[i] = again[j++];
            }
    } else {
        for (int i = 0; i < n; i++) {
            dlock__reply_free(replies[i]);
            replies[i] = NULL;
        }
    }
    dlock__free(again);
    return rc;
}
