/*
 * redis.c — private redis-server processes: start, stop, kill -9, pause,
 * resume, restart with its data lost.
 *
 * Design. Every server is a real redis-server, fork+exec'd (PR_SET_PDEATHSIG,
 * inherited descriptors closed: proc.c) on a free loopback port, with a
 * unix socket and its log in a temp dir of its own, no persistence, and the
 * test's extra arguments. Starting is proven, not assumed: the harness
 * polls PING (bounded, 10 s) and reads the log when the server exits early;
 * a port taken between the check and the bind is retried on another port.
 * A restart reuses the port (redis binds with SO_REUSEADDR) after emptying
 * the dir, which is how tests lose a server's data on purpose.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* One PING over a fresh connection with a 200 ms bound: 1 if it answered. */
static int ping_once(const dh_redis *r)
{
    struct timeval tv = { 0, 200000 };
    redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
    if (!c)
        return 0;
    if (c->err) {
        redisFree(c);
        return 0;
    }
    redisSetTimeout(c, tv);
    redisReply *rep = redisCommand(c, "PING");
    int ok = rep != NULL;
    /* With --requirepass PING answers NOAUTH: the server is up all the same. */
    if (rep)
        freeReplyObject(rep);
    redisFree(c);
    return ok;
}

/* The server's command line into args (room for 40): port, loopback,
 * unix socket, no persistence, its dir, then the test's extra arguments. */
static void server_args(const char **args, dh_redis *r, char *portbuf, size_t portlen)
{
    snprintf(portbuf, portlen, "%d", r->port);
    int n = 0;
    args[n++] = "redis-server";
    args[n++] = "--port";
    args[n++] = portbuf;
    args[n++] = "--bind";
    args[n++] = "127.0.0.1";
    args[n++] = "--unixsocket";
    args[n++] = r->sock;
    args[n++] = "--unixsocketperm";
    args[n++] = "700";
    args[n++] = "--save";
    args[n++] = "";
    args[n++] = "--appendonly";
    args[n++] = "no";
    args[n++] = "--dir";
    args[n++] = r->dir;
    /* a replica's first synchronisation starts at once, not after the
     * default 5 s wait for more replicas (extra_args may set it again) */
    args[n++] = "--repl-diskless-sync-delay";
    args[n++] = "0";
    for (int i = 0; r->extra[i] && n < 38; i++)
        args[n++] = r->extra[i];
    args[n] = NULL;
}

/* Wait (10 s at most) until the server just forked answers PING. 0 once it
 * does, 1 if it exited because the port was taken (caller may retry), -1
 * otherwise (the server is then gone). */
static int await_server(dh_redis *r, const char *logpath)
{
    int64_t deadline = dh_now_ms() + 10000;
    while (dh_now_ms() < deadline) {
        int st;
        if (waitpid(r->pid, &st, WNOHANG) == r->pid) {
            r->pid = 0;
            char log[4096];
            dh_read_file(log, sizeof log, logpath);
            if (strstr(log, "in use") || strstr(log, "Address already"))
                return 1;
            fprintf(stderr, "harness: redis-server on port %d exited at start:\n%s\n", r->port,
                    log);
            return -1;
        }
        if (ping_once(r))
            return 0;
        dh__nap_ms(5);
    }
    fprintf(stderr, "harness: redis-server on port %d did not answer in 10 s\n", r->port);
    kill(r->pid, SIGKILL);
    waitpid(r->pid, NULL, 0);
    r->pid = 0;
    return -1;
}

/* Fork+exec redis-server on r->port. Returns as await_server. */
static int spawn_server(dh_redis *r)
{
    char portbuf[16], logpath[DH_PATH_MAX + 16];
    const char *args[40];
    server_args(args, r, portbuf, sizeof portbuf);
    snprintf(logpath, sizeof logpath, "%s/redis.log", r->dir);

    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "harness: fork: %s\n", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        dh__child_prepare(parent);
        int lfd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0600);
        int nfd = open("/dev/null", O_RDONLY);
        if (lfd < 0 || nfd < 0)
            _exit(127);
        dup2(nfd, 0);
        dup2(lfd, 1);
        dup2(lfd, 2);
        dh__close_from_3();
        execvp("redis-server", (char *const *)args);
        _exit(127);
    }
    r->pid = pid;
    return await_server(r, logpath);
}

