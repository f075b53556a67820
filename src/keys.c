/*
 * keys.c — the key table, hash tags, the Lua constants prelude and the
 * parsers of stored values (see keys.h).
 *
 * Naming is one-to-one and reversible: the character after the prefix is
 * '{' for "{key}" or '#' for a key that carries its own hash tag, and no
 * suffix contains ':', so dlock_scan can turn a name back into (key, family).
 * Parsers are strict: a value written by an older or foreign client that
 * does not have the expected shape is DLOCK_EPROTO, never a guess.
 */
#include "keys.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "alloc.h"
#include "error.h"

static const char *const suffixes[5][DLOCK__K_MAX] = {
    [DLOCK__FAM_MUTEX] = { "lock", "readers", "rinfo", "fence", "queue", "qinfo", "chan", "watch",
                           NULL },
    [DLOCK__FAM_SEM] = { "smeta", "sem", "sinfo", "sfence", "squeue", "sqinfo", "schan", "swatch",
                         "sfree" },
    [DLOCK__FAM_LATCH] = { "latch", "lchan" },
    [DLOCK__FAM_BARRIER] = { "barrier", "barr", "bdone", "bchan" },
    [DLOCK__FAM_RATE] = { "rate" },
};

int dlock__group_size(int family)
{
    switch (family) {
    case DLOCK__FAM_SEM:
        return DLOCK__GROUP_SEM;
    case DLOCK__FAM_LATCH:
        return DLOCK__GROUP_LATCH;
    case DLOCK__FAM_BARRIER:
        return DLOCK__GROUP_BARRIER;
    case DLOCK__FAM_RATE:
        return DLOCK__GROUP_RATE;
    default:
        return DLOCK__GROUP_MUTEX;
    }
}

int dlock__key_check(const char *key)
{
    if (!key)
        return dlock__err(DLOCK_EINVAL, "key is NULL");
    size_t n = strlen(key);
    if (n == 0)
        return dlock__err(DLOCK_EINVAL, "key is empty");
    if (n > DLOCK_KEY_MAX)
        return dlock__err(DLOCK_EINVAL, "key is %zu bytes long; the limit is %d", n, DLOCK_KEY_MAX);
    return 0;
}

int dlock__hash_tag(const char *key, size_t len, size_t *start, size_t *tag_len)
{
    const char *l = memchr(key, '{', len);
    if (l) {
        const char *r = memchr(l + 1, '}', len - (size_t)(l + 1 - key));
        if (r && r > l + 1) {
            *start = (size_t)(l + 1 - key);
            *tag_len = (size_t)(r - l - 1);
            return 1;
        }
    }
    *start = 0;
    *tag_len = len;
    return 0;
}

/* CRC16-CCITT (XMODEM), as Redis Cluster hashes keys. */
static uint16_t crc16(const char *buf, size_t len)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((unsigned char)buf[i] << 8);
        for (int k = 0; k < 8; k++)
            crc = (uint16_t)(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
    }
    return crc;
}

int dlock__key_slot(const char *name)
{
    size_t start, len;
    dlock__hash_tag(name, strlen(name), &start, &len);
    return crc16(name + start, len) & 16383;
}

/* "<prefix>{<key>}:<suffix>" (or "<prefix>#<key>:<suffix>" for a key that
 * has its own hash tag) into a new string, without formatting: the key is
 * checked by the caller. */
static char *name_of(const char *prefix, size_t plen, const char *key, size_t klen, int tagged,
                     const char *suffix)
{
    size_t slen = strlen(suffix);
    char *s = dlock__malloc(plen + klen + slen + 4);
    if (!s)
        return NULL;
    char *p = s;
    memcpy(p, prefix, plen);
    p += plen;
    *p++ = tagged ? '#' : '{';
    memcpy(p, key, klen);
    p += klen;
    if (!tagged)
        *p++ = '}';
    *p++ = ':';
    memcpy(p, suffix, slen + 1);
    return s;
}

