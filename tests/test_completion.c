/*
 * test_completion.c — the shell completions in completions/: bash (with
 * bash-completion, as installed) and, when zsh is installed, zsh.
 *
 * Design. Locks are held through the library on a private server, so that
 * `dlock metrics`, which the completions read keys from, has something to
 * offer. bash: the completion file is sourced after bash-completion, and
 * _dlock is called the way bash calls it for a given line (COMP_WORDS,
 * COMP_CWORD, COMP_LINE, COMP_POINT); each line's COMPREPLY is printed as
 * "LINE -> WORDS" and compared. zsh: an interactive zsh in a pseudo-terminal
 * (zsh/zpty) gets a line typed with TABs and then Enter, so the completed
 * line runs: its output shows what the completion produced. Every wait is
 * bounded (dh_run's timeout; the zsh script reads for at most 20 s).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_runner.h"

#ifndef DLOCK_SOURCE_DIR
#error "DLOCK_SOURCE_DIR must be defined by the build"
#endif

#define BASH_COMPLETION "/usr/share/bash-completion/bash_completion"

static dh_redis *srv;
static dlock_client *holder;
static dlock_lock *held[3];
static char closed_url[64];

static int group_setup(void **state)
{
    (void)state;
    static const char *const keys[] = { "comp:alpha", "comp:beta", "other key" };
    if (dh_group_start_client(&srv, &holder, "comp-holder") != 0)
        return -1;
    for (int i = 0; i < 3; i++)
        if (dlock_try_acquire(&held[i], holder, keys[i], NULL) != 0)
            return -1;
    dh_closed_url(closed_url, sizeof closed_url);
    return 0;
}

static int group_teardown(void **state)
{
    for (int i = 0; i < 3; i++)
        dlock_release(held[i]);
    return dh_group_teardown(state);
}

/* 1 if `prog` is found in PATH. */
static int have_program(const char *prog)
{
    char cmd[128];
    const char *argv[] = { "sh", "-c", cmd, NULL };
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null", prog);
    return dh_run(argv, NULL, 10000, NULL, 0, NULL, 0) == 0;
}

/* The bash script: bash-completion, the completion file, then c() for
 * every line in `lines` (a line ending in a space completes a new word). */
static void bash_script(char *buf, size_t len, const char *const *lines)
{
    size_t n = (size_t)snprintf(
        buf, len,
        "source " BASH_COMPLETION " || exit 90\n"
        "source '" DLOCK_SOURCE_DIR "/completions/dlock.bash' || exit 91\n"
        "c() {\n"
        "  COMP_LINE=$1; COMP_POINT=${#COMP_LINE}\n"
        "  read -ra COMP_WORDS <<<\"$1\"\n"
        "  [[ $1 == *' ' ]] && COMP_WORDS+=('')\n"
        "  COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMPREPLY=()\n"
        "  _dlock dlock \"${COMP_WORDS[COMP_CWORD]}\" \"${COMP_WORDS[COMP_CWORD - 1]}\" "
        "2>/dev/null\n"
        "  r=''; [ ${#COMPREPLY[@]} -gt 0 ] && "
        "r=$(printf '%%s\\n' \"${COMPREPLY[@]}\" | sort -u | tr '\\n' ' ')\n"
        "  printf '%%s -> %%s\\n' \"$1\" \"$r\"\n"
        "}\n");
    for (; *lines != NULL && n < len; lines++)
        n += (size_t)snprintf(buf + n, len - n, "c '%s'\n", *lines);
    assert_true(n < len);
}

/* The COMPREPLY words printed for `line` (the text after " -> "). */
static const char *reply_for(const char *out, const char *line)
{
    static char words[4096];
    char start[1024];
    snprintf(start, sizeof start, "%s -> ", line);
    const char *p = strstr(out, start);
    if (p == NULL)
        fail_msg("no completion printed for \"%s\":\n%s", line, out);
    p += strlen(start);
    snprintf(words, sizeof words, "%.*s", (int)strcspn(p, "\n"), p);
    return words;
}

static void expect_reply(const char *out, const char *line, const char *want)
{
    const char *got = reply_for(out, line);
    if (strcmp(got, want) != 0)
        fail_msg("completion of \"%s\": got \"%s\", want \"%s\"", line, got, want);
}

