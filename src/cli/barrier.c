/*
 * barrier.c — `dlock barrier [--wait D] KEY N`: wait until N processes,
 * on any machines, have arrived at the barrier KEY, then all go on
 * (dlock_barrier_wait). Reusable: the next N arrivals form the next
 * generation.
 *
 * The wait may block without limit, so it runs as leader --watch does:
 * signals are blocked before the client starts its threads, and child.c's
 * watcher turns SIGINT/SIGTERM/... into a cancellation (exit 128+N); the
 * library then takes this party's arrival back. A party that is killed
 * (kill -9) stops counting within 3 s: its arrival is kept alive only
 * while it waits.
 */
#include "cli.h"
#include "child.h"

#include <string.h>

#define PARTIES_MAX 100000 /* the library's bound */

enum { B_WAIT = 1, B_HELP };

static const cli_opt barrier_opts[] = {
    { "wait", 0, 1, B_WAIT },
    { "help", 'h', 0, B_HELP },
    { NULL, 0, 0, 0 },
};

/* `dlock barrier --help`. */
static const char barrier_help[] =
    "Usage: dlock barrier [--wait D] KEY N\n"
    "\n"
    "Wait at the barrier KEY until N processes (this one included, on any\n"
    "machines) have arrived, then exit 0: all N go on together. The barrier is\n"
    "reusable: the next N arrivals wait for each other again. It holds no lock:\n"
    "KEY is separate from a lock of the same name. Woken by the last arrival, not\n"
    "by polling (a waiting party refreshes its arrival once a second).\n"
    "\n"
    "A party that gives up (--wait ran out, a signal) leaves: it counts neither\n"
    "for this round nor for a later one. A party killed while waiting (kill -9, a\n"
    "crashed machine) stops counting within 3 s, so it never lets the others go\n"
    "on without it for longer, and never blocks a later round. Every party must\n"
    "give the same N; a different N while parties wait is an error (64).\n"
    "\n"
    "  N           the number of parties, 1 to 100000\n"
    "\n"
    "Options:\n"
    "      --wait D   wait at most D, then leave and exit 75 (default: as long as\n"
    "                 it takes)\n"
    "  -h, --help     show this help\n"
    "\n"
    "Exit status: 0 all N arrived, 64 usage error or another N in use, 69 Redis\n"
    "unreachable, authentication failed or a permission missing (ACL), 70\n"
    "internal error, 75 --wait ran out, 128+N interrupted by signal N. Not on\n"
    "Redlock (64).\n"
    "\n"
    "Examples:\n"
    "  ./load-shard \"$i\" && dlock barrier --wait 10m load-done 4 && ./query \"$i\"\n";

void cli_usage_barrier(FILE *out)
{
    fputs(barrier_help, out);
}

/* Parse argv: KEY and N, --wait. Returns -1 to go on or an exit status. */
static int parse_barrier(int argc, char **argv, const char **key, int *parties, int64_t *wait_ms)
{
    cli_optstate st;
    const char *pos[2];
    int npos = 0, id;
    long n;

    cli_opt_init(&st, argc, argv, "dlock barrier");
    while ((id = cli_opt_next(&st, barrier_opts)) != CLI_OPT_END) {
        switch (id) {
        case B_WAIT:
            if (cli_opt_duration(wait_ms, &st) != 0)
                return CLI_EX_USAGE;
            break;
        case B_HELP:
            cli_usage_barrier(stdout);
            return CLI_EX_OK;
        case CLI_OPT_DASHDASH:
            for (; st.ind < argc; st.ind++, npos++)
                if (npos < 2)
                    pos[npos] = argv[st.ind];
            break;
        case CLI_OPT_POSITIONAL:
            if (npos < 2)
                pos[npos] = st.arg;
            npos++;
            break;
        default:
            return CLI_EX_USAGE;
        }
    }
    if (npos != 2)
        return cli_usage_error(st.prog, npos < 2 ? "expected KEY and N" : "too many arguments");
    *key = pos[0];
    if (cli_check_key(st.prog, *key) != 0)
        return CLI_EX_USAGE;
    if (cli_parse_long(&n, pos[1], 1, PARTIES_MAX) != 0)
        return cli_usage_error(st.prog, "N '%s': expected a number of parties from 1 to %d", pos[1],
                               PARTIES_MAX);
    *parties = (int)n;
    return -1;
}

/* `dlock barrier`: parse, then wait under child.c's signal watcher. */
int cli_cmd_barrier(const cli_globals *g, int argc, char **argv)
{
    cli_child sig;
    dlock_cancel *cancel = NULL;
    dlock_client *client = NULL;
    const char *key = NULL;
    int64_t wait_ms = DLOCK_WAIT_FOREVER;
    int parties = 0, ex, rc = 0, signo;

    if ((ex = parse_barrier(argc, argv, &key, &parties, &wait_ms)) >= 0)
        return ex;
    ex = cli_child_init(&sig);
    if (ex == 0 && (rc = dlock_cancel_new(&cancel)) != 0)
        ex = cli_fail(NULL, rc, dlock_last_errmsg());
    if (ex == 0)
        ex = cli_child_watch_start(&sig, cancel);
    if (ex == 0)
        ex = cli_client_open(&client, g);
    if (ex == 0)
        rc = dlock_barrier_wait(client, key, parties, wait_ms, cancel);
    signo = cli_child_watch_stop(&sig);
    if (signo != 0) /* interrupted: the arrival was taken back, unless it tripped */
        ex = 128 + signo;
    else if (ex == 0 && rc == DLOCK_ETIMEDOUT) {
        if (!g->quiet)
            cli_report(key, rc, dlock_last_errmsg(), NULL);
        ex = CLI_EX_TEMPFAIL;
    } else if (ex == 0 && rc != 0)
        ex = cli_fail(key, rc, dlock_last_errmsg());
    dlock_client_close(client);
    dlock_cancel_free(cancel);
    cli_child_cleanup(&sig);
    return ex;
}
