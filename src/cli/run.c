/*
 * run.c — `dlock run [OPTIONS] KEY... -- CMD [ARG...]`: hold a lock while
 * CMD runs; and the engine that `dlock elect` (elect.c) runs on too.
 *
 * What is held depends on the options, and only step 3 differs:
 *
 *     dlock run KEY                 the mutex KEY          dlock_acquire
 *     dlock run --shared KEY        KEY's read side        dlock_rw_acquire(READ)
 *     dlock run --limit N KEY       one of N permits       dlock_sem_acquire
 *     ... --limit N --permits K     K of N permits         dlock_sem_acquire_n
 *     dlock run KEY1 KEY2 ...       all KEYs, or none      dlock_acquire_all
 *     dlock elect KEY               leadership of KEY      dlock_campaign
 *     dlock run --rate N/D KEY      a slot, nothing held   dlock_rate_acquire
 *
 * Whatever is held is one dlock_lock handle, auto-renewed and lost-signalled
 * the same way, so the rest of the life of a run is the same for all. A
 * --rate run holds nothing: it waits for its slot, then runs CMD with no
 * lock to watch. A nested run (held.c) whose KEYs an outer run of the same
 * process tree holds runs at once under that hold: it only asks the server
 * whether the outer hold still stands, before CMD and after; with several
 * KEYs of which the outer run holds some, it acquires the others.
 *
 *  1. Parse. Everything after "--" is CMD, untouched.
 *  2. Signals (child.c): blocked and read from a signalfd before the
 *     library starts its threads.
 *  3. Acquire (what no outer run holds). The call may wait forever; meanwhile child.c's watcher
 *     thread turns SIGINT/SIGTERM/... into a cancellation, and dlock exits
 *     128+N without running CMD. Busy or timed out → 75 (or
 *     --conflict-exit-code); unreachable/auth → 69; bad input → 64; else 70.
 *  4. Spawn CMD (child.c) with DLOCK_KEY and DLOCK_FENCING_TOKEN (the first
 *     key's), DLOCK_KEYS and DLOCK_FENCING_TOKENS (all of them, in the
 *     order given, duplicates once), for permits DLOCK_SLOT and
 *     DLOCK_PERMITS, and DLOCK_HELD (what is held, for nested runs).
 *  5. Supervise. child.c waits for CMD and forwards signals; check_lock()
 *     below runs on every wake-up (the on-lost callback writes to the wake
 *     pipe; otherwise every 100 ms): renewal failing and validity down to
 *     --grace → SIGTERM to CMD's group; lock no longer held → SIGKILL. In
 *     either case dlock exits 79 once CMD is gone, so nothing of CMD runs
 *     unprotected and the caller knows.
 *  6. Release after CMD exited. A failed release is reported but does not
 *     change the exit status (the TTL frees the lock). A nested run
 *     releases nothing; it looks whether the outer hold lasted (else 79).
 *  7. --metrics-file: the client's metrics (dlock_metrics_write) go to the
 *     file, whatever the outcome, as long as a client was opened. Written
 *     to PATH.tmp.<pid> and renamed, so node_exporter's textfile collector
 *     never reads half a file. A failure is reported and, like a failed
 *     release, does not change the exit status.
 */
#include "cli.h"
#include "child.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEFAULT_TTL_MS (30 * 1000)
#define DEFAULT_GRACE_MS (5 * 1000)
#define LIMIT_MAX 100000        /* the library's bound on permits */
#define TTL_MIN_MS 10           /* the library's minimum: its drift allowance needs it */
#define DEFAULT_PREFIX "dlock:" /* the library's, when --prefix is not given */

/* What a run holds (see the table at the top). */
enum { HOLD_MUTEX, HOLD_SHARED, HOLD_PERMIT, HOLD_ALL, HOLD_LEADER, HOLD_RATE };

typedef struct run_opts {
    const char *prog; /* "dlock run" / "dlock elect", for messages */
    int hold;         /* HOLD_* */
    int64_t ttl_ms;
    int64_t wait_ms; /* DLOCK_WAIT_FOREVER, 0 (--no-wait) or > 0 */
    int64_t grace_ms;
    int conflict_exit;      /* exit status when the lock is not acquired */
    int limit;              /* --limit N, 0 without */
    int permits;            /* --permits K (1 without) */
    int rate_count;         /* --rate N/D: N, 0 without */
    int64_t rate_period_ms; /* and D */
    const char *keys[DLOCK_MULTI_MAX];
    size_t nkeys;
    const char *key;          /* keys[0] */
    const char *metrics_file; /* NULL without --metrics-file */
    char **cmd;               /* NULL-terminated, points into argv */
} run_opts;

typedef struct run_ctx {
    const cli_globals *g;
    run_opts o;
    cli_child child;
    int wake_fd; /* child.c's wake pipe, for the on-lost callback */
    dlock_cancel *cancel;
    dlock_client *client;
    dlock_lock *lock;
    int termed; /* SIGTERM sent because of lock trouble */
    int killed; /* SIGKILL sent because the lock was lost */
    /* nested runs (held.c): the outer holds, the one covering each key */
    cli_held held;
    char url_id[1024]; /* the URL as DLOCK_HELD names it */
    const char *prefix;
    const cli_held_entry *cover[DLOCK_MULTI_MAX];
    size_t ncovered;
    const char *acq_keys[DLOCK_MULTI_MAX]; /* the keys to acquire: not covered */
    size_t nacq;
    int ran_free; /* CMD may run without a lock of its own (--rate, nested) */
} run_ctx;

