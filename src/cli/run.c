/*
 * run.c — `dlock run [OPTIONS] KEY -- CMD [ARG...]`: hold KEY while CMD runs.
 *
 * The life of a run:
 *
 *  1. Parse. Everything after "--" is CMD, untouched.
 *  2. Signals (child.c): blocked and read from a signalfd before the
 *     library starts its threads.
 *  3. Acquire. dlock_acquire() may wait forever; meanwhile child.c's
 *     watcher thread turns SIGINT/SIGTERM/... into a cancellation, and dlock
 *     exits 128+N without running CMD. Busy or timed out → 75 (or
 *     --conflict-exit-code); unreachable/auth → 69; bad input → 64; else 70.
 *  4. Spawn CMD (child.c) with DLOCK_KEY and DLOCK_FENCING_TOKEN.
 *  5. Supervise. child.c waits for CMD and forwards signals; check_lock()
 *     below runs on every wake-up (the on-lost callback writes to the wake
 *     pipe; otherwise every 100 ms): renewal failing and validity down to
 *     --grace → SIGTERM to CMD's group; lock no longer held → SIGKILL. In
 *     either case dlock exits 79 once CMD is gone, so nothing of CMD runs
 *     unprotected and the caller knows.
 *  6. Release after CMD exited. A failed release is reported but does not
 *     change the exit status (the TTL frees the lock).
 */
#include "cli.h"
#include "child.h"

#include <inttypes.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEFAULT_TTL_MS (30 * 1000)
#define DEFAULT_GRACE_MS (5 * 1000)

typedef struct run_opts {
    int64_t ttl_ms;
    int64_t wait_ms;       /* DLOCK_WAIT_FOREVER, 0 (--no-wait) or > 0 */
    int64_t grace_ms;
    int conflict_exit;     /* exit status when the lock is not acquired */
    const char *key;
    char **cmd;            /* NULL-terminated, points into argv */
} run_opts;

typedef struct run_ctx {
    const cli_globals *g;
    run_opts o;
    cli_child child;
    int wake_fd;           /* child.c's wake pipe, for the on-lost callback */
    dlock_cancel *cancel;
    dlock_client *client;
    dlock_lock *lock;
    int termed;            /* SIGTERM sent because of lock trouble */
    int killed;            /* SIGKILL sent because the lock was lost */
} run_ctx;

enum { R_TTL = 1, R_WAIT, R_NO_WAIT, R_GRACE, R_CONFLICT, R_HELP };

static const cli_opt run_opts_table[] = {
    { "ttl", 0, 1, R_TTL },
    { "wait", 0, 1, R_WAIT },
    { "no-wait", 0, 0, R_NO_WAIT },
    { "grace", 0, 1, R_GRACE },
    { "conflict-exit-code", 0, 1, R_CONFLICT },
    { "help", 'h', 0, R_HELP },
    { NULL, 0, 0, 0 },
};

