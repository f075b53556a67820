/*
 * conn.h — one Redis connection: handshake, pipelined commands, replies.
 *
 * A connection owns a transport and a bounded reply reader. Commands are
 * appended (formatted by hiredis's redisFormatCommandArgv) into an output
 * buffer; dlock__conn_exchange() writes them all in one go and reads exactly
 * as many replies, in order, under one deadline. That is pipelining: N
 * commands cost one round trip. Any transport or protocol failure marks the
 * connection broken; the owner closes it and opens a new one (reconnect).
 *
 * A connection is used by one thread at a time (the client's pool hands it
 * out). Counters are shared with the client and updated atomically.
 */
#ifndef DLOCK_CONN_H
#define DLOCK_CONN_H
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "replicas.h"
#include "reply.h"
#include "transport.h"
#include "url.h"

typedef struct dlock__counters {
    atomic_uint_fast64_t round_trips, commands, connects, errors;
} dlock__counters;

typedef struct dlock__conn_cfg {
    const dlock__endpoint *ep;
    int connect_timeout_ms;      /* whole handshake: connect + AUTH + SELECT */
    int command_timeout_ms;      /* one exchange */
    const dlock__faults *faults; /* test hook; NULL in normal use */
    dlock__counters *counters;   /* may be NULL */
    int want_role;               /* ask INFO replication in the handshake (dlock__conn_replicas) */
} dlock__conn_cfg;

typedef struct dlock__conn dlock__conn;

/* Connect and log in: AUTH (user and/or password), SELECT db and INFO
 * replication when asked for (ROLE if an ACL refuses INFO), else a PING, so
 * a server that accepts but never answers is found out here. Returns 0,
 * DLOCK_ECONN, DLOCK_EAUTH, DLOCK_EPROTO, DLOCK_ENOMEM. */
int dlock__conn_open(dlock__conn **out, const dlock__conn_cfg *cfg);

void dlock__conn_close(dlock__conn *c); /* NULL ok */

/* Queue one command. Returns 0 or DLOCK_ENOMEM / DLOCK_EINVAL. */
int dlock__conn_append(dlock__conn *c, int argc, const char **argv, const size_t *lens);

/* Send every queued command and read one reply per command into
 * replies[0..n) (n must equal the number queued). Error replies from Redis
 * are replies, not failures. Returns 0, DLOCK_ECONN (I/O failure or
 * timeout), DLOCK_EPROTO (unparsable or oversized reply), DLOCK_ENOMEM; on
 * failure no replies are returned and the connection is broken. The
 * deadline is now + command timeout unless timeout_ms > 0 overrides it. */
int dlock__conn_exchange(dlock__conn *c, dlock__reply **replies, int n, int timeout_ms);

/* One command, one reply: dlock__conn_append + dlock__conn_exchange. */
int dlock__conn_command(dlock__conn *c, dlock__reply **out, int argc, const char **argv,
                        const size_t *lens);

/* For a connection in pub/sub mode, whose replies come unasked:
 * send everything queued (no replies expected now), and read one reply
 * waiting at most until deadline_ns (0: do not wait; returns 0 with *out
 * NULL when nothing complete has arrived yet). */
int dlock__conn_send(dlock__conn *c, int timeout_ms);
int dlock__conn_read(dlock__conn *c, dlock__reply **out, int64_t deadline_ns);
int dlock__conn_poll_fd(dlock__conn *c);

int dlock__conn_broken(const dlock__conn *c);
/* Replicas attached to this connection's server when it was opened (want_role),
 * 0 for a replica, -1 if unknown. A replica counts from the moment it
 * asked the master to synchronise, also while it loads its first snapshot
 * (INFO replication's connected_slaves; ROLE, used only where an ACL refuses
 * INFO, lists a replica only once it is online). */
int dlock__conn_replicas(const dlock__conn *c);

/* Replicas that must acknowledge this connection's writes (used by WAIT,
 * scripts.h): `need` if >= 0, else automatic: 1 while r (its node's view,
 * shared by the node's connections) believes in a replica. */
void dlock__conn_set_need(dlock__conn *c, int need, dlock__replicas *r);
int dlock__conn_need(const dlock__conn *c);
/* What the last WAIT queued on c asked for (scripts.c). */
void dlock__conn_set_need_sent(dlock__conn *c, int need);
int dlock__conn_need_sent(const dlock__conn *c);
/* Queue the replication query that keeps a node's view current: INFO
 * replication, or ROLE where the handshake found INFO refused. */
int dlock__conn_append_replication(dlock__conn *c);
/* A reply to that query read on c: keep its node's view current. */
void dlock__conn_saw_replication(dlock__conn *c, const dlock__reply *r);
/* 1 if c's server was seen losing all its replicas less than
 * DLOCK__REPLICAS_GONE_MS ago: maybe a master a failover is replacing. */
int dlock__conn_replicas_gone(const dlock__conn *c);

/* 1 if the connection failed because a deadline passed (the server may be
 * slow or stopped), not because it was closed. */
int dlock__conn_timed_out(const dlock__conn *c);
/* Give up on a connection whose request/reply sequence went wrong (e.g.
 * commands queued but never sent): it is closed when given back. */
void dlock__conn_mark_broken(dlock__conn *c);
const char *dlock__conn_desc(const dlock__conn *c);

/* Pool link for the client's idle list, and a tag the owner may use (the
 * node generation the connection belongs to). */
dlock__conn **dlock__conn_next(dlock__conn *c);
unsigned *dlock__conn_tag(dlock__conn *c);
/* Count one round trip made through dlock__conn_send/dlock__conn_read. */
void dlock__conn_count_round_trip(dlock__conn *c);

#endif