int dlock__key_name(char **out, const char *prefix, const char *key, int family, int role)
{
    *out = NULL;
    int rc = dlock__key_check(key);
    if (rc)
        return rc;
    const char *suffix = suffixes[family][role];
    if (!suffix)
        return dlock__err(DLOCK_EINVAL, "internal: no key of role %d in family %d", role, family);
    size_t start, tlen, klen = strlen(key);
    int tagged = dlock__hash_tag(key, klen, &start, &tlen);
    if (!(*out = name_of(prefix, strlen(prefix), key, klen, tagged, suffix)))
        return dlock__err(DLOCK_ENOMEM, "out of memory");
    return 0;
}

int dlock__key_group(char **names, const char *prefix, const char *key, int family)
{
    int rc = dlock__key_check(key);
    if (rc)
        return rc;
    size_t start, tlen, klen = strlen(key), plen = strlen(prefix);
    int tagged = dlock__hash_tag(key, klen, &start, &tlen);
    int n = dlock__group_size(family);
    for (int i = 0; i < n; i++) {
        const char *suffix = suffixes[family][i];
        names[i] = suffix ? name_of(prefix, plen, key, klen, tagged, suffix) : NULL;
        if (!names[i]) {
            rc = suffix ? dlock__err(DLOCK_ENOMEM, "out of memory")
                        : dlock__err(DLOCK_EINVAL, "internal: no key of role %d in family %d", i,
                                     family);
            while (i-- > 0) {
                dlock__free(names[i]);
                names[i] = NULL;
            }
            return rc;
        }
    }
    return 0;
}

void dlock__key_group_free(char **names, int family)
{
    int n = dlock__group_size(family);
    for (int i = 0; i < n; i++) {
        dlock__free(names[i]);
        names[i] = NULL;
    }
}

int dlock__key_decode(const char *prefix, const char *name, size_t len, char **key, int *family)
{
    static const struct {
        int family, role;
    } marks[] = { { DLOCK__FAM_MUTEX, DLOCK__K_LOCK },
                  { DLOCK__FAM_MUTEX, DLOCK__K_HOLDERS },
                  { DLOCK__FAM_MUTEX, DLOCK__K_QUEUE },
                  { DLOCK__FAM_SEM, DLOCK__K_HOLDERS },
                  { DLOCK__FAM_SEM, DLOCK__K_QUEUE } };
    size_t plen = strlen(prefix);
    if (len <= plen || strncmp(name, prefix, plen) != 0)
        return 0;
    for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++) {
        const char *suffix = suffixes[marks[i].family][marks[i].role];
        size_t sl = strlen(suffix);
        if (len < plen + sl + 2 || name[len - sl - 1] != ':' ||
            memcmp(name + len - sl, suffix, sl) != 0)
            continue;
        const char *base = name + plen;
        size_t blen = len - plen - sl - 1;
        if (blen >= 3 && base[0] == '{' && base[blen - 1] == '}') {
            base++; /* "{key}": a key without a hash tag */
            blen -= 2;
        } else if (blen >= 2 && base[0] == '#') {
            base++; /* "#key": a key with its own {hash tag} */
            blen--;
        } else {
            return 0;
        }
        if (blen == 0 || blen > DLOCK_KEY_MAX || memchr(base, '\0', blen))
            return 0;
        *key = dlock__strndup(base, blen);
        *family = marks[i].family;
        return *key ? 1 : DLOCK_ENOMEM;
    }
    return 0;
}

/* ------------------------------------------------------- Lua constants */

static char lua_prelude[2048];
static pthread_once_t prelude_once = PTHREAD_ONCE_INIT;