void cli_usage_run(FILE *out)
{
    fputs("Usage: dlock run [OPTIONS] KEY -- CMD [ARG...]\n"
          "\n"
          "Hold the lock KEY while CMD runs: wait for the lock, start CMD, keep the lock\n"
          "alive in the background while CMD runs, release it when CMD exits. Only one\n"
          "holder of KEY runs at a time, across all machines using the same Redis.\n"
          "dlock's exit status is CMD's.\n"
          "\n"
          "Options (before '--'):\n"
          "      --ttl D                 lock time-to-live (default 30s). The lock is renewed\n"
          "                              while CMD runs; the TTL bounds how long a crashed\n"
          "                              dlock keeps others waiting.\n"
          "      --wait D                wait at most D for the lock, then exit 75\n"
          "                              (default: wait as long as it takes)\n"
          "      --no-wait               one attempt: exit 75 at once if KEY is held\n"
          "      --grace D               if renewal keeps failing, CMD gets SIGTERM when D of\n"
          "                              the lock's validity is left, SIGKILL when none is\n"
          "                              (default 5s, or a third of --ttl if that is less;\n"
          "                              must be shorter than --ttl)\n"
          "      --conflict-exit-code N  exit N (0-255) instead of 75 when the lock is not\n"
          "                              acquired\n"
          "  -h, --help                  show this help\n"
          "\n"
          "One KEY for now (several keys will mean all-or-nothing, later).\n"
          "\n"
          "CMD's environment:\n"
          "  DLOCK_KEY            the key\n"
          "  DLOCK_FENCING_TOKEN  a number that grows with every acquisition of KEY; pass\n"
          "                       it to what you protect, and let it refuse writes that\n"
          "                       carry a smaller token than it has seen (a stale holder)\n"
          "\n"
          "CMD runs in its own process group. SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to\n"
          "dlock are passed on to that group; the lock is released after CMD exits. If\n"
          "dlock dies, CMD gets SIGKILL. At a terminal CMD gets the terminal, so it can\n"
          "prompt, and Ctrl-C reaches it; Ctrl-Z stops CMD and dlock (a stopped dlock\n"
          "renews nothing: stopped for longer than --ttl, the lock is lost).\n"
          "\n"
          "Exit status:\n"
          "  CMD's    CMD ran; 128+N if signal N ended it\n"
          "  64       usage error or invalid argument\n"
          "  69       Redis unreachable or authentication failed\n"
          "  70       internal error or unexpected reply\n"
          "  75       lock not acquired: busy with --no-wait, or --wait ran out\n"
          "  79       the lock was lost while CMD ran; CMD got SIGTERM and/or SIGKILL\n"
          "  126/127  CMD could not be run / was not found\n"
          "  128+N    dlock got signal N while waiting for the lock (CMD never started)\n"
          "\n"
          "Examples:\n"
          "  dlock run nightly-backup -- /usr/local/bin/backup.sh\n"
          "  dlock run --no-wait \"job:$id\" -- ./process \"$id\"   # 75: another worker has it\n"
          "  dlock run --wait 10s --ttl 1m deploy -- sh -c 'make && make deploy'\n",
          out);
}

/* Parse a duration option's value into *out; prints and returns -1 if bad. */
static int duration_opt(int64_t *out, const cli_optstate *st)
{
    const char *why;

    if (cli_duration_parse(out, st->arg, &why) != 0) {
        cli_usage_error(st->prog, "%s '%s': %s", st->opt, st->arg, why);
        return -1;
    }
    return 0;
}

/* Parse argv into o. Returns -1 to go on, or an exit status: 0 after
 * --help, 64 after a usage error (printed). KEYs and options may be mixed
 * before the "--"; everything after it is CMD, untouched. */
