/*
 * timeout.c — the timeout pattern: wait at most T for a lock, then give up
 * with a clear "timed out" (DLOCK_ETIMEDOUT), instead of hanging forever.
 *
 *   timeout [URL|-] [KEY] [WAIT_MS]   (KEY defaults to job:7, WAIT_MS to 2000)
 *
 * URL: argv[1], or $DLOCK_URL, or redis://127.0.0.1:6379.
 * Exit: 0 got the lock, 75 timed out (like `dlock run --wait`), 1 error.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */

#include <dlock.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *pick_url(const char *arg) {
    const char *env = getenv("DLOCK_URL");
    if (arg && *arg && strcmp(arg, "-") != 0) return arg;
    return env && *env ? env : "redis://127.0.0.1:6379";
}

static int fail(const char *what, int rc) {
    const char *detail = dlock_last_errmsg();
    fprintf(stderr, "timeout: %s: %s%s%s%s\n", what, dlock_strerror(rc),
            *detail ? " (" : "", detail, *detail ? ")" : "");
    return 1;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    const char *url = pick_url(argc > 1 ? argv[1] : NULL);
    const char *key = argc > 2 ? argv[2] : "job:7";
    char *end = NULL;
    long long wait_ms = argc > 3 ? strtoll(argv[3], &end, 10) : 2000;
    if (argc > 3 && (*end || wait_ms < 0)) {
        fprintf(stderr, "usage: timeout [URL|-] [KEY] [WAIT_MS >= 0]\n");
        return 64;
    }

    dlock_client *client;
    int rc = dlock_client_open(&client, url, NULL);
    if (rc != 0) return fail(url, rc);

    /* wait_ms bounds the whole wait; 0 would mean a single attempt. */
    dlock_lock_opts opts = DLOCK_LOCK_OPTS_INIT;
    opts.wait_ms = wait_ms;

    dlock_lock *lock;
    double start = now_s();
    rc = dlock_acquire(&lock, client, key, &opts);
    double waited = now_s() - start;

    if (rc == DLOCK_ETIMEDOUT) {
        printf("gave up on %s after %.2fs (budget %lldms): %s\n", key, waited,
               wait_ms, dlock_strerror(rc));
        dlock_client_close(client);
        return 75;
    }
    if (rc != 0) {
        fail(key, rc);
        dlock_client_close(client);
        return 1;
    }

    printf("got %s after %.2fs (fencing token %" PRIu64 ")\n", key, waited,
           dlock_lock_fencing_token(lock));
    rc = dlock_release(lock);
    dlock_client_close(client);
    return rc == 0 ? 0 : fail("release", rc);
}