static void test_bash(void **state)
{
    (void)state;
    if (access(BASH_COMPLETION, R_OK) != 0)
        fail_msg(BASH_COMPLETION " is missing (Debian: bash-completion)");
    char l[16][512];
    int n = 0;
    const char *D = DLOCK_CLI_PATH;
    snprintf(l[n++], sizeof l[0], "%s ru", D);
    snprintf(l[n++], sizeof l[0], "%s help ", D);
    snprintf(l[n++], sizeof l[0], "%s run --no", D);
    snprintf(l[n++], sizeof l[0], "%s top --i", D);
    snprintf(l[n++], sizeof l[0], "%s -u re", D);
    snprintf(l[n++], sizeof l[0], "%s -u %s status ", D, srv->url);
    snprintf(l[n++], sizeof l[0], "%s -u %s status comp:", D, srv->url);
    snprintf(l[n++], sizeof l[0], "%s --url=%s run --limit 2 co", D, srv->url);
    snprintf(l[n++], sizeof l[0], "%s -u %s --prefix other: status ", D, srv->url);
    snprintf(l[n++], sizeof l[0], "%s -u %s status comp:", D, closed_url);
    snprintf(l[n++], sizeof l[0], "%s -u %s run comp:alpha -- ech", D, srv->url);
    snprintf(l[n++], sizeof l[0], "%s run --pe", D);
    snprintf(l[n++], sizeof l[0], "%s latch ", D);
    snprintf(l[n++], sizeof l[0], "%s latch wait --", D);
    snprintf(l[n++], sizeof l[0], "%s barrier --", D);
    const char *lines[17];
    for (int i = 0; i < n; i++)
        lines[i] = l[i];
    lines[n] = NULL;

    static char script[32 * 1024], out[64 * 1024], err[16 * 1024];
    bash_script(script, sizeof script, lines);
    const char *argv[] = { "bash", "--norc", "--noprofile", "-c", script, NULL };
    const char *env[DH_CLI_MAX_ENV];
    dh_cli_make_env(env, NULL);
    int st = dh_run(argv, env, 60000, out, sizeof out, err, sizeof err);
    if (st != 0)
        fail_msg("bash exited %d\nstdout: %s\nstderr: %s", st, out, err);

    n = 0;
    expect_reply(out, l[n++], "run ");
    expect_reply(out, l[n++], "barrier elect latch leader metrics run status top unlock ");
    expect_reply(out, l[n++], "--no-wait ");
    expect_reply(out, l[n++], "--interval --iterations ");
    expect_reply(out, l[n++], "redis-cluster:// redis-sentinel:// redis:// rediss:// ");
    /* keys of held locks, from `dlock metrics` on the server of -u */
    expect_reply(out, l[n++], "comp:alpha comp:beta other key ");
    /* after a ':' only the rest of the key is completed (readline's
     * word breaks) */
    expect_reply(out, l[n++], "alpha beta ");
    expect_reply(out, l[n++], "comp:alpha comp:beta ");
    /* another prefix: none of these locks */
    expect_reply(out, l[n++], "");
    /* an unreachable server: nothing, and no hang */
    expect_reply(out, l[n++], "");
    /* after `--`: CMD */
    if (strstr(reply_for(out, l[n++]), "echo") == NULL)
        fail_msg("no command completed after '--':\n%s", out);
    expect_reply(out, l[n++], "--permits ");
    /* latch: its actions, then its options (no lock keys: a latch is not one) */
    expect_reply(out, l[n++], "down get init wait ");
    expect_reply(out, l[n++], "--help --ttl --wait ");
    expect_reply(out, l[n++], "--help --wait ");
}

/* zsh: TAB completes the command and a key, then the line runs. */
static void test_zsh(void **state)
{
    (void)state;
    if (!have_program("zsh")) {
        printf("zsh is not installed: the zsh completion is not tried\n");
        return;
    }
    char dir[DH_PATH_MAX], script[8192];
    assert_int_equal(dh_tmpfile(dir, sizeof dir, "zfunc"), 0);
    snprintf(script, sizeof script,
             "mkdir -p '%s' && cp '" DLOCK_SOURCE_DIR "/completions/_dlock' '%s'/ || exit 90\n"
             "zmodload zsh/zpty || exit 91\n"
             "zpty z zsh -f -i\n"
             "zpty -w z 'PROMPT=\"%%%% \"; fpath=(%s $fpath); autoload -U compinit; "
             "compinit -u -D'\n"
             "zpty -w -n z $'%s -u %s st\\tcomp:al\\t\\n'\n"
             "zpty -w -n z $'print END-OF-TEST\\n'\n"
             "out=''\n"
             "for i in {1..400}; do\n"
             "  while zpty -r -t z chunk; do out+=$chunk; done\n"
             "  [[ $out == *$'\\n'END-OF-TEST* ]] && break\n"
             "  sleep 0.05\n"
             "done\n"
             "zpty -d z\n"
             "print -r -- \"$out\"\n",
             dir, dir, dir, DLOCK_CLI_PATH, srv->url);
    const char *argv[] = { "zsh", "-f", "-c", script, NULL };
    const char *env[DH_CLI_MAX_ENV];
    dh_cli_make_env(env, NULL);
    static char out[64 * 1024], err[16 * 1024];
    int st = dh_run(argv, env, 60000, out, sizeof out, err, sizeof err);
    if (st != 0)
        fail_msg("zsh exited %d\nstdout: %s\nstderr: %s", st, out, err);
    /* The completed line `dlock -u URL status comp:alpha` ran. */
    if (strstr(out, "comp:alpha  held  mutex") == NULL)
        fail_msg("zsh did not complete 'st' and 'comp:al' into a status of comp:alpha:\n%s", out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bash),
        cmocka_unit_test(test_zsh),
    };
    return cmocka_run_group_tests_name("completion", tests, group_setup, group_teardown);
}
