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
    { "metrics", "lock state in Prometheus format; --listen serves it (exporter)",
      cli_cmd_metrics, cli_usage_metrics },
    { "top", "live terminal view of locks, holders, TTLs and queues", cli_cmd_top,
      cli_usage_top },
};

#define N_COMMANDS (sizeof commands / sizeof commands[0])

enum {
    G_URL = 1,
    G_PREFIX,
    G_ID,
    G_QUIET,
    G_PASSWORD_FILE,
    G_CONNECT_TIMEOUT,
    G_HELP,
    G_VERSION
};

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

/* The full help of `dlock --help`, on `out`. */
static void usage(FILE *out)
{
    size_t i;

    fputs("Usage: dlock [GLOBAL OPTIONS] COMMAND [ARGS...]\n"
          "\n"
          "Distributed locks backed by Redis, for shell scripts and operators: run a\n"
          "command while holding a lock that no other machine can hold at the same time.\n"
          "\n"
          "Commands:\n",
          out);
    for (i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fputs("  help     show a command's help: dlock help COMMAND\n"
          "\n"
          "Global options (before COMMAND):\n"
          "  -u, --url URL            the Redis server:\n"
          "                             redis://[user:pass@]host[:port][/db]\n"
          "                             rediss://host[:port][/db][?cacert=F&cert=F&key=F&sni=NAME]  (TLS)\n"
          "                             unix:///path/to/redis.sock[?db=N]\n"
          "                             redis-sentinel://h1:p1,h2:p2/MASTER[?db=N]\n"
          "                             redis-cluster://h1:p1[,h2:p2...]  (seed nodes)\n"
          "                           repeat -u, or separate URLs by commas, for Redlock\n"
          "                           over independent masters (a majority must agree)\n"
          "                           (default: $DLOCK_URL, else " DEFAULT_URL ")\n"
          "      --prefix P           prefix of dlock's keys in Redis\n"
          "                           (default: $DLOCK_PREFIX, else \"dlock:\")\n"
          "      --id OWNER           owner id that 'dlock status' shows for our locks\n"
          "                           (default: $DLOCK_ID, else HOSTNAME:PID)\n"
          "      --password-file F    Redis password: the first line of file F\n"
          "                           (default: $DLOCK_PASSWORD, else the URL's password;\n"
          "                           prefer these to a password in the URL: argv is\n"
          "                           visible to every user in ps)\n"
          "      --connect-timeout D  give up connecting to Redis after D (default 2s)\n"
          "  -q, --quiet              no messages for expected outcomes (lock busy,\n"
          "                           wait ran out, unlock results); errors still show\n"
          "  -h, --help               show this help and exit\n"
          "  -V, --version            show the version and exit\n"
          "\n"
          "Durations (D): 250ms, 10s, 1.5s, 2m, 1h; a bare number is milliseconds.\n"
          "\n"
          "Exit status:\n"
          "  0        success ('dlock run'/'elect': CMD's own status, 128+N if signal N\n"
          "           ended it)\n"
          "  3        leader: there is no leader\n"
          "  64       usage error or invalid argument\n"
          "  69       Redis unreachable, Redlock quorum not reached, or authentication failed\n"
          "  70       internal error or unexpected reply from Redis\n"
          "  75       run/elect: lock not acquired (busy with --no-wait, or --wait ran out)\n"
          "  79       run/elect: the lock was lost while CMD ran (CMD got SIGTERM/SIGKILL)\n"
          "  126/127  run/elect: CMD could not be run / was not found\n"
          "\n"
          "Environment:\n"
          "  DLOCK_URL, DLOCK_PREFIX, DLOCK_ID, DLOCK_PASSWORD  defaults, as above\n"
          "  CMD started by 'dlock run' or 'dlock elect' sees DLOCK_KEY and\n"
          "  DLOCK_FENCING_TOKEN, DLOCK_KEYS and DLOCK_FENCING_TOKENS (all keys held), and\n"
          "  with --limit DLOCK_SLOT.\n"
          "\n"
          "Examples:\n"
          "  dlock run nightly-report -- ./report.sh          # one at a time, anywhere\n"
          "  dlock run --no-wait \"job:$ID\" -- ./work \"$ID\"    # first worker wins (75: taken)\n"
          "  dlock run --wait 10s deploy -- make deploy       # give up after 10s\n"
          "  dlock run --limit 3 api-quota -- ./call-api      # at most 3 at once\n"
          "  dlock run acct:1 acct:2 -- ./transfer 1 2        # both locks, or wait\n"
          "  dlock run --shared config -- ./read-config       # readers together\n"
          "  dlock elect scheduler -- ./scheduler             # one leader, the rest wait\n"
          "  dlock leader --watch scheduler                   # follow the leadership\n"
          "  dlock -u redis://redis.example:6379 status --json payment:42\n"
          "  dlock unlock --force payment:42                  # remove a stuck lock\n"
          "  dlock metrics --listen 127.0.0.1:9466            # Prometheus exporter\n"
          "  dlock top 'payment:*'                            # live view\n"
          "\n"
          "Run 'dlock COMMAND --help' for a command's options.\n",
          out);
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

/* Parse the global options, apply the environment's defaults, run the
 * command; returns the exit status. */
static int dlock_main(int argc, char **argv)
{
    cli_globals g;
    cli_optstate st;
    const char *password_file = NULL, *cmd_name = NULL;
    const cli_command *cmd;
    char *password = NULL;
    int nurls = 0, id, ex;
    static char url_list[8192];
    int64_t ms;
    const char *why;

    memset(&g, 0, sizeof g);
    memset(&st, 0, sizeof st);
    st.argc = argc;
    st.argv = argv;
    st.ind = 1;
    st.prog = "dlock";
    while (cmd_name == NULL) {
        switch (id = cli_opt_next(&st, global_opts)) {
        case G_URL:
            /* repeated -u: the servers of one Redlock deployment */
            if (nurls > 0) {
                size_t have = strlen(url_list), add = strlen(st.arg);
                if (have + add + 2 > sizeof url_list)
                    return cli_usage_error("dlock", "too many or too long -u URLs");
                url_list[have] = ',';
                memcpy(url_list + have + 1, st.arg, add + 1);
            } else {
                if (strlen(st.arg) + 1 > sizeof url_list)
                    return cli_usage_error("dlock", "-u URL is too long");
                memcpy(url_list, st.arg, strlen(st.arg) + 1);
            }
            g.url = url_list;
            nurls++;
            break;
        case G_PREFIX:
            g.prefix = st.arg;
            break;
        case G_ID:
            g.owner_id = st.arg;
            break;
        case G_QUIET:
            g.quiet = 1;
            break;
        case G_PASSWORD_FILE:
            password_file = st.arg;
            break;
        case G_CONNECT_TIMEOUT:
            if (cli_duration_parse(&ms, st.arg, &why) != 0)
                return cli_usage_error("dlock", "--connect-timeout '%s': %s", st.arg, why);
            if (ms <= 0)
                return cli_usage_error("dlock", "--connect-timeout must be more than 0");
            if (ms > INT_MAX)
                return cli_usage_error("dlock", "--connect-timeout '%s': too large", st.arg);
            g.connect_timeout_ms = (int)ms;
            break;
        case G_HELP:
            usage(stdout);
            return CLI_EX_OK;
        case G_VERSION:
            printf("dlock %s\n", dlock_version());
            return CLI_EX_OK;
        case CLI_OPT_POSITIONAL:
            cmd_name = st.arg;
            break;
        case CLI_OPT_DASHDASH:
            if (st.ind >= argc)
                return cli_usage_error("dlock", "missing COMMAND");
            cmd_name = argv[st.ind++];
            break;
        case CLI_OPT_END:
            return cli_usage_error("dlock", "missing COMMAND (run, elect, leader, status, "
                                            "unlock, metrics, top)");
        default:
            return CLI_EX_USAGE;
        }
    }

    if (strcmp(cmd_name, "help") == 0)
        return cmd_help(argc - (st.ind - 1), argv + (st.ind - 1));
    cmd = find_command(cmd_name);
    if (cmd == NULL)
        return cli_usage_error("dlock", "unknown command '%s'", cmd_name);

    if (g.url == NULL)
        g.url = env_nonempty("DLOCK_URL");
    if (g.url == NULL)
        g.url = DEFAULT_URL;
    if (g.prefix == NULL)
        g.prefix = env_nonempty("DLOCK_PREFIX");
    if (g.owner_id == NULL)
        g.owner_id = env_nonempty("DLOCK_ID");
    if (password_file != NULL) {
        ex = read_password_file(&password, password_file);
        if (ex != 0)
            return ex;
        g.password = password;
    } else {
        g.password = env_nonempty("DLOCK_PASSWORD");
    }

    ex = cmd->run(&g, argc - (st.ind - 1), argv + (st.ind - 1));

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
