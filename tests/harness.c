/*
 * harness.c — private redis-server processes and process/socket helpers for
 * the tests (see harness.h for the contract).
 *
 * Design. The harness owns real processes and sockets, so its one duty
 * besides starting them is to always take them down: every server, socket,
 * background process and temp dir goes into a small registry that
 * dh_cleanup() empties, and dh_cleanup() is registered with atexit(). The
 * registry remembers the pid that created it, so a forked test child that
 * exits never tears down its parent's servers. Children (servers and the
 * CLI) are started with fork + PR_SET_PDEATHSIG(SIGKILL) + exec and with
 * every inherited descriptor above stderr closed, so a crashed test process
 * takes its servers with it and no test socket leaks into a child.
 *
 * Nothing here sleeps to synchronise: waiting for a server, a process or a
 * condition is a poll of the real state every few milliseconds, bounded.
 */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* ------------------------------------------------------------- registry */

#define DH_MAX_SERVERS 32
#define DH_MAX_FDS 128
#define DH_MAX_PROCS 128

struct dh_proc {
    pid_t pid;
    int done;
    int status;
    char out_path[DH_PATH_MAX];
    char err_path[DH_PATH_MAX];
};

static pid_t reg_owner;
static dh_redis *reg_servers[DH_MAX_SERVERS];
static int reg_fds[DH_MAX_FDS];
static int reg_nfds;
static dh_proc *reg_procs[DH_MAX_PROCS];
static pid_t reg_forks[DH_MAX_PROCS]; /* dh_fork children */
static char reg_tmpdir[DH_DIR_MAX];
static unsigned reg_seq;

static const char *tmp_base(void);
static void rm_tree(const char *dir);

/* Temp dirs are named "dh-<pid>-..."; remove those whose process is gone
 * (a test run killed with SIGKILL cannot clean up after itself). */
static void remove_stale_dirs(void)
{
    const char *base = tmp_base();
    DIR *d = opendir(base);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "dh-", 3) != 0)
            continue;
        char *end = NULL;
        long pid = strtol(e->d_name + 3, &end, 10);
        if (end == e->d_name + 3 || *end != '-' || pid <= 1)
            continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        char p[DH_PATH_MAX * 2];
        snprintf(p, sizeof p, "%s/%s", base, e->d_name);
        rm_tree(p);
    }
    closedir(d);
}

static void reg_init(void)
{
    if (reg_owner == 0) {
        reg_owner = getpid();
        atexit(dh_cleanup);
        remove_stale_dirs();
    }
}

static void reg_add_server(dh_redis *r)
{
    for (int i = 0; i < DH_MAX_SERVERS; i++)
        if (!reg_servers[i]) {
            reg_servers[i] = r;
            return;
        }
    fprintf(stderr, "harness: too many servers\n");
}

static void reg_del_server(dh_redis *r)
{
    for (int i = 0; i < DH_MAX_SERVERS; i++)
        if (reg_servers[i] == r)
            reg_servers[i] = NULL;
}

static void reg_add_fd(int fd)
{
    if (reg_nfds < DH_MAX_FDS)
        reg_fds[reg_nfds++] = fd;
    else
        fprintf(stderr, "harness: too many sockets\n");
}

static void reg_add_proc(dh_proc *p)
{
    for (int i = 0; i < DH_MAX_PROCS; i++)
        if (!reg_procs[i]) {
            reg_procs[i] = p;
            return;
        }
    fprintf(stderr, "harness: too many processes\n");
}

static void reg_del_proc(dh_proc *p)
{
    for (int i = 0; i < DH_MAX_PROCS; i++)
        if (reg_procs[i] == p)
            reg_procs[i] = NULL;
}

pid_t dh_fork(void)
{
    reg_init();
    int slot = -1;
    for (int i = 0; i < DH_MAX_PROCS && slot < 0; i++)
        if (reg_forks[i] == 0 || dh_pid_dead(reg_forks[i]))
            slot = i;
    if (slot < 0) {
        fprintf(stderr, "harness: too many forked helpers\n");
        return -1;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        return 0;
    }
    if (pid > 0)
        reg_forks[slot] = pid;
    return pid;
}

