/*
 * run.c — `dlock run [OPTIONS] KEY... -- CMD [ARG...]`: hold a lock while
 * CMD runs; and the engine that `dlock elect` (elect.c) runs on too.
 *
 * What is held depends on the options, and only step 3 differs:
 *
 *     dlock run KEY                 the mutex KEY          dlock_acquire
 *     dlock run --shared KEY        KEY's read side        dlock_rw_acquire(READ)
 *     dlock run --limit N KEY       one of N permits       dlock_sem_acquire
 *     ... --limit N --permits K     K of N permits         dlock_sem_acquire_n
 *     dlock run KEY1 KEY2 ...       all KEYs, or none      dlock_acquire_all
 *     dlock elect KEY               leadership of KEY      dlock_campaign
 *     dlock run --rate N/D KEY      a slot, nothing held   dlock_rate_acquire
 *
 * Whatever is held is one dlock_lock handle, auto-renewed and lost-signalled
 * the same way, so the rest of the life of a run is the same for all. A
 * --rate run holds nothing: it waits for its slot, then runs CMD with no
 * lock to watch. A nested run (held.c) whose KEYs an outer run of the same
 * process tree holds runs at once under that hold: it only asks the server
 * whether the outer hold still stands, before CMD and after; with several
 * KEYs of which the outer run holds some, it acquires the others.
 *
 *  1. Parse (run_args.c). Everything after "--" is CMD, untouched.
 *  2. Signals (child.c): blocked and read from a signalfd before the
 *     library starts its threads.
 *  3. Acquire (what no outer run holds). The call may wait forever; meanwhile child.c's watcher
 *     thread turns SIGINT/SIGTERM/... into a cancellation, and dlock exits
 *     128+N without running CMD. Busy or timed out → 75 (or
 *     --conflict-exit-code); unreachable/auth → 69; bad input → 64; else 70.
 *  4. Spawn CMD (child.c) with DLOCK_KEY and DLOCK_FENCING_TOKEN (the first
 *     key's), DLOCK_KEYS and DLOCK_FENCING_TOKENS (all of them, in the
 *     order given, duplicates once), for permits DLOCK_SLOT and
 *     DLOCK_PERMITS, and DLOCK_HELD (what is held, for nested runs).
 *  5. Supervise. child.c waits for CMD and forwards signals; check_lock()
 *     below runs on every wake-up (the on-lost callback writes to the wake
 *     pipe; otherwise every 100 ms): renewal failing and validity down to
 *     --grace → SIGTERM to CMD's group; lock no longer held → SIGKILL. In
 *     either case dlock exits 79 once CMD is gone, so nothing of CMD runs
 *     unprotected and the caller knows.
 *  6. Release after CMD exited. A failed release is reported but does not
 *     change the exit status (the TTL frees the lock). A nested run
 *     releases nothing; it looks whether the outer hold lasted (else 79).
 *  7. --metrics-file: the client's metrics (dlock_metrics_write) go to the
 *     file, whatever the outcome, as long as a client was opened. Written
 *     to PATH.tmp.<pid> and renamed, so node_exporter's textfile collector
 *     never reads half a file. A failure is reported and, like a failed
 *     release, does not change the exit status.
 */

#include "cli.h"
#include "child.h"
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "run.h"

static void lock_err(const run_ctx *c, const char *fmt, ...) CLI_PRINTF(2, 3);
static void lock_err(const run_ctx *c, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cli_keys_err(c->o.key, c->o.nkeys - 1, "%s", msg);
}

/* The on-lost callback, on the library's watchdog thread: wake the
 * supervise loop. write() to a non-blocking pipe is all it does; a full
 * pipe already means "wake up". */
static void on_lost(dlock_lock *lock, void *arg)
{
    const int *fd = arg;
    char b = 'L';
    ssize_t r;

    (void)lock;
    r = write(*fd, &b, 1);
    (void)r;
}

/* What is held, in messages: "lock", "locks", "permit", "leadership". */
static const char *held_noun(const run_ctx *c)
{
    switch (c->o.hold) {
    case HOLD_PERMIT:
        return "permit";
    case HOLD_ALL:
        return "locks";
    case HOLD_LEADER:
        return "leadership";
    default:
        return "lock";
    }
}

/* The exit status and message for a failed acquire. Busy and timed out are
 * answers rather than failures (-q silences them), and their message names
 * who holds the lock (busy.c), or for --rate when the next slot is; the
 * rest are errors. */
