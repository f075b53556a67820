/*
 * internal.h — what the harness's files share with each other and with no
 * test: the registry of everything the harness started (core.c), temp
 * directories (files.c), the steps every forked child takes (proc.c) and
 * loopback sockets (net.c). Names start with dh__.
 *
 * Design. The harness is split by concern, one file each: core.c (registry,
 * cleanup, clock, bounded waiting, cmocka hooks), files.c (temp dirs, files,
 * text), proc.c (forked helpers, spawned programs), thread.c (a call on a
 * thread of its own), net.c (ports and listeners), redis.c (redis-server
 * processes), commands.c (talking to a server with hiredis), glue.c (dlock
 * clients, options, group setup), json.c and prometheus.c (output checkers),
 * cli_runner.c (the dlock tool). Tests see only tests/harness.h (and
 * tests/cli_runner.h); this header keeps the seams between the files out of
 * their sight.
 */
#ifndef DLOCK_TEST_HARNESS_INTERNAL_H
#define DLOCK_TEST_HARNESS_INTERNAL_H

#include "harness.h"

/* ---- core.c: the registry. dh__reg_init() runs on first use of anything
 * that starts a process or makes a file: it remembers the creating pid and
 * registers dh_cleanup() with atexit(). */
void dh__reg_init(void);
void dh__reg_add_server(dh_redis *r);
void dh__reg_del_server(dh_redis *r);
void dh__reg_add_fd(int fd);
void dh__reg_add_proc(dh_proc *p);
void dh__reg_del_proc(dh_proc *p);
int dh__reg_add_fork(pid_t pid); /* 0, or -1 when the table is full */
void dh__reg_del_fork(pid_t pid);

/* Sleep ms milliseconds (EINTR-safe): for polling loops only. */
void dh__nap_ms(int ms);

/* ---- glue.c: close the group's client (dh_group_start_client), if any. */
void dh__group_client_close(void);

/* ---- files.c */
void dh__rm_tree(const char *dir);
void dh__empty_dir(const char *dir);
/* Make "<tmp base>/dh-<pid>-<tag>-XXXXXX" into out. 0 or -1. */
int dh__make_tmpdir(char *out, size_t outlen, const char *tag);
/* Remove temp dirs left by harness runs that are gone (killed with -9). */
void dh__remove_stale_dirs(void);
/* The run's own temp dir (made on first use), or NULL. */
const char *dh__run_dir(void);
/* The run's temp dir removed (at cleanup). */
void dh__run_dir_remove(void);
/* A number unique within this run, for file names. */
unsigned dh__next_seq(void);

/* ---- proc.c */
/* Count the threads the process has before any client (core.c's first
 * use of the registry calls it). */
void dh__proc_init(void);
/* The first steps of every forked child: */
/* Die with the parent (PR_SET_PDEATHSIG, SIGKILL; exit at once if it is
 * already gone), default signal mask and SIGPIPE for the new program. */
void dh__child_prepare(pid_t parent);
/* Close every inherited descriptor above stderr. */
void dh__close_from_3(void);
/* A wait status as an exit status: its code, or 128+N for signal N. */
int dh__decode_status(int st);

/* ---- net.c: a loopback TCP socket bound to a free port (*port_out),
 * close-on-exec, not listening. -1 on failure. */
int dh__loopback_socket(int *port_out);

#endif