enum {
    R_TTL = 1,
    R_WAIT,
    R_NO_WAIT,
    R_GRACE,
    R_CONFLICT,
    R_LIMIT,
    R_PERMITS,
    R_RATE,
    R_SHARED,
    R_METRICS,
    R_HELP
};

static const cli_opt run_opts_table[] = {
    { "ttl", 0, 1, R_TTL },
    { "wait", 0, 1, R_WAIT },
    { "no-wait", 0, 0, R_NO_WAIT },
    { "grace", 0, 1, R_GRACE },
    { "conflict-exit-code", 0, 1, R_CONFLICT },
    { "limit", 0, 1, R_LIMIT },
    { "permits", 0, 1, R_PERMITS },
    { "rate", 0, 1, R_RATE },
    { "shared", 0, 0, R_SHARED },
    { "metrics-file", 0, 1, R_METRICS },
    { "help", 'h', 0, R_HELP },
    { NULL, 0, 0, 0 },
};

/* `dlock elect` takes the options that make sense for one leadership. */
static const cli_opt elect_opts_table[] = {
    { "ttl", 0, 1, R_TTL },
    { "wait", 0, 1, R_WAIT },
    { "no-wait", 0, 0, R_NO_WAIT },
    { "grace", 0, 1, R_GRACE },
    { "conflict-exit-code", 0, 1, R_CONFLICT },
    { "metrics-file", 0, 1, R_METRICS },
    { "help", 'h', 0, R_HELP },
    { NULL, 0, 0, 0 },
};

/* `dlock run --help`. */
static const char run_help[] =
    "Usage: dlock run [OPTIONS] KEY -- CMD [ARG...]\n"
    "       dlock run [OPTIONS] --shared KEY -- CMD [ARG...]\n"
    "       dlock run [OPTIONS] --limit N [--permits K] KEY -- CMD [ARG...]\n"
    "       dlock run [OPTIONS] KEY1 KEY2... -- CMD [ARG...]\n"
    "       dlock run [--wait D | --no-wait] --rate N/D KEY -- CMD [ARG...]\n"
    "\n"
    "Hold the lock KEY while CMD runs: wait for the lock, start CMD, keep the lock\n"
    "alive in the background while CMD runs, release it when CMD exits. Only one\n"
    "holder of KEY runs at a time, across all machines using the same Redis.\n"
    "dlock's exit status is CMD's.\n"
    "\n"
    "  KEY1 KEY2...  hold all the keys at once, or wait: all-or-nothing, so two\n"
    "                runs taking the same keys in any order never deadlock\n"
    "                (at most 64 keys)\n"
    "  --shared      the read side of KEY, like flock -s: any number of --shared\n"
    "                runs together, while a plain run of KEY (the write side)\n"
    "                waits for them, and they for it\n"
    "  --limit N     a semaphore: one of N permits of KEY (N from 1 to 100000), so\n"
    "                at most N runs at once. Each permit has a slot number from\n"
    "                0 to N-1, unique among the current holders: a pool of N\n"
    "                resources. A semaphore KEY is separate from the lock KEY.\n"
    "  --permits K   with --limit N: K of the N permits at once (1 to N), all or\n"
    "                none; a large request waits its turn and is not overtaken\n"
    "  --rate N/D    a rate limit, not a lock: at most N starts of CMD per\n"
    "                duration D (bursts of up to N), across all machines. Waits\n"
    "                for the next slot (--wait D bounds it, --no-wait: exit 75\n"
    "                when over the rate), then runs CMD, holding nothing.\n"
    "\n"
    "Nested runs are reentrant: a 'dlock run KEY' started by the CMD of a\n"
    "'dlock run KEY' (same -u URL, same prefix) runs its CMD at once under the\n"
    "outer hold, after asking the server that the outer hold still stands\n"
    "(else exit 79). A writer covers --shared; permits cover --permits as many\n"
    "or fewer of the same --limit. The outer run says what it holds in\n"
    "DLOCK_HELD (fencing tokens, never the lock's secret token).\n"
    "\n"
    "Options (before '--'):\n"
    "      --ttl D                 lock time-to-live (default 30s, at least 10ms). The\n"
    "                              lock is renewed while CMD runs; the TTL bounds how\n"
    "                              long a crashed dlock keeps others waiting.\n"
    "      --wait D                wait at most D for the lock, then exit 75\n"
    "                              (default: wait as long as it takes)\n"
    "      --no-wait               one attempt: exit 75 at once if KEY is held\n"
    "                              (the message names the holder and for how long\n"
    "                              it has held the lock, and the busy KEY)\n"
    "      --grace D               if renewal keeps failing, CMD gets SIGTERM when D of\n"
    "                              the lock's validity is left, SIGKILL when none is\n"
    "                              (default 5s, or a third of --ttl if that is less;\n"
    "                              must be shorter than --ttl)\n"
    "      --conflict-exit-code N  exit N (0-255) instead of 75 when the lock is not\n"
    "                              acquired\n"
    "      --shared                take the read side of KEY (see above)\n"
    "      --limit N               take one of N permits of KEY (see above)\n"
    "      --permits K             with --limit: take K permits at once (see above)\n"
    "      --rate N/D              wait for a slot of a rate limit of N per D (see\n"
    "                              above); N from 1 to 1000000, D at least 1ms\n"
    "      --metrics-file F        when dlock ends, write its client metrics\n"
    "                              (Prometheus text: acquisitions, wait and hold\n"
    "                              times, renewals) to F, atomically, for\n"
    "                              node_exporter's textfile collector; also after\n"
    "                              exit 75 or 79\n"
    "  -h, --help                  show this help\n"
    "\n"
    "CMD's environment:\n"
    "  DLOCK_KEY              the key (with several keys: the first)\n"
    "  DLOCK_FENCING_TOKEN    a number that grows with every acquisition of the key;\n"
    "                         pass it to what you protect, and let it refuse writes\n"
    "                         that carry a smaller token than it has seen (a stale\n"
    "                         holder). With several keys: the first key's.\n"
    "  DLOCK_KEYS             all keys held, separated by spaces (duplicates once)\n"
    "  DLOCK_FENCING_TOKENS   their fencing tokens, in the same order\n"
    "  DLOCK_SLOT             with --limit: the permit's slot, 0 to N-1 (the first\n"
    "                         one with --permits)\n"
    "  DLOCK_PERMITS          with --limit: the number of permits held\n"
    "  DLOCK_HELD             what this run and the runs around it hold, one line\n"
    "                         per key: what a nested 'dlock run' reads\n"
    "  (--rate sets DLOCK_KEY only: nothing is held)\n"
    "\n"
    "CMD runs in its own process group. SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to\n"
    "dlock are passed on to that group; the lock is released after CMD exits. If\n"
    "dlock dies, CMD gets SIGKILL. At a terminal CMD gets the terminal, so it can\n"
    "prompt, and Ctrl-C reaches it; Ctrl-Z stops CMD and dlock (a stopped dlock\n"
    "renews nothing: stopped for longer than --ttl, the lock is lost).\n"
    "\n"
    "Durations (D): 250ms, 10s, 1.5s, 2m, 1h, 1m30s; a bare number is ms; at most\n"
    "8760h.\n"
    "\n"
    "Exit status:\n"
    "  CMD's    CMD ran; 128+N if signal N ended it\n"
    "  64       usage error or invalid argument\n"
    "  69       Redis unreachable, Redlock quorum not reached, authentication failed,\n"
    "           or the Redis user lacks a permission (ACL)\n"
    "  70       internal error or unexpected reply\n"
    "  75       lock not acquired: busy with --no-wait, or --wait ran out; with\n"
    "           --rate: over the rate (--no-wait), or no slot within --wait\n"
    "  79       the lock was lost while CMD ran (CMD got SIGTERM and/or SIGKILL,\n"
    "           or the lock was found gone when CMD finished); nested: the outer\n"
    "           run's lock was gone before or after CMD\n"
    "  126/127  CMD could not be run / was not found\n"
    "  128+N    dlock got signal N while waiting for the lock (CMD never started)\n"
    "\n"
    "Examples:\n"
    "  dlock run nightly-backup -- /usr/local/bin/backup.sh\n"
    "  dlock run --no-wait \"job:$id\" -- ./process \"$id\"   # 75: another worker has it\n"
    "  dlock run --wait 10s --ttl 1m deploy -- sh -c 'make && make deploy'\n"
    "  dlock run --limit 4 gpu -- sh -c 'CUDA_VISIBLE_DEVICES=$DLOCK_SLOT ./train'\n"
    "  dlock run --limit 8 --permits 3 cpu -- make -j3        # 3 of 8 at once\n"
    "  dlock run --rate 10/1s api -- curl \"$URL\"              # 10 calls a second\n"
    "  dlock run account:17 account:42 -- ./transfer 17 42     # both, or wait\n"
    "  dlock run --shared catalog -- ./read-catalog   # many readers at once;\n"
    "  dlock run catalog -- ./rebuild-catalog        # the writer runs alone\n"
    "  dlock run --metrics-file /var/lib/node_exporter/backup.prom backup -- ./backup\n";