/* ------------------------------------------------------------ utilities */

int64_t dh_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nap_ms(int ms)
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
        nap_ms(2);
    }
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void rm_tree(const char *dir)
{
    if (dir[0])
        nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Remove the contents of dir, keep dir. */
static void empty_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char p[DH_PATH_MAX * 2];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        rm_tree(p);
    }
    closedir(d);
}

static const char *tmp_base(void)
{
    /* Unix socket paths are limited to 108 bytes: keep the base short. */
    const char *base = getenv("TMPDIR");
    if (!base || !base[0] || strlen(base) > 40)
        base = "/tmp";
    return base;
}

static int make_tmpdir(char *out, size_t outlen, const char *tag)
{
    int n = snprintf(out, outlen, "%s/dh-%d-%s-XXXXXX", tmp_base(), (int)getpid(), tag);
    if (n < 0 || (size_t)n >= outlen)
        return -1;
    if (!mkdtemp(out)) {
        fprintf(stderr, "harness: mkdtemp %s: %s\n", out, strerror(errno));
        out[0] = '\0';
        return -1;
    }
    return 0;
}

static int harness_dir(void)
{
    reg_init();
    if (reg_tmpdir[0])
        return 0;
    return make_tmpdir(reg_tmpdir, sizeof reg_tmpdir, "run");
}

int dh_tmpfile(char *out, size_t outlen, const char *name)
{
    if (harness_dir() != 0)
        return -1;
    int n = snprintf(out, outlen, "%s/%u-%s", reg_tmpdir, ++reg_seq, name);
    return (n < 0 || (size_t)n >= outlen) ? -1 : 0;
}

long dh_read_file(char *buf, size_t len, const char *path)
{
    if (len == 0)
        return -1;
    buf[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t got = 0;
    while (got + 1 < len) {
        ssize_t n = read(fd, buf + got, len - 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    buf[got] = '\0';
    close(fd);
    return (long)got;
}

int dh_write_file(const char *path, const char *s)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    size_t len = strlen(s), off = 0;
    while (off < len) {
        ssize_t n = write(fd, s + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            close(fd);
            return -1;
        }
        off += (size_t)n;
    }
    return close(fd) == 0 ? 0 : -1;
}

static int decode_status(int st)
{
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return DH_RUN_ERROR;
}

int dh_waitpid(pid_t pid, int *status, int timeout_ms)
{
    int64_t start = dh_now_ms(), deadline = start + timeout_ms;
    for (;;) {
        int st;
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid) {
            *status = decode_status(st);
            return 1;
        }
        if (w < 0 && errno != EINTR)
            return -1;
        int64_t now = dh_now_ms();
        if (now >= deadline)
            return 0;
        nap_ms(now - start < 200 ? 1 : 5);
    }
}

int dh_pid_dead(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (dh_read_file(buf, sizeof buf, path) <= 0)
        return 1;
    /* "pid (comm) S ...": the state follows the last ')'. */
    const char *p = strrchr(buf, ')');
    if (!p || !p[1] || !p[2])
        return 1;
    return (p[2] == 'Z' || p[2] == 'X') ? 1 : 0;
}

/* In a freshly forked child: die with the parent, close inherited fds. */
static void child_prepare(pid_t parent)
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

static void close_from_3(void)
{
    if (close_range(3, ~0U, 0) != 0) {
        for (int fd = 3; fd < 4096; fd++)
            close(fd);
    }
}

static int loopback_socket(int *port_out)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    socklen_t alen = sizeof a;
    if (getsockname(fd, (struct sockaddr *)&a, &alen) != 0) {
        close(fd);
        return -1;
    }
    *port_out = ntohs(a.sin_port);
    return fd;
}

/* A port that was free a moment ago (never 6379; at most 55535, so that a
 * cluster node's bus port, port + 10000, exists too). */
static int free_port(void)
{
    for (int i = 0; i < 200; i++) {
        int port;
        int fd = loopback_socket(&port);
        if (fd < 0)
            return -1;
        close(fd);
        if (port != 6379 && port > 1024 && port <= 55535)
            return port;
    }
    return -1;
}

