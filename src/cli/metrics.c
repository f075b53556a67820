/*
 * metrics.c — `dlock metrics [--listen HOST:PORT] [PATTERN]`: the locks
 * under the prefix in Prometheus' text exposition format (0.0.4), printed
 * once or served over HTTP as an exporter.
 *
 * What is exported is server-side state, the same for every observer: per
 * lock (a key of one kind, matching PATTERN) its holders, waiters and the
 * age of its oldest holder, for a semaphore also its permits in use; and
 * two totals, locks held and waiters. It comes from one scan.c snapshot
 * (SCAN, never KEYS), taken fresh for every print or request, so a scrape
 * shows the state at scrape time and nothing is cached between scrapes.
 * Every family has its # HELP and # TYPE lines, also when it has no
 * samples; per-lock samples carry key and kind labels (a mutex and a
 * semaphore may share a key name), label values escaped as the format
 * requires. The client's own counters (acquisitions, wait times) are not
 * here: they belong to the processes that take locks (see `dlock run
 * --metrics-file`).
 *
 * The exporter is libmicrohttpd (Debian's libmicrohttpd-dev) with one
 * internal polling thread: requests are answered one at a time, which is
 * plenty for scrapes every few seconds, and the library bounds what a
 * client can make it hold (16 KiB of request per connection, 32
 * connections, 10 s idle timeout). dlock opens the listening socket itself,
 * so HOST:PORT is resolved and reported the way the rest of the tool does
 * it, and port 0 means "any free port" (the address is printed on stderr).
 * Only GET and HEAD of /metrics answer 200; other paths 404, other methods
 * 405. A scrape that cannot reach Redis gets 503 with the reason, so
 * Prometheus records the target as down instead of a misleading zero.
 *
 * The main thread blocks the termination signals before any other thread
 * exists (child.c), starts the server and sleeps on the signalfd; SIGINT
 * or SIGTERM stop the server and end dlock with 0.
 */
#include "cli.h"
#include "child.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#define CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define HTTP_CONN_LIMIT 32
#define HTTP_TIMEOUT_S 10
#define HTTP_MEMORY_LIMIT (16 * 1024)

enum { M_LISTEN = 1, M_HELP };

static const cli_opt metrics_opts[] = {
    { "listen", 0, 1, M_LISTEN },
    { "help", 'h', 0, M_HELP },
    { NULL, 0, 0, 0 },
};

/* `dlock metrics --help`. */
static const char metrics_help[] =
    "Usage: dlock metrics [--listen HOST:PORT] [PATTERN]\n"
    "\n"
    "Print the state of the locks under the prefix whose key matches PATTERN (a\n"
    "glob, default '*') in the Prometheus text format, or serve it over HTTP on\n"
    "/metrics: an exporter for Prometheus to scrape. The state is read fresh from\n"
    "Redis each time (SCAN, so a large keyspace does not block the server).\n"
    "\n"
    "Metrics (gauges; per lock labelled key and kind=\"mutex\"|\"semaphore\"):\n"
    "  dlock_lock_holders                    holders now (readers and permits count\n"
    "                                        one each)\n"
    "  dlock_lock_waiters                    waiters queued\n"
    "  dlock_lock_oldest_holder_age_seconds  how long the longest holder has held it\n"
    "  dlock_semaphore_permits_in_use        permits in use (semaphores, label key)\n"
    "  dlock_locks_held                      locks with at least one holder\n"
    "  dlock_waiters                         waiters on all locks\n"
    "Only locks with a holder or a waiter exist as far as Redis is concerned, so a\n"
    "lock that is free and unwanted has no samples.\n"
    "\n"
    "Options:\n"
    "      --listen HOST:PORT  serve the metrics at http://HOST:PORT/metrics until\n"
    "                          SIGINT or SIGTERM (exit 0). HOST is an address or a\n"
    "                          name, [::1] for IPv6, empty for all interfaces; PORT 0\n"
    "                          picks a free port. The address is printed on stderr.\n"
    "                          Other paths answer 404; a scrape while Redis cannot be\n"
    "                          reached answers 503.\n"
    "  -h, --help              show this help\n"
    "\n"
    "Exit status: 0 success, 64 usage error, 69 Redis unreachable, authentication\n"
    "failed or a permission missing (at start), or the --listen address cannot be\n"
    "used, 70 internal error.\n"
    "\n"
    "Examples:\n"
    "  dlock metrics                            # all locks, once\n"
    "  dlock metrics 'payment:*'\n"
    "  dlock metrics --listen 127.0.0.1:9466    # http://127.0.0.1:9466/metrics\n";

