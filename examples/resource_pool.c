/*
 * resource_pool.c — a pool of N named resources (gpu0 .. gpuN-1) shared by
 * any number of workers on any machines.
 *
 * The pool is a semaphore of N permits (dlock_sem_acquire). Each permit has
 * a slot number, 0..N-1, that no other current holder has: the slot picks
 * the resource, so two workers never use the same GPU and nobody needs a
 * second lock per resource. The others wait for a permit.
 *
 * The "resources" here are files DIR/gpuK.busy that a worker creates with
 * O_EXCL while it uses gpuK and removes after: if the pool ever handed one
 * GPU to two workers, the second create fails and the worker says CONFLICT
 * and exits 1. For the demo, a worker keeps its GPU until every GPU was seen
 * busy at once (then DIR/all-busy exists; 10 s at most), so that a run shows
 * the whole pool in use, not one GPU reused.
 *
 *   resource_pool URL|- POOL DIR [N] [HOLD_MS]     (N: 4, HOLD_MS: 200)
 *
 * URL: argv[1], or $DLOCK_URL, or redis://127.0.0.1:6379 when argv[1] is "-".
 */
#define _DEFAULT_SOURCE /* nanosleep */

#include <dlock.h>

#include <errno.h>
#include <fcntl.h>
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
    fprintf(stderr, "resource_pool: %s: %s%s%s%s\n", what, dlock_strerror(rc),
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

/* 1 when every resource of the pool is busy now (or was: DIR/all-busy). */
static int all_busy(const char *dir, int n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/all-busy", dir);
    if (access(path, F_OK) == 0) return 1;
    for (int i = 0; i < n; i++) {
        char busy[4096];
        snprintf(busy, sizeof busy, "%s/gpu%d.busy", dir, i);
        if (access(busy, F_OK) != 0) return 0;
    }
    int fd = open(path, O_WRONLY | O_CREAT, 0644); /* tell the others */
    if (fd >= 0) close(fd);
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 4 || argc > 6) {
        fprintf(stderr, "usage: resource_pool URL|- POOL DIR [N] [HOLD_MS]\n");
        return 64;
    }
    const char *url = pick_url(argv[1]), *dir = argv[3];
    long n = argc > 4 ? number(argv[4]) : 4, hold_ms = argc > 5 ? number(argv[5]) : 200;
    char key[DLOCK_KEY_MAX + 1], busy[4096];
    int rc = dlock_keyf(key, sizeof key, "pool:%s", argv[2]);
    if (rc != 0 || n < 1 || n > 1000 || hold_ms < 0) {
        fprintf(stderr, "resource_pool: bad POOL, N (>= 1) or HOLD_MS (>= 0)\n");
        return 64;
    }

    dlock_client *client;
    rc = dlock_client_open(&client, url, NULL);
    if (rc != 0) return fail(url, rc);

    dlock_lock_opts opts = DLOCK_LOCK_OPTS_INIT;
    opts.ttl_ms = 10000;  /* a crashed worker's GPU comes back after 10 s */
    opts.wait_ms = 60000;
    dlock_lock *permit;
    rc = dlock_sem_acquire(&permit, client, key, (int)n, &opts);
    if (rc != 0) {
        fail(key, rc);
        dlock_client_close(client);
        return 1;
    }

    /* The slot is the resource. */
    int gpu = dlock_lock_slot(permit), status = 0;
    snprintf(busy, sizeof busy, "%s/gpu%d.busy", dir, gpu);
    int fd = open(busy, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0) {
        fprintf(stderr, "resource_pool: CONFLICT: gpu%d: %s\n", gpu,
                errno == EEXIST ? "someone else is using it" : strerror(errno));
        status = 1;
    } else {
        close(fd);
        printf("worker %ld: using gpu%d (permit token %" PRIu64 ")\n", (long)getpid(), gpu,
               dlock_lock_fencing_token(permit));
        fflush(stdout);
        sleep_ms(hold_ms); /* the work on gpu<slot> */
        for (int i = 0; i < 500 && !all_busy(dir, (int)n); i++) sleep_ms(20);
        unlink(busy); /* done with the GPU: before the permit goes back */
    }

    rc = dlock_release(permit);
    if (rc != 0 && status == 0) status = fail("release", rc);
    dlock_client_close(client);
    return status;
}
