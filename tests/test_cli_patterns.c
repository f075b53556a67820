/*
 * test_cli_patterns.c — the `dlock` tool's patterns and monitoring commands
 * (DLOCK_CLI_PATH) against a private server: run --limit / several keys /
 * --shared, elect and leader (also --watch), status of semaphores, metrics
 * (printed and served), --metrics-file, top, and their help and usage
 * errors.
 *
 * Design. As in test_cli.c: every invocation goes through the harness's
 * CLI runner (tests/cli_runner.h: own process group, captured output in
 * dh_out/dh_err, hard timeout, DLOCK_* variables cleared). Overlap and exclusion are shown with markers that
 * CMD makes itself: mkdir(1) is atomic, so "mkdir slot$DLOCK_SLOT" fails if
 * two holders ever had one slot, and a CMD that waits for a "go" file keeps
 * its lock exactly as long as the test wants. Every wait is a bounded poll
 * on a condition (a file, a line of output, the server's view of holders
 * and waiters through the library), never a sleep standing in for one.
 * Prometheus output is checked line by line against the text format's
 * grammar and rules (the harness's dh_check_exposition), not by looking
 * for a few strings only.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "cli_runner.h"

#define OWNER "cli-pat-holder"

static dh_redis *srv;
static dlock_client *holder; /* the test's own client, for conflicts */

static int group_setup(void **state)
{
    (void)state;
    return dh_group_start_client(&srv, &holder, OWNER);
}

/* ---------------------------------------------------------------- helpers */

/* At least two lines in the file at path: a dh_wait_until condition. */
static int two_lines(void *path)
{
    return dh_file_lines(path) >= 2;
}

/* The state of `key` of `kind` through the library. */
struct kstate {
    const char *key;
    int kind;
    size_t min_holders;
    int64_t min_waiters;
};

static int state_reached(void *arg)
{
    struct kstate *k = arg;
    dlock_key_state *s = NULL;
    if (dlock_key_state_get(&s, holder, k->key, k->kind) != 0)
        return 0;
    int ok = s->nholders >= k->min_holders && s->waiters >= k->min_waiters;
    dlock_key_state_free(s);
    return ok;
}

static void wait_state(const char *key, int kind, size_t holders, int64_t waiters)
{
    struct kstate k = { key, kind, holders, waiters };
    if (!dh_wait_until(state_reached, &k, 10000))
        fail_msg("%s never had %zu holder(s) and %lld waiter(s)", key, holders, (long long)waiters);
}

/* A background dlock whose captured stdout or stderr contains `needle`
 * (at least `count` times). */
struct outwatch {
    dh_proc *p;
    const char *needle;
    int count;
    int on_stderr;
};

static int output_has(void *arg)
{
    struct outwatch *w = arg;
    dh_proc_output(w->p, dh_out, sizeof dh_out, dh_err, sizeof dh_err);
    return dh_count_of(w->on_stderr ? dh_err : dh_out, w->needle) >= w->count;
}

static void wait_output(dh_proc *p, const char *needle, int count, int on_stderr)
{
    struct outwatch w = { p, needle, count, on_stderr };
    if (!dh_wait_until(output_has, &w, 10000))
        fail_msg("never saw %d x \"%s\" on %s\nstdout: %s\nstderr: %s", count, needle,
                 on_stderr ? "stderr" : "stdout", dh_out, dh_err);
}

/* The value of the sample line that starts with `prefix` ("name{...} "),
 * or -1 if there is none. */
static double sample_value(const char *text, const char *prefix)
{
    for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (strncmp(l, prefix, strlen(prefix)) == 0)
            return strtod(l + strlen(prefix), NULL);
    return -1;
}

/* ------------------------------------------------------------------ tests */

/* --limit 2 and four runs: two inside at once, never the same slot, the
 * other two queued until one leaves. */
