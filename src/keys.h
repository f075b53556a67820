/*
 * keys.h — the Redis keys of a lock, named in ONE table, and the parsers of
 * the values stored in them.
 *
 * Every user key maps to a group of Redis keys that share its hash tag, so
 * that one script (and one Cluster slot) sees all of them:
 *
 *     "<prefix>{<key>}:<suffix>"   or, when the user key has its own
 *     "<prefix>#<key>:<suffix>"    non-empty {hash tag}, that tag decides
 *
 * Two families of locks use groups of the same shape. A role has the same
 * position in both, so the scripts' helpers (queue, watchers, fencing) work
 * on either:
 *
 *   role     mutex family (mutex, rw, multi, leader)   semaphore family
 *   LOCK     lock    string "<token>:<fence>:<since>:   smeta  hash limit/used/next
 *                            <owner>"
 *   HOLDERS  readers zset token -> expiry (ms)          sem    zset token -> expiry
 *   HINFO    rinfo   hash token ->                      sinfo  hash token -> "<slots>:
 *                    "<fence>:<since>:<owner>"                 <fence>:<since>:<owner>"
 *   FENCE    fence   string: last fencing token         sfence
 *   QUEUE    queue   zset token -> arrival (us): FIFO   squeue
 *   QINFO    qinfo   hash token -> waiter entry         sqinfo
 *   CHAN     chan    pub/sub channel                    schan
 *   WATCH    watch   zset token -> expiry: unqueued     swatch
 *                    waiters and leadership watchers
 *   FREE     -                                          sfree  zset of returned slots
 *
 * The primitives that hold nothing (latch, barrier, rate limiter) have
 * families of their own, with roles named after what they keep:
 *
 *   family   role      suffix   what
 *   latch    LATCH     latch    hash count/gen/opened: the count left, the
 *                               generation (server us at init) and the last
 *                               generation that reached zero
 *            LCHAN     lchan    pub/sub channel: "init" and, at zero, the gen
 *   barrier  BAR       barrier  hash gen/parties: the generation waiting now
 *            BARR      barr     zset token -> expiry (ms): live arrivals
 *            BDONE     bdone    hash token -> the generation it passed
 *            BCHAN     bchan    pub/sub channel: the generation that tripped
 *   rate     RATE      rate     hash tat/t/burst: GCRA's theoretical arrival
 *                               time (server us) and its parameters
 *
 * <since> is the server time (ms) of the grant: how long a holder has held.
 * A waiter's signal list is the QUEUE key's name followed by its token.
 * The scripts see the roles under the same names (LOCK, HOLDERS, ...; 1-based
 * positions in KEYS) through a prelude generated from this table together
 * with the protocol constants (dlock__lua_constants), so C and Lua cannot
 * disagree about a position or a number.
 */
#ifndef DLOCK_KEYS_H
#define DLOCK_KEYS_H
#include <stddef.h>
#include <stdint.h>

#include "dlock.h"

enum {
    DLOCK__FAM_MUTEX = 0,
    DLOCK__FAM_SEM = 1,
    DLOCK__FAM_LATCH,
    DLOCK__FAM_BARRIER,
    DLOCK__FAM_RATE
};

enum {
    DLOCK__K_LOCK = 0, /* semaphore: META */
    DLOCK__K_HOLDERS,
    DLOCK__K_HINFO,
    DLOCK__K_FENCE,
    DLOCK__K_QUEUE,
    DLOCK__K_QINFO,
    DLOCK__K_CHAN,
    DLOCK__K_WATCH,
    DLOCK__K_FREE, /* semaphore only */
    DLOCK__K_MAX
};
#define DLOCK__K_META DLOCK__K_LOCK

/* Roles of the primitives' families (positions in their groups). */
enum { DLOCK__K_LATCH = 0, DLOCK__K_LCHAN = 1 };
enum { DLOCK__K_BAR = 0, DLOCK__K_BARR = 1, DLOCK__K_BDONE = 2, DLOCK__K_BCHAN = 3 };
enum { DLOCK__K_RATE = 0 };

/* Keys in a group of each family (a mutex group has no FREE). */
#define DLOCK__GROUP_MUTEX 8
#define DLOCK__GROUP_SEM 9
#define DLOCK__GROUP_LATCH 2
#define DLOCK__GROUP_BARRIER 4
#define DLOCK__GROUP_RATE 1

#define DLOCK__TOKEN_LEN 32 /* hex digits of a holder's random token */

/* Protocol constants, shared with the scripts (see wait.c for their role). */
#define DLOCK__ENTRY_TTL_MS 800              /* a waiter's entry (or a lease) without keepalive */
#define DLOCK__LEASE_TTL_MS 300              /* a fresh lease, until the waiter's keepalive */
#define DLOCK__KEEPALIVE_MS 200              /* how often a waiter's entry is kept alive */
#define DLOCK__FENCE_TTL_MS 86400000         /* the fence key outlives its last use by a day */
#define DLOCK__FENCE_MAX 9007199254740991ULL /* 2^53 - 1: exact in Lua's numbers */

