/*
 * mutex_counter.c — the mutex pattern: many processes, one shared counter.
 *
 * Each run adds N to the number stored in COUNTER_FILE, one at a time. An
 * increment is a read-modify-write (read the file, add one, write it back),
 * which loses updates when two processes interleave. Doing each increment
 * under the lock "counter:<COUNTER_FILE>" makes it safe: start K copies at
 * once and the file ends at K x N.
 *
 *   mutex_counter URL|- COUNTER_FILE [N]      (N defaults to 100)
 *
 * URL: argv[1], or $DLOCK_URL, or redis://127.0.0.1:6379 when argv[1] is "-".
 */
#define _POSIX_C_SOURCE 200809L /* pread, pwrite, ftruncate */

#include <dlock.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *pick_url(const char *arg) {
    const char *env = getenv("DLOCK_URL");
    if (arg && *arg && strcmp(arg, "-") != 0) return arg;
    return env && *env ? env : "redis://127.0.0.1:6379";
}

/* Print "mutex_counter: WHAT: <text of rc> (<detail>)" and return 1. */
static int fail(const char *what, int rc) {
    const char *detail = dlock_last_errmsg();
    fprintf(stderr, "mutex_counter: %s: %s%s%s%s\n", what, dlock_strerror(rc),
            *detail ? " (" : "", detail, *detail ? ")" : "");
    return 1;
}

/* The critical section: read the number, add one, write it back. Not atomic
 * on purpose; only the lock keeps two processes from interleaving here. */
static int increment(const char *path) {
    char buf[32] = "";
    int fd = open(path, O_RDWR | O_CREAT, 0644);
    if (fd < 0) return -1;
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    long value = n > 0 ? strtol(buf, NULL, 10) : 0;
    int len = snprintf(buf, sizeof buf, "%ld\n", value + 1);
    int ok = n >= 0 && pwrite(fd, buf, (size_t)len, 0) == len &&
             ftruncate(fd, len) == 0;
    return close(fd) == 0 && ok ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: mutex_counter URL|- COUNTER_FILE [N]\n");
        return 64;
    }
    const char *url = pick_url(argv[1]), *path = argv[2];
    char *end;
    long n = argc > 3 ? strtol(argv[3], &end, 10) : 100;
    if (argc > 3 && (*end || n < 0)) {
        fprintf(stderr, "mutex_counter: N must be a number >= 0\n");
        return 64;
    }

    /* One lock per counter file, named from a printf-style key template. */
    char key[DLOCK_KEY_MAX + 1];
    int rc = dlock_keyf(key, sizeof key, "counter:%s", path);
    if (rc != 0) return fail("key", rc);

    dlock_client *client;
    rc = dlock_client_open(&client, url, NULL);
    if (rc != 0) return fail(url, rc);

    /* Wait at most 30 s per increment, so a wedged holder cannot hang us;
     * a 10 s TTL bounds how long a crashed holder blocks the others. */
    dlock_lock_opts opts = DLOCK_LOCK_OPTS_INIT;
    opts.ttl_ms = 10000;
    opts.wait_ms = 30000;

    int status = 0;
    for (long i = 0; i < n && status == 0; i++) {
        dlock_lock *lock;
        rc = dlock_acquire(&lock, client, key, &opts);
        if (rc != 0) {
            status = fail(key, rc);
            break;
        }
        if (increment(path) != 0) {
            perror(path);
            status = 1;
        }
        /* DLOCK_ENOTHELD here would mean the lock expired while we worked:
         * another process may have interleaved, so report it. */
        rc = dlock_release(lock);
        if (rc != 0 && status == 0) status = fail("release", rc);
    }
    dlock_client_close(client);
    return status;
}