static int acquire_failed(const run_ctx *c, int rc, const char *detail)
{
    cli_busy b;

    if (rc != DLOCK_EBUSY && rc != DLOCK_ETIMEDOUT)
        return cli_fail(c->o.key, rc, detail);
    if (!c->g->quiet && c->o.hold == HOLD_RATE) {
        cli_report(c->o.key, rc, detail, NULL);
    } else if (!c->g->quiet) {
        memset(&b, 0, sizeof b);
        b.keys = c->acq_keys;
        b.nkeys = c->nacq;
        b.kind = c->o.hold == HOLD_PERMIT ? DLOCK_KIND_SEMAPHORE : DLOCK_KIND_MUTEX;
        b.limit = c->o.limit;
        b.permits = c->o.permits;
        b.leader = c->o.hold == HOLD_LEADER;
        b.shared = c->o.hold == HOLD_SHARED;
        b.waited_ms = rc == DLOCK_ETIMEDOUT ? c->o.wait_ms : -1;
        cli_report_busy(c->client, &b);
    }
    return c->o.conflict_exit;
}

/* The library call of step 3 for what this run holds (the keys no outer
 * run holds). */
static int acquire_call(run_ctx *c, const dlock_lock_opts *lo)
{
    switch (c->o.hold) {
    case HOLD_SHARED:
        return dlock_rw_acquire(&c->lock, c->client, c->o.key, DLOCK_READ, lo);
    case HOLD_PERMIT:
        return dlock_sem_acquire_n(&c->lock, c->client, c->o.key, c->o.limit, c->o.permits, lo);
    case HOLD_ALL:
        return dlock_acquire_all(&c->lock, c->client, c->acq_keys, c->nacq, lo);
    case HOLD_LEADER:
        return dlock_campaign(&c->lock, c->client, c->o.key, lo);
    case HOLD_RATE:
        /* burst N: N starts at once are within N per D */
        return dlock_rate_acquire(c->client, c->o.key, c->o.rate_count, c->o.rate_period_ms,
                                  c->o.rate_count, c->o.wait_ms, c->cancel);
    default:
        return dlock_acquire(&c->lock, c->client, c->o.key, lo);
    }
}

/* See run.h. */
char run_held_kind(const run_ctx *c)
{
    return c->o.hold == HOLD_SHARED ? 'r' : c->o.hold == HOLD_PERMIT ? 's' : 'w';
}

/* Nested runs: which KEYs (each once) an outer run of this process tree
 * holds for us (held.c); the others go to acq_keys. Returns 0 or an exit
 * status. */
static int find_cover(run_ctx *c)
{
    size_t i, k;
    int ex;

    c->nacq = 0;
    c->ncovered = 0;
    if (c->o.hold == HOLD_RATE) { /* a slot is taken each time: never nested */
        c->acq_keys[c->nacq++] = c->o.key;
        return 0;
    }
    if ((ex = cli_held_load(&c->held, c->g->quiet)) != 0)
        return ex;
    cli_url_display(c->url_id, sizeof c->url_id, c->g->url);
    c->prefix = c->g->prefix != NULL ? c->g->prefix : DEFAULT_PREFIX;
    for (i = 0; i < c->o.nkeys; i++) {
        for (k = 0; k < i && strcmp(c->o.keys[k], c->o.keys[i]) != 0; k++)
            ;
        c->cover[i] = k < i ? NULL
                            : cli_held_cover(&c->held, c->url_id, c->prefix, c->o.keys[i],
                                             run_held_kind(c), c->o.limit, c->o.permits);
        if (c->cover[i] != NULL)
            c->ncovered++;
        else if (k == i)
            c->acq_keys[c->nacq++] = c->o.keys[i];
    }
    return 0;
}

/* Ask the server whether each outer hold we run under still stands:
 * before CMD (`after` 0: a hold gone means CMD does not start) and after
 * it (1: CMD was not protected to the end). Returns 0, CLI_EX_LOST
 * (reported), or before CMD an error's exit status; after CMD an error is
 * only reported (as a failed release is). */
