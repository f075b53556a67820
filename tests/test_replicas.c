/*
 * test_replicas.c — replicated deployments: a grant counts only once the
 * master's replicas acknowledged it (WAIT); a Sentinel failover and a
 * Cluster failover keep an acknowledged lock held, with no second holder;
 * TLS reaches sentinels and every cluster node (TLS-only servers).
 *
 * Design. Every server is a real redis-server (or redis-server --sentinel)
 * on a free loopback port; TLS ones use throwaway certificates made here
 * with openssl and have no plain port at all, so they are started with
 * dh_spawn and found ready through dlock itself (rediss:// opens). Failovers
 * are real: SENTINEL FAILOVER, and SIGKILL of a cluster master with a short
 * cluster-node-timeout. Contenders that must run across a failover are
 * processes forked before the test process has any thread (dh_fork), and
 * check at each acquisition that the server names them while their handle
 * is valid; a fenced counter in a separate store catches a second holder
 * (a lost update). Waits are bounded polls of the servers' own state.
 */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli_runner.h"
#include "client.h"
#include "harness.h"

/* built twice, each build running part of the tests (see main) */
#pragma GCC diagnostic ignored "-Wunused-function"

static char certs[256]; /* ca.pem server.pem server.key other.pem */

/* A shell command line (openssl, mkdir) with a 60 s bound; 0 on success. */
static int sh(const char *cmd)
{
    return dh_sh(cmd, 60000);
}

static int group_setup(void **state)
{
    (void)state;
    if (dh_tmpfile(certs, sizeof certs, "certs") != 0)
        return -1;
    char cmd[2048];
    snprintf(
        cmd, sizeof cmd,
        "mkdir -p '%s' && cd '%s' && "
        "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=dlock-ca -keyout ca.key "
        "  -out ca.pem 2>/dev/null && "
        "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=other-ca -keyout other.key "
        "  -out other.pem 2>/dev/null && "
        "openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key "
        "  -out server.csr 2>/dev/null && "
        "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > san.ext && "
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
        "  -extfile san.ext -out server.pem 2>/dev/null",
        certs, certs);
    return sh(cmd);
}

static int group_teardown(void **state)
{
    (void)state;
    dh_cleanup();
    return 0;
}

/* A loopback port free right now (bound, read, released), at most 55535:
 * a cluster node also listens on the port + 10000. */
