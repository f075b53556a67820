/*
 * proc.c — processes: forked helpers (dh_fork) and programs run in the
 * background or to completion (dh_spawn, dh_run), with bounded waits.
 *
 * Design. Every child the harness makes is started the same way: fork,
 * PR_SET_PDEATHSIG(SIGKILL) so it dies with the test process even if that
 * process crashes, and (for exec'd programs) every inherited descriptor
 * above stderr closed, so no test socket leaks into a child. Every child is
 * registered (core.c) and taken down by dh_cleanup(); forked helpers also
 * by dh_test_teardown(), so a failed assertion before the test's own kill()
 * leaves nothing behind for the next test.
 *
 * Forking a process that has threads is unsafe: the child inherits any
 * lock another thread held at that instant (a sanitizer allocator's, for
 * one) and can hang on it. A dlock client has threads (watchdog, wake-up
 * listener), so a test forks its helpers before it opens any client;
 * dh_fork() refuses to fork a process that has more threads than it had
 * when the harness first looked, which catches a test written the other
 * way round at once instead of as a rare hang.
 *
 * dh_fork_call is the forked helper most tests want: it waits for the
 * test's word on a pipe, makes one dlock call with a client of its own and
 * reports the result in shared memory (a dh_slot), never through cmocka.
 *
 * Spawned programs run in their own process group (a timeout kills the
 * whole group) with stdout and stderr in files of the run's temp dir.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

struct dh_proc {
    pid_t pid;
    int done;
    int status;
    char out_path[DH_PATH_MAX];
    char err_path[DH_PATH_MAX];
};

int dh__decode_status(int st)
{
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return DH_RUN_ERROR;
}

void dh__child_prepare(pid_t parent)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);
    /* Default signal dispositions and an empty mask for the new program. */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
}

void dh__close_from_3(void)
{
    if (close_range(3, ~0U, 0) != 0) {
        for (int fd = 3; fd < 4096; fd++)
            close(fd);
    }
}

int dh_waitpid(pid_t pid, int *status, int timeout_ms)
{
    int64_t start = dh_now_ms(), deadline = start + timeout_ms;
    for (;;) {
        int st;
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid) {
            dh__reg_del_fork(pid);
            *status = dh__decode_status(st);
            return 1;
        }
        if (w < 0 && errno != EINTR)
            return -1;
        int64_t now = dh_now_ms();
        if (now >= deadline)
            return 0;
        dh__nap_ms(now - start < 200 ? 1 : 5);
    }
}

int dh_wait_children(const pid_t *pids, int n, int timeout_ms)
{
    int64_t deadline = dh_now_ms() + timeout_ms;
    int ok = 1;
    for (int i = 0; i < n; i++) {
        int64_t left = deadline - dh_now_ms();
        int st = -1;
        int r = dh_waitpid(pids[i], &st, left > 0 ? (int)left : 0);
        if (r != 1 || st != 0) {
            fprintf(stderr, "harness: helper %d (pid %d) %s %d\n", i, (int)pids[i],
                    r == 1 ? "exited with" : "still ran at the bound, wait result",
                    r == 1 ? st : r);
            ok = 0;
        }
    }
    return ok;
}

char dh_pid_state(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (dh_read_file(buf, sizeof buf, path) <= 0)
        return 0;
    /* "pid (comm) S ...": the state follows the last ')'. */
    const char *p = strrchr(buf, ')');
    if (!p || !p[1] || !p[2])
        return 0;
    return p[2];
}

int dh_pid_dead(pid_t pid)
{
    char st = dh_pid_state(pid);
    return st == 0 || st == 'Z' || st == 'X';
}

/* The number of threads of this process (/proc/self/status), or -1. */
static int thread_count(void)
{
    char buf[4096];
    if (dh_read_file(buf, sizeof buf, "/proc/self/status") <= 0)
        return -1;
    const char *t = strstr(buf, "\nThreads:");
    return t ? atoi(t + 9) : -1;
}

/* The threads this process has of its own, without any client: counted
 * when the harness is first used, in a group setup, before any test opened
 * a client. ThreadSanitizer's runtime starts a thread of its own with the
 * process's first pthread_create, so a TSan build allows one more (the
 * check stays exact in the other builds, which run the same tests). */
static int base_threads;

