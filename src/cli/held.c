/*
 * held.c — nested runs: how a `dlock run KEY` started inside the CMD of
 * another `dlock run KEY` recognises the outer hold and runs under it,
 * like flock(1) on an inherited descriptor (DESIGN.md, "CLI contract").
 *
 * The outer run tells its CMD what it holds in DLOCK_HELD, one line per
 * key held (a run that is itself nested adds its lines to those it
 * inherited):
 *
 *     PID KIND FENCE SLOT PERMITS LIMIT URL PREFIX KEY
 *
 * PID is the holding dlock's process id; KIND 'w' (the mutex: `run KEY`,
 * several KEYs, `elect`), 'r' (`run --shared`) or 's' (semaphore permits,
 * with SLOT the first slot, PERMITS and LIMIT); FENCE the fencing token;
 * URL the -u URL as written, with any password masked (as dlock shows
 * URLs); PREFIX the key prefix; KEY the user key. URL, PREFIX and KEY are
 * percent-encoded (%, space, control bytes), so a line splits on spaces.
 * The secret lock token is never in it: the fencing token names the
 * acquisition, and the inner run proves nothing with it, it only asks.
 *
 * An inner run uses a line only if all of these hold: its PID is an
 * ancestor of the inner dlock (the same process tree: an environment
 * copied into a cron job or a daemon that outlived the outer run does not
 * count), the URL and prefix are the inner run's, the key is the one
 * asked for, and the hold covers what is asked (a writer covers a reader;
 * permits cover as many or fewer of the same limit). Then it asks the
 * server whether that acquisition still holds the key (dlock_inspect for a
 * mutex, the holders of dlock_key_state_get for a reader or permits: the
 * same fencing token) before CMD starts, and again after CMD ended; it
 * never acquires, renews or releases what the outer run holds.
 */
#include "cli.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ANCESTORS_MAX 64 /* how far up the process tree an outer run is looked for */

/* Append s to the growing string *buf (length *len), percent-encoding
 * what would break a line into fields. Returns 0 or -1 (out of memory). */
static int put_encoded(char **buf, size_t *len, const char *s)
{
    size_t n = strlen(s), need = *len + 3 * n + 2;
    char *b = realloc(*buf, need);
    if (b == NULL)
        return -1;
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p == '%' || *p <= 0x20 || *p == 0x7f)
            *len += (size_t)snprintf(b + *len, 4, "%%%02X", *p);
        else
            b[(*len)++] = (char)*p;
    }
    b[*len] = '\0';
    *buf = b;
    return 0;
}

/* Decode a percent-encoded field in place. Returns 0 or -1 (malformed). */
static int decode(char *s)
{
    char *w = s;
    for (const char *r = s; *r != '\0'; r++) {
        if (*r != '%') {
            *w++ = *r;
            continue;
        }
        unsigned v;
        char hex[3] = { r[1], r[1] ? r[2] : 0, 0 };
        if (hex[0] == 0 || hex[1] == 0 || sscanf(hex, "%2x", &v) != 1 || v == 0)
            return -1;
        *w++ = (char)v;
        r += 2;
    }
    *w = '\0';
    return 0;
}

/* The parent of process `pid` from /proc, or -1. */
static long parent_of(long pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* "pid (comm) S ppid ...": comm may hold spaces and parentheses */
    const char *p = strrchr(buf, ')');
    long ppid;
    if (p == NULL || sscanf(p + 1, " %*c %ld", &ppid) != 1)
        return -1;
    return ppid;
}

/* 1 if `pid` is an ancestor of this process. */
static int is_ancestor(long pid)
{
    long p = (long)getppid();
    for (int i = 0; i < ANCESTORS_MAX && p > 1; i++) {
        if (p == pid)
            return 1;
        p = parent_of(p);
    }
    return 0;
}

/* See cli.h. */
int cli_held_outer_alive(const cli_held_entry *e)
{
    return is_ancestor(e->pid);
}

/* Parse one line into e (fields point into the line, decoded). Returns 0
 * or -1. */
static int parse_line(cli_held_entry *e, char *line)
{
    char *f[9], *save = NULL;
    int n = 0;
    for (char *t = strtok_r(line, " ", &save); t != NULL && n < 9; t = strtok_r(NULL, " ", &save))
        f[n++] = t;
    if (n != 9 || strtok_r(NULL, " ", &save) != NULL || strlen(f[1]) != 1 ||
        strchr("wrs", f[1][0]) == NULL)
        return -1;
    long v;
    char *end;
    e->pid = strtol(f[0], &end, 10);
    if (*end != '\0' || e->pid <= 1)
        return -1;
    e->kind = f[1][0];
    e->fence = strtoull(f[2], &end, 10);
    if (*end != '\0' || e->fence == 0)
        return -1;
    if (cli_parse_long(&v, f[3], -1, 1000000) != 0)
        return -1;
    e->slot = (int)v;
    if (cli_parse_long(&v, f[4], 1, 1000000) != 0)
        return -1;
    e->permits = (int)v;
    if (cli_parse_long(&v, f[5], 0, 1000000) != 0)
        return -1;
    e->limit = (int)v;
    if (decode(f[6]) != 0 || decode(f[7]) != 0 || decode(f[8]) != 0 || f[8][0] == '\0')
        return -1;
    e->url = f[6];
    e->prefix = f[7];
    e->key = f[8];
    return 0;
}