static void test_limit(void **state)
{
    (void)state;
    char dir[DH_PATH_MAX], go[DH_PATH_MAX + 8], log[DH_PATH_MAX + 8], script[DH_PATH_MAX];
    assert_int_equal(dh_tmpdir(dir, sizeof dir, "limit"), 0);
    snprintf(go, sizeof go, "%s/go", dir);
    snprintf(log, sizeof log, "%s/log", dir);
    assert_int_equal(dh_tmpfile(script, sizeof script, "limit.sh"), 0);
    /* $1: the marker dir. Exit 90: a slot held twice; 91: three inside;
     * 92: a slot out of range. */
    assert_int_equal(
        dh_write_file(script, "d=$1\n"
                              "case \"$DLOCK_SLOT\" in 0|1) ;; *) exit 92 ;; esac\n"
                              "mkdir \"$d/slot$DLOCK_SLOT\" || exit 90\n"
                              "mkdir \"$d/in.$$\"\n"
                              "[ $(ls -d \"$d\"/in.* | wc -l) -le 2 ] || exit 91\n"
                              "echo \"$DLOCK_SLOT $DLOCK_KEY $DLOCK_FENCING_TOKEN\" >> \"$d/log\"\n"
                              "while [ ! -e \"$d/go\" ]; do sleep 0.02; done\n"
                              "rmdir \"$d/in.$$\" && rmdir \"$d/slot$DLOCK_SLOT\"\n"),
        0);
    dh_proc *p[4];
    for (int i = 0; i < 4; i++)
        p[i] = dh_cli_bg("-u", srv->url, "run", "--limit", "2", "p:sem", "--", "sh", script, dir);
    /* Two are in (their CMDs have started), two wait in the queue. */
    wait_state("p:sem", DLOCK_KIND_SEMAPHORE, 2, 2);
    if (!dh_wait_until(two_lines, log, 10000))
        fail_msg("the CMDs of the first two permits never started");
    char buf[1024];
    assert_true(dh_read_file(buf, sizeof buf, log) > 0);
    assert_int_equal(dh_count_lines(buf), 2);
    for (int i = 0; i < 4; i++)
        if (dh_proc_done(p[i]))
            fail_msg("a run ended while the limit was reached");
    /* A fifth with --no-wait is refused, and told who holds the permits. */
    dh_cli_expect(dh_cli("-u", srv->url, "--id", "fifth", "run", "--limit", "2", "--no-wait",
                         "p:sem", "--", "true"),
                  75, "--limit 2 --no-wait with both permits held");
    if (!strstr(dh_err, "p:sem: all 2 permits are in use: held by ") || !strstr(dh_err, "(slot ") ||
        !strstr(dh_err, ", and 1 more holder"))
        fail_msg("busy semaphore message: %s", dh_err);
    /* Let them through; each of the waiting two enters as one leaves. */
    assert_int_equal(dh_write_file(go, "x"), 0);
    for (int i = 0; i < 4; i++) {
        dh_cli_expect_proc(p[i], 0, "run --limit 2");
        dh_proc_free(p[i]);
    }
    assert_true(dh_read_file(buf, sizeof buf, log) > 0);
    assert_int_equal(dh_count_lines(buf), 4);
    for (const char *l = buf; *l; l = strchr(l, '\n') + 1) {
        if (!((l[0] == '0' || l[0] == '1') && strncmp(l + 1, " p:sem ", 7) == 0 && l[8] >= '1' &&
              l[8] <= '9'))
            fail_msg("bad line in the CMD log: %s", buf);
    }
    /* All permits back. */
    dlock_key_state *s = NULL;
    dh_assert_rc(dlock_key_state_get(&s, holder, "p:sem", DLOCK_KIND_SEMAPHORE), 0);
    assert_int_equal(s->nholders, 0);
    dlock_key_state_free(s);

    /* Bad limits and combinations are usage errors. */
    dh_cli_expect(dh_cli("-u", srv->url, "run", "--limit", "0", "p:sem", "--", "true"), 64,
                  "--limit 0");
    dh_cli_expect(dh_cli("-u", srv->url, "run", "--limit", "100001", "p:sem", "--", "true"), 64,
                  "--limit 100001");
    dh_cli_expect(dh_cli("-u", srv->url, "run", "--limit", "x", "p:sem", "--", "true"), 64,
                  "--limit x");
    dh_cli_expect(dh_cli("-u", srv->url, "run", "--limit", "2", "p:a", "p:b", "--", "true"), 64,
                  "--limit with two keys");
    dh_cli_expect(dh_cli("-u", srv->url, "run", "--limit", "100000", "p:big", "--", "sh", "-c",
                         "echo \"$DLOCK_SLOT\""),
                  0, "--limit 100000");
    assert_string_equal(dh_out, "0\n");
}

/* Several keys: all-or-nothing, the environment lists them all, and a
 * single-key run of one of them is excluded. */
