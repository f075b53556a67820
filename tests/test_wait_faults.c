/*
 * test_wait_faults.c — the waiting protocol under faults: one deterministic
 * regression test per failure the earlier protocol had (issue 10's list),
 * each driving processes into the bad moment on purpose: a waiter stopped
 * (SIGSTOP) while the lock is handed to it, killed (SIGKILL) while queued,
 * a close racing an acquisition that completes, a server that stops
 * answering during a wait, a reply lost after the server acted on it.
 *
 * Design. Contenders that must be stopped or killed are processes
 * (dh_fork: they die with the test), each reporting through a slot in
 * shared memory: its acquisition's result and time, and whether, at that
 * moment, the server named another holder while the handle still believed
 * itself valid (the exclusion check: always 0). They are forked at the
 * start of a test, while the test process has no threads (a child forked
 * from a threaded process can inherit a lock held by another thread, e.g.
 * the sanitizers' allocator's), and each starts contending when the test
 * writes its pipe; a second byte makes it release and exit. Waits are
 * bounded polls of that shared state or of the server; timing figures are
 * printed and bounded generously.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client.h"
#include "harness.h"

static dh_redis *srv;

static int group_setup(void **state)
{
    (void)state;
    return dh_group_start(&srv, NULL);
}

/* ---------------------------------------------------- contender processes */

enum { WAITING = 1, HOLDING = 2, FAILED = 3, DONE = 4 };
enum { K_MUTEX, K_READ, K_MULTI };

typedef struct slot {
    atomic_int state;
    atomic_int rc;
    atomic_llong got_ms;
    atomic_int not_me; /* the server named another holder while we were valid */
    char owner[64];
} slot;

typedef struct child {
    pid_t pid;
    int ctl_fd; /* write a byte: start contending; another: release and exit */
    slot *s;
} child;

