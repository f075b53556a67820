/*
 * scripts.c — Lua sources and the EVALSHA/EVAL runner (see scripts.h for
 * the key layout).
 *
 * Ownership: a holder is identified by its 32-hex-digit random token. The
 * mutex value is "<token>:<fence>:<owner>"; scripts compare only the token.
 *
 * Fencing tokens: max(last token + 1, server time in microseconds). The
 * per-key fence key remembers the last token for a day after the last
 * acquisition; when it is gone (expired, or the server lost its data) the
 * server clock still carries the sequence upwards, as long as that clock
 * never goes back and a key is not acquired more than once per microsecond
 * on average. Microseconds since 1970 stay below 2^53 until the year 2255,
 * so tokens are exact in Lua's doubles. Numbers become strings through
 * string.format('%d'): Lua's tostring() would print 1.7e+15.
 *
 * Fairness: waiters join a FIFO queue. A release (or an expiry noticed by
 * any script) hands the lock to the first live waiter directly — readers in
 * a run are admitted together, semaphore waiters while permits last — so a
 * newcomer cannot barge in ahead of the queue. Dead waiters (entry not
 * refreshed) are dropped when they reach the head.
 */
#include "scripts.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "sha1.h"

/* Shared Lua helpers, prepended to the scripts. */
#define LUA_HELPERS                                                              \
    "local function now()\n"                                                     \
    "  local t = redis.call('TIME')\n"                                           \
    "  local us = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"                   \
    "  return us, math.floor(us / 1000)\n"                                       \
    "end\n"                                                                      \
    "local function fmt(n) return string.format('%d', n) end\n"                  \
    "local function dequeue(q, info, tok)\n"                                     \
    "  redis.call('ZREM', q, tok)\n"                                             \
    "  redis.call('HDEL', info, tok)\n"                                          \
    "end\n"                                                                      \
    /* first live waiter and its parsed entry; dead ones leave the queue */      \
    "local function head(q, info, now_ms)\n"                                     \
    "  while true do\n"                                                          \
    "    local h = redis.call('ZRANGE', q, 0, 0)[1]\n"                           \
    "    if not h then return nil end\n"                                         \
    "    local e = redis.call('HGET', info, h)\n"                                \
    "    if e then\n"                                                            \
    "      local exp, ttl, kind, owner = string.match(e, '^(%d+):(%d+):([^:]+):(.*)$')\n" \
    "      if exp and tonumber(exp) > now_ms then return h, tonumber(ttl), kind, owner end\n" \
    "    end\n"                                                                  \
    "    dequeue(q, info, h)\n"                                                  \
    "  end\n"                                                                    \
    "end\n"                                                                      \
    "local function enqueue(q, info, tok, now_us, now_ms, entry_ttl, ttl, kind, owner)\n" \
    "  if not redis.call('ZSCORE', q, tok) then redis.call('ZADD', q, fmt(now_us), tok) end\n" \
    "  redis.call('HSET', info, tok, fmt(now_ms + entry_ttl) .. ':' .. ttl .. ':' .. kind .. ':' .. owner)\n" \
    "  redis.call('PEXPIRE', q, fmt(entry_ttl * 2))\n"                           \
    "  redis.call('PEXPIRE', info, fmt(entry_ttl * 2))\n"                        \
    "end\n"                                                                      \
    "local function next_fence(fk, now_us)\n"                                    \
    "  local f = now_us\n"                                                       \
    "  local last = tonumber(redis.call('GET', fk) or '0') or 0\n"               \
    "  if last >= f then f = last + 1 end\n"                                     \
    "  local fs = fmt(f)\n"                                                      \
    "  redis.call('SET', fk, fs, 'PX', 86400000)\n"                              \
    "  return fs\n"                                                              \
    "end\n"                                                                      \
    /* wake one waiter directly: a list named <queue key><token> that the  */ \
    /* waiter BLPOPs (it outlives a waiter that is not blocked right now); */ \
    /* the element "<fence>:<px>:<slot>" describes the grant              */ \
    "local function signal(q, tok, fs, px, slot)\n"                             \
    "  redis.call('RPUSH', q .. tok, fs .. ':' .. fmt(px) .. ':' .. slot)\n"     \
    "  redis.call('PEXPIRE', q .. tok, 10000)\n"                                \
    "end\n"                                                                      \
    /* keep a member set alive at least `ms` more */                             \
    "local function keep(k, ms)\n"                                               \
    "  if redis.call('PTTL', k) < ms then redis.call('PEXPIRE', k, fmt(ms)) end\n" \
    "end\n"                                                                      \
    /* drop expired members of a zset + info hash; returns the live count */     \
    "local function live(z, info, now_ms)\n"                                     \
    "  local dead = redis.call('ZRANGEBYSCORE', z, '-inf', fmt(now_ms))\n"       \
    "  for _, m in ipairs(dead) do redis.call('ZREM', z, m); redis.call('HDEL', info, m) end\n" \
    "  return redis.call('ZCARD', z)\n"                                          \
    "end\n"                                                                      \
    /* ms until the first member of z expires (0 if none) */                    \
    "local function soonest(z, now_ms)\n"                                        \
    "  local s = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')[2]\n"               \
    "  if not s then return 0 end\n"                                             \
    "  return math.max(tonumber(s) - now_ms, 1)\n"                               \
    "end\n"                                                                      \
    /* add a member with its info, keeping both keys alive long enough */       \
    "local function add_member(z, info, tok, now_ms, ttl, val)\n"                \
    "  redis.call('ZADD', z, fmt(now_ms + ttl), tok)\n"                          \
    "  redis.call('HSET', info, tok, val)\n"                                     \
    "  keep(z, ttl + 1000)\n"                                                    \
    "  keep(info, ttl + 1000)\n"                                                 \
    "end\n"