static int parse_args(run_opts *o, int argc, char **argv)
{
    cli_optstate st;
    int dd, i, id, nkeys = 0, wait_set = 0, no_wait = 0, grace_set = 0;
    long n;

    o->ttl_ms = DEFAULT_TTL_MS;
    o->wait_ms = DLOCK_WAIT_FOREVER;
    o->grace_ms = DEFAULT_GRACE_MS;
    o->conflict_exit = CLI_EX_TEMPFAIL;

    /* Find "--" first: without it, CMD's own options ("ls -l") would be
     * reported as unknown options of ours, which misleads. */
    for (dd = 1; dd < argc && strcmp(argv[dd], "--") != 0; dd++)
        ;
    if (dd == argc) {
        for (i = 1; i < argc; i++) {
            if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
                cli_usage_run(stdout);
                return CLI_EX_OK;
            }
        }
        return cli_usage_error("dlock run", "missing '--' between KEY and CMD "
                                            "(dlock run KEY -- CMD [ARG...])");
    }

    memset(&st, 0, sizeof st);
    st.argc = dd;
    st.argv = argv;
    st.ind = 1;
    st.prog = "dlock run";
    while ((id = cli_opt_next(&st, run_opts_table)) != CLI_OPT_END) {
        switch (id) {
        case R_TTL:
            if (duration_opt(&o->ttl_ms, &st) != 0)
                return CLI_EX_USAGE;
            break;
        case R_WAIT:
            if (duration_opt(&o->wait_ms, &st) != 0)
                return CLI_EX_USAGE;
            wait_set = 1;
            break;
        case R_NO_WAIT:
            no_wait = 1;
            break;
        case R_GRACE:
            if (duration_opt(&o->grace_ms, &st) != 0)
                return CLI_EX_USAGE;
            grace_set = 1;
            break;
        case R_CONFLICT:
            if (cli_parse_long(&n, st.arg, 0, 255) != 0)
                return cli_usage_error(st.prog, "--conflict-exit-code '%s': "
                                                "expected a number from 0 to 255", st.arg);
            o->conflict_exit = (int)n;
            break;
        case R_HELP:
            cli_usage_run(stdout);
            return CLI_EX_OK;
        case CLI_OPT_POSITIONAL:
            if (nkeys++ == 0)
                o->key = st.arg;
            break;
        default:
            return CLI_EX_USAGE;
        }
    }
    o->cmd = argv + dd + 1;

    if (nkeys == 0)
        return cli_usage_error(st.prog, "missing KEY before '--'");
    if (nkeys > 1)
        return cli_usage_error(st.prog, "several keys are not supported yet");
    if (o->cmd[0] == NULL)
        return cli_usage_error(st.prog, "missing CMD after '--'");
    if (wait_set && no_wait)
        return cli_usage_error(st.prog, "--wait and --no-wait exclude each other");
    if (no_wait)
        o->wait_ms = 0;
    if (o->ttl_ms <= 0)
        return cli_usage_error(st.prog, "--ttl must be more than 0");
    /* A short --ttl alone must not trip over the default --grace: the
     * default shrinks to a third of the TTL (the renewal interval). */
    if (!grace_set && o->grace_ms >= o->ttl_ms)
        o->grace_ms = o->ttl_ms / 3;
    if (o->grace_ms >= o->ttl_ms) {
        char g[32], t[32];
        cli_duration_format(g, sizeof g, o->grace_ms);
        cli_duration_format(t, sizeof t, o->ttl_ms);
        return cli_usage_error(st.prog, "--grace (%s) must be shorter than --ttl (%s)", g, t);
    }
    return -1;
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

/* The exit status and message for a failed acquire. Busy and timed out are
 * answers rather than failures (-q silences them); the rest are errors. */
static int acquire_failed(const run_ctx *c, int rc, const char *detail)
{
    char d[32];

    switch (rc) {
    case DLOCK_EBUSY:
        if (!c->g->quiet)
            cli_key_err(c->o.key, "lock is busy");
        return c->o.conflict_exit;
    case DLOCK_ETIMEDOUT:
        if (!c->g->quiet) {
            cli_duration_format(d, sizeof d, c->o.wait_ms);
            cli_key_err(c->o.key, "lock still busy after waiting %s", d);
        }
        return c->o.conflict_exit;
    default:
        cli_report(c->o.key, rc, detail, NULL);
        return cli_exit_for(rc);
    }
}

/* Step 3: open the client and acquire the lock while the watcher thread
 * keeps an ear on signals. Returns 0 with c->lock held; otherwise c->lock
 * is NULL and the return value is the exit status (which can be 0 too, with
 * --conflict-exit-code 0). */
static int acquire(run_ctx *c)
{
    dlock_lock_opts lo = DLOCK_LOCK_OPTS_INIT;
    int rc, ex, sig;

    rc = dlock_cancel_new(&c->cancel);
    if (rc != 0) {
        cli_report(NULL, rc, dlock_last_errmsg(), NULL);
        return CLI_EX_SOFTWARE;
    }
    ex = cli_child_watch_start(&c->child, c->cancel);
    if (ex != 0)
        return ex;

    ex = cli_client_open(&c->client, c->g);
    if (ex == 0 && cli_child_watch_signal(&c->child) == 0) {
        c->wake_fd = cli_child_wake_fd(&c->child);
        lo.ttl_ms = c->o.ttl_ms;
        lo.wait_ms = c->o.wait_ms;
        lo.auto_renew = 1;
        lo.on_lost = on_lost;
        lo.on_lost_arg = &c->wake_fd;
        lo.cancel = c->cancel;
        rc = dlock_acquire(&c->lock, c->client, c->o.key, &lo);
        if (rc != 0 && cli_child_watch_signal(&c->child) == 0)
            ex = acquire_failed(c, rc, dlock_last_errmsg());
    }

    sig = cli_child_watch_stop(&c->child);
    if (sig != 0) {
        /* Interrupted while waiting: do not start CMD. A lock granted at
         * the same instant goes straight back. */
        dlock_release(c->lock);
        c->lock = NULL;
        return 128 + sig;
    }
    return ex;
}

