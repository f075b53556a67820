/*
 * test_harness.c — the harness keeps its promise that every forked helper
 * dies with its test: a test that fails an assertion while its helpers are
 * paused or stopped leaves none of them to the next test (dh_test_teardown
 * reaps them), a test process that is killed outright takes its helpers
 * with it (PR_SET_PDEATHSIG), and no test forks behind the harness's back.
 *
 * Design. The failing and the crashing test run in a copy of this program
 * (re-executed with --inner-fail / --inner-crash and a file to report in),
 * so their failure is theirs and not this file's. The inner group's second
 * test looks for the first one's helpers after its teardown ran; the outer
 * test reads the report and looks for the helpers itself. The source checks
 * read the C files of tests/ and tests/fault/ (comments and strings blanked
 * out): no raw fork() outside the harness,
 * and every test that forks (directly or through a helper function of its
 * file) is registered with dh_unit_test, whose teardown reaps its helpers.
 * Waits are bounded polls; nothing sleeps to synchronise.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#ifndef DLOCK_SOURCE_DIR
#error "DLOCK_SOURCE_DIR must be defined by the build"
#endif

/* ------------------------------------------------------ the inner tests */

static const char *report; /* the file the inner run reports in */
static pid_t inner_pids[2];

static void report_line(const char *fmt, ...) DLOCK_PRINTF(1, 2);
static void report_line(const char *fmt, ...)
{
    FILE *f = fopen(report, "a");
    if (!f)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
    fclose(f);
}

/* A helper that waits forever, as a lock holder kept for the test would. */
static pid_t paused_helper(void)
{
    pid_t pid = dh_fork();
    if (pid == 0) {
        for (;;)
            pause();
    }
    return pid;
}

static int sleeping(void *pid)
{
    return dh_pid_state(*(pid_t *)pid) == 'S';
}

static int stopped(void *pid)
{
    return dh_pid_state(*(pid_t *)pid) == 'T';
}

/* Two helpers, one in pause() and one stopped (SIGSTOP), then a failed
 * assertion before the test could kill them. */
static void inner_fails_with_helpers(void **state)
{
    (void)state;
    inner_pids[0] = paused_helper();
    inner_pids[1] = paused_helper();
    assert_true(inner_pids[0] > 0 && inner_pids[1] > 0);
    assert_true(dh_wait_until(sleeping, &inner_pids[0], 5000));
    assert_int_equal(kill(inner_pids[1], SIGSTOP), 0);
    assert_true(dh_wait_until(stopped, &inner_pids[1], 5000));
    report_line("helpers %d %d", (int)inner_pids[0], (int)inner_pids[1]);
    fail_msg("a deliberate failure while two helpers wait");
}

/* Runs after the failed test's teardown: its helpers must be gone (reaped:
 * no longer our children, no longer running). */
static void inner_helpers_gone(void **state)
{
    (void)state;
    int gone = 1;
    for (int i = 0; i < 2; i++) {
        pid_t w = waitpid(inner_pids[i], NULL, WNOHANG);
        if (!(w < 0 && errno == ECHILD) || !dh_pid_dead(inner_pids[i]))
            gone = 0;
    }
    report_line("%s", gone ? "gone" : "left behind");
}

/* A helper, then the test process killed outright (no teardown, no exit
 * handlers): the helper must die with it. */
static void inner_crashes(void **state)
{
    (void)state;
    pid_t pid = paused_helper();
    assert_true(pid > 0);
    assert_true(dh_wait_until(sleeping, &pid, 5000));
    report_line("helper %d", (int)pid);
    raise(SIGKILL);
}

static int inner_main(const char *mode, const char *file)
{
    report = file;
    if (strcmp(mode, "--inner-fail") == 0) {
        const struct CMUnitTest tests[] = {
            dh_unit_test(inner_fails_with_helpers),
            dh_unit_test(inner_helpers_gone),
        };
        return cmocka_run_group_tests_name("harness-inner", tests, NULL, dh_group_teardown);
    }
    const struct CMUnitTest tests[] = {
        dh_unit_test(inner_crashes),
    };
    return cmocka_run_group_tests_name("harness-inner", tests, NULL, dh_group_teardown);
}

/* ------------------------------------------------------ the outer tests */

/* Run this program with `mode` and a fresh report file; returns the exit
 * status and the report's text in buf. */
static int run_inner(const char *mode, char *buf, size_t len)
{
    char file[DH_PATH_MAX], out[8192], err[8192];
    assert_int_equal(dh_tmpfile(file, sizeof file, "report"), 0);
    assert_int_equal(dh_write_file(file, ""), 0);
    const char *const argv[] = { "/proc/self/exe", mode, file, NULL };
    /* the inner run's own filter would hide its tests */
    const char *const env[] = { "DLOCK_TEST_FILTER", "DLOCK_TEST_SKIP", NULL };
    int st = dh_run(argv, env, 60000, out, sizeof out, err, sizeof err);
    print_message("inner run %s: exit %d\n%s%s", mode, st, out, err);
    assert_true(dh_read_file(buf, len, file) >= 0);
    print_message("report: %s", buf);
    return st;
}