static void build_prelude(void)
{
    snprintf(lua_prelude, sizeof lua_prelude,
             "-- constants from keys.h (generated)\n"
             "local LOCK, META, HOLDERS, HINFO, FENCE = %d, %d, %d, %d, %d\n"
             "local QUEUE, QINFO, CHAN, WATCH, FREE = %d, %d, %d, %d, %d\n"
             "local GROUP, SGROUP = %d, %d\n"
             "local ENTRY_TTL, LEASE_TTL, FENCE_TTL, TOKEN_LEN = %d, %d, %d, %d\n"
             "local ONCE, WAIT, UNFAIR = %d, %d, %d\n"
             "local BUSY, GRANTED, CONFLICT = %d, %d, %d\n"
             "local KA_LOST, KA_QUEUED, KA_LEASED, KA_FREE = %d, %d, %d, %d\n",
             DLOCK__K_LOCK + 1, DLOCK__K_META + 1, DLOCK__K_HOLDERS + 1, DLOCK__K_HINFO + 1,
             DLOCK__K_FENCE + 1, DLOCK__K_QUEUE + 1, DLOCK__K_QINFO + 1, DLOCK__K_CHAN + 1,
             DLOCK__K_WATCH + 1, DLOCK__K_FREE + 1, DLOCK__GROUP_MUTEX, DLOCK__GROUP_SEM,
             DLOCK__ENTRY_TTL_MS, DLOCK__LEASE_TTL_MS, DLOCK__FENCE_TTL_MS, DLOCK__TOKEN_LEN,
             DLOCK__MODE_ONCE, DLOCK__MODE_WAIT, DLOCK__MODE_UNFAIR, DLOCK__R_BUSY,
             DLOCK__R_GRANTED, DLOCK__R_CONFLICT, DLOCK__KA_LOST, DLOCK__KA_QUEUED,
             DLOCK__KA_LEASED, DLOCK__KA_FREE);
    /* the primitives' roles and replies (latch, barrier, rate limiter) */
    size_t n = strlen(lua_prelude);
    snprintf(lua_prelude + n, sizeof lua_prelude - n,
             "local LATCH, LCHAN = %d, %d\n"
             "local BAR, BARR, BDONE, BCHAN = %d, %d, %d, %d\n"
             "local RATE = %d\n"
             "local P_OK, P_BUSY, P_CONFLICT, P_MISSING, P_ZERO = %d, %d, %d, %d, %d\n"
             "local BARRIER_DONE = %d\n",
             DLOCK__K_LATCH + 1, DLOCK__K_LCHAN + 1, DLOCK__K_BAR + 1, DLOCK__K_BARR + 1,
             DLOCK__K_BDONE + 1, DLOCK__K_BCHAN + 1, DLOCK__K_RATE + 1, DLOCK__P_OK, DLOCK__P_BUSY,
             DLOCK__P_CONFLICT, DLOCK__P_MISSING, DLOCK__P_ZERO, DLOCK__BARRIER_DONE_MS);
}

const char *dlock__lua_constants(void)
{
    pthread_once(&prelude_once, build_prelude);
    return lua_prelude;
}

/* -------------------------------------------------------------- parsers */

/* A decimal number of 1..maxdigits digits at *p, stopping at a non-digit;
 * advances *p. Returns 0 or -1. */
static int number(const char **p, const char *end, int maxdigits, uint64_t *out)
{
    uint64_t v = 0;
    int n = 0;
    while (*p < end && **p >= '0' && **p <= '9') {
        if (++n > maxdigits)
            return -1;
        v = v * 10 + (uint64_t)(**p - '0');
        (*p)++;
    }
    *out = v;
    return n ? 0 : -1;
}

int dlock__parse_fence(uint64_t *out, const char *s, size_t len)
{
    const char *p = s, *end = s + len;
    uint64_t v;
    if (number(&p, end, 16, &v) != 0 || p != end || v > DLOCK__FENCE_MAX)
        return dlock__err(DLOCK_EPROTO, "fencing token '%.*s' is not a number below 2^53",
                          (int)(len > 40 ? 40 : len), s);
    *out = v;
    return 0;
}

/* "<fence>:<since>:" at *p: the fencing token and the grant time. */
static int fence_since(const char **p, const char *end, uint64_t *fence, uint64_t *since)
{
    const char *start = *p;
    if (number(p, end, 16, fence) != 0 || *p >= end || **p != ':' ||
        dlock__parse_fence(fence, start, (size_t)(*p - start)) != 0)
        return -1;
    (*p)++;
    if (number(p, end, 16, since) != 0 || *p >= end || **p != ':')
        return -1;
    (*p)++;
    return 0;
}

