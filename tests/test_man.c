/*
 * test_man.c — the manual pages dlock(1) and dlock(3), as built from
 * docs/dlock.1.scd and docs/dlock.3.scd (scdoc), render cleanly and cover what the tool and the
 * header offer.
 *
 * Design. Each page is rendered the way man(1) would (groff -man, and
 * `man -l` when man-db is installed) with warnings on: a page that groff
 * complains about fails. The rendered text (not the source) is then
 * checked against the tool's own help: every long option printed by
 * `dlock --help` and by `dlock help COMMAND` for each command that help
 * lists, every DLOCK_* variable the help names, every exit status of the
 * help's table, and every command as a section of its own. dlock(3) must
 * name every function the public header declares. So a new option, command
 * or function without documentation fails here. The pages are rendered one
 * line per paragraph (a very long line length, no hyphenation), so no
 * option is split across lines.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_runner.h"

#ifndef DLOCK_SOURCE_DIR
#error "DLOCK_SOURCE_DIR must be defined by the build"
#endif

#define PAGE_MAX (256 * 1024)

static char page1[PAGE_MAX], page3[PAGE_MAX], rendered_err[16 * 1024];

/* 1 if `prog` is found in PATH. */
static int have_program(const char *prog)
{
    char cmd[128];
    const char *argv[] = { "sh", "-c", cmd, NULL };
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null", prog);
    return dh_run(argv, NULL, 10000, NULL, 0, NULL, 0) == 0;
}

/* Render man/PAGE with groff into out (one line per paragraph); fail the
 * test if groff fails or warns. */
static void render(char *out, size_t len, const char *page)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", DLOCK_MAN_DIR, page);
    if (access(path, R_OK) != 0)
        fail_msg("%s was not built", path);
    const char *argv[] = { "groff", "-man", "-Tutf8", "-ww", "-rLL=1000n", "-rHY=0",
                           "-P-c",  "-P-b", "-P-u",   path,  NULL };
    int st = dh_run(argv, NULL, 30000, out, len, rendered_err, sizeof rendered_err);
    if (st != 0 || rendered_err[0] != '\0')
        fail_msg("groff %s: exit %d, warnings:\n%s", page, st, rendered_err);
    if (strlen(out) < 1000)
        fail_msg("%s renders to almost nothing:\n%s", page, out);
}

/* `man -l PAGE` succeeds and shows the NAME section (man-db only). */
static void render_with_man(const char *page)
{
    char path[512];
    static char buf[PAGE_MAX];
    snprintf(path, sizeof path, "%s/%s", DLOCK_MAN_DIR, page);
    const char *argv[] = { "man", "-l", path, NULL };
    const char *env[] = { "MANPAGER=cat", "PAGER=cat", "MANWIDTH=100", NULL };
    int st = dh_run(argv, env, 30000, buf, sizeof buf, rendered_err, sizeof rendered_err);
    if (st != 0 || strstr(buf, "NAME") == NULL)
        fail_msg("man -l %s: exit %d\n%s\n%s", page, st, buf, rendered_err);
}

/* 1 if `word` occurs in `text` not as part of a longer option or name
 * (the next character is not a letter, digit, '-' or '_'). */
static int has_word(const char *text, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = text; (p = strstr(p, word)) != NULL; p++) {
        char next = p[n];
        if (!(isalnum((unsigned char)next) || next == '-' || next == '_'))
            return 1;
    }
    return 0;
}

/* Check every token of `help` that starts with `prefix` and goes on with
 * characters from `chars` against the page. Returns how many were checked. */
static int check_tokens(const char *help, const char *prefix, const char *chars, const char *page,
                        const char *what)
{
    int n = 0;
    size_t plen = strlen(prefix);
    for (const char *p = help; (p = strstr(p, prefix)) != NULL; p += plen) {
        if (p > help && (isalnum((unsigned char)p[-1]) || p[-1] == '-' || p[-1] == '_'))
            continue;
        size_t len = plen + strspn(p + plen, chars);
        if (len == plen)
            continue;
        char tok[64];
        snprintf(tok, sizeof tok, "%.*s", (int)len, p);
        if (!has_word(page, tok))
            fail_msg("%s names %s, dlock(1) does not", what, tok);
        n++;
    }
    return n;
}

/* The commands `dlock --help` lists: the first word of each line of its
 * "Commands:" section, into names (at most max). */
