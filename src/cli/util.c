/*
 * util.c — helpers shared by the commands: messages on stderr, turning a
 * library error into a message and an exit status, opening the client from
 * the global options, strict number parsing, and writing untrusted text
 * (keys and owner ids come from other people) safely to a terminal or as
 * JSON.
 *
 * Message style, like coreutils: "dlock: WHAT: WHY" on stderr, one line,
 * no trailing period. Usage errors add "Try 'dlock CMD --help'...".
 */
#include "cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void cli_err(const char *fmt, ...)
{
    va_list ap;

    fputs("dlock: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int cli_usage_error(const char *prog, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry '%s --help' for more information.\n", prog);
    return CLI_EX_USAGE;
}

/* "dlock: KEY[ (+N more keys)]: " + the formatted message, on stderr. Keys
 * can be 512 bytes of anything: the first 60 bytes, escaped, identify one
 * well enough in a message. */
static void key_verr(const char *key, size_t more, const char *fmt, va_list ap)
{
    char shown[64];
    int cut = snprintf(shown, sizeof shown, "%s", key) >= (int)sizeof shown;

    fputs("dlock: ", stderr);
    cli_put_text(stderr, shown);
    if (cut)
        fputs("...", stderr);
    if (more > 0)
        fprintf(stderr, " (+%zu more key%s)", more, more > 1 ? "s" : "");
    fputs(": ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void cli_key_err(const char *key, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    key_verr(key, 0, fmt, ap);
    va_end(ap);
}

void cli_keys_err(const char *key, size_t more, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    key_verr(key, more, fmt, ap);
    va_end(ap);
}

/* The note added to a NOPERM denial: where the rule that grants dlock
 * everything it needs is written down. */
#define NOPERM_NOTE                                                                                \
    "the Redis user lacks a permission dlock needs: grant it the ACL rule in dlock(1), "           \
    "ACL, or README.md, Security"

/* See cli.h. The library's detail message usually says more than the
 * static text of the code ("connect to 127.0.0.1:6390: Connection refused"
 * rather than "backend unreachable"), so it wins when there is one. Many
 * details already name the key ("release payment:42: ..."); the context is
 * then not repeated. Details can quote keys and server replies, so they are
 * escaped like any untrusted text. */
void cli_report(const char *context, int code, const char *detail, const char *note)
{
    int have_detail = detail != NULL && detail[0] != '\0';
    const char *why = have_detail ? detail : dlock_strerror(code);
    char shown[64];

    fputs("dlock: ", stderr);
    if (context != NULL && context[0] != '\0' && !(have_detail && strstr(detail, context))) {
        int cut = snprintf(shown, sizeof shown, "%s", context) >= (int)sizeof shown;
        cli_put_text(stderr, shown);
        fputs(cut ? "...: " : ": ", stderr);
    }
    cli_put_text(stderr, why);
    if (note == NULL && code == DLOCK_EAUTH && cli_is_noperm(detail))
        note = NOPERM_NOTE;
    if (note != NULL)
        fprintf(stderr, " (%s)", note);
    fputc('\n', stderr);
}

int cli_exit_for(int code)
{
    switch (code) {
    case DLOCK_OK:
        return CLI_EX_OK;
    case DLOCK_ECONN:
    case DLOCK_EAUTH:
    case DLOCK_EQUORUM:
        return CLI_EX_UNAVAILABLE;
    case DLOCK_EINVAL:
        return CLI_EX_USAGE;
    default:
        return CLI_EX_SOFTWARE;
    }
}

/* See cli.h. The library reports an ACL denial as DLOCK_EAUTH with the
 * server's reply in its message: "NOPERM ..." for a command, key or
 * channel, or, from inside a script, "permission denied by the server's
 * ACL"; a wrong password is DLOCK_EAUTH too, but says neither. */
int cli_is_noperm(const char *detail)
{
    return detail != NULL && (strstr(detail, "NOPERM") != NULL || strstr(detail, "ACL") != NULL);
}

/* See cli.h. */
int cli_fail(const char *context, int code, const char *detail)
{
    cli_report(context, code, detail, NULL);
    return cli_exit_for(code);
}

/* The library's log lines, on stderr, when $DLOCK_LOG asks for them. */
static void log_to_stderr(int level, const char *msg, void *arg)
{
    static const char *const names[] = { "error", "warn", "info", "debug" };
    struct timespec ts;
    (void)arg;
    clock_gettime(CLOCK_REALTIME, &ts);
    fprintf(stderr, "dlock[%ld] %lld.%03ld %s: %s\n", (long)getpid(), (long long)ts.tv_sec,
            ts.tv_nsec / 1000000, names[level], msg);
}

/* $DLOCK_LOG: error, warn, info or debug (the most verbose level shown).
 * Returns the level, -1 when unset or empty, -2 for anything else. */
static int log_level_from_env(void)
{
    static const char *const names[] = { "error", "warn", "info", "debug" };
    const char *v = getenv("DLOCK_LOG");
    if (v == NULL || v[0] == '\0')
        return -1;
    for (int i = 0; i < 4; i++)
        if (strcmp(v, names[i]) == 0)
            return i;
    return -2;
}

/* See cli.h. The library copies the strings it keeps, so the options may
 * point into argv and the environment. */
int cli_client_open(dlock_client **out, const cli_globals *g)
{
    dlock_client_opts o = DLOCK_CLIENT_OPTS_INIT;
    int rc;
    int level = log_level_from_env();

    if (level == -2) {
        *out = NULL;
        return cli_fail(NULL, DLOCK_EINVAL, "DLOCK_LOG must be error, warn, info or debug");
    }
    if (level >= 0) {
        o.log_fn = log_to_stderr;
        o.log_level = level;
    }
    if (g->connect_timeout_ms > 0)
        o.connect_timeout_ms = g->connect_timeout_ms;
    o.prefix = g->prefix;
    o.owner_id = g->owner_id;
    o.password = g->password;
    rc = dlock_client_open(out, g->url, &o);
    if (rc != 0) {
        *out = NULL;
        return cli_fail(NULL, rc, dlock_last_errmsg());
    }
    return 0;
}

/* See cli.h. strtol alone accepts leading blanks, a sign on unsigned
 * values and an empty digit string; each of those is refused here. */
int cli_parse_long(long *out, const char *s, long min, long max)
{
    char *end = NULL;
    long v;

    if (s == NULL || !((s[0] >= '0' && s[0] <= '9') || (s[0] == '-' && min < 0)))
        return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Length of the valid UTF-8 sequence at `p` (1 to 4 bytes), or 0 if the
 * bytes there are not valid UTF-8 (overlong forms, surrogates and code
 * points above U+10FFFF are invalid). */
static size_t utf8_len(const unsigned char *p)
{
    unsigned char c = p[0];

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        return (p[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        unsigned char lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        if (p[1] < lo || p[1] > hi || (p[2] & 0xC0) != 0x80)
            return 0;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        unsigned char lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        if (p[1] < lo || p[1] > hi || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
            return 0;
        return 4;
    }
    return 0;
}

/* See cli.h. C1 controls (U+0080..U+009F, two bytes C2 80..C2 9F) are
 * escaped too: some terminals act on them. */
void cli_put_text(FILE *out, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;

    while (*p != '\0') {
        size_t n = utf8_len(p);
        if (n == 1 && *p >= 0x20 && *p != 0x7F) {
            fputc(*p, out);
        } else if (n == 0 || n == 1 || (n == 2 && p[0] == 0xC2 && p[1] < 0xA0)) {
            size_t i, k = n == 0 ? 1 : n;
            for (i = 0; i < k; i++)
                fprintf(out, "\\x%02X", p[i]);
            n = k;
        } else {
            fwrite(p, 1, n, out);
        }
        p += n;
    }
}

/* Write s to out escaped for a JSON string (json = 1) or a Prometheus
 * label value (json = 0), without the quotes. Bytes that are not UTF-8 become
 * U+FFFD, so the output is always valid UTF-8. JSON escapes every control
 * character; a label value needs only ", \ and newline escaped (other line
 * breaks cannot break the format, so they pass as they are). */
static void put_escaped(FILE *out, const char *s, int json)
{
    const unsigned char *p = (const unsigned char *)s;

    while (*p != '\0') {
        size_t n = utf8_len(p);
        if (n == 0) {
            fputs(json ? "\\ufffd" : "\xEF\xBF\xBD", out);
            n = 1;
        } else if (*p == '"' || *p == '\\') {
            fputc('\\', out);
            fputc(*p, out);
        } else if (*p == '\n') {
            fputs("\\n", out);
        } else if (json && *p == '\t') {
            fputs("\\t", out);
        } else if (json && *p == '\r') {
            fputs("\\r", out);
        } else if (json && (*p < 0x20 || *p == 0x7F)) {
            fprintf(out, "\\u%04x", *p);
        } else {
            fwrite(p, 1, n, out);
        }
        p += n;
    }
}

/* See cli.h. */
void cli_put_json_string(FILE *out, const char *s)
{
    fputc('"', out);
    put_escaped(out, s, 1);
    fputc('"', out);
}

/* See cli.h. */
void cli_put_prom_label(FILE *out, const char *s)
{
    put_escaped(out, s, 0);
}

/* See cli.h. A memory stream makes cli_put_text() the one place that
 * knows the escaping rules. */
char *cli_text_dup(const char *s)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    if (f == NULL)
        return NULL;
    cli_put_text(f, s);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* See cli.h. The string holds escaped text only (printable ASCII and
 * valid UTF-8), so backing up over continuation bytes finds a boundary. */
void cli_text_cut(char *s, size_t max)
{
    size_t len = strlen(s), end;

    if (len <= max)
        return;
    if (max < 3) {
        s[max] = '\0';
        return;
    }
    end = max - 3;
    while (end > 0 && ((unsigned char)s[end] & 0xC0) == 0x80)
        end--;
    memcpy(s + end, "...", 4);
}

/* Mask the userinfo of one URL url[0..n) into buf. Where the userinfo ends
 * is decided as the library's URL parser decides it: redis:// URLs at the
 * last '@' (a password may contain '@'), unix:// URLs at an '@' before the
 * socket path's first '/'. */
static void url_display_one(char *buf, size_t size, const char *url, size_t n)
{
    const char *end = url + n, *host = NULL, *at = NULL;
    for (const char *p = url; p + 3 <= end; p++)
        if (p[0] == ':' && p[1] == '/' && p[2] == '/') {
            host = p + 3;
            break;
        }
    if (host != NULL) {
        const char *slash = memchr(host, '/', (size_t)(end - host));
        for (const char *p = host; p < end; p++)
            if (*p == '@' && (strncmp(url, "unix://", 7) != 0 || (slash && p < slash)))
                at = p;
    }
    if (at == NULL)
        snprintf(buf, size, "%.*s", (int)n, url);
    else
        snprintf(buf, size, "%.*s***%.*s", (int)(host - url), url, (int)(end - at), at);
}

/* See cli.h. A list of URLs (Redlock) is masked URL by URL: a comma
 * followed by "scheme://" starts the next one. */
void cli_url_display(char *buf, size_t size, const char *url)
{
    if (size == 0)
        return;
    buf[0] = '\0';
    const char *start = url;
    for (const char *p = url;; p++) {
        int boundary = *p == '\0';
        if (*p == ',') {
            const char *q = p + 1;
            while ((*q >= 'a' && *q <= 'z') || *q == '-')
                q++;
            boundary = q > p + 1 && strncmp(q, "://", 3) == 0;
        }
        if (!boundary)
            continue;
        size_t len = strlen(buf);
        if (len + 1 >= size)
            return;
        if (start != url)
            buf[len++] = ',';
        url_display_one(buf + len, size - len, start, (size_t)(p - start));
        if (*p == '\0')
            return;
        start = p + 1;
    }
}