static int free_port(void)
{
    for (int tries = 0; tries < 100; tries++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = { .sin_family = AF_INET,
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof sa;
        int port = -1;
        if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
            getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
            port = ntohs(sa.sin_port);
        if (fd >= 0)
            close(fd);
        if (port > 0 && port <= 55535)
            return port;
    }
    return -1;
}

/* ------------------------------------------------------- TLS-only servers */

typedef struct tls_srv {
    dh_proc *p;
    int port;
    char dir[256];
} tls_srv;

static char cacert_q[400]; /* "?cacert=<ca.pem>" */

static int opens(void *arg)
{
    dlock_client *c = NULL;
    if (dlock_client_open(&c, arg, NULL) != 0)
        return 0;
    dlock_client_close(c);
    return 1;
}

/* A redis-server (or sentinel, with conf text) listening only on TLS. */
static tls_srv *start_tls(const char *const *extra, const char *sentinel_conf)
{
    static int seq;
    tls_srv *s = calloc(1, sizeof *s);
    assert_non_null(s);
    char name[32];
    snprintf(name, sizeof name, "tls-%d", seq++);
    assert_int_equal(dh_tmpfile(s->dir, sizeof s->dir, name), 0);
    char mk[300];
    snprintf(mk, sizeof mk, "mkdir -p '%s'", s->dir);
    assert_int_equal(sh(mk), 0);
    s->port = free_port();
    char port[16], cert[300], key[300], ca[300], conf[300];
    snprintf(port, sizeof port, "%d", s->port);
    snprintf(cert, sizeof cert, "%s/server.pem", certs);
    snprintf(key, sizeof key, "%s/server.key", certs);
    snprintf(ca, sizeof ca, "%s/ca.pem", certs);
    const char *argv[48] = { "redis-server" };
    int a = 1;
    if (sentinel_conf) {
        snprintf(conf, sizeof conf, "%s/sentinel.conf", s->dir);
        assert_int_equal(dh_write_file(conf, sentinel_conf), 0);
        argv[a++] = conf;
        argv[a++] = "--sentinel";
    }
    /* clang-format off */
    const char *common[] = {
        "--port", "0", "--tls-port", port, "--tls-cert-file", cert, "--tls-key-file", key,
        "--tls-ca-cert-file", ca, "--tls-auth-clients", "no", "--tls-replication", "yes",
        "--bind", "127.0.0.1", "--dir", s->dir, NULL,
    };
    /* clang-format on */
    const char *data[] = { "--save", "",  "--appendonly", "no", "--repl-diskless-sync-delay",
                           "0",      NULL }; /* not for a sentinel */
    for (int i = 0; common[i]; i++)
        argv[a++] = common[i];
    for (int i = 0; !sentinel_conf && data[i]; i++)
        argv[a++] = data[i];
    for (int i = 0; extra && extra[i]; i++)
        argv[a++] = extra[i];
    argv[a] = NULL;
    s->p = dh_spawn(argv, NULL);
    assert_non_null(s->p);
    if (!sentinel_conf) {
        char url[600];
        snprintf(url, sizeof url, "rediss://127.0.0.1:%d%s", s->port, cacert_q);
        if (!dh_wait_until(opens, url, 30000)) {
            char out[4096], err[1024];
            dh_proc_output(s->p, out, sizeof out, err, sizeof err);
            fail_msg("TLS redis-server on port %d did not come up: %s %s", s->port, out, err);
        }
    }
    return s;
}

static void stop_tls(tls_srv *s)
{
    dh_proc_free(s->p);
    free(s);
}

/* ---------------------------------------------------- Sentinel deployments */

typedef struct sentinels {
    dh_proc *plain[3];
    tls_srv *tls[3];
    int port[3];
    char url[1024];
} sentinels;

/* Three sentinels watching master "mymaster" at 127.0.0.1:master_port. */
static void start_sentinels(sentinels *s, int master_port, int tls)
{
    char scheme[32];
    snprintf(scheme, sizeof scheme, "%s", tls ? "rediss-sentinel://" : "redis-sentinel://");
    snprintf(s->url, sizeof s->url, "%s", scheme);
    for (int i = 0; i < 3; i++) {
        char text[1024];
        if (tls) {
            snprintf(text, sizeof text,
                     "sentinel monitor mymaster 127.0.0.1 %d 2\n"
                     "sentinel down-after-milliseconds mymaster 1000\n"
                     "sentinel failover-timeout mymaster 4000\n",
                     master_port);
            s->tls[i] = start_tls(NULL, text);
            s->port[i] = s->tls[i]->port;
        } else {
            s->port[i] = free_port();
            char conf[256], name[32];
            snprintf(name, sizeof name, "sentinel-%d-%d.conf", master_port, i);
            assert_int_equal(dh_tmpfile(conf, sizeof conf, name), 0);
            snprintf(text, sizeof text,
                     "port %d\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 %d 2\n"
                     "sentinel down-after-milliseconds mymaster 1000\n"
                     "sentinel failover-timeout mymaster 4000\n",
                     s->port[i], master_port);
            assert_int_equal(dh_write_file(conf, text), 0);
            const char *argv[] = { "redis-server", conf, "--sentinel", NULL };
            assert_non_null(s->plain[i] = dh_spawn(argv, NULL));
        }
        size_t len = strlen(s->url);
        snprintf(s->url + len, sizeof s->url - len, "%s127.0.0.1:%d", i ? "," : "", s->port[i]);
    }
    size_t len = strlen(s->url);
    snprintf(s->url + len, sizeof s->url - len, "/mymaster%s", tls ? cacert_q : "");
}

static void stop_sentinels(sentinels *s)
{
    for (int i = 0; i < 3; i++) {
        dh_proc_free(s->plain[i]);
        if (s->tls[i])
            stop_tls(s->tls[i]);
    }
}

/* Close the client c, stop the sentinels s, the replica and the master. */
static void stop_deployment(dlock_client *c, sentinels *s, dh_redis *replica, dh_redis *master)
{
    dlock_client_close(c);
    stop_sentinels(s);
    dh_redis_stop(replica);
    dh_redis_stop(master);
}

/* ------------------------------------------------- fenced contenders */

typedef struct fenced {
    atomic_int stop, acquisitions, not_me, rejected_valid, errors;
} fenced;

/* With $DLOCK_LOG set, a contender's library log goes to stderr. */
static void contender_log(int level, const char *msg, void *arg)
{
    (void)arg;
    fprintf(stderr, "contender[%d] %lld level %d: %s\n", (int)getpid(), (long long)dh_now_ms(),
            level, msg);
}

/* A contender process: until told to stop, take the lock, check with the
 * server that it holds it, increment the store's counter with its token. */
static void contender(fenced *sh, int go_fd, const char *url, const dh_redis *store, int id)
{
    char b;
    if (read(go_fd, &b, 1) != 1) /* the parent says go (or is gone) */
        _exit(0);
    char owner[64];
    snprintf(owner, sizeof owner, "rep-%d-%d", id, (int)getpid());
    dlock_client_opts co = DLOCK_CLIENT_OPTS_INIT;
    co.owner_id = owner;
    if (getenv("DLOCK_LOG")) {
        co.log_fn = contender_log;
        co.log_level = DLOCK_LOG_DEBUG;
    }
    dlock_client *c = NULL;
    redisContext *st = dh_connect(store, 0);
    if (dlock_client_open(&c, url, &co) != 0 || !st)
        _exit(2);
    while (!atomic_load(&sh->stop)) {
        dlock_lock_opts o = DLOCK_LOCK_OPTS_INIT;
        o.ttl_ms = 3000;
        o.wait_ms = 3000;
        dlock_lock *l;
        if (dlock_acquire(&l, c, "rep:store", &o) != 0) {
            atomic_fetch_add(&sh->errors, 1); /* e.g. not acknowledged mid-failover */
            continue;
        }
        atomic_fetch_add(&sh->acquisitions, 1);
        dlock_info info;
        if (dlock_inspect(&info, c, "rep:store") == 0 &&
            (!info.held || strcmp(info.owner, owner)) && dlock_is_held(l)) {
            atomic_fetch_add(&sh->not_me, 1);
            fprintf(stderr,
                    "contender[%d] %lld: holds token %llu, the server names %s (token %llu)\n",
                    (int)getpid(), (long long)dh_now_ms(),
                    (unsigned long long)dlock_lock_fencing_token(l),
                    info.held ? info.owner : "nobody", (unsigned long long)info.fencing_token);
        }
        long long v = dh_store_counter(st);
        usleep(2000); /* work between the read and the write: widens the window */
        if (dlock_is_held(l) && !dh_store_write(st, dlock_lock_fencing_token(l), v + 1) &&
            dlock_is_held(l)) {
            atomic_fetch_add(&sh->rejected_valid, 1);
            redisReply *fr = redisCommand(st, "GET fence");
            fprintf(stderr, "contender[%d] %lld: REJECTED token %llu, store fence %s\n",
                    (int)getpid(), (long long)dh_now_ms(),
                    (unsigned long long)dlock_lock_fencing_token(l), fr && fr->str ? fr->str : "?");
            freeReplyObject(fr);
        }
        dlock_release(l);
    }
    dlock_client_close(c);
    redisFree(st);
    _exit(0);
}

typedef struct role_arg {
    const dh_redis *srv;
    const char *role;
    int with_replica; /* a master: and a replica connected to it */
} role_arg;

static int has_role(void *arg)
{
    role_arg *a = arg;
    redisReply *r = dh_cmd(a->srv, 0, "ROLE");
    int ok = r && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
             strcmp(r->element[0]->str, a->role) == 0;
    if (ok && a->with_replica)
        ok = r->elements >= 3 && r->element[2]->elements >= 1;
    freeReplyObject(r);
    return ok;
}

/* ------------------------------------------------ replica acknowledgement */

static int64_t last_error;

static int renew_failing(void *arg)
{
    return dlock_lock_renew_error(arg) != 0;
}

typedef struct {
    dlock_client *c;
    uint64_t want;
} renewals_arg;

/* The client's watchdog made at least `want` renewals. */
static int renewed_to(void *arg)
{
    renewals_arg *a = arg;
    dlock_client_stats st;
    return dlock_stats(&st, a->c) == 0 && st.renewals >= a->want;
}

static int renew_ok(void *arg)
{
    return dlock_lock_renew_error(arg) == 0;
}

/* One attempt (no wait) at key through c while the master's one replica
 * does not acknowledge (stopped, or not synchronised yet): it must fail
 * with DLOCK_EQUORUM saying "0 of the 1 replicas" and leave the key not
 * held. The outcome is printed after `what`; returns how long the attempt
 * took (ms). */
static int64_t expect_no_ack(dlock_client *c, const char *key, const char *what)
{
    dlock_lock_opts once = DLOCK_LOCK_OPTS_INIT;
    once.wait_ms = 0;
    dlock_lock *l;
    int64_t t0 = dh_now_ms();
    int rc = dlock_acquire(&l, c, key, &once);
    int64_t took = dh_now_ms() - t0;
    print_message("%s: %s after %lld ms: %s\n", what, dlock_strerror(rc), (long long)took,
                  dlock_last_errmsg());
    dh_assert_rc(rc, DLOCK_EQUORUM);
    assert_non_null(strstr(dlock_last_errmsg(), "0 of the 1 replicas"));
    dlock_info info;
    dh_assert_rc(dlock_inspect(&info, c, key), 0);
    assert_int_equal(info.held, 0); /* given back */
    return took;
}

/* A master and a replica of it (into *replica), once the master lists
 * the replica as connected (ROLE). Returns the master. */
static dh_redis *start_replicated(dh_redis **replica)
{
    dh_redis *master = dh_redis_start(NULL);
    assert_non_null(master);
    *replica = dh_replica_start(master);
    assert_non_null(*replica);
    role_arg ready = { master, "master", 1 };
    assert_true(dh_wait_until(has_role, &ready, 10000));
    return master;
}

/* A deployment whose replica comes after the client: a master (extra
 * arguments margs) watched by sentinels (into s, once they answer), a
 * client of them with owner id made from tag (into owner, 64 bytes) whose
 * first grant, on first_key, comes while the master has no replica
 * (nothing to wait for), and then a replica of the master. The master and
 * the replica go into *master and *replica; returns the client. */
static dlock_client *replica_after_client(sentinels *s, dh_redis **master, dh_redis **replica,
                                          const char *const *margs, const char *tag, char *owner,
                                          const char *first_key)
{
    *master = dh_redis_start(margs);
    assert_non_null(*master);
    start_sentinels(s, (*master)->port, 0);
    assert_true(dh_wait_until(opens, s->url, 20000));
    dh_owner(owner, 64, tag);
    dlock_client *c = dh_client(s->url, owner);
    assert_non_null(c);
    dlock_lock *l;
    dh_assert_rc(dlock_acquire(&l, c, first_key, NULL), 0);
    dh_assert_rc(dlock_release(l), 0);
    *replica = dh_replica_start(*master);
    assert_non_null(*replica);
    return c;
}

/* Release l once its key is on the replica too, in owner's name. */
static void release_once_replicated(dlock_lock *l, const dh_redis *replica, const char *owner)
{
    char name[256];
    assert_int_equal(dh_find_key(name, sizeof name, replica, 0, dlock_lock_key(l), owner), 1);
    dh_assert_rc(dlock_release(l), 0);
}

/* A grant counts only once a replica has it: with the only replica
 * stopped, an acquisition fails saying so and leaves nothing held; asking
 * for more replicas than there are is a clear failure (library and CLI);
 * a renewal not acknowledged is retried until the replica is back. */
static void test_grant_needs_replica_ack(void **state)
{
    (void)state;
    dh_redis *replica, *master = start_replicated(&replica);

    char owner[64];
    dh_owner(owner, sizeof owner, "ack");
    dlock_client *c = dh_client(master->url, owner);
    assert_non_null(c);
    dlock_lock *l;
    dh_assert_rc(dlock_acquire(&l, c, "ack:one", NULL), 0);
    release_once_replicated(l, replica, owner);

    /* the replica stops: nothing can be acknowledged */
    assert_int_equal(dh_redis_pause(replica), 0);
    last_error = expect_no_ack(c, "ack:two", "grant with the replica stopped");
    dlock_lock_opts once = DLOCK_LOCK_OPTS_INIT;
    once.wait_ms = 0;
    /* a user whose ACL refuses INFO: the replica is found through ROLE */
    assert_int_equal(dh_cmd_ok(master, 0, "ACL SETUSER roleonly on >pw ~* &* +@all -info"), 0);
    char role_url[128];
    snprintf(role_url, sizeof role_url, "redis://roleonly:pw@127.0.0.1:%d", master->port);
    dlock_client *ro = dh_client(role_url, owner);
    assert_non_null(ro);
    dh_assert_rc(dlock_acquire(&l, ro, "ack:role", &once), DLOCK_EQUORUM);
    assert_non_null(strstr(dlock_last_errmsg(), "0 of the 1 replicas"));
    dlock_client_close(ro);

    /* a renewal not acknowledged is retried, and the lock kept */
    assert_int_equal(dh_redis_resume(replica), 0);
    dlock_lock_opts o = DLOCK_LOCK_OPTS_INIT;
    o.ttl_ms = 3000;
    dh_assert_rc(dlock_acquire(&l, c, "ack:renew", &o), 0);
    assert_int_equal(dh_redis_pause(replica), 0);
    assert_true(dh_wait_until(renew_failing, l, 2000)); /* renewed every second */
    int err = dlock_lock_renew_error(l);
    assert_int_equal(dh_redis_resume(replica), 0);
    print_message("renewal with the replica stopped: %s (retried)\n", dlock_strerror(err));
    dh_assert_rc(err, DLOCK_EQUORUM);
    assert_true(dh_wait_until(renew_ok, l, 3000)); /* acknowledged again: kept */
    assert_true(dlock_is_held(l));
    dh_assert_rc(dlock_release(l), 0);
    dlock_client_close(c);

    /* more replicas than there are: a clear failure, nothing held */
    char url[128];
    snprintf(url, sizeof url, "%s?replicas=2", master->url);
    c = dh_client(url, owner);
    assert_non_null(c);
    dh_assert_rc(dlock_acquire(&l, c, "ack:three", &once), DLOCK_EQUORUM);
    assert_non_null(strstr(dlock_last_errmsg(), "of the 2 replicas"));
    dlock_info info;
    dh_assert_rc(dlock_inspect(&info, c, "ack:three"), 0);
    assert_int_equal(info.held, 0);
    dlock_client_close(c);
    int st2 = dh_cli("-u", url, "run", "--no-wait", "ack:cli", "--", "true");
    dh_cli_expect(st2, 69, "run asking for 2 replicas of 1");
    assert_non_null(strstr(dh_err, "replicas"));
    dh_redis_stop(replica);
    dh_redis_stop(master);
}

/* A replica that attaches after the client connected: the first grant
 * after it attached counts only with its acknowledgement (the round's ROLE
 * sees it even though the WAIT was sent for the replicas known before), so
 * with that replica stopped the grant fails and nothing is held. */
static void test_replica_attached_later(void **state)
{
    (void)state;
    sentinels s = { 0 };
    dh_redis *master, *replica;
    char owner[64];
    dlock_client *c = replica_after_client(&s, &master, &replica, NULL, "late", owner, "late:one");
    role_arg listed = { master, "master", 1 }; /* the master counts it (ROLE lists it) */
    assert_true(dh_wait_until(has_role, &listed, 10000));
    assert_int_equal(dh_redis_pause(replica), 0);
    expect_no_ack(c, "late:two", "first grant after a replica attached, the replica stopped");
    assert_int_equal(dh_redis_resume(replica), 0);
    dlock_lock_opts once = dh_opts(0, 0);
    dlock_lock *l;
    dh_assert_rc(dlock_acquire(&l, c, "late:two", &once), 0);
    release_once_replicated(l, replica, owner);
    stop_deployment(c, &s, replica, master);
}

/* The master's INFO counts a replica that asked to synchronise (ROLE lists
 * it only once its first full synchronisation is over). */
static int info_counts_replica(void *arg)
{
    char buf[4096] = "";
    return dh_cmd_str(buf, sizeof buf, arg, 0, "INFO replication") > 0 &&
           strstr(buf, "connected_slaves:1") != NULL;
}

/* A replica in its first full synchronisation is a replica: ROLE does not
 * list it until it is online, but a failover may promote it as soon as it
 * loaded its snapshot, without what its master wrote after the snapshot
 * (seen in a Sentinel failover: grants counted with nothing to wait for,
 * then the replica promoted without them, tokens going back). With the
 * synchronisation held back (repl-diskless-sync-delay), a grant counts only
 * with the replica's acknowledgement: for a client that knew the master
 * without a replica (its rounds keep the count current) and for one that
 * connects now; nothing is left held. Once the replica is in sync, grants
 * are acknowledged and the replica has them. */
static void test_replica_in_full_sync(void **state)
{
    (void)state;
    const char *margs[] = { "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "600",
                            NULL };
    sentinels s = { 0 };
    dh_redis *master, *replica;
    char owner[64];
    dlock_client *c = replica_after_client(&s, &master, &replica, margs, "sync", owner, "sync:one");
    assert_true(dh_wait_until(info_counts_replica, master, 10000));
    role_arg listed = { master, "master", 1 };
    assert_false(has_role(&listed)); /* ROLE does not list it yet */
    expect_no_ack(c, "sync:two", "grant while the only replica synchronises");
    dlock_lock_opts once = dh_opts(0, 0);
    dlock_lock *l;
    dlock_client *late = dh_client(s.url, owner); /* its handshake sees the replica too */
    assert_non_null(late);
    dh_assert_rc(dlock_acquire(&l, late, "sync:three", &once), DLOCK_EQUORUM);
    dlock_client_close(late);

    /* the synchronisation goes on: grants are acknowledged again */
    assert_int_equal(dh_cmd_ok(master, 0, "CONFIG SET repl-diskless-sync-delay 0"), 0);
    assert_true(dh_wait_until(has_role, &listed, 20000));
    dlock_lock_opts o = DLOCK_LOCK_OPTS_INIT;
    o.wait_ms = 10000; /* the replica streams from its next acknowledgement on */
    dh_assert_rc(dlock_acquire(&l, c, "sync:two", &o), 0);
    release_once_replicated(l, replica, owner);
    stop_deployment(c, &s, replica, master);
}

/* ------------------------------------------------------------- Sentinel */

/* SENTINEL FAILOVER accepted: a sentinel refuses it (NOGOODSLAVE) until it
 * has the replica's own INFO, which it asks for some time after the master
 * named it. */
static int failover_started(void *arg)
{
    const sentinels *s = arg;
    redisContext *c = redisConnect("127.0.0.1", s->port[0]);
    redisReply *r = c && !c->err ? redisCommand(c, "SENTINEL FAILOVER mymaster") : NULL;
    int ok = r && r->type == REDIS_REPLY_STATUS;
    if (r && !ok)
        print_message("SENTINEL FAILOVER: %s (asking again)\n", r->str ? r->str : "?");
    freeReplyObject(r);
    if (c)
        redisFree(c);
    static atomic_int never;
    if (!ok)
        dh_wait_until(dh_flag_set, &never, 200); /* a pause before asking again */
    return ok;
}

static void failover(const sentinels *s)
{
    assert_true(dh_wait_until(failover_started, (void *)s, 30000));
}

/* What a client's log said: a master replaced while a call was on the wire. */
static atomic_int saw_stale, saw_switch;
static void stale_log(int level, const char *msg, void *arg)
{
    (void)level;
    (void)arg;
    if (strstr(msg, "no longer the master (failover)"))
        atomic_store(&saw_stale, 1);
    if (strstr(msg, "is now "))
        atomic_store(&saw_switch, 1);
}

static char stale_owner[64];

/* The server arg has stale:key in stale_owner's name. */
static int key_on(void *arg)
{
    char name[256];
    return dh_find_key(name, sizeof name, arg, 0, "stale:key", stale_owner) == 1;
}

/* Every sentinel could promote the replica now (dh_sentinel_replica_ready),
 * so a SENTINEL FAILOVER is not refused for want of it. */
static int replica_known(void *arg)
{
    const sentinels *s = arg;
    for (int i = 0; i < 3; i++)
        if (!dh_sentinel_replica_ready(s->port[i], "mymaster"))
            return 0;
    return 1;
}

static int switched(void *arg)
{
    (void)arg;
    return atomic_load(&saw_switch);
}

typedef struct slow_acquire {
    dlock_client *c;
    dlock_lock *l;
    int rc;
} slow_acquire;

static int acquire_slowly(void *arg)
{
    slow_acquire *a = arg;
    dlock_lock_opts o = DLOCK_LOCK_OPTS_INIT;
    o.wait_ms = 0;
    o.auto_renew = 0;
    a->rc = dlock_acquire(&a->l, a->c, "stale:key", &o);
    return a->rc;
}

/* An answer from a master the Sentinels replaced while the call was on
 * the wire never counts: the call goes again to the new master. The
 * master's replies reach the client 5 s late (the test transport's delay),
 * a SENTINEL FAILOVER happens meanwhile, and the client's watcher hears of
 * it before the old master's answer arrives. The acquisition then counts
 * only through the new master (its log says the old one was no longer the
 * master), which holds the lock in the client's name. */
static void test_answer_from_replaced_master(void **state)
{
    (void)state;
    dh_redis *b, *a = start_replicated(&b);
    sentinels s = { 0 };
    start_sentinels(&s, a->port, 0);
    assert_true(dh_wait_until(opens, s.url, 15000));
    char *owner = stale_owner;
    dlock_client_opts co = dh_client_opts(owner, "stale");
    co.connect_timeout_ms = 20000;
    co.command_timeout_ms = 20000;
    co.log_fn = stale_log;
    co.log_level = DLOCK_LOG_INFO;
    atomic_store(&saw_stale, 0);
    atomic_store(&saw_switch, 0);
    dlock_client *c = dh_client_with(s.url, &co);
    assert_non_null(c);
    dlock_lock *warm;
    dh_assert_rc(dlock_acquire(&warm, c, "stale:warm", NULL), 0); /* scripts loaded */
    dh_assert_rc(dlock_release(warm), 0);
    assert_true(dh_wait_until(replica_known, &s, 30000));
    atomic_store(&saw_switch, 0); /* the look-up at open said "is now" too */
    dlock__faults f = { 0 };
    f.delay_ms = 5000;
    f.delay_from_write = 2; /* after the handshake */
    f.node_mask = 1u;       /* the master's connections; the watcher's are not delayed */
    dlock__client_set_faults(c, &f);
    static slow_acquire sa; /* static: outlives a failed test */
    memset(&sa, 0, sizeof sa);
    sa.c = c;
    static dh_thread t;
    memset(&t, 0, sizeof t);
    int64_t sent = dh_now_ms();
    dh_thread_start(&t, acquire_slowly, &sa);
    char name[256];
    assert_true(dh_wait_until(key_on, a, 5000)); /* granted by A; its answer is late */
    failover(&s);
    assert_true(dh_wait_until(switched, NULL, 20000));
    int64_t switch_ms = dh_now_ms() - sent;
    assert_true(switch_ms < 5000);     /* else A's answer came first: the test proves nothing */
    dlock__client_set_faults(c, NULL); /* new connections (to B) answer at once */
    int rc = dh_thread_join(&t, 40000);
    print_message("switch heard %lld ms after the call; acquired across it: %s; old master's "
                  "answer discarded: %d\n",
                  (long long)switch_ms, dlock_strerror(rc), atomic_load(&saw_stale));
    dh_assert_rc(rc, 0);
    assert_true(atomic_load(&saw_stale));
    assert_int_equal(dh_find_key(name, sizeof name, b, 0, "stale:key", owner), 1);
    dh_assert_rc(dlock_release(sa.l), 0);
    stop_deployment(c, &s, b, a);
}

/* Sentinel failovers under contention: 0 overlapping holds; a holder that
 * runs across the failovers keeps its lock (its command ends normally)
 * while a --no-wait contender is refused (75) the whole time. */
static void test_sentinel_failover_keeps_lock(void **state)
{
    (void)state;
    enum { PROCS = 3 };
    fenced *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(sh != MAP_FAILED);
    memset(sh, 0, sizeof *sh);
    dh_redis *store = dh_redis_start(NULL);
    dh_redis *a = dh_redis_start(NULL);
    assert_non_null(store);
    assert_non_null(a);
    dh_redis *b = dh_replica_start(a);
    assert_non_null(b);
    sentinels s = { 0 };
    start_sentinels(&s, a->port, 0);
    pid_t pids[PROCS];
    int go[2];
    assert_int_equal(pipe(go), 0);
    for (int i = 0; i < PROCS; i++) { /* before this process has threads */
        pids[i] = dh_fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            close(go[1]);
            contender(sh, go[0], s.url, store, i);
        }
    }
    close(go[0]);
    assert_true(dh_wait_until(opens, s.url, 15000));
    role_arg ra = { a, "master", 1 };
    assert_true(dh_wait_until(has_role, &ra, 10000));
    char gobytes[PROCS] = { 0 };
    assert_int_equal(write(go[1], gobytes, PROCS), PROCS);
    close(go[1]);

    /* the holder: renewals wait while a replica synchronises (after each
     * failover the old master does) and during a failover, so the TTL is
     * well above that and the grace well below the TTL. It holds once its command runs (the key on
     * the master is not enough: the grant counts once the replica
     * acknowledged it) */
    char started[256], script[300];
    assert_int_equal(dh_tmpfile(started, sizeof started, "holder-started"), 0);
    snprintf(script, sizeof script, "touch '%s' && exec sleep 60", started);
    dh_proc *holder = dh_cli_bg("-u", s.url, "run", "--ttl", "20s", "--grace", "3s", "rep:hold",
                                "--", "sh", "-c", script);
    assert_true(dh_wait_until(dh_file_exists, started, 20000));
    int refused = 0, probes = 0;
    const dh_redis *now_master = a, *now_replica = b;
    for (int f = 0; f < 2; f++) {
        failover(&s);
        const dh_redis *tmp = now_master;
        now_master = now_replica;
        now_replica = tmp;
        role_arg promoted = { now_master, "master", 1 }, demoted = { now_replica, "slave", 0 };
        int64_t until = dh_now_ms() + 20000;
        while (dh_now_ms() < until && !(has_role(&promoted) && has_role(&demoted))) {
            if (dh_proc_done(holder)) {
                dh_cli_capture(holder);
                fail_msg("the holder ended during the failover: %s", dh_err);
            }
            int st = dh_cli("-u", s.url, "run", "--no-wait", "rep:hold", "--", "true");
            probes++;
            refused += st == 75;
            if (st != 75 && st != 69) {
                char herr[4096];
                snprintf(herr, sizeof herr, "%.4000s", dh_err);
                const dh_redis *both[2] = { a, b };
                for (int i = 0; i < 2; i++) {
                    redisReply *ro = dh_cmd(both[i], 0, "ROLE");
                    redisReply *v = dh_cmd(both[i], 0, "GET dlock:{rep:hold}:lock");
                    redisReply *t = dh_cmd(both[i], 0, "PTTL dlock:{rep:hold}:lock");
                    print_message("%s (port %d): %s; key %s, pttl %lld\n", i ? "b" : "a",
                                  both[i]->port, ro && ro->elements ? ro->element[0]->str : "?",
                                  v && v->str ? v->str : "absent", t ? t->integer : -9);
                    freeReplyObject(ro);
                    freeReplyObject(v);
                    freeReplyObject(t);
                }
                dh_cli_capture(holder);
                fail_msg("failover %d: a contender got the held lock (exit %d: %s); the holder "
                         "says: %.4000s",
                         f + 1, st, herr, dh_err);
            }
        }
        assert_true(has_role(&promoted) && has_role(&demoted));
    }
    /* still held after both failovers: end it (SIGTERM goes to CMD) */
    dh_cli_expect(dh_cli("-u", s.url, "run", "--no-wait", "rep:hold", "--", "true"), 75,
                  "the held lock after two failovers");
    assert_int_equal(dh_proc_signal(holder, SIGTERM), 0);
    dh_cli_expect_proc(holder, 128 + SIGTERM, "the holder that ran across two failovers");
    assert_null(strstr(dh_err, "lost"));
    atomic_store(&sh->stop, 1);
    for (int i = 0; i < PROCS; i++) {
        int st;
        assert_int_equal(dh_waitpid(pids[i], &st, 30000), 1);
    }
    long long lost = dh_store_lost(store);
    print_message(
        "sentinel: 2 failovers; %d acquisitions (%d failed, e.g. unacknowledged), server "
        "named another holder %d, rejected while valid %d, lost updates %lld; holder kept "
        "its lock, contender refused %d of %d probes\n",
        atomic_load(&sh->acquisitions), atomic_load(&sh->errors), atomic_load(&sh->not_me),
        atomic_load(&sh->rejected_valid), lost, refused, probes);
    assert_int_equal(atomic_load(&sh->not_me), 0);
    assert_int_equal(atomic_load(&sh->rejected_valid), 0);
    assert_int_equal(lost, 0);
    assert_true(atomic_load(&sh->acquisitions) > 10);
    stop_sentinels(&s);
    dh_redis_stop(a);
    dh_redis_stop(b);
    dh_redis_stop(store);
    munmap(sh, sizeof *sh);
}

