/*
 * core.c — the harness's registry and cleanup, its clock, bounded waiting,
 * and the cmocka hooks every test file uses (group teardown, per-test
 * teardown of forked helpers).
 *
 * Design. The harness owns real processes and sockets, so its one duty
 * besides starting them is to always take them down: every server, socket,
 * background process, forked helper and temp dir goes into a small
 * registry that dh_cleanup() empties, and dh_cleanup() is registered with
 * atexit() on first use. The registry remembers the pid that created it,
 * so a forked test child that exits never tears down its parent's servers.
 *
 * Forked helpers are the delicate part: a pid the test already reaped may
 * belong to someone else a moment later, so the registry only ever signals
 * a pid that waitpid(WNOHANG) shows to be a live child of ours.
 *
 * DLOCK_TEST_FILTER and DLOCK_TEST_SKIP (environment) choose which of a
 * file's tests run, for scripts/mutate.sh and for a person chasing one test.
 *
 * Nothing here sleeps to synchronise: dh_wait_until() polls the real state
 * every 2 ms up to a bound, so a broken library fails a test instead of
 * hanging it.
 */
#include "internal.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DH_MAX_SERVERS 32
#define DH_MAX_FDS 128
#define DH_MAX_PROCS 128

static pid_t reg_owner;
static dh_redis *reg_servers[DH_MAX_SERVERS];
static int reg_fds[DH_MAX_FDS];
static int reg_nfds;
static dh_proc *reg_procs[DH_MAX_PROCS];
static pid_t reg_forks[DH_MAX_PROCS]; /* dh_fork children, 0 = free slot */

/* Running part of a test file: DLOCK_TEST_FILTER=PATTERN runs only the
 * tests whose name matches it, DLOCK_TEST_SKIP=PATTERN leaves out those that
 * match (cmocka's wildcards: * and ?). scripts/mutate.sh runs only the tests
 * that should catch a mutation this way. Set before main() runs. */
__attribute__((constructor)) static void dh__filter_from_env(void)
{
    const char *only = getenv("DLOCK_TEST_FILTER"), *skip = getenv("DLOCK_TEST_SKIP");
    if (only && only[0])
        cmocka_set_test_filter(only);
    if (skip && skip[0])
        cmocka_set_skip_filter(skip);
}

void dh__reg_init(void)
{
    if (reg_owner == 0) {
        reg_owner = getpid();
        atexit(dh_cleanup);
        dh__proc_init();
        dh__remove_stale_dirs();
    }
}

/* Put p into the first free entry of table (n entries); complain if none. */
static void table_add(void **table, int n, void *p, const char *what)
{
    for (int i = 0; i < n; i++)
        if (!table[i]) {
            table[i] = p;
            return;
        }
    fprintf(stderr, "harness: too many %s\n", what);
}

static void table_del(void **table, int n, const void *p)
{
    for (int i = 0; i < n; i++)
        if (table[i] == p)
            table[i] = NULL;
}

void dh__reg_add_server(dh_redis *r)
{
    table_add((void **)reg_servers, DH_MAX_SERVERS, r, "servers");
}

void dh__reg_del_server(dh_redis *r)
{
    table_del((void **)reg_servers, DH_MAX_SERVERS, r);
}

void dh__reg_add_proc(dh_proc *p)
{
    table_add((void **)reg_procs, DH_MAX_PROCS, p, "processes");
}

void dh__reg_del_proc(dh_proc *p)
{
    table_del((void **)reg_procs, DH_MAX_PROCS, p);
}

void dh__reg_add_fd(int fd)
{
    if (reg_nfds < DH_MAX_FDS)
        reg_fds[reg_nfds++] = fd;
    else
        fprintf(stderr, "harness: too many sockets\n");
}

/* Take down forked helper pid if it is still a live child of ours: SIGKILL
 * (and SIGCONT, for a stopped one), then reap it. A pid that is no longer
 * our child (reaped elsewhere) is only forgotten, never signalled. */
static void fork_down(pid_t pid)
{
    pid_t w;
    while ((w = waitpid(pid, NULL, WNOHANG)) < 0 && errno == EINTR) {
    }
    if (w == 0) {
        kill(pid, SIGKILL);
        kill(pid, SIGCONT);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
        }
    }
}

int dh__reg_add_fork(pid_t pid)
{
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < DH_MAX_PROCS; i++)
            if (reg_forks[i] == 0) {
                reg_forks[i] = pid;
                return 0;
            }
        /* Full: forget the helpers that have ended (zombies included: the
         * test may still reap them for their status). */
        for (int i = 0; i < DH_MAX_PROCS; i++)
            if (dh_pid_dead(reg_forks[i]))
                reg_forks[i] = 0;
    }
    fprintf(stderr, "harness: too many forked helpers\n");
    return -1;
}

void dh__reg_del_fork(pid_t pid)
{
    for (int i = 0; i < DH_MAX_PROCS; i++)
        if (reg_forks[i] == pid)
            reg_forks[i] = 0;
}

void dh_reap_forks(void)
{
    if (reg_owner == 0 || getpid() != reg_owner)
        return;
    for (int i = 0; i < DH_MAX_PROCS; i++)
        if (reg_forks[i] > 0) {
            fork_down(reg_forks[i]);
            reg_forks[i] = 0;
        }
}

void dh_cleanup(void)
{
    if (reg_owner == 0 || getpid() != reg_owner)
        return; /* never tear down from a forked child */
    dh_reap_forks();
    for (int i = 0; i < DH_MAX_PROCS; i++)
        if (reg_procs[i])
            dh_proc_free(reg_procs[i]);
    for (int i = 0; i < DH_MAX_SERVERS; i++)
        if (reg_servers[i])
            dh_redis_stop(reg_servers[i]);
    for (int i = 0; i < reg_nfds; i++)
        close(reg_fds[i]);
    reg_nfds = 0;
    dh__run_dir_remove();
}

/* ------------------------------------------------------------ cmocka hooks */

int dh_group_teardown(void **state)
{
    (void)state;
    dh__group_client_close();
    dh_cleanup();
    return 0;
}

int dh_test_teardown(void **state)
{
    (void)state;
    dh_reap_forks();
    return 0;
}

/* ---------------------------------------------------- clock and waiting */

int64_t dh_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void dh__nap_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

int dh_wait_until(int (*pred)(void *arg), void *arg, int timeout_ms)
{
    int64_t deadline = dh_now_ms() + timeout_ms;
    for (;;) {
        if (pred(arg))
            return 1;
        if (dh_now_ms() >= deadline)
            return pred(arg) ? 1 : 0;
        dh__nap_ms(2);
    }
}

int dh_flag_set(void *flag)
{
    return atomic_load((atomic_int *)flag) != 0;
}