/* See cli.h. */
int cli_held_load(cli_held *h, int quiet)
{
    const char *env = getenv("DLOCK_HELD");
    memset(h, 0, sizeof *h);
    h->inherited = env;
    if (env == NULL || env[0] == '\0')
        return 0;
    h->text = strdup(env);
    size_t lines = 1;
    for (const char *p = env; *p != '\0'; p++)
        lines += *p == '\n';
    h->v = calloc(lines, sizeof *h->v);
    if (h->text == NULL || h->v == NULL) {
        cli_err("out of memory");
        return CLI_EX_SOFTWARE;
    }
    int bad = 0;
    char *save = NULL;
    for (char *l = strtok_r(h->text, "\n", &save); l != NULL; l = strtok_r(NULL, "\n", &save)) {
        cli_held_entry e;
        if (parse_line(&e, l) != 0)
            bad++;
        else if (is_ancestor(e.pid))
            h->v[h->n++] = e;
    }
    if (bad && !quiet)
        cli_err("ignoring %d malformed line%s of $DLOCK_HELD", bad, bad > 1 ? "s" : "");
    return 0;
}

void cli_held_free(cli_held *h)
{
    free(h->v);
    free(h->text);
    memset(h, 0, sizeof *h);
}

/* See cli.h. A writer covers a reader of the same key; permits cover as
 * many or fewer permits of the same limit. */
const cli_held_entry *cli_held_cover(const cli_held *h, const char *url, const char *prefix,
                                     const char *key, char kind, int limit, int permits)
{
    for (size_t i = 0; i < h->n; i++) {
        const cli_held_entry *e = &h->v[i];
        if (strcmp(e->url, url) != 0 || strcmp(e->prefix, prefix) != 0 || strcmp(e->key, key) != 0)
            continue;
        if (kind == 'w' && e->kind == 'w')
            return e;
        if (kind == 'r' && (e->kind == 'w' || e->kind == 'r'))
            return e;
        if (kind == 's' && e->kind == 's' && e->limit == limit && e->permits >= permits)
            return e;
    }
    return NULL;
}

/* See cli.h. */
int cli_held_still(dlock_client *client, const cli_held_entry *e)
{
    if (e->kind == 'w') {
        dlock_info info;
        int rc = dlock_inspect(&info, client, e->key);
        return rc != 0 ? rc : info.held && info.fencing_token == e->fence;
    }
    dlock_key_state *s = NULL;
    int rc = dlock_key_state_get(&s, client, e->key,
                                 e->kind == 'r' ? DLOCK_KIND_MUTEX : DLOCK_KIND_SEMAPHORE);
    if (rc != 0)
        return rc;
    int found = 0;
    for (size_t i = 0; i < s->nholders && !found; i++)
        found = s->holders[i].fencing_token == e->fence &&
                s->holders[i].mode == (e->kind == 'r' ? DLOCK_READ : 0);
    dlock_key_state_free(s);
    return found;
}

/* Append s as it is to *buf (length *len). Returns 0 or -1. */
static int put_raw(char **buf, size_t *len, const char *s)
{
    size_t n = strlen(s);
    char *b = realloc(*buf, *len + n + 1);
    if (b == NULL)
        return -1;
    memcpy(b + *len, s, n + 1);
    *len += n;
    *buf = b;
    return 0;
}

/* See cli.h. */
char *cli_held_append(const char *inherited, const cli_held_entry *add, size_t n)
{
    char *buf = NULL;
    size_t len = 0;
    int bad = put_raw(&buf, &len, inherited != NULL ? inherited : "");
    for (size_t i = 0; i < n && !bad; i++) {
        char head[128];
        snprintf(head, sizeof head, "%s%ld %c %" PRIu64 " %d %d %d ", len > 0 ? "\n" : "",
                 add[i].pid, add[i].kind, add[i].fence, add[i].slot, add[i].permits, add[i].limit);
        bad = put_raw(&buf, &len, head) || put_encoded(&buf, &len, add[i].url) ||
              put_raw(&buf, &len, " ") || put_encoded(&buf, &len, add[i].prefix) ||
              put_raw(&buf, &len, " ") || put_encoded(&buf, &len, add[i].key);
    }
    if (bad) {
        free(buf);
        return NULL;
    }
    return buf;
}
