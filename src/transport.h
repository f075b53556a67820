/*
 * transport.h — byte streams to a Redis server, owned by dlock.
 *
 * hiredis 0.14 aborts on out-of-memory inside its connection code and has no
 * TLS, so dlock opens and drives its own non-blocking sockets and uses
 * hiredis only to format commands and parse replies. A transport is a small
 * vtable over one stream: plain TCP and unix sockets live here; TLS and the
 * fault-injecting test transport wrap or replace it without the connection
 * code noticing.
 *
 * I/O functions never block. They return the number of bytes moved (> 0),
 * DLOCK__IO_AGAIN with *want set to POLLIN or POLLOUT (poll poll_fd() for it),
 * or a negative DLOCK_E* code with a message already recorded (a closed
 * connection is DLOCK_ECONN "connection closed by the server").
 */
#ifndef DLOCK_TRANSPORT_H
#define DLOCK_TRANSPORT_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "url.h"

#define DLOCK__IO_AGAIN 0

typedef struct dlock__transport dlock__transport;

typedef struct dlock__transport_ops {
    ssize_t (*read)(dlock__transport *t, void *buf, size_t n, int *want);
    ssize_t (*write)(dlock__transport *t, const void *buf, size_t n, int *want);
    int (*poll_fd)(dlock__transport *t);
    void (*close)(dlock__transport *t);  /* also frees t */
    int (*pending)(dlock__transport *t); /* data buffered above the socket? may be NULL */
} dlock__transport_ops;

struct dlock__transport {
    const dlock__transport_ops *ops;
    const char *desc; /* endpoint description for messages */
};

/* Faults a test can ask for; all zero = none. Counting is per connection. */
typedef struct dlock__faults {
    size_t short_read;       /* deliver at most this many bytes per read */
    size_t short_write;      /* accept at most this many bytes per write */
    long reset_after_reads;  /* the Nth read fails as a connection reset */
    long stall_after_reads;  /* from the Nth read on, no data ever arrives */
    long reset_after_writes; /* the Nth write fails as a connection reset */
    /* each reply is held back until this long after the request that asked
     * for it was written: a slow network or a busy server between the send
     * and the reply (the reply's bytes are delivered, late) */
    long delay_ms;
    long delay_from_write; /* ... from the Nth write on (0 or 1: from the first) */
    /* the client's nodes they apply to (bit i: node i); 0: every node */
    unsigned node_mask;
} dlock__faults;

/* Connect to `ep` (TCP or unix socket) before deadline_ns (CLOCK_BOOTTIME).
 * *out is a ready transport or NULL. Returns 0, DLOCK_ECONN (refused,
 * unreachable, timed out: the message says which and where), DLOCK_ENOMEM. */
int dlock__transport_connect(dlock__transport **out, const dlock__endpoint *ep,
                             int64_t deadline_ns);

/* Wrap *t so that it misbehaves as `f` says. On ENOMEM *t is unchanged. */
int dlock__transport_inject(dlock__transport **t, const dlock__faults *f);

/* Wait until t wants to make progress for `events` (POLLIN/POLLOUT) or the
 * deadline passes. Returns 0 (ready), DLOCK_ETIMEDOUT, or DLOCK_ECONN. */
int dlock__transport_wait(dlock__transport *t, int events, int64_t deadline_ns);

#endif