static void test_multi_key(void **state)
{
    (void)state;
    int st = dh_cli("-u", srv->url, "run", "mk:a", "mk:b", "mk:a", "mk:c", "--", "sh", "-c",
                    "echo \"$DLOCK_KEY|$DLOCK_FENCING_TOKEN|$DLOCK_KEYS|$DLOCK_FENCING_TOKENS|"
                    "${DLOCK_SLOT-unset}\"");
    dh_cli_expect(st, 0, "run with three keys");
    char key[64], tok[64], keys[256], toks[256], slot[64];
    if (sscanf(dh_out, "%63[^|]|%63[^|]|%255[^|]|%255[^|]|%63[^\n]", key, tok, keys, toks, slot) !=
        5)
        fail_msg("unexpected CMD output: %s", dh_out);
    assert_string_equal(key, "mk:a");
    assert_string_equal(keys, "mk:a mk:b mk:c");
    assert_string_equal(slot, "unset");
    assert_true(dh_is_digits(tok, strlen(tok)));
    /* three tokens, the first is DLOCK_FENCING_TOKEN */
    char *sp1 = strchr(toks, ' '), *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    assert_non_null(sp1);
    assert_non_null(sp2);
    assert_null(strchr(sp2 + 1, ' '));
    assert_true(dh_is_digits(sp1 + 1, (size_t)(sp2 - sp1 - 1)) &&
                dh_is_digits(sp2 + 1, strlen(sp2 + 1)));
    *sp1 = '\0';
    assert_string_equal(toks, tok);

    /* A run holding mk:a and mk:b excludes a single-key run of mk:b. */
    char dir[DH_PATH_MAX], in[DH_PATH_MAX + 8], go[DH_PATH_MAX + 8], cmd[DH_PATH_MAX * 2 + 64];
    assert_int_equal(dh_tmpdir(dir, sizeof dir, "multi"), 0);
    snprintf(in, sizeof in, "%s/in", dir);
    snprintf(go, sizeof go, "%s/go", dir);
    snprintf(cmd, sizeof cmd, "touch '%s'; while [ ! -e '%s' ]; do sleep 0.02; done", in, go);
    dh_proc *p = dh_cli_bg("-u", srv->url, "--id", "mk-holder", "run", "mk:a", "mk:b", "--", "sh",
                           "-c", cmd);
    dh_cli_await_file(p, in, "the multi-key CMD starting");
    dh_cli_expect(dh_cli("-u", srv->url, "run", "--no-wait", "mk:b", "--", "sh", "-c", "echo ran"),
                  75, "single-key run of a key held by a multi-key run");
    assert_null(strstr(dh_out, "ran"));
    if (!strstr(dh_err, "mk:b: lock is busy: held by mk-holder for "))
        fail_msg("busy message does not name the holder: %s", dh_err);
    /* All-or-nothing: mk:b busy, so mk:c is not taken either; the message
     * names the busy key among the three. */
    dh_cli_expect(dh_cli("-u", srv->url, "run", "--no-wait", "mk:c", "mk:b", "mk:d", "--", "true"),
                  75, "multi-key run overlapping a held key");
    if (!strstr(dh_err, "mk:b: lock is busy (key 2 of 3): held by mk-holder for "))
        fail_msg("multi-key busy message does not name the busy key: %s", dh_err);
    dlock_info info;
    dh_assert_rc(dlock_inspect(&info, holder, "mk:c"), 0);
    assert_int_equal(info.held, 0);
    dh_cli_expect(dh_cli("-u", srv->url, "run", "--no-wait", "mk:c", "--", "true"), 0,
                  "the free key of the set");
    assert_int_equal(dh_write_file(go, "x"), 0);
    dh_cli_expect_proc(p, 0, "multi-key holder");
    dh_proc_free(p);
    dh_cli_expect(dh_cli("-u", srv->url, "run", "--no-wait", "mk:b", "--", "true"), 0,
                  "mk:b after the multi-key run");

    /* At most DLOCK_MULTI_MAX keys. */
    const char *args[DH_CLI_MAX_ARGS];
    char names[DLOCK_MULTI_MAX + 1][16];
    int n = 0;
    args[n++] = "-u";
    args[n++] = srv->url;
    args[n++] = "run";
    for (int i = 0; i <= DLOCK_MULTI_MAX; i++) {
        snprintf(names[i], sizeof names[i], "mk:%d", i);
        args[n++] = names[i];
    }
    args[n++] = "--";
    args[n++] = "true";
    args[n] = NULL;
    dh_cli_expect(dh_cli_argv(args, NULL, DH_CLI_TIMEOUT_MS), 64, "65 keys");
    args[3 + DLOCK_MULTI_MAX] = "--"; /* drop the 65th key */
    args[4 + DLOCK_MULTI_MAX] = "true";
    args[5 + DLOCK_MULTI_MAX] = NULL;
    dh_cli_expect(dh_cli_argv(args, NULL, DH_CLI_TIMEOUT_MS), 0, "64 keys");
}

/* --shared: readers overlap; a writer waits for them. */
static void test_shared(void **state)
{
    (void)state;
    char dir[DH_PATH_MAX], in[DH_PATH_MAX + 8], go[DH_PATH_MAX + 8], cmd[DH_PATH_MAX * 2 + 64];
    assert_int_equal(dh_tmpdir(dir, sizeof dir, "shared"), 0);
    snprintf(in, sizeof in, "%s/in", dir);
    snprintf(go, sizeof go, "%s/go", dir);
    snprintf(cmd, sizeof cmd, "touch '%s'; while [ ! -e '%s' ]; do sleep 0.02; done", in, go);
    dh_proc *r = dh_cli_bg("-u", srv->url, "run", "--shared", "sh:k", "--", "sh", "-c", cmd);
    dh_cli_await_file(r, in, "the shared CMD starting");
    /* A second reader gets in while the first is inside. */
    int st = dh_cli("-u", srv->url, "run", "--no-wait", "--shared", "sh:k", "--", "sh", "-c",
                    "echo \"reader $DLOCK_KEY $DLOCK_FENCING_TOKEN\"");
    dh_cli_expect(st, 0, "second shared run while one holds");
    assert_true(strncmp(dh_out, "reader sh:k ", 12) == 0);
    /* A writer does not. */
    st = dh_cli("-u", srv->url, "run", "--no-wait", "sh:k", "--", "sh", "-c", "echo ran");
    dh_cli_expect(st, 75, "plain run while a shared one holds");
    assert_null(strstr(dh_out, "ran"));
    /* status shows the reader. */
    dh_cli_expect(dh_cli("-u", srv->url, "status", "sh:k"), 0, "status of a read-held key");
    assert_non_null(strstr(dh_out, "read"));
    assert_null(strstr(dh_out, "free"));
    /* A writer waiting with a bound gets in once the reader leaves. */
    dh_proc *w =
        dh_cli_bg("-u", srv->url, "run", "--wait", "10s", "sh:k", "--", "sh", "-c", "echo writer");
    wait_state("sh:k", DLOCK_KIND_MUTEX, 1, 1);
    assert_false(dh_proc_done(w));
    assert_int_equal(dh_write_file(go, "x"), 0);
    dh_cli_expect_proc(r, 0, "shared holder");
    dh_proc_free(r);
    dh_cli_expect_proc(w, 0, "waiting writer");
    assert_string_equal(dh_out, "writer\n");
    dh_proc_free(w);

    dh_cli_expect(dh_cli("-u", srv->url, "run", "--shared", "--limit", "2", "sh:k", "--", "true"),
                  64, "--shared --limit");
    dh_cli_expect(dh_cli("-u", srv->url, "run", "--shared", "sh:k", "sh:j", "--", "true"), 64,
                  "--shared with two keys");
}

