/*
 * leader.c — `dlock leader [--watch] [--json] KEY`: who leads KEY.
 *
 * Without --watch: one dlock_leader() round trip; the leader's owner id and
 * term (fencing token) on one line and exit 0; with no leader "KEY: no
 * leader" on stderr, nothing on stdout (with --json the object with a null
 * leader, DESIGN.md) and exit 3, so `if dlock leader svc >/dev/null` reads
 * naturally.
 *
 * With --watch: the current state, then one line per change until SIGINT
 * or SIGTERM (exit 0). Changes come from dlock_leader_wait() with the last
 * term seen, which the library wakes through pub/sub, not by polling. The
 * wait blocks without limit; a signal has to cancel it, so the signals are
 * blocked before the client starts its threads and child.c's watcher
 * thread reads them and triggers a dlock_cancel token. stdout is line
 * buffered, so a pipe (`dlock leader --watch svc | while read ...`) sees
 * each change when it happens.
 *
 * Text lines are for people: "OWNER  fencing token N", or "(no leader)"
 * in watch mode. JSON is one object per line, the fencing token a string
 * (DESIGN.md): {"key":"svc","leader":"OWNER","fencing_token":"N"}, with
 * null leader and token for "no leader".
 */
#include "cli.h"
#include "child.h"

#include <inttypes.h>
#include <signal.h>
#include <string.h>

enum { L_WATCH = 1, L_JSON, L_HELP };

static const cli_opt leader_opts[] = {
    { "watch", 'w', 0, L_WATCH },
    { "json", 0, 0, L_JSON },
    { "help", 'h', 0, L_HELP },
    { NULL, 0, 0, 0 },
};

/* `dlock leader --help`. */
static const char leader_help[] =
    "Usage: dlock leader [--watch] [--json] KEY\n"
    "\n"
    "Print the current leader of KEY (see 'dlock elect'): its owner id and its term,\n"
    "the fencing token of its leadership, which grows with every new leader.\n"
    "\n"
    "    host-a:4242  fencing token 1718040000123456\n"
    "\n"
    "With no leader, \"KEY: no leader\" goes to stderr (not with -q), nothing to\n"
    "stdout (with --json: the object below with null leader and fencing_token),\n"
    "and the exit status is 3.\n"
    "\n"
    "Options:\n"
    "  -w, --watch   print the current state, then a line for every change (a new\n"
    "                leader, \"(no leader)\" when it ended or expired) until\n"
    "                interrupted (SIGINT or SIGTERM: exit 0). Changes are pushed by\n"
    "                Redis, not polled; each line is written at once, also to a pipe.\n"
    "      --json    print a JSON object per line instead:\n"
    "                {\"key\": \"...\", \"leader\": \"OWNER\", \"fencing_token\": \"N\"}\n"
    "                (the token is a string so that no digit is lost; \"no leader\"\n"
    "                has null leader and fencing_token)\n"
    "  -h, --help    show this help\n"
    "\n"
    "Exit status: 0 a leader was printed (--watch: interrupted), 3 no leader,\n"
    "64 usage error, 69 Redis unreachable, quorum not reached, authentication failed\n"
    "or a permission missing (ACL), 70 internal error.\n"
    "\n"
    "Examples:\n"
    "  dlock leader scheduler\n"
    "  dlock leader scheduler >/dev/null || echo 'nobody leads: alert'\n"
    "  dlock leader --watch --json scheduler | while read -r line; do ...; done\n";

void cli_usage_leader(FILE *out)
{
    fputs(leader_help, out);
}

/* One line for `info` about `key`, flushed. A missing leader is a line
 * too: "(no leader)" in text (watch mode only: a single look says it on
 * stderr instead), null leader and token in JSON. */
static void print_info(const char *key, const dlock_info *info, int json)
{
    if (json) {
        fputs("{\"key\":", stdout);
        cli_put_json_string(stdout, key);
        if (info->held) {
            fputs(",\"leader\":", stdout);
            cli_put_json_string(stdout, info->owner);
            printf(",\"fencing_token\":\"%" PRIu64 "\"}\n", info->fencing_token);
        } else {
            fputs(",\"leader\":null,\"fencing_token\":null}\n", stdout);
        }
    } else if (info->held) {
        cli_put_text(stdout, info->owner);
        printf("  fencing token %" PRIu64 "\n", info->fencing_token);
    } else {
        fputs("(no leader)\n", stdout);
    }
    fflush(stdout);
}

