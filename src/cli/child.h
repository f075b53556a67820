/*
 * child.h — running CMD under dlock's supervision: the part of `dlock run`
 * that `dlock elect` shares. See child.c for the design.
 *
 * Commands that run no CMD but wait until SIGINT/SIGTERM (`leader --watch`,
 * `metrics --listen`, `top`) use the signal part alone: cli_child_init(),
 * then either the watcher (a signal cancels a blocked library call) or
 * cli_child_signal_wait(), then cli_child_cleanup().
 *
 * Order of calls:
 *   cli_child_init()          before the library starts any thread
 *   cli_child_watch_start()   while blocking in the library (acquire,
 *   cli_child_watch_stop()    campaign): signals cancel the wait
 *   cli_child_setenv()...     CMD's extra environment
 *   cli_child_spawn()
 *   cli_child_wait()          with a check function (lock still held?)
 *   cli_child_cleanup()       always, also after a failure; after the
 *                             library client is closed (the wake pipe must
 *                             outlive callbacks that write to it)
 */
#ifndef DLOCK_CLI_CHILD_H
#define DLOCK_CLI_CHILD_H

#include <signal.h>
#include <stdatomic.h>
#include <pthread.h>
#include <sys/types.h>

#include <dlock.h>

#define CLI_CHILD_MAX_ENV 12

typedef struct cli_child {
    sigset_t handled;   /* blocked and read from sfd */
    sigset_t orig_mask; /* the mask dlock started with: CMD gets it */
    sigset_t ignored;   /* inherited as SIG_IGN: CMD gets them so */
    struct sigaction orig_chld;
    int initialised;
    int sfd;                      /* signalfd for `handled` */
    int wake[2];                  /* a byte on wake[1] wakes cli_child_wait() */
    int tty_fd;                   /* controlling terminal, or -1 */
    int tty_given;                /* CMD's group is the terminal's foreground */
    char *env[CLI_CHILD_MAX_ENV]; /* "NAME=value", owned */
    int n_env;
    char **envp; /* CMD's environment, built by spawn */
    pid_t pid;   /* CMD, also its process group id; 0 = none */
    /* signal watcher while the library blocks */
    pthread_t watch_thread;
    int watch_stop[2];
    int watching;
    dlock_cancel *watch_cancel;
    atomic_int watch_signo;
} cli_child;

/* Save what dlock inherited, block SIGINT/SIGTERM/SIGHUP/SIGQUIT/SIGCHLD
 * (and SIGTTOU) and open the signalfd and the wake pipe. Returns 0 or an
 * exit status (reported). */
int cli_child_init(cli_child *ch);

/* The fd that wakes cli_child_wait() when a byte is written to it, e.g.
 * from a library callback on another thread. */
int cli_child_wake_fd(const cli_child *ch);

/* Start / stop the watcher thread: while it runs, a termination signal
 * triggers `cancel`. Stop returns the signal that arrived, or 0. */
int cli_child_watch_start(cli_child *ch, dlock_cancel *cancel);
int cli_child_watch_stop(cli_child *ch);

/* The termination signal the watcher has seen so far, or 0 (any thread). */
int cli_child_watch_signal(cli_child *ch);

/* Set NAME=value in CMD's environment (replacing an inherited NAME), or
 * with value NULL remove an inherited NAME. Returns 0 or an exit status
 * (reported). */
int cli_child_setenv(cli_child *ch, const char *name, const char *value);

/* Fork and exec argv (PATH search). Returns 0 once CMD runs, or once the
 * child is on its way out with 126/127 after an exec failure (reported),
 * or an exit status if no child could be made. */
int cli_child_spawn(cli_child *ch, char **argv);

/* Called by cli_child_wait() at least every 100 ms and whenever woken; it
 * may call cli_child_kill(). */
typedef void (*cli_child_check_fn)(cli_child *ch, void *arg);

/* Wait for CMD to end, forwarding termination signals to its group and
 * calling check(). Returns 0 with CMD's wait status in *status, or -1
 * (reported) if CMD could not be waited for; CMD was then killed. */
int cli_child_wait(cli_child *ch, cli_child_check_fn check, void *arg, int *status);

/* Wait at most timeout_ms (-1: no limit) for a termination signal
 * (SIGINT, SIGTERM, SIGHUP, SIGQUIT) or, if fd >= 0, for fd to become
 * readable (*fd_ready is then set to 1, else 0). Returns the signal's
 * number, 0 when the time ran out or fd is readable, or -1 if poll()
 * failed (reported). Not while the watcher runs (it reads the same
 * signals). */
int cli_child_signal_wait(cli_child *ch, int timeout_ms, int fd, int *fd_ready);

/* Send `sig` to CMD's process group. */
void cli_child_kill(const cli_child *ch, int sig);

/* Close everything, restore dlock's signal state; safe after a partial
 * init. */
void cli_child_cleanup(cli_child *ch);

/* The exit status for a wait status: N for exit(N), 128+N for signal N. */
int cli_child_exit_status(int status);

#endif /* DLOCK_CLI_CHILD_H */