static slot *slots_new(int n)
{
    void *p = mmap(NULL, (size_t)n * sizeof(slot), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    memset(p, 0, (size_t)n * sizeof(slot));
    return p;
}

/* Is the lock on `key` ours according to the server? */
static int server_names(dlock_client *c, const char *key, const char *owner)
{
    dlock_info info;
    return dlock_inspect(&info, c, key) == 0 && info.held && strcmp(info.owner, owner) == 0;
}

static void trace(int level, const char *msg, void *arg)
{
    (void)level;
    fprintf(stderr, "[%lld %s] %s\n", (long long)dh_now_ms(), (const char *)arg, msg);
}

/* The child's life: acquire, check with the server, hold until told.
 * DLOCK_TEST_TRACE=1 prints its library's debug log. */
static void contend(slot *s, int ctl_fd, const char *key, int kind, int64_t ttl_ms)
{
    char b;
    if (read(ctl_fd, &b, 1) != 1)
        _exit(0); /* the test ended without starting us */
    dlock_client_opts co = DLOCK_CLIENT_OPTS_INIT;
    co.owner_id = s->owner;
    if (getenv("DLOCK_TEST_TRACE")) {
        co.log_fn = trace;
        co.log_arg = s->owner;
        co.log_level = DLOCK_LOG_DEBUG;
    }
    dlock_client *c = NULL;
    if (dlock_client_open(&c, srv->url, &co) != 0)
        _exit(2);
    dlock_lock_opts o = DLOCK_LOCK_OPTS_INIT;
    o.ttl_ms = ttl_ms;
    dlock_lock *l = NULL;
    atomic_store(&s->state, WAITING);
    int rc;
    if (kind == K_READ) {
        rc = dlock_rw_acquire(&l, c, key, DLOCK_READ, &o);
    } else if (kind == K_MULTI) {
        const char *keys[2] = { key, "{wf}:other" };
        rc = dlock_acquire_all(&l, c, keys, 2, &o);
    } else {
        rc = dlock_acquire(&l, c, key, &o);
    }
    atomic_store(&s->got_ms, dh_now_ms());
    atomic_store(&s->rc, rc);
    if (rc == 0 && kind != K_READ && !server_names(c, key, s->owner) && dlock_is_held(l))
        atomic_store(&s->not_me, 1);
    atomic_store(&s->state, rc == 0 ? HOLDING : FAILED);
    if (rc == 0 && read(ctl_fd, &b, 1) >= 0)
        dlock_release(l);
    atomic_store(&s->state, DONE);
    dlock_client_close(c);
    _exit(0);
}

/* Fork a contender (call before the test opens any client); it starts
 * when go() is called. */
static child prepare(slot *s, const char *tag, const char *key, int kind, int64_t ttl_ms)
{
    dh_owner(s->owner, sizeof s->owner, tag);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    child ch = { .s = s };
    ch.pid = dh_fork();
    assert_true(ch.pid >= 0);
    if (ch.pid == 0) {
        close(fds[1]);
        contend(s, fds[0], key, kind, ttl_ms);
    }
    close(fds[0]);
    ch.ctl_fd = fds[1];
    return ch;
}

static void go(child *ch)
{
    char b = 'g';
    assert_int_equal(write(ch->ctl_fd, &b, 1), 1);
}

static void release_child(child *ch)
{
    char b = 'r';
    assert_int_equal(write(ch->ctl_fd, &b, 1), 1);
    close(ch->ctl_fd);
    int st;
    assert_int_equal(dh_waitpid(ch->pid, &st, 10000), 1);
}

static int is_holding(void *arg)
{
    return atomic_load(&((slot *)arg)->state) == HOLDING;
}

static int is_settled(void *arg)
{
    return atomic_load(&((slot *)arg)->state) >= HOLDING;
}

typedef struct qarg {
    dlock_client *c;
    const char *key;
    int64_t n;
} qarg;

static int queue_has(void *arg)
{
    qarg *q = arg;
    dlock_info info;
    return dlock_inspect(&info, q->c, q->key) == 0 && info.waiters >= q->n;
}

static int lock_free(void *arg)
{
    qarg *q = arg;
    dlock_info info;
    return dlock_inspect(&info, q->c, q->key) == 0 && !info.held;
}

/* A client whose owner id is written to owner (64 bytes). */
static dlock_client *client(const char *tag, char *owner)
{
    dh_owner(owner, 64, tag);
    dlock_client *c = dh_client(srv->url, owner);
    assert_non_null(c);
    return c;
}

/* Start the n children in order, each once the one before it is queued
 * (h looks at key): on return key has n waiters, queued in that order. */
static void queue_in_order(dlock_client *h, const char *key, child *const *chs, int n)
{
    for (int i = 0; i < n; i++) {
        go(chs[i]);
        qarg q = { h, key, i + 1 };
        assert_true(dh_wait_until(queue_has, &q, 5000));
    }
}

/* ----------------------------------------------------------------- tests */

/* The id of the one connection blocked in BLPOP right now (a waiter's
 * wake-up connection); -1 if there is none, or more than one. */
static long long blpop_client(void)
{
    char list[16384] = "";
    assert_true(dh_cmd_str(list, sizeof list, srv, 0, "CLIENT LIST") > 0);
    long long id = -1, one;
    int n = 0;
    for (char *line = strtok(list, "\n"); line; line = strtok(NULL, "\n"))
        if (strstr(line, " flags=b ") && strstr(line, " cmd=blpop ") &&
            sscanf(line, "id=%lld", &one) == 1) {
            id = one;
            n++;
        }
    return n == 1 ? id : -1;
}

static int blocked_in_blpop(void *arg)
{
    (void)arg;
    return blpop_client() > 0;
}

/* Tests 1 and 1b: a waiter on key (lease ttl_ms) is stopped while the
 * lock is handed to it, its lease runs out and another client takes the
 * lock; resumed, the waiter must keep waiting (never believe it holds)
 * and get the lock once that client releases it. With drop_wakeup its
 * wake-up (BLPOP) connection is killed before the handoff, so the signal
 * stays in the list. Owner ids are made from tag. */
static void stale_signal_case(const char *tag, const char *key, int64_t ttl_ms, int drop_wakeup)
{
    char wt[32], ht[32], xt[32];
    snprintf(wt, sizeof wt, "%s-w", tag);
    snprintf(ht, sizeof ht, "%s-h", tag);
    snprintf(xt, sizeof xt, "%s-x", tag);
    slot *s = slots_new(1);
    child w = prepare(&s[0], wt, key, K_MUTEX, ttl_ms);
    char ho[64], xo[64];
    dlock_client *h = client(ht, ho), *x = client(xt, xo);
    dlock_lock *held, *other;
    dh_assert_rc(dlock_acquire(&held, h, key, NULL), 0);
    queue_in_order(h, key, (child *[]){ &w }, 1);
    if (drop_wakeup)
        assert_true(dh_wait_until(blocked_in_blpop, NULL, 5000));
    kill(w.pid, SIGSTOP);
    if (drop_wakeup)
        assert_int_equal(dh_cmd_int(srv, 0, "CLIENT KILL ID %lld", blpop_client()), 1);
    dh_assert_rc(dlock_release(held), 0); /* handed to the stopped waiter (the signal listed) */
    qarg q = { h, key, 1 };
    assert_true(dh_wait_until(lock_free, &q, 5000)); /* its lease ran out */
    dlock_lock_opts o = DLOCK_LOCK_OPTS_INIT;
    o.wait_ms = 5000;
    dh_assert_rc(dlock_acquire(&other, x, key, &o), 0);
    kill(w.pid, SIGCONT);
    /* the woken waiter finds its old signal (or, 1b, looks: busy): it must keep waiting */
    assert_false(dh_wait_until(is_settled, &s[0], 1000));
    assert_true(server_names(x, key, xo));
    dh_assert_rc(dlock_release(other), 0);
    assert_true(dh_wait_until(is_holding, &s[0], 5000));
    assert_int_equal(atomic_load(&s[0].not_me), 0);
    release_child(&w);
    dlock_client_close(h);
    dlock_client_close(x);
}

/* 1. A handoff to a waiter that is stopped until its lease ran out and
 * someone else took the lock must not make the waiter believe it holds:
 * the signal it finds on waking is too old to prove anything. */
static void test_stale_signal_never_grants(void **state)
{
    (void)state;
    stale_signal_case("sig", "wf:sig", 20, 0);
}

/* 1b. A signal left in the list: the handoff came while the waiter had no
 * BLPOP waiting (its wake-up connection was dropped, and it was stopped),
 * so the signal stays in the list; the lease runs out and another client
 * takes the lock. The waiter, resumed, looks (busy): that answer must
 * clear the old signal, else its next BLPOP would take it as a grant. */
static void test_stale_signal_in_list_never_grants(void **state)
{
    (void)state;
    stale_signal_case("sigl", "wf:sigl", 2000, 1);
}

static int queue_empty(void *arg)
{
    qarg *q = arg;
    dlock_info info;
    return dlock_inspect(&info, q->c, q->key) == 0 && info.waiters == 0;
}

/* The start of tests 2 and 3: two contenders on key (kinds ka and kb,
 * leases of 2 s, owner ids made from tag), queued in that order behind the
 * lock a fresh client h holds, and the first one stopped (SIGSTOP). */
typedef struct scene {
    slot *s; /* the two contenders' slots */
    child a, b;
    dlock_client *h;
    dlock_lock *held;
} scene;

static void first_of_two_stopped(scene *sc, const char *tag, const char *key, int ka, int kb)
{
    char at[32], bt[32], ht[32], ho[64];
    snprintf(at, sizeof at, "%s-a", tag);
    snprintf(bt, sizeof bt, "%s-b", tag);
    snprintf(ht, sizeof ht, "%s-h", tag);
    sc->s = slots_new(2);
    sc->a = prepare(&sc->s[0], at, key, ka, 2000);
    sc->b = prepare(&sc->s[1], bt, key, kb, 2000);
    sc->h = client(ht, ho);
    dh_assert_rc(dlock_acquire(&sc->held, sc->h, key, NULL), 0);
    queue_in_order(sc->h, key, (child *[]){ &sc->a, &sc->b }, 2);
    kill(sc->a.pid, SIGSTOP);
}

/* 2. A waiter stalled past its entry's life loses its place and leaves no
 * ghost: the lock goes to the waiter behind it at the next release, and
 * the stalled one, once running, queues again and is served in turn. */
static void test_stalled_waiter_leaves_no_ghost(void **state)
{
    (void)state;
    scene sc;
    first_of_two_stopped(&sc, "ghost", "wf:ghost", K_MUTEX, K_MUTEX);
    /* a's entry dies unrenewed: wait until the queue has only b */
    qarg q1 = { sc.h, "wf:ghost", 1 };
    int64_t t0 = dh_now_ms();
    while (dh_now_ms() - t0 < 5000) {
        dlock_info info;
        dh_assert_rc(dlock_inspect(&info, sc.h, "wf:ghost"), 0);
        if (info.waiters <= 1)
            break;
        dh_assert_rc(dlock_extend(sc.held, 30000), 0); /* touch: scripts drop dead entries */
        if (dh_wait_until(queue_empty, &q1, 50))
            break;
    }
    int64_t released = dh_now_ms();
    dh_assert_rc(dlock_release(sc.held), 0);
    assert_true(server_names(sc.h, "wf:ghost", sc.s[1].owner)); /* handed straight to b */
    assert_true(dh_wait_until(is_holding, &sc.s[1], 5000));     /* b, not the ghost */
    print_message("waiter behind a stalled one served %lld ms after the release\n",
                  (long long)(atomic_load(&sc.s[1].got_ms) - released));
    assert_true(atomic_load(&sc.s[1].got_ms) - released < 2000);
    kill(sc.a.pid, SIGCONT);
    release_child(&sc.b);
    assert_true(dh_wait_until(is_holding, &sc.s[0], 5000)); /* a queued again */
    assert_int_equal(atomic_load(&sc.s[0].not_me) + atomic_load(&sc.s[1].not_me), 0);
    release_child(&sc.a);
    assert_true(dh_wait_until(queue_empty, &q1, 5000)); /* nothing left behind */
    dlock_client_close(sc.h);
}

/* 3. A reader stopped while a release admits it must never hold together
 * with a writer: its reader lease runs out, the multi-lock queued behind it
 * gets the key, and the reader, once running, waits for it. */
static void test_stalled_reader_never_with_writer(void **state)
{
    (void)state;
    scene sc;
    first_of_two_stopped(&sc, "rw", "{wf}:rw", K_READ, K_MULTI);
    dh_assert_rc(dlock_release(sc.held), 0);                /* the stopped reader is admitted */
    assert_true(dh_wait_until(is_holding, &sc.s[1], 5000)); /* its lease ran out: m (sc.b) next */
    kill(sc.a.pid, SIGCONT);
    assert_false(dh_wait_until(is_settled, &sc.s[0], 1000)); /* never with m */
    dlock_key_state *st;
    dh_assert_rc(dlock_key_state_get(&st, sc.h, "{wf}:rw", DLOCK_KIND_MUTEX), 0);
    assert_int_equal(st->nholders, 1);
    assert_int_equal(st->holders[0].mode, DLOCK_WRITE);
    dlock_key_state_free(st);
    release_child(&sc.b);
    assert_true(dh_wait_until(is_holding, &sc.s[0], 5000));
    release_child(&sc.a);
    dlock_client_close(sc.h);
}

/* 4. dlock_client_close racing an acquisition that completes, the
 * watchdog and on-lost callbacks, many times over (run under ASan and
 * TSan): the blocked acquisition returns 0 (it finished before close
 * began) or DLOCK_ECLOSED, and nothing stays held on the server. */
typedef struct racer {
    dlock_client *c;
    int rc;
} racer;

static void *race_acquire(void *arg)
{
    racer *r = arg;
    dlock_lock *l = NULL;
    dlock_lock_opts o = DLOCK_LOCK_OPTS_INIT;
    o.ttl_ms = 2000;
    r->rc = dlock_acquire(&l, r->c, "wf:close", &o); /* the handle belongs to close now */
    return NULL;
}

static atomic_int in_callback;

static void on_lost_slow(dlock_lock *l, void *arg)
{
    (void)l;
    atomic_fetch_add((atomic_int *)arg, 1);
    atomic_store(&in_callback, 1);
    usleep(20000); /* a callback that takes its time while close runs */
    atomic_store(&in_callback, 0);
}

static int callback_running(void *arg)
{
    (void)arg;
    return atomic_load(&in_callback);
}

static void test_close_races_acquire(void **state)
{
    (void)state;
    char ho[64], co[64];
    dlock_client *h = client("close-h", ho);
    int ok = 0, closed = 0;
    atomic_int lost = 0;
    for (int i = 0; i < 60; i++) {
        dlock_lock *held, *doomed;
        dh_assert_rc(dlock_acquire(&held, h, "wf:close", NULL), 0);
        racer r = { client("close-c", co), 0 };
        dlock_lock_opts lo = DLOCK_LOCK_OPTS_INIT;
        lo.ttl_ms = 300; /* renewed after 100 ms: finds it gone */
        lo.on_lost = on_lost_slow;
        lo.on_lost_arg = &lost;
        char key[32];
        snprintf(key, sizeof key, "wf:lost:%d", i);
        dh_assert_rc(dlock_acquire(&doomed, r.c, key, &lo), 0);
        int removed;
        dh_assert_rc(dlock_force_unlock(&removed, h, key), 0); /* renewal will find it gone */
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, race_acquire, &r), 0);
        qarg q = { h, "wf:close", 1 };
        assert_true(dh_wait_until(queue_has, &q, 5000));
        if (i % 2) /* close while the watchdog runs the on-lost callback */
            assert_true(dh_wait_until(callback_running, NULL, 5000));
        /* release (the waiter is handed the lock) and close at once */
        dh_assert_rc(dlock_release(held), 0);
        if (i % 3)
            usleep((useconds_t)(i % 7) * 100); /* vary where close meets the handoff */
        dlock_client_close(r.c);
        pthread_join(t, NULL);
        if (r.rc == 0)
            ok++;
        else if (r.rc == DLOCK_ECLOSED)
            closed++;
        else
            fail_msg("acquire racing close returned %d (%s)", r.rc, dlock_strerror(r.rc));
        assert_true(dh_wait_until(lock_free, &q, 5000)); /* nothing left held */
    }
    print_message("close racing acquire: %d returned before close, %d ECLOSED; %d on-lost calls\n",
                  ok, closed, atomic_load(&lost));
    dlock_client_close(h);
}