/* Mutex/read-write helpers. K: lock readers rinfo fence queue qinfo chan. */
#define LUA_RW                                                                   \
    /* hand a free lock to the head of the queue: a writer if no reader is    */ \
    /* left, or the run of readers at the head; publish each new holder       */ \
    "local function handoff(K, now_us, now_ms, cap)\n"                           \
    "  local n = live(K[2], K[3], now_ms)\n"                                     \
    "  local h, ttl, kind, owner = head(K[5], K[6], now_ms)\n"                   \
    "  if not h then redis.call('PUBLISH', K[7], ''); return end\n"              \
    "  if kind == 'w' then\n"                                                    \
    "    if n > 0 then return end\n"                                             \
    "    local fs = next_fence(K[4], now_us)\n"                                  \
    "    local px = math.min(ttl, cap)\n"                                        \
    "    redis.call('SET', K[1], h .. ':' .. fs .. ':' .. owner, 'PX', fmt(px))\n" \
    "    dequeue(K[5], K[6], h)\n"                                               \
    "    signal(K[5], h, fs, px, '-1')\n"                                        \
    "    redis.call('PUBLISH', K[7], h)\n"                                       \
    "    return\n"                                                               \
    "  end\n"                                                                    \
    "  while h and kind == 'r' do\n"                                             \
    "    local fs = next_fence(K[4], now_us)\n"                                  \
    "    local px = math.min(ttl, cap)\n"                                        \
    "    add_member(K[2], K[3], h, now_ms, px, fs .. ':' .. owner)\n"            \
    "    dequeue(K[5], K[6], h)\n"                                               \
    "    signal(K[5], h, fs, px, '-1')\n"                                        \
    "    redis.call('PUBLISH', K[7], h)\n"                                       \
    "    h, ttl, kind, owner = head(K[5], K[6], now_ms)\n"                       \
    "  end\n"                                                                    \
    "end\n"

