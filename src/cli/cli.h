/*
 * cli.h — what the pieces of the `dlock` tool share.
 *
 * The tool is a thin layer over the public API in <dlock.h> and nothing
 * else: no internal header of the library and no hiredis. main.c parses the
 * global options into a cli_globals and hands the rest of argv to one
 * command function (one file per command: run.c, status.c, unlock.c, ...).
 * A command function returns the process exit status; it never calls exit()
 * itself, so every command cleans up on every path and tools like valgrind
 * see no leaks. Commands that run a program under a lock (run, later elect)
 * share child.c/child.h: signals, process group, terminal, waiting.
 *
 * Also here: the exit codes of the CLI contract (DESIGN.md), a small option
 * parser (opt.c) that every command uses the same way, and the helpers for
 * messages, error reporting and text escaping (util.c). Durations are in
 * duration.c/duration.h.
 *
 * Commands that look at many locks (metrics, top) share scan.c: one walk
 * over the keyspace with dlock_scan(), kept as rows in a cli_snapshot.
 * Commands that wait for signals without running CMD (leader --watch,
 * metrics --listen, top) use child.c's signal part only.
 *
 * Adding a command: write its file with cli_cmd_NAME() and cli_usage_NAME(),
 * declare them below, add a line to the table in main.c.
 */
#ifndef DLOCK_CLI_H
#define DLOCK_CLI_H

#include <stdint.h>
#include <stdio.h>

#include <dlock.h>

#include "duration.h"

#if defined(__GNUC__)
#define CLI_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define CLI_PRINTF(f, a)
#endif

/* Exit statuses (DESIGN.md, "CLI contract"). The numbers follow BSD
 * sysexits.h where one fits (64 EX_USAGE, 69 EX_UNAVAILABLE, 70 EX_SOFTWARE,
 * 75 EX_TEMPFAIL); 79 is dlock's own; 126/127 are the shell's. */
enum {
    CLI_EX_OK = 0,
    CLI_EX_NOLEADER = 3,     /* `dlock leader`: there is no leader */
    CLI_EX_NONE = 3,         /* the same for `dlock latch get`: no such latch */
    CLI_EX_USAGE = 64,       /* usage error or invalid argument */
    CLI_EX_UNAVAILABLE = 69, /* backend unreachable, quorum, authentication */
    CLI_EX_SOFTWARE = 70,    /* internal error or unexpected reply */
    CLI_EX_TEMPFAIL = 75,    /* lock not acquired (busy, or the wait ran out) */
    CLI_EX_LOST = 79,        /* the lock was lost while CMD ran */
    CLI_EX_NOEXEC = 126,     /* CMD could not be run */
    CLI_EX_NOTFOUND = 127    /* CMD was not found */
};

/* The global options, after defaults from the environment were applied.
 * Strings point into argv or the environment, except `password`, which is
 * owned (read from --password-file) or points into the environment. */
typedef struct cli_globals {
    const char *url;        /* never NULL */
    const char *prefix;     /* NULL = library default */
    const char *owner_id;   /* NULL = library default (hostname:pid) */
    const char *password;   /* NULL = from the URL */
    int connect_timeout_ms; /* 0 = library default */
    int quiet;              /* -q: print errors only */
} cli_globals;

/* One command of the tool. `run` gets argv with argv[0] = the command's name
 * and returns the exit status; `usage` prints the command's full help. */
typedef struct cli_command {
    const char *name;
    const char *summary; /* one line for `dlock --help` */
    int (*run)(const cli_globals *g, int argc, char **argv);
    void (*usage)(FILE *out);
} cli_command;

/* Commands (one file each). */
int cli_cmd_run(const cli_globals *g, int argc, char **argv);
void cli_usage_run(FILE *out);
int cli_cmd_status(const cli_globals *g, int argc, char **argv);
void cli_usage_status(FILE *out);
int cli_cmd_unlock(const cli_globals *g, int argc, char **argv);
void cli_usage_unlock(FILE *out);
int cli_cmd_elect(const cli_globals *g, int argc, char **argv);
void cli_usage_elect(FILE *out);
int cli_cmd_leader(const cli_globals *g, int argc, char **argv);
void cli_usage_leader(FILE *out);
int cli_cmd_metrics(const cli_globals *g, int argc, char **argv);
void cli_usage_metrics(FILE *out);
int cli_cmd_top(const cli_globals *g, int argc, char **argv);
void cli_usage_top(FILE *out);
int cli_cmd_latch(const cli_globals *g, int argc, char **argv);
void cli_usage_latch(FILE *out);
int cli_cmd_barrier(const cli_globals *g, int argc, char **argv);
void cli_usage_barrier(FILE *out);

