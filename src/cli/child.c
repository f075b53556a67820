/*
 * child.c — run CMD as a supervised child: signals, process group,
 * environment, terminal, and waiting without polling.
 *
 * Signals. Before the library starts any thread, dlock blocks SIGINT,
 * SIGTERM, SIGHUP, SIGQUIT and SIGCHLD and reads them from a signalfd.
 * Threads inherit the mask, so no library thread is ever picked to run a
 * default action, and the main thread sees each signal as data. While the
 * main thread blocks in the library (acquire), a watcher thread reads the
 * signalfd instead and turns a termination signal into a cancellation.
 *
 * Spawning. fork(); the child joins a new process group (so signals reach
 * CMD's own children too), asks for SIGKILL when dlock dies
 * (PR_SET_PDEATHSIG), gets back the signal mask and the ignored signals
 * dlock itself inherited (so `dlock run` is transparent, like exec), and
 * execs. The environment is built before fork(): between fork() and exec()
 * the child of a threaded process may only make async-signal-safe calls
 * (no malloc; another thread may have held its lock at fork time). An exec
 * failure comes back as errno through a close-on-exec pipe and the parent
 * reports it like a shell: 127 not found, 126 otherwise.
 *
 * PR_SET_PDEATHSIG fires when the *thread* that forked exits: the main
 * thread forks, and it lives until dlock exits.
 *
 * The terminal. A process group that is not the terminal's foreground
 * group is stopped (SIGTTIN) when it reads the terminal, so an interactive
 * CMD (a prompt, an editor) would hang. When dlock is the foreground job,
 * CMD's group is therefore made the foreground group (tcsetpgrp) and dlock
 * takes the terminal back after CMD exits, as a shell does. Ctrl-C then
 * reaches CMD directly. Ctrl-Z stops CMD; dlock notices (WUNTRACED), takes
 * the terminal back and stops its own process group the same way, so the
 * shell sees the job as stopped; on `fg` it hands the terminal over again
 * and continues CMD. While dlock is stopped it renews nothing: a lock that
 * outlives its TTL in that state is lost, and CMD is killed on resume.
 * SIGTTOU stays blocked in dlock so that tcsetpgrp() from the background is
 * allowed. Without a controlling terminal (cron, CI, services) none of this
 * applies.
 *
 * Waiting. poll() on the signalfd and on the wake pipe, which library
 * callbacks (lock lost) write to, with a 100 ms timeout as a backstop for
 * checks that no event announces (a validity clock running down).
 */
#include "cli.h"
#include "child.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

extern char **environ;

/* The longest the wait loop sleeps between two checks. */
#define CHECK_INTERVAL_MS 100

/* Signals dlock passes on to CMD's process group. */
static const int forwarded_signals[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };

/* See child.h. Nothing here allocates; the library is not called. */
int cli_child_init(cli_child *ch)
{
    sigset_t blocked;
    struct sigaction dfl;
    size_t i;
    int sig;

    memset(ch, 0, sizeof *ch);
    ch->sfd = ch->tty_fd = -1;
    ch->wake[0] = ch->wake[1] = -1;
    ch->watch_stop[0] = ch->watch_stop[1] = -1;

    sigemptyset(&ch->ignored);
    for (sig = 1; sig < NSIG; sig++) {
        struct sigaction sa;
        if (sigaction(sig, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN)
            sigaddset(&ch->ignored, sig);
    }
    /* An inherited SIG_IGN for SIGCHLD would make the kernel reap CMD
     * behind our back, and waitpid() would never see its status. */
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGCHLD, &dfl, &ch->orig_chld);

    sigemptyset(&ch->handled);
    for (i = 0; i < sizeof forwarded_signals / sizeof forwarded_signals[0]; i++)
        sigaddset(&ch->handled, forwarded_signals[i]);
    sigaddset(&ch->handled, SIGCHLD);
    blocked = ch->handled;
    sigaddset(&blocked, SIGTTOU);
    if (pthread_sigmask(SIG_BLOCK, &blocked, &ch->orig_mask) != 0) {
        sigaction(SIGCHLD, &ch->orig_chld, NULL);
        cli_err("cannot block signals");
        return CLI_EX_SOFTWARE;
    }
    ch->initialised = 1;
    ch->sfd = signalfd(-1, &ch->handled, SFD_CLOEXEC | SFD_NONBLOCK);
    if (ch->sfd < 0 || pipe2(ch->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        cli_err("cannot set up signal handling: %s", strerror(errno));
        return CLI_EX_SOFTWARE;
    }
    return 0;
}

int cli_child_wake_fd(const cli_child *ch)
{
    return ch->wake[1];
}

/* The watcher thread: wait for a termination signal (or the stop byte);
 * record it and trigger the cancel token. */
static void *watch_main(void *arg)
{
    cli_child *ch = arg;
    struct pollfd p[2];

    p[0].fd = ch->sfd;
    p[0].events = POLLIN;
    p[1].fd = ch->watch_stop[0];
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
        while (read(ch->sfd, &si, sizeof si) == (ssize_t)sizeof si) {
            if ((int)si.ssi_signo != SIGCHLD) {
                atomic_store(&ch->watch_signo, (int)si.ssi_signo);
                dlock_cancel_trigger(ch->watch_cancel);
                return NULL;
            }
        }
    }
}

