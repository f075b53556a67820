/*
 * prometheus.c — the one checker of Prometheus text expositions (format
 * 0.0.4) for the tests: the library's dlock_metrics_write, `dlock metrics`
 * printed and served, and --metrics-file.
 *
 * Design. The text is checked line by line against the format's grammar
 * and its rules, and the test fails (cmocka) at the first bad line, naming
 * it:
 *   - every line ends in a newline; a line is "# HELP name text",
 *     "# TYPE name gauge|counter|histogram" or a sample
 *     `name[{label="value",...}] value`; no other comment, no blank line;
 *   - names and label names use the format's characters; label values use
 *     only the escapes \\ \" \n; the value is a number (or +Inf, NaN);
 *   - a sample's family had exactly one HELP and one TYPE line before it;
 *     a histogram's family also owns its _bucket, _sum and _count samples;
 *   - a counter's name ends in _total;
 *   - a histogram's buckets are cumulative within a series, and its _count
 *     equals that series' +Inf bucket.
 * As a second opinion the same text goes through the Prometheus project's
 * own parser (Debian python3-prometheus-client) when the machine has it,
 * which must read as many samples.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NAME_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_:"
#define LABEL_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"
#define MAX_FAMILIES 64

typedef struct family {
    char name[128];
    char type[16];
    int help, types; /* how many HELP and TYPE lines it had */
} family;

typedef struct expo {
    family fam[MAX_FAMILIES];
    int nfam, samples;
    char series[512]; /* the histogram series of the last bucket: name and labels but le */
    double last_bucket, inf_bucket;
    char line[2048]; /* the line being checked, for messages */
} expo;

static family *family_named(expo *x, const char *name)
{
    for (int i = 0; i < x->nfam; i++)
        if (strcmp(x->fam[i].name, name) == 0)
            return &x->fam[i];
    return NULL;
}

/* "# HELP name text" or "# TYPE name type" (p after "# HELP "/"# TYPE "). */
static void check_comment(expo *x, const char *p, int is_help)
{
    size_t n = strspn(p, NAME_CHARS);
    char name[128];
    if (n == 0 || n >= sizeof name || p[n] != ' ')
        fail_msg("exposition: bad comment line: %s", x->line);
    memcpy(name, p, n);
    name[n] = '\0';
    const char *type = p + n + 1;
    if (!is_help && strcmp(type, "gauge") != 0 && strcmp(type, "counter") != 0 &&
        strcmp(type, "histogram") != 0)
        fail_msg("exposition: bad TYPE: %s", x->line);
    family *f = family_named(x, name);
    if (!f) {
        if (x->nfam == MAX_FAMILIES)
            fail_msg("exposition: more than %d families", MAX_FAMILIES);
        f = &x->fam[x->nfam++];
        memset(f, 0, sizeof *f);
        snprintf(f->name, sizeof f->name, "%s", name);
    }
    if (is_help) {
        f->help++;
    } else {
        f->types++;
        snprintf(f->type, sizeof f->type, "%s", type);
    }
}

/* The label list at p ("{...}"): names, quoted values, escapes. Returns
 * the character after the closing brace. */
static const char *check_labels(const expo *x, const char *p)
{
    p++;
    while (*p != '}') {
        size_t ln = strspn(p, LABEL_CHARS);
        if (ln == 0 || p[ln] != '=' || p[ln + 1] != '"')
            fail_msg("exposition: bad label in: %s", x->line);
        p += ln + 2;
        while (*p && *p != '"') {
            if (*p == '\\') {
                if (p[1] != '\\' && p[1] != '"' && p[1] != 'n')
                    fail_msg("exposition: bad escape in: %s", x->line);
                p++;
            }
            p++;
        }
        if (*p != '"')
            fail_msg("exposition: unterminated label value in: %s", x->line);
        p++;
        if (*p == ',')
            p++;
        else if (*p != '}')
            fail_msg("exposition: bad label list in: %s", x->line);
    }
    return p + 1;
}

/* The family a sample belongs to: its own name, or for a histogram's
 * _bucket/_sum/_count the base name (*suffix says which, else ""). */
static family *family_of(expo *x, const char *name, const char **suffix)
{
    static const char *const suffixes[] = { "_bucket", "_sum", "_count" };
    *suffix = "";
    family *f = family_named(x, name);
    for (size_t k = 0; !f && k < 3; k++) {
        size_t nlen = strlen(name), sl = strlen(suffixes[k]);
        char base[128];
        if (nlen <= sl || strcmp(name + nlen - sl, suffixes[k]) != 0)
            continue;
        snprintf(base, sizeof base, "%.*s", (int)(nlen - sl), name);
        f = family_named(x, base);
        if (f && strcmp(f->type, "histogram") == 0)
            *suffix = suffixes[k];
        else
            f = NULL;
    }
    return f;
}

/* A histogram sample: buckets cumulative per series, _count equal to the
 * series' +Inf bucket. labels: the sample's "{...}" text or "". */