void cli_usage_metrics(FILE *out)
{
    fputs(metrics_help, out);
}

/* One per-lock sample line "NAME{key="...",kind="..."} " (the value is the
 * caller's); `with_kind` 0 leaves the kind label out. */
static void put_sample_start(FILE *f, const char *name, const cli_lockrow *r, int with_kind)
{
    fprintf(f, "%s{key=\"", name);
    cli_put_prom_label(f, r->key);
    if (with_kind)
        fprintf(f, "\",kind=\"%s\"} ", cli_kind_name(r->kind));
    else
        fputs("\"} ", f);
}

/* The # HELP and # TYPE lines of a gauge family. */
static void put_family(FILE *f, const char *name, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
}

/* The whole exposition of snapshot `s` on f. Families are written one
 * after the other, each with all its samples, as the format requires. */
static void write_exposition(FILE *f, const cli_snapshot *s)
{
    size_t i;

    put_family(f, "dlock_lock_holders",
               "Holders of the lock now (readers and semaphore permits count one each).");
    for (i = 0; i < s->n; i++) {
        put_sample_start(f, "dlock_lock_holders", &s->rows[i], 1);
        fprintf(f, "%zu\n", s->rows[i].nholders);
    }
    put_family(f, "dlock_lock_waiters", "Waiters queued for the lock.");
    for (i = 0; i < s->n; i++) {
        put_sample_start(f, "dlock_lock_waiters", &s->rows[i], 1);
        fprintf(f, "%" PRId64 "\n", s->rows[i].waiters);
    }
    put_family(f, "dlock_lock_oldest_holder_age_seconds",
               "Time since the longest current holder of the lock acquired it.");
    for (i = 0; i < s->n; i++) {
        if (s->rows[i].nholders == 0)
            continue;
        put_sample_start(f, "dlock_lock_oldest_holder_age_seconds", &s->rows[i], 1);
        fprintf(f, "%" PRId64 ".%03d\n", s->rows[i].age_ms / 1000, (int)(s->rows[i].age_ms % 1000));
    }
    put_family(f, "dlock_semaphore_permits_in_use", "Permits of the semaphore held now.");
    for (i = 0; i < s->n; i++) {
        if (s->rows[i].kind != DLOCK_KIND_SEMAPHORE)
            continue;
        put_sample_start(f, "dlock_semaphore_permits_in_use", &s->rows[i], 0);
        fprintf(f, "%zu\n", s->rows[i].nholders);
    }
    put_family(f, "dlock_locks_held", "Locks under the prefix with at least one holder.");
    fprintf(f, "dlock_locks_held %zu\n", s->held);
    put_family(f, "dlock_waiters", "Waiters queued on all locks under the prefix.");
    fprintf(f, "dlock_waiters %" PRId64 "\n", s->waiters);
}

/* Take a snapshot and render it into a new buffer (*out, *len; free() it).
 * Returns 0 or the library's error code. */
static int render(char **out, size_t *len, dlock_client *client, const char *pattern)
{
    cli_snapshot s;
    FILE *f;
    int rc;

    *out = NULL;
    *len = 0;
    rc = cli_snapshot_take(&s, client, pattern);
    if (rc != 0)
        return rc;
    f = open_memstream(out, len);
    if (f == NULL) {
        cli_snapshot_free(&s);
        return DLOCK_ENOMEM;
    }
    write_exposition(f, &s);
    cli_snapshot_free(&s);
    if (fclose(f) != 0) {
        free(*out);
        *out = NULL;
        return DLOCK_ENOMEM;
    }
    return 0;
}

/* ------------------------------------------------------------ the server */

typedef struct exporter {
    dlock_client *client;
    const char *pattern;
} exporter;

/* Queue a response made of static text. */
static enum MHD_Result reply_static(struct MHD_Connection *conn, unsigned status, const char *text)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    enum MHD_Result r;

    if (resp == NULL)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    r = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return r;
}

/* A scrape that failed: 503 with the reason (also logged on stderr). */
static enum MHD_Result reply_error(struct MHD_Connection *conn, int rc)
{
    const char *detail = dlock_last_errmsg();
    char msg[600];
    struct MHD_Response *resp;
    enum MHD_Result r;

    snprintf(msg, sizeof msg, "dlock: cannot read the lock state: %s\n",
             detail[0] != '\0' ? detail : dlock_strerror(rc));
    cli_report("metrics", rc, detail, NULL);
    resp = MHD_create_response_from_buffer(strlen(msg), msg, MHD_RESPMEM_MUST_COPY);
    if (resp == NULL)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    r = MHD_queue_response(conn, MHD_HTTP_SERVICE_UNAVAILABLE, resp);
    MHD_destroy_response(resp);
    return r;
}