/* elect: one leader runs, the next waits, `leader` names them in turn. */
static void test_elect_and_leader(void **state)
{
    (void)state;
    char dir[DH_PATH_MAX], ina[DH_PATH_MAX + 8], inb[DH_PATH_MAX + 8], goa[DH_PATH_MAX + 8],
        gob[DH_PATH_MAX + 8], cmda[DH_PATH_MAX * 2 + 128], cmdb[DH_PATH_MAX * 2 + 128];
    assert_int_equal(dh_tmpdir(dir, sizeof dir, "elect"), 0);
    snprintf(ina, sizeof ina, "%s/a", dir);
    snprintf(inb, sizeof inb, "%s/b", dir);
    snprintf(goa, sizeof goa, "%s/goa", dir);
    snprintf(gob, sizeof gob, "%s/gob", dir);
    snprintf(cmda, sizeof cmda,
             "echo $DLOCK_FENCING_TOKEN > '%s'; while [ ! -e '%s' ]; do sleep 0.02; done", ina,
             goa);
    snprintf(cmdb, sizeof cmdb,
             "echo $DLOCK_FENCING_TOKEN > '%s'; while [ ! -e '%s' ]; do sleep 0.02; done", inb,
             gob);

    dh_proc *a =
        dh_cli_bg("-u", srv->url, "--id", "el-A", "elect", "e:svc", "--", "sh", "-c", cmda);
    dh_cli_await_file(a, ina, "the first elect running CMD");
    dh_proc *b =
        dh_cli_bg("-u", srv->url, "--id", "el-B", "elect", "e:svc", "--", "sh", "-c", cmdb);
    wait_state("e:svc", DLOCK_KIND_MUTEX, 1, 1); /* B queued */
    assert_false(dh_file_exists(inb));
    assert_false(dh_proc_done(b));

    dh_cli_expect(dh_cli("-u", srv->url, "leader", "e:svc"), 0, "leader while A leads");
    char tok_a[64];
    assert_true(dh_read_file(tok_a, sizeof tok_a, ina) > 0);
    tok_a[strcspn(tok_a, "\n")] = '\0';
    char want[128];
    snprintf(want, sizeof want, "el-A  fencing token %s\n", tok_a);
    assert_string_equal(dh_out, want);
    dh_cli_expect(dh_cli("-u", srv->url, "leader", "--json", "e:svc"), 0, "leader --json");
    if (!dh_json_valid(dh_out))
        fail_msg("leader --json is not valid JSON: %s", dh_out);
    char compact[1024];
    dh_json_compact(compact, sizeof compact, dh_out);
    snprintf(want, sizeof want, "{\"key\":\"e:svc\",\"leader\":\"el-A\",\"fencing_token\":\"%s\"}",
             tok_a);
    assert_string_equal(compact, want);

    /* A third candidate with a short wait gives up: 75. */
    dh_cli_expect(dh_cli("-u", srv->url, "--id", "el-C", "elect", "--wait", "200ms", "e:svc", "--",
                         "sh", "-c", "echo ran"),
                  75, "elect --wait 200ms while A leads");
    assert_null(strstr(dh_out, "ran"));
    if (!strstr(dh_err, "e:svc: timed out after 200ms: another process is the leader: el-A "
                        "(leader for "))
        fail_msg("elect --wait 200ms does not name the leader: %s", dh_err);

    /* A steps down; B takes over with a larger term. */
    assert_int_equal(dh_write_file(goa, "x"), 0);
    dh_cli_expect_proc(a, 0, "first leader");
    dh_proc_free(a);
    dh_cli_await_file(b, inb, "the second elect becoming leader");
    dh_cli_expect(dh_cli("-u", srv->url, "leader", "e:svc"), 0, "leader while B leads");
    assert_true(strncmp(dh_out, "el-B  fencing token ", 20) == 0);
    assert_true(strtoull(dh_out + 20, NULL, 10) > strtoull(tok_a, NULL, 10));
    assert_int_equal(dh_write_file(gob, "x"), 0);
    dh_cli_expect_proc(b, 0, "second leader");
    dh_proc_free(b);

    /* No leader: said on stderr, nothing on stdout, exit 3; with --json the
     * object with a null leader on stdout; -q silences stderr. */
    dh_cli_expect(dh_cli("-u", srv->url, "leader", "e:svc"), 3, "leader with no leader");
    assert_string_equal(dh_out, "");
    assert_string_equal(dh_err, "dlock: e:svc: no leader\n");
    dh_cli_expect(dh_cli("-u", srv->url, "leader", "--json", "e:none"), 3, "leader --json, none");
    if (!dh_json_valid(dh_out))
        fail_msg("leader --json with no leader is not valid JSON: %s", dh_out);
    dh_json_compact(compact, sizeof compact, dh_out);
    assert_string_equal(compact, "{\"key\":\"e:none\",\"leader\":null,\"fencing_token\":null}");
    assert_non_null(strstr(dh_err, "no leader"));
    dh_cli_expect(dh_cli("-q", "-u", srv->url, "leader", "e:none"), 3, "-q leader, none");
    assert_string_equal(dh_out, "");
    assert_string_equal(dh_err, "");

    dh_cli_expect(dh_cli("-u", srv->url, "elect", "e:a", "e:b", "--", "true"), 64,
                  "elect with two keys");
    dh_cli_expect(dh_cli("-u", srv->url, "elect", "--limit", "2", "e:a", "--", "true"), 64,
                  "elect --limit");
    dh_cli_expect(dh_cli("-u", srv->url, "leader"), 64, "leader without KEY");
    dh_cli_expect(dh_cli("-u", srv->url, "elect", "e:a", "--", "sh", "-c", "exit 7"), 7,
                  "elect passes on CMD's status");
}

