/*
 * main.c — the `dlock` tool's entry point: global options, defaults from
 * the environment, the command table, and the top-level help.
 *
 *     dlock [GLOBAL OPTIONS] COMMAND [COMMAND OPTIONS] [ARGS...]
 *
 * Global options go before COMMAND; everything from COMMAND on belongs to
 * the command, so "dlock run -q ..." is a run option (rejected), never a
 * global one. Adding a command means writing its file and adding one line to
 * `commands` below. Commands open the client themselves, so `dlock run
 * --help` works without a Redis server.
 */
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_URL "redis://127.0.0.1:6379"
#define OWNER_ID_MAX 200 /* the library's limits (client.c) */
#define PREFIX_MAX 128
#define CONNECT_TIMEOUT_MAX_MS (3600 * 1000) /* a longer one is a typo */

static const cli_command commands[] = {
    { "run", "hold a lock (several, shared, or a permit) while a command runs", cli_cmd_run,
      cli_usage_run },
    { "elect", "run a command while this process is the elected leader", cli_cmd_elect,
      cli_usage_elect },
    { "leader", "print the current leader; --watch follows changes", cli_cmd_leader,
      cli_usage_leader },
    { "status", "show who holds keys, their TTL, fencing token and waiters", cli_cmd_status,
      cli_usage_status },
    { "unlock", "remove a stuck lock (operator's tool)", cli_cmd_unlock, cli_usage_unlock },
    { "metrics", "lock state in Prometheus format; --listen serves it (exporter)", cli_cmd_metrics,
      cli_usage_metrics },
    { "top", "live terminal view of locks, holders, TTLs and queues", cli_cmd_top, cli_usage_top },
    { "latch", "a countdown latch: init KEY N, down KEY, wait KEY", cli_cmd_latch,
      cli_usage_latch },
    { "barrier", "wait until N processes arrived at KEY", cli_cmd_barrier, cli_usage_barrier },
};

#define N_COMMANDS (sizeof commands / sizeof commands[0])

enum { G_URL = 1, G_PREFIX, G_ID, G_QUIET, G_PASSWORD_FILE, G_CONNECT_TIMEOUT, G_HELP, G_VERSION };

static const cli_opt global_opts[] = {
    { "url", 'u', 1, G_URL },
    { "prefix", 0, 1, G_PREFIX },
    { "id", 0, 1, G_ID },
    { "quiet", 'q', 0, G_QUIET },
    { "password-file", 0, 1, G_PASSWORD_FILE },
    { "connect-timeout", 0, 1, G_CONNECT_TIMEOUT },
    { "help", 'h', 0, G_HELP },
    { "version", 'V', 0, G_VERSION },
    { NULL, 0, 0, 0 },
};

/* The help of `dlock --help`, before and after the list of commands that
 * usage() prints from the table. */
static const char usage_head[] =
    "Usage: dlock [GLOBAL OPTIONS] COMMAND [ARGS...]\n"
    "\n"
    "Distributed locks backed by Redis, for shell scripts and operators: run a\n"
    "command while holding a lock that no other machine can hold at the same time.\n"
    "\n"
    "Commands:\n";