static int pid_gone(void *pid)
{
    return dh_pid_dead(*(pid_t *)pid);
}

/* A test that fails while its helpers wait: one failure, and the helpers
 * are gone before the next test starts. */
static void test_failed_test_leaves_no_helper(void **state)
{
    (void)state;
    char rep[512];
    int st = run_inner("--inner-fail", rep, sizeof rep);
    assert_int_equal(st, 1); /* cmocka: one test failed */
    int a = 0, b = 0;
    assert_int_equal(sscanf(rep, "helpers %d %d", &a, &b), 2);
    assert_non_null(strstr(rep, "\ngone\n"));
    pid_t pa = a, pb = b;
    assert_true(dh_pid_dead(pa));
    assert_true(dh_pid_dead(pb));
}

/* A test process killed with SIGKILL: its helper dies with it. */
static void test_killed_test_leaves_no_helper(void **state)
{
    (void)state;
    char rep[512];
    int st = run_inner("--inner-crash", rep, sizeof rep);
    assert_int_equal(st, 128 + SIGKILL);
    int a = 0;
    assert_int_equal(sscanf(rep, "helper %d", &a), 1);
    pid_t pa = a;
    assert_true(dh_wait_until(pid_gone, &pa, 5000));
}

/* ------------------------------------------------ the tests' own source */

#define MAX_FUNCS 256

typedef struct cfile {
    char path[DH_PATH_MAX];
    char *text;
    int nf;
    char *name[MAX_FUNCS];
    char *body[MAX_FUNCS];
    int forks[MAX_FUNCS];
} cfile;

/* 1 if `name(` occurs in s as a call (not as the tail of a longer name). */
static int calls(const char *s, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = strstr(s, name); p; p = strstr(p + 1, name)) {
        int starts = p == s || !(p[-1] == '_' || (p[-1] >= 'a' && p[-1] <= 'z') ||
                                 (p[-1] >= 'A' && p[-1] <= 'Z') || (p[-1] >= '0' && p[-1] <= '9'));
        if (starts && p[n] == '(')
            return 1;
    }
    return 0;
}

/* Cut a C file into its functions, crudely but enough for our own style: a
 * function starts at a line in column 0 with a '(' that does not end with
 * ';', and ends at a line that is "}". */
static void parse(cfile *f)
{
    char *save = NULL, *copy = strdup(f->text), *cur_body = NULL;
    size_t blen = 0;
    assert_non_null(copy);
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        size_t len = strlen(line);
        if (cur_body) {
            if (strcmp(line, "}") == 0) {
                f->body[f->nf - 1] = cur_body;
                cur_body = NULL;
                continue;
            }
            char *nb = realloc(cur_body, blen + len + 2);
            assert_non_null(nb);
            cur_body = nb;
            memcpy(cur_body + blen, line, len);
            blen += len;
            cur_body[blen++] = '\n';
            cur_body[blen] = '\0';
            continue;
        }
        const char *paren = strchr(line, '(');
        if (!paren || len == 0 || line[len - 1] == ';' || strchr("# /*{}", line[0]))
            continue;
        const char *e = paren, *b = paren;
        while (b > line && (b[-1] == '_' || (b[-1] >= 'a' && b[-1] <= 'z') ||
                            (b[-1] >= 'A' && b[-1] <= 'Z') || (b[-1] >= '0' && b[-1] <= '9')))
            b--;
        if (b == e || f->nf == MAX_FUNCS)
            continue;
        f->name[f->nf] = strndup(b, (size_t)(e - b));
        f->body[f->nf] = NULL;
        f->forks[f->nf] = 0;
        f->nf++;
        cur_body = calloc(1, 1);
        blen = 0;
    }
    free(cur_body);
    free(copy);
}

static void cfile_free(cfile *f)
{
    for (int i = 0; i < f->nf; i++) {
        free(f->name[i]);
        free(f->body[i]);
    }
    free(f->text);
}

/* Blank out comments and the insides of string and character literals
 * (newlines kept, so line numbers stay right). */
static void code_only(char *s)
{
    enum { CODE, BLOCK, LINE, STR, CHR } st = CODE;
    for (char *p = s; *p; p++) {
        char c = *p;
        switch (st) {
        case CODE:
            if (c == '/' && p[1] == '*') {
                st = BLOCK;
                *p++ = ' ';
                *p = ' ';
            } else if (c == '/' && p[1] == '/') {
                st = LINE;
                *p = ' ';
            } else if (c == '"') {
                st = STR;
            } else if (c == '\'') {
                st = CHR;
            }
            break;
        case BLOCK:
            if (c == '*' && p[1] == '/') {
                st = CODE;
                *p++ = ' ';
                *p = ' ';
            } else if (c != '\n') {
                *p = ' ';
            }
            break;
        case LINE:
            if (c == '\n')
                st = CODE;
            else
                *p = ' ';
            break;
        case STR:
        case CHR:
            if (c == '\\' && p[1] && p[1] != '\n') {
                *p++ = ' ';
                *p = ' ';
            } else if ((st == STR && c == '"') || (st == CHR && c == '\'')) {
                st = CODE;
            } else if (c != '\n') {
                *p = ' ';
            }
            break;
        }
    }
}