/* 5 and 6. Dead waiters and a dead holder do not freeze the key: a waiter
 * killed while queued costs the next live waiter at most a lease, and a
 * killed holder's lock moves on when its TTL ends, even with the dead
 * waiter at the head of the queue. */
static void test_dead_waiter_and_dead_holder(void **state)
{
    (void)state;
    slot *s = slots_new(3);
    child holder = prepare(&s[0], "dead-holder", "wf:dead", K_MUTEX, 1000);
    child dead = prepare(&s[1], "dead-waiter", "wf:dead", K_MUTEX, 1000);
    child live = prepare(&s[2], "dead-live", "wf:dead", K_MUTEX, 1000);
    char ho[64];
    dlock_client *h = client("dead-h", ho);
    go(&holder);
    assert_true(dh_wait_until(is_holding, &s[0], 5000));
    queue_in_order(h, "wf:dead", (child *[]){ &dead, &live }, 2);
    int64_t killed = dh_now_ms();
    kill(dead.pid, SIGKILL);
    kill(holder.pid, SIGKILL); /* its lock stays until its TTL (1 s) */
    assert_true(dh_wait_until(is_holding, &s[2], 5000));
    int64_t took = atomic_load(&s[2].got_ms) - killed;
    print_message("holder and head waiter killed: live waiter served after %lld ms (TTL 1000)\n",
                  (long long)took);
    assert_true(took <= 1000 + 1000);
    assert_int_equal(atomic_load(&s[2].not_me), 0);
    int st;
    assert_int_equal(dh_waitpid(dead.pid, &st, 5000), 1);
    assert_int_equal(dh_waitpid(holder.pid, &st, 5000), 1);
    close(dead.ctl_fd);
    close(holder.ctl_fd);
    release_child(&live);
    dlock_client_close(h);
}