static int list_commands(char names[][16], int max, const char *help)
{
    const char *p = strstr(help, "Commands:\n");
    int n = 0;
    assert_non_null(p);
    for (p = strchr(p, '\n') + 1; n < max && strncmp(p, "  ", 2) == 0 && p[2] != ' ';) {
        size_t len = strcspn(p + 2, " \n");
        assert_true(len > 0 && len < 16);
        snprintf(names[n++], 16, "%.*s", (int)len, p + 2);
        p = strchr(p, '\n') + 1;
    }
    return n;
}

static void test_render(void **state)
{
    (void)state;
    render(page1, sizeof page1, "dlock.1");
    render(page3, sizeof page3, "dlock.3");
    if (have_program("man")) {
        render_with_man("dlock.1");
        render_with_man("dlock.3");
    }
}

/* Everything the help names is in dlock(1). */
static void test_page1_covers_help(void **state)
{
    (void)state;
    static char help[64 * 1024];
    char cmds[16][16];
    render(page1, sizeof page1, "dlock.1");

    dh_cli_expect(dh_cli("--help"), 0, "dlock --help");
    snprintf(help, sizeof help, "%s", dh_out);
    int ncmds = list_commands(cmds, 16, help);
    assert_true(ncmds >= 7);
    int opts =
        check_tokens(help, "--", "abcdefghijklmnopqrstuvwxyz0123456789-", page1, "dlock --help");
    check_tokens(help, "DLOCK_", "ABCDEFGHIJKLMNOPQRSTUVWXYZ_", page1, "dlock --help");
    assert_true(opts >= 8);

    for (int i = 0; i < ncmds; i++) {
        char what[300], section[300];
        snprintf(what, sizeof what, "dlock help %s", cmds[i]);
        dh_cli_expect(dh_cli("help", cmds[i]), 0, what);
        if (check_tokens(dh_out, "--", "abcdefghijklmnopqrstuvwxyz0123456789-", page1, what) == 0)
            fail_msg("%s names no long option at all:\n%s", what, dh_out);
        check_tokens(dh_out, "DLOCK_", "ABCDEFGHIJKLMNOPQRSTUVWXYZ_", page1, what);
        /* each command has a section of its own: a line of its name */
        snprintf(section, sizeof section, "\n   %s\n", cmds[i]);
        if (!strstr(page1, section))
            fail_msg("dlock(1) has no section for the command %s", cmds[i]);
    }

    /* Every exit status of the help's table, in the EXIT STATUS section. */
    const char *es = strstr(page1, "EXIT STATUS");
    assert_non_null(es);
    const char *table = strstr(help, "Exit status:\n");
    assert_non_null(table);
    int nstatus = 0;
    for (const char *l = strchr(table, '\n') + 1; strncmp(l, "  ", 2) == 0;
         l = strchr(l, '\n') + 1) {
        if (!isdigit((unsigned char)l[2]))
            continue;
        char num[8];
        snprintf(num, sizeof num, "%.*s", (int)strspn(l + 2, "0123456789"), l + 2);
        if (!has_word(es, num))
            fail_msg("exit status %s is not in dlock(1)'s EXIT STATUS", num);
        nstatus++;
    }
    assert_true(nstatus >= 8);
    assert_non_null(strstr(page1, "ENVIRONMENT"));
    assert_non_null(strstr(page1, "ACL SETUSER"));
}

/* Every function of the public header is named in dlock(3). */
static void test_page3_covers_header(void **state)
{
    (void)state;
    static char header[128 * 1024];
    render(page3, sizeof page3, "dlock.3");
    assert_true(dh_read_file(header, sizeof header, DLOCK_SOURCE_DIR "/include/dlock.h") > 0);
    int n = 0;
    for (const char *p = header; (p = strstr(p, "DLOCK_API ")) != NULL; p++) {
        const char *semi = strchr(p, ';');
        const char *paren = strchr(p, '(');
        if (semi == NULL || paren == NULL || paren > semi)
            continue; /* the macro's own definition */
        const char *name = paren;
        while (name > p && (isalnum((unsigned char)name[-1]) || name[-1] == '_'))
            name--;
        char fn[64];
        snprintf(fn, sizeof fn, "%.*s", (int)(paren - name), name);
        if (strncmp(fn, "dlock_", 6) != 0)
            continue;
        if (!has_word(page3, fn))
            fail_msg("dlock.h declares %s, dlock(3) does not name it", fn);
        n++;
    }
    assert_true(n >= 30);
}

int main(void)
{
#ifndef DLOCK_MAN_DIR
    printf("test_man: the man pages were not built (no scdoc; DLOCK_BUILD_MAN): skipped\n");
    return 0;
#else
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_page1_covers_help),
        cmocka_unit_test(test_page3_covers_header),
    };
    return cmocka_run_group_tests_name("man", tests, NULL, NULL);
#endif
}
