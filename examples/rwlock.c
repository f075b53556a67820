/*
 * rwlock.c — the read-write lock: readers share KEY, a writer has it alone.
 *
 * Each run is one reader or one writer (dlock_rw_acquire with DLOCK_READ or
 * DLOCK_WRITE). Any number of readers hold KEY together; a writer waits for
 * them to leave and then excludes everyone. Waiting is first come, first
 * served: a reader that arrives after a queued writer waits behind it, so a
 * stream of readers cannot starve the writers. The write side is the key's
 * ordinary mutex (dlock_acquire(KEY) is the same lock).
 *
 * To show it, runs count themselves in STATE_FILE, "READERS WRITERS
 * MAX_READERS", updated under flock(2) (the demo's bookkeeping, not the
 * distributed lock). A reader that finds a writer inside, or a writer that
 * finds anyone else inside, says so and exits 1. A reader given TARGET stays
 * until MAX_READERS has reached TARGET (10 s at most), so a demo can show
 * readers really sharing the key.
 *
 *   rwlock URL|- KEY read|write STATE_FILE [HOLD_MS] [TARGET]  (HOLD_MS: 200)
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
    fprintf(stderr, "rwlock: %s: %s%s%s%s\n", what, dlock_strerror(rc),
            *detail ? " (" : "", detail, *detail ? ")" : "");
    return 1;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* Add dr readers and dw writers to the state file; s = {readers, writers,
 * max readers} afterwards. 0 or -1. */
static int count(const char *path, int dr, int dw, long s[3]) {
    char buf[96] = "";
    int fd = open(path, O_RDWR | O_CREAT, 0644);
    if (fd < 0) return -1;
    ssize_t n = flock(fd, LOCK_EX) == 0 ? pread(fd, buf, sizeof buf - 1, 0) : -1;
    s[0] = s[1] = s[2] = 0;
    if (n > 0) sscanf(buf, "%ld %ld %ld", &s[0], &s[1], &s[2]);
    s[0] += dr;
    s[1] += dw;
    if (s[0] > s[2]) s[2] = s[0];
    int len = snprintf(buf, sizeof buf, "%ld %ld %ld\n", s[0], s[1], s[2]);
    int ok = n >= 0 && pwrite(fd, buf, (size_t)len, 0) == len && ftruncate(fd, len) == 0;
    return close(fd) == 0 && ok ? 0 : -1;
}

int main(int argc, char **argv) {
    int reader = argc > 3 && strcmp(argv[3], "read") == 0;
    if (argc < 5 || argc > 7 || (!reader && strcmp(argv[3], "write") != 0)) {
        fprintf(stderr, "usage: rwlock URL|- KEY read|write STATE_FILE [HOLD_MS] [TARGET]\n");
        return 64;
    }
    const char *url = pick_url(argv[1]), *key = argv[2], *state = argv[4];
    long hold_ms = argc > 5 ? strtol(argv[5], NULL, 10) : 200;
    long target = argc > 6 ? strtol(argv[6], NULL, 10) : 0, s[3];

    dlock_client *client;
    int rc = dlock_client_open(&client, url, NULL);
    if (rc != 0) return fail(url, rc);

    dlock_lock_opts opts = DLOCK_LOCK_OPTS_INIT;
    opts.ttl_ms = 10000; /* auto-renewed; bounds how long a crash blocks others */
    opts.wait_ms = 60000;
    dlock_lock *lock;
    rc = dlock_rw_acquire(&lock, client, key, reader ? DLOCK_READ : DLOCK_WRITE, &opts);
    if (rc != 0) {
        fail(key, rc);
        dlock_client_close(client);
        return 1;
    }

    int status = count(state, reader, !reader, s) == 0 ? 0 : 1;
    printf("%s %ld: in, with %ld reader(s) and %ld writer(s) inside\n",
           reader ? "reader" : "writer", (long)getpid(), s[0], s[1]);
    fflush(stdout);
    if (reader ? s[1] != 0 : (s[0] != 0 || s[1] != 1)) {
        fprintf(stderr, "rwlock: a %s is inside together with %ld reader(s) and %ld writer(s)\n",
                reader ? "reader" : "writer", s[0], s[1]);
        status = 1;
    }
    sleep_ms(hold_ms); /* read or write the shared thing */
    for (int i = 0; i < 500 && reader && s[2] < target && status == 0; i++) {
        sleep_ms(20); /* for the demo: stay until TARGET readers were in at once */
        if (count(state, 0, 0, s) != 0) status = 1;
    }
    if (count(state, -reader, -!reader, s) != 0) status = 1;

    rc = dlock_release(lock);
    if (rc != 0 && status == 0) status = fail("release", rc);
    dlock_client_close(client);
    return status;
}