void cli_usage_run(FILE *out)
{
    fputs(run_help, out);
}

/* What parse_args() collects besides run_opts. */
typedef struct run_parse {
    int elect;
    int wait_set, no_wait, grace_set, shared, ttl_set, permits_set;
    size_t nkeys; /* KEYs seen, also beyond DLOCK_MULTI_MAX */
} run_parse;

/* Find the "--" that starts CMD; its index, or argc after printing help
 * (*ex 0) or a usage error (*ex 64). Looking for it first matters: without
 * it, CMD's own options ("ls -l") would be reported as unknown options of
 * ours, which misleads. */
static int find_cmd(int argc, char **argv, const char *prog, int elect, int *ex)
{
    int dd, i;

    for (dd = 1; dd < argc && strcmp(argv[dd], "--") != 0; dd++)
        ;
    if (dd < argc)
        return dd;
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            (elect ? cli_usage_elect : cli_usage_run)(stdout);
            *ex = CLI_EX_OK;
            return argc;
        }
    }
    *ex = cli_usage_error(prog, "missing '--' between KEY and CMD (%s KEY -- CMD [ARG...])", prog);
    return argc;
}

/* One option or KEY of run/elect (id from cli_opt_next). Returns -1 to go
 * on, or an exit status: 0 after --help, 64 after a usage error (printed). */