dlock__script dlock__script_acquire = {
    "acquire",
    LUA_HELPERS LUA_RW
    "local tok, owner, ttl, mode = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]\n"
    "local now_us, now_ms = now()\n"
    "local v = redis.call('GET', KEYS[1])\n"
    "if v and string.sub(v, 1, 32) == tok then\n"
    "  redis.call('PEXPIRE', KEYS[1], fmt(ttl))\n"
    "  dequeue(KEYS[5], KEYS[6], tok)\n"
    "  return {1, tonumber(string.match(v, '^%x+:(%d+):'))}\n"
    "end\n"
    "local readers = 0\n"
    "if not v then\n"
    "  readers = live(KEYS[2], KEYS[3], now_ms)\n"
    "  if readers == 0 then\n"
    "    local h = head(KEYS[5], KEYS[6], now_ms)\n"
    "    if mode == '2' or not h or h == tok then\n"
    "      local fs = next_fence(KEYS[4], now_us)\n"
    "      redis.call('SET', KEYS[1], tok .. ':' .. fs .. ':' .. owner, 'PX', fmt(ttl))\n"
    "      dequeue(KEYS[5], KEYS[6], tok)\n"
    "      if ARGV[6] == '1' then redis.call('PUBLISH', KEYS[7], '!' .. tok) end\n"
    "      return {1, tonumber(fs)}\n"
    "    end\n"
    "  end\n"
    "end\n"
    "if mode == '1' then\n"
    "  enqueue(KEYS[5], KEYS[6], tok, now_us, now_ms, tonumber(ARGV[5]), fmt(ttl), 'w', owner)\n"
    "else\n"
    "  dequeue(KEYS[5], KEYS[6], tok)\n"
    "end\n"
    "if v then return {0, math.max(redis.call('PTTL', KEYS[1]), 1)} end\n"
    "if readers > 0 then return {0, soonest(KEYS[2], now_ms)} end\n"
    "return {0, 0}\n",
    ""};

dlock__script dlock__script_read_acquire = {
    "read_acquire",
    LUA_HELPERS LUA_RW
    "local tok, owner, ttl, mode = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]\n"
    "local now_us, now_ms = now()\n"
    "if redis.call('ZSCORE', KEYS[2], tok) then\n"
    "  local fs = string.match(redis.call('HGET', KEYS[3], tok) or '', '^(%d+):')\n"
    "  add_member(KEYS[2], KEYS[3], tok, now_ms, ttl, redis.call('HGET', KEYS[3], tok))\n"
    "  dequeue(KEYS[5], KEYS[6], tok)\n"
    "  return {1, tonumber(fs)}\n"
    "end\n"
    "local v = redis.call('GET', KEYS[1])\n"
    "if not v then\n"
    "  live(KEYS[2], KEYS[3], now_ms)\n"
    "  local h = head(KEYS[5], KEYS[6], now_ms)\n"
    "  if mode == '2' or not h or h == tok then\n"
    "    local fs = next_fence(KEYS[4], now_us)\n"
    "    add_member(KEYS[2], KEYS[3], tok, now_ms, ttl, fs .. ':' .. owner)\n"
    "    dequeue(KEYS[5], KEYS[6], tok)\n"
    "    local nh, _, kind = head(KEYS[5], KEYS[6], now_ms)\n"
    "    if nh and kind == 'r' then handoff(KEYS, now_us, now_ms, ttl) end\n"
    "    return {1, tonumber(fs)}\n"
    "  end\n"
    "end\n"
    "if mode == '1' then\n"
    "  enqueue(KEYS[5], KEYS[6], tok, now_us, now_ms, tonumber(ARGV[5]), fmt(ttl), 'r', owner)\n"
    "else\n"
    "  dequeue(KEYS[5], KEYS[6], tok)\n"
    "end\n"
    "if v then return {0, math.max(redis.call('PTTL', KEYS[1]), 1)} end\n"
    "return {0, 0}\n",
    ""};