#if defined(__SANITIZE_THREAD__)
#define RUNTIME_THREADS 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RUNTIME_THREADS 1
#endif
#endif
#ifndef RUNTIME_THREADS
#define RUNTIME_THREADS 0
#endif

void dh__proc_init(void)
{
    base_threads = thread_count();
}

static int no_extra_threads(void *arg)
{
    (void)arg;
    return thread_count() <= base_threads + RUNTIME_THREADS;
}

pid_t dh_fork(void)
{
    dh__reg_init();
    /* A thread just joined may still count for a moment: wait (bounded). */
    if (!dh_wait_until(no_extra_threads, NULL, 2000)) {
        fprintf(stderr,
                "harness: dh_fork with %d threads running (%d without clients): a child can "
                "inherit a lock another thread holds; fork before opening any client\n",
                thread_count(), base_threads);
        return -1;
    }
    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        return 0;
    }
    if (pid > 0 && dh__reg_add_fork(pid) != 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -1;
    }
    return pid;
}

/* ------------------------------------------------ calls in forked helpers */

dh_slot *dh_slots_new(int n)
{
    void *p = mmap(NULL, (size_t)n * sizeof(dh_slot), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        fail_msg("mmap of %d shared slots failed", n);
    memset(p, 0, (size_t)n * sizeof(dh_slot));
    return p;
}

void dh_slots_free(dh_slot *s, int n)
{
    munmap(s, (size_t)n * sizeof(dh_slot));
}

pid_t dh_fork_call(dh_slot *s, int *go, const char *url, const char *owner,
                   int (*fn)(dlock_client *c, void *arg), void *arg)
{
    int fds[2];
    if (pipe(fds) != 0)
        fail_msg("pipe failed");
    pid_t pid = dh_fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        fail_msg("dh_fork failed");
    }
    if (pid == 0) {
        close(fds[1]);
        char b;
        if (read(fds[0], &b, 1) != 1)
            _exit(1);
        dlock_client *c = dh_client(url, owner);
        if (!c)
            _exit(2);
        atomic_store(&s->state, DH_SLOT_RUNNING);
        s->rc = fn(c, arg);
        snprintf(s->msg, sizeof s->msg, "%s", dlock_last_errmsg());
        dlock_client_close(c);
        atomic_store(&s->state, DH_SLOT_DONE);
        _exit(0);
    }
    close(fds[0]);
    *go = fds[1];
    return pid;
}

int dh_slot_done(void *s)
{
    return atomic_load(&((dh_slot *)s)->state) == DH_SLOT_DONE;
}

void dh_slot_expect(const dh_slot *s, int timeout_ms, int want, const char *what)
{
    if (!dh_wait_until(dh_slot_done, (void *)s, timeout_ms))
        fail_msg("%s: the process did not finish within %d ms", what, timeout_ms);
    if (s->rc != want)
        fail_msg("%s: got %d (%s), want %d; %s", what, s->rc, dlock_strerror(s->rc), want, s->msg);
}

/* ------------------------------------------------------- spawned programs */

/* Build an environment: environ with extra_env applied. The strings are
 * borrowed. Returns a malloc'd NULL-terminated array or NULL. */
static char **build_env(const char *const *extra_env)
{
    size_t ne = 0, nx = 0;
    while (environ[ne])
        ne++;
    while (extra_env && extra_env[nx])
        nx++;
    char **env = calloc(ne + nx + 1, sizeof *env);
    if (!env)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < ne; i++) {
        const char *eq = strchr(environ[i], '=');
        size_t nl = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        int overridden = 0;
        for (size_t j = 0; j < nx; j++) {
            const char *xe = strchr(extra_env[j], '=');
            size_t xl = xe ? (size_t)(xe - extra_env[j]) : strlen(extra_env[j]);
            if (xl == nl && strncmp(environ[i], extra_env[j], nl) == 0)
                overridden = 1;
        }
        if (!overridden)
            env[k++] = environ[i];
    }
    for (size_t j = 0; j < nx; j++)
        if (strchr(extra_env[j], '='))
            env[k++] = (char *)extra_env[j];
    env[k] = NULL;
    return env;
}

/* Open the three descriptors a spawned program gets (stdout and stderr
 * files, /dev/null for stdin) into fds[3]. 0, or -1 with none left open. */