/* -------------------------------------------------------------- servers */

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

/* Fork+exec redis-server on r->port. Returns 0 once it answers PING, 1 if
 * it exited because the port was taken (caller may retry), -1 otherwise. */
static int spawn_server(dh_redis *r)
{
    char portbuf[16];
    snprintf(portbuf, sizeof portbuf, "%d", r->port);
    char logpath[DH_PATH_MAX + 16];
    snprintf(logpath, sizeof logpath, "%s/redis.log", r->dir);

    const char *args[40];
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
    for (int i = 0; r->extra[i] && n < 38; i++)
        args[n++] = r->extra[i];
    args[n] = NULL;

    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "harness: fork: %s\n", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        child_prepare(parent);
        int lfd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0600);
        int nfd = open("/dev/null", O_RDONLY);
        if (lfd < 0 || nfd < 0)
            _exit(127);
        dup2(nfd, 0);
        dup2(lfd, 1);
        dup2(lfd, 2);
        close_from_3();
        execvp("redis-server", (char *const *)args);
        _exit(127);
    }
    r->pid = pid;

    int64_t deadline = dh_now_ms() + 10000;
    while (dh_now_ms() < deadline) {
        int st;
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid) {
            r->pid = 0;
            char log[4096];
            dh_read_file(log, sizeof log, logpath);
            if (strstr(log, "in use") || strstr(log, "Address already"))
                return 1;
            fprintf(stderr, "harness: redis-server on port %d exited at start:\n%s\n",
                    r->port, log);
            return -1;
        }
        if (ping_once(r))
            return 0;
        nap_ms(5);
    }
    fprintf(stderr, "harness: redis-server on port %d did not answer in 10 s\n", r->port);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    r->pid = 0;
    return -1;
}

static void free_extra(dh_redis *r)
{
    for (int i = 0; i < DH_MAX_EXTRA; i++) {
        free(r->extra[i]);
        r->extra[i] = NULL;
    }
}

dh_redis *dh_redis_start(const char *const *extra_args)
{
    reg_init();
    dh_redis *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    if (make_tmpdir(r->dir, sizeof r->dir, "redis") != 0) {
        free(r);
        return NULL;
    }
    snprintf(r->sock, sizeof r->sock, "%s/redis.sock", r->dir);
    snprintf(r->unix_url, sizeof r->unix_url, "unix://%s", r->sock);
    for (int i = 0; extra_args && extra_args[i]; i++) {
        if (i >= DH_MAX_EXTRA) {
            fprintf(stderr, "harness: too many extra args\n");
            goto fail;
        }
        r->extra[i] = strdup(extra_args[i]);
        if (!r->extra[i])
            goto fail;
        if (i > 0 && strcmp(extra_args[i - 1], "--requirepass") == 0)
            snprintf(r->password, sizeof r->password, "%s", extra_args[i]);
    }
    for (int attempt = 0; attempt < 10; attempt++) {
        r->port = free_port();
        if (r->port < 0)
            goto fail;
        int rc = spawn_server(r);
        if (rc == 0) {
            snprintf(r->url, sizeof r->url, "redis://127.0.0.1:%d", r->port);
            reg_add_server(r);
            return r;
        }
        if (rc < 0)
            goto fail;
    }
fail:
    rm_tree(r->dir);
    free_extra(r);
    free(r);
    return NULL;
}

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
            nap_ms(2);
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
    rm_tree(r->dir);
    reg_del_server(r);
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
    empty_dir(r->dir);
    /* The same port: redis binds with SO_REUSEADDR, so old connections in
     * TIME_WAIT do not stop it; retry briefly in case of a transient race. */
    for (int attempt = 0; attempt < 20; attempt++) {
        int rc = spawn_server(r);
        if (rc == 0)
            return 0;
        if (rc < 0)
            return -1;
        nap_ms(50);
    }
    return -1;
}

/* ------------------------------------------------------------- commands */

