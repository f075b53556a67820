/*
 * latch.c — `dlock latch ACTION ...`: a countdown latch for shell scripts
 * (dlock_latch_*): one process arms it with N, workers count it down as
 * they finish, and whoever waits goes on when it reaches zero.
 *
 *     dlock latch init [--ttl D] KEY N    arm it (75 if a live one exists)
 *     dlock latch down KEY                count down; prints the count left
 *     dlock latch wait [--wait D] KEY     0 at zero, 75 if the wait (or the
 *                                         latch's TTL) ran out first
 *     dlock latch get KEY                 prints the count; 3: no such latch
 *
 * The wait may block without limit, so it runs as leader --watch does:
 * signals are blocked before the client starts its threads, and child.c's
 * watcher turns SIGINT/SIGTERM/... into a cancellation (exit 128+N).
 * A count-down of a latch at zero, or of one that does not exist, is an
 * error of the caller (64): a latch never goes below zero.
 */
#include "cli.h"
#include "child.h"

#include <limits.h>
#include <string.h>

#define DEFAULT_TTL_MS (60 * 60 * 1000) /* an hour */

enum { A_INIT, A_DOWN, A_WAIT, A_GET };
enum { LA_TTL = 1, LA_WAIT, LA_HELP };

static const cli_opt latch_opts[] = {
    { "ttl", 0, 1, LA_TTL },
    { "wait", 0, 1, LA_WAIT },
    { "help", 'h', 0, LA_HELP },
    { NULL, 0, 0, 0 },
};

/* `dlock latch --help`. */
static const char latch_help[] =
    "Usage: dlock latch init [--ttl D] KEY N\n"
    "       dlock latch down KEY\n"
    "       dlock latch wait [--wait D] KEY\n"
    "       dlock latch get KEY\n"
    "\n"
    "A countdown latch, across machines: 'init' arms KEY with N count-downs to go;\n"
    "each 'down' counts one; 'wait' returns when the count is zero. The latch holds\n"
    "no lock: KEY is separate from a lock of the same name.\n"
    "\n"
    "  init KEY N   arm the latch with N (1 to 2147483647). A live latch (count\n"
    "               above zero) is not armed again: exit 75, saying how many are\n"
    "               left. A latch at zero may be armed again.\n"
    "  down KEY     count one down and print the count left (0: the latch opened\n"
    "               and its waiters go on). A latch never goes below zero: a\n"
    "               count-down of a latch at zero, or of one that does not exist\n"
    "               (never armed, or expired), is an error (exit 64).\n"
    "  wait KEY     wait until the count is zero (at once if it is). A latch not\n"
    "               armed yet is waited for. Woken by the last count-down, not by\n"
    "               polling.\n"
    "  get KEY      print the count left; no such latch: exit 3\n"
    "\n"
    "Options:\n"
    "      --ttl D    init: the latch expires D after it was armed, whatever its\n"
    "                 count (default 1h): an abandoned latch leaves nothing\n"
    "                 behind, and its waiters are told (exit 75)\n"
    "      --wait D   wait: wait at most D, then exit 75 (default: as long as it\n"
    "                 takes, up to the latch's TTL)\n"
    "  -h, --help     show this help\n"
    "\n"
    "Exit status: 0 done (wait: the count is zero), 3 get: no such latch, 64 usage\n"
    "error or a count-down below zero, 69 Redis unreachable, authentication failed\n"
    "or a permission missing (ACL), 70 internal error, 75 init: a live latch\n"
    "exists; wait: --wait ran out, or the latch expired before reaching zero,\n"
    "128+N wait: interrupted by signal N. Not on Redlock (64).\n"
    "\n"
    "Examples:\n"
    "  dlock latch init --ttl 30m build 3\n"
    "  for t in a b c; do ssh \"$t\" 'make && dlock latch down build' & done\n"
    "  dlock latch wait --wait 20m build && ./package\n";

void cli_usage_latch(FILE *out)
{
    fputs(latch_help, out);
}

/* What the command line asks. */
typedef struct latch_args {
    int action;
    const char *key;
    int count;
    int64_t ttl_ms, wait_ms;
    int ttl_set, wait_set;
} latch_args;

