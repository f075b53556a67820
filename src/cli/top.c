/*
 * top.c — `dlock top [--interval D] [--iterations N] [PATTERN]`: a live
 * view of the locks under the prefix, like top(1) for processes.
 *
 * Every --interval (default 1 s) one scan.c snapshot (SCAN, never KEYS) is
 * rendered as a frame: a header line (server, prefix, local time, locks
 * held, waiters), a column header, and one line per lock: key, kind, the
 * longest holder's owner with the number of other holders, its TTL, the
 * waiters, its age. A scan that fails shows its error in the frame and the
 * next interval tries again: a live view should ride out a Redis restart.
 *
 * Output. At a terminal the frame is redrawn in place on the alternate
 * screen (clear + home, like top), each line cut to the terminal's width
 * and the list to its height. Anywhere else (a pipe, a file, a test) each
 * frame is printed in full, frames separated by a blank line, so
 * `dlock top --iterations 1` is a plain report.
 *
 * Input. When stdin is the terminal and dlock is its foreground job, the
 * terminal is put in non-canonical mode without echo (signals still work)
 * so that 'q' quits and a space redraws at once; it is restored on every
 * way out, signals included: they are blocked and read from child.c's
 * signalfd, so SIGINT/SIGTERM end the loop rather than the process.
 * Nothing requires a terminal.
 */
#include "cli.h"
#include "child.h"

#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_INTERVAL_MS 1000
#define KEY_COL_MAX 40
#define OWNER_COL_MAX 28

enum { T_INTERVAL = 1, T_ITERATIONS, T_HELP };

static const cli_opt top_opts[] = {
    { "interval", 'n', 1, T_INTERVAL },
    { "iterations", 0, 1, T_ITERATIONS },
    { "help", 'h', 0, T_HELP },
    { NULL, 0, 0, 0 },
};

/* `dlock top --help`. */
static const char top_help[] =
    "Usage: dlock top [--interval D] [--iterations N] [PATTERN]\n"
    "\n"
    "A live view of the locks under the prefix whose key matches PATTERN (a glob,\n"
    "default '*'): who holds each one, how long its TTL still runs, how many wait,\n"
    "and for how long it has been held. One line per lock with a holder or a\n"
    "waiter; the holder shown is the one that has held it longest, \"+N\" counts\n"
    "the others (readers, semaphore permits).\n"
    "\n"
    "At a terminal the view is redrawn in place; press q (or Ctrl-C) to quit, space\n"
    "to refresh now. Otherwise each refresh is printed in full, separated by a\n"
    "blank line.\n"
    "\n"
    "Options:\n"
    "  -n, --interval D    refresh every D (default 1s)\n"
    "      --iterations N  stop after N refreshes (default: until interrupted)\n"
    "  -h, --help          show this help\n"
    "\n"
    "Exit status: 0 (quit, interrupted by SIGINT/SIGTERM, or N refreshes done), 64\n"
    "usage error, 69 Redis unreachable, quorum not reached, authentication failed or\n"
    "a permission missing (at start, or at the last of --iterations), 70 internal\n"
    "error.\n"
    "\n"
    "Examples:\n"
    "  dlock top\n"
    "  dlock top -n 5s 'payment:*'\n"
    "  dlock top --iterations 1 > locks.txt          # one plain snapshot\n";

void cli_usage_top(FILE *out)
{
    fputs(top_help, out);
}

typedef struct top_ctx {
    const cli_globals *g;
    const char *pattern;
    int64_t interval_ms;
    long iterations; /* 0: until told to stop */
    dlock_client *client;
    char server[256];     /* the URL without its password */
    int tty;              /* stdout is a terminal: redraw in place */
    int kbd;              /* keys are read from stdin */
    int tty_in;           /* stdin's terminal settings were changed: */
    struct termios saved; /* ...these are restored at the end */
    int rc;               /* the last scan's result */
    char lasterr[512];    /* ...and its message */
    int signo;            /* the signal that ended the loop */
} top_ctx;

