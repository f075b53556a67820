/*
 * replicas.c — a master's replicas as a client sees them (see replicas.h).
 *
 * Two questions, kept apart from the connection that asks them: how many
 * replicas does this reply say the server has (parse), and what should a
 * client believe of a node over time (saw/reset: a fall to none is believed
 * only after DLOCK__REPLICAS_GONE_MS, because a master that has just lost
 * its replicas may be the one a failover is replacing).
 */
#include "replicas.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"

void dlock__replicas_reset(dlock__replicas *r)
{
    atomic_store(&r->seen, 0);
    atomic_store(&r->gone_ns, 0);
}

/* A count believed at once when it is not a fall to none; a fall to none
 * once it has been seen for DLOCK__REPLICAS_GONE_MS (the first sighting
 * starts the clock, any count above 0 stops it). */
void dlock__replicas_saw(dlock__replicas *r, int n)
{
    int before = atomic_load(&r->seen);
    if (n > 0 || before <= 0) {
        atomic_store(&r->seen, n);
        atomic_store(&r->gone_ns, 0);
        return;
    }
    /* replicas before, none now: believed after DLOCK__REPLICAS_GONE_MS */
    long long now = dlock__now_ns(), zero = 0;
    if (atomic_compare_exchange_strong(&r->gone_ns, &zero, now))
        return;
    if (now - zero >= (long long)DLOCK__REPLICAS_GONE_MS * 1000000)
        dlock__replicas_reset(r);
}

/* The value of "field:" in an INFO reply's text, or NULL. */
static const char *info_field(const char *text, const char *field)
{
    size_t len = strlen(field);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, field, len) == 0 && p[len] == ':')
            return p + len + 1;
    return NULL;
}

/* A count at the start of an INFO value ("3\r\n..."): 0 to INT_MAX, or -1
 * if it is missing, not a number or out of range. */
static int info_count(const char *v)
{
    if (!v || *v < '0' || *v > '9')
        return -1;
    errno = 0;
    char *end;
    long n = strtol(v, &end, 10);
    if (errno || n > INT_MAX || (*end != '\r' && *end != '\n' && *end != '\0'))
        return -1;
    return (int)n;
}

/* Read an INFO replication reply, or a ROLE reply (where INFO is refused):
 * the number of replicas attached to a master; 0 for a replica or anything
 * else; -1 if it could not be read (refused by the ACL, an old server).
 * INFO's connected_slaves counts every attached replica, also one still in
 * its first full synchronisation; ROLE lists a replica only once it is
 * online, and a write made between the snapshot that replica loads and the
 * moment it is online is not in the replica's data, which a failover may
 * promote at any point after it loaded the snapshot. */
int dlock__replicas_parse(const dlock__reply *r)
{
    if (r->type == REDIS_REPLY_STRING) {
        const char *role = info_field(r->str, "role"), *n = info_field(r->str, "connected_slaves");
        if (!role)
            return -1;
        if (strncmp(role, "master", 6) != 0)
            return 0;
        return info_count(n);
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_STRING)
        return -1;
    if (strcmp(r->element[0]->str, "master") != 0)
        return 0;
    return r->elements >= 3 && r->element[2]->type == REDIS_REPLY_ARRAY
               ? (int)r->element[2]->elements
               : 0;
}