static void free_extra(dh_redis *r)
{
    for (int i = 0; i < DH_MAX_EXTRA; i++) {
        free(r->extra[i]);
        r->extra[i] = NULL;
    }
}

/* Copy the extra arguments into r (and the password after --requirepass).
 * 0 or -1. */
static int copy_extra(dh_redis *r, const char *const *extra_args)
{
    for (int i = 0; extra_args && extra_args[i]; i++) {
        if (i >= DH_MAX_EXTRA) {
            fprintf(stderr, "harness: too many extra args\n");
            return -1;
        }
        r->extra[i] = strdup(extra_args[i]);
        if (!r->extra[i])
            return -1;
        if (i > 0 && strcmp(extra_args[i - 1], "--requirepass") == 0)
            snprintf(r->password, sizeof r->password, "%s", extra_args[i]);
    }
    return 0;
}

dh_redis *dh_redis_start(const char *const *extra_args)
{
    dh__reg_init();
    dh_redis *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    if (dh__make_tmpdir(r->dir, sizeof r->dir, "redis") != 0) {
        free(r);
        return NULL;
    }
    snprintf(r->sock, sizeof r->sock, "%s/redis.sock", r->dir);
    snprintf(r->unix_url, sizeof r->unix_url, "unix://%s", r->sock);
    if (copy_extra(r, extra_args) != 0)
        goto fail;
    for (int attempt = 0; attempt < 10; attempt++) {
        r->port = dh_free_port();
        if (r->port < 0)
            goto fail;
        int rc = spawn_server(r);
        if (rc == 0) {
            snprintf(r->url, sizeof r->url, "redis://127.0.0.1:%d", r->port);
            dh__reg_add_server(r);
            return r;
        }
        if (rc < 0)
            goto fail;
    }
fail:
    dh__rm_tree(r->dir);
    free_extra(r);
    free(r);
    return NULL;
}

dh_redis *dh_replica_start(const dh_redis *master)
{
    char port[16];
    snprintf(port, sizeof port, "%d", master->port);
    const char *args[] = { "--replicaof", "127.0.0.1", port, NULL };
    return dh_redis_start(args);
}

/* End the server process: SIGTERM first (5 s to exit) if term_first, then
 * SIGKILL; reap it. */
static void reap_server(dh_redis *r, int term_first)
{
    if (r->pid <= 0)
        return;
    if (term_first) {
        kill(r->pid, SIGTERM);
        kill(r->pid, SIGCONT); /* a paused server must see the SIGTERM */
        int64_t deadline = dh_now_ms() + 5000;
        while (dh_now_ms() < deadline) {
            if (waitpid(r->pid, NULL, WNOHANG) == r->pid) {
                r->pid = 0;
                return;
            }
            dh__nap_ms(2);
        }
    }
    kill(r->pid, SIGKILL);
    while (waitpid(r->pid, NULL, 0) < 0 && errno == EINTR) {
    }
    r->pid = 0;
}

void dh_redis_stop(dh_redis *r)
{
    if (!r)
        return;
    reap_server(r, 1);
    dh__rm_tree(r->dir);
    dh__reg_del_server(r);
    free_extra(r);
    free(r);
}

int dh_redis_kill9(dh_redis *r)
{
    if (!r || r->pid <= 0)
        return -1;
    reap_server(r, 0);
    return 0;
}

int dh_redis_pause(dh_redis *r)
{
    return (r && r->pid > 0 && kill(r->pid, SIGSTOP) == 0) ? 0 : -1;
}

int dh_redis_resume(dh_redis *r)
{
    return (r && r->pid > 0 && kill(r->pid, SIGCONT) == 0) ? 0 : -1;
}

int dh_redis_restart(dh_redis *r)
{
    if (!r)
        return -1;
    reap_server(r, 0);
    dh__empty_dir(r->dir);
    /* The same port: redis binds with SO_REUSEADDR, so old connections in
     * TIME_WAIT do not stop it; retry briefly in case of a transient race. */
    for (int attempt = 0; attempt < 20; attempt++) {
        int rc = spawn_server(r);
        if (rc == 0)
            return 0;
        if (rc < 0)
            return -1;
        dh__nap_ms(50);
    }
    return -1;
}
