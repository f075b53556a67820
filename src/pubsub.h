/*
 * pubsub.h — wake-up on release: one pub/sub listener per client.
 *
 * Every lock key has a channel (<prefix>{tag}:chan). A release publishes on
 * it the token of the waiter it handed the lock to ("" when it handed it to
 * nobody). Waiting threads register a dlock__waiter for the channel; the
 * client's single listener connection (its own thread) subscribes to each
 * channel some thread waits on and turns messages into wake-ups through the
 * waiter's eventfd. A waiter registers and waits for the subscription to be
 * confirmed BEFORE its next acquire attempt, so a release that happens
 * between a failed attempt and the subscription cannot be missed.
 */
#ifndef DLOCK_PUBSUB_H
#define DLOCK_PUBSUB_H

typedef struct dlock_client dlock_client;

enum {
    DLOCK__NEWS_MINE = 1,  /* handed to me, or freed for anyone: try now */
    DLOCK__NEWS_OTHER = 2, /* handed to another waiter */
    DLOCK__NEWS_RESET = 4  /* the listener reconnected: messages may be lost */
};

typedef struct dlock__waiter {
    int node;            /* which of the client's nodes to listen on */
    const char *channel; /* caller's string, lives while registered */
    const char *token;
    int efd;             /* eventfd, readable when there is news */
    int news;            /* DLOCK__NEWS_* bits, under the listener's mutex */
    int confirmed;       /* the subscription is active */
    struct dlock__waiter *next;
} dlock__waiter;

typedef struct dlock__listener dlock__listener;

/* Register w (w->channel, w->token set by the caller) and wait up to
 * timeout_ms for its channel subscription to be confirmed. Returns 0
 * (confirmed), DLOCK_ETIMEDOUT (registered, not yet confirmed: the caller
 * must not rely on messages and should re-check soon), DLOCK_ECLOSED, or
 * DLOCK_ENOMEM (not registered). */
int dlock__listener_join(dlock_client *c, dlock__waiter *w, int timeout_ms);

/* Unregister w (drops the subscription when no one else waits on it). */
void dlock__listener_leave(dlock_client *c, dlock__waiter *w);

/* Take and clear w's news bits; *confirmed (may be NULL) says whether its
 * subscription is active. */
int dlock__listener_take(dlock_client *c, dlock__waiter *w, int *confirmed);

/* Stop the listener threads (one per node in use) and free them. */
void dlock__listener_stop(dlock_client *c);

#endif
