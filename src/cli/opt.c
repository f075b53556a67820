/*
 * opt.c — the one option parser every part of the tool uses.
 *
 * Why not getopt_long: GNU getopt permutes argv and swallows the "--" that
 * separates `dlock run`'s KEYs from CMD, so the two can no longer be told
 * apart; and its messages cannot name the subcommand. This parser is an
 * iterator: each call returns the next option's id, a positional argument,
 * the "--" marker, the end, or an error it has already printed. The caller
 * decides what positionals and "--" mean, which is what lets `run` stop at
 * "--" and `status` accept options after its keys.
 *
 * Accepted spellings: --name, --name=value, --name value, -x, -xvalue,
 * -x value, and bundled flags (-qV). Long names must be spelled out in full
 * (no abbreviations), so adding an option later never makes an existing
 * command line ambiguous. A lone "-" is a positional argument.
 */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

/* Report "PROG: WHAT '--opt'" (and the usage hint); returns CLI_OPT_ERROR. */
static int fail(const cli_optstate *st, const char *what)
{
    cli_usage_error(st->prog, "%s '%s'", what, st->opt);
    return CLI_OPT_ERROR;
}

/* Report "PROG: option '--opt' WHAT"; returns CLI_OPT_ERROR. */
static int fail_after(const cli_optstate *st, const char *what)
{
    cli_usage_error(st->prog, "option '%s' %s", st->opt, what);
    return CLI_OPT_ERROR;
}

/* Find the table entry for a long name of `len` bytes, or NULL. */
static const cli_opt *find_long(const cli_opt *opts, const char *name, size_t len)
{
    for (; opts->name != NULL; opts++)
        if (strlen(opts->name) == len && strncmp(opts->name, name, len) == 0)
            return opts;
    return NULL;
}

/* Find the table entry for a short letter, or NULL. */
static const cli_opt *find_short(const cli_opt *opts, char c)
{
    for (; opts->name != NULL; opts++)
        if (opts->short_name != 0 && opts->short_name == c)
            return opts;
    return NULL;
}

/* The value of option o, which takes one: `attached` ("--ttl=5s", "-u
 * URL" written "-uURL"), else the next argument. Steps past what it used;
 * returns o's id, or CLI_OPT_ERROR (reported) when the value is missing. */
static int take_value(cli_optstate *st, const cli_opt *o, const char *attached)
{
    if (attached != NULL) {
        st->arg = attached;
        st->ind++;
    } else if (st->ind + 1 < st->argc) {
        st->arg = st->argv[st->ind + 1];
        st->ind += 2;
    } else {
        st->ind++;
        return fail_after(st, "needs a value");
    }
    return o->id;
}

/* Parse "--name[=value]" at argv[ind]. */
static int next_long(cli_optstate *st, const cli_opt *opts)
{
    const char *a = st->argv[st->ind];
    const char *name = a + 2;
    const char *eq = strchr(name, '=');
    size_t len = eq != NULL ? (size_t)(eq - name) : strlen(name);
    const cli_opt *o = find_long(opts, name, len);

    snprintf(st->opt, sizeof st->opt, "--%.*s", (int)(len > 50 ? 50 : len), name);
    if (o == NULL) {
        st->ind++;
        return fail(st, "unknown option");
    }
    if (!o->has_arg) {
        st->ind++;
        if (eq != NULL)
            return fail_after(st, "takes no value");
        return o->id;
    }
    return take_value(st, o, eq != NULL ? eq + 1 : NULL);
}

/* Parse the short option at argv[ind][sub] (sub >= 1), stepping through a
 * bundle such as "-qV" one letter per call. */
static int next_short(cli_optstate *st, const cli_opt *opts)
{
    const char *a = st->argv[st->ind];
    int pos = st->sub > 0 ? st->sub : 1;
    const cli_opt *o = find_short(opts, a[pos]);

    snprintf(st->opt, sizeof st->opt, "-%c", a[pos]);
    st->sub = 0;
    if (o == NULL) {
        st->ind++;
        return fail(st, "unknown option");
    }
    if (!o->has_arg) {
        if (a[pos + 1] != '\0')
            st->sub = pos + 1;
        else
            st->ind++;
        return o->id;
    }
    return take_value(st, o, a[pos + 1] != '\0' ? a + pos + 1 : NULL);
}

