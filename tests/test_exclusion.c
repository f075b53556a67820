/*
 * test_exclusion.c — mutual exclusion across processes.
 *
 * Design. Four forked children (each with its own dlock client and its own
 * hiredis connection, opened after the fork) run 200 critical sections on
 * one key: acquire, GET counter, SET counter+1, release. The increment is a
 * deliberate read-modify-write race that only the lock prevents, so the
 * final counter is exactly 800 if and only if no two sections overlapped.
 * Each child also records "<fencing token> <counter value read>" per section;
 * sorted by token, the values read must be 0, 1, ..., 799: tokens are
 * distinct and strictly increase in grant order. Children never use cmocka:
 * they report through their exit status and stderr, are forked by dh_fork
 * (they die with the parent, and with the test if it fails), and are waited
 * for with a bound.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define NCHILD 4
#define ITERS 200

static dh_redis *srv;

static int group_setup(void **state)
{
    (void)state;
    return dh_group_start(&srv, NULL);
}

/* One child's work. Returns the exit status: 0 or a small error number. */
static int child_main(int idx, const char *path)
{
    char owner[64];
    snprintf(owner, sizeof owner, "excl-child-%d", idx);
    dlock_client *c = dh_client(srv->url, owner);
    if (!c)
        return 2;
    redisContext *rc = dh_connect(srv, 0);
    if (!rc)
        return 3;
    FILE *f = fopen(path, "w");
    if (!f)
        return 4;
    dlock_lock_opts o = dh_opts(10000, 60000);
    for (int i = 0; i < ITERS; i++) {
        dlock_lock *l = NULL;
        int r = dlock_acquire(&l, c, "counter-lock", &o);
        if (r != 0) {
            fprintf(stderr, "child %d iter %d: acquire: %s: %s\n", idx, i, dlock_strerror(r),
                    dlock_last_errmsg());
            return 5;
        }
        redisReply *g = redisCommand(rc, "GET counter");
        if (!g) {
            fprintf(stderr, "child %d: GET failed\n", idx);
            return 6;
        }
        long long v = 0;
        if (g->type == REDIS_REPLY_STRING) {
            char *end = NULL;
            errno = 0;
            v = strtoll(g->str, &end, 10);
            if (errno || end == g->str || *end) {
                fprintf(stderr, "child %d: bad counter '%s'\n", idx, g->str);
                return 7;
            }
        }
        freeReplyObject(g);
        redisReply *s = redisCommand(rc, "SET counter %lld", v + 1);
        if (!s || s->type == REDIS_REPLY_ERROR) {
            fprintf(stderr, "child %d: SET failed\n", idx);
            return 8;
        }
        freeReplyObject(s);
        fprintf(f, "%llu %lld\n", (unsigned long long)dlock_lock_fencing_token(l), v);
        r = dlock_release(l);
        if (r != 0) {
            fprintf(stderr, "child %d iter %d: release: %s: %s\n", idx, i, dlock_strerror(r),
                    dlock_last_errmsg());
            return 9;
        }
    }
    if (fclose(f) != 0)
        return 10;
    redisFree(rc);
    dlock_client_close(c);
    return 0;
}

struct section {
    unsigned long long token;
    long long value;
};

static int cmp_section(const void *a, const void *b)
{
    const struct section *x = a, *y = b;
    return x->token < y->token ? -1 : x->token > y->token ? 1 : 0;
}

/* Parse a child's "token value" lines into out[*n...]. -1 on a bad line. */
static int parse_sections(const char *path, struct section *out, int *n, int max)
{
    static char buf[64 * 1024];
    if (dh_read_file(buf, sizeof buf, path) < 0)
        return -1;
    const char *p = buf;
    while (*p) {
        char *end = NULL;
        errno = 0;
        unsigned long long t = strtoull(p, &end, 10);
        if (errno || end == p || *end != ' ')
            return -1;
        p = end + 1;
        long long v = strtoll(p, &end, 10);
        if (errno || end == p || *end != '\n')
            return -1;
        p = end + 1;
        if (*n >= max)
            return -1;
        out[*n].token = t;
        out[*n].value = v;
        (*n)++;
    }
    return 0;
}

static void test_counter_across_processes(void **state)
{
    (void)state;
    assert_int_equal(dh_cmd_ok(srv, 0, "DEL counter"), 0);
    char paths[NCHILD][DH_PATH_MAX];
    for (int i = 0; i < NCHILD; i++)
        assert_int_equal(dh_tmpfile(paths[i], sizeof paths[i], "sections"), 0);

    pid_t children[NCHILD];
    for (int i = 0; i < NCHILD; i++) {
        children[i] = dh_fork();
        assert_true(children[i] >= 0);
        if (children[i] == 0) {
            int st = child_main(i, paths[i]);
            fflush(NULL);
            _exit(st); /* no atexit handlers: they belong to the parent */
        }
    }
    if (!dh_wait_children(children, NCHILD, 120000))
        fail_msg("a child failed or ran past 120 s (see above)");

    char val[64];
    assert_true(dh_cmd_str(val, sizeof val, srv, 0, "GET counter") > 0);
    assert_string_equal(val, "800");

    static struct section all[NCHILD * ITERS + 1];
    int n = 0;
    for (int i = 0; i < NCHILD; i++)
        assert_int_equal(parse_sections(paths[i], all, &n, NCHILD * ITERS), 0);
    assert_int_equal(n, NCHILD * ITERS);
    qsort(all, (size_t)n, sizeof all[0], cmp_section);
    for (int i = 0; i < n; i++) {
        if (i > 0 && all[i].token == all[i - 1].token)
            fail_msg("fencing token %llu granted twice", all[i].token);
        /* Sorted by token, the section with the i-th token read i. */
        if (all[i].value != i)
            fail_msg("section with the %d-th smallest token (%llu) read counter %lld", i,
                     all[i].token, all[i].value);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        dh_unit_test(test_counter_across_processes),
    };
    return cmocka_run_group_tests_name("exclusion", tests, group_setup, dh_group_teardown);
}
