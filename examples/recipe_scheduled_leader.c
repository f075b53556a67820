/*
 * recipe_scheduled_leader.c — a "cron" that runs on several machines for
 * availability but fires each tick once: only the leader runs it.
 *
 * Every scheduler campaigns for "cron:<NAME>". The leader runs a tick at the
 * start of every TICK_MS period (slot = wall clock / TICK_MS), checking
 * dlock_is_held() first; the others wait in line and the first takes over
 * when the leader resigns or dies (after its TTL). Each tick is recorded in
 * the job log with the slot and the leader's term (its fencing token), and
 * the log, like any store a leader writes to, refuses a term older than the
 * last one it saw (a deposed leader that did not know) and a slot already
 * run (a new leader elected in a slot its predecessor had already done).
 * Here a scheduler resigns after TICKS ticks, to show the hand-over.
 *
 * The log is a file of lines "slot=S term=T pid=P", appended under flock(2).
 *
 *   recipe_scheduled_leader URL|- NAME LOG_FILE TICK_MS TICKS [TTL_MS]
 *
 * URL: argv[1], or $DLOCK_URL, or redis://127.0.0.1:6379 when argv[1] is "-".
 */
#define _DEFAULT_SOURCE /* flock, nanosleep */

#include <dlock.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
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
    fprintf(stderr, "recipe_scheduled_leader: %s: %s%s%s%s\n", what, dlock_strerror(rc),
            *detail ? " (" : "", detail, *detail ? ")" : "");
    return 1;
}

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* Record the tick of `slot` by `term` in the log: 0 done, 2 slot already
 * run, 3 refused (an older term than the last entry's), -1 error. */
static int record(const char *path, long long slot, uint64_t term) {
    char buf[256] = "", *line;
    int fd = open(path, O_RDWR | O_CREAT | O_APPEND, 0644), rc;
    if (fd < 0) return -1;
    off_t size = flock(fd, LOCK_EX) == 0 ? lseek(fd, 0, SEEK_END) : -1;
    ssize_t n = size < 0 ? -1 : pread(fd, buf, 200, size > 200 ? size - 200 : 0);
    long long last_slot = -1;
    uint64_t last_term = 0;
    if (n > 0) {
        buf[buf[n - 1] == '\n' ? n - 1 : n] = '\0';
        line = strrchr(buf, '\n');
        sscanf(line ? line + 1 : buf, "slot=%lld term=%" SCNu64, &last_slot, &last_term);
    }
    rc = n < 0 ? -1 : term < last_term ? 3 : slot <= last_slot ? 2 : 0;
    if (rc == 0) {
        int len = snprintf(buf, sizeof buf, "slot=%lld term=%" PRIu64 " pid=%ld\n", slot, term,
                           (long)getpid());
        if (write(fd, buf, (size_t)len) != len) rc = -1;
    }
    return close(fd) == 0 ? rc : -1; /* closing also unlocks */
}

int main(int argc, char **argv) {
    if (argc < 6 || argc > 7 || strtol(argv[4], NULL, 10) < 1) {
        fprintf(stderr, "usage: recipe_scheduled_leader URL|- NAME LOG_FILE TICK_MS TICKS"
                        " [TTL_MS]\n");
        return 64;
    }
    const char *url = pick_url(argv[1]), *log = argv[3];
    long tick_ms = strtol(argv[4], NULL, 10), ticks = strtol(argv[5], NULL, 10);
    long pid = (long)getpid();
    char key[DLOCK_KEY_MAX + 1];
    int rc = dlock_keyf(key, sizeof key, "cron:%s", argv[2]), status = 0;
    if (rc != 0) return fail("key", rc);
    setvbuf(stdout, NULL, _IOLBF, 0);

    dlock_client *client;
    if ((rc = dlock_client_open(&client, url, NULL)) != 0) return fail(url, rc);
    dlock_lock_opts opts = DLOCK_LOCK_OPTS_INIT;
    opts.ttl_ms = argc > 6 ? strtoll(argv[6], NULL, 10) : 5000; /* a dead leader's gap */
    dlock_lock *leadership;
    if ((rc = dlock_campaign(&leadership, client, key, &opts)) != 0) {
        fail(key, rc);
        dlock_client_close(client);
        return 1;
    }
    uint64_t term = dlock_lock_fencing_token(leadership);
    printf("scheduler %ld: leader of %s, term %" PRIu64 "\n", pid, key, term);

    for (long run = 0, tries = 0; run < ticks && tries < 10 * ticks && status == 0; tries++) {
        long long slot = now_ms() / tick_ms + 1; /* sleep to the next slot's start */
        long long wait = slot * tick_ms - now_ms();
        struct timespec ts = {(time_t)(wait / 1000), (long)(wait % 1000) * 1000000L};
        while (wait > 0 && nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
        if (!dlock_is_held(leadership)) {
            printf("scheduler %ld: no longer the leader, stopping\n", pid);
            status = 79;
            break;
        }
        rc = record(log, slot, term); /* the tick's job would run here */
        printf("scheduler %ld: slot %lld, term %" PRIu64 ": %s\n", pid, slot, term,
               rc == 0 ? "tick" : rc == 2 ? "already run, skipped" : rc == 3 ? "REFUSED by the log"
                                                                          : "cannot write the log");
        if (rc < 0 || rc == 3) status = rc < 0 ? 1 : 3;
        run += rc == 0;
    }
    rc = dlock_resign(leadership); /* the next scheduler in line takes over now */
    printf("scheduler %ld: resigned\n", pid);
    dlock_client_close(client);
    return status ? status : rc == 0 ? 0 : fail("resign", rc);
}