/* 7. A multi-lock is not starved by single-key waiters hammering one of
 * its keys: it queues like them and is served in turn. */
typedef struct hammer {
    dlock_client *c;
    atomic_int *stop;
    int sections;
} hammer;

static void *hammer_main(void *arg)
{
    hammer *hm = arg;
    while (!atomic_load(hm->stop)) {
        dlock_lock *l;
        dlock_lock_opts o = DLOCK_LOCK_OPTS_INIT;
        o.wait_ms = 10000;
        if (dlock_acquire(&l, hm->c, "{wf}:hot", &o) == 0) {
            usleep(1000); /* work under the lock */
            dlock_release(l);
            hm->sections++;
        }
    }
    return NULL;
}

static void test_multi_lock_not_starved(void **state)
{
    (void)state;
    char ho[64];
    enum { N = 3 };
    atomic_int stop = 0;
    hammer hm[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        char tag[16];
        snprintf(tag, sizeof tag, "hot-%d", i);
        hm[i] = (hammer){ client(tag, ho), &stop, 0 };
        assert_int_equal(pthread_create(&th[i], NULL, hammer_main, &hm[i]), 0);
    }
    dlock_client *m = client("hot-m", ho);
    const char *keys[2] = { "{wf}:hot", "{wf}:cold" };
    dlock_lock_opts o = DLOCK_LOCK_OPTS_INIT;
    o.wait_ms = 10000;
    int got = 0;
    for (int i = 0; i < 5; i++) {
        dlock_lock *l;
        dh_assert_rc(dlock_acquire_all(&l, m, keys, 2, &o), 0);
        got++;
        dh_assert_rc(dlock_release(l), 0);
    }
    atomic_store(&stop, 1);
    int total = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        total += hm[i].sections;
        dlock_client_close(hm[i].c);
    }
    print_message("multi-lock served %d times among %d single-key sections\n", got, total);
    dlock_client_close(m);
}