static const char usage_tail[] =
    "  help     show a command's help: dlock help COMMAND\n"
    "\n"
    "Global options (before COMMAND):\n"
    "  -u, --url URL            the Redis server:\n"
    "                             redis://[user:pass@]host[:port][/db]\n"
    "                             rediss://host[:port][/db][?cacert=F&cert=F&key=F&sni=NAME]  "
    "(TLS)\n"
    "                             unix:///path/to/redis.sock[?db=N]\n"
    "                             redis-sentinel://h1:p1,h2:p2/MASTER[?db=N]\n"
    "                             redis-cluster://h1:p1[,h2:p2...]  (seed nodes)\n"
    "                             rediss-sentinel://..., rediss-cluster://...  (TLS,\n"
    "                             with the rediss:// parameters)\n"
    "                           any URL takes ?replicas=N: replicas that must\n"
    "                           acknowledge a grant (default 1 if the master has one)\n"
    "                           repeat -u, or separate URLs by commas, for Redlock\n"
    "                           over independent masters (a majority must agree)\n"
    "                           (default: $DLOCK_URL, else " DEFAULT_URL ";\n"
    "                           an empty -u or $DLOCK_URL is an error)\n"
    "      --prefix P           prefix of dlock's keys in Redis, at most 128 bytes,\n"
    "                           no '{' or '}' (default: $DLOCK_PREFIX, else \"dlock:\")\n"
    "      --id OWNER           owner id that 'dlock status' shows for our locks, 1 to\n"
    "                           200 bytes (default: $DLOCK_ID, else HOSTNAME:PID)\n"
    "      --password-file F    Redis password: the first line of file F\n"
    "                           (default: $DLOCK_PASSWORD, else the URL's password;\n"
    "                           prefer these to a password in the URL: argv is\n"
    "                           visible to every user in ps)\n"
    "      --connect-timeout D  give up connecting to Redis after D (default 2s,\n"
    "                           at most 1h)\n"
    "  -q, --quiet              no messages for expected outcomes (lock busy,\n"
    "                           wait ran out, no leader, unlock results); errors\n"
    "                           still show\n"
    "  -h, --help               show this help and exit\n"
    "  -V, --version            show the version and exit\n"
    "\n"
    "Durations (D): 250ms, 10s, 1.5s, 2m, 1h, or compound: 1m30s, 1h2m3s500ms;\n"
    "a bare number is milliseconds; at most " CLI_DURATION_MAX_TEXT ".\n"
    "KEY: 1 to 512 bytes.\n"
    "\n"
    "Exit status:\n"
    "  0        success ('dlock run'/'elect': CMD's own status, 128+N if signal N\n"
    "           ended it)\n"
    "  3        leader: there is no leader; latch get: there is no latch\n"
    "  64       usage error or invalid argument\n"
    "  69       Redis unreachable, Redlock quorum not reached, authentication failed,\n"
    "           or the Redis user lacks a permission (ACL)\n"
    "  70       internal error or unexpected reply from Redis\n"
    "  75       run/elect: lock not acquired (busy with --no-wait, or --wait ran\n"
    "           out); run --rate: over the rate; latch init: a live latch exists;\n"
    "           latch wait, barrier: --wait ran out\n"
    "  79       run/elect: the lock was lost while CMD ran (CMD got SIGTERM/SIGKILL)\n"
    "  126/127  run/elect: CMD could not be run / was not found\n"
    "\n"
    "Environment:\n"
    "  DLOCK_URL, DLOCK_PREFIX, DLOCK_ID, DLOCK_PASSWORD  defaults, as above\n"
    "  (an empty DLOCK_PREFIX, DLOCK_ID or DLOCK_PASSWORD counts as unset)\n"
    "  DLOCK_LOG=error|warn|info|debug  the library's log on stderr\n"
    "  CMD started by 'dlock run' or 'dlock elect' sees DLOCK_KEY and\n"
    "  DLOCK_FENCING_TOKEN, DLOCK_KEYS and DLOCK_FENCING_TOKENS (all keys held),\n"
    "  with --limit DLOCK_SLOT and DLOCK_PERMITS, and DLOCK_HELD (what is held: a\n"
    "  nested 'dlock run' of the same key runs under it at once).\n"
    "\n"
    "Examples:\n"
    "  dlock run nightly-report -- ./report.sh          # one at a time, anywhere\n"
    "  dlock run --no-wait \"job:$ID\" -- ./work \"$ID\"    # first worker wins (75: taken)\n"
    "  dlock run --wait 10s deploy -- make deploy       # give up after 10s\n"
    "  dlock run --limit 3 api-quota -- ./call-api      # at most 3 at once\n"
    "  dlock run acct:1 acct:2 -- ./transfer 1 2        # both locks, or wait\n"
    "  dlock run --shared config -- ./read-config       # readers together\n"
    "  dlock run --rate 10/1s api -- ./call-api         # at most 10 starts a second\n"
    "  dlock latch init build 3; dlock latch wait build # wait for 3 'latch down'\n"
    "  dlock barrier --wait 5m phase1 4                 # 4 processes meet\n"
    "  dlock elect scheduler -- ./scheduler             # one leader, the rest wait\n"
    "  dlock leader --watch scheduler                   # follow the leadership\n"
    "  dlock -u redis://redis.example:6379 status --json payment:42\n"
    "  dlock unlock --force payment:42                  # remove a stuck lock\n"
    "  dlock metrics --listen 127.0.0.1:9466            # Prometheus exporter\n"
    "  dlock top 'payment:*'                            # live view\n"
    "\n"
    "Run 'dlock COMMAND --help' for a command's options; 'man dlock' for the manual.\n";