/* The action named `s`, or -1. */
static int action_of(const char *s)
{
    static const char *const names[] = { "init", "down", "wait", "get" };
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

/* The positionals after the action: KEY, and N for init. Returns -1 to go
 * on or an exit status. */
static int latch_positionals(latch_args *a, const char *prog, const char **pos, int npos)
{
    long n;
    int want = a->action == A_INIT ? 2 : 1;

    if (npos > want)
        return cli_usage_error(prog, "too many arguments");
    if (npos < want)
        return cli_usage_error(prog, "missing %s", npos == 1 ? "N" : "KEY");
    a->key = pos[0];
    if (cli_check_key(prog, a->key) != 0)
        return CLI_EX_USAGE;
    if (a->action == A_INIT) {
        if (cli_parse_long(&n, pos[1], 1, INT_MAX) != 0)
            return cli_usage_error(prog, "N '%s': expected a count from 1 to %d", pos[1], INT_MAX);
        a->count = (int)n;
    }
    if (a->ttl_set && a->action != A_INIT)
        return cli_usage_error(prog, "--ttl applies to 'latch init' only");
    if (a->wait_set && a->action != A_WAIT)
        return cli_usage_error(prog, "--wait applies to 'latch wait' only");
    return -1;
}

/* One positional argument: the ACTION first, then KEY and N. Returns -1
 * to go on or an exit status. */
static int positional(latch_args *a, const char *prog, const char **pos, int *npos, const char *arg)
{
    if (a->action >= 0) {
        if (*npos < 3)
            pos[*npos] = arg;
        (*npos)++;
        return -1;
    }
    if ((a->action = action_of(arg)) < 0)
        return cli_usage_error(prog, "unknown action '%s' (init, down, wait, get)", arg);
    return -1;
}

/* Parse `dlock latch`'s argv. Options may come anywhere before "--".
 * Returns -1 to go on, or an exit status. */
static int parse_latch(latch_args *a, int argc, char **argv)
{
    cli_optstate st;
    const char *pos[3];
    int npos = 0, id, ex = -1;

    memset(a, 0, sizeof *a);
    a->action = -1;
    a->ttl_ms = DEFAULT_TTL_MS;
    a->wait_ms = DLOCK_WAIT_FOREVER;
    cli_opt_init(&st, argc, argv, "dlock latch");
    while (ex < 0 && (id = cli_opt_next(&st, latch_opts)) != CLI_OPT_END) {
        switch (id) {
        case LA_TTL:
            a->ttl_set = 1;
            if (cli_opt_duration_range(&a->ttl_ms, &st, 1, 0) != 0)
                return CLI_EX_USAGE;
            break;
        case LA_WAIT:
            a->wait_set = 1;
            if (cli_opt_duration(&a->wait_ms, &st) != 0)
                return CLI_EX_USAGE;
            break;
        case LA_HELP:
            cli_usage_latch(stdout);
            return CLI_EX_OK;
        case CLI_OPT_DASHDASH:
            while (ex < 0 && st.ind < argc)
                ex = positional(a, st.prog, pos, &npos, argv[st.ind++]);
            break;
        case CLI_OPT_POSITIONAL:
            ex = positional(a, st.prog, pos, &npos, st.arg);
            break;
        default:
            return CLI_EX_USAGE;
        }
    }
    if (ex >= 0)
        return ex;
    if (a->action < 0)
        return cli_usage_error(st.prog, "missing ACTION (init, down, wait, get)");
    return latch_positionals(a, st.prog, pos, npos);
}

/* `latch wait`: the wait under child.c's signal watcher. */
static int latch_wait(const cli_globals *g, const latch_args *a)
{
    cli_child sig;
    dlock_cancel *cancel = NULL;
    dlock_client *client = NULL;
    int ex, rc = 0, signo;

    ex = cli_child_init(&sig);
    if (ex == 0 && (rc = dlock_cancel_new(&cancel)) != 0)
        ex = cli_fail(NULL, rc, dlock_last_errmsg());
    if (ex == 0)
        ex = cli_child_watch_start(&sig, cancel);
    if (ex == 0)
        ex = cli_client_open(&client, g);
    if (ex == 0)
        rc = dlock_latch_wait(client, a->key, a->wait_ms, cancel);
    signo = cli_child_watch_stop(&sig);
    if (signo != 0)
        ex = 128 + signo;
    else if (ex == 0 && rc == DLOCK_ETIMEDOUT) {
        if (!g->quiet)
            cli_report(a->key, rc, dlock_last_errmsg(), NULL);
        ex = CLI_EX_TEMPFAIL;
    } else if (ex == 0 && rc != 0)
        ex = cli_fail(a->key, rc, dlock_last_errmsg());
    dlock_client_close(client);
    dlock_cancel_free(cancel);
    cli_child_cleanup(&sig);
    return ex;
}

/* `dlock latch`: parse, then one action. */
int cli_cmd_latch(const cli_globals *g, int argc, char **argv)
{
    dlock_client *client = NULL;
    latch_args a;
    int ex, rc = 0, n = 0;

    if ((ex = parse_latch(&a, argc, argv)) >= 0)
        return ex;
    if (a.action == A_WAIT)
        return latch_wait(g, &a);
    if ((ex = cli_client_open(&client, g)) != 0)
        return ex;
    if (a.action == A_INIT)
        rc = dlock_latch_init(client, a.key, a.count, a.ttl_ms);
    else if (a.action == A_DOWN)
        rc = dlock_latch_count_down(&n, client, a.key);
    else
        rc = dlock_latch_get(&n, client, a.key);
    if (rc == DLOCK_EBUSY) { /* init: a live latch is an answer, like a busy lock */
        if (!g->quiet)
            cli_report(a.key, rc, dlock_last_errmsg(), NULL);
        ex = CLI_EX_TEMPFAIL;
    } else if (rc != 0) {
        ex = cli_fail(a.key, rc, dlock_last_errmsg());
    } else if (a.action == A_GET && n < 0) {
        if (!g->quiet)
            cli_key_err(a.key, "no latch (never armed, or expired)");
        ex = CLI_EX_NONE;
    } else if (a.action != A_INIT) {
        printf("%d\n", n);
    }
    dlock_client_close(client);
    return ex;
}