/* leader --watch: the current state, then each change, until SIGINT. */
static void test_leader_watch(void **state)
{
    (void)state;
    dh_proc *w = dh_cli_bg("-u", srv->url, "leader", "--watch", "lw:svc");
    wait_output(w, "(no leader)\n", 1, 0);
    dlock_lock *l = NULL;
    dh_assert_rc(dlock_campaign(&l, holder, "lw:svc", NULL), 0);
    char want[128];
    snprintf(want, sizeof want, OWNER "  fencing token %llu\n",
             (unsigned long long)dlock_lock_fencing_token(l));
    wait_output(w, want, 1, 0);
    dh_assert_rc(dlock_resign(l), 0);
    wait_output(w, "(no leader)\n", 2, 0);
    assert_false(dh_proc_done(w));
    assert_int_equal(dh_proc_signal(w, SIGINT), 0);
    dh_cli_expect_proc(w, 0, "leader --watch after SIGINT");
    dh_proc_free(w);
    assert_int_equal(dh_count_lines(dh_out), 3);

    /* --json: one object per line. */
    w = dh_cli_bg("-u", srv->url, "leader", "--watch", "--json", "lw:svc");
    wait_output(w, "\"leader\":null", 1, 0);
    dh_assert_rc(dlock_campaign(&l, holder, "lw:svc", NULL), 0);
    wait_output(w, "\"leader\":\"" OWNER "\"", 1, 0);
    assert_int_equal(dh_proc_signal(w, SIGTERM), 0);
    dh_cli_expect_proc(w, 0, "leader --watch --json after SIGTERM");
    dh_proc_free(w);
    for (char *line = dh_out, *nl; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
        *nl = '\0';
        if (!dh_json_valid(line))
            fail_msg("not a JSON line: %s", line);
    }
    dh_assert_rc(dlock_resign(l), 0);
}

/* status shows kind and every holder: a semaphore with two permits, a
 * mutex, a free key. */
static void test_status_holders(void **state)
{
    (void)state;
    dlock_lock_opts o = dh_opts(0, 0);
    dlock_lock *p1 = NULL, *p2 = NULL, *m = NULL;
    dh_assert_rc(dlock_sem_acquire(&p1, holder, "st:pool", 3, &o), 0);
    dh_assert_rc(dlock_sem_acquire(&p2, holder, "st:pool", 3, &o), 0);
    dh_assert_rc(dlock_acquire(&m, holder, "st:mutex", &o), 0);

    int st = dh_cli("-u", srv->url, "status", "--json", "st:pool", "st:mutex", "st:free");
    dh_cli_expect(st, 0, "status --json");
    if (!dh_json_valid(dh_out))
        fail_msg("status --json is not valid JSON: %s", dh_out);
    char compact[8192], want[512];
    dh_json_compact(compact, sizeof compact, dh_out);
    /* the semaphore: compatible fields (first holder), kind, two holders */
    const char *pool = strstr(compact, "{\"key\":\"st:pool\"");
    const char *mutex = strstr(compact, "{\"key\":\"st:mutex\"");
    const char *fr = strstr(compact, "{\"key\":\"st:free\"");
    assert_non_null(pool);
    assert_non_null(mutex);
    assert_non_null(fr);
    assert_true(pool < mutex && mutex < fr);
    char obj[4096];
    snprintf(obj, sizeof obj, "%.*s", (int)(mutex - pool), pool);
    assert_non_null(strstr(obj, "\"state\":\"held\""));
    assert_non_null(strstr(obj, "\"kind\":\"semaphore\""));
    assert_non_null(strstr(obj, "\"owner\":\"" OWNER "\""));
    assert_non_null(strstr(obj, "\"waiters\":0"));
    assert_int_equal(dh_count_of(obj, "\"mode\":\"permit\""), 2);
    dlock_lock *perm[2] = { p1, p2 };
    for (int i = 0; i < 2; i++) {
        snprintf(want, sizeof want, "\"slot\":%d,", dlock_lock_slot(perm[i]));
        if (!strstr(obj, want))
            fail_msg("status --json lacks %s: %s", want, obj);
        snprintf(want, sizeof want, "\"fencing_token\":\"%llu\"",
                 (unsigned long long)dlock_lock_fencing_token(perm[i]));
        if (!strstr(obj, want))
            fail_msg("status --json lacks %s: %s", want, obj);
    }
    assert_true(dlock_lock_slot(p1) + dlock_lock_slot(p2) == 1); /* slots 0 and 1 */
    assert_non_null(strstr(obj, "\"age_ms\":"));
    assert_non_null(strstr(obj, "\"ttl_ms\":"));

    snprintf(obj, sizeof obj, "%.*s", (int)(fr - mutex), mutex);
    assert_non_null(strstr(obj, "\"kind\":\"mutex\""));
    assert_non_null(strstr(obj, "\"mode\":\"write\",\"slot\":null"));
    snprintf(want, sizeof want, "\"fencing_token\":\"%llu\"",
             (unsigned long long)dlock_lock_fencing_token(m));
    assert_int_equal(dh_count_of(obj, want), 2); /* top level and the holder */

    assert_non_null(strstr(fr, "\"state\":\"free\",\"owner\":null,\"ttl_ms\":null,"
                               "\"fencing_token\":null,\"waiters\":0"));
    assert_non_null(strstr(fr, "\"holders\":[]"));

    /* The text form too. */
    st = dh_cli("-u", srv->url, "status", "st:pool");
    dh_cli_expect(st, 0, "status of a semaphore");
    assert_non_null(strstr(dh_out, "semaphore"));
    assert_non_null(strstr(dh_out, "permit slot 0"));
    assert_non_null(strstr(dh_out, "permit slot 1"));
    assert_int_equal(dh_count_of(dh_out, OWNER), 2);

    dh_assert_rc(dlock_release(p1), 0);
    dh_assert_rc(dlock_release(p2), 0);
    dh_assert_rc(dlock_release(m), 0);
}