/* Semaphore helpers. K: sem sinfo fence queue qinfo chan. */
#define LUA_SEM                                                                  \
    "local function free_slot(info, limit)\n"                                    \
    "  local used = {}\n"                                                        \
    "  for _, e in ipairs(redis.call('HVALS', info)) do\n"                       \
    "    used[tonumber(string.match(e, '^(%d+):'))] = true\n"                    \
    "  end\n"                                                                    \
    "  for s = 0, limit - 1 do if not used[s] then return s end end\n"           \
    "  return nil\n"                                                             \
    "end\n"                                                                      \
    "local function grant(K, tok, now_us, now_ms, ttl, limit, owner)\n"          \
    "  local slot = free_slot(K[2], limit)\n"                                    \
    "  local fs = next_fence(K[3], now_us)\n"                                    \
    "  add_member(K[1], K[2], tok, now_ms, ttl, slot .. ':' .. fs .. ':' .. owner)\n" \
    "  dequeue(K[4], K[5], tok)\n"                                               \
    "  return fs, slot\n"                                                        \
    "end\n"                                                                      \
    /* admit queued waiters while their own limit allows; quiet: do not      */ \
    /* publish "" when nobody was admitted                                    */ \
    "local function admit(K, now_us, now_ms, cap, quiet)\n"                      \
    "  local n = live(K[1], K[2], now_ms)\n"                                     \
    "  local any = false\n"                                                      \
    "  while true do\n"                                                          \
    "    local h, ttl, kind, owner = head(K[4], K[5], now_ms)\n"                 \
    "    if not h or n >= tonumber(kind) then break end\n"                       \
    "    local px = math.min(ttl, cap)\n"                                        \
    "    local fs, slot = grant(K, h, now_us, now_ms, px, tonumber(kind), owner)\n" \
    "    signal(K[4], h, fs, px, fmt(slot))\n"                                   \
    "    redis.call('PUBLISH', K[6], h)\n"                                       \
    "    n = n + 1\n"                                                            \
    "    any = true\n"                                                           \
    "  end\n"                                                                    \
    "  if not any and not quiet then redis.call('PUBLISH', K[6], '') end\n"      \
    "end\n"

dlock__script dlock__script_sem_acquire = {
    "sem_acquire",
    LUA_HELPERS LUA_SEM
    "local tok, owner, ttl, mode, limit = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[6])\n"
    "local now_us, now_ms = now()\n"
    "local n = live(KEYS[1], KEYS[2], now_ms)\n"
    /* permits freed by expiry go to the queue first (they may include us) */
    "if n < limit and redis.call('ZCARD', KEYS[4]) > 0 then\n"
    "  admit(KEYS, now_us, now_ms, 5000, true)\n"
    "  n = redis.call('ZCARD', KEYS[1])\n"
    "end\n"
    "if redis.call('ZSCORE', KEYS[1], tok) then\n"
    "  local e = redis.call('HGET', KEYS[2], tok)\n"
    "  local slot, fs = string.match(e, '^(%d+):(%d+):')\n"
    "  add_member(KEYS[1], KEYS[2], tok, now_ms, ttl, e)\n"
    "  dequeue(KEYS[4], KEYS[5], tok)\n"
    "  return {1, tonumber(fs), tonumber(slot)}\n"
    "end\n"
    "if n < limit then\n"
    "  local h = head(KEYS[4], KEYS[5], now_ms)\n"
    "  if mode == '2' or not h or h == tok then\n"
    "    local fs, slot = grant(KEYS, tok, now_us, now_ms, ttl, limit, owner)\n"
    "    if h then admit(KEYS, now_us, now_ms, 5000, true) end\n"
    "    return {1, tonumber(fs), slot}\n"
    "  end\n"
    "end\n"
    "if mode == '1' then\n"
    "  enqueue(KEYS[4], KEYS[5], tok, now_us, now_ms, tonumber(ARGV[5]), fmt(ttl), fmt(limit), owner)\n"
    "else\n"
    "  dequeue(KEYS[4], KEYS[5], tok)\n"
    "end\n"
    "if n >= limit then return {0, soonest(KEYS[1], now_ms)} end\n"
    "return {0, 0}\n",
    ""};