/* "12.3s" for a TTL or an age; "-" when not applicable. */
static void fmt_ms(char *buf, size_t size, int64_t ms, int applicable)
{
    if (!applicable || ms < 0)
        snprintf(buf, size, "-");
    else
        cli_duration_format(buf, size, ms);
}

/* The lines of one lock. Returns 0 or -1 when out of memory. */
static int put_row(FILE *f, const cli_lockrow *r, int keyw)
{
    char *key = cli_text_dup(r->key), *owner = NULL, holders[OWNER_COL_MAX + 32];
    char kind[24], ttl[32], age[32];
    int held = r->nholders > 0;

    if (key == NULL || (held && (owner = cli_text_dup(r->owner)) == NULL)) {
        free(key);
        return -1;
    }
    cli_text_cut(key, (size_t)keyw);
    if (held) {
        cli_text_cut(owner, OWNER_COL_MAX);
        if (r->nholders > 1)
            snprintf(holders, sizeof holders, "%s +%zu", owner, r->nholders - 1);
        else
            snprintf(holders, sizeof holders, "%s", owner);
    } else {
        snprintf(holders, sizeof holders, "-");
    }
    if (r->kind == DLOCK_KIND_SEMAPHORE)
        snprintf(kind, sizeof kind, "semaphore");
    else
        snprintf(kind, sizeof kind, held && r->mode == DLOCK_READ ? "mutex:read" : "mutex");
    fmt_ms(ttl, sizeof ttl, r->ttl_ms, held);
    fmt_ms(age, sizeof age, r->age_ms, held);
    fprintf(f, "%-*s  %-10s  %-*s  %-8s  %7" PRId64 "  %s\n", keyw, key, kind, OWNER_COL_MAX + 6,
            holders, ttl, r->waiters, age);
    free(key);
    free(owner);
    return 0;
}

/* Render one frame (header, columns, rows; or the error of a failed scan)
 * into a new string. Returns it, or NULL when out of memory. */
static char *render_frame(const top_ctx *t, const cli_snapshot *s, int rc, const char *detail)
{
    char *buf = NULL, when[32];
    size_t len = 0, i, keyw = 3;
    FILE *f = open_memstream(&buf, &len);
    time_t now = time(NULL);
    struct tm tm;

    if (f == NULL)
        return NULL;
    if (localtime_r(&now, &tm) == NULL ||
        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm) == 0)
        snprintf(when, sizeof when, "?");
    fputs("dlock top  ", f);
    cli_put_text(f, t->server);
    fputs("  prefix ", f);
    cli_put_text(f, t->g->prefix != NULL ? t->g->prefix : "dlock:");
    if (rc == 0)
        fprintf(f, "  %s  locks held %zu  waiters %" PRId64 "\n", when, s->held, s->waiters);
    else
        fprintf(f, "  %s\n", when);
    if (rc != 0) {
        fputs("error: ", f);
        cli_put_text(f, detail[0] != '\0' ? detail : dlock_strerror(rc));
        fputs(" (retrying)\n", f);
    } else {
        for (i = 0; i < s->n; i++) {
            size_t kl = strlen(s->rows[i].key);
            if (kl > keyw)
                keyw = kl;
        }
        if (keyw > KEY_COL_MAX)
            keyw = KEY_COL_MAX;
        fprintf(f, "%-*s  %-10s  %-*s  %-8s  %7s  %s\n", (int)keyw, "KEY", "KIND",
                OWNER_COL_MAX + 6, "HOLDERS", "TTL", "WAITERS", "AGE");
        for (i = 0; i < s->n; i++) {
            if (put_row(f, &s->rows[i], (int)keyw) != 0) {
                fclose(f);
                free(buf);
                return NULL;
            }
        }
        if (s->n == 0)
            fputs("(no locks held or waited for)\n", f);
    }
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* Write `frame` to stdout. At a terminal: clear, home, and each line cut
 * to the width (on a UTF-8 boundary), the list cut to the height with a
 * last line saying how many lines were left out. */