/* -------------------------------------------------------------- Cluster */

enum { CN = 6 };

/* Every live node of arg (CN of them, NULL: killed) says cluster_state:ok. */
static int cluster_nodes_ok(void *arg)
{
    return dh_cluster_ok(arg, CN);
}

static int link_up(void *arg)
{
    redisReply *r = dh_cmd(arg, 0, "INFO replication");
    int ok = r && r->type == REDIS_REPLY_STRING && strstr(r->str, "master_link_status:up");
    freeReplyObject(r);
    return ok;
}

static int lost_calls;
static void on_lost(dlock_lock *l, void *arg)
{
    (void)l;
    (void)arg;
    lost_calls++;
}

/* A cluster master is killed: its replica is promoted, the lock on its
 * slot survives (the holder renews through the failover) and a contender
 * is refused throughout. */
static void test_cluster_failover_keeps_lock(void **state)
{
    (void)state;
    const char *args[] = { "--cluster-enabled",
                           "yes",
                           "--cluster-config-file",
                           "nodes.conf",
                           "--cluster-node-timeout",
                           "1000",
                           "--repl-diskless-sync-delay",
                           "0",
                           NULL };
    dh_redis *n[CN];
    char hosts[CN][32];
    const char *argv[24] = { "redis-cli", "--cluster", "create" };
    int a = 3;
    for (int i = 0; i < CN; i++) {
        assert_non_null(n[i] = dh_redis_start(args));
        snprintf(hosts[i], sizeof hosts[i], "127.0.0.1:%d", n[i]->port);
        argv[a++] = hosts[i];
    }
    argv[a++] = "--cluster-replicas";
    argv[a++] = "1";
    argv[a++] = "--cluster-yes";
    argv[a] = NULL;
    char out[8192], err[2048];
    assert_int_equal(dh_run(argv, NULL, 60000, out, sizeof out, err, sizeof err), 0);
    assert_true(dh_wait_until(cluster_nodes_ok, n, 30000));
    char url[256];
    snprintf(url, sizeof url, "redis-cluster://%s,%s,%s", hosts[0], hosts[1], hosts[2]);
    char owner[64];
    dh_owner(owner, sizeof owner, "cl-hold");
    dlock_client *h = dh_client(url, owner), *x = dh_client(url, "cl-contender");
    assert_non_null(h);
    assert_non_null(x);
    dlock_lock_opts o = DLOCK_LOCK_OPTS_INIT;
    /* far longer than the failover (node timeout 1 s, then an election),
     * even on a loaded machine; renewed every 2 s, so renewals meet it */
    o.ttl_ms = 20000;
    o.renew_fraction = 0.1;
    o.on_lost = on_lost;
    dlock_lock *l, *y;
    dh_assert_rc(dlock_acquire(&l, h, "cl:hold", &o), 0);
    /* the master that has it */
    int victim = -1;
    char name[256];
    for (int i = 0; i < CN && victim < 0; i++) {
        role_arg ra = { n[i], "master", 0 };
        if (dh_find_key(name, sizeof name, n[i], 0, "cl:hold", owner) == 1 && has_role(&ra))
            victim = i;
    }
    assert_true(victim >= 0);
    /* its replica: the node whose ROLE names the victim's port */
    int heir = -1;
    for (int i = 0; i < CN && heir < 0; i++) {
        redisReply *r = dh_cmd(n[i], 0, "ROLE");
        if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 3 &&
            strcmp(r->element[0]->str, "slave") == 0 &&
            r->element[2]->type == REDIS_REPLY_INTEGER && r->element[2]->integer == n[victim]->port)
            heir = i;
        freeReplyObject(r);
    }
    assert_true(heir >= 0);
    /* a replica promotes itself only with recent data: let it sync first */
    assert_true(dh_wait_until(link_up, n[heir], 20000));
    /* the watchdog renews it, with the replica's acknowledgement, before
     * the kill (a renewal matches its WAIT to the node that answered) */
    renewals_arg ra = { h, 0 };
    dlock_client_stats st;
    dh_assert_rc(dlock_stats(&st, h), 0);
    ra.want = st.renewals + 2;
    assert_true(dh_wait_until(renewed_to, &ra, 15000));
    assert_int_equal(dlock_lock_renew_error(l), 0);
    int64_t killed = dh_now_ms();
    assert_int_equal(dh_redis_kill9(n[victim]), 0);
    dh_redis *dead = n[victim];
    n[victim] = NULL;
    role_arg promoted = { n[heir], "master", 0 };
    /* until the replica is promoted and the cluster whole, the lock stays
     * held and nobody else gets it */
    int refused = 0;
    while (dh_now_ms() - killed < 30000 && !(has_role(&promoted) && cluster_nodes_ok(n))) {
        int64_t t = dh_now_ms();
        int rc = dlock_try_acquire(&y, x, "cl:hold", NULL);
        if (rc == 0) {
            /* what each node has for the key, to tell how it happened */
            for (int i = 0; i < CN; i++) {
                char kh[256] = "", kc[256] = "";
                redisReply *ro = n[i] ? dh_cmd(n[i], 0, "ROLE") : NULL;
                int h1 = n[i] ? dh_find_key(kh, sizeof kh, n[i], 0, "cl:hold", owner) : -1;
                int c1 = n[i] ? dh_find_key(kc, sizeof kc, n[i], 0, "cl:hold", "cl-contender") : -1;
                print_message("node %d (port %d%s%s): %s; holder's key %s; contender's key %s\n", i,
                              n[i] ? n[i]->port : dead->port, i == heir ? ", heir" : "",
                              i == victim ? ", killed" : "",
                              ro && ro->elements ? ro->element[0]->str : "?",
                              h1 == 1 ? kh : "absent", c1 == 1 ? kc : "absent");
                freeReplyObject(ro);
            }
            fail_msg(
                "a contender got the held lock during the cluster failover, %lld ms after the kill "
                "(its attempt took %lld ms): holder token %llu (still held by its clock: %d), "
                "contender token %llu",
                (long long)(t - killed), (long long)(dh_now_ms() - t),
                (unsigned long long)dlock_lock_fencing_token(l), dlock_is_held(l),
                (unsigned long long)dlock_lock_fencing_token(y));
        }
        refused += rc == DLOCK_EBUSY;
    }
    if (!(has_role(&promoted) && cluster_nodes_ok(n))) {
        for (int i = 0; i < CN; i++) {
            if (!n[i])
                continue;
            redisReply *r = dh_cmd(n[i], 0, "CLUSTER INFO"), *ro = dh_cmd(n[i], 0, "ROLE");
            print_message("node %d (port %d%s): %s / %s\n", i, n[i]->port,
                          i == heir ? ", heir" : "",
                          r && r->str ? strstr(r->str, "cluster_state") : "?",
                          ro && ro->elements ? ro->element[0]->str : "?");
            freeReplyObject(r);
            freeReplyObject(ro);
        }
        fail_msg("the cluster did not recover from the failover");
    }
    int64_t healed = dh_now_ms() - killed;
    /* the holder renews on the promoted replica */
    dh_wait_until(renew_ok, l, 5000);
    print_message("cluster: master killed, whole again after %lld ms; holder still held: %d, renew "
                  "error now %d, lost %d; contender refused %d times\n",
                  (long long)healed, dlock_is_held(l), dlock_lock_renew_error(l), lost_calls,
                  refused);
    assert_true(dlock_is_held(l));
    assert_int_equal(lost_calls, 0);
    assert_int_equal(dlock_lock_renew_error(l), 0);
    dh_release_frees(l, x, "cl:hold");
    dlock_client_close(h);
    dlock_client_close(x);
    dh_redis_stop(dead);
    for (int i = 0; i < CN; i++)
        dh_redis_stop(n[i]);
}