redisContext *dh_connect(const dh_redis *r, int db)
{
    struct timeval tv = { 2, 0 };
    redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
    if (!c || c->err) {
        fprintf(stderr, "harness: connect to port %d: %s\n", r->port,
                c ? c->errstr : "out of memory");
        if (c)
            redisFree(c);
        return NULL;
    }
    struct timeval ctv = { 5, 0 };
    redisSetTimeout(c, ctv);
    if (r->password[0]) {
        redisReply *rep = redisCommand(c, "AUTH %s", r->password);
        int ok = rep && rep->type != REDIS_REPLY_ERROR;
        if (rep)
            freeReplyObject(rep);
        if (!ok) {
            redisFree(c);
            return NULL;
        }
    }
    if (db != 0) {
        redisReply *rep = redisCommand(c, "SELECT %d", db);
        int ok = rep && rep->type != REDIS_REPLY_ERROR;
        if (rep)
            freeReplyObject(rep);
        if (!ok) {
            redisFree(c);
            return NULL;
        }
    }
    return c;
}

static redisReply *vcmd(const dh_redis *r, int db, const char *fmt, va_list ap)
{
    redisContext *c = dh_connect(r, db);
    if (!c)
        return NULL;
    redisReply *rep = redisvCommand(c, fmt, ap);
    if (!rep)
        fprintf(stderr, "harness: command on port %d failed: %s\n", r->port, c->errstr);
    redisFree(c);
    return rep;
}

redisReply *dh_cmd(const dh_redis *r, int db, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = vcmd(r, db, fmt, ap);
    va_end(ap);
    return rep;
}

int64_t dh_cmd_int(const dh_redis *r, int db, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = vcmd(r, db, fmt, ap);
    va_end(ap);
    int64_t v = INT64_MIN;
    if (rep && rep->type == REDIS_REPLY_INTEGER)
        v = rep->integer;
    if (rep)
        freeReplyObject(rep);
    return v;
}

int dh_cmd_str(char *buf, size_t len, const dh_redis *r, int db, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = vcmd(r, db, fmt, ap);
    va_end(ap);
    int n = -1;
    if (len)
        buf[0] = '\0';
    if (rep && (rep->type == REDIS_REPLY_STRING || rep->type == REDIS_REPLY_STATUS)) {
        snprintf(buf, len, "%.*s", (int)rep->len, rep->str);
        n = (int)rep->len;
    }
    if (rep)
        freeReplyObject(rep);
    return n;
}

int dh_cmd_ok(const dh_redis *r, int db, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = vcmd(r, db, fmt, ap);
    va_end(ap);
    int ok = rep && rep->type != REDIS_REPLY_ERROR;
    if (rep && !ok)
        fprintf(stderr, "harness: error reply: %.*s\n", (int)rep->len, rep->str);
    if (rep)
        freeReplyObject(rep);
    return ok ? 0 : -1;
}

int64_t dh_dbsize(const dh_redis *r, int db)
{
    int64_t n = dh_cmd_int(r, db, "DBSIZE");
    return n == INT64_MIN ? -1 : n;
}

static int elem_has(const redisReply *e, const char *needle)
{
    if (!e || (e->type != REDIS_REPLY_STRING && e->type != REDIS_REPLY_STATUS))
        return 0;
    return memmem(e->str, e->len, needle, strlen(needle)) != NULL;
}

static int reply_has(const redisReply *rep, const char *needle)
{
    if (!rep)
        return 0;
    if (rep->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < rep->elements; i++)
            if (elem_has(rep->element[i], needle))
                return 1;
        return 0;
    }
    return elem_has(rep, needle);
}