/* The engine of `dlock run` and `dlock elect` (run.c): parse argv as the
 * command `elect` (0: run, 1: elect) takes it, acquire, run CMD under the
 * lock, release. Returns the exit status. */
int cli_run_command(const cli_globals *g, int argc, char **argv, int elect);

/* ---------------------------------------------------------------- opt.c */

/* Option table entry: `name` is the long name without "--" (NULL ends the
 * table), `short_name` a letter or 0, `has_arg` 0 or 1, `id` what
 * cli_opt_next() returns for it (> 0). */
typedef struct cli_opt {
    const char *name;
    int short_name;
    int has_arg;
    int id;
} cli_opt;

/* Iterator state: fill in argc/argv/ind (first index to look at) and `prog`
 * (the name used in messages, e.g. "dlock run"); the rest starts zeroed. */
typedef struct cli_optstate {
    int argc;
    char **argv;
    int ind; /* next argv index */
    const char *prog;
    const char *arg; /* option argument, or the positional argument */
    char opt[64];    /* the last option as "--name" or "-x", for messages */
    int sub;         /* position inside a bundle of short options */
} cli_optstate;

enum {
    CLI_OPT_END = 0,         /* argv exhausted */
    CLI_OPT_POSITIONAL = -1, /* a non-option argument: in st->arg */
    CLI_OPT_DASHDASH = -2,   /* "--": st->ind is the index after it */
    CLI_OPT_ERROR = -3       /* unknown option or missing argument (printed) */
};

/* Start iterating over argv[1..argc) for the command `prog`. */
void cli_opt_init(cli_optstate *st, int argc, char **argv, const char *prog);

int cli_opt_next(cli_optstate *st, const cli_opt *opts);

/* Parse the current option's value (st->arg) as a duration into *out,
 * within [min_ms, max_ms]; max_ms 0 means the general maximum
 * (CLI_DURATION_MAX_MS, which the parser itself enforces). Returns 0, or
 * prints a usage error in the CLI's terms and returns -1:
 *   dlock run: --ttl 1ms is below the minimum of 10ms
 *   dlock run: --ttl '1m30x': unknown unit (use h, m, s or ms; ...) */
int cli_opt_duration_range(int64_t *out, const cli_optstate *st, int64_t min_ms, int64_t max_ms);

/* cli_opt_duration_range() with no minimum and the general maximum. */
int cli_opt_duration(int64_t *out, const cli_optstate *st);

/* Parse the current option's value (st->arg) as a rate "N/D": N starts
 * (1 to 1000000) per duration D (at least 1ms), e.g. "10/1s", "100/1m".
 * Returns 0 with *count and *period_ms set, or prints a usage error in the
 * CLI's terms and returns -1:
 *   dlock run: --rate '0/1s': N must be from 1 to 1000000
 *   dlock run: --rate '5/0s': the period must be at least 1ms */
int cli_opt_rate(int *count, int64_t *period_ms, const cli_optstate *st);

/* Check a user key before it reaches the library: not empty, at most
 * DLOCK_KEY_MAX bytes. Returns 0, or prints a usage error for `prog` and
 * returns CLI_EX_USAGE. */
int cli_check_key(const char *prog, const char *key);

/* ---------------------------------------------------------------- util.c */

/* "dlock: ..." on stderr. */
void cli_err(const char *fmt, ...) CLI_PRINTF(1, 2);

/* "dlock: KEY: ..." on stderr, the key escaped and cut to 60 bytes. */
void cli_key_err(const char *key, const char *fmt, ...) CLI_PRINTF(2, 3);

/* The same about several keys: "dlock: KEY (+N more keys): ...", where
 * KEY is the first and `more` the number of others (0: as cli_key_err). */
void cli_keys_err(const char *key, size_t more, const char *fmt, ...) CLI_PRINTF(3, 4);

