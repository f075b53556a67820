/*
 * recipe_data_sync.c — a long job under a short lock: auto-renew, and stop
 * the work the moment the lock is lost.
 *
 * One sync of a data set at a time: the job takes "sync:<JOB>" with a try-
 * lock (a second copy says busy, exit 75, and leaves). The job runs far
 * longer than the TTL; the client's watchdog renews the lock every TTL/3 in
 * the background, so the TTL only bounds how long a *crashed* job blocks the
 * next one. If renewal fails (the server is unreachable, or an operator ran
 * `dlock unlock --force`), the lock is lost: the on_lost callback, on the
 * watchdog thread, sets a flag that the work loop checks before every step,
 * and the job stops instead of carrying on unprotected (exit 79, like
 * `dlock run`). dlock_is_held() is checked too: it turns false when the
 * lock's validity runs out, even if the watchdog could not run.
 *
 *   recipe_data_sync URL|- JOB STEPS STEP_MS [TTL_MS]       (TTL_MS: 1000)
 *
 * URL: argv[1], or $DLOCK_URL, or redis://127.0.0.1:6379 when argv[1] is "-".
 */
#define _DEFAULT_SOURCE /* nanosleep */

#include <dlock.h>

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
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
    fprintf(stderr, "recipe_data_sync: %s: %s%s%s%s\n", what, dlock_strerror(rc),
            *detail ? " (" : "", detail, *detail ? ")" : "");
    return 1;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

static atomic_int lost; /* set by on_lost, read by the work loop */

/* Runs on the watchdog thread: keep it short, no dlock calls on this lock. */
static void on_lost(dlock_lock *lock, void *arg) {
    (void)lock;
    (void)arg;
    atomic_store(&lost, 1);
}

int main(int argc, char **argv) {
    if (argc < 5 || argc > 6) {
        fprintf(stderr, "usage: recipe_data_sync URL|- JOB STEPS STEP_MS [TTL_MS]\n");
        return 64;
    }
    const char *url = pick_url(argv[1]), *job = argv[2];
    long steps = strtol(argv[3], NULL, 10), step_ms = strtol(argv[4], NULL, 10);
    char key[DLOCK_KEY_MAX + 1];
    int rc = dlock_keyf(key, sizeof key, "sync:%s", job);
    if (rc != 0) return fail("key", rc);
    setvbuf(stdout, NULL, _IOLBF, 0);

    dlock_client *client;
    if ((rc = dlock_client_open(&client, url, NULL)) != 0) return fail(url, rc);

    dlock_lock_opts opts = DLOCK_LOCK_OPTS_INIT;
    opts.ttl_ms = argc > 5 ? strtoll(argv[5], NULL, 10) : 1000;
    opts.auto_renew = 1; /* the default, said out loud */
    opts.on_lost = on_lost;
    dlock_lock *lock;
    rc = dlock_try_acquire(&lock, client, key, &opts);
    if (rc == DLOCK_EBUSY) {
        printf("sync %s: busy, another sync of it is running\n", job);
        dlock_client_close(client);
        return 75;
    }
    if (rc != 0) {
        fail(key, rc);
        dlock_client_close(client);
        return 1;
    }

    long done = 0;
    while (done < steps) {
        if (atomic_load(&lost) || !dlock_is_held(lock)) break; /* not ours: stop */
        sleep_ms(step_ms); /* copy one batch of rows (keep steps short: a step
                              that has started finishes) */
        printf("sync %s: step %ld/%ld\n", job, ++done, steps);
    }

    dlock_client_stats st;
    if (dlock_stats(&st, client) != 0) st.renewals = 0;
    int was_lost = done < steps || atomic_load(&lost) || !dlock_is_held(lock);
    int why = dlock_lock_renew_error(lock); /* 0: its validity simply ran out */
    if (was_lost)
        printf("sync %s: lock lost (%s), stopped after step %ld of %ld\n", job,
               why ? dlock_strerror(why) : "validity ran out", done, steps);
    else
        printf("sync %s: done, %ld steps in %ld ms under a %" PRId64 " ms TTL (renewed %" PRIu64
               " times)\n", job, steps, steps * step_ms, opts.ttl_ms, st.renewals);
    rc = dlock_release(lock); /* DLOCK_ENOTHELD after a loss: expected */
    dlock_client_close(client);
    if (rc != 0 && !was_lost) return fail("release", rc);
    return was_lost ? 79 : 0;
}