/* --watch: print, wait for a change, print, ... until a signal cancels the
 * wait. Returns the exit status. Signals arriving while the client connects
 * or between two waits are seen at the next wait: the token stays
 * triggered. */
static int watch(const cli_globals *g, const char *key, int json)
{
    cli_child sig;
    dlock_cancel *cancel = NULL;
    dlock_client *client = NULL;
    dlock_info info;
    uint64_t term;
    int ex, rc = 0, signo;

    setvbuf(stdout, NULL, _IOLBF, 0);
    ex = cli_child_init(&sig);
    if (ex == 0 && (rc = dlock_cancel_new(&cancel)) != 0)
        ex = cli_fail(NULL, rc, dlock_last_errmsg());
    if (ex == 0)
        ex = cli_child_watch_start(&sig, cancel);
    if (ex == 0)
        ex = cli_client_open(&client, g);
    if (ex == 0 && (rc = dlock_leader(&info, client, key)) == 0) {
        print_info(key, &info, json);
        term = info.held ? info.fencing_token : 0;
        while (!ferror(stdout) && (rc = dlock_leader_wait(&info, client, key, term,
                                                          DLOCK_WAIT_FOREVER, cancel)) == 0) {
            print_info(key, &info, json);
            term = info.held ? info.fencing_token : 0;
        }
    }
    signo = cli_child_watch_stop(&sig);
    if (signo != 0)
        ex = signo == SIGINT || signo == SIGTERM ? CLI_EX_OK : 128 + signo;
    else if (ex == 0 && rc != 0) {
        ex = cli_fail(key, rc, dlock_last_errmsg());
    }
    /* A write error on stdout is main()'s to report (exit 70). */
    dlock_client_close(client);
    dlock_cancel_free(cancel);
    cli_child_cleanup(&sig);
    return ex;
}

/* Parse `dlock leader`'s argv: the flags into *watching and *json, the
 * one KEY into *key. Returns -1 to go on, or an exit status. */
static int parse_leader(int argc, char **argv, const char **key, int *watching, int *json)
{
    cli_optstate st;
    int nkeys = 0, id;

    cli_opt_init(&st, argc, argv, "dlock leader");
    while ((id = cli_opt_next(&st, leader_opts)) != CLI_OPT_END) {
        switch (id) {
        case L_WATCH:
            *watching = 1;
            break;
        case L_JSON:
            *json = 1;
            break;
        case L_HELP:
            cli_usage_leader(stdout);
            return CLI_EX_OK;
        case CLI_OPT_POSITIONAL:
            *key = st.arg;
            nkeys++;
            break;
        case CLI_OPT_DASHDASH:
            for (; st.ind < argc; st.ind++, nkeys++)
                *key = argv[st.ind];
            break;
        default:
            return CLI_EX_USAGE;
        }
    }
    if (nkeys != 1)
        return cli_usage_error(st.prog, nkeys == 0 ? "missing KEY" : "one KEY at a time, please");
    return cli_check_key(st.prog, *key) != 0 ? CLI_EX_USAGE : -1;
}

/* `dlock leader`: parse, then one look or --watch. No leader is an
 * answer, exit 3, said on stderr for people (-q silences it) and, with
 * --json, as an object with a null leader on stdout for programs. */
int cli_cmd_leader(const cli_globals *g, int argc, char **argv)
{
    dlock_client *client = NULL;
    dlock_info info;
    const char *key = NULL;
    int watching = 0, json = 0, rc, ex;

    if ((ex = parse_leader(argc, argv, &key, &watching, &json)) >= 0)
        return ex;
    if (watching)
        return watch(g, key, json);

    ex = cli_client_open(&client, g);
    if (ex != 0)
        return ex;
    rc = dlock_leader(&info, client, key);
    if (rc != 0) {
        ex = cli_fail(key, rc, dlock_last_errmsg());
    } else if (!info.held) {
        if (json)
            print_info(key, &info, 1);
        if (!g->quiet)
            cli_key_err(key, "no leader");
        ex = CLI_EX_NOLEADER;
    } else {
        print_info(key, &info, json);
    }
    dlock_client_close(client);
    return ex;
}
