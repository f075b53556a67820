/*
 * recipe_job_claim.c — workers share a list of jobs; each job is done once.
 *
 * Every worker walks the jobs 1..JOBS (each from its own starting point)
 * and tries to claim "job:<N>" with a try-lock. Busy means another worker
 * is on that job right now: skip it, do not wait. A claimed job is checked
 * against the "done" records first, because the lock only says "nobody else
 * is working on it NOW": a job that someone finished a moment ago is free
 * again. So the lock excludes concurrent work, and the done record (written
 * while still holding the lock) makes it exactly once.
 *
 * Done records are files DONE_DIR/job-N, created with O_EXCL: if a job were
 * ever done twice, the second create fails and the worker says DUPLICATE
 * and exits 1. The file holds the fencing token of the claim that did it.
 *
 *   recipe_job_claim URL|- JOBS DONE_DIR [WORK_MS]        (WORK_MS: 20)
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
    fprintf(stderr, "recipe_job_claim: %s: %s%s%s%s\n", what, dlock_strerror(rc),
            *detail ? " (" : "", detail, *detail ? ")" : "");
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 4 || argc > 5) {
        fprintf(stderr, "usage: recipe_job_claim URL|- JOBS DONE_DIR [WORK_MS]\n");
        return 64;
    }
    const char *url = pick_url(argv[1]), *dir = argv[3];
    long jobs = strtol(argv[2], NULL, 10);
    long work_ms = argc > 4 ? strtol(argv[4], NULL, 10) : 20;
    if (jobs < 1 || work_ms < 0) {
        fprintf(stderr, "recipe_job_claim: JOBS must be >= 1, WORK_MS >= 0\n");
        return 64;
    }

    dlock_client *client;
    int rc = dlock_client_open(&client, url, NULL);
    if (rc != 0) return fail(url, rc);

    dlock_lock_opts opts = DLOCK_LOCK_OPTS_INIT;
    opts.ttl_ms = 10000; /* a crashed worker's job is free again after 10 s */
    long done = 0, busy = 0, already = 0, first = getpid() % jobs;
    int status = 0;
    for (long i = 0; i < jobs && status == 0; i++) {
        long id = 1 + (first + i) % jobs;
        char key[DLOCK_KEY_MAX + 1], path[4096];
        dlock_lock *claim;
        rc = dlock_keyf(key, sizeof key, "job:%ld", id);
        if (rc == 0) rc = dlock_try_acquire(&claim, client, key, &opts);
        if (rc == DLOCK_EBUSY) { /* someone else is on it: next job */
            busy++;
            continue;
        }
        if (rc != 0) {
            status = fail(key, rc);
            break;
        }
        snprintf(path, sizeof path, "%s/job-%ld", dir, id);
        if (access(path, F_OK) == 0) {
            already++; /* finished by someone before we claimed it */
        } else {
            struct timespec ts = {work_ms / 1000, (work_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL); /* the job */
            FILE *f = NULL;
            int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
            if (fd < 0 || !(f = fdopen(fd, "w"))) {
                if (fd >= 0) close(fd);
                fprintf(stderr, "recipe_job_claim: %s %s: %s\n", errno == EEXIST ? "DUPLICATE" : "",
                        path, strerror(errno));
                status = 1;
            } else {
                fprintf(f, "%" PRIu64 " %ld\n", dlock_lock_fencing_token(claim), (long)getpid());
                if (fclose(f) != 0) status = 1;
                done++;
            }
        }
        rc = dlock_release(claim); /* after the done record, never before */
        if (rc != 0 && status == 0) status = fail("release", rc);
    }
    printf("worker %ld: did %ld jobs, %ld busy (someone else's), %ld already done\n",
           (long)getpid(), done, busy, already);
    dlock_client_close(client);
    return status;
}
