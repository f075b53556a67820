/*
 * pubsub.h — wake-ups by pub/sub: one listener per node in use.
 *
 * Every lock key has a channel (CHAN in keys.h). Scripts publish on it for
 * the waiters that are not queued — unfair waiters, every waiter of a
 * Redlock, leadership watchers — and only when some are registered (WATCH):
 * "" when the lock became free, or the token of its new holder. (Queued
 * waiters are woken through their own signal lists instead: wait.c.)
 * Waiting threads register a dlock__sub for a channel; the client's
 * listener connection for that node (its own thread) subscribes to each
 * channel someone waits on and turns messages into wake-ups through the
 * waiter's eventfd. A waiter registers BEFORE its next acquire attempt, so
 * a release between a failed attempt and the subscription is not missed;
 * the watchdog's keepalive of the waiter (it reports a free lock) is the
 * safety net for a subscription not confirmed in time.
 */
#ifndef DLOCK_PUBSUB_H
#define DLOCK_PUBSUB_H

typedef struct dlock_client dlock_client;

enum {
    DLOCK__NEWS_MINE = 1,  /* handed to me, or freed for anyone: try now */
    DLOCK__NEWS_OTHER = 2, /* handed to another waiter */
    DLOCK__NEWS_RESET = 4  /* the listener reconnected: messages may be lost */
};

typedef struct dlock__sub {
    int node;            /* which of the client's nodes to listen on */
    const char *channel; /* caller's string, lives while registered */
    const char *token;
    int efd;       /* eventfd, readable when there is news */
    int news;      /* DLOCK__NEWS_* bits, under the listener's mutex */
    int confirmed; /* the subscription is active */
    struct dlock__sub *next;
} dlock__sub;

typedef struct dlock__listener dlock__listener;

/* Register w (w->channel, w->token set by the caller) and wait up to
 * timeout_ms for its channel subscription to be confirmed. Returns 0
 * (confirmed), DLOCK_ETIMEDOUT (registered, not yet confirmed: the caller
 * must not rely on messages and should re-check soon), DLOCK_ECLOSED, or
 * DLOCK_ENOMEM (not registered). */
int dlock__listener_join(dlock_client *c, dlock__sub *w, int timeout_ms);

/* Unregister w (drops the subscription when no one else waits on it). */
void dlock__listener_leave(dlock_client *c, dlock__sub *w);

/* Take and clear w's news bits; *confirmed (may be NULL) says whether its
 * subscription is active. */
int dlock__listener_take(dlock_client *c, dlock__sub *w, int *confirmed);

/* Stop the listener threads (one per node in use) and free them. */
void dlock__listener_stop(dlock_client *c);

#endif