int cli_child_watch_start(cli_child *ch, dlock_cancel *cancel)
{
    int rc;

    atomic_init(&ch->watch_signo, 0);
    ch->watch_cancel = cancel;
    if (pipe2(ch->watch_stop, O_CLOEXEC) != 0) {
        cli_err("pipe: %s", strerror(errno));
        return CLI_EX_SOFTWARE;
    }
    rc = pthread_create(&ch->watch_thread, NULL, watch_main, ch);
    if (rc != 0) {
        cli_err("cannot start a thread: %s", strerror(rc));
        return CLI_EX_SOFTWARE;
    }
    ch->watching = 1;
    return 0;
}

int cli_child_watch_signal(cli_child *ch)
{
    return atomic_load(&ch->watch_signo);
}

int cli_child_watch_stop(cli_child *ch)
{
    char b = 'S';
    ssize_t r;

    if (ch->watching) {
        r = write(ch->watch_stop[1], &b, 1);
        (void)r;
        pthread_join(ch->watch_thread, NULL);
        ch->watching = 0;
    }
    return atomic_load(&ch->watch_signo);
}

/* Length of the NAME part of a "NAME=value" entry. */
static size_t env_name_len(const char *e)
{
    const char *eq = strchr(e, '=');

    return eq != NULL ? (size_t)(eq - e) : strlen(e);
}

/* See child.h. A removal is kept as a bare "NAME" entry: build_envp()
 * drops the inherited NAME for it and adds nothing. */
int cli_child_setenv(cli_child *ch, const char *name, const char *value)
{
    size_t n = strlen(name) + 1 + (value != NULL ? strlen(value) + 1 : 0);
    char *e;

    if (ch->n_env == CLI_CHILD_MAX_ENV) {
        cli_err("internal error: too many environment variables for CMD");
        return CLI_EX_SOFTWARE;
    }
    e = malloc(n);
    if (e == NULL) {
        cli_err("out of memory");
        return CLI_EX_SOFTWARE;
    }
    if (value != NULL)
        snprintf(e, n, "%s=%s", name, value);
    else
        snprintf(e, n, "%s", name);
    ch->env[ch->n_env++] = e;
    return 0;
}

/* CMD's environment: ours without the variables set or removed by
 * cli_child_setenv() (a nested dlock must not pass on its parent's
 * DLOCK_KEY, nor a DLOCK_SLOT that is not its own), then those set. */
static int build_envp(cli_child *ch)
{
    size_t n = 0, i, j = 0;
    int k;

    while (environ[n] != NULL)
        n++;
    ch->envp = calloc(n + (size_t)ch->n_env + 1, sizeof *ch->envp);
    if (ch->envp == NULL) {
        cli_err("out of memory");
        return CLI_EX_SOFTWARE;
    }
    for (i = 0; i < n; i++) {
        size_t len = env_name_len(environ[i]);
        int replaced = 0;
        for (k = 0; k < ch->n_env && !replaced; k++)
            replaced = env_name_len(ch->env[k]) == len && strncmp(environ[i], ch->env[k], len) == 0;
        if (!replaced)
            ch->envp[j++] = environ[i];
    }
    for (k = 0; k < ch->n_env; k++)
        if (strchr(ch->env[k], '=') != NULL)
            ch->envp[j++] = ch->env[k];
    ch->envp[j] = NULL;
    return 0;
}

/* The child between fork() and exec(); never returns. Async-signal-safe
 * calls only (see the top of the file). */