dlock__script dlock__script_multi_acquire = {
    "multi_acquire",
    LUA_HELPERS
    "local tok, owner, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])\n"
    "local now_us, now_ms = now()\n"
    "local n = #KEYS / 3\n"
    "local wait = 0\n"
    "for i = 0, n - 1 do\n"
    "  local v = redis.call('GET', KEYS[3 * i + 1])\n"
    "  if v and string.sub(v, 1, 32) ~= tok then\n"
    "    wait = math.max(wait, redis.call('PTTL', KEYS[3 * i + 1]))\n"
    "  elseif not v and redis.call('ZCOUNT', KEYS[3 * i + 2], fmt(now_ms + 1), '+inf') > 0 then\n"
    "    wait = math.max(wait, soonest(KEYS[3 * i + 2], now_ms))\n"
    "  end\n"
    "end\n"
    "if wait > 0 then return {0, wait} end\n"
    "local out = {1}\n"
    "for i = 0, n - 1 do\n"
    "  local v = redis.call('GET', KEYS[3 * i + 1])\n"
    "  if v then\n"
    "    redis.call('PEXPIRE', KEYS[3 * i + 1], fmt(ttl))\n"
    "    out[i + 2] = tonumber(string.match(v, '^%x+:(%d+):'))\n"
    "  else\n"
    "    local fs = next_fence(KEYS[3 * i + 3], now_us)\n"
    "    redis.call('SET', KEYS[3 * i + 1], tok .. ':' .. fs .. ':' .. owner, 'PX', fmt(ttl))\n"
    "    out[i + 2] = tonumber(fs)\n"
    "  end\n"
    "end\n"
    "return out\n",
    ""};

dlock__script dlock__script_release = {
    "release",
    LUA_HELPERS LUA_RW
    "local tok = ARGV[1]\n"
    "local v = redis.call('GET', KEYS[1])\n"
    "if tok ~= '' then dequeue(KEYS[5], KEYS[6], tok) end\n"
    "if not v or (ARGV[3] ~= '1' and string.sub(v, 1, 32) ~= tok) then return 0 end\n"
    "redis.call('DEL', KEYS[1])\n"
    "local now_us, now_ms = now()\n"
    "handoff(KEYS, now_us, now_ms, tonumber(ARGV[2]))\n"
    "return 1\n",
    ""};

dlock__script dlock__script_read_release = {
    "read_release",
    LUA_HELPERS LUA_RW
    "local tok = ARGV[1]\n"
    "dequeue(KEYS[5], KEYS[6], tok)\n"
    "if not redis.call('ZSCORE', KEYS[2], tok) then return 0 end\n"
    "redis.call('ZREM', KEYS[2], tok)\n"
    "redis.call('HDEL', KEYS[3], tok)\n"
    "if not redis.call('GET', KEYS[1]) then\n"
    "  local now_us, now_ms = now()\n"
    "  handoff(KEYS, now_us, now_ms, tonumber(ARGV[2]))\n"
    "end\n"
    "return 1\n",
    ""};