/* Script modes and reply codes (also in the Lua prelude). */
enum { DLOCK__MODE_ONCE = 0, DLOCK__MODE_WAIT = 1, DLOCK__MODE_UNFAIR = 2 };
enum { DLOCK__R_BUSY = 0, DLOCK__R_GRANTED = 1, DLOCK__R_CONFLICT = 2 };
/* keepalive.lua's answer for one waiter */
enum { DLOCK__KA_LOST = 0, DLOCK__KA_QUEUED = 1, DLOCK__KA_LEASED = 2, DLOCK__KA_FREE = 3 };

/* Reply codes of the primitives' scripts (also in the Lua prelude). */
enum {
    DLOCK__P_OK = 1,       /* done (latch created or counted, barrier passed, slot taken) */
    DLOCK__P_BUSY = 0,     /* latch: live; barrier: still waiting; rate: over the rate */
    DLOCK__P_CONFLICT = 2, /* other parameters in use (barrier parties, rate) */
    DLOCK__P_MISSING = 3,  /* latch: no such latch */
    DLOCK__P_ZERO = 4      /* latch: already at zero */
};
#define DLOCK__BARRIER_LIFE_MS 3000   /* a barrier arrival without refresh */
#define DLOCK__BARRIER_DONE_MS 600000 /* how long "who passed" is remembered */

/* Check a user key: non-empty, at most DLOCK_KEY_MAX bytes. 0 or EINVAL. */
int dlock__key_check(const char *key);

/* Where the hash tag of `key` is: *start and *len of the part Redis Cluster
 * hashes (the first non-empty "{...}", else the whole key). Returns 1 if
 * the key has its own tag, 0 if not. */
int dlock__hash_tag(const char *key, size_t len, size_t *start, size_t *tag_len);

/* The Redis Cluster slot of a Redis key name. */
int dlock__key_slot(const char *name);

/* The Redis name of one role of `key`'s group: "<prefix>{key}:<suffix>".
 * *out is allocated (caller frees). Returns 0, EINVAL, ENOMEM. */
int dlock__key_name(char **out, const char *prefix, const char *key, int family, int role);

/* All names of `key`'s group (DLOCK__GROUP_* of them) into names[]; on
 * failure nothing is left allocated. */
int dlock__key_group(char **names, const char *prefix, const char *key, int family);
void dlock__key_group_free(char **names, int family);
int dlock__group_size(int family);

/* The reverse of dlock__key_name for the roles that mark a lock in use
 * (LOCK, HOLDERS, QUEUE of either family): the user key (allocated) and the
 * family. Returns 1 if `name` is such a name, 0 if not, DLOCK_ENOMEM. */
int dlock__key_decode(const char *prefix, const char *name, size_t len, char **key, int *family);

/* The Lua prelude: role positions, modes, reply codes and constants as Lua
 * locals. Static text, built once. */
const char *dlock__lua_constants(void);

/* ------------------------------------------------------ stored values */

/* A fencing token in decimal (1 to 16 digits, below 2^53), the whole of
 * s[0..len). 0 or DLOCK_EPROTO. */
int dlock__parse_fence(uint64_t *out, const char *s, size_t len);

/* v as decimal text in buf (room for 21 bytes with the NUL); returns buf.
 * For the arguments of every call, where snprintf would cost more than
 * the rest of the call's preparation. */
char *dlock__fmt_ll(char buf[24], long long v);

/* A new lock token: 32 hex digits of fresh randomness from getrandom().
 * Returns 0 or DLOCK_ESYS. */
int dlock__token_new(char out[DLOCK__TOKEN_LEN + 1]);

/* A mutex value "<token>:<fence>:<since>:<owner>" into info (owner,
 * fencing token) and, if token is not NULL, the holder's token
 * (DLOCK__TOKEN_LEN + 1 bytes). 0 or DLOCK_EPROTO. */
int dlock__parse_lock_value(dlock_info *info, char *token, const char *v, size_t len);

/* A holder entry into h: mode DLOCK_WRITE a mutex value, DLOCK_READ a
 * reader "<fence>:<since>:<owner>", 0 a permit "<slots>:<fence>:<since>:
 * <owner>" (slots: "3" or "3,4,7"; h->slot is the first, h->permits their
 * number). h->age_ms = now_ms - since. 0 or DLOCK_EPROTO. */
int dlock__parse_holder(dlock_holder *h, int mode, const char *info, int64_t now_ms);

/* A handoff signal "<fence>:<lease ms>:<slots>" ("-1" for no slot).
 * 0 or DLOCK_EPROTO. */
int dlock__parse_signal(uint64_t *fence, int64_t *lease_ms, int *slot, const char *s, size_t len);

#endif