static int open_stdio(int fds[3], const dh_proc *p)
{
    fds[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
    fds[1] = open(p->out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    fds[2] = open(p->err_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fds[0] >= 0 && fds[1] >= 0 && fds[2] >= 0)
        return 0;
    for (int i = 0; i < 3; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    return -1;
}

dh_proc *dh_spawn(const char *const *argv, const char *const *extra_env)
{
    const char *dir = dh__run_dir();
    if (!dir)
        return NULL;
    dh_proc *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    unsigned seq = dh__next_seq();
    snprintf(p->out_path, sizeof p->out_path, "%s/proc-%u.out", dir, seq);
    snprintf(p->err_path, sizeof p->err_path, "%s/proc-%u.err", dir, seq);
    char **env = build_env(extra_env);
    int fds[3];
    if (!env || open_stdio(fds, p) != 0) {
        free(env);
        free(p);
        return NULL;
    }
    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        dh__child_prepare(parent);
        for (int i = 0; i < 3; i++)
            dup2(fds[i], i);
        dh__close_from_3();
        execvpe(argv[0], (char *const *)argv, env);
        _exit(127);
    }
    for (int i = 0; i < 3; i++)
        close(fds[i]);
    free(env);
    if (pid < 0) {
        free(p);
        return NULL;
    }
    setpgid(pid, pid); /* both sides, so no race with a signal to the group */
    p->pid = pid;
    dh__reg_add_proc(p);
    return p;
}

pid_t dh_proc_pid(const dh_proc *p)
{
    return p ? p->pid : -1;
}

int dh_proc_done(dh_proc *p)
{
    if (!p)
        return 1;
    if (p->done)
        return 1;
    int st;
    pid_t w = waitpid(p->pid, &st, WNOHANG);
    if (w == p->pid) {
        p->done = 1;
        p->status = dh__decode_status(st);
        return 1;
    }
    if (w < 0 && errno == ECHILD) {
        p->done = 1;
        p->status = DH_RUN_ERROR;
        return 1;
    }
    return 0;
}

/* SIGKILL the process's group and the process, and reap it. */
static void proc_kill(dh_proc *p)
{
    kill(-p->pid, SIGKILL);
    kill(p->pid, SIGKILL);
    while (waitpid(p->pid, NULL, 0) < 0 && errno == EINTR) {
    }
}

int dh_proc_wait(dh_proc *p, int timeout_ms)
{
    if (!p)
        return DH_RUN_ERROR;
    int64_t start = dh_now_ms(), deadline = start + timeout_ms;
    while (!dh_proc_done(p)) {
        int64_t now = dh_now_ms();
        if (now >= deadline) {
            proc_kill(p);
            p->done = 1;
            p->status = DH_RUN_TIMEOUT;
            break;
        }
        dh__nap_ms(now - start < 200 ? 1 : 5);
    }
    return p->status;
}

int dh_proc_signal(dh_proc *p, int sig)
{
    if (!p || p->done)
        return -1;
    return kill(p->pid, sig) == 0 ? 0 : -1;
}

void dh_proc_output(dh_proc *p, char *out, size_t outlen, char *err, size_t errlen)
{
    if (out && outlen)
        dh_read_file(out, outlen, p->out_path);
    if (err && errlen)
        dh_read_file(err, errlen, p->err_path);
}

void dh_proc_free(dh_proc *p)
{
    if (!p)
        return;
    if (!dh_proc_done(p))
        proc_kill(p);
    unlink(p->out_path);
    unlink(p->err_path);
    dh__reg_del_proc(p);
    free(p);
}

int dh_run(const char *const *argv, const char *const *extra_env, int timeout_ms, char *out,
           size_t outlen, char *err, size_t errlen)
{
    if (out && outlen)
        out[0] = '\0';
    if (err && errlen)
        err[0] = '\0';
    dh_proc *p = dh_spawn(argv, extra_env);
    if (!p)
        return DH_RUN_ERROR;
    int st = dh_proc_wait(p, timeout_ms);
    dh_proc_output(p, out, outlen, err, errlen);
    dh_proc_free(p);
    return st;
}

int dh_sh(const char *cmd, int timeout_ms)
{
    const char *argv[] = { "sh", "-c", cmd, NULL };
    char err[2048];
    int rc = dh_run(argv, NULL, timeout_ms, NULL, 0, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "command failed (%d): %s\n%s\n", rc, cmd, err);
    return rc;
}
