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

dlock__script dlock__script_acquire = {
    "acquire",
    "local v = redis.call('GET', KEYS[1])\n"
    "if v then\n"
    "  if string.sub(v, 1, 32) == ARGV[1] then\n"
    "    redis.call('PEXPIRE', KEYS[1], ARGV[3])\n"
    "    return {1, tonumber(string.match(v, '^%x+:(%d+):'))}\n"
    "  end\n"
    "  return {0, redis.call('PTTL', KEYS[1])}\n"
    "end\n"
    "local t = redis.call('TIME')\n"
    "local f = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local last = tonumber(redis.call('GET', KEYS[2]) or '0') or 0\n"
    "if last >= f then f = last + 1 end\n"
    "local fs = string.format('%d', f)\n"
    "redis.call('SET', KEYS[2], fs, 'PX', 86400000)\n"
    "redis.call('SET', KEYS[1], ARGV[1] .. ':' .. fs .. ':' .. ARGV[2], 'PX', ARGV[3])\n"
    "return {1, f}\n",
    ""};

dlock__script dlock__script_release = {
    "release",
    "local v = redis.call('GET', KEYS[1])\n"
    "if v and string.sub(v, 1, 32) == ARGV[1] then\n"
    "  redis.call('DEL', KEYS[1])\n"
    "  return 1\n"
    "end\n"
    "return 0\n",
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

dlock__script dlock__script_inspect = {
    "inspect",
    "local v = redis.call('GET', KEYS[1])\n"
    "return {v, redis.call('PTTL', KEYS[1]), 0}\n",
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

int dlock__scripts_run(dlock__conn *c, const dlock__call *calls, int n, dlock__reply **replies)
{
    pthread_once(&sha_once, compute_shas);
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++)
        rc = append_call(c, &calls[i], 1);
    if (rc == 0)
        rc = dlock__conn_exchange(c, replies, n, 0);
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
        rc = dlock__conn_exchange(c, again, missing, 0);
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
