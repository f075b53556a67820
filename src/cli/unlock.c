/*
 * unlock.c — `dlock unlock --force KEY`: the operator's tool for a stuck
 * lock. It deletes the lock whoever holds it (dlock_force_unlock); the
 * holder finds out at its next renewal, and a `dlock run` holder then kills
 * its command and exits 79. The fencing state is kept, so the next holder
 * still gets a larger token.
 *
 * --force is required because this is not a release: if the holder is
 * alive, two processes may briefly both believe they hold the lock. The
 * flag makes the operator say they know that.
 */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

enum { U_FORCE = 1, U_HELP };

static const cli_opt unlock_opts[] = {
    { "force", 0, 0, U_FORCE },
    { "help", 'h', 0, U_HELP },
    { NULL, 0, 0, 0 },
};

/* `dlock unlock --help`. */
static const char unlock_help[] =
    "Usage: dlock unlock --force KEY\n"
    "\n"
    "Remove the lock on KEY, whoever holds it. Use it for a lock that is stuck\n"
    "(its holder hung, yet keeps renewing it). If the holder is alive it finds out\n"
    "at its next renewal (a 'dlock run' holder then kills its command and exits\n"
    "79); until then two holders may both be running, which is why --force is\n"
    "required. Fencing tokens keep increasing: the next holder's token is larger.\n"
    "\n"
    "Options:\n"
    "      --force   required: remove the lock even though someone holds it\n"
    "  -h, --help    show this help\n"
    "\n"
    "Prints \"KEY: unlocked\" or \"KEY: was not locked\" (not with -q); both exit 0.\n"
    "Exit status: 0 success, 64 usage error, 69 Redis unreachable, authentication\n"
    "failed or a permission missing (ACL), 70 internal error.\n"
    "\n"
    "Example:\n"
    "  dlock status payment:42 && dlock unlock --force payment:42\n";

void cli_usage_unlock(FILE *out)
{
    fputs(unlock_help, out);
}

/* `dlock unlock`: parse, check --force, remove. */
int cli_cmd_unlock(const cli_globals *g, int argc, char **argv)
{
    cli_optstate st;
    dlock_client *client = NULL;
    const char *key = NULL;
    int force = 0, nkeys = 0, id, done = 0, removed = 0, rc, ex;

    cli_opt_init(&st, argc, argv, "dlock unlock");
    while (!done) {
        switch (id = cli_opt_next(&st, unlock_opts)) {
        case U_FORCE:
            force = 1;
            break;
        case U_HELP:
            cli_usage_unlock(stdout);
            return CLI_EX_OK;
        case CLI_OPT_POSITIONAL:
            key = st.arg;
            nkeys++;
            break;
        case CLI_OPT_DASHDASH:
            for (; st.ind < argc; st.ind++, nkeys++)
                key = argv[st.ind];
            done = 1;
            break;
        case CLI_OPT_END:
            done = 1;
            break;
        default:
            return CLI_EX_USAGE;
        }
    }
    if (nkeys == 0)
        return cli_usage_error("dlock unlock", "missing KEY");
    if (nkeys > 1)
        return cli_usage_error("dlock unlock", "one KEY at a time, please");
    if (cli_check_key("dlock unlock", key) != 0)
        return CLI_EX_USAGE;
    if (!force)
        return cli_usage_error("dlock unlock",
                               "--force is required: this removes the lock whoever holds "
                               "it, and a live holder keeps running until it notices");

    ex = cli_client_open(&client, g);
    if (ex != 0)
        return ex;
    rc = dlock_force_unlock(&removed, client, key);
    if (rc != 0) {
        ex = cli_fail(key, rc, dlock_last_errmsg());
    } else if (!g->quiet) {
        cli_put_text(stdout, key);
        fputs(removed ? ": unlocked\n" : ": was not locked\n", stdout);
    }
    dlock_client_close(client);
    return ex;
}