static void child_exec(const cli_child *ch, char **argv, pid_t parent, int err_fd, int give_tty)
{
    struct sigaction sa;
    int sig, e;
    ssize_t r;

    (void)setpgid(0, 0);
    if (give_tty)
        (void)tcsetpgrp(ch->tty_fd, getpid()); /* SIGTTOU is blocked: allowed */
    /* If dlock died before this, the death signal will never come. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) == 0 && getppid() != parent)
        _exit(CLI_EX_SOFTWARE);
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    for (sig = 1; sig < NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP)
            continue;
        sa.sa_handler = sigismember(&ch->ignored, sig) == 1 ? SIG_IGN : SIG_DFL;
        (void)sigaction(sig, &sa, NULL); /* fails harmlessly on reserved ones */
    }
    (void)sigprocmask(SIG_SETMASK, &ch->orig_mask, NULL);

    execvpe(argv[0], argv, ch->envp);

    e = errno;
    do
        r = write(err_fd, &e, sizeof e);
    while (r < 0 && errno == EINTR);
    _exit(e == ENOENT ? CLI_EX_NOTFOUND : CLI_EX_NOEXEC);
}

/* See child.h. */
int cli_child_spawn(cli_child *ch, char **argv)
{
    pid_t parent = getpid();
    int ep[2], e = 0, give_tty = 0, ex;
    ssize_t n;

    ex = build_envp(ch);
    if (ex != 0)
        return ex;
    ch->tty_fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (ch->tty_fd >= 0)
        give_tty = tcgetpgrp(ch->tty_fd) == getpgrp();
    if (pipe2(ep, O_CLOEXEC) != 0) {
        cli_err("pipe: %s", strerror(errno));
        return CLI_EX_SOFTWARE;
    }
    ch->pid = fork();
    if (ch->pid < 0) {
        cli_err("fork: %s", strerror(errno));
        ch->pid = 0;
        close(ep[0]);
        close(ep[1]);
        return CLI_EX_SOFTWARE;
    }
    if (ch->pid == 0)
        child_exec(ch, argv, parent, ep[1], give_tty);

    /* Also in the parent, so that kill(-pid) and tcsetpgrp work before the
     * child got to it; harmless failures once it has. */
    (void)setpgid(ch->pid, ch->pid);
    if (give_tty) {
        (void)tcsetpgrp(ch->tty_fd, ch->pid);
        ch->tty_given = 1;
    }
    close(ep[1]);
    do
        n = read(ep[0], &e, sizeof e);
    while (n < 0 && errno == EINTR);
    close(ep[0]);
    if (n == (ssize_t)sizeof e) {
        if (e == ENOENT && strchr(argv[0], '/') == NULL)
            cli_key_err(argv[0], "command not found");
        else
            cli_key_err(argv[0], "%s", strerror(e));
    }
    return 0;
}

/* See child.h. SIGCHLD is in the signalfd's set too (for cli_child_wait);
 * with no CMD running it means nothing and is skipped. */
int cli_child_signal_wait(cli_child *ch, int timeout_ms, int fd, int *fd_ready)
{
    struct pollfd p[2];
    struct signalfd_siginfo si;
    int n;

    if (fd_ready != NULL)
        *fd_ready = 0;
    p[0].fd = ch->sfd;
    p[0].events = POLLIN;
    p[1].fd = fd;
    p[1].events = POLLIN;
    n = poll(p, fd >= 0 ? 2 : 1, timeout_ms);
    if (n < 0 && errno != EINTR) {
        cli_err("poll: %s", strerror(errno));
        return -1;
    }
    if (n <= 0)
        return 0; /* timed out, or EINTR: the caller's loop comes back */
    while (read(ch->sfd, &si, sizeof si) == (ssize_t)sizeof si)
        if ((int)si.ssi_signo != SIGCHLD)
            return (int)si.ssi_signo;
    if (fd >= 0 && p[1].revents != 0 && fd_ready != NULL)
        *fd_ready = 1;
    return 0;
}

void cli_child_kill(const cli_child *ch, int sig)
{
    if (ch->pid > 0)
        (void)kill(-ch->pid, sig);
}

/* Pass pending termination signals on to CMD's group. */
static void forward_signals(const cli_child *ch)
{
    struct signalfd_siginfo si;

    while (read(ch->sfd, &si, sizeof si) == (ssize_t)sizeof si)
        if ((int)si.ssi_signo != SIGCHLD)
            cli_child_kill(ch, (int)si.ssi_signo);
}