/* Check one file; returns the number of problems (printed). */
static int check_file(const char *path)
{
    static cfile f;
    memset(&f, 0, sizeof f);
    snprintf(f.path, sizeof f.path, "%s", path);
    static char text[512 * 1024];
    if (dh_read_file(text, sizeof text, path) < 0) {
        print_error("cannot read %s\n", path);
        return 1;
    }
    code_only(text);
    f.text = strdup(text);
    assert_non_null(f.text);
    int problems = 0;
    /* no raw fork(): dh_fork registers the child and gives it PDEATHSIG */
    int lineno = 1;
    for (const char *p = text; *p; p++) {
        if (*p == '\n')
            lineno++;
        else if (strncmp(p, "fork(", 5) == 0 &&
                 (p == text || !(p[-1] == '_' || (p[-1] >= 'a' && p[-1] <= 'z')))) {
            print_error("%s:%d: a raw fork(): use dh_fork()\n", path, lineno);
            problems++;
        }
    }
    /* every test that forks, directly or through a helper of this file, is
     * a dh_unit_test */
    parse(&f);
    for (int i = 0; i < f.nf; i++)
        f.forks[i] = f.body[i] && (calls(f.body[i], "dh_fork") || calls(f.body[i], "dh_fork_call"));
    for (int changed = 1; changed;) {
        changed = 0;
        for (int i = 0; i < f.nf; i++)
            for (int j = 0; !f.forks[i] && f.body[i] && j < f.nf; j++)
                if (f.forks[j] && calls(f.body[i], f.name[j]))
                    f.forks[i] = changed = 1;
    }
    for (int i = 0; i < f.nf; i++) {
        if (!f.forks[i] || strncmp(f.name[i], "test_", 5) != 0)
            continue;
        char reg[128];
        snprintf(reg, sizeof reg, "dh_unit_test(%s)", f.name[i]);
        if (!strstr(text, reg)) {
            print_error("%s: %s forks helpers but is not registered with dh_unit_test\n", path,
                        f.name[i]);
            problems++;
        } else {
            print_message("%s: %s forks; a dh_unit_test\n", path, f.name[i]);
        }
    }
    cfile_free(&f);
    return problems;
}

static int check_dir(const char *dir, int *files)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int problems = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n < 3 || strcmp(e->d_name + n - 2, ".c") != 0)
            continue;
        char path[2 * DH_PATH_MAX + 2];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        problems += check_file(path);
        (*files)++;
    }
    closedir(d);
    return problems;
}

/* No test forks behind the harness's back, and every test that forks has
 * the per-test teardown that reaps its helpers. (The check itself is
 * checked first, on a file that breaks both rules.) */
static void test_every_fork_is_reaped(void **state)
{
    (void)state;
    char bad[DH_PATH_MAX];
    assert_int_equal(dh_tmpfile(bad, sizeof bad, "bad.c"), 0);
    assert_int_equal(dh_write_file(bad, "/* fork() in a comment is fine */\n"
                                        "static pid_t helper(void)\n{\n"
                                        "    return dh_fork();\n}\n"
                                        "static void test_a(void **state)\n{\n"
                                        "    pid_t p = helper();\n}\n"
                                        "static void test_b(void **state)\n{\n"
                                        "    pid_t p = fork();\n}\n"
                                        "static void test_c(void **state)\n{\n"
                                        "    pid_t p = helper();\n}\n"
                                        "int main(void)\n{\n"
                                        "    cmocka_unit_test(test_a), cmocka_unit_test(test_b),\n"
                                        "    dh_unit_test(test_c);\n}\n"),
                     0);
    print_message("the check, on a file made to break both rules (2 problems expected):\n");
    assert_int_equal(check_file(bad), 2); /* test_b's fork(), test_a's registration */
    int files = 0;
    int problems = check_dir(DLOCK_SOURCE_DIR "/tests", &files);
    problems += check_dir(DLOCK_SOURCE_DIR "/tests/fault", &files);
    print_message("%d test files checked\n", files);
    assert_true(files > 10);
    assert_int_equal(problems, 0);
}

int main(int argc, char **argv)
{
    if (argc == 3)
        return inner_main(argv[1], argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_failed_test_leaves_no_helper),
        cmocka_unit_test(test_killed_test_leaves_no_helper),
        cmocka_unit_test(test_every_fork_is_reaped),
    };
    return cmocka_run_group_tests_name("harness", tests, NULL, dh_group_teardown);
}