/* metrics: valid exposition with a held lock and a waiter. */
static void test_metrics_print(void **state)
{
    (void)state;
    dlock_lock_opts o = dh_opts(0, 0);
    dlock_lock *m = NULL, *p = NULL;
    dh_assert_rc(dlock_acquire(&m, holder, "mx:held", &o), 0);
    dh_assert_rc(dlock_sem_acquire(&p, holder, "mx:pool", 2, &o), 0);
    dh_proc *w = dh_cli_bg("-u", srv->url, "run", "--wait", "15s", "mx:held", "--", "true");
    wait_state("mx:held", DLOCK_KIND_MUTEX, 1, 1);

    int st = dh_cli("-u", srv->url, "metrics", "mx:*");
    dh_cli_expect(st, 0, "metrics");
    dh_check_exposition(dh_out);
    assert_true(sample_value(dh_out, "dlock_lock_holders{key=\"mx:held\",kind=\"mutex\"} ") == 1);
    assert_true(sample_value(dh_out, "dlock_lock_waiters{key=\"mx:held\",kind=\"mutex\"} ") == 1);
    assert_true(sample_value(dh_out, "dlock_lock_holders{key=\"mx:pool\",kind=\"semaphore\"} ") ==
                1);
    assert_true(sample_value(dh_out, "dlock_semaphore_permits_in_use{key=\"mx:pool\"} ") == 1);
    assert_true(
        sample_value(dh_out,
                     "dlock_lock_oldest_holder_age_seconds{key=\"mx:held\",kind=\"mutex\"} ") >= 0);
    assert_true(sample_value(dh_out, "dlock_locks_held ") == 2);
    assert_true(sample_value(dh_out, "dlock_waiters ") == 1);
    /* the pattern filters */
    assert_null(strstr(dh_out, "key=\"st:"));

    /* Odd keys are escaped as the format wants. */
    dlock_lock *odd = NULL;
    dh_assert_rc(dlock_acquire(&odd, holder, "mx:a\"b\\c\nd", &o), 0);
    st = dh_cli("-u", srv->url, "metrics", "mx:a*");
    dh_cli_expect(st, 0, "metrics of an odd key");
    dh_check_exposition(dh_out);
    assert_true(sample_value(
                    dh_out, "dlock_lock_holders{key=\"mx:a\\\"b\\\\c\\nd\",kind=\"mutex\"} ") == 1);
    dh_assert_rc(dlock_release(odd), 0);

    dh_assert_rc(dlock_release(m), 0);
    dh_assert_rc(dlock_release(p), 0);
    dh_cli_expect_proc(w, 0, "the waiter");
    dh_proc_free(w);

    /* Nothing held: the families are still there, the totals are 0. */
    st = dh_cli("-u", srv->url, "metrics", "mx:*");
    dh_cli_expect(st, 0, "metrics, nothing held");
    assert_non_null(strstr(dh_out, "# TYPE dlock_lock_holders gauge\n"));
    assert_true(sample_value(dh_out, "dlock_locks_held ") == 0);

    char url[64];
    dh_closed_url(url, sizeof url);
    dh_cli_expect(dh_cli("-u", url, "metrics"), 69, "metrics, unreachable");
    dh_cli_expect(dh_cli("-u", srv->url, "metrics", "a*", "b*"), 64, "metrics, two patterns");
}

/* One HTTP/1.0 request on a plain socket; the whole answer in buf. */
static void http_get(char *buf, size_t len, long port, const char *path)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct timeval tv = { 10, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
    assert_int_equal(write(fd, req, (size_t)n), n);
    size_t got = 0;
    ssize_t r;
    while (got + 1 < len && (r = read(fd, buf + got, len - 1 - got)) > 0)
        got += (size_t)r;
    buf[got] = '\0';
    close(fd);
}

/* metrics --listen: /metrics answers 200 with the exposition, other paths
 * 404; SIGTERM ends it with 0. */