static int run_option(run_opts *o, run_parse *p, const cli_optstate *st, int id)
{
    long n;

    switch (id) {
    case R_TTL:
        p->ttl_set = 1;
        return cli_opt_duration_range(&o->ttl_ms, st, TTL_MIN_MS, 0) == 0 ? -1 : CLI_EX_USAGE;
    case R_WAIT:
        p->wait_set = 1;
        return cli_opt_duration(&o->wait_ms, st) == 0 ? -1 : CLI_EX_USAGE;
    case R_NO_WAIT:
        p->no_wait = 1;
        return -1;
    case R_GRACE:
        p->grace_set = 1;
        return cli_opt_duration(&o->grace_ms, st) == 0 ? -1 : CLI_EX_USAGE;
    case R_CONFLICT:
        if (cli_parse_long(&n, st->arg, 0, 255) != 0)
            return cli_usage_error(st->prog,
                                   "--conflict-exit-code '%s': expected a number from "
                                   "0 to 255",
                                   st->arg);
        o->conflict_exit = (int)n;
        return -1;
    case R_LIMIT:
        if (cli_parse_long(&n, st->arg, 1, LIMIT_MAX) != 0)
            return cli_usage_error(st->prog, "--limit '%s': expected a number from 1 to %d",
                                   st->arg, LIMIT_MAX);
        o->limit = (int)n;
        return -1;
    case R_PERMITS:
        if (cli_parse_long(&n, st->arg, 1, LIMIT_MAX) != 0)
            return cli_usage_error(st->prog, "--permits '%s': expected a number from 1 to %d",
                                   st->arg, LIMIT_MAX);
        o->permits = (int)n;
        p->permits_set = 1;
        return -1;
    case R_RATE:
        return cli_opt_rate(&o->rate_count, &o->rate_period_ms, st) == 0 ? -1 : CLI_EX_USAGE;
    case R_SHARED:
        p->shared = 1;
        return -1;
    case R_METRICS:
        if (st->arg[0] == '\0')
            return cli_usage_error(st->prog, "--metrics-file needs a file name");
        o->metrics_file = st->arg;
        return -1;
    case R_HELP:
        (p->elect ? cli_usage_elect : cli_usage_run)(stdout);
        return CLI_EX_OK;
    case CLI_OPT_POSITIONAL:
        if (p->nkeys < DLOCK_MULTI_MAX)
            o->keys[p->nkeys] = st->arg;
        p->nkeys++;
        return -1;
    default:
        return CLI_EX_USAGE; /* reported by cli_opt_next() */
    }
}

/* What the KEYs and flags ask to hold, or a usage error for combinations
 * that make no sense. Returns -1 to go on or an exit status. */
static int choose_hold(run_opts *o, const run_parse *p)
{
    size_t i;

    if (p->nkeys == 0)
        return cli_usage_error(o->prog, "missing KEY before '--'");
    if (p->elect && p->nkeys > 1)
        return cli_usage_error(o->prog, "one KEY: the leadership to campaign for");
    if (p->nkeys > DLOCK_MULTI_MAX)
        return cli_usage_error(o->prog, "%zu keys: at most %d can be held together", p->nkeys,
                               DLOCK_MULTI_MAX);
    if (o->limit > 0 && p->nkeys > 1)
        return cli_usage_error(o->prog, "--limit takes exactly one KEY (the semaphore)");
    if (p->permits_set && o->limit == 0)
        return cli_usage_error(o->prog, "--permits needs --limit N (the semaphore's permits)");
    if (o->permits > o->limit && o->limit > 0)
        return cli_usage_error(o->prog,
                               "--permits %d is more than --limit %d: a run cannot hold more "
                               "permits than the semaphore has",
                               o->permits, o->limit);
    if (o->rate_count > 0 && (p->nkeys > 1 || o->limit > 0 || p->shared))
        return cli_usage_error(o->prog, "--rate takes exactly one KEY, without --limit or "
                                        "--shared (a rate limit holds no lock)");
    if (o->rate_count > 0 && (p->ttl_set || p->grace_set))
        return cli_usage_error(o->prog, "--rate holds no lock: --ttl and --grace do not apply");
    if (p->shared && o->limit > 0)
        return cli_usage_error(o->prog, "--shared and --limit exclude each other");
    if (p->shared && p->nkeys > 1)
        return cli_usage_error(o->prog, "--shared takes exactly one KEY");
    for (i = 0; i < p->nkeys; i++)
        if (cli_check_key(o->prog, o->keys[i]) != 0)
            return CLI_EX_USAGE;
    o->nkeys = p->nkeys;
    o->key = o->keys[0];
    if (p->elect)
        o->hold = HOLD_LEADER;
    else if (o->rate_count > 0)
        o->hold = HOLD_RATE;
    else if (o->limit > 0)
        o->hold = HOLD_PERMIT;
    else if (p->shared)
        o->hold = HOLD_SHARED;
    else if (p->nkeys > 1)
        o->hold = HOLD_ALL;
    else
        o->hold = HOLD_MUTEX;
    return -1;
}

/* The timing options together: --wait or --no-wait, and a --grace that
 * leaves CMD time to stop before the TTL runs out. Returns -1 or 64. */
static int check_timing(run_opts *o, const run_parse *p)
{
    char g[32], t[32];

    if (p->wait_set && p->no_wait)
        return cli_usage_error(o->prog, "--wait and --no-wait exclude each other");
    if (p->no_wait)
        o->wait_ms = 0;
    /* A short --ttl alone must not trip over the default --grace: the
     * default shrinks to a third of the TTL (the renewal interval). */
    if (!p->grace_set && o->grace_ms >= o->ttl_ms)
        o->grace_ms = o->ttl_ms / 3;
    if (o->grace_ms >= o->ttl_ms) {
        cli_duration_format(g, sizeof g, o->grace_ms);
        cli_duration_format(t, sizeof t, o->ttl_ms);
        return cli_usage_error(o->prog, "--grace (%s) must be shorter than --ttl (%s)", g, t);
    }
    return -1;
}