/* See cli.h. The state machine has one piece of memory besides the index:
 * `sub`, the position inside a bundle of short flags still being read. */
int cli_opt_next(cli_optstate *st, const cli_opt *opts)
{
    const char *a;

    st->arg = NULL;
    if (st->sub > 0)
        return next_short(st, opts);
    if (st->ind >= st->argc)
        return CLI_OPT_END;
    a = st->argv[st->ind];
    if (strcmp(a, "--") == 0) {
        st->ind++;
        return CLI_OPT_DASHDASH;
    }
    if (a[0] != '-' || a[1] == '\0') {
        st->arg = a;
        st->ind++;
        return CLI_OPT_POSITIONAL;
    }
    if (a[1] == '-')
        return next_long(st, opts);
    return next_short(st, opts);
}

void cli_opt_init(cli_optstate *st, int argc, char **argv, const char *prog)
{
    memset(st, 0, sizeof *st);
    st->argc = argc;
    st->argv = argv;
    st->ind = 1;
    st->prog = prog;
}

/* See cli.h. The option's name is in every message, so "--ttl 'abc'" and
 * "--interval 'abc'" are told apart; a value out of range is quoted as the
 * user wrote it and the limit as a duration ("10ms", not 10). */
int cli_opt_duration_range(int64_t *out, const cli_optstate *st, int64_t min_ms, int64_t max_ms)
{
    const char *why;
    char limit[32];

    if (cli_duration_parse(out, st->arg, &why) != 0) {
        cli_usage_error(st->prog, "%s '%s': %s", st->opt, st->arg, why);
        return -1;
    }
    if (*out < min_ms) {
        cli_duration_format(limit, sizeof limit, min_ms);
        cli_usage_error(st->prog, "%s %s is below the minimum of %s", st->opt, st->arg, limit);
        return -1;
    }
    if (max_ms > 0 && *out > max_ms) {
        cli_duration_format(limit, sizeof limit, max_ms);
        cli_usage_error(st->prog, "%s %s is above the maximum of %s", st->opt, st->arg, limit);
        return -1;
    }
    return 0;
}

int cli_opt_duration(int64_t *out, const cli_optstate *st)
{
    return cli_opt_duration_range(out, st, 0, 0);
}

/* See cli.h. The duration part goes through the one duration parser, so
 * "--rate 100/1m30s" works like any duration. */
int cli_opt_rate(int *count, int64_t *period_ms, const cli_optstate *st)
{
    const char *slash = strchr(st->arg, '/'), *why;
    char num[32];
    long n;

    if (slash == NULL || slash == st->arg || (size_t)(slash - st->arg) >= sizeof num) {
        cli_usage_error(st->prog, "%s '%s': expected N/D, starts per duration (e.g. 10/1s)",
                        st->opt, st->arg);
        return -1;
    }
    snprintf(num, sizeof num, "%.*s", (int)(slash - st->arg), st->arg);
    if (cli_parse_long(&n, num, 1, 1000000) != 0) {
        cli_usage_error(st->prog, "%s '%s': N must be from 1 to 1000000", st->opt, st->arg);
        return -1;
    }
    if (cli_duration_parse(period_ms, slash + 1, &why) != 0) {
        cli_usage_error(st->prog, "%s '%s': %s", st->opt, st->arg, why);
        return -1;
    }
    if (*period_ms < 1) {
        cli_usage_error(st->prog, "%s '%s': the period must be at least 1ms", st->opt, st->arg);
        return -1;
    }
    *count = (int)n;
    return 0;
}

/* See cli.h. The library refuses the same keys, but in its own words; this
 * check names KEY and the limit the way the help does. */
int cli_check_key(const char *prog, const char *key)
{
    char *shown;
    size_t len = strlen(key);

    if (len == 0)
        return cli_usage_error(prog, "KEY is empty");
    if (len <= DLOCK_KEY_MAX)
        return 0;
    shown = cli_text_dup(key);
    if (shown != NULL)
        cli_text_cut(shown, 40);
    cli_usage_error(prog, "KEY '%s' is %zu bytes long; the maximum is %d bytes",
                    shown != NULL ? shown : "", len, DLOCK_KEY_MAX);
    free(shown);
    return CLI_EX_USAGE;
}
