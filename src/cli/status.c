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
 * the key is free); "kind" and "holders" (every holder) came later. Fencing
 * tokens are strings, as DESIGN.md asks, so tools that read numbers as
 * doubles cannot round them.
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
          "Show, for each KEY, whether it is held and by whom, as the server sees it: the\n"
          "kind of lock (a mutex, also when taken by 'run --shared' readers or 'elect',\n"
          "or the semaphore of 'run --limit'), each holder with its mode (write, read or\n"
          "permit), semaphore slot, remaining TTL, fencing token and age, and how many\n"
          "waiters are queued. A free key is not an error.\n"
          "\n"
          "    payment:42  held  mutex  waiters 1\n"
          "      write  host-a:4242  ttl 29.1s  fencing token 17  age 3.2s\n"
          "\n"
          "Options:\n"
          "      --json    print a JSON array, one object per KEY:\n"
          "                {\"key\": \"...\", \"state\": \"held\" or \"free\",\n"
          "                 \"owner\": \"...\", \"ttl_ms\": N, \"fencing_token\": \"N\",\n"
          "                 \"waiters\": N, \"kind\": \"mutex\" or \"semaphore\",\n"
          "                 \"holders\": [{\"owner\": \"...\", \"mode\": \"write\", \"read\"\n"
          "                   or \"permit\", \"slot\": N or null, \"ttl_ms\": N,\n"
          "                   \"fencing_token\": \"N\", \"age_ms\": N}, ...]}\n"
          "                (owner, ttl_ms and fencing_token are the first holder's, null\n"
          "                when free; fencing tokens are strings so no digit is lost)\n"
          "  -h, --help    show this help\n"
          "\n"
          "Exit status: 0 success, 64 usage error, 69 Redis unreachable or\n"
          "authentication failed, 70 internal error.\n"
          "\n"
          "Examples:\n"
          "  dlock status payment:42\n"
          "  dlock status --json payment:42 payment:43 | jq -r '.[] | select(.state==\"held\") | .owner'\n"
          "  dlock status --json gpu | jq '.[0].holders[] | {slot, owner}'\n",
          out);
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
        printf("held  %s  waiters %" PRId64 "\n", cli_kind_name(s->kind), s->waiters);
        for (h = 0; h < s->nholders; h++) {
            const dlock_holder *hd = &s->holders[h];
            char ttl[32], age[32];

            fmt_ttl(ttl, sizeof ttl, hd->ttl_ms);
            cli_duration_format(age, sizeof age, hd->age_ms);
            printf("  %s", cli_mode_name(hd->mode));
            if (hd->slot >= 0)
                printf(" slot %d", hd->slot);
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
    printf(",\"ttl_ms\":%" PRId64 ",\"fencing_token\":\"%" PRIu64 "\",\"age_ms\":%" PRId64 "}",
           h->ttl_ms, h->fencing_token, h->age_ms);
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
        printf(",\"waiters\":%" PRId64 ",\"kind\":\"%s\",\"holders\":[", s->waiters,
               cli_kind_name(s->kind));
        for (h = 0; h < s->nholders; h++) {
            if (h > 0)
                fputc(',', stdout);
            print_json_holder(&s->holders[h]);
        }
        fputs("]}", stdout);
    }
    fputs(n > 0 ? "\n]\n" : "]\n", stdout);
}

/* `dlock status`: parse, inspect every key, then print. Options may come
 * before or after the keys; after "--" everything is a key. */
int cli_cmd_status(const cli_globals *g, int argc, char **argv)
{
    cli_optstate st;
    dlock_client *client = NULL;
    dlock_key_state **states = NULL;
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

    states = calloc((size_t)nkeys, sizeof *states);
    if (states == NULL) {
        cli_err("out of memory");
        ex = CLI_EX_SOFTWARE;
        goto out;
    }
    ex = cli_client_open(&client, g);
    if (ex != 0)
        goto out;
    for (i = 0; i < nkeys; i++) {
        int rc = dlock_key_state_get(&states[i], client, keys[i], DLOCK_KIND_ANY);
        if (rc != 0) {
            cli_report(keys[i], rc, dlock_last_errmsg(), NULL);
            ex = cli_exit_for(rc);
            goto out;
        }
    }
    if (json)
        print_json(keys, states, nkeys);
    else
        print_text(keys, states, nkeys);

out:
    dlock_client_close(client);
    for (i = 0; states != NULL && i < nkeys; i++)
        dlock_key_state_free(states[i]);
    free(states);
    free((void *)keys);
    return ex;
}
