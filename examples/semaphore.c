/*
 * semaphore.c — the semaphore pattern: at most LIMIT workers at once.
 *
 * Each run is one worker: it takes one of LIMIT permits of the semaphore KEY
 * (dlock_sem_acquire), works for HOLD_MS, and gives the permit back. Start
 * many at once, on any machines: no more than LIMIT ever work together, the
 * others wait (first come, first served) and are woken by a release. A
 * worker that crashes gives its permit back when its TTL runs out.
 *
 * To show it, the workers count themselves in STATE_FILE, "NOW MAX": how
 * many work at this moment and the most ever seen, updated under flock(2)
 * (local bookkeeping for the demo, not the distributed lock). A worker that
 * finds more than LIMIT at work says so and exits 1. So that a demo can show
 * the limit being reached, not only never exceeded, a worker keeps its permit
 * until MAX has reached LIMIT (10 s at most) before it leaves.
 *
 *   semaphore URL|- KEY LIMIT STATE_FILE [HOLD_MS]      (HOLD_MS: 200)
 *
 * URL: argv[1], or $DLOCK_URL, or redis://127.0.0.1:6379 when argv[1] is "-".
 */
#define _DEFAULT_SOURCE /* flock, nanosleep */

#include <dlock.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

static const char *pick_url(const char *arg) {
    const char *env = getenv("DLOCK_URL");
    if (arg && *arg && strcmp(arg, "-") != 0) return arg;
    return env && *env ? env : "redis://127.0.0.1:6379";
}

static int fail(const char *what, int rc) {
    const char *detail = dlock_last_errmsg();
    fprintf(stderr, "semaphore: %s: %s%s%s%s\n", what, dlock_strerror(rc),
            *detail ? " (" : "", detail, *detail ? ")" : "");
    return 1;
}

/* A non-negative decimal argument, or -1. */
static long number(const char *s) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    return *s && !*end && errno == 0 && v >= 0 ? v : -1;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* Add delta to NOW in the state file (MAX follows); return both. 0 or -1. */
static int count(const char *path, int delta, long *now, long *max) {
    char buf[64] = "";
    int fd = open(path, O_RDWR | O_CREAT, 0644);
    if (fd < 0) return -1;
    ssize_t n = flock(fd, LOCK_EX) == 0 ? pread(fd, buf, sizeof buf - 1, 0) : -1;
    *now = *max = 0;
    if (n > 0) sscanf(buf, "%ld %ld", now, max);
    *now += delta;
    if (*now > *max) *max = *now;
    int len = snprintf(buf, sizeof buf, "%ld %ld\n", *now, *max);
    int ok = n >= 0 && pwrite(fd, buf, (size_t)len, 0) == len && ftruncate(fd, len) == 0;
    return close(fd) == 0 && ok ? 0 : -1; /* closing drops the flock */
}

int main(int argc, char **argv) {
    if (argc < 5 || argc > 6) {
        fprintf(stderr, "usage: semaphore URL|- KEY LIMIT STATE_FILE [HOLD_MS]\n");
        return 64;
    }
    const char *url = pick_url(argv[1]), *key = argv[2], *state = argv[4];
    long limit = number(argv[3]), hold_ms = argc > 5 ? number(argv[5]) : 200, now, max;
    if (limit < 1 || limit > 100000 || hold_ms < 0) {
        fprintf(stderr, "semaphore: LIMIT must be >= 1 and HOLD_MS >= 0\n");
        return 64;
    }

    dlock_client *client;
    int rc = dlock_client_open(&client, url, NULL);
    if (rc != 0) return fail(url, rc);

    /* A 10 s TTL (auto-renewed while we hold the permit) bounds how long a
     * crashed worker keeps its permit; wait at most a minute for one. */
    dlock_lock_opts opts = DLOCK_LOCK_OPTS_INIT;
    opts.ttl_ms = 10000;
    opts.wait_ms = 60000;
    dlock_lock *permit;
    rc = dlock_sem_acquire(&permit, client, key, (int)limit, &opts);
    if (rc != 0) {
        fail(key, rc);
        dlock_client_close(client);
        return 1;
    }

    int status = 0;
    if (count(state, +1, &now, &max) != 0) { perror(state); status = 1; }
    printf("worker %ld: permit %d of %s, %ld at work (limit %ld)\n", (long)getpid(),
           dlock_lock_slot(permit), key, now, limit);
    fflush(stdout);
    if (now > limit) {
        fprintf(stderr, "semaphore: %ld workers hold %s, more than %ld\n", now, key, limit);
        status = 1;
    }

    sleep_ms(hold_ms); /* the work */
    for (int i = 0; i < 500 && max < limit && status == 0; i++) {
        sleep_ms(20); /* for the demo: stay until the limit was reached (10 s at most) */
        if (count(state, 0, &now, &max) != 0) status = 1;
    }

    if (count(state, -1, &now, &max) != 0) { perror(state); status = 1; }
    rc = dlock_release(permit); /* the next waiter gets the permit at once */
    if (rc != 0 && status == 0) status = fail("release", rc);
    dlock_client_close(client);
    return status;
}