int dh_find_key(char *out, size_t outlen, const dh_redis *r, int db,
                const char *name_part, const char *needle)
{
    /* Build a KEYS pattern "*<name_part>*" with glob characters escaped. */
    char pat[2 * 600 + 4];
    size_t n = 0;
    pat[n++] = '*';
    for (const char *p = name_part; *p && n < sizeof pat - 3; p++) {
        if (strchr("*?[]\\", *p))
            pat[n++] = '\\';
        pat[n++] = *p;
    }
    pat[n++] = '*';
    pat[n] = '\0';

    redisContext *c = dh_connect(r, db);
    if (!c)
        return -1;
    int found = 0;
    redisReply *keys = redisCommand(c, "KEYS %s", pat);
    if (!keys || keys->type != REDIS_REPLY_ARRAY) {
        if (keys)
            freeReplyObject(keys);
        redisFree(c);
        return -1;
    }
    for (size_t i = 0; i < keys->elements && !found; i++) {
        const redisReply *k = keys->element[i];
        redisReply *t = redisCommand(c, "TYPE %b", k->str, k->len);
        if (!t)
            break;
        const char *type = t->type == REDIS_REPLY_STATUS ? t->str : "";
        redisReply *v = NULL;
        if (strcmp(type, "string") == 0)
            v = redisCommand(c, "GET %b", k->str, k->len);
        else if (strcmp(type, "hash") == 0)
            v = redisCommand(c, "HGETALL %b", k->str, k->len);
        else if (strcmp(type, "list") == 0)
            v = redisCommand(c, "LRANGE %b 0 -1", k->str, k->len);
        else if (strcmp(type, "set") == 0)
            v = redisCommand(c, "SMEMBERS %b", k->str, k->len);
        else if (strcmp(type, "zset") == 0)
            v = redisCommand(c, "ZRANGE %b 0 -1", k->str, k->len);
        if (reply_has(v, needle)) {
            snprintf(out, outlen, "%.*s", (int)k->len, k->str);
            found = 1;
        }
        if (v)
            freeReplyObject(v);
        freeReplyObject(t);
    }
    freeReplyObject(keys);
    redisFree(c);
    return found;
}

/* -------------------------------------------------------------- sockets */

int dh_closed_port(void)
{
    reg_init();
    for (int i = 0; i < 20; i++) {
        int port;
        int fd = loopback_socket(&port);
        if (fd < 0)
            return -1;
        if (port == 6379) {
            close(fd);
            continue;
        }
        /* Bound but not listening: connects get RST (refused), and no
         * one else can take the port while we hold it. */
        reg_add_fd(fd);
        return port;
    }
    return -1;
}

int dh_noaccept_listener(void)
{
    reg_init();
    int port;
    int fd = loopback_socket(&port);
    if (fd < 0)
        return -1;
    if (port == 6379 || listen(fd, 0) != 0) {
        close(fd);
        return -1;
    }
    reg_add_fd(fd);
    /* Fill the accept queue (backlog 0 holds one connection) so that later
     * SYNs are dropped and connects stall, like an overloaded server. Even
     * if a later connect did complete, nothing would ever answer it. */
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    for (int i = 0; i < 8; i++) {
        int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (c < 0)
            break;
        reg_add_fd(c);
        if (connect(c, (struct sockaddr *)&a, sizeof a) == 0)
            continue;
        if (errno != EINPROGRESS)
            break;
        struct pollfd pfd = { c, POLLOUT, 0 };
        if (poll(&pfd, 1, 200) == 0)
            break; /* this connect stalls: the queue is full */
    }
    return port;
}

/* ----------------------------------------------------------- dlock glue */

void dh_owner(char *out, size_t outlen, const char *tag)
{
    static unsigned seq;
    snprintf(out, outlen, "%s-%d-%u", tag, (int)getpid(), ++seq);
}

dlock_client *dh_client(const char *url, const char *owner)
{
    dlock_client_opts o = DLOCK_CLIENT_OPTS_INIT;
    o.owner_id = owner;
    dlock_client *c = NULL;
    int rc = dlock_client_open(&c, url, &o);
    if (rc != 0) {
        fprintf(stderr, "harness: dlock_client_open(%s): %s: %s\n", url,
                dlock_strerror(rc), dlock_last_errmsg());
        return NULL;
    }
    return c;
}

static dlock_client_stats stats_of(dlock_client *c)
{
    dlock_client_stats s;
    memset(&s, 0, sizeof s);
    if (dlock_stats(&s, c) != 0)
        memset(&s, 0, sizeof s);
    return s;
}

uint64_t dh_round_trips(dlock_client *c)
{
    return stats_of(c).round_trips;
}

