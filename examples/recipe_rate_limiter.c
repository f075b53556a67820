/*
 * recipe_rate_limiter.c — at most PER calls in any INTERVAL_MS, across all
 * processes and machines (e.g. a partner API that allows 5 calls a second).
 *
 * Why not "take a lock (or a permit), call, release": that bounds how many
 * calls run AT ONCE, not how many START per second. If a call takes 5 ms, a
 * semaphore of 5 released after each call lets through 1000 calls a second.
 *
 * The rate limiter: a semaphore of PER permits where each call takes a
 * permit that lasts exactly one interval — ttl_ms = INTERVAL_MS, auto_renew
 * = 0 — and is never given back early: it goes back only when it expires on
 * the server. A call at time t is admitted only if fewer than PER calls were
 * admitted in (t - INTERVAL, t], so ANY window of INTERVAL_MS holds at most
 * PER calls (a sliding window, by the Redis server's clock), and a process
 * that crashes cannot break the limit: its permits simply expire.
 * Releasing a permit after its expiry is harmless, so we release only once
 * the interval has surely passed (plus 1% and 10 ms for clock-rate
 * differences), at the latest when the program ends.
 *
 *   recipe_rate_limiter URL|- NAME PER INTERVAL_MS CALLS [SPACING_MS [WAIT_MS [START_MS]]]
 *
 * Makes CALLS calls SPACING_MS apart (default 0), from wall-clock START_MS
 * (ms since 1970; default now). A call over the rate waits up to WAIT_MS for
 * a permit (default 0: refused at once). One line per call, for scripts:
 *   allowed token=T t0_us=... t1_us=...   (wall clock before / after asking)
 *   refused t0_us=... t1_us=...
 * URL: argv[1], or $DLOCK_URL, or redis://127.0.0.1:6379 when argv[1] is "-".
 */
#define _DEFAULT_SOURCE /* nanosleep */

#include <dlock.h>

#include <errno.h>
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
    fprintf(stderr, "recipe_rate_limiter: %s: %s%s%s%s\n", what, dlock_strerror(rc),
            *detail ? " (" : "", detail, *detail ? ")" : "");
    return 1;
}

static long long now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

static void sleep_until_us(long long t) {
    long long d = t - now_us();
    struct timespec ts = {(time_t)(d / 1000000), (long)(d % 1000000) * 1000};
    while (d > 0 && nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

int main(int argc, char **argv) {
    if (argc < 6 || argc > 9) {
        fprintf(stderr, "usage: recipe_rate_limiter URL|- NAME PER INTERVAL_MS CALLS"
                        " [SPACING_MS [WAIT_MS [START_MS]]]\n");
        return 64;
    }
    const char *url = pick_url(argv[1]);
    long per = strtol(argv[3], NULL, 10), interval = strtol(argv[4], NULL, 10);
    long calls = strtol(argv[5], NULL, 10), spacing = argc > 6 ? strtol(argv[6], NULL, 10) : 0;
    long long start = argc > 8 ? strtoll(argv[8], NULL, 10) * 1000 : now_us();
    char key[DLOCK_KEY_MAX + 1];
    int rc = dlock_keyf(key, sizeof key, "rate:%s", argv[2]);
    dlock_lock **held = calloc(calls > 0 ? (size_t)calls : 1, sizeof *held);
    if (rc != 0 || per < 1 || interval < 1 || calls < 0 || spacing < 0 || !held) {
        fprintf(stderr, "recipe_rate_limiter: bad NAME, PER, INTERVAL_MS, CALLS or SPACING_MS\n");
        return 64;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);

    dlock_client *client;
    if ((rc = dlock_client_open(&client, url, NULL)) != 0) return fail(url, rc);

    dlock_lock_opts opts = DLOCK_LOCK_OPTS_INIT;
    opts.ttl_ms = interval; /* a permit lasts one interval... */
    opts.auto_renew = 0;    /* ...and is not kept alive beyond it */
    opts.wait_ms = argc > 7 ? strtoll(argv[7], NULL, 10) : 0;
    long allowed = 0, refused = 0;
    long long all_expired = 0; /* when our last permit has surely expired */
    int status = 0;
    for (long i = 0; i < calls && status == 0; i++) {
        sleep_until_us(start + i * spacing * 1000LL);
        long long t0 = now_us();
        rc = dlock_sem_acquire(&held[allowed], client, key, (int)per, &opts);
        long long t1 = now_us();
        if (rc == 0) {
            printf("allowed token=%" PRIu64 " t0_us=%lld t1_us=%lld\n",
                   dlock_lock_fencing_token(held[allowed]), t0, t1);
            allowed++; /* ... make the rate-limited call here ... */
            all_expired = t1 + interval * 1010LL + 10000;
        } else if (rc == DLOCK_EBUSY || rc == DLOCK_ETIMEDOUT) {
            printf("refused t0_us=%lld t1_us=%lld\n", t0, t1); /* over the rate */
            refused++;
        } else {
            status = fail(key, rc);
        }
    }

    /* Never give a permit back early: that would let the next call in
     * before its interval is over. Wait until all have expired by themselves. */
    sleep_until_us(all_expired);
    for (long i = 0; i < allowed; i++) dlock_release(held[i]); /* DLOCK_ENOTHELD: expected */
    free(held);
    fprintf(stderr, "rate limiter %s: %ld allowed, %ld refused (at most %ld per %ld ms)\n",
            key, allowed, refused, per, interval);
    dlock_client_close(client);
    return status;
}
