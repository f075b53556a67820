/*
 * replicas.h — what a client knows of a master's replicas: the count a
 * server reports (INFO replication, or ROLE where an ACL refuses INFO) and
 * the view a client keeps of each node, from which the automatic
 * min_replicas follows (DESIGN.md, "Replicated deployments").
 */
#ifndef DLOCK_REPLICAS_H
#define DLOCK_REPLICAS_H

#include <stdatomic.h>

#include "reply.h"

/* What a client believes of one server's replicas, shared by its
 * connections to it (automatic min_replicas). A count that falls to 0 is
 * believed only after DLOCK__REPLICAS_GONE_MS: a master that has just lost
 * its replicas may be one a failover is replacing (its replica promoted,
 * clients not yet told), whose grants the new master will not have. Until
 * then its grants still need an acknowledgement, which it cannot give. */
#define DLOCK__REPLICAS_GONE_MS 10000
typedef struct dlock__replicas {
    atomic_int seen;      /* connected replicas believed (0: none) */
    atomic_llong gone_ns; /* when a fall to 0 was first seen; 0: none pending */
} dlock__replicas;

/* The server was seen with n connected replicas (n >= 0). */
void dlock__replicas_saw(dlock__replicas *r, int n);
/* The node is another server now (a Sentinel switch): forget. */
void dlock__replicas_reset(dlock__replicas *r);

/* Read an INFO replication reply, or a ROLE reply: the number of replicas
 * attached to a master; 0 for a replica or anything else; -1 if it could
 * not be read (refused by the ACL, an old server). */
int dlock__replicas_parse(const dlock__reply *r);

#endif
