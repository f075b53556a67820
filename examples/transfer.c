/*
 * transfer.c — the multi-lock: take several locks at once, without deadlock.
 *
 * Money moves between two accounts, A and B, stored in the files DIR/A and
 * DIR/B (a balance each). A transfer reads both balances and writes both
 * back, so it must hold both accounts' locks. Taking them one after the
 * other deadlocks as soon as one transfer locks A then B while another locks
 * B then A. dlock_acquire_all() takes the whole set in one atomic step, or
 * nothing, so the order in which callers list the keys does not matter.
 *
 * The keys "acct:{bank}:A" and "acct:{bank}:B" share the {hash tag} "bank":
 * on a single server that changes nothing, but it is what lets a multi-lock
 * work where keys must live together (Redis Cluster's one-slot rule).
 *
 *   transfer URL|- DIR ROUNDS a2b|b2a
 *
 * a2b lists the keys as A, B and moves money from A to B; b2a lists them as
 * B, A and moves from B to A. Start both kinds at once: no run hangs, and at
 * the end DIR/A + DIR/B is what it was. Each run prints the net amount it
 * moved from A to B, so the final balances can be checked exactly.
 * URL: argv[1], or $DLOCK_URL, or redis://127.0.0.1:6379 when argv[1] is "-".
 */
#define _DEFAULT_SOURCE /* nanosleep */

#include <dlock.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *pick_url(const char *arg) {
    const char *env = getenv("DLOCK_URL");
    if (arg && *arg && strcmp(arg, "-") != 0) return arg;
    return env && *env ? env : "redis://127.0.0.1:6379";
}

static int fail(const char *what, int rc) {
    const char *detail = dlock_last_errmsg();
    fprintf(stderr, "transfer: %s: %s%s%s%s\n", what, dlock_strerror(rc),
            *detail ? " (" : "", detail, *detail ? ")" : "");
    return 1;
}

/* Read or write one balance file (DIR/NAME). 0 or -1. */
static int balance(const char *dir, const char *name, long *value, int write) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, write ? "w" : "r");
    if (!f) return -1;
    int ok = write ? fprintf(f, "%ld\n", *value) > 0 : fscanf(f, "%ld", value) == 1;
    return fclose(f) == 0 && ok ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc != 5 || (strcmp(argv[4], "a2b") != 0 && strcmp(argv[4], "b2a") != 0)) {
        fprintf(stderr, "usage: transfer URL|- DIR ROUNDS a2b|b2a\n");
        return 64;
    }
    const char *url = pick_url(argv[1]), *dir = argv[2];
    long rounds = strtol(argv[3], NULL, 10);
    int a2b = strcmp(argv[4], "a2b") == 0;
    /* The same two keys, listed in opposite orders by the two kinds of run. */
    const char *keys[2] = {"acct:{bank}:A", "acct:{bank}:B"};
    if (!a2b) { keys[0] = "acct:{bank}:B"; keys[1] = "acct:{bank}:A"; }
    const char *from = a2b ? "A" : "B", *to = a2b ? "B" : "A";

    dlock_client *client;
    int rc = dlock_client_open(&client, url, NULL);
    if (rc != 0) return fail(url, rc);

    dlock_lock_opts opts = DLOCK_LOCK_OPTS_INIT;
    opts.ttl_ms = 10000;
    opts.wait_ms = 30000; /* a deadlock would show up as a timeout here */
    srand((unsigned)getpid());
    long moved = 0, done = 0; /* moved: net, from A to B */
    int status = 0;
    for (long i = 0; i < rounds && status == 0; i++) {
        dlock_lock *both;
        rc = dlock_acquire_all(&both, client, keys, 2, &opts); /* both, or wait */
        if (rc != 0) {
            status = fail("acquire both accounts", rc);
            break;
        }
        long a, b, amount = 1 + rand() % 10;
        if (balance(dir, from, &a, 0) != 0 || balance(dir, to, &b, 0) != 0) {
            perror(dir);
            status = 1;
        } else {
            a -= amount, b += amount;
            struct timespec gap = {0, 1000000}; /* 1 ms between reading and writing: */
            nanosleep(&gap, NULL);              /* without the lock, races would show */
            if (balance(dir, from, &a, 1) != 0 || balance(dir, to, &b, 1) != 0) status = 1;
            moved += a2b ? amount : -amount;
            done++;
        }
        rc = dlock_release(both); /* releases both keys */
        if (rc != 0 && status == 0) status = fail("release", rc);
    }
    printf("transfer %ld: %ld transfers %s->%s, net moved A->B: %ld\n", (long)getpid(), done,
           from, to, moved);
    dlock_client_close(client);
    return status;
}
