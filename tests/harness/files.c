/*
 * files.c — temporary directories, small file helpers, and the few text
 * helpers tests share (counting lines and needles, digits).
 *
 * Design. Everything the harness writes lives under one base directory
 * ($TMPDIR if short, else /tmp: unix socket paths are limited to 108
 * bytes, and servers put their sockets in their own temp dir). Every temp
 * dir is named "dh-<pid>-<tag>-XXXXXX", so a later run can tell whether
 * the run that made it is still alive and remove those left by a run that
 * was killed with SIGKILL (which could not clean up after itself). A run
 * has one directory of its own for test files, spawned processes' output
 * and markers; servers get one each (redis.c).
 */
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char run_dir[DH_DIR_MAX];
static unsigned run_seq;

/* The base of every temp dir: $TMPDIR if it is set and short (unix socket
 * paths are limited to 108 bytes), else /tmp. */
static const char *tmp_base(void)
{
    const char *base = getenv("TMPDIR");
    if (!base || !base[0] || strlen(base) > 40)
        base = "/tmp";
    return base;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void dh__rm_tree(const char *dir)
{
    if (dir[0])
        nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Call fn(path) for each entry of dir but "." and "..". */
static void each_entry(const char *dir, void (*fn)(const char *path, const char *name))
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
        fn(p, e->d_name);
    }
    closedir(d);
}

static void remove_entry(const char *path, const char *name)
{
    (void)name;
    dh__rm_tree(path);
}

void dh__empty_dir(const char *dir)
{
    each_entry(dir, remove_entry);
}

/* A "dh-<pid>-..." entry whose process is gone: remove it. */
static void remove_if_stale(const char *path, const char *name)
{
    if (strncmp(name, "dh-", 3) != 0)
        return;
    char *end = NULL;
    long pid = strtol(name + 3, &end, 10);
    if (end == name + 3 || *end != '-' || pid <= 1)
        return;
    if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
        return;
    dh__rm_tree(path);
}

void dh__remove_stale_dirs(void)
{
    each_entry(tmp_base(), remove_if_stale);
}

int dh__make_tmpdir(char *out, size_t outlen, const char *tag)
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

const char *dh__run_dir(void)
{
    dh__reg_init();
    if (!run_dir[0] && dh__make_tmpdir(run_dir, sizeof run_dir, "run") != 0)
        return NULL;
    return run_dir;
}

void dh__run_dir_remove(void)
{
    if (run_dir[0]) {
        dh__rm_tree(run_dir);
        run_dir[0] = '\0';
    }
}

unsigned dh__next_seq(void)
{
    return ++run_seq;
}

int dh_tmpfile(char *out, size_t outlen, const char *name)
{
    const char *dir = dh__run_dir();
    if (!dir)
        return -1;
    int n = snprintf(out, outlen, "%s/%u-%s", dir, dh__next_seq(), name);
    return (n < 0 || (size_t)n >= outlen) ? -1 : 0;
}

int dh_tmpdir(char *out, size_t outlen, const char *name)
{
    if (dh_tmpfile(out, outlen, name) != 0 || mkdir(out, 0700) != 0)
        return -1;
    return 0;
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

int dh_file_exists(void *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

int dh_file_lines(const char *path)
{
    char buf[64 * 1024];
    return dh_read_file(buf, sizeof buf, path) < 0 ? -1 : dh_count_lines(buf);
}

int dh_count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

int dh_count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *s = hay; (s = strstr(s, needle)) != NULL; s += strlen(needle))
        n++;
    return n;
}

int dh_is_digits(const char *s, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}