/* Step 5, called by cli_child_wait() on every wake-up: look at the lock
 * and act. Cheap: no round trip. */
static void check_lock(cli_child *ch, void *arg)
{
    run_ctx *c = arg;
    int64_t left;
    int err;
    char d[32];

    if (c->killed)
        return;
    if (!dlock_is_held(c->lock)) {
        cli_child_kill(ch, SIGKILL);
        c->killed = 1;
        cli_key_err(c->o.key, "lock lost: sending SIGKILL to CMD");
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
        cli_key_err(c->o.key, "cannot renew the lock (%s), %s of validity left: "
                              "sending SIGTERM to CMD", dlock_strerror(err), d);
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
        cli_key_err(c->o.key, "the lock was lost while CMD ran; CMD ended by signal %d (%s)",
                    WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        cli_key_err(c->o.key, "the lock was lost while CMD ran; CMD exited with status %d", ex);
    return CLI_EX_LOST;
}

/* Steps 4 to 6, with the lock held. Returns the exit status. */
static int run_locked(run_ctx *c)
{
    char token[32];
    const char *detail;
    int ex, status = 0, rc;

    if (!dlock_is_held(c->lock)) {
        cli_key_err(c->o.key, "the lock was lost before CMD could start");
        return CLI_EX_LOST;
    }
    snprintf(token, sizeof token, "%" PRIu64, dlock_lock_fencing_token(c->lock));
    ex = cli_child_setenv(&c->child, "DLOCK_KEY", c->o.key);
    if (ex == 0)
        ex = cli_child_setenv(&c->child, "DLOCK_FENCING_TOKEN", token);
    if (ex == 0)
        ex = cli_child_spawn(&c->child, c->o.cmd);
    if (ex != 0)
        return ex;

    if (cli_child_wait(&c->child, check_lock, c, &status) != 0)
        ex = CLI_EX_SOFTWARE;
    else
        ex = final_status(c, status);

    rc = dlock_release(c->lock);
    detail = dlock_last_errmsg();
    c->lock = NULL;
    /* After lock trouble the release's outcome says nothing new. */
    if (rc == DLOCK_ENOTHELD && !c->termed && !c->killed)
        cli_key_err(c->o.key, "the lock was no longer held when CMD finished");
    else if (rc != 0 && rc != DLOCK_ENOTHELD && !c->termed && !c->killed)
        cli_report(c->o.key, rc, detail, "the lock frees itself when its TTL runs out");
    return ex;
}

/* `dlock run`: the steps described at the top of the file. The client is
 * closed before child.c's pipes: the on-lost callback may write to the wake
 * pipe until then. */
int cli_cmd_run(const cli_globals *g, int argc, char **argv)
{
    run_ctx c;
    int ex;

    memset(&c, 0, sizeof c);
    c.g = g;
    ex = parse_args(&c.o, argc, argv);
    if (ex >= 0)
        return ex;

    ex = cli_child_init(&c.child);
    if (ex == 0)
        ex = acquire(&c);
    /* The lock is held exactly when c.lock is set: a failed acquire may
     * return 0 (--conflict-exit-code 0). */
    if (c.lock != NULL)
        ex = run_locked(&c);

    dlock_release(c.lock);
    dlock_client_close(c.client);
    dlock_cancel_free(c.cancel);
    cli_child_cleanup(&c.child);
    return ex;
}
