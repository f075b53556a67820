/*
 * with_fn.c — the critical section as a function (dlock_with), and what the
 * fencing token is for.
 *
 * Payment 42 must be charged exactly once, whichever worker gets to it.
 * Each worker runs charge() under the lock "payment:42"; dlock_with acquires,
 * calls it, and releases, also when it fails. The store (here a struct; in
 * real life a database row) remembers the highest fencing token that wrote to
 * it and refuses smaller ones: a worker that lost its lock without knowing
 * (a long GC pause, a partition) cannot overwrite the work of a later holder.
 *
 *   with_fn [URL|-] [PAYMENT_ID]      (PAYMENT_ID defaults to 42)
 *
 * URL: argv[1], or $DLOCK_URL, or redis://127.0.0.1:6379.
 */
#include <dlock.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The fenced store. In SQL: UPDATE payments SET ..., fence = :token
 *                           WHERE id = :id AND fence <= :token */
struct store { uint64_t fence; int charged; long cents; };

static int store_write(struct store *s, uint64_t token, long cents) {
    if (token < s->fence) return -1; /* a stale holder: refuse */
    s->fence = token;
    s->cents += cents;
    return 0;
}

struct payment { const char *worker; struct store *store; uint64_t token; };

/* Runs with the lock held. Returns 0, or 1 if the store refused the write
 * (our own code: dlock_with passes it through). */
static int charge(dlock_lock *lock, void *arg) {
    struct payment *p = arg;
    p->token = dlock_lock_fencing_token(lock);
    if (p->store->charged) { /* idempotent: someone charged it already */
        printf("%s: token %" PRIu64 ": already charged, nothing to do\n",
               p->worker, p->token);
        return store_write(p->store, p->token, 0) == 0 ? 0 : 1;
    }
    if (store_write(p->store, p->token, 1999) != 0) return 1;
    p->store->charged = 1;
    printf("%s: token %" PRIu64 ": charged 19.99\n", p->worker, p->token);
    return 0;
}

static const char *pick_url(const char *arg) {
    const char *env = getenv("DLOCK_URL");
    if (arg && *arg && strcmp(arg, "-") != 0) return arg;
    return env && *env ? env : "redis://127.0.0.1:6379";
}

static int fail(const char *what, int rc) {
    const char *detail = dlock_last_errmsg();
    fprintf(stderr, "with_fn: %s: %s%s%s%s\n", what, dlock_strerror(rc),
            *detail ? " (" : "", detail, *detail ? ")" : "");
    return 1;
}

int main(int argc, char **argv) {
    const char *url = pick_url(argc > 1 ? argv[1] : NULL);
    char key[DLOCK_KEY_MAX + 1];
    int rc = dlock_keyf(key, sizeof key, "payment:%s", argc > 2 ? argv[2] : "42");
    if (rc != 0) return fail("key", rc);

    dlock_client *client;
    rc = dlock_client_open(&client, url, NULL);
    if (rc != 0) return fail(url, rc);

    struct store store = {0, 0, 0};
    struct payment a = {"worker A", &store, 0}, b = {"worker B", &store, 0};
    /* Two workers, one after the other (in production: two processes). */
    rc = dlock_with(client, key, NULL, charge, &a);
    if (rc == 0) rc = dlock_with(client, key, NULL, charge, &b);
    dlock_client_close(client);
    if (rc < 0) return fail(key, rc);
    if (rc > 0) { fprintf(stderr, "with_fn: the store refused a write\n"); return 1; }

    /* Worker A wakes up from a long pause and retries with its old token. */
    if (store_write(&store, a.token, 1999) == 0) {
        fprintf(stderr, "with_fn: BUG: stale token %" PRIu64 " accepted\n", a.token);
        return 1;
    }
    printf("late write from worker A with old token %" PRIu64 " < %" PRIu64
           ": refused; charged %ld cents in all\n", a.token, store.fence, store.cents);
    return 0;
}
