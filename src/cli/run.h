/*
 * run.h — what `dlock run` and `dlock elect` were asked for (run_opts),
 * shared by the argument parser (run_args.c), the engine (run.c) and
 * CMD's environment (run_env.c); and the state of one run (run_ctx).
 */
#ifndef DLOCK_CLI_RUN_H
#define DLOCK_CLI_RUN_H

#include <stddef.h>
#include <stdint.h>

#include "child.h"
#include "cli.h"
#include "dlock.h"

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

/* Parse the arguments of `dlock run` (elect = 0) or `dlock elect` (1) into
 * o: defaults, then options up to KEY..., then CMD after "--" (pointing
 * into argv). Returns -1 to go on, else the exit status to end with (0
 * after --help; CLI_EX_USAGE with the message printed). */
int run_parse_args(run_opts *o, int argc, char **argv, int elect);

/* One run of `dlock run` or `dlock elect`, from parsing to exit (run.c). */
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

/* How this run's hold is named in DLOCK_HELD: 'w', 'r' (--shared) or 's'
 * (--limit). */
char run_held_kind(const run_ctx *c);

/* Step 4: CMD's environment (run_env.c): DLOCK_KEY, DLOCK_FENCING_TOKEN,
 * DLOCK_KEYS, DLOCK_FENCING_TOKENS, DLOCK_SLOT, DLOCK_PERMITS, DLOCK_HELD.
 * Variables that do not apply are removed. Returns 0 or an exit status
 * (reported). */
int run_set_env(run_ctx *c);

#endif