/* A usage error: "PROG: message" and "Try 'PROG --help'." on stderr.
 * Returns CLI_EX_USAGE so callers can `return cli_usage_error(...)`. */
int cli_usage_error(const char *prog, const char *fmt, ...) CLI_PRINTF(2, 3);

/* Report a failed library call on stderr: "dlock: CONTEXT: DETAIL (NOTE)"
 * where DETAIL is the library's message or, if that is empty,
 * dlock_strerror(code). `detail` must be the dlock_last_errmsg() captured
 * right after the failure (or NULL). `context` (a key) is left out when
 * DETAIL already names it; `context` and `note` may be NULL. */
void cli_report(const char *context, int code, const char *detail, const char *note);

/* The exit status for a library error: 69 unreachable/auth/quorum, 64
 * invalid argument, 70 anything else. */
int cli_exit_for(int code);

/* 1 if a failure's detail is Redis refusing a command, key or channel to
 * the ACL user ("NOPERM ..."). */
int cli_is_noperm(const char *detail);

/* Report a failed library call (as cli_report, with `detail` the
 * dlock_last_errmsg() captured right after it) and return its exit status
 * (cli_exit_for). A permission denial (NOPERM) exits 69 whichever code the
 * library gave it, and its message points to the ACL rule in the README. */
int cli_fail(const char *context, int code, const char *detail);

/* Open the client the global options describe. Returns 0 and sets *out, or
 * reports the failure and returns the exit status to use. */
int cli_client_open(dlock_client **out, const cli_globals *g);

/* Strict integer parsing: the whole string, no sign games, within
 * [min, max]. Returns 0 or -1. */
int cli_parse_long(long *out, const char *s, long min, long max);

/* Write `s` for a terminal or a log: printable ASCII and valid UTF-8 as is,
 * control characters and invalid bytes as \xNN. */
void cli_put_text(FILE *out, const char *s);

/* Write `s` as a JSON string with its quotes: ", \ and control characters
 * escaped, valid UTF-8 copied, invalid bytes replaced by U+FFFD. */
void cli_put_json_string(FILE *out, const char *s);

/* Write `s` as the inside of a Prometheus label value: \\, \" and \n
 * escaped, valid UTF-8 copied, invalid bytes replaced by U+FFFD (the text
 * format must be UTF-8). */
void cli_put_prom_label(FILE *out, const char *s);

/* `s` escaped as cli_put_text() writes it, in a new string (free() it), or
 * NULL when out of memory. */
char *cli_text_dup(const char *s);

/* Cut `s` (a string made by cli_text_dup) to at most `max` bytes, on a
 * UTF-8 character boundary, ending in "..." when something was cut. */
void cli_text_cut(char *s, size_t max);

/* Copy `url` into buf for display, with any user:password part replaced
 * by "***@" (a URL may carry a password; output can be shared). */
void cli_url_display(char *buf, size_t size, const char *url);

/* ---------------------------------------------------------------- held.c */

/* One hold of an outer `dlock run`, from DLOCK_HELD (see held.c). */
typedef struct cli_held_entry {
    long pid;  /* the dlock that holds it */
    char kind; /* 'w' the mutex (run, several keys, elect), 'r' read, 's' permits */
    uint64_t fence;
    int slot;                       /* 's': the first slot, else -1 */
    int permits;                    /* 's': permits held, else 1 */
    int limit;                      /* 's': the semaphore's limit, else 0 */
    const char *url, *prefix, *key; /* decoded */
} cli_held_entry;

/* The holds of the outer runs that are ancestors of this process. */
typedef struct cli_held {
    const char *inherited; /* DLOCK_HELD as inherited, or NULL */
    char *text;            /* a decoded copy the entries point into */
    cli_held_entry *v;
    size_t n;
} cli_held;

/* Read DLOCK_HELD into *h, keeping the lines of outer runs that are
 * ancestors of this process (malformed lines are reported unless quiet,
 * and ignored). Returns 0 or an exit status (reported). Free with
 * cli_held_free(), also after a failure. */
int cli_held_load(cli_held *h, int quiet);
void cli_held_free(cli_held *h);

/* The outer hold that covers `key` for a run that wants `kind` ('w', 'r',
 * or 's' with `limit` and `permits`) on deployment `url` (as displayed)
 * with `prefix`, or NULL. */