/* 8. The wait budget bounds the whole call, also when the server stops
 * answering in the middle of the wait: --wait 2s returns by about 2.5 s
 * with DLOCK_ETIMEDOUT and a message saying the server did not answer. */
static void test_wait_budget_with_stopped_server(void **state)
{
    (void)state;
    dh_redis *r = dh_redis_start(NULL);
    assert_non_null(r);
    char owner[64];
    /* round trips may take long (20 s): the wait's budget must cap each */
    dlock_client_opts co = dh_client_opts(owner, "budget");
    co.command_timeout_ms = 20000;
    dlock_client *h = dh_client(r->url, owner), *w = dh_client_with(r->url, &co);
    assert_non_null(h);
    assert_non_null(w);
    dlock_lock *held, *l;
    dh_assert_rc(dlock_acquire(&held, h, "wf:budget", NULL), 0);
    dlock_lock_opts o = DLOCK_LOCK_OPTS_INIT;
    o.wait_ms = 300;
    dh_assert_rc(dlock_acquire(&l, w, "wf:budget", &o), DLOCK_ETIMEDOUT); /* warm the pool */
    assert_int_equal(dh_redis_pause(r), 0);
    o.wait_ms = 2000;
    int64_t t0 = dh_now_ms();
    int rc = dlock_acquire(&l, w, "wf:budget", &o);
    int64_t took = dh_now_ms() - t0;
    print_message("wait 2000 ms against a stopped server: %s after %lld ms: %s\n",
                  dlock_strerror(rc), (long long)took, dlock_last_errmsg());
    assert_int_equal(dh_redis_resume(r), 0);
    dh_assert_rc(rc, DLOCK_ETIMEDOUT);
    assert_non_null(strstr(dlock_last_errmsg(), "did not answer"));
    assert_true(took >= 2000 && took < 3500);
    dlock_release(held);
    dlock_client_close(h);
    dlock_client_close(w);
    dh_redis_stop(r);
}