uint64_t dh_attempts(dlock_client *c)
{
    return stats_of(c).attempts;
}

uint64_t dh_keepalives(dlock_client *c)
{
    return stats_of(c).keepalives;
}

/* ------------------------------------------------------------ processes */

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

dh_proc *dh_spawn(const char *const *argv, const char *const *extra_env)
{
    if (harness_dir() != 0)
        return NULL;
    dh_proc *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    unsigned seq = ++reg_seq;
    snprintf(p->out_path, sizeof p->out_path, "%s/proc-%u.out", reg_tmpdir, seq);
    snprintf(p->err_path, sizeof p->err_path, "%s/proc-%u.err", reg_tmpdir, seq);
    char **env = build_env(extra_env);
    if (!env) {
        free(p);
        return NULL;
    }
    int ofd = open(p->out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int efd = open(p->err_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int nfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (ofd < 0 || efd < 0 || nfd < 0) {
        if (ofd >= 0)
            close(ofd);
        if (efd >= 0)
            close(efd);
        if (nfd >= 0)
            close(nfd);
        free(env);
        free(p);
        return NULL;
    }
    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        child_prepare(parent);
        dup2(nfd, 0);
        dup2(ofd, 1);
        dup2(efd, 2);
        close_from_3();
        execvpe(argv[0], (char *const *)argv, env);
        _exit(127);
    }
    close(ofd);
    close(efd);
    close(nfd);
    free(env);
    if (pid < 0) {
        free(p);
        return NULL;
    }
    setpgid(pid, pid); /* both sides, so no race with a signal to the group */
    p->pid = pid;
    reg_add_proc(p);
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
        p->status = decode_status(st);
        return 1;
    }
    if (w < 0 && errno == ECHILD) {
        p->done = 1;
        p->status = DH_RUN_ERROR;
        return 1;
    }
    return 0;
}

int dh_proc_wait(dh_proc *p, int timeout_ms)
{
    if (!p)
        return DH_RUN_ERROR;
    int64_t start = dh_now_ms(), deadline = start + timeout_ms;
    while (!dh_proc_done(p)) {
        int64_t now = dh_now_ms();
        if (now >= deadline) {
            kill(-p->pid, SIGKILL);
            kill(p->pid, SIGKILL);
            while (waitpid(p->pid, NULL, 0) < 0 && errno == EINTR) {
            }
            p->done = 1;
            p->status = DH_RUN_TIMEOUT;
            break;
        }
        nap_ms(now - start < 200 ? 1 : 5);
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
    if (!dh_proc_done(p)) {
        kill(-p->pid, SIGKILL);
        kill(p->pid, SIGKILL);
        while (waitpid(p->pid, NULL, 0) < 0 && errno == EINTR) {
        }
    }
    unlink(p->out_path);
    unlink(p->err_path);
    reg_del_proc(p);
    free(p);
}

int dh_run(const char *const *argv, const char *const *extra_env, int timeout_ms,
           char *out, size_t outlen, char *err, size_t errlen)
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

/* -------------------------------------------------------------- cleanup */

void dh_cleanup(void)
{
    if (reg_owner == 0 || getpid() != reg_owner)
        return; /* never tear down from a forked child */
    for (int i = 0; i < DH_MAX_PROCS; i++)
        if (reg_forks[i] > 0) {
            kill(reg_forks[i], SIGKILL);
            kill(reg_forks[i], SIGCONT);
            waitpid(reg_forks[i], NULL, 0);
            reg_forks[i] = 0;
        }
    for (int i = 0; i < DH_MAX_PROCS; i++)
        if (reg_procs[i])
            dh_proc_free(reg_procs[i]);
    for (int i = 0; i < DH_MAX_SERVERS; i++)
        if (reg_servers[i])
            dh_redis_stop(reg_servers[i]);
    for (int i = 0; i < reg_nfds; i++)
        close(reg_fds[i]);
    reg_nfds = 0;
    if (reg_tmpdir[0]) {
        rm_tree(reg_tmpdir);
        reg_tmpdir[0] = '\0';
    }
}