/* ------------------------------------------------------------------ TLS */

/* The CLI's commands over a TLS deployment, and a wrong CA. */
static void cli_over(const char *url, const char *wrong_url, const char *key)
{
    dh_cli_expect(dh_cli("-u", url, "run", key, "--", "sh", "-c", "echo ran"), 0, "run over TLS");
    assert_non_null(strstr(dh_out, "ran"));
    dh_proc *holder = dh_cli_bg("-u", url, "run", "--ttl", "3s", key, "--", "sleep", "30");
    int64_t t0 = dh_now_ms();
    int st = 1;
    while (dh_now_ms() - t0 < 10000 && (st = dh_cli("-u", url, "status", key)) == 0 &&
           !strstr(dh_out, "held"))
        ;
    dh_cli_expect(st, 0, "status over TLS");
    assert_non_null(strstr(dh_out, "held"));
    dh_cli_expect(dh_cli("-u", url, "run", "--no-wait", key, "--", "true"), 75, "busy over TLS");
    dh_cli_expect(dh_cli("-u", url, "unlock", "--force", key), 0, "unlock --force over TLS");
    dh_cli_expect_proc(holder, 79, "the holder whose lock was removed");
    dh_cli_expect(dh_cli("-u", url, "elect", key, "--", "true"), 0, "elect over TLS");
    dh_cli_expect(dh_cli("-u", wrong_url, "status", key), 69, "a wrong CA");
    assert_non_null(strstr(dh_err, "certificate verify failed"));
}

