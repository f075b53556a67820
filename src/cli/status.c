/*
 * status.c — `dlock status [--json] KEY...`: who holds each key now, as the
 * server sees it (dlock_key_state_get with DLOCK_KIND_ANY: the mutex, with
 * its writer or its readers, or, if only that is in use, the semaphore of
 * the same name with its permits; one or two round trips per key).
 *
 * All keys are inspected before anything is printed, so a failure half-way
 * (server gone) prints an error and no partial table or half a JSON array:
 * scripts either get the whole answer or a non-zero exit status.
 *
 * Text output is for people: a line per key (state, kind, waiters) and an
 * indented line per holder (mode, slot, owner, TTL, fencing token, age),
 * untrusted strings escaped so an owner id cannot drive the terminal. JSON
 * output is for programs: one array, one object per key in the order
 * given, every object with the same fields. The first fields are those of
 * the first version of this command, kept for scripts written against it
 * ("owner", "ttl_ms" and "fencing_token" are the first holder's, null when
 * the key is free); "kind" and "holders" (every holder) came later, then
 * "limit" and each holder's "permits". Fencing tokens are strings, as
 * DESIGN.md asks, so tools that read numbers as doubles cannot round them.
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

/* `dlock status --help`. */
static const char status_help[] =
    "Usage: dlock status [--json] KEY...\n"
    "\n"
    "Show, for each KEY, whether it is held and by whom, as the server sees it: the\n"
    "kind of lock (a mutex, also when taken by 'run --shared' readers or 'elect',\n"
    "or the semaphore of 'run --limit', with its limit), each holder with its mode\n"
    "(write, read or permit), semaphore slot and permits, remaining TTL, fencing\n"
    "token and age, and how many waiters are queued. A free key is not an error.\n"
    "\n"
    "    payment:42  held  mutex  waiters 1\n"
    "      write  host-a:4242  ttl 29.1s  fencing token 17  age 3.2s\n"
    "    gpu         held  semaphore  limit 4  waiters 0\n"
    "      permit slot 0 permits 3  host-b:77  ttl 9.8s  fencing token 20  age 5.0s\n"
    "\n"
    "Options:\n"
    "      --json    print a JSON array, one object per KEY:\n"
    "                {\"key\": \"...\", \"state\": \"held\" or \"free\",\n"
    "                 \"owner\": \"...\", \"ttl_ms\": N, \"fencing_token\": \"N\",\n"
    "                 \"waiters\": N, \"kind\": \"mutex\" or \"semaphore\",\n"
    "                 \"limit\": N (a semaphore's) or null,\n"
    "                 \"holders\": [{\"owner\": \"...\", \"mode\": \"write\", \"read\"\n"
    "                   or \"permit\", \"slot\": N or null, \"permits\": N, \"ttl_ms\": N,\n"
    "                   \"fencing_token\": \"N\", \"age_ms\": N}, ...]}\n"
    "                (owner, ttl_ms and fencing_token are the first holder's, null\n"
    "                when free; fencing tokens are strings so no digit is lost)\n"
    "  -h, --help    show this help\n"
    "\n"
    "Exit status: 0 success, 64 usage error, 69 Redis unreachable, authentication\n"
    "failed or a permission missing (ACL), 70 internal error.\n"
    "\n"
    "Examples:\n"
    "  dlock status payment:42\n"
    "  dlock status --json payment:42 payment:43 |\n"
    "      jq -r '.[] | select(.state==\"held\") | .owner'\n"
    "  dlock status --json gpu | jq '.[0].holders[] | {slot, owner}'\n";

void cli_usage_status(FILE *out)
{
    fputs(status_help, out);
}

/* "29.1s", or "none" for a key without expiry (never set by dlock). */
static void fmt_ttl(char *buf, size_t size, int64_t ttl_ms)
{
    if (ttl_ms >= 0)
        cli_duration_format(buf, size, ttl_ms);
    else
        snprintf(buf, size, "none");
}

/* A line per key and a line per holder:
 *   payment:42  held  mutex  waiters 0
 *     write  host:1234  ttl 29.1s  fencing token 17  age 0.9s
 *   gpu         held  semaphore  waiters 2
 *     permit slot 0  host:77  ttl 9.8s  fencing token 20  age 5.0s
 *   payment:43  free */
static void print_text(const char *const *keys, dlock_key_state *const *states, int n)
{
    size_t width = 0, h;
    int i;

    for (i = 0; i < n; i++)
        if (strlen(keys[i]) > width)
            width = strlen(keys[i]);
    if (width > 40)
        width = 40;
    for (i = 0; i < n; i++) {
        size_t pad = strlen(keys[i]) < width ? width - strlen(keys[i]) : 0;
        const dlock_key_state *s = states[i];

        cli_put_text(stdout, keys[i]);
        printf("%*s  ", (int)pad, "");
        if (s->nholders == 0) {
            fputs("free", stdout);
            if (s->waiters > 0)
                printf("  waiters %" PRId64, s->waiters);
            fputc('\n', stdout);
            continue;
        }
        printf("held  %s", cli_kind_name(s->kind));
        if (s->kind == DLOCK_KIND_SEMAPHORE && s->limit > 0)
            printf("  limit %d", s->limit);
        printf("  waiters %" PRId64 "\n", s->waiters);
        for (h = 0; h < s->nholders; h++) {
            const dlock_holder *hd = &s->holders[h];
            char ttl[32], age[32];

            fmt_ttl(ttl, sizeof ttl, hd->ttl_ms);
            cli_duration_format(age, sizeof age, hd->age_ms);
            printf("  %s", cli_mode_name(hd->mode));
            if (hd->slot >= 0)
                printf(" slot %d", hd->slot);
            if (hd->mode == 0)
                printf(" permits %d", hd->permits);
            fputs("  ", stdout);
            cli_put_text(stdout, hd->owner);
            printf("  ttl %s  fencing token %" PRIu64 "  age %s\n", ttl, hd->fencing_token, age);
        }
    }
}