static void test_metrics_listen(void **state)
{
    (void)state;
    dlock_lock *m = NULL;
    dlock_lock_opts o = dh_opts(0, 0);
    dh_assert_rc(dlock_acquire(&m, holder, "ml:held", &o), 0);

    dh_proc *p = dh_cli_bg("-u", srv->url, "metrics", "--listen", "127.0.0.1:0", "ml:*");
    const char *tag = "serving metrics on http://127.0.0.1:";
    wait_output(p, tag, 1, 1);
    long port = strtol(strstr(dh_err, tag) + strlen(tag), NULL, 10);
    assert_true(port > 0 && port < 65536);

    static char resp[64 * 1024];
    http_get(resp, sizeof resp, port, "/metrics");
    if (strncmp(resp, "HTTP/1.1 200", 12) != 0 && strncmp(resp, "HTTP/1.0 200", 12) != 0)
        fail_msg("GET /metrics: %s", resp);
    assert_non_null(strstr(resp, "text/plain; version=0.0.4"));
    const char *body = strstr(resp, "\r\n\r\n");
    assert_non_null(body);
    dh_check_exposition(body + 4);
    assert_true(sample_value(body + 4, "dlock_lock_holders{key=\"ml:held\",kind=\"mutex\"} ") == 1);

    /* Fresh per request: the release shows at the next scrape. */
    dh_assert_rc(dlock_release(m), 0);
    http_get(resp, sizeof resp, port, "/metrics");
    body = strstr(resp, "\r\n\r\n");
    assert_non_null(body);
    assert_true(sample_value(body + 4, "dlock_locks_held ") == 0);

    http_get(resp, sizeof resp, port, "/other");
    if (strncmp(resp, "HTTP/1.1 404", 12) != 0 && strncmp(resp, "HTTP/1.0 404", 12) != 0)
        fail_msg("GET /other: %s", resp);

    assert_false(dh_proc_done(p));
    assert_int_equal(dh_proc_signal(p, SIGTERM), 0);
    dh_cli_expect_proc(p, 0, "metrics --listen after SIGTERM");
    dh_proc_free(p);

    dh_cli_expect(dh_cli("-u", srv->url, "metrics", "--listen", "nonsense"), 64,
                  "--listen nonsense");
    dh_cli_expect(dh_cli("-u", srv->url, "metrics", "--listen", "127.0.0.1:99999"), 64,
                  "--listen port out of range");
}

/* --metrics-file: the client's metrics, written atomically when dlock
 * ends, also when the lock was busy. */
static void test_metrics_file(void **state)
{
    (void)state;
    char dir[DH_PATH_MAX], path[DH_PATH_MAX + 16], buf[32 * 1024];
    assert_int_equal(dh_tmpdir(dir, sizeof dir, "mfile"), 0);
    snprintf(path, sizeof path, "%s/run.prom", dir);
    dh_cli_expect(dh_cli("-u", srv->url, "run", "--metrics-file", path, "mf:k", "--", "true"), 0,
                  "run --metrics-file");
    assert_true(dh_read_file(buf, sizeof buf, path) > 0);
    assert_non_null(strstr(buf, "dlock_acquisitions_total"));
    dh_check_exposition(buf);
    assert_true(sample_value(buf, "dlock_acquisitions_total{result=\"acquired\"} ") == 1);

    /* Busy (75): written too, and says so. */
    dlock_lock *l = NULL;
    dlock_lock_opts o = dh_opts(0, 0);
    dh_assert_rc(dlock_acquire(&l, holder, "mf:k", &o), 0);
    dh_cli_expect(
        dh_cli("-u", srv->url, "run", "--no-wait", "--metrics-file", path, "mf:k", "--", "true"),
        75, "busy run --metrics-file");
    assert_true(dh_read_file(buf, sizeof buf, path) > 0);
    assert_true(sample_value(buf, "dlock_acquisitions_total{result=\"busy\"} ") == 1);
    dh_assert_rc(dlock_release(l), 0);

    /* elect too. */
    dh_cli_expect(dh_cli("-u", srv->url, "elect", "--metrics-file", path, "mf:e", "--", "true"), 0,
                  "elect --metrics-file");
    assert_true(dh_read_file(buf, sizeof buf, path) > 0);
    assert_true(sample_value(buf, "dlock_acquisitions_total{result=\"acquired\"} ") == 1);

    /* Only the file itself is left in the directory: no temporary file. */
    char ls[DH_PATH_MAX + 64];
    snprintf(ls, sizeof ls, "ls -A '%s'", dir);
    const char *argv[] = { "sh", "-c", ls, NULL };
    assert_int_equal(dh_run(argv, NULL, 10000, dh_out, sizeof dh_out, dh_err, sizeof dh_err), 0);
    assert_string_equal(dh_out, "run.prom\n");
}

/* elect shares run's loss handling: the leadership key deleted → CMD
 * stopped, exit 79, and --metrics-file still written. */
static void test_elect_lost(void **state)
{
    (void)state;
    char dir[DH_PATH_MAX], in[DH_PATH_MAX + 8], path[DH_PATH_MAX + 16], cmd[DH_PATH_MAX + 64];
    char buf[32 * 1024];
    assert_int_equal(dh_tmpdir(dir, sizeof dir, "elost"), 0);
    snprintf(in, sizeof in, "%s/in", dir);
    snprintf(path, sizeof path, "%s/elect.prom", dir);
    snprintf(cmd, sizeof cmd, "touch '%s'; while :; do sleep 0.05; done", in);
    dh_proc *p = dh_cli_bg("-u", srv->url, "--id", "el-lost", "elect", "--ttl", "1s", "--grace",
                           "500ms", "--metrics-file", path, "el:lost", "--", "sh", "-c", cmd);
    dh_cli_await_file(p, in, "elect running CMD");
    assert_int_equal(dh_delete_key(srv, 0, "el:lost", "el-lost"), 1);
    dh_cli_expect_proc(p, 79, "elect whose leadership was deleted");
    dh_proc_free(p);
    assert_true(dh_read_file(buf, sizeof buf, path) > 0);
    assert_true(sample_value(buf, "dlock_locks_lost_total ") == 1);
}