dlock__script dlock__script_sem_release = {
    "sem_release",
    LUA_HELPERS LUA_SEM
    "local tok = ARGV[1]\n"
    "dequeue(KEYS[4], KEYS[5], tok)\n"
    "local mine = redis.call('ZSCORE', KEYS[1], tok)\n"
    "redis.call('ZREM', KEYS[1], tok)\n"
    "redis.call('HDEL', KEYS[2], tok)\n"
    "local now_us, now_ms = now()\n"
    "if mine and tonumber(mine) > now_ms then\n"
    "  admit(KEYS, now_us, now_ms, tonumber(ARGV[2]), false)\n"
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

dlock__script dlock__script_member_extend = {
    "member_extend",
    LUA_HELPERS
    "local _, now_ms = now()\n"
    "local e = redis.call('ZSCORE', KEYS[1], ARGV[1])\n"
    "if not e or tonumber(e) <= now_ms then return 0 end\n"
    "add_member(KEYS[1], KEYS[2], ARGV[1], now_ms, tonumber(ARGV[2]), redis.call('HGET', KEYS[2], ARGV[1]))\n"
    "return 1\n",
    ""};

dlock__script dlock__script_inspect = {
    "inspect",
    "local v = redis.call('GET', KEYS[1])\n"
    "return {v, redis.call('PTTL', KEYS[1]), redis.call('ZCARD', KEYS[2])}\n",
    ""};

dlock__script dlock__script_fence_floor = {
    "fence_floor",
    "local cur = tonumber(redis.call('GET', KEYS[1]) or '0') or 0\n"
    "local want = tonumber(ARGV[1])\n"
    "if want > cur then redis.call('SET', KEYS[1], ARGV[1], 'PX', 86400000) end\n"
    "return 1\n",
    ""};

dlock__script dlock__script_state = {
    "state",
    "local t = redis.call('TIME')\n"
    "local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local out = {tonumber(t[1]) * 1000000 + tonumber(t[2]), redis.call('ZCARD', KEYS[4])}\n"
    "local v = redis.call('GET', KEYS[1])\n"
    "out[3] = v\n"
    "out[4] = v and redis.call('PTTL', KEYS[1]) or 0\n"
    "local m = redis.call('ZRANGEBYSCORE', KEYS[2], string.format('%d', now_ms + 1), '+inf', 'WITHSCORES', 'LIMIT', 0, 1000)\n"
    "for i = 1, #m, 2 do\n"
    "  out[#out + 1] = tonumber(m[i + 1]) - now_ms\n"
    "  out[#out + 1] = redis.call('HGET', KEYS[3], m[i]) or ''\n"
    "end\n"
    "return out\n",
    ""};

static dlock__script *const all_scripts[] = {
    &dlock__script_state, &dlock__script_fence_floor,
    &dlock__script_acquire, &dlock__script_read_acquire, &dlock__script_sem_acquire,
    &dlock__script_multi_acquire, &dlock__script_release, &dlock__script_read_release,
    &dlock__script_sem_release, &dlock__script_extend, &dlock__script_member_extend,
    &dlock__script_inspect,
};

static pthread_once_t sha_once = PTHREAD_ONCE_INIT;

static void compute_shas(void)
{
    for (size_t i = 0; i < sizeof all_scripts / sizeof all_scripts[0]; i++)
        dlock__sha1_hex(all_scripts[i]->sha, all_scripts[i]->src, strlen(all_scripts[i]->src));
}

/* Queue one call as EVALSHA (use_sha) or EVAL. */
static int append_call(dlock__conn *c, const dlock__call *call, int use_sha)
{
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
    argv[i++] = use_sha ? call->script->sha : call->script->src;
    argv[i++] = nkeys;
    for (int k = 0; k < call->nkeys; k++)
        argv[i++] = call->keys[k];
    for (int k = 0; k < call->nargs; k++)
        argv[i++] = call->args[k];
    int rc = dlock__conn_append(c, argc, argv, NULL);
    if (argv != small)
        dlock__free(argv);
    return rc;
}

int dlock__scripts_append(dlock__conn *c, const dlock__call *call)
{
    return dlock__scripts_append_mode(c, call, 1);
}

int dlock__scripts_append_mode(dlock__conn *c, const dlock__call *call, int use_sha)
{
    pthread_once(&sha_once, compute_shas);
    return append_call(c, call, use_sha);
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
    if (rc) {
        dlock__conn_mark_broken(c);
        return rc;
    }
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
    if (rc)
        dlock__conn_mark_broken(c); /* EVALs may be queued and never sent */
    return rc;
}