/* CMD was stopped (WUNTRACED). From a terminal's job control (Ctrl-Z, or
 * terminal I/O from the background), do what the shell expects: take the
 * terminal back, stop our own process group with SIGTSTP, and once
 * continued hand the terminal over again (if we are in the foreground) and
 * continue CMD. Anything else (a plain SIGSTOP from someone) is left
 * alone: CMD stays stopped, the lock stays renewed. */
static void job_stopped(cli_child *ch, int stopsig)
{
    if (ch->tty_fd < 0 || stopsig == SIGSTOP)
        return;
    if (tcgetpgrp(ch->tty_fd) == ch->pid)
        (void)tcsetpgrp(ch->tty_fd, getpgrp());
    (void)kill(0, SIGTSTP); /* we stop here until continued */
    if (tcgetpgrp(ch->tty_fd) == getpgrp()) {
        (void)tcsetpgrp(ch->tty_fd, ch->pid);
        ch->tty_given = 1;
    }
    cli_child_kill(ch, SIGCONT);
}

/* See child.h. After CMD is reaped its pid may be reused by anyone, so it
 * is forgotten at once (cli_child_kill then does nothing). On an error CMD
 * is killed: it must never run on unsupervised. */
int cli_child_wait(cli_child *ch, cli_child_check_fn check, void *arg, int *status)
{
    struct pollfd p[2];
    char buf[64];

    p[0].fd = ch->sfd;
    p[0].events = POLLIN;
    p[1].fd = ch->wake[0];
    p[1].events = POLLIN;
    for (;;) {
        pid_t r;

        check(ch, arg);
        r = waitpid(ch->pid, status, WNOHANG | WUNTRACED);
        if (r == ch->pid && WIFSTOPPED(*status)) {
            job_stopped(ch, WSTOPSIG(*status));
            continue;
        }
        if (r == ch->pid) {
            if (ch->tty_given && tcgetpgrp(ch->tty_fd) == ch->pid)
                (void)tcsetpgrp(ch->tty_fd, getpgrp());
            ch->tty_given = 0;
            ch->pid = 0;
            return 0;
        }
        if ((r < 0 && errno != EINTR) || (poll(p, 2, CHECK_INTERVAL_MS) < 0 && errno != EINTR)) {
            cli_err("%s: %s", r < 0 ? "waitpid" : "poll", strerror(errno));
            cli_child_kill(ch, SIGKILL); /* unsupervised, CMD must not go on */
            (void)waitpid(ch->pid, status, 0);
            ch->pid = 0;
            return -1;
        }
        if (p[0].revents != 0)
            forward_signals(ch);
        if (p[1].revents != 0)
            while (read(ch->wake[0], buf, sizeof buf) > 0)
                ;
    }
}

int cli_child_exit_status(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return CLI_EX_SOFTWARE;
}

/* See child.h. If CMD is still running here (an error path), it is killed:
 * it must not outlive the lock it was started under. Termination signals
 * still pending are dropped before the mask is restored: CMD is gone, and
 * dlock is about to exit with CMD's status, which they must not replace. */
void cli_child_cleanup(cli_child *ch)
{
    struct signalfd_siginfo si;
    int k, status;

    if (ch->pid > 0) {
        cli_child_kill(ch, SIGKILL);
        (void)waitpid(ch->pid, &status, 0);
        if (ch->tty_given && tcgetpgrp(ch->tty_fd) == ch->pid)
            (void)tcsetpgrp(ch->tty_fd, getpgrp());
        ch->pid = 0;
    }
    cli_child_watch_stop(ch);
    if (ch->watch_stop[0] >= 0)
        close(ch->watch_stop[0]);
    if (ch->watch_stop[1] >= 0)
        close(ch->watch_stop[1]);
    if (ch->sfd >= 0) {
        while (read(ch->sfd, &si, sizeof si) == (ssize_t)sizeof si)
            ;
        close(ch->sfd);
    }
    if (ch->wake[0] >= 0)
        close(ch->wake[0]);
    if (ch->wake[1] >= 0)
        close(ch->wake[1]);
    if (ch->tty_fd >= 0)
        close(ch->tty_fd);
    free(ch->envp);
    for (k = 0; k < ch->n_env; k++)
        free(ch->env[k]);
    if (ch->initialised) {
        sigaction(SIGCHLD, &ch->orig_chld, NULL);
        pthread_sigmask(SIG_SETMASK, &ch->orig_mask, NULL);
    }
    memset(ch, 0, sizeof *ch);
    ch->sfd = ch->tty_fd = -1;
    ch->wake[0] = ch->wake[1] = ch->watch_stop[0] = ch->watch_stop[1] = -1;
}