/* libmicrohttpd's request handler, on its thread. It is called once when
 * the headers are in (con_cls still NULL: only mark the request) and again
 * for the body; a GET has none, and one that comes with a body is refused
 * by closing the connection. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    static int marker;
    exporter *x = cls;
    struct MHD_Response *resp;
    enum MHD_Result r;
    char *body;
    size_t len;
    int rc;

    (void)version;
    (void)upload_data;
    if (*con_cls != &marker) {
        *con_cls = &marker;
        return MHD_YES;
    }
    if (*upload_data_size != 0)
        return MHD_NO;
    *con_cls = NULL;
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return reply_static(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
    if (strcmp(url, "/metrics") != 0)
        return reply_static(conn, MHD_HTTP_NOT_FOUND, "not found: the metrics are at /metrics\n");

    rc = render(&body, &len, x->client, x->pattern);
    if (rc != 0)
        return reply_error(conn, rc);
    resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (resp == NULL) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, CONTENT_TYPE);
    r = MHD_queue_response(conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return r;
}

/* libmicrohttpd's error messages, in the tool's style. */
static void on_http_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    size_t n;

    (void)cls;
    vsnprintf(msg, sizeof msg, fmt, ap);
    n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    cli_err("http server: %s", msg);
}

/* Split "HOST:PORT", "[V6]:PORT" or ":PORT" into host (empty: all
 * interfaces) and port. Returns 0, or -1 after a usage error. */
static int split_listen(const char *spec, char *host, size_t hostlen, char *port, size_t portlen)
{
    const char *colon, *h = spec;
    size_t hl;
    long n;

    if (spec[0] == '[') {
        const char *close = strchr(spec, ']');
        if (close == NULL || close[1] != ':')
            goto bad;
        h = spec + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(spec, ':');
        if (colon == NULL || memchr(spec, ':', (size_t)(colon - spec)) != NULL)
            goto bad;
        hl = (size_t)(colon - spec);
    }
    if (hl >= hostlen || cli_parse_long(&n, colon + 1, 0, 65535) != 0)
        goto bad;
    memcpy(host, h, hl);
    host[hl] = '\0';
    snprintf(port, portlen, "%ld", n);
    return 0;
bad:
    cli_usage_error("dlock metrics",
                    "--listen '%s': expected HOST:PORT, [IPV6]:PORT or :PORT "
                    "(PORT from 0 to 65535)",
                    spec);
    return -1;
}

/* Open a non-blocking listening socket for `spec` into *fd, and write its
 * actual address as a URL base ("http://127.0.0.1:9466") into `where`.
 * Returns 0 or an exit status (reported). */
static int open_listener(int *fd, int *v6, char *where, size_t wherelen, const char *spec)
{
    char host[256], port[8], hbuf[NI_MAXHOST], pbuf[NI_MAXSERV];
    struct addrinfo hints, *res = NULL, *ai;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int rc, s = -1, one = 1, err = 0;

    if (split_listen(spec, host, sizeof host, port, sizeof port) != 0)
        return CLI_EX_USAGE;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    rc = getaddrinfo(host[0] != '\0' ? host : NULL, port, &hints, &res);
    if (rc != 0) {
        cli_err("--listen %s: %s", spec, gai_strerror(rc));
        return rc == EAI_NONAME ? CLI_EX_USAGE : CLI_EX_UNAVAILABLE;
    }
    for (ai = res; ai != NULL && s < 0; ai = ai->ai_next) {
        s = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
        if (s < 0) {
            err = errno;
            continue;
        }
        (void)setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(s, ai->ai_addr, ai->ai_addrlen) != 0 || listen(s, 64) != 0) {
            err = errno;
            close(s);
            s = -1;
        }
    }
    freeaddrinfo(res);
    if (s < 0) {
        cli_err("--listen %s: %s", spec, strerror(err));
        return CLI_EX_UNAVAILABLE;
    }
    if (getsockname(s, (struct sockaddr *)&ss, &sl) != 0 ||
        getnameinfo((struct sockaddr *)&ss, sl, hbuf, sizeof hbuf, pbuf, sizeof pbuf,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        cli_err("--listen %s: cannot read the bound address", spec);
        close(s);
        return CLI_EX_SOFTWARE;
    }
    *v6 = ss.ss_family == AF_INET6;
    snprintf(where, wherelen, *v6 ? "http://[%s]:%s" : "http://%s:%s", hbuf, pbuf);
    *fd = s;
    return 0;
}

