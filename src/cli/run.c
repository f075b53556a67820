/*
 * run.c — `dlock run [OPTIONS] KEY -- CMD [ARG...]`: hold KEY while CMD runs.
 *
 * The life of a run:
 *
 *  1. Signals. Before the library starts any thread, dlock blocks SIGINT,
 *     SIGTERM, SIGHUP, SIGQUIT and SIGCHLD and reads them from a signalfd.
 *     Threads inherit the mask, so no library thread can be picked to run a
 *     default action, and the main thread sees every signal as data.
 *  2. Acquire. dlock_acquire() may wait forever, so a small watcher thread
 *     reads the signalfd meanwhile; a termination signal triggers the
 *     acquire's cancel token and dlock exits 128+N without running CMD.
 *  3. Spawn. fork(); the child joins a new process group, asks for SIGKILL
 *     when dlock dies (PR_SET_PDEATHSIG), gets back the signal dispositions
 *     and mask dlock itself inherited, and execs CMD with DLOCK_KEY and
 *     DLOCK_FENCING_TOKEN in its environment. The environment is built
 *     before fork(): between fork() and exec() a child of a threaded
 *     process may only call async-signal-safe functions (no malloc). An
 *     exec failure travels back as errno through a close-on-exec pipe, so
 *     the parent prints it (127 not found, 126 otherwise, like a shell).
 *  4. Supervise. poll() on the signalfd and on a pipe that the on-lost
 *     callback writes to, with a 100 ms timeout as a backstop for the local
 *     validity clock. Termination signals are forwarded to CMD's group.
 *     Lock trouble: renewal failing and validity down to --grace → SIGTERM
 *     to the group; lock no longer held → SIGKILL. Then dlock exits 79, so
 *     nothing of CMD runs unprotected and the caller knows.
 *  5. Release after CMD exited; a failed release is reported but does not
 *     change the exit status (the TTL frees the lock).
 *
 * PR_SET_PDEATHSIG fires when the *thread* that forked exits, not the
 * process: the main thread forks, and it lives until dlock exits.
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* How often the supervise loop looks at the lock's local validity at the
 * latest. The on-lost callback wakes it at once; this bounds the delay for
 * the --grace SIGTERM, which no callback announces. */
#define CHECK_INTERVAL_MS 100

#define DEFAULT_TTL_MS (30 * 1000)
#define DEFAULT_GRACE_MS (5 * 1000)

/* Signals dlock passes on to CMD's process group. */
static const int forwarded_signals[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };

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
    sigset_t handled;      /* blocked, read from sfd */
    sigset_t orig_mask;    /* the mask dlock started with, for CMD */
    sigset_t ignored;      /* dispositions inherited as SIG_IGN, for CMD */
    int mask_changed;
    struct sigaction orig_chld;
    int sfd;               /* signalfd for `handled` */
    int lost_pipe[2];      /* on-lost callback → supervise loop */
    dlock_cancel *cancel;
    dlock_client *client;
    dlock_lock *lock;
    char **envp;           /* CMD's environment; entries below are owned */
    char *env_owned[2];
    pid_t pid;             /* CMD, also its process group id */
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
          "dlock dies, CMD gets SIGKILL.\n"
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

/* Step 1: note what dlock inherited (for CMD), make sure SIGCHLD is not
 * ignored (else children are reaped behind our back and waitpid fails),
 * block the handled signals, open the signalfd and the lost pipe. Returns
 * 0 or an exit status. */