/* The server answers a PING (no pause in force). */
static int server_answers(void *arg)
{
    (void)arg;
    return dh_cmd_ok(srv, 0, "PING") == 0;
}

/* dlock_acquire with a 2 s wait on "wf:budget-q", on the client arg. */
static int wait_2s(void *arg)
{
    dlock_lock_opts o = DLOCK_LOCK_OPTS_INIT;
    o.wait_ms = 2000;
    dlock_lock *l = NULL;
    int rc = dlock_acquire(&l, arg, "wf:budget-q", &o);
    if (rc == 0)
        dlock_release(l);
    return rc;
}

/* 8b. The same budget once queued: the waiter's wake-up connection is
 * dropped while the server stops answering for 5 s (CLIENT KILL and CLIENT
 * PAUSE in one transaction), so its next look meets a server that does not answer;
 * with 20 s connects and round trips allowed, the wait still ends at its
 * budget. */
static void test_wait_budget_once_queued(void **state)
{
    (void)state;
    char owner[64];
    dlock_client_opts co = dh_client_opts(owner, "budget-q");
    co.connect_timeout_ms = 20000;
    co.command_timeout_ms = 20000;
    dlock_client *h = dh_client(srv->url, owner), *w = dh_client_with(srv->url, &co);
    assert_non_null(h);
    assert_non_null(w);
    dlock_lock *held;
    dh_assert_rc(dlock_acquire(&held, h, "wf:budget-q", NULL), 0);
    static dh_thread t; /* static: outlives a failed test */
    memset(&t, 0, sizeof t);
    int64_t t0 = dh_now_ms();
    dh_thread_start(&t, wait_2s, w);
    assert_true(dh_wait_until(blocked_in_blpop, NULL, 5000));
    long long id = blpop_client();
    assert_true(id > 0);
    redisContext *rc0 = redisConnect("127.0.0.1", srv->port);
    assert_true(rc0 && !rc0->err);
    redisAppendCommand(rc0, "MULTI");
    redisAppendCommand(rc0, "CLIENT KILL ID %lld", id);
    redisAppendCommand(rc0, "CLIENT PAUSE 5000 ALL");
    redisAppendCommand(rc0, "EXEC");
    int ok = 1;
    for (int i = 0; i < 4; i++) {
        redisReply *r = NULL;
        ok &= redisGetReply(rc0, (void **)&r) == REDIS_OK && r && r->type != REDIS_REPLY_ERROR;
        if (i == 3)
            ok &= r && r->type == REDIS_REPLY_ARRAY && r->elements == 2;
        freeReplyObject(r);
    }
    redisFree(rc0);
    int ended = dh_wait_until(dh_thread_done, &t, 10000);
    assert_true(dh_wait_until(server_answers, NULL, 10000)); /* the pause is over */
    assert_true(ok);
    assert_true(ended);
    int rc = dh_thread_join(&t, 1000);
    int64_t took = t.ended_ms - t0;
    print_message("queued waiter, wait 2000 ms, server paused: %s after %lld ms\n",
                  dlock_strerror(rc), (long long)took);
    dh_assert_rc(rc, DLOCK_ETIMEDOUT);
    assert_true(took >= 2000 && took < 4500); /* each round trip could take 20 s */
    dlock_release(held);
    dlock_client_close(h);
    dlock_client_close(w);
}

