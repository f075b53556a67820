/*
 * elect.c — `dlock elect [OPTIONS] KEY -- CMD [ARG...]`: run CMD while
 * this process is the leader of KEY.
 *
 * Leadership is a lock like any other (dlock_campaign: a mutex on KEY whose
 * owner id is the leader's identity, announced to watchers), so elect is
 * `dlock run` with a different step 3, and runs on run.c's engine: the same
 * signals, the same renewal and loss handling (SIGTERM at --grace, SIGKILL
 * at the validity instant, exit 79), the same exit statuses. Only the
 * help and the options it accepts are its own. The usual pattern is a
 * service started on every machine under `dlock elect`: one runs, the
 * others wait in the queue and take over, in order, when it ends or dies.
 * `dlock leader KEY` shows who leads.
 */
#include "cli.h"

/* `dlock elect --help`. */
static const char elect_help[] =
    "Usage: dlock elect [OPTIONS] KEY -- CMD [ARG...]\n"
    "\n"
    "Campaign for the leadership of KEY, then run CMD while this process is the\n"
    "leader. Start the same command on several machines: one is the leader and\n"
    "runs CMD; the others wait, and the first in line takes over when the\n"
    "leader's CMD exits or its machine dies (after --ttl at most). The leader's\n"
    "identity is the owner id (--id, default HOSTNAME:PID); 'dlock leader KEY'\n"
    "prints it. Leadership is kept alive while CMD runs and handled like a lock\n"
    "in 'dlock run': if it is lost, CMD is stopped and dlock exits 79.\n"
    "\n"
    "Options (before '--'):\n"
    "      --ttl D                 leadership time-to-live (default 30s, at least\n"
    "                              10ms), renewed while CMD runs: how long a dead\n"
    "                              leader blocks the next one at most\n"
    "      --wait D                campaign at most D, then exit 75 (default: wait\n"
    "                              as long as it takes)\n"
    "      --no-wait               become leader only if there is none now (else 75;\n"
    "                              the message names the leader)\n"
    "      --grace D               if renewal keeps failing, CMD gets SIGTERM when\n"
    "                              D of the leadership's validity is left, SIGKILL\n"
    "                              when none is (default 5s, or a third of --ttl if\n"
    "                              that is less; must be shorter than --ttl)\n"
    "      --conflict-exit-code N  exit N (0-255) instead of 75 when not elected\n"
    "      --metrics-file F        when dlock ends, write its client metrics to F,\n"
    "                              atomically (see 'dlock run --help')\n"
    "  -h, --help                  show this help\n"
    "\n"
    "CMD's environment:\n"
    "  DLOCK_KEY            the key\n"
    "  DLOCK_FENCING_TOKEN  the leader's term: larger for every new leader; pass it\n"
    "                       to what the leader writes to, so that a deposed leader\n"
    "                       that still runs is refused\n"
    "  DLOCK_KEYS, DLOCK_FENCING_TOKENS  the same, as in 'dlock run'\n"
    "\n"
    "Signals, the terminal and CMD's process group: as in 'dlock run'.\n"
    "\n" CLI_HELP_EXIT_COMMON
    "  75       not elected: --wait ran out, or another leader with --no-wait\n"
    "  79       the leadership was lost while CMD ran; CMD got SIGTERM and/or SIGKILL\n"
    "  126/127  CMD could not be run / was not found\n"
    "  128+N    dlock got signal N while campaigning (CMD never started)\n"
    "\n"
    "Examples:\n"
    "  dlock --id \"$(hostname)\" elect scheduler -- ./scheduler   # on every machine\n"
    "  dlock leader scheduler                            # who leads now\n"
    "  dlock elect --wait 1m --ttl 10s cron-master -- ./run-cron-jobs\n";

void cli_usage_elect(FILE *out)
{
    fputs(elect_help, out);
}

/* `dlock elect`: run.c's engine, parsing elect's options. */
int cli_cmd_elect(const cli_globals *g, int argc, char **argv)
{
    return cli_run_command(g, argc, argv, 1);
}