static int setup_signals(run_ctx *c)
{
    struct sigaction dfl;
    size_t i;
    int sig;

    sigemptyset(&c->ignored);
    for (sig = 1; sig < NSIG; sig++) {
        struct sigaction sa;
        if (sigaction(sig, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN)
            sigaddset(&c->ignored, sig);
    }
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGCHLD, &dfl, &c->orig_chld);

    sigemptyset(&c->handled);
    for (i = 0; i < sizeof forwarded_signals / sizeof forwarded_signals[0]; i++)
        sigaddset(&c->handled, forwarded_signals[i]);
    sigaddset(&c->handled, SIGCHLD);
    if (pthread_sigmask(SIG_BLOCK, &c->handled, &c->orig_mask) != 0) {
        cli_err("cannot block signals");
        return CLI_EX_SOFTWARE;
    }
    c->mask_changed = 1;
    c->sfd = signalfd(-1, &c->handled, SFD_CLOEXEC | SFD_NONBLOCK);
    if (c->sfd < 0 || pipe2(c->lost_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        cli_err("cannot set up signal handling: %s", strerror(errno));
        return CLI_EX_SOFTWARE;
    }
    return 0;
}

/* The watcher thread of step 2. It lives only while dlock waits for the
 * lock: it reads the signalfd and, on a termination signal, records it and
 * cancels the acquire. A byte on `stop_fd` ends it. */
typedef struct watcher {
    int sfd;
    int stop_fd;
    dlock_cancel *cancel;
    atomic_int signo;
} watcher;

static void *watcher_main(void *arg)
{
    watcher *w = arg;
    struct pollfd p[2];

    p[0].fd = w->sfd;
    p[0].events = POLLIN;
    p[1].fd = w->stop_fd;
    p[1].events = POLLIN;
    for (;;) {
        struct signalfd_siginfo si;

        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return NULL;
        }
        if (p[1].revents != 0)
            return NULL;
        while (read(w->sfd, &si, sizeof si) == (ssize_t)sizeof si) {
            if ((int)si.ssi_signo != SIGCHLD) {
                atomic_store(&w->signo, (int)si.ssi_signo);
                dlock_cancel_trigger(w->cancel);
                return NULL;
            }
        }
    }
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
        cli_report(c->o.key, rc, detail);
        return cli_exit_for(rc);
    }
}

/* Step 2: open the client and acquire the lock while the watcher thread
 * keeps an ear on signals. Returns 0 with c->lock held; otherwise c->lock
 * is NULL and the return value is the exit status (which can be 0 too, with
 * --conflict-exit-code 0). */
static int acquire(run_ctx *c)
{
    dlock_lock_opts lo = DLOCK_LOCK_OPTS_INIT;
    watcher w;
    pthread_t th;
    int stop[2], rc, ex, sig;
    char b = 'S';
    ssize_t wr;

    rc = dlock_cancel_new(&c->cancel);
    if (rc != 0) {
        cli_report(NULL, rc, dlock_last_errmsg());
        return CLI_EX_SOFTWARE;
    }
    if (pipe2(stop, O_CLOEXEC) != 0) {
        cli_err("pipe: %s", strerror(errno));
        return CLI_EX_SOFTWARE;
    }
    w.sfd = c->sfd;
    w.stop_fd = stop[0];
    w.cancel = c->cancel;
    atomic_init(&w.signo, 0);
    if ((rc = pthread_create(&th, NULL, watcher_main, &w)) != 0) {
        cli_err("cannot start a thread: %s", strerror(rc));
        close(stop[0]);
        close(stop[1]);
        return CLI_EX_SOFTWARE;
    }

    ex = cli_client_open(&c->client, c->g);
    if (ex == 0 && atomic_load(&w.signo) == 0) {
        lo.ttl_ms = c->o.ttl_ms;
        lo.wait_ms = c->o.wait_ms;
        lo.auto_renew = 1;
        lo.on_lost = on_lost;
        lo.on_lost_arg = &c->lost_pipe[1];
        lo.cancel = c->cancel;
        rc = dlock_acquire(&c->lock, c->client, c->o.key, &lo);
        if (rc != 0 && atomic_load(&w.signo) == 0)
            ex = acquire_failed(c, rc, dlock_last_errmsg());
    }

    wr = write(stop[1], &b, 1);
    (void)wr;
    pthread_join(th, NULL);
    close(stop[0]);
    close(stop[1]);

    sig = atomic_load(&w.signo);
    if (sig != 0) {
        /* Interrupted while waiting: do not start CMD. A lock granted at
         * the same instant goes straight back. */
        dlock_release(c->lock);
        c->lock = NULL;
        return 128 + sig;
    }
    return ex;
}

/* A "NAME=value" string, malloc'd, or NULL. */
static char *env_entry(const char *name, const char *value)
{
    size_t n = strlen(name) + 1 + strlen(value) + 1;
    char *s = malloc(n);

    if (s != NULL)
        snprintf(s, n, "%s=%s", name, value);
    return s;
}

/* Does environment entry `e` set variable `name`? */
static int env_is(const char *e, const char *name)
{
    size_t n = strlen(name);

    return strncmp(e, name, n) == 0 && e[n] == '=';
}

/* Build CMD's environment: ours, minus any DLOCK_KEY/DLOCK_FENCING_TOKEN we
 * inherited (a nested dlock must not pass on its parent's), plus ours.
 * Returns 0 or an exit status. */