static int64_t keys_matching(const dh_redis *r, const char *pattern)
{
    redisReply *rep = dh_cmd(r, 0, "KEYS %s", pattern);
    int64_t n = rep && rep->type == REDIS_REPLY_ARRAY ? (int64_t)rep->elements : -1;
    freeReplyObject(rep);
    return n;
}

/* 9. An attempt whose reply is lost after the server acted on it leaves
 * nothing behind: a first attempt that timed out gives back its queue
 * entry, and a Redlock attempt that failed gives back its grants on every
 * node, also on the one whose reply was lost. */
static void test_lost_reply_leaves_nothing(void **state)
{
    (void)state;
    char ho[64], wo[64];
    dlock_client *h = client("lost-h", ho), *w = client("lost-w", wo);
    dlock_lock *held, *l;
    dh_assert_rc(dlock_acquire(&held, h, "wf:lostreply", NULL), 0);
    dlock__faults f = { 0 };
    f.stall_after_reads = 2; /* the handshake is answered, nothing after it */
    dlock__client_set_faults(w, &f);
    dlock_lock_opts o = DLOCK_LOCK_OPTS_INIT;
    o.wait_ms = 500;
    int rc = dlock_acquire(&l, w, "wf:lostreply", &o);
    assert_true(rc == DLOCK_ETIMEDOUT || rc == DLOCK_ECONN);
    qarg q = { h, "wf:lostreply", 0 };
    assert_true(dh_wait_until(queue_empty, &q, 100)); /* gone at once, not after its life */
    dlock__client_set_faults(w, NULL);
    dh_assert_rc(dlock_release(held), 0);
    dlock_client_close(w);
    dlock_client_close(h);

    /* Redlock over three servers: A is held by someone else, C's replies
     * are lost: B's grant and C's must both be given back. */
    dh_redis *rs[3];
    char url[512] = "";
    for (int i = 0; i < 3; i++) {
        assert_non_null(rs[i] = dh_redis_start(NULL));
        snprintf(url + strlen(url), sizeof url - strlen(url), "%s%s", i ? "," : "", rs[i]->url);
    }
    dlock_client *a = dh_client(rs[0]->url, ho), *red = dh_client(url, wo);
    assert_non_null(a);
    assert_non_null(red);
    dh_assert_rc(dlock_acquire(&held, a, "wf:red", NULL), 0); /* on A only */
    dlock__faults fc = { 0 };
    fc.stall_after_reads = 2;
    fc.node_mask = 1u << 2;
    dlock__client_set_faults(red, &fc);
    dh_assert_rc(dlock_try_acquire(&l, red, "wf:red", NULL), DLOCK_EBUSY);
    assert_int_equal(keys_matching(rs[1], "*wf:red}:lock"), 0);
    int64_t t0 = dh_now_ms();
    while (keys_matching(rs[2], "*wf:red}:lock") != 0 && dh_now_ms() - t0 < 2000)
        dh_wait_until(queue_empty, &q, 20); /* the give-back may still be on its way */
    assert_int_equal(keys_matching(rs[2], "*wf:red}:lock"), 0);
    dlock__client_set_faults(red, NULL);
    dh_assert_rc(dlock_release(held), 0);
    dlock_client_close(red);
    dlock_client_close(a);
    for (int i = 0; i < 3; i++)
        dh_redis_stop(rs[i]);
}