static void show_frame(const top_ctx *t, const char *frame)
{
    struct winsize ws;
    size_t cols = 0, rows = 0, nlines = 0, shown = 0;
    const char *p;

    if (!t->tty) {
        fputs(frame, stdout);
        fflush(stdout);
        return;
    }
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0) {
        cols = ws.ws_col;
        rows = ws.ws_row;
    }
    for (p = frame; *p != '\0'; p++)
        nlines += *p == '\n';
    fputs("\033[H\033[2J", stdout);
    for (p = frame; *p != '\0';) {
        const char *nl = strchr(p, '\n');
        size_t n = nl != NULL ? (size_t)(nl - p) : strlen(p);
        if (rows > 2 && nlines > rows - 1 && shown == rows - 2) {
            printf("... %zu more lines (a larger window shows them)\n", nlines - shown);
            break;
        }
        if (cols > 0 && n > cols) {
            n = cols;
            while (n > 0 && ((unsigned char)p[n] & 0xC0) == 0x80)
                n--;
        }
        fwrite(p, 1, n, stdout);
        fputc('\n', stdout);
        shown++;
        p = nl != NULL ? nl + 1 : p + strlen(p);
    }
    fflush(stdout);
}

/* Monotonic milliseconds. */
static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleep until the next refresh: `ms`, or less when a key asks for one.
 * Returns 0 to refresh, 1 to quit ('q'), or 2 after a signal (*signo; -1
 * if waiting failed). A terminal that stops giving input (hung up) is no
 * longer read: *kbd becomes 0. */
static int pause_between(cli_child *sig, int64_t ms, int *kbd, int *signo)
{
    int64_t end = now_ms() + ms, left;
    int ready;
    char keys[32];
    ssize_t n, i;

    while ((left = end - now_ms()) > 0) {
        *signo = cli_child_signal_wait(sig, left > INT_MAX ? INT_MAX : (int)left,
                                       *kbd ? STDIN_FILENO : -1, &ready);
        if (*signo != 0)
            return 2;
        if (!ready)
            continue;
        n = read(STDIN_FILENO, keys, sizeof keys);
        if (n <= 0) {
            *kbd = 0;
            continue;
        }
        for (i = 0; i < n; i++) {
            if (keys[i] == 'q' || keys[i] == 'Q')
                return 1;
            if (keys[i] == ' ')
                return 0;
        }
    }
    return 0;
}

/* Parse `dlock top`'s argv into t. Returns -1 to go on, or an exit
 * status. */
static int parse_top(top_ctx *t, int argc, char **argv)
{
    cli_optstate st;
    int npatterns = 0, id;

    cli_opt_init(&st, argc, argv, "dlock top");
    while ((id = cli_opt_next(&st, top_opts)) != CLI_OPT_END) {
        switch (id) {
        case T_INTERVAL:
            if (cli_opt_duration_range(&t->interval_ms, &st, 1, 0) != 0)
                return CLI_EX_USAGE;
            break;
        case T_ITERATIONS:
            if (cli_parse_long(&t->iterations, st.arg, 1, LONG_MAX) != 0)
                return cli_usage_error(st.prog, "--iterations '%s': expected a number of 1 or more",
                                       st.arg);
            break;
        case T_HELP:
            cli_usage_top(stdout);
            return CLI_EX_OK;
        case CLI_OPT_POSITIONAL:
            t->pattern = st.arg;
            npatterns++;
            break;
        case CLI_OPT_DASHDASH:
            for (; st.ind < argc; st.ind++, npatterns++)
                t->pattern = argv[st.ind];
            break;
        default:
            return CLI_EX_USAGE;
        }
    }
    if (npatterns > 1)
        return cli_usage_error(st.prog, "one PATTERN at most (quote it: 'payment:*')");
    if (t->pattern == NULL)
        t->pattern = "*";
    if (t->pattern[0] == '\0')
        return cli_usage_error(st.prog, "PATTERN is empty");
    return -1;
}

