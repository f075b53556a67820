/*
 * recipe_payment.c — process payment ID once, whichever worker gets it.
 *
 * 1. Try-lock "payment:ID": if another worker holds it, that worker is on
 *    the job; answer "busy" (exit 75) instead of waiting.
 * 2. Check dlock_is_held() (no round trip) just before paying.
 * 3. Pay through the store WITH the lock's fencing token. The store does
 *    nothing if the payment was already made (by an earlier holder), and
 *    refuses a token smaller than the largest it has accepted.
 *
 * Why step 3 needs the token: step 2 is not enough. A process can be paused
 * right after the check (GC, swapping, SIGSTOP, a VM migration) for longer
 * than the TTL; its lock expires, another worker takes it and pays; then the
 * first one wakes up and writes. Only the store can refuse that write, and
 * the token tells it an old holder from a new one. --pause simulates exactly
 * this: the worker stops itself (SIGSTOP) between the check and the write.
 *
 * The toy store is a file, "FENCE PAID", updated under flock(2) so that its
 * check-and-write is atomic, like
 *     UPDATE payments SET paid = 1, fence = :token
 *      WHERE id = :id AND paid = 0 AND fence <= :token
 *
 *   recipe_payment URL|- ID STORE_FILE [TTL_MS] [--pause]     (TTL_MS: 10000)
 *
 * Exit: 0 paid now or already paid, 75 busy, 3 refused by the store (stale
 * token), 1 error. URL: argv[1], or $DLOCK_URL, or redis://127.0.0.1:6379.
 */
#define _DEFAULT_SOURCE /* flock */

#include <dlock.h>

#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

static const char *pick_url(const char *arg) {
    const char *env = getenv("DLOCK_URL");
    if (arg && *arg && strcmp(arg, "-") != 0) return arg;
    return env && *env ? env : "redis://127.0.0.1:6379";
}

static int fail(const char *what, int rc) {
    const char *detail = dlock_last_errmsg();
    fprintf(stderr, "recipe_payment: %s: %s%s%s%s\n", what, dlock_strerror(rc),
            *detail ? " (" : "", detail, *detail ? ")" : "");
    return 1;
}

/* The store: pay, unless already paid or the token is older than the last
 * one it accepted. 0 paid now, 2 already paid, 3 refused (stale token), -1
 * error. *fence: the last token accepted. */
static int store(const char *path, uint64_t token, uint64_t *fence) {
    char buf[64] = "";
    int fd = open(path, O_RDWR | O_CREAT, 0644), paid = 0, rc = 0;
    if (fd < 0) return -1;
    ssize_t n = flock(fd, LOCK_EX) == 0 ? pread(fd, buf, sizeof buf - 1, 0) : -1;
    *fence = 0;
    if (n > 0) sscanf(buf, "%" SCNu64 " %d", fence, &paid);
    if (n < 0) {
        rc = -1;
    } else if (token < *fence) {
        rc = 3; /* a holder older than one the store already heard from */
    } else if (paid) {
        rc = 2;
    } else {
        *fence = token;
        int len = snprintf(buf, sizeof buf, "%" PRIu64 " 1\n", token);
        if (pwrite(fd, buf, (size_t)len, 0) != len || ftruncate(fd, len) != 0) rc = -1;
    }
    return close(fd) == 0 ? rc : -1; /* closing also unlocks */
}

int main(int argc, char **argv) {
    int pause = argc > 4 && strcmp(argv[argc - 1], "--pause") == 0;
    if (argc - pause < 4 || argc - pause > 5) {
        fprintf(stderr, "usage: recipe_payment URL|- ID STORE_FILE [TTL_MS] [--pause]\n");
        return 64;
    }
    const char *url = pick_url(argv[1]), *id = argv[2], *path = argv[3];
    char key[DLOCK_KEY_MAX + 1];
    int rc = dlock_keyf(key, sizeof key, "payment:%s", id), status = 0;
    if (rc != 0) return fail("key", rc);

    dlock_client *client;
    if ((rc = dlock_client_open(&client, url, NULL)) != 0) return fail(url, rc);
    dlock_lock_opts opts = DLOCK_LOCK_OPTS_INIT;
    opts.ttl_ms = argc - pause > 4 ? strtoll(argv[4], NULL, 10) : 10000;
    dlock_lock *lock;
    rc = dlock_try_acquire(&lock, client, key, &opts); /* 1: try-lock */
    if (rc != 0) {
        if (rc == DLOCK_EBUSY) printf("payment %s: busy, another worker is on it\n", id);
        else fail(key, rc);
        dlock_client_close(client);
        return rc == DLOCK_EBUSY ? 75 : 1;
    }

    uint64_t token = dlock_lock_fencing_token(lock), fence;
    if (!dlock_is_held(lock)) { /* 2: cheap check, catches most late holders */
        printf("payment %s: lock lost before paying, not paying\n", id);
    } else {
        if (pause) { /* simulate a pause between the check and the write */
            printf("payment %s: pid %ld pausing before the write\n", id, (long)getpid());
            fflush(stdout);
            raise(SIGSTOP);
        }
        status = store(path, token, &fence); /* 3: fenced, idempotent write */
        if (status == 0) printf("payment %s: paid with token %" PRIu64 "\n", id, token);
        if (status == 2) printf("payment %s: already paid, nothing to do\n", id);
        if (status == 3)
            printf("payment %s: store refused token %" PRIu64 ": it has seen %" PRIu64 "\n", id,
                   token, fence);
        if (status < 0) perror(path);
    }
    rc = dlock_release(lock); /* DLOCK_ENOTHELD if it had expired meanwhile */
    dlock_client_close(client);
    if (status == 3 || status < 0) return status < 0 ? 1 : 3;
    return rc == 0 || rc == DLOCK_ENOTHELD ? 0 : fail("release", rc);
}