static void check_histogram(expo *x, const char *name, const char *suffix, const char *labels,
                            double v)
{
    char series[512];
    const char *le = strstr(labels, "le=\"");
    if (strcmp(suffix, "_bucket") == 0) {
        if (!le)
            fail_msg("exposition: bucket without le: %s", x->line);
        snprintf(series, sizeof series, "%.*s%.*s", (int)(strlen(name) - 7), name,
                 (int)(le - labels), labels);
        if (strcmp(series, x->series) != 0) {
            snprintf(x->series, sizeof x->series, "%s", series);
            x->last_bucket = -1;
        }
        if (v < x->last_bucket)
            fail_msg("exposition: buckets not cumulative at: %s", x->line);
        x->last_bucket = v;
        if (strncmp(le, "le=\"+Inf\"", 9) == 0)
            x->inf_bucket = v;
    } else if (strcmp(suffix, "_count") == 0 && v != x->inf_bucket) {
        fail_msg("exposition: _count %g differs from the +Inf bucket %g: %s", v, x->inf_bucket,
                 x->line);
    }
}

/* A sample line: name, labels, one space, a number; its family's rules. */
static void check_sample(expo *x, const char *p)
{
    size_t n = strspn(p, NAME_CHARS);
    char name[128];
    if (n == 0 || n >= sizeof name || (p[0] >= '0' && p[0] <= '9'))
        fail_msg("exposition: bad metric name: %s", x->line);
    memcpy(name, p, n);
    name[n] = '\0';
    const char *labels = p + n, *q = p + n;
    if (*q == '{')
        q = check_labels(x, q);
    else
        labels = "";
    if (*q != ' ')
        fail_msg("exposition: no space before the value: %s", x->line);
    q++;
    char *end = NULL;
    double v = strtod(q, &end);
    if (end == q || *end != '\0')
        fail_msg("exposition: bad value: %s", x->line);
    const char *suffix;
    family *f = family_of(x, name, &suffix);
    if (!f || f->help != 1 || f->types != 1)
        fail_msg("exposition: sample without one HELP and one TYPE line before it: %s", x->line);
    if (strcmp(f->type, "counter") == 0 &&
        (strlen(name) < 6 || strcmp(name + strlen(name) - 6, "_total") != 0))
        fail_msg("exposition: counter %s does not end in _total", name);
    if (suffix[0])
        check_histogram(x, name, suffix, labels, v);
    x->samples++;
}

/* The Prometheus client library's parser over text: its sample count, -2
 * when the machine has no such parser (nothing to compare), -1 when it
 * rejected the text (its message in err). */
static int second_opinion(const char *text, char *err, size_t errlen)
{
    static const char script[] =
        "import sys\n"
        "try:\n"
        "    from prometheus_client.parser import text_string_to_metric_families\n"
        "except ImportError:\n"
        "    sys.exit(77)\n"
        "text = open(sys.argv[1]).read()\n"
        "print(sum(len(f.samples) for f in text_string_to_metric_families(text)))\n";
    char path[DH_PATH_MAX], out[64];
    if (dh_tmpfile(path, sizeof path, "exposition.prom") != 0 || dh_write_file(path, text) != 0)
        return -2;
    /* Debian's python3 (where python3-prometheus-client lives), else any. */
    const char *const argv1[] = { "/usr/bin/python3", "-c", script, path, NULL };
    const char *const argv2[] = { "python3", "-c", script, path, NULL };
    int st = dh_run(argv1, NULL, 30000, out, sizeof out, err, errlen);
    if (st == 127 || st == 77)
        st = dh_run(argv2, NULL, 30000, out, sizeof out, err, errlen);
    unlink(path);
    if (st == 127 || st == 77)
        return -2;
    return st == 0 ? atoi(out) : -1;
}

int dh_check_exposition(const char *text)
{
    static expo x; /* large; the main thread only */
    memset(&x, 0, sizeof x);
    x.last_bucket = x.inf_bucket = -1;
    for (const char *line = text; *line;) {
        const char *nl = strchr(line, '\n');
        if (!nl)
            fail_msg("exposition: last line has no newline: \"%s\"", line);
        size_t len = (size_t)(nl - line);
        if (len >= sizeof x.line)
            fail_msg("exposition: line of %zu bytes", len);
        memcpy(x.line, line, len);
        x.line[len] = '\0';
        line = nl + 1;
        if (strncmp(x.line, "# HELP ", 7) == 0 || strncmp(x.line, "# TYPE ", 7) == 0)
            check_comment(&x, x.line + 7, x.line[2] == 'H');
        else if (x.line[0] == '#' || x.line[0] == '\0')
            fail_msg("exposition: unexpected line: \"%s\"", x.line);
        else
            check_sample(&x, x.line);
    }
    if (x.samples == 0)
        fail_msg("exposition without samples: \"%s\"", text);
    char err[4096];
    int theirs = second_opinion(text, err, sizeof err);
    if (theirs == -1)
        fail_msg("exposition: prometheus_client's parser refused it: %s", err);
    if (theirs >= 0 && theirs != x.samples)
        fail_msg("exposition: %d samples, prometheus_client's parser read %d", x.samples, theirs);
    return x.samples;
}