static int build_env(run_ctx *c)
{
    static const char *const names[] = { "DLOCK_KEY", "DLOCK_FENCING_TOKEN" };
    char token[32];
    size_t n = 0, i, j = 0, k;

    snprintf(token, sizeof token, "%" PRIu64, dlock_lock_fencing_token(c->lock));
    c->env_owned[0] = env_entry(names[0], c->o.key);
    c->env_owned[1] = env_entry(names[1], token);
    while (environ[n] != NULL)
        n++;
    c->envp = calloc(n + 3, sizeof *c->envp);
    if (c->envp == NULL || c->env_owned[0] == NULL || c->env_owned[1] == NULL) {
        cli_err("out of memory");
        return CLI_EX_SOFTWARE;
    }
    for (i = 0; i < n; i++) {
        int ours = 0;
        for (k = 0; k < 2; k++)
            ours |= env_is(environ[i], names[k]);
        if (!ours)
            c->envp[j++] = environ[i];
    }
    c->envp[j++] = c->env_owned[0];
    c->envp[j++] = c->env_owned[1];
    c->envp[j] = NULL;
    return 0;
}

/* The child side of step 3; never returns. Only async-signal-safe calls
 * from fork() to exec(): the parent has other threads, whose locks (malloc's
 * included) may be held forever in this copy of the process. */
static void child_exec(const run_ctx *c, pid_t parent, int err_fd)
{
    struct sigaction sa;
    int sig, e;
    ssize_t r;

    (void)setpgid(0, 0);
    /* If dlock already died, the death signal will never come: check. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) == 0 && getppid() != parent)
        _exit(CLI_EX_SOFTWARE);
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    for (sig = 1; sig < NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP)
            continue;
        sa.sa_handler = sigismember(&c->ignored, sig) == 1 ? SIG_IGN : SIG_DFL;
        (void)sigaction(sig, &sa, NULL); /* fails harmlessly on reserved ones */
    }
    (void)sigprocmask(SIG_SETMASK, &c->orig_mask, NULL);

    execvpe(c->o.cmd[0], c->o.cmd, c->envp);

    e = errno;
    do
        r = write(err_fd, &e, sizeof e);
    while (r < 0 && errno == EINTR);
    _exit(e == ENOENT ? CLI_EX_NOTFOUND : CLI_EX_NOEXEC);
}

/* Step 3: start CMD. Returns 0 (CMD started, or exec failed and the child
 * is exiting 126/127 after we printed why), or an exit status if not even
 * fork() worked. */
static int spawn(run_ctx *c)
{
    pid_t parent = getpid();
    int ep[2], e = 0;
    ssize_t n;

    if (pipe2(ep, O_CLOEXEC) != 0) {
        cli_err("pipe: %s", strerror(errno));
        return CLI_EX_SOFTWARE;
    }
    c->pid = fork();
    if (c->pid < 0) {
        cli_err("fork: %s", strerror(errno));
        close(ep[0]);
        close(ep[1]);
        return CLI_EX_SOFTWARE;
    }
    if (c->pid == 0)
        child_exec(c, parent, ep[1]);

    /* Also here, so that kill(-pid) works even before the child ran. It
     * fails once the child has exec'd, which means it already did it. */
    (void)setpgid(c->pid, c->pid);
    close(ep[1]);
    do
        n = read(ep[0], &e, sizeof e);
    while (n < 0 && errno == EINTR);
    close(ep[0]);
    if (n == (ssize_t)sizeof e) {
        const char *cmd = c->o.cmd[0];
        if (e == ENOENT && strchr(cmd, '/') == NULL)
            cli_key_err(cmd, "command not found");
        else
            cli_key_err(cmd, "%s", strerror(e));
    }
    return 0;
}

/* Look at the lock and act (step 4). Called on every wake-up of the
 * supervise loop; cheap: no round trip. */
static void check_lock(run_ctx *c)
{
    int64_t left;
    int err;
    char d[32];

    if (c->killed)
        return;
    if (!dlock_is_held(c->lock)) {
        (void)kill(-c->pid, SIGKILL);
        c->killed = 1;
        cli_key_err(c->o.key, "lock lost: sending SIGKILL to CMD");
        return;
    }
    if (c->termed)
        return;
    err = dlock_lock_renew_error(c->lock);
    left = dlock_lock_remaining_ms(c->lock);
    if (err != 0 && left <= c->o.grace_ms) {
        (void)kill(-c->pid, SIGTERM);
        c->termed = 1;
        cli_duration_format(d, sizeof d, left);
        cli_key_err(c->o.key, "cannot renew the lock (%s), %s of validity left: "
                              "sending SIGTERM to CMD", dlock_strerror(err), d);
    }
}

/* Pass pending termination signals on to CMD's group. */
static void forward_signals(const run_ctx *c)
{
    struct signalfd_siginfo si;

    while (read(c->sfd, &si, sizeof si) == (ssize_t)sizeof si)
        if ((int)si.ssi_signo != SIGCHLD)
            (void)kill(-c->pid, (int)si.ssi_signo);
}