static int check_outer(run_ctx *c, int after)
{
    size_t i;
    int r;

    for (i = 0; i < c->o.nkeys; i++) {
        const cli_held_entry *e = c->cover[i];
        if (e == NULL)
            continue;
        r = cli_held_still(c->client, e);
        if (r < 0 && after) {
            cli_report(e->key, r, dlock_last_errmsg(),
                       "could not check that the outer run still holds it");
            continue;
        }
        if (r < 0)
            return cli_fail(e->key, r, dlock_last_errmsg());
        if (r == 0 && !after) {
            cli_key_err(e->key,
                        "the outer 'dlock run' (pid %ld) no longer holds the %s (fencing token "
                        "%" PRIu64 "): lost, expired or force-unlocked; CMD not started",
                        e->pid, held_noun(c), e->fence);
            return CLI_EX_LOST;
        }
        if (r == 0) {
            cli_key_err(e->key,
                        "the outer 'dlock run' (pid %ld) no longer held the %s (fencing token "
                        "%" PRIu64 ") when CMD finished: lost while CMD ran",
                        e->pid, held_noun(c), e->fence);
            return CLI_EX_LOST;
        }
    }
    return 0;
}

/* Step 3: open the client and acquire what no outer run holds while the
 * watcher thread keeps an ear on signals. Returns 0 with c->lock held or
 * c->ran_free set (a --rate slot, or everything held by outer runs);
 * otherwise the return value is the exit status (which can be 0 too, with
 * --conflict-exit-code 0). */
static int acquire(run_ctx *c)
{
    dlock_lock_opts lo = DLOCK_LOCK_OPTS_INIT;
    int rc, ex, sig;

    rc = dlock_cancel_new(&c->cancel);
    if (rc != 0)
        return cli_fail(NULL, rc, dlock_last_errmsg());
    ex = cli_child_watch_start(&c->child, c->cancel);
    if (ex != 0)
        return ex;

    ex = cli_client_open(&c->client, c->g);
    if (ex == 0 && c->ncovered > 0)
        ex = check_outer(c, 0);
    if (ex == 0 && c->nacq == 0) {
        c->ran_free = 1; /* nested: all of it is held by outer runs */
    } else if (ex == 0 && cli_child_watch_signal(&c->child) == 0) {
        c->wake_fd = cli_child_wake_fd(&c->child);
        lo.ttl_ms = c->o.ttl_ms;
        lo.wait_ms = c->o.wait_ms;
        lo.auto_renew = 1;
        lo.on_lost = on_lost;
        lo.on_lost_arg = &c->wake_fd;
        lo.cancel = c->cancel;
        rc = acquire_call(c, &lo);
        if (rc == 0 && c->o.hold == HOLD_RATE)
            c->ran_free = 1;
        if (rc != 0 && cli_child_watch_signal(&c->child) == 0)
            ex = acquire_failed(c, rc, dlock_last_errmsg());
    }

    sig = cli_child_watch_stop(&c->child);
    if (sig != 0) {
        /* Interrupted while waiting: do not start CMD. A lock granted at
         * the same instant goes straight back. */
        dlock_release(c->lock);
        c->lock = NULL;
        c->ran_free = 0;
        return 128 + sig;
    }
    return ex;
}

/* A nested run: its outer runs renew what it runs under. One that is gone
 * (killed with SIGKILL: its CMD, which started us, may be gone too, but we
 * are not) renews nothing any more, so CMD is stopped as if the lock were
 * lost (exit 79). Gone means no longer an ancestor: this also holds while
 * the dead dlock is a zombie, and whatever process reuses its pid. */
static void check_outer_alive(cli_child *ch, run_ctx *c)
{
    for (size_t i = 0; i < c->o.nkeys; i++) {
        const cli_held_entry *e = c->cover[i];
        if (e == NULL || cli_held_outer_alive(e))
            continue;
        cli_child_kill(ch, SIGKILL);
        c->killed = 1;
        cli_key_err(e->key,
                    "the outer 'dlock run' (pid %ld) is gone: nothing renews the %s; "
                    "sending SIGKILL to CMD",
                    e->pid, held_noun(c));
        return;
    }
}

/* Step 5, called by cli_child_wait() on every wake-up: look at the lock
 * and act. Cheap: no round trip. A --rate run has nothing to watch. A
 * nested run watches that its outer runs live: an outer run watches its
 * own lock and stops its whole CMD, this dlock included, when it is lost,
 * but an outer run killed with SIGKILL cannot. */