/* Parse argv into o, as `dlock run` (elect 0) or `dlock elect` (elect 1)
 * takes it. Returns -1 to go on, or an exit status: 0 after --help, 64
 * after a usage error (printed). KEYs and options may be mixed before the
 * "--"; everything after it is CMD, untouched. */
static int parse_args(run_opts *o, int argc, char **argv, int elect)
{
    cli_optstate st;
    run_parse p;
    int dd, id, ex = -1;

    memset(&p, 0, sizeof p);
    p.elect = elect;
    o->prog = elect ? "dlock elect" : "dlock run";
    o->ttl_ms = DEFAULT_TTL_MS;
    o->wait_ms = DLOCK_WAIT_FOREVER;
    o->grace_ms = DEFAULT_GRACE_MS;
    o->conflict_exit = CLI_EX_TEMPFAIL;
    o->permits = 1;

    dd = find_cmd(argc, argv, o->prog, elect, &ex);
    if (dd == argc)
        return ex;
    cli_opt_init(&st, dd, argv, o->prog);
    while ((id = cli_opt_next(&st, elect ? elect_opts_table : run_opts_table)) != CLI_OPT_END)
        if ((ex = run_option(o, &p, &st, id)) >= 0)
            return ex;
    o->cmd = argv + dd + 1;
    if ((ex = choose_hold(o, &p)) >= 0)
        return ex;
    if (o->cmd[0] == NULL)
        return cli_usage_error(o->prog, "missing CMD after '--'");
    return check_timing(o, &p);
}

/* "dlock: KEY: message" about what this run holds or wants; with several
 * keys "dlock: KEY1 (+N more keys): message". */
static void lock_err(const run_ctx *c, const char *fmt, ...) CLI_PRINTF(2, 3);
static void lock_err(const run_ctx *c, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cli_keys_err(c->o.key, c->o.nkeys - 1, "%s", msg);
}

/* The on-lost callback, on the library's watchdog thread: wake the
 * supervise loop. write() to a non-blocking pipe is all it does; a full
 * pipe already means "wake up". */
static void on_lost(dlock_lock *lock, void *arg)
{
    const int *fd = arg;
    char b = 'L';
    ssize_t r;

    (void)lock;
    r = write(*fd, &b, 1);
    (void)r;
}

/* What is held, in messages: "lock", "locks", "permit", "leadership". */
static const char *held_noun(const run_ctx *c)
{
    switch (c->o.hold) {
    case HOLD_PERMIT:
        return "permit";
    case HOLD_ALL:
        return "locks";
    case HOLD_LEADER:
        return "leadership";
    default:
        return "lock";
    }
}

/* The exit status and message for a failed acquire. Busy and timed out are
 * answers rather than failures (-q silences them), and their message names
 * who holds the lock (busy.c), or for --rate when the next slot is; the
 * rest are errors. */
static int acquire_failed(const run_ctx *c, int rc, const char *detail)
{
    cli_busy b;

    if (rc != DLOCK_EBUSY && rc != DLOCK_ETIMEDOUT)
        return cli_fail(c->o.key, rc, detail);
    if (!c->g->quiet && c->o.hold == HOLD_RATE) {
        cli_report(c->o.key, rc, detail, NULL);
    } else if (!c->g->quiet) {
        memset(&b, 0, sizeof b);
        b.keys = c->acq_keys;
        b.nkeys = c->nacq;
        b.kind = c->o.hold == HOLD_PERMIT ? DLOCK_KIND_SEMAPHORE : DLOCK_KIND_MUTEX;
        b.limit = c->o.limit;
        b.permits = c->o.permits;
        b.leader = c->o.hold == HOLD_LEADER;
        b.shared = c->o.hold == HOLD_SHARED;
        b.waited_ms = rc == DLOCK_ETIMEDOUT ? c->o.wait_ms : -1;
        cli_report_busy(c->client, &b);
    }
    return c->o.conflict_exit;
}

/* The library call of step 3 for what this run holds (the keys no outer
 * run holds). */
static int acquire_call(run_ctx *c, const dlock_lock_opts *lo)
{
    switch (c->o.hold) {
    case HOLD_SHARED:
        return dlock_rw_acquire(&c->lock, c->client, c->o.key, DLOCK_READ, lo);
    case HOLD_PERMIT:
        return dlock_sem_acquire_n(&c->lock, c->client, c->o.key, c->o.limit, c->o.permits, lo);
    case HOLD_ALL:
        return dlock_acquire_all(&c->lock, c->client, c->acq_keys, c->nacq, lo);
    case HOLD_LEADER:
        return dlock_campaign(&c->lock, c->client, c->o.key, lo);
    case HOLD_RATE:
        /* burst N: N starts at once are within N per D */
        return dlock_rate_acquire(c->client, c->o.key, c->o.rate_count, c->o.rate_period_ms,
                                  c->o.rate_count, c->o.wait_ms, c->cancel);
    default:
        return dlock_acquire(&c->lock, c->client, c->o.key, lo);
    }
}

/* How this run's hold is named in DLOCK_HELD. */
static char held_kind(const run_ctx *c)
{
    return c->o.hold == HOLD_SHARED ? 'r' : c->o.hold == HOLD_PERMIT ? 's' : 'w';
}

/* Nested runs: which KEYs (each once) an outer run of this process tree
 * holds for us (held.c); the others go to acq_keys. Returns 0 or an exit
 * status. */