/* Step 4: wait for CMD, without polling faster than CHECK_INTERVAL_MS.
 * Returns 0 and CMD's wait status in *status, or -1 if CMD cannot be
 * waited for (should not happen; reported). */
static int supervise(run_ctx *c, int *status)
{
    struct pollfd p[2];
    char buf[64];

    p[0].fd = c->sfd;
    p[0].events = POLLIN;
    p[1].fd = c->lost_pipe[0];
    p[1].events = POLLIN;
    for (;;) {
        pid_t r;

        check_lock(c);
        r = waitpid(c->pid, status, WNOHANG);
        if (r == c->pid)
            return 0;
        if (r < 0 && errno != EINTR) {
            cli_err("waitpid: %s", strerror(errno));
            return -1;
        }
        if (poll(p, 2, CHECK_INTERVAL_MS) < 0 && errno != EINTR) {
            cli_err("poll: %s", strerror(errno));
            return -1;
        }
        if (p[0].revents != 0)
            forward_signals(c);
        if (p[1].revents != 0)
            while (read(c->lost_pipe[0], buf, sizeof buf) > 0)
                ;
    }
}

/* Step 5: the exit status from CMD's wait status, and the lost-lock
 * report. */
static int final_status(const run_ctx *c, int status)
{
    int ex = WIFEXITED(status) ? WEXITSTATUS(status)
             : WIFSIGNALED(status) ? 128 + WTERMSIG(status)
                                   : CLI_EX_SOFTWARE;

    if (!c->termed && !c->killed)
        return ex;
    if (WIFSIGNALED(status))
        cli_key_err(c->o.key, "the lock was lost while CMD ran; CMD ended by signal %d (%s)",
                    WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        cli_key_err(c->o.key, "the lock was lost while CMD ran; CMD exited with status %d", ex);
    return CLI_EX_LOST;
}

/* Release what is left, in an order that keeps the on-lost callback's pipe
 * open for as long as the library may call it. */
static void cleanup(run_ctx *c)
{
    dlock_release(c->lock);
    dlock_client_close(c->client);
    dlock_cancel_free(c->cancel);
    if (c->sfd >= 0)
        close(c->sfd);
    if (c->lost_pipe[0] >= 0)
        close(c->lost_pipe[0]);
    if (c->lost_pipe[1] >= 0)
        close(c->lost_pipe[1]);
    free(c->envp);
    free(c->env_owned[0]);
    free(c->env_owned[1]);
    if (c->mask_changed) {
        sigaction(SIGCHLD, &c->orig_chld, NULL);
        pthread_sigmask(SIG_SETMASK, &c->orig_mask, NULL);
    }
}

/* `dlock run`: the five steps described at the top of the file. */
int cli_cmd_run(const cli_globals *g, int argc, char **argv)
{
    run_ctx c;
    int ex, status = 0, rc;

    memset(&c, 0, sizeof c);
    c.g = g;
    c.sfd = -1;
    c.lost_pipe[0] = c.lost_pipe[1] = -1;
    ex = parse_args(&c.o, argc, argv);
    if (ex >= 0)
        return ex;

    /* From here on the lock is held exactly when c.lock is set: a failed
     * acquire may legitimately return 0 (--conflict-exit-code 0). */
    ex = setup_signals(&c);
    if (ex == 0)
        ex = acquire(&c);
    if (c.lock == NULL)
        goto out;
    if (!dlock_is_held(c.lock)) {
        cli_key_err(c.o.key, "the lock was lost before CMD could start");
        ex = CLI_EX_LOST;
    }
    if (ex == 0)
        ex = build_env(&c);
    if (ex == 0)
        ex = spawn(&c);
    if (ex == 0) {
        if (supervise(&c, &status) != 0) {
            (void)kill(-c.pid, SIGKILL);
            ex = CLI_EX_SOFTWARE;
        } else {
            ex = final_status(&c, status);
        }
        rc = dlock_release(c.lock);
        c.lock = NULL;
        if (rc != 0 && !c.termed && !c.killed) {
            const char *detail = dlock_last_errmsg();
            if (rc == DLOCK_ENOTHELD)
                cli_key_err(c.o.key, "the lock was no longer held when CMD finished");
            else
                cli_key_err(c.o.key, "release failed (%s); the lock frees itself when its "
                                     "TTL runs out", detail[0] != '\0' ? detail : dlock_strerror(rc));
        }
    }
out:
    cleanup(&c);
    return ex;
}