static void check_lock(cli_child *ch, void *arg)
{
    run_ctx *c = arg;
    int64_t left;
    int err;
    char d[32];

    if (c->killed)
        return;
    if (c->lock == NULL) {
        check_outer_alive(ch, c);
        return;
    }
    if (!dlock_is_held(c->lock)) {
        cli_child_kill(ch, SIGKILL);
        c->killed = 1;
        lock_err(c, "%s lost: sending SIGKILL to CMD", held_noun(c));
        return;
    }
    if (c->termed)
        return;
    err = dlock_lock_renew_error(c->lock);
    left = dlock_lock_remaining_ms(c->lock);
    if (err != 0 && left <= c->o.grace_ms) {
        cli_child_kill(ch, SIGTERM);
        c->termed = 1;
        cli_duration_format(d, sizeof d, left);
        lock_err(c, "cannot renew the %s (%s), %s of validity left: sending SIGTERM to CMD",
                 held_noun(c), dlock_strerror(err), d);
    }
}

/* Step 6: the exit status from CMD's wait status, and the lost-lock
 * report. */
static int final_status(const run_ctx *c, int status)
{
    int ex = cli_child_exit_status(status);

    if (!c->termed && !c->killed)
        return ex;
    if (WIFSIGNALED(status))
        lock_err(c, "the %s was lost while CMD ran; CMD ended by signal %d (%s)", held_noun(c),
                 WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        lock_err(c, "the %s was lost while CMD ran; CMD exited with status %d", held_noun(c), ex);
    return CLI_EX_LOST;
}

/* Steps 4 to 6, with the lock held (or a --rate slot taken, or nested
 * under outer holds). Returns the exit status. */
static int run_cmd(run_ctx *c)
{
    const char *detail;
    int ex, status = 0, rc;

    if (c->lock != NULL && !dlock_is_held(c->lock)) {
        lock_err(c, "the %s was lost before CMD could start", held_noun(c));
        return CLI_EX_LOST;
    }
    ex = run_set_env(c);
    if (ex == 0)
        ex = cli_child_spawn(&c->child, c->o.cmd);
    if (ex != 0)
        return ex;

    if (cli_child_wait(&c->child, check_lock, c, &status) != 0)
        ex = CLI_EX_SOFTWARE;
    else
        ex = final_status(c, status);
    if (c->ncovered > 0 && !c->termed && !c->killed && check_outer(c, 1) == CLI_EX_LOST)
        ex = CLI_EX_LOST;
    if (c->lock == NULL)
        return ex;

    rc = dlock_release(c->lock);
    detail = dlock_last_errmsg();
    c->lock = NULL;
    /* After lock trouble the release's outcome says nothing new. A lock
     * found gone at the release was lost while CMD ran (taken over,
     * force-unlocked, or expired unnoticed): CMD was not protected to the
     * end, which is what exit 79 says. */
    if (rc == DLOCK_ENOTHELD && !c->termed && !c->killed) {
        lock_err(c, "the %s was no longer held when CMD finished: lost while CMD ran",
                 held_noun(c));
        ex = CLI_EX_LOST;
    } else if (rc != 0 && rc != DLOCK_ENOTHELD && !c->termed && !c->killed)
        cli_report(c->o.key, rc, detail, "the lock frees itself when its TTL runs out");
    return ex;
}

/* See cli.h: the steps described at the top of the file. The client is
 * closed before child.c's pipes: the on-lost callback may write to the wake
 * pipe until then. */
int cli_run_command(const cli_globals *g, int argc, char **argv, int elect)
{
    run_ctx c;
    int ex;

    memset(&c, 0, sizeof c);
    c.g = g;
    ex = run_parse_args(&c.o, argc, argv, elect);
    if (ex >= 0)
        return ex;

    ex = cli_child_init(&c.child);
    if (ex == 0)
        ex = find_cover(&c);
    if (ex == 0)
        ex = acquire(&c);
    /* The lock is held exactly when c.lock is set: a failed acquire may
     * return 0 (--conflict-exit-code 0). */
    if (c.lock != NULL || c.ran_free)
        ex = run_cmd(&c);

    dlock_release(c.lock);
    if (c.o.metrics_file != NULL && c.client != NULL)
        cli_write_metrics_file(c.client, c.o.metrics_file);
    dlock_client_close(c.client);
    dlock_cancel_free(c.cancel);
    cli_child_cleanup(&c.child);
    cli_held_free(&c.held);
    return ex;
}

/* `dlock run`. */
int cli_cmd_run(const cli_globals *g, int argc, char **argv)
{
    return cli_run_command(g, argc, argv, 0);
}
