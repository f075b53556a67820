/*
 * status.c — `dlock status [--json] KEY...`: who holds each key now, as the
 * server sees it (one dlock_inspect round trip per key).
 *
 * All keys are inspected before anything is printed, so a failure half-way
 * (server gone) prints an error and no partial table or half a JSON array:
 * scripts either get the whole answer or a non-zero exit status.
 *
 * Text output is for people: one aligned line per key, untrusted strings
 * escaped so an owner id cannot drive the terminal. JSON output is for
 * programs: one array, one object per key in the order given, every object
 * with the same fields ("owner", "ttl_ms" and "fencing_token" are null when
 * the key is free). The fencing token is a string, as DESIGN.md asks, so
 * tools that read numbers as doubles cannot round it.
 */
#include "cli.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

enum { S_JSON = 1, S_HELP };

static const cli_opt status_opts[] = {
    { "json", 0, 0, S_JSON },
    { "help", 'h', 0, S_HELP },
    { NULL, 0, 0, 0 },
};

void cli_usage_status(FILE *out)
{
    fputs("Usage: dlock status [--json] KEY...\n"
          "\n"
          "Show, for each KEY, whether it is held and by whom, the lock's remaining TTL\n"
          "on the server, its fencing token and how many waiters are queued. A free key\n"
          "is not an error.\n"
          "\n"
          "Options:\n"
          "      --json    print a JSON array, one object per KEY:\n"
          "                {\"key\": \"...\", \"state\": \"held\" or \"free\", \"owner\": \"...\",\n"
          "                 \"ttl_ms\": N, \"fencing_token\": \"N\", \"waiters\": N}\n"
          "                (owner, ttl_ms and fencing_token are null when free;\n"
          "                fencing_token is a string so that no digit is lost)\n"
          "  -h, --help    show this help\n"
          "\n"
          "Exit status: 0 success, 64 usage error, 69 Redis unreachable or\n"
          "authentication failed, 70 internal error.\n"
          "\n"
          "Examples:\n"
          "  dlock status payment:42\n"
          "  dlock status --json payment:42 payment:43 | jq -r '.[] | select(.state==\"held\") | .owner'\n",
          out);
}

/* One line per key:
 *   payment:42  held by host:1234  ttl 29.1s  fencing token 17  waiters 0
 *   payment:43  free */
static void print_text(const char *const *keys, const dlock_info *infos, int n)
{
    size_t width = 0;
    int i;

    for (i = 0; i < n; i++)
        if (strlen(keys[i]) > width)
            width = strlen(keys[i]);
    if (width > 40)
        width = 40;
    for (i = 0; i < n; i++) {
        size_t pad = strlen(keys[i]) < width ? width - strlen(keys[i]) : 0;
        const dlock_info *in = &infos[i];
        char ttl[32];

        cli_put_text(stdout, keys[i]);
        printf("%*s  ", (int)pad, "");
        if (!in->held) {
            fputs("free", stdout);
            if (in->waiters > 0)
                printf("  waiters %" PRId64, in->waiters);
            fputc('\n', stdout);
            continue;
        }
        if (in->ttl_ms >= 0)
            cli_duration_format(ttl, sizeof ttl, in->ttl_ms);
        else
            snprintf(ttl, sizeof ttl, "none");
        fputs("held by ", stdout);
        cli_put_text(stdout, in->owner);
        printf("  ttl %s  fencing token %" PRIu64 "  waiters %" PRId64 "\n", ttl,
               in->fencing_token, in->waiters);
    }
}

/* The JSON array, one object per line. */
static void print_json(const char *const *keys, const dlock_info *infos, int n)
{
    int i;

    fputs("[", stdout);
    for (i = 0; i < n; i++) {
        const dlock_info *in = &infos[i];

        fputs(i == 0 ? "\n  {\"key\":" : ",\n  {\"key\":", stdout);
        cli_put_json_string(stdout, keys[i]);
        if (in->held) {
            fputs(",\"state\":\"held\",\"owner\":", stdout);
            cli_put_json_string(stdout, in->owner);
            printf(",\"ttl_ms\":%" PRId64 ",\"fencing_token\":\"%" PRIu64 "\"", in->ttl_ms,
                   in->fencing_token);
        } else {
            fputs(",\"state\":\"free\",\"owner\":null,\"ttl_ms\":null,\"fencing_token\":null",
                  stdout);
        }
        printf(",\"waiters\":%" PRId64 "}", in->waiters);
    }
    fputs(n > 0 ? "\n]\n" : "]\n", stdout);
}

/* `dlock status`: parse, inspect every key, then print. Options may come
 * before or after the keys; after "--" everything is a key. */
int cli_cmd_status(const cli_globals *g, int argc, char **argv)
{
    cli_optstate st;
    dlock_client *client = NULL;
    dlock_info *infos = NULL;
    const char **keys;
    int nkeys = 0, json = 0, id, i, ex = CLI_EX_OK, done = 0;

    keys = calloc((size_t)argc, sizeof *keys);
    if (keys == NULL) {
        cli_err("out of memory");
        return CLI_EX_SOFTWARE;
    }
    memset(&st, 0, sizeof st);
    st.argc = argc;
    st.argv = argv;
    st.ind = 1;
    st.prog = "dlock status";
    while (!done) {
        switch (id = cli_opt_next(&st, status_opts)) {
        case S_JSON:
            json = 1;
            break;
        case S_HELP:
            cli_usage_status(stdout);
            goto out;
        case CLI_OPT_POSITIONAL:
            keys[nkeys++] = st.arg;
            break;
        case CLI_OPT_DASHDASH:
            while (st.ind < argc)
                keys[nkeys++] = argv[st.ind++];
            done = 1;
            break;
        case CLI_OPT_END:
            done = 1;
            break;
        default:
            ex = CLI_EX_USAGE;
            goto out;
        }
    }
    if (nkeys == 0) {
        ex = cli_usage_error("dlock status", "missing KEY");
        goto out;
    }

    infos = calloc((size_t)nkeys, sizeof *infos);
    if (infos == NULL) {
        cli_err("out of memory");
        ex = CLI_EX_SOFTWARE;
        goto out;
    }
    ex = cli_client_open(&client, g);
    if (ex != 0)
        goto out;
    for (i = 0; i < nkeys; i++) {
        int rc = dlock_inspect(&infos[i], client, keys[i]);
        if (rc != 0) {
            cli_report(keys[i], rc, dlock_last_errmsg(), NULL);
            ex = cli_exit_for(rc);
            goto out;
        }
    }
    if (json)
        print_json(keys, infos, nkeys);
    else
        print_text(keys, infos, nkeys);

out:
    dlock_client_close(client);
    free(infos);
    free((void *)keys);
    return ex;
}