/* A lock removed while CMD runs, not noticed before CMD ends (default TTL,
 * so no renewal happened yet): found gone at the release, dlock exits 79. */
static void test_run_lost_found_at_release(void **state)
{
    (void)state;
    char dir[DH_PATH_MAX], in[DH_PATH_MAX + 8], go[DH_PATH_MAX + 8], cmd[3 * DH_PATH_MAX];
    assert_int_equal(dh_tmpdir(dir, sizeof dir, "rlost"), 0);
    snprintf(in, sizeof in, "%s/in", dir);
    snprintf(go, sizeof go, "%s/go", dir);
    snprintf(cmd, sizeof cmd, "touch '%s'; while [ ! -e '%s' ]; do sleep 0.02; done", in, go);
    dh_proc *p = dh_cli_bg("-u", srv->url, "run", "rl:gone", "--", "sh", "-c", cmd);
    dh_cli_await_file(p, in, "run starting CMD");
    dh_cli_expect(dh_cli("-u", srv->url, "unlock", "--force", "rl:gone"), 0, "unlock --force");
    assert_int_equal(dh_write_file(go, "x"), 0);
    dh_cli_expect_proc(p, 79, "run whose lock was removed while CMD ran");
    dh_proc_free(p);
}

/* top --iterations 2: two plain snapshots (stdout is not a terminal). */
static void test_top(void **state)
{
    (void)state;
    dlock_lock *l = NULL;
    dlock_lock_opts o = dh_opts(0, 0);
    dh_assert_rc(dlock_acquire(&l, holder, "tp:held", &o), 0);
    int st = dh_cli("-u", srv->url, "top", "--iterations", "2", "--interval", "100ms", "tp:*");
    dh_cli_expect(st, 0, "top --iterations 2");
    assert_int_equal(dh_count_of(dh_out, "dlock top"), 2);
    assert_int_equal(dh_count_of(dh_out, "tp:held"), 2);
    assert_int_equal(dh_count_of(dh_out, OWNER), 2);
    assert_int_equal(dh_count_of(dh_out, "locks held 1"), 2);
    assert_non_null(strstr(dh_out, "\n\ndlock top")); /* frames apart */
    assert_null(strstr(dh_out, "\033["));             /* no terminal codes in a pipe */
    dh_assert_rc(dlock_release(l), 0);

    dh_cli_expect(dh_cli("-u", srv->url, "top", "--interval", "0", "--iterations", "1"), 64,
                  "top --interval 0");
    dh_cli_expect(dh_cli("-u", srv->url, "top", "--iterations", "0"), 64, "top --iterations 0");
    char url[64];
    dh_closed_url(url, sizeof url);
    dh_cli_expect(dh_cli("-u", url, "top", "--iterations", "1"), 69, "top, unreachable");
}

/* Help for every new command and flag, in all three spellings. */
static void test_help(void **state)
{
    (void)state;
    static const char *const cmds[] = { "run", "elect", "leader", "status", "metrics", "top" };
    dh_cli_expect(dh_cli("--help"), 0, "--help");
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        char want[32];
        snprintf(want, sizeof want, "\n  %s ", cmds[i]);
        if (!strstr(dh_out, want))
            fail_msg("dlock --help does not list %s:\n%s", cmds[i], dh_out);
    }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        char want[64];
        snprintf(want, sizeof want, "Usage: dlock %s", cmds[i]);
        dh_cli_expect(dh_cli("help", cmds[i]), 0, "help CMD");
        assert_non_null(strstr(dh_out, want));
        assert_non_null(strstr(dh_out, "Example"));
        dh_cli_expect(dh_cli(cmds[i], "--help"), 0, "CMD --help");
        assert_non_null(strstr(dh_out, want));
    }
    dh_cli_expect(dh_cli("run", "--help"), 0, "run --help");
    assert_non_null(strstr(dh_out, "--limit"));
    assert_non_null(strstr(dh_out, "--shared"));
    assert_non_null(strstr(dh_out, "--metrics-file"));
    assert_non_null(strstr(dh_out, "DLOCK_SLOT"));
    assert_non_null(strstr(dh_out, "DLOCK_FENCING_TOKENS"));
    dh_cli_expect(dh_cli("leader", "--help"), 0, "leader --help");
    assert_non_null(strstr(dh_out, "--watch"));
    dh_cli_expect(dh_cli("metrics", "--help"), 0, "metrics --help");
    assert_non_null(strstr(dh_out, "--listen"));
    dh_cli_expect(dh_cli("top", "--help"), 0, "top --help");
    assert_non_null(strstr(dh_out, "--interval"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_limit),
        cmocka_unit_test(test_multi_key),
        cmocka_unit_test(test_shared),
        cmocka_unit_test(test_elect_and_leader),
        cmocka_unit_test(test_leader_watch),
        cmocka_unit_test(test_status_holders),
        cmocka_unit_test(test_metrics_print),
        cmocka_unit_test(test_metrics_listen),
        cmocka_unit_test(test_metrics_file),
        cmocka_unit_test(test_elect_lost),
        cmocka_unit_test(test_top),
        cmocka_unit_test(test_run_lost_found_at_release),
    };
    return cmocka_run_group_tests_name("cli_patterns", tests, group_setup, dh_group_teardown);
}