/* Take over the terminal: keys without Enter and without echo when stdin
 * is our terminal and we are its foreground job; the alternate screen
 * without a cursor when stdout is a terminal. */
static void terminal_enter(top_ctx *t)
{
    struct termios raw;

    if (isatty(STDIN_FILENO) && tcgetpgrp(STDIN_FILENO) == getpgrp() &&
        tcgetattr(STDIN_FILENO, &t->saved) == 0) {
        raw = t->saved;
        raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
        raw.c_cc[VMIN] = 1;
        raw.c_cc[VTIME] = 0;
        t->kbd = t->tty_in = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
    }
    if (t->tty)
        fputs("\033[?1049h\033[?25l", stdout);
}

/* Give the terminal back as terminal_enter() found it. */
static void terminal_leave(top_ctx *t)
{
    if (t->tty)
        fputs("\033[?25h\033[?1049l", stdout);
    if (t->tty_in)
        tcsetattr(STDIN_FILENO, TCSANOW, &t->saved);
}

/* Scan, render and show frames until --iterations ran out (returns 0),
 * 'q' (1), a signal (2, t->signo; -1 if waiting failed) or out of memory
 * (-1). t->rc and t->lasterr keep the last scan's outcome. */
static int refresh_loop(top_ctx *t, cli_child *sig)
{
    cli_snapshot s;
    char *frame;
    long i;
    int why = 0;

    for (i = 0; t->iterations == 0 || i < t->iterations; i++) {
        t->rc = cli_snapshot_take(&s, t->client, t->pattern);
        snprintf(t->lasterr, sizeof t->lasterr, "%s", t->rc != 0 ? dlock_last_errmsg() : "");
        frame = render_frame(t, &s, t->rc, t->lasterr);
        cli_snapshot_free(&s);
        if (frame == NULL)
            return -1;
        if (i > 0 && !t->tty)
            fputc('\n', stdout);
        show_frame(t, frame);
        free(frame);
        if (ferror(stdout) || (t->iterations != 0 && i + 1 == t->iterations))
            break;
        why = pause_between(sig, t->interval_ms, &t->kbd, &t->signo);
        if (why != 0)
            break;
    }
    return why;
}

/* `dlock top`: parse, then refresh until told to stop. */
int cli_cmd_top(const cli_globals *g, int argc, char **argv)
{
    cli_child sig;
    top_ctx t;
    int ex, why;

    memset(&t, 0, sizeof t);
    t.g = g;
    t.interval_ms = DEFAULT_INTERVAL_MS;
    if ((ex = parse_top(&t, argc, argv)) >= 0)
        return ex;
    cli_url_display(t.server, sizeof t.server, g->url);
    t.tty = isatty(STDOUT_FILENO);

    ex = cli_child_init(&sig);
    if (ex == 0)
        ex = cli_client_open(&t.client, g);
    if (ex == 0) {
        terminal_enter(&t);
        why = refresh_loop(&t, &sig);
        terminal_leave(&t);
        if (why < 0 || (why == 2 && t.signo < 0)) {
            if (why < 0)
                cli_err("out of memory");
            ex = CLI_EX_SOFTWARE;
        } else if (why == 2) {
            ex = t.signo == SIGINT || t.signo == SIGTERM ? CLI_EX_OK : 128 + t.signo;
        } else if (why == 0 && t.rc != 0) {
            /* --iterations ran out on a failed scan: say so in the status. */
            ex = cli_fail(NULL, t.rc, t.lasterr);
        }
    }
    dlock_client_close(t.client);
    cli_child_cleanup(&sig);
    return ex;
}
