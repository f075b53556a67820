/*
 * run_args.c — the arguments of `dlock run` and `dlock elect`: the option
 * tables, `dlock run --help`, and the checks that turn argv into a run_opts
 * (which hold the options ask for, durations within bounds, a grace below
 * the TTL, CMD after "--"). Everything it refuses is a usage error (64)
 * with a message in the CLI's terms.
 */
#include "run.h"

#include <stdio.h>
#include <string.h>

#include "cli.h"

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
    "\n" CLI_HELP_EXIT_COMMON
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
int run_parse_args(run_opts *o, int argc, char **argv, int elect)
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
