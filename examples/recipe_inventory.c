/*
 * recipe_inventory.c — reserve stock without overselling.
 *
 * The stock of one SKU is a number (here in STOCK_FILE; in real life a row
 * or a key in some store). Reserving is read, check, write back: two buyers
 * that interleave both see "1 left" and both get it. Doing it under the
 * lock "sku:<SKU>" (a key template) makes each reservation see the last
 * one's result. Run many at once: they reserve exactly the stock there was,
 * the rest are told "out of stock", and the stock never goes below zero.
 *
 * If the store can take a condition (SQL, a Redis script), also pass the
 * lock's fencing token and have it refuse older tokens; see
 * recipe_payment.c for why.
 *
 *   recipe_inventory URL|- SKU STOCK_FILE [TIMES] [QTY]   (TIMES: 1, QTY: 1)
 *
 * Prints how many units it reserved and how many times it was refused.
 * URL: argv[1], or $DLOCK_URL, or redis://127.0.0.1:6379 when argv[1] is "-".
 */
#define _DEFAULT_SOURCE /* nanosleep */

#include <dlock.h>

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
    fprintf(stderr, "recipe_inventory: %s: %s%s%s%s\n", what, dlock_strerror(rc),
            *detail ? " (" : "", detail, *detail ? ")" : "");
    return 1;
}

/* Read (write = 0) or write the stock number. 0 or -1. */
static int stock(const char *path, long *units, int write) {
    FILE *f = fopen(path, write ? "w" : "r");
    if (!f) return -1;
    int ok = write ? fprintf(f, "%ld\n", *units) > 0 : fscanf(f, "%ld", units) == 1;
    return fclose(f) == 0 && ok ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc < 4 || argc > 6) {
        fprintf(stderr, "usage: recipe_inventory URL|- SKU STOCK_FILE [TIMES] [QTY]\n");
        return 64;
    }
    const char *url = pick_url(argv[1]), *sku = argv[2], *path = argv[3];
    long times = argc > 4 ? strtol(argv[4], NULL, 10) : 1;
    long qty = argc > 5 ? strtol(argv[5], NULL, 10) : 1;
    char key[DLOCK_KEY_MAX + 1];
    int rc = dlock_keyf(key, sizeof key, "sku:%s", sku);
    if (rc != 0) return fail("key", rc);
    if (times < 0 || qty < 1) {
        fprintf(stderr, "recipe_inventory: TIMES must be >= 0 and QTY >= 1\n");
        return 64;
    }

    dlock_client *client;
    if ((rc = dlock_client_open(&client, url, NULL)) != 0) return fail(url, rc);

    /* A reservation is short: wait up to 10 s for the lock, and let a
     * crashed holder block the SKU for 5 s at most. */
    dlock_lock_opts opts = DLOCK_LOCK_OPTS_INIT;
    opts.ttl_ms = 5000;
    opts.wait_ms = 10000;
    long reserved = 0, refused = 0;
    int status = 0;
    for (long i = 0; i < times && status == 0; i++) {
        dlock_lock *lock;
        if ((rc = dlock_acquire(&lock, client, key, &opts)) != 0) {
            status = fail(key, rc);
            break;
        }
        long units;
        if (stock(path, &units, 0) != 0) {
            perror(path);
            status = 1;
        } else if (units < qty) {
            refused++; /* out of stock: nothing to write */
        } else {
            struct timespec gap = {0, 500000}; /* widen the read-write gap: */
            nanosleep(&gap, NULL);             /* without the lock, it would oversell */
            units -= qty;
            if (stock(path, &units, 1) != 0) {
                perror(path);
                status = 1;
            } else {
                reserved += qty;
            }
        }
        rc = dlock_release(lock);
        if (rc != 0 && status == 0) status = fail("release", rc); /* ENOTHELD: expired */
    }
    printf("inventory %ld: %s: reserved %ld, refused %ld (out of stock)\n", (long)getpid(), sku,
           reserved, refused);
    dlock_client_close(client);
    return status;
}