/* --listen: serve until SIGINT/SIGTERM. Returns the exit status. The
 * signals are blocked (child.c) before the client and the HTTP server start
 * their threads, so only the main thread ever sees them. */
static int serve(const cli_globals *g, const char *spec, const char *pattern)
{
    cli_child sig;
    exporter x;
    struct MHD_Daemon *d = NULL;
    char where[NI_MAXHOST + NI_MAXSERV + 16];
    int ex, fd = -1, v6 = 0, signo = 0;
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG;

    memset(&x, 0, sizeof x);
    x.pattern = pattern;
    ex = cli_child_init(&sig);
    if (ex == 0)
        ex = open_listener(&fd, &v6, where, sizeof where, spec);
    if (ex == 0)
        ex = cli_client_open(&x.client, g);
    if (ex == 0) {
        if (v6)
            flags |= MHD_USE_IPv6;
        /* The logger goes first, so the library's messages about the
         * other options come through it too. The daemon owns fd from
         * here: it closes it when stopped. After
         * a failed start fd is left alone (whether the library closed it
         * is not documented; dlock exits at once anyway). */
        d = MHD_start_daemon(
            flags, 0, NULL, NULL, on_request, &x, MHD_OPTION_EXTERNAL_LOGGER, on_http_log, NULL,
            MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_CONN_LIMIT,
            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_TIMEOUT_S,
            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_MEMORY_LIMIT, MHD_OPTION_END);
        fd = -1;
        if (d == NULL) {
            cli_err("cannot start the HTTP server on %s", spec);
            ex = CLI_EX_SOFTWARE;
        }
    }
    if (ex == 0) {
        if (!g->quiet)
            cli_err("serving metrics on %s/metrics", where);
        while ((signo = cli_child_signal_wait(&sig, -1, -1, NULL)) == 0)
            ;
        if (signo < 0)
            ex = CLI_EX_SOFTWARE;
        else if (signo != SIGINT && signo != SIGTERM)
            ex = 128 + signo;
    }
    if (d != NULL)
        MHD_stop_daemon(d);
    if (fd >= 0)
        close(fd);
    dlock_client_close(x.client);
    cli_child_cleanup(&sig);
    return ex;
}

/* Parse `dlock metrics`'s argv: --listen into *listen_on, the PATTERN
 * (default "*") into *pattern. Returns -1 to go on, or an exit status. */
static int parse_metrics(int argc, char **argv, const char **listen_on, const char **pattern)
{
    cli_optstate st;
    int npatterns = 0, id;

    cli_opt_init(&st, argc, argv, "dlock metrics");
    while ((id = cli_opt_next(&st, metrics_opts)) != CLI_OPT_END) {
        switch (id) {
        case M_LISTEN:
            *listen_on = st.arg;
            break;
        case M_HELP:
            cli_usage_metrics(stdout);
            return CLI_EX_OK;
        case CLI_OPT_POSITIONAL:
            *pattern = st.arg;
            npatterns++;
            break;
        case CLI_OPT_DASHDASH:
            for (; st.ind < argc; st.ind++, npatterns++)
                *pattern = argv[st.ind];
            break;
        default:
            return CLI_EX_USAGE;
        }
    }
    if (npatterns > 1)
        return cli_usage_error(st.prog, "one PATTERN at most (quote it: 'payment:*')");
    if (*pattern == NULL)
        *pattern = "*";
    if ((*pattern)[0] == '\0')
        return cli_usage_error(st.prog, "PATTERN is empty");
    return -1;
}

/* `dlock metrics`: parse, then print once or serve. */
int cli_cmd_metrics(const cli_globals *g, int argc, char **argv)
{
    dlock_client *client = NULL;
    const char *listen_on = NULL, *pattern = NULL;
    int rc, ex;
    char *body;
    size_t len;

    if ((ex = parse_metrics(argc, argv, &listen_on, &pattern)) >= 0)
        return ex;
    if (listen_on != NULL)
        return serve(g, listen_on, pattern);

    ex = cli_client_open(&client, g);
    if (ex != 0)
        return ex;
    rc = render(&body, &len, client, pattern);
    if (rc != 0) {
        ex = cli_fail(NULL, rc, dlock_last_errmsg());
    } else {
        fwrite(body, 1, len, stdout);
        free(body);
    }
    dlock_client_close(client);
    return ex;
}