int dlock__parse_lock_value(dlock_info *info, char *token, const char *v, size_t len)
{
    if (!v || len < DLOCK__TOKEN_LEN + 2 || v[DLOCK__TOKEN_LEN] != ':')
        return dlock__err(DLOCK_EPROTO, "lock value has an unexpected format");
    const char *p = v + DLOCK__TOKEN_LEN + 1, *end = v + len;
    uint64_t fence, since;
    if (fence_since(&p, end, &fence, &since) != 0)
        return dlock__err(DLOCK_EPROTO, "lock value has an unexpected format");
    info->fencing_token = fence;
    snprintf(info->owner, sizeof info->owner, "%.*s", (int)(end - p), p);
    if (token) {
        memcpy(token, v, DLOCK__TOKEN_LEN);
        token[DLOCK__TOKEN_LEN] = '\0';
    }
    return 0;
}

int dlock__parse_holder(dlock_holder *h, int mode, const char *info, int64_t now_ms)
{
    const char *p = info, *end = info + strlen(info);
    uint64_t fence, since, slot = 0;
    memset(h, 0, sizeof *h);
    h->mode = mode;
    h->slot = -1;
    h->permits = 1;
    if (mode == DLOCK_WRITE) {
        if ((size_t)(end - p) < DLOCK__TOKEN_LEN + 2 || p[DLOCK__TOKEN_LEN] != ':')
            return dlock__err(DLOCK_EPROTO, "lock value has an unexpected format");
        p += DLOCK__TOKEN_LEN + 1;
    } else if (mode == 0) {
        int n = 0;
        for (;;) {
            uint64_t s;
            if (number(&p, end, 6, &s) != 0)
                return dlock__err(DLOCK_EPROTO, "permit entry has an unexpected format");
            if (n++ == 0)
                slot = s;
            if (p < end && *p == ',') {
                p++;
                continue;
            }
            break;
        }
        if (p >= end || *p++ != ':')
            return dlock__err(DLOCK_EPROTO, "permit entry has an unexpected format");
        h->slot = (int)slot;
        h->permits = n;
    }
    if (fence_since(&p, end, &fence, &since) != 0)
        return dlock__err(DLOCK_EPROTO, "holder entry has an unexpected format");
    h->fencing_token = fence;
    h->age_ms = now_ms > (int64_t)since ? now_ms - (int64_t)since : 0;
    snprintf(h->owner, sizeof h->owner, "%.*s", (int)(end - p), p);
    return 0;
}

int dlock__parse_signal(uint64_t *fence, int64_t *lease_ms, int *slot, const char *s, size_t len)
{
    const char *p = s, *end = s + len, *start = s;
    uint64_t f, px, sl = 0;
    int bad = number(&p, end, 16, &f) != 0 || p >= end || *p != ':' ||
              dlock__parse_fence(&f, start, (size_t)(p - start)) != 0;
    if (!bad) {
        p++;
        bad = number(&p, end, 12, &px) != 0 || p >= end || *p++ != ':';
    }
    if (!bad && p + 2 == end && p[0] == '-' && p[1] == '1')
        *slot = -1;
    else if (!bad && number(&p, end, 6, &sl) == 0)
        *slot = (int)sl; /* the first of a list of slots: the rest is ignored */
    else
        bad = 1;
    if (bad)
        return dlock__err(DLOCK_EPROTO, "handoff signal has an unexpected format");
    *fence = f;
    *lease_ms = (int64_t)px;
    return 0;
}

char *dlock__fmt_ll(char buf[24], long long v)
{
    char digits[24];
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    size_t k = 0, n = 0;
    do
        digits[k++] = (char)('0' + u % 10);
    while ((u /= 10) > 0);
    if (v < 0)
        buf[n++] = '-';
    while (k > 0)
        buf[n++] = digits[--k];
    buf[n] = '\0';
    return buf;
}

/* 32 hex digits of fresh randomness from getrandom(). */
int dlock__token_new(char out[DLOCK__TOKEN_LEN + 1])
{
    unsigned char raw[DLOCK__TOKEN_LEN / 2];
    size_t got = 0;
    while (got < sizeof raw) {
        ssize_t r = getrandom(raw + got, sizeof raw - got, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return dlock__err(DLOCK_ESYS, "getrandom: %s", strerror(errno));
        }
        got += (size_t)r;
    }
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof raw; i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[DLOCK__TOKEN_LEN] = '\0';
    return 0;
}