/* 10. A semaphore grant does not scan its holders: with 20 000 permits
 * held, one more grant costs the server well under a millisecond. */
static int64_t last_grant_us(void)
{
    redisReply *r = dh_cmd(srv, 0, "SLOWLOG GET 20");
    int64_t us = -1;
    for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        redisReply *e = r->element[i];
        if (e->elements >= 4 && e->element[3]->elements > 0 &&
            strcasecmp(e->element[3]->element[0]->str, "evalsha") == 0 &&
            e->element[2]->integer > us)
            us = e->element[2]->integer;
    }
    freeReplyObject(r);
    return us;
}

static void test_semaphore_grant_cost(void **state)
{
    (void)state;
    enum { N = 20000 };
    char ho[64];
    dlock_client *c = client("sem-big", ho);
    dlock_lock_opts o = DLOCK_LOCK_OPTS_INIT;
    o.auto_renew = 0;
    o.ttl_ms = 600000;
    dlock_lock **ls = calloc(N + 1, sizeof *ls);
    assert_non_null(ls);
    for (int i = 0; i < N; i++)
        dh_assert_rc(dlock_sem_acquire(&ls[i], c, "wf:bigsem", N + 10, &o), 0);
    assert_int_equal(dh_cmd_ok(srv, 0, "CONFIG SET slowlog-log-slower-than 0"), 0);
    assert_int_equal(dh_cmd_ok(srv, 0, "SLOWLOG RESET"), 0);
    dh_assert_rc(dlock_sem_acquire(&ls[N], c, "wf:bigsem", N + 10, &o), 0);
    int64_t us = last_grant_us();
    assert_int_equal(dh_cmd_ok(srv, 0, "CONFIG SET slowlog-log-slower-than 10000"), 0);
    print_message("semaphore grant with %d holders: %lld us of server time (slot %d)\n", N,
                  (long long)us, dlock_lock_slot(ls[N]));
    assert_true(us >= 0 && us < 1000);
    assert_int_equal(dlock_lock_slot(ls[N]), N);
    for (int i = 0; i <= N; i++)
        dlock_release(ls[i]);
    free(ls);
    dlock_client_close(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        dh_unit_test(test_stale_signal_never_grants),
        dh_unit_test(test_stale_signal_in_list_never_grants),
        dh_unit_test(test_stalled_waiter_leaves_no_ghost),
        dh_unit_test(test_stalled_reader_never_with_writer),
        dh_unit_test(test_close_races_acquire),
        dh_unit_test(test_dead_waiter_and_dead_holder),
        dh_unit_test(test_multi_lock_not_starved),
        dh_unit_test(test_wait_budget_with_stopped_server),
        dh_unit_test(test_wait_budget_once_queued),
        dh_unit_test(test_lost_reply_leaves_nothing),
        dh_unit_test(test_semaphore_grant_cost),
    };
    return cmocka_run_group_tests_name("wait_faults", tests, group_setup, dh_group_teardown);
}