const cli_held_entry *cli_held_cover(const cli_held *h, const char *url, const char *prefix,
                                     const char *key, char kind, int limit, int permits);

/* Ask the server whether the acquisition of e still holds its key (the
 * same fencing token). Returns 1 yes, 0 no, or a library error code. */
int cli_held_still(dlock_client *client, const cli_held_entry *e);

/* 1 while the dlock that holds e is still an ancestor of this process
 * (alive, and we are still in its process tree); 0 once it is gone. */
int cli_held_outer_alive(const cli_held_entry *e);

/* `inherited` (may be NULL) with the lines of add[0..n) appended: the
 * DLOCK_HELD for CMD. A new string (free() it), or NULL when out of
 * memory. */
char *cli_held_append(const char *inherited, const cli_held_entry *add, size_t n);

/* The first lines of the exit-status table in `dlock run --help` and
 * `dlock elect --help` (the rest differs). */
#define CLI_HELP_EXIT_COMMON                                                                       \
    "Exit status:\n"                                                                               \
    "  CMD's    CMD ran; 128+N if signal N ended it\n"                                             \
    "  64       usage error or invalid argument\n"                                                 \
    "  69       Redis unreachable, Redlock quorum not reached, authentication failed,\n"           \
    "           or the Redis user lacks a permission (ACL)\n"                                      \
    "  70       internal error or unexpected reply\n"

/* -------------------------------------------------------- metrics_file.c */

/* Write client's metrics to `path` through a temporary file and rename(2).
 * Reports a failure on stderr; the caller's exit status does not depend on
 * it. */
void cli_write_metrics_file(dlock_client *client, const char *path);

/* ---------------------------------------------------------------- busy.c */

/* A lock that `run` or `elect` did not get. */
typedef struct cli_busy {
    const char *const *keys; /* the keys asked for */
    size_t nkeys;
    int kind;          /* DLOCK_KIND_MUTEX or DLOCK_KIND_SEMAPHORE */
    int limit;         /* the semaphore's permits */
    int permits;       /* permits wanted at once (--permits), 1 by default */
    int leader;        /* 1: a leadership (elect) */
    int shared;        /* 1: the read side (run --shared) */
    int64_t waited_ms; /* the wait that ran out; -1: busy at once (--no-wait) */
} cli_busy;

/* Say on stderr that the lock was not acquired, naming the holder (owner
 * id, for how long) and, with several keys, the key that was busy; looks
 * at the keys with dlock_key_state_get() (a round trip each). */
void cli_report_busy(dlock_client *client, const cli_busy *b);

/* ---------------------------------------------------------------- scan.c */

/* One lock found by a scan: a key of one kind that has holders or waiters.
 * The holder shown is the one that has held the lock longest. */
typedef struct cli_lockrow {
    char *key; /* owned */
    int kind;  /* DLOCK_KIND_MUTEX or DLOCK_KIND_SEMAPHORE */
    size_t nholders;
    int64_t waiters;
    char owner[256]; /* the oldest holder ("" when none) */
    int mode;        /* its dlock_holder.mode */
    int slot;        /* its slot, -1 unless a semaphore permit */
    int64_t ttl_ms;  /* its server-side TTL */
    int64_t age_ms;  /* its age: the oldest holder's age */
} cli_lockrow;

/* Every lock under the prefix whose key matches a pattern, in the order
 * dlock_scan() gives them (sorted by key), with totals. */
typedef struct cli_snapshot {
    cli_lockrow *rows;
    size_t n, cap;
    size_t held;     /* rows with at least one holder */
    int64_t waiters; /* sum of waiters */
} cli_snapshot;

/* Fill *out (zeroed first) from dlock_scan(client, pattern). Returns 0 or
 * the library's error code (dlock_last_errmsg() says more); on an error
 * *out is left empty. Free with cli_snapshot_free() in either case. */
int cli_snapshot_take(cli_snapshot *out, dlock_client *client, const char *pattern);
void cli_snapshot_free(cli_snapshot *s);

/* "mutex" / "semaphore"; "write" / "read" / "permit". */
const char *cli_kind_name(int kind);
const char *cli_mode_name(int mode);

#endif /* DLOCK_CLI_H */
