/*
 * leader.c — leader election: start this on several machines; one leads,
 * the others wait and the first in line takes over when the leader resigns
 * or dies (after its TTL at most).
 *
 * dlock_campaign() waits until we are the leader. Leadership is a lock: it
 * is renewed by the client's watchdog while we run, and dlock_is_held()
 * says (without a round trip) whether we still lead, so the leader checks it
 * before each piece of leader work. The fencing token of the leadership is
 * the term: every new leader has a larger one, so whatever the leader writes
 * to can refuse a deposed leader's late writes. After LEAD_MS the leader
 * resigns (in real life: at shutdown) and the next candidate takes over.
 *
 *   leader URL|- KEY [LEAD_MS] [TTL_MS]       (LEAD_MS: 1000, TTL_MS: 5000)
 *
 * Output, one line per event, key=value so scripts can read it (t_us: the
 * wall clock in microseconds; each "work" stamp is taken *before* the
 * dlock_is_held() check that allowed that work):
 *   elected term=T owner=ID pid=P t_us=...
 *   work term=T n=N t_us=...
 *   resigned term=T works=N      or   lost term=T works=N (then exit 79)
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
#include <unistd.h>

static const char *pick_url(const char *arg) {
    const char *env = getenv("DLOCK_URL");
    if (arg && *arg && strcmp(arg, "-") != 0) return arg;
    return env && *env ? env : "redis://127.0.0.1:6379";
}

static int fail(const char *what, int rc) {
    const char *detail = dlock_last_errmsg();
    fprintf(stderr, "leader: %s: %s%s%s%s\n", what, dlock_strerror(rc),
            *detail ? " (" : "", detail, *detail ? ")" : "");
    return 1;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

static long long now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

int main(int argc, char **argv) {
    if (argc < 3 || argc > 5) {
        fprintf(stderr, "usage: leader URL|- KEY [LEAD_MS] [TTL_MS]\n");
        return 64;
    }
    const char *url = pick_url(argv[1]), *key = argv[2];
    long lead_ms = argc > 3 ? strtol(argv[3], NULL, 10) : 1000;
    long ttl_ms = argc > 4 ? strtol(argv[4], NULL, 10) : 5000;
    setvbuf(stdout, NULL, _IOLBF, 0); /* one line at a time, also to a pipe */

    dlock_client *client;
    int rc = dlock_client_open(&client, url, NULL);
    if (rc != 0) return fail(url, rc);

    /* Who leads now? (Only to say so: campaigning does not need it.) */
    dlock_info info;
    if (dlock_leader(&info, client, key) == 0 && info.held)
        fprintf(stderr, "leader: %s is led by %s (term %" PRIu64 "); waiting\n", key,
                info.owner, info.fencing_token);

    /* The TTL is how long a dead leader (kill -9, power cut) blocks the
     * others; a live leader's watchdog renews it every TTL/3. */
    dlock_lock_opts opts = DLOCK_LOCK_OPTS_INIT;
    opts.ttl_ms = ttl_ms;
    dlock_lock *leadership;
    rc = dlock_campaign(&leadership, client, key, &opts); /* waits forever */
    if (rc != 0) {
        fail(key, rc);
        dlock_client_close(client);
        return 1;
    }
    uint64_t term = dlock_lock_fencing_token(leadership);
    if (dlock_leader(&info, client, key) != 0) info.owner[0] = '\0';
    printf("elected term=%" PRIu64 " owner=%s pid=%ld t_us=%lld\n", term, info.owner,
           (long)getpid(), now_us());

    long long end = now_us() + lead_ms * 1000;
    int works = 0, lost = 0;
    while (now_us() < end) {
        long long t = now_us();
        if (!dlock_is_held(leadership)) { /* deposed: stop leader work at once */
            lost = 1;
            break;
        }
        printf("work term=%" PRIu64 " n=%d t_us=%lld\n", term, ++works, t);
        sleep_ms(100); /* the leader's work, in slices */
    }

    rc = dlock_resign(leadership); /* frees the handle; the next candidate leads */
    lost = lost || rc == DLOCK_ENOTHELD;
    printf("%s term=%" PRIu64 " works=%d\n", lost ? "lost" : "resigned", term, works);
    if (rc != 0 && !lost) fail("resign", rc);
    dlock_client_close(client);
    return lost ? 79 : rc != 0; /* 79: lost the leadership, as `dlock elect` */
}