static int find_cover(run_ctx *c)
{
    size_t i, k;
    int ex;

    c->nacq = 0;
    c->ncovered = 0;
    if (c->o.hold == HOLD_RATE) { /* a slot is taken each time: never nested */
        c->acq_keys[c->nacq++] = c->o.key;
        return 0;
    }
    if ((ex = cli_held_load(&c->held, c->g->quiet)) != 0)
        return ex;
    cli_url_display(c->url_id, sizeof c->url_id, c->g->url);
    c->prefix = c->g->prefix != NULL ? c->g->prefix : DEFAULT_PREFIX;
    for (i = 0; i < c->o.nkeys; i++) {
        for (k = 0; k < i && strcmp(c->o.keys[k], c->o.keys[i]) != 0; k++)
            ;
        c->cover[i] = k < i ? NULL
                            : cli_held_cover(&c->held, c->url_id, c->prefix, c->o.keys[i],
                                             held_kind(c), c->o.limit, c->o.permits);
        if (c->cover[i] != NULL)
            c->ncovered++;
        else if (k == i)
            c->acq_keys[c->nacq++] = c->o.keys[i];
    }
    return 0;
}

/* Ask the server whether each outer hold we run under still stands:
 * before CMD (`after` 0: a hold gone means CMD does not start) and after
 * it (1: CMD was not protected to the end). Returns 0, CLI_EX_LOST
 * (reported), or before CMD an error's exit status; after CMD an error is
 * only reported (as a failed release is). */
static int check_outer(run_ctx *c, int after)
{
    size_t i;
    int r;

    for (i = 0; i < c->o.nkeys; i++) {
        const cli_held_entry *e = c->cover[i];
        if (e == NULL)
            continue;
        r = cli_held_still(c->client, e);
        if (r < 0 && after) {
            cli_report(e->key, r, dlock_last_errmsg(),
                       "could not check that the outer run still holds it");
            continue;
        }
        if (r < 0)
            return cli_fail(e->key, r, dlock_last_errmsg());
        if (r == 0 && !after) {
            cli_key_err(e->key,
                        "the outer 'dlock run' (pid %ld) no longer holds the %s (fencing token "
                        "%" PRIu64 "): lost, expired or force-unlocked; CMD not started",
                        e->pid, held_noun(c), e->fence);
            return CLI_EX_LOST;
        }
        if (r == 0) {
            cli_key_err(e->key,
                        "the outer 'dlock run' (pid %ld) no longer held the %s (fencing token "
                        "%" PRIu64 ") when CMD finished: lost while CMD ran",
                        e->pid, held_noun(c), e->fence);
            return CLI_EX_LOST;
        }
    }
    return 0;
}

/* Step 3: open the client and acquire what no outer run holds while the
 * watcher thread keeps an ear on signals. Returns 0 with c->lock held or
 * c->ran_free set (a --rate slot, or everything held by outer runs);
 * otherwise the return value is the exit status (which can be 0 too, with
 * --conflict-exit-code 0). */
static int acquire(run_ctx *c)
{
    dlock_lock_opts lo = DLOCK_LOCK_OPTS_INIT;
    int rc, ex, sig;

    rc = dlock_cancel_new(&c->cancel);
    if (rc != 0)
        return cli_fail(NULL, rc, dlock_last_errmsg());
    ex = cli_child_watch_start(&c->child, c->cancel);
    if (ex != 0)
        return ex;

    ex = cli_client_open(&c->client, c->g);
    if (ex == 0 && c->ncovered > 0)
        ex = check_outer(c, 0);
    if (ex == 0 && c->nacq == 0) {
        c->ran_free = 1; /* nested: all of it is held by outer runs */
    } else if (ex == 0 && cli_child_watch_signal(&c->child) == 0) {
        c->wake_fd = cli_child_wake_fd(&c->child);
        lo.ttl_ms = c->o.ttl_ms;
        lo.wait_ms = c->o.wait_ms;
        lo.auto_renew = 1;
        lo.on_lost = on_lost;
        lo.on_lost_arg = &c->wake_fd;
        lo.cancel = c->cancel;
        rc = acquire_call(c, &lo);
        if (rc == 0 && c->o.hold == HOLD_RATE)
            c->ran_free = 1;
        if (rc != 0 && cli_child_watch_signal(&c->child) == 0)
            ex = acquire_failed(c, rc, dlock_last_errmsg());
    }

    sig = cli_child_watch_stop(&c->child);
    if (sig != 0) {
        /* Interrupted while waiting: do not start CMD. A lock granted at
         * the same instant goes straight back. */
        dlock_release(c->lock);
        c->lock = NULL;
        c->ran_free = 0;
        return 128 + sig;
    }
    return ex;
}

/* A nested run: its outer runs renew what it runs under. One that is gone
 * (killed with SIGKILL: its CMD, which started us, may be gone too, but we
 * are not) renews nothing any more, so CMD is stopped as if the lock were
 * lost (exit 79). Gone means no longer an ancestor: this also holds while
 * the dead dlock is a zombie, and whatever process reuses its pid. */
static void check_outer_alive(cli_child *ch, run_ctx *c)
{
    for (size_t i = 0; i < c->o.nkeys; i++) {
        const cli_held_entry *e = c->cover[i];
        if (e == NULL || cli_held_outer_alive(e))
            continue;
        cli_child_kill(ch, SIGKILL);
        c->killed = 1;
        cli_key_err(e->key,
                    "the outer 'dlock run' (pid %ld) is gone: nothing renews the %s; "
                    "sending SIGKILL to CMD",
                    e->pid, held_noun(c));
        return;
    }
}

/* Step 5, called by cli_child_wait() on every wake-up: look at the lock
 * and act. Cheap: no round trip. A --rate run has nothing to watch. A
 * nested run watches that its outer runs live: an outer run watches its
 * own lock and stops its whole CMD, this dlock included, when it is lost,
 * but an outer run killed with SIGKILL cannot. */
