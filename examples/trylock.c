/*
 * trylock.c — the try-lock pattern: "first worker to claim a job wins".
 *
 * One attempt, no waiting. If someone else holds the key, that is an answer,
 * not an error: say who holds it and exit 75 (EX_TEMPFAIL, like
 * `dlock run --no-wait`), without doing the job.
 *
 *   trylock [URL|-] [KEY]          (KEY defaults to job:7)
 *
 * URL: argv[1], or $DLOCK_URL, or redis://127.0.0.1:6379.
 * Exit: 0 did the job, 75 busy, 1 error.
 */
#include <dlock.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *pick_url(const char *arg) {
    const char *env = getenv("DLOCK_URL");
    if (arg && *arg && strcmp(arg, "-") != 0) return arg;
    return env && *env ? env : "redis://127.0.0.1:6379";
}

static int fail(const char *what, int rc) {
    const char *detail = dlock_last_errmsg();
    fprintf(stderr, "trylock: %s: %s%s%s%s\n", what, dlock_strerror(rc),
            *detail ? " (" : "", detail, *detail ? ")" : "");
    return 1;
}

int main(int argc, char **argv) {
    const char *url = pick_url(argc > 1 ? argv[1] : NULL);
    const char *key = argc > 2 ? argv[2] : "job:7";

    dlock_client *client;
    int rc = dlock_client_open(&client, url, NULL);
    if (rc != 0) return fail(url, rc);

    dlock_lock *lock;
    rc = dlock_try_acquire(&lock, client, key, NULL);
    if (rc == DLOCK_EBUSY) {
        /* Busy is the expected answer when another worker got there first.
         * Asking who holds it is optional, for the message only. */
        dlock_info info;
        if (dlock_inspect(&info, client, key) == 0 && info.held)
            printf("%s is busy (held by %s, token %" PRIu64 "): not running the job\n",
                   key, info.owner, info.fencing_token);
        else
            printf("%s is busy: not running the job\n", key);
        dlock_client_close(client);
        return 75;
    }
    if (rc != 0) {
        fail(key, rc);
        dlock_client_close(client);
        return 1;
    }

    printf("claimed %s (fencing token %" PRIu64 "): running the job\n", key,
           dlock_lock_fencing_token(lock));
    /* ... the job runs here, with the lock auto-renewed meanwhile ... */

    rc = dlock_release(lock);
    dlock_client_close(client);
    return rc == 0 ? 0 : fail("release", rc);
}