static void test_tls_sentinel(void **state)
{
    (void)state;
    tls_srv *m = start_tls(NULL, NULL);
    char mport[16];
    snprintf(mport, sizeof mport, "%d", m->port);
    const char *rargs[] = { "--replicaof", "127.0.0.1", mport, NULL };
    tls_srv *r = start_tls(rargs, NULL);
    sentinels s = { 0 };
    start_sentinels(&s, m->port, 1);
    assert_true(dh_wait_until(opens, s.url, 20000));
    char wrong[1024];
    snprintf(wrong, sizeof wrong, "%s", s.url);
    char *q = strstr(wrong, "ca.pem");
    assert_non_null(q);
    memcpy(q, "other.pem", strlen("other.pem") + 1);
    cli_over(s.url, wrong, "tls:sentinel");
    stop_sentinels(&s);
    stop_tls(r);
    stop_tls(m);
}

static void test_tls_cluster(void **state)
{
    (void)state;
    tls_srv *n[3];
    const char *args[] = { "--cluster-enabled",
                           "yes",
                           "--cluster-config-file",
                           "nodes.conf",
                           "--cluster-node-timeout",
                           "2000",
                           "--tls-cluster",
                           "yes",
                           NULL };
    char hosts[3][32], ca[300];
    snprintf(ca, sizeof ca, "%s/ca.pem", certs);
    const char *argv[24] = { "redis-cli", "--tls", "--cacert", ca, "--cluster", "create" };
    int a = 6;
    for (int i = 0; i < 3; i++) {
        n[i] = start_tls(args, NULL);
        snprintf(hosts[i], sizeof hosts[i], "127.0.0.1:%d", n[i]->port);
        argv[a++] = hosts[i];
    }
    argv[a++] = "--cluster-yes";
    argv[a] = NULL;
    char out[8192], err[2048];
    assert_int_equal(dh_run(argv, NULL, 60000, out, sizeof out, err, sizeof err), 0);
    char url[1024], wrong[1024];
    snprintf(url, sizeof url, "rediss-cluster://%s,%s%s", hosts[0], hosts[1], cacert_q);
    assert_true(dh_wait_until(opens, url, 20000));
    snprintf(wrong, sizeof wrong, "%s", url);
    char *q = strstr(wrong, "ca.pem");
    memcpy(q, "other.pem", strlen("other.pem") + 1);
    /* wait for every slot to be served before using it */
    int64_t t0 = dh_now_ms();
    while (dh_now_ms() - t0 < 20000 &&
           dh_cli("-u", url, "run", "--no-wait", "tls:probe", "--", "true") != 0)
        ;
    cli_over(url, wrong, "tls:cluster");
    for (int i = 0; i < 3; i++)
        stop_tls(n[i]);
}

/* Built twice (CMakeLists.txt): test_replicas runs the deterministic tests,
 * test_failover (DLOCK_FAILOVER_RUNS) the failovers under contention, which
 * are fault runs: run once, and under TSan, but not under ASan. */
int main(void)
{
#ifndef DLOCK_FAILOVER_RUNS
    const struct CMUnitTest tests[] = {
        dh_unit_test(test_grant_needs_replica_ack),
        dh_unit_test(test_replica_attached_later),
        dh_unit_test(test_replica_in_full_sync),
        dh_unit_test(test_answer_from_replaced_master),
        dh_unit_test(test_tls_sentinel),
        dh_unit_test(test_tls_cluster),
    };
    const char *name = "replicas";
#else
    const struct CMUnitTest tests[] = {
        dh_unit_test(test_sentinel_failover_keeps_lock),
        dh_unit_test(test_cluster_failover_keeps_lock),
    };
    const char *name = "failover";
#endif
    int rc = group_setup(NULL);
    if (rc == 0)
        snprintf(cacert_q, sizeof cacert_q, "?cacert=%s/ca.pem", certs);
    rc = rc ? rc : cmocka_run_group_tests_name(name, tests, NULL, group_teardown);
    dh_cleanup();
    return rc;
}