/* The full help of `dlock --help`, on `out`. */
static void usage(FILE *out)
{
    size_t i;

    fputs(usage_head, out);
    for (i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fputs(usage_tail, out);
}

/* The command called `name`, or NULL. */
static const cli_command *find_command(const char *name)
{
    size_t i;

    for (i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

/* An environment variable, with "set but empty" treated as unset. */
static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);

    return (v != NULL && v[0] != '\0') ? v : NULL;
}

/* Read the password from the first line of `path` into *out (malloc'd; the
 * caller wipes and frees it). A trailing "\n" or "\r\n" is not part of it.
 * Returns 0 or an exit status after printing why. */
static int read_password_file(char **out, const char *path)
{
    FILE *f = fopen(path, "re");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int err;

    *out = NULL;
    if (f == NULL) {
        cli_err("--password-file %s: %s", path, strerror(errno));
        return CLI_EX_USAGE;
    }
    n = getline(&line, &cap, f);
    err = errno;
    if (n < 0 && ferror(f)) {
        cli_err("--password-file %s: %s", path, strerror(err));
        fclose(f);
        free(line);
        return CLI_EX_USAGE;
    }
    fclose(f);
    if (n > 0 && line[n - 1] == '\n')
        line[--n] = '\0';
    if (n > 0 && line[n - 1] == '\r')
        line[--n] = '\0';
    if (n <= 0 || strlen(line) != (size_t)n) {
        cli_err("--password-file %s: %s", path,
                n <= 0 ? "the first line is empty" : "the password contains a NUL byte");
        if (line != NULL)
            explicit_bzero(line, cap);
        free(line);
        return CLI_EX_USAGE;
    }
    *out = line;
    return 0;
}

/* `dlock help [COMMAND]`. */
static int cmd_help(int argc, char **argv)
{
    const cli_command *c;

    if (argc < 2) {
        usage(stdout);
        return CLI_EX_OK;
    }
    if (argc > 2)
        return cli_usage_error("dlock", "help takes one COMMAND");
    if (strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return CLI_EX_OK;
    }
    c = find_command(argv[1]);
    if (c == NULL)
        return cli_usage_error("dlock", "unknown command '%s'", argv[1]);
    c->usage(stdout);
    return CLI_EX_OK;
}

/* What the global options leave for the rest of dlock_main(). */
typedef struct globals_parse {
    const char *cmd_name;      /* the COMMAND */
    int cmd_ind;               /* its index in argv */
    const char *password_file; /* --password-file, or NULL */
    int url_given;             /* -u was seen (an empty one is refused) */
} globals_parse;

/* Add one -u URL to the list in `list` (size `size`): repeated -u name the
 * servers of one Redlock deployment, joined by commas. Returns 0 or an exit
 * status after a usage error. */
static int add_url(char *list, size_t size, int first, const char *url)
{
    size_t have = first ? 0 : strlen(list), add = strlen(url);

    if (add == 0)
        return cli_usage_error("dlock", "-u: the URL is empty");
    if (have + add + 2 > size)
        return cli_usage_error("dlock", "too many or too long -u URLs (%zu bytes at most)",
                               size - 1);
    if (!first)
        list[have++] = ',';
    memcpy(list + have, url, add + 1);
    return 0;
}

/* Check an owner id from `what` ("--id" or "$DLOCK_ID") as the library
 * will: 1 to 200 bytes, no control characters. Returns 0 or CLI_EX_USAGE
 * after saying why. */
static int check_owner_id(const char *what, const char *id)
{
    size_t len = strlen(id);
    const char *p;

    if (len == 0)
        return cli_usage_error("dlock", "%s is empty (1 to %d bytes)", what, OWNER_ID_MAX);
    if (len > OWNER_ID_MAX)
        return cli_usage_error("dlock", "%s is %zu bytes long; the maximum is %d bytes", what, len,
                               OWNER_ID_MAX);
    for (p = id; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return cli_usage_error("dlock", "%s must not contain control characters", what);
    return 0;
}

/* Check a key prefix from `what` ("--prefix" or "$DLOCK_PREFIX"). */
static int check_prefix(const char *what, const char *prefix)
{
    size_t len = strlen(prefix);

    if (len > PREFIX_MAX)
        return cli_usage_error("dlock", "%s is %zu bytes long; the maximum is %d bytes", what, len,
                               PREFIX_MAX);
    if (strpbrk(prefix, "{}") != NULL)
        return cli_usage_error("dlock",
                               "%s must not contain '{' or '}' (they would change "
                               "the key's hash slot)",
                               what);
    return 0;
}

/* Handle one global option `id` (st->arg its value) into g. Returns -1 to
 * go on, or an exit status: 0 after --help/--version, 64 after a usage
 * error. */
static int global_option(cli_globals *g, globals_parse *gp, const cli_optstate *st, int id)
{
    static char url_list[8192];
    int64_t ms;
    int ex;

    switch (id) {
    case G_URL:
        ex = add_url(url_list, sizeof url_list, !gp->url_given, st->arg);
        if (ex != 0)
            return ex;
        g->url = url_list;
        gp->url_given = 1;
        return -1;
    case G_PREFIX:
        g->prefix = st->arg;
        return check_prefix("--prefix", st->arg) != 0 ? CLI_EX_USAGE : -1;
    case G_ID:
        g->owner_id = st->arg;
        return check_owner_id("--id", st->arg) != 0 ? CLI_EX_USAGE : -1;
    case G_QUIET:
        g->quiet = 1;
        return -1;
    case G_PASSWORD_FILE:
        gp->password_file = st->arg;
        return -1;
    case G_CONNECT_TIMEOUT:
        if (cli_opt_duration_range(&ms, st, 1, CONNECT_TIMEOUT_MAX_MS) != 0)
            return CLI_EX_USAGE;
        g->connect_timeout_ms = (int)ms;
        return -1;
    case G_HELP:
        usage(stdout);
        return CLI_EX_OK;
    case G_VERSION:
        printf("dlock %s\n", dlock_version());
        return CLI_EX_OK;
    default:
        return CLI_EX_USAGE; /* reported by cli_opt_next() */
    }
}

/* Parse the global options up to COMMAND. Returns -1 with gp->cmd_name set
 * to go on, or an exit status. */
static int parse_globals(cli_globals *g, globals_parse *gp, int argc, char **argv)
{
    cli_optstate st;
    int id, ex;

    cli_opt_init(&st, argc, argv, "dlock");
    while (gp->cmd_name == NULL) {
        switch (id = cli_opt_next(&st, global_opts)) {
        case CLI_OPT_POSITIONAL:
            gp->cmd_name = st.arg;
            break;
        case CLI_OPT_DASHDASH:
            if (st.ind >= argc)
                return cli_usage_error("dlock", "missing COMMAND");
            gp->cmd_name = argv[st.ind++];
            break;
        case CLI_OPT_END:
            return cli_usage_error("dlock", "missing COMMAND (run, elect, leader, status, "
                                            "unlock, metrics, top, latch, barrier)");
        default:
            if ((ex = global_option(g, gp, &st, id)) >= 0)
                return ex;
        }
    }
    gp->cmd_ind = st.ind - 1;
    return -1;
}

/* Fill in what the command line left open from the environment, and check
 * it as the command line's values were checked. An empty DLOCK_URL is an
 * error like an empty -u: it is more likely a variable that a script forgot
 * to fill in than a wish for the default server. Returns -1 to go on or an
 * exit status. */
static int apply_env(cli_globals *g, const globals_parse *gp)
{
    const char *url = getenv("DLOCK_URL");

    if (!gp->url_given && url != NULL && url[0] == '\0')
        return cli_usage_error("dlock", "$DLOCK_URL is set but empty: set it to a URL, or "
                                        "unset it for the default " DEFAULT_URL);
    if (g->url == NULL)
        g->url = url != NULL ? url : DEFAULT_URL;
    if (g->prefix == NULL && (g->prefix = env_nonempty("DLOCK_PREFIX")) != NULL &&
        check_prefix("$DLOCK_PREFIX", g->prefix) != 0)
        return CLI_EX_USAGE;
    if (g->owner_id == NULL && (g->owner_id = env_nonempty("DLOCK_ID")) != NULL &&
        check_owner_id("$DLOCK_ID", g->owner_id) != 0)
        return CLI_EX_USAGE;
    return -1;
}

/* Parse the global options, apply the environment's defaults, run the
 * command; returns the exit status. */
static int dlock_main(int argc, char **argv)
{
    cli_globals g;
    globals_parse gp;
    const cli_command *cmd;
    char *password = NULL;
    int ex;

    memset(&g, 0, sizeof g);
    memset(&gp, 0, sizeof gp);
    if ((ex = parse_globals(&g, &gp, argc, argv)) >= 0)
        return ex;
    if (strcmp(gp.cmd_name, "help") == 0)
        return cmd_help(argc - gp.cmd_ind, argv + gp.cmd_ind);
    cmd = find_command(gp.cmd_name);
    if (cmd == NULL)
        return cli_usage_error("dlock", "unknown command '%s'", gp.cmd_name);
    if ((ex = apply_env(&g, &gp)) >= 0)
        return ex;
    if (gp.password_file != NULL) {
        if ((ex = read_password_file(&password, gp.password_file)) != 0)
            return ex;
        g.password = password;
    } else {
        g.password = env_nonempty("DLOCK_PASSWORD");
    }

    ex = cmd->run(&g, argc - gp.cmd_ind, argv + gp.cmd_ind);

    if (password != NULL) {
        explicit_bzero(password, strlen(password));
        free(password);
    }
    return ex;
}

/* The exit status is dlock_main()'s, except that output which could not be
 * written (`dlock status k >/dev/full`) turns success into 70: a script
 * must not take a truncated answer for an answer. */
int main(int argc, char **argv)
{
    int ex = dlock_main(argc, argv);

    errno = 0;
    if ((fflush(stdout) != 0 || ferror(stdout)) && ex == CLI_EX_OK) {
        cli_err("cannot write to standard output%s%s", errno != 0 ? ": " : "",
                errno != 0 ? strerror(errno) : "");
        ex = CLI_EX_SOFTWARE;
    }
    return ex;
}