static void check_lock(cli_child *ch, void *arg)
{
    run_ctx *c = arg;
    int64_t left;
    int err;
    char d[32];

    if (c->killed)
        return;
    if (c->lock == NULL) {
        check_outer_alive(ch, c);
        return;
    }
    if (!dlock_is_held(c->lock)) {
        cli_child_kill(ch, SIGKILL);
        c->killed = 1;
        lock_err(c, "%s lost: sending SIGKILL to CMD", held_noun(c));
        return;
    }
    if (c->termed)
        return;
    err = dlock_lock_renew_error(c->lock);
    left = dlock_lock_remaining_ms(c->lock);
    if (err != 0 && left <= c->o.grace_ms) {
        cli_child_kill(ch, SIGTERM);
        c->termed = 1;
        cli_duration_format(d, sizeof d, left);
        lock_err(c, "cannot renew the %s (%s), %s of validity left: sending SIGTERM to CMD",
                 held_noun(c), dlock_strerror(err), d);
    }
}

/* Step 6: the exit status from CMD's wait status, and the lost-lock
 * report. */
static int final_status(const run_ctx *c, int status)
{
    int ex = cli_child_exit_status(status);

    if (!c->termed && !c->killed)
        return ex;
    if (WIFSIGNALED(status))
        lock_err(c, "the %s was lost while CMD ran; CMD ended by signal %d (%s)", held_noun(c),
                 WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        lock_err(c, "the %s was lost while CMD ran; CMD exited with status %d", held_noun(c), ex);
    return CLI_EX_LOST;
}

/* The fencing token of `key`: the outer hold's (cover, may be NULL) or our
 * handle's. */
static uint64_t fence_of(const run_ctx *c, const cli_held_entry *cover, const char *key)
{
    size_t i, n = c->lock != NULL ? dlock_lock_count(c->lock) : 0;

    if (cover != NULL)
        return cover->fence;
    for (i = 0; i < n; i++)
        if (strcmp(dlock_lock_key_at(c->lock, i), key) == 0)
            return dlock_lock_fencing_token_at(c->lock, i);
    return 0;
}

/* Append " text" (no space before the first) to the string *s of length
 * *len. Returns 0 or -1 (out of memory). */
static int join_word(char **s, size_t *len, const char *text)
{
    size_t n = strlen(text);
    char *b = realloc(*s, *len + n + 2);

    if (b == NULL)
        return -1;
    if (*len > 0)
        b[(*len)++] = ' ';
    memcpy(b + *len, text, n + 1);
    *len += n;
    *s = b;
    return 0;
}

/* DLOCK_KEYS and DLOCK_FENCING_TOKENS (each key once, in the order given)
 * into *keys and *tokens, and this run's own lines of DLOCK_HELD into
 * add[*nadd]. Returns 0 or -1 (out of memory). */
static int list_held(const run_ctx *c, char **keys, char **tokens, cli_held_entry *add,
                     size_t *nadd)
{
    size_t i, k, klen = 0, tlen = 0;
    char num[32];
    int slot = c->lock != NULL ? dlock_lock_slot(c->lock) : -1;
    int permits = c->lock != NULL ? dlock_lock_permits(c->lock) : 1;

    *nadd = 0;
    for (i = 0; i < c->o.nkeys; i++) {
        for (k = 0; k < i && strcmp(c->o.keys[k], c->o.keys[i]) != 0; k++)
            ;
        if (k < i)
            continue; /* a duplicate */
        uint64_t fence = fence_of(c, c->cover[i], c->o.keys[i]);
        snprintf(num, sizeof num, "%" PRIu64, fence);
        if (join_word(keys, &klen, c->o.keys[i]) != 0 || join_word(tokens, &tlen, num) != 0)
            return -1;
        if (c->cover[i] == NULL)
            add[(*nadd)++] =
                (cli_held_entry){ (long)getpid(), held_kind(c), fence,     slot,        permits,
                                  c->o.limit,     c->url_id,    c->prefix, c->o.keys[i] };
    }
    return 0;
}

/* Step 4's environment. Variables that do not apply (DLOCK_SLOT without
 * --limit; all but DLOCK_KEY with --rate) are removed, so CMD never sees a
 * value inherited from an outer dlock (DLOCK_HELD excepted: it is added
 * to). Returns 0 or an exit status (reported). */
static int set_cmd_env(run_ctx *c)
{
    static const char *const lists[] = { "DLOCK_FENCING_TOKEN", "DLOCK_KEYS",
                                         "DLOCK_FENCING_TOKENS", "DLOCK_SLOT", "DLOCK_PERMITS" };
    char *keys = NULL, *tokens = NULL, *held = NULL, num[32], slot[16], permits[16];
    cli_held_entry add[DLOCK_MULTI_MAX];
    const cli_held_entry *pc = c->cover[0];
    size_t nadd = 0, i;
    int ex = cli_child_setenv(&c->child, "DLOCK_KEY", c->o.key);

    if (c->o.hold == HOLD_RATE) {
        for (i = 0; ex == 0 && i < sizeof lists / sizeof lists[0]; i++)
            ex = cli_child_setenv(&c->child, lists[i], NULL);
        return ex;
    }
    if (ex == 0 && (list_held(c, &keys, &tokens, add, &nadd) != 0 ||
                    (held = cli_held_append(c->held.inherited, add, nadd)) == NULL)) {
        cli_err("out of memory");
        ex = CLI_EX_SOFTWARE;
    }
    snprintf(num, sizeof num, "%" PRIu64, fence_of(c, pc, c->o.key));
    snprintf(slot, sizeof slot, "%d", pc != NULL ? pc->slot : dlock_lock_slot(c->lock));
    snprintf(permits, sizeof permits, "%d", pc != NULL ? pc->permits : dlock_lock_permits(c->lock));
    if (ex == 0)
        ex = cli_child_setenv(&c->child, "DLOCK_FENCING_TOKEN", num);
    if (ex == 0)
        ex = cli_child_setenv(&c->child, "DLOCK_KEYS", keys);
    if (ex == 0)
        ex = cli_child_setenv(&c->child, "DLOCK_FENCING_TOKENS", tokens);
    if (ex == 0)
        ex = cli_child_setenv(&c->child, "DLOCK_SLOT", c->o.hold == HOLD_PERMIT ? slot : NULL);
    if (ex == 0)
        ex =
            cli_child_setenv(&c->child, "DLOCK_PERMITS", c->o.hold == HOLD_PERMIT ? permits : NULL);
    if (ex == 0)
        ex = cli_child_setenv(&c->child, "DLOCK_HELD", held[0] != '\0' ? held : NULL);
    free(keys);
    free(tokens);
    free(held);
    return ex;
}

/* Steps 4 to 6, with the lock held (or a --rate slot taken, or nested
 * under outer holds). Returns the exit status. */
static int run_cmd(run_ctx *c)
{
    const char *detail;
    int ex, status = 0, rc;

    if (c->lock != NULL && !dlock_is_held(c->lock)) {
        lock_err(c, "the %s was lost before CMD could start", held_noun(c));
        return CLI_EX_LOST;
    }
    ex = set_cmd_env(c);
    if (ex == 0)
        ex = cli_child_spawn(&c->child, c->o.cmd);
    if (ex != 0)
        return ex;

    if (cli_child_wait(&c->child, check_lock, c, &status) != 0)
        ex = CLI_EX_SOFTWARE;
    else
        ex = final_status(c, status);
    if (c->ncovered > 0 && !c->termed && !c->killed && check_outer(c, 1) == CLI_EX_LOST)
        ex = CLI_EX_LOST;
    if (c->lock == NULL)
        return ex;

    rc = dlock_release(c->lock);
    detail = dlock_last_errmsg();
    c->lock = NULL;
    /* After lock trouble the release's outcome says nothing new. A lock
     * found gone at the release was lost while CMD ran (taken over,
     * force-unlocked, or expired unnoticed): CMD was not protected to the
     * end, which is what exit 79 says. */
    if (rc == DLOCK_ENOTHELD && !c->termed && !c->killed) {
        lock_err(c, "the %s was no longer held when CMD finished: lost while CMD ran",
                 held_noun(c));
        ex = CLI_EX_LOST;
    } else if (rc != 0 && rc != DLOCK_ENOTHELD && !c->termed && !c->killed)
        cli_report(c->o.key, rc, detail, "the lock frees itself when its TTL runs out");
    return ex;
}

/* Step 7: write the client's metrics to `path` through a temporary file in
 * the same directory and rename(2), which replaces the old file in one
 * step. Reports a failure; the exit status does not depend on it. */
static void write_metrics_file(dlock_client *client, const char *path)
{
    size_t n = strlen(path) + 32;
    char *tmp = malloc(n);
    FILE *f = NULL;
    int fd = -1, rc, ok = 0, err = 0;

    if (tmp == NULL) {
        cli_err("--metrics-file: out of memory");
        return;
    }
    snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0)
        f = fdopen(fd, "w");
    if (f == NULL) {
        err = errno;
        if (fd >= 0)
            close(fd);
    } else {
        rc = dlock_metrics_write(client, f);
        err = errno;
        if (fclose(f) != 0 && rc == 0) {
            rc = DLOCK_ECONN;
            err = errno;
        }
        if (rc == 0 && rename(tmp, path) == 0)
            ok = 1;
        else if (rc == 0)
            err = errno;
        if (!ok)
            unlink(tmp);
    }
    if (!ok)
        cli_err("--metrics-file %s: %s", path, err != 0 ? strerror(err) : "write failed");
    free(tmp);
}