/* One holder as a JSON object. */
static void print_json_holder(const dlock_holder *h)
{
    fputs("{\"owner\":", stdout);
    cli_put_json_string(stdout, h->owner);
    printf(",\"mode\":\"%s\",\"slot\":", cli_mode_name(h->mode));
    if (h->slot >= 0)
        printf("%d", h->slot);
    else
        fputs("null", stdout);
    printf(",\"permits\":%d,\"ttl_ms\":%" PRId64 ",\"fencing_token\":\"%" PRIu64
           "\",\"age_ms\":%" PRId64 "}",
           h->permits, h->ttl_ms, h->fencing_token, h->age_ms);
}

/* The JSON array, one object per line. */
static void print_json(const char *const *keys, dlock_key_state *const *states, int n)
{
    size_t h;
    int i;

    fputs("[", stdout);
    for (i = 0; i < n; i++) {
        const dlock_key_state *s = states[i];

        fputs(i == 0 ? "\n  {\"key\":" : ",\n  {\"key\":", stdout);
        cli_put_json_string(stdout, keys[i]);
        if (s->nholders > 0) {
            fputs(",\"state\":\"held\",\"owner\":", stdout);
            cli_put_json_string(stdout, s->holders[0].owner);
            printf(",\"ttl_ms\":%" PRId64 ",\"fencing_token\":\"%" PRIu64 "\"",
                   s->holders[0].ttl_ms, s->holders[0].fencing_token);
        } else {
            fputs(",\"state\":\"free\",\"owner\":null,\"ttl_ms\":null,\"fencing_token\":null",
                  stdout);
        }
        printf(",\"waiters\":%" PRId64 ",\"kind\":\"%s\",\"limit\":", s->waiters,
               cli_kind_name(s->kind));
        if (s->kind == DLOCK_KIND_SEMAPHORE && s->limit > 0)
            printf("%d", s->limit);
        else
            fputs("null", stdout);
        fputs(",\"holders\":[", stdout);
        for (h = 0; h < s->nholders; h++) {
            if (h > 0)
                fputc(',', stdout);
            print_json_holder(&s->holders[h]);
        }
        fputs("]}", stdout);
    }
    fputs(n > 0 ? "\n]\n" : "]\n", stdout);
}

/* Parse `dlock status`'s argv: --json into *json, the KEYs into keys[]
 * (room for argc entries), their number into *nkeys. Options may come
 * before or after the keys; after "--" everything is a key. Returns -1 to
 * go on, or an exit status. */
static int parse_status(int argc, char **argv, const char **keys, int *nkeys, int *json)
{
    cli_optstate st;
    int id, i;

    cli_opt_init(&st, argc, argv, "dlock status");
    while ((id = cli_opt_next(&st, status_opts)) != CLI_OPT_END) {
        switch (id) {
        case S_JSON:
            *json = 1;
            break;
        case S_HELP:
            cli_usage_status(stdout);
            return CLI_EX_OK;
        case CLI_OPT_POSITIONAL:
            keys[(*nkeys)++] = st.arg;
            break;
        case CLI_OPT_DASHDASH:
            while (st.ind < argc)
                keys[(*nkeys)++] = argv[st.ind++];
            break;
        default:
            return CLI_EX_USAGE;
        }
    }
    if (*nkeys == 0)
        return cli_usage_error(st.prog, "missing KEY");
    for (i = 0; i < *nkeys; i++)
        if (cli_check_key(st.prog, keys[i]) != 0)
            return CLI_EX_USAGE;
    return -1;
}

/* Look at every key into states[] (nkeys entries, NULL-initialised; the
 * caller frees them). Returns 0 or the exit status after the first failure
 * (reported). */
static int inspect_all(dlock_key_state **states, const cli_globals *g, const char **keys, int nkeys)
{
    dlock_client *client = NULL;
    int i, rc, ex = cli_client_open(&client, g);

    for (i = 0; ex == 0 && i < nkeys; i++) {
        rc = dlock_key_state_get(&states[i], client, keys[i], DLOCK_KIND_ANY);
        if (rc != 0)
            ex = cli_fail(keys[i], rc, dlock_last_errmsg());
    }
    dlock_client_close(client);
    return ex;
}

/* `dlock status`: parse, inspect every key, then print. */
int cli_cmd_status(const cli_globals *g, int argc, char **argv)
{
    dlock_key_state **states = NULL;
    const char **keys;
    int nkeys = 0, json = 0, i, ex;

    keys = calloc((size_t)argc, sizeof *keys);
    states = calloc((size_t)argc, sizeof *states);
    if (keys == NULL || states == NULL) {
        cli_err("out of memory");
        ex = CLI_EX_SOFTWARE;
    } else if ((ex = parse_status(argc, argv, keys, &nkeys, &json)) < 0 &&
               (ex = inspect_all(states, g, keys, nkeys)) == 0) {
        if (json)
            print_json(keys, states, nkeys);
        else
            print_text(keys, states, nkeys);
    }
    for (i = 0; states != NULL && i < nkeys; i++)
        dlock_key_state_free(states[i]);
    free(states);
    free((void *)keys);
    return ex;
}