/* See cli.h: the steps described at the top of the file. The client is
 * closed before child.c's pipes: the on-lost callback may write to the wake
 * pipe until then. */
int cli_run_command(const cli_globals *g, int argc, char **argv, int elect)
{
    run_ctx c;
    int ex;

    memset(&c, 0, sizeof c);
    c.g = g;
    ex = parse_args(&c.o, argc, argv, elect);
    if (ex >= 0)
        return ex;

    ex = cli_child_init(&c.child);
    if (ex == 0)
        ex = find_cover(&c);
    if (ex == 0)
        ex = acquire(&c);
    /* The lock is held exactly when c.lock is set: a failed acquire may
     * return 0 (--conflict-exit-code 0). */
    if (c.lock != NULL || c.ran_free)
        ex = run_cmd(&c);

    dlock_release(c.lock);
    if (c.o.metrics_file != NULL && c.client != NULL)
        write_metrics_file(c.client, c.o.metrics_file);
    dlock_client_close(c.client);
    dlock_cancel_free(c.cancel);
    cli_child_cleanup(&c.child);
    cli_held_free(&c.held);
    return ex;
}

/* `dlock run`. */
int cli_cmd_run(const cli_globals *g, int argc, char **argv)
{
    return cli_run_command(g, argc, argv, 0);
}
