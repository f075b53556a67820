/*
 * json.c — a minimal JSON validator for the CLI tests (dlock status
 * --json, dlock leader --json): strict enough to catch unescaped control
 * characters, quotes and stray commas; small enough to read. See
 * harness.h for the two entry points.
 *
 * Design. A recursive-descent recogniser over the text, one function per
 * grammar rule; it builds nothing, it only says whether the text is one
 * JSON value. dh_json_compact lets tests compare against a fixed text
 * whatever the tool's spacing.
 */
#include <string.h>

#include "internal.h"

struct json {
    const char *p;
};

static int json_value(struct json *j);

static void json_ws(struct json *j)
{
    while (*j->p == ' ' || *j->p == '\n' || *j->p == '\t' || *j->p == '\r')
        j->p++;
}

static int json_string(struct json *j)
{
    if (*j->p != '"')
        return -1;
    j->p++;
    while (*j->p && *j->p != '"') {
        if ((unsigned char)*j->p < 0x20)
            return -1;
        if (*j->p == '\\') {
            j->p++;
            if (*j->p == 'u') {
                for (int i = 1; i <= 4; i++)
                    if (!strchr("0123456789abcdefABCDEF", j->p[i]) || !j->p[i])
                        return -1;
                j->p += 4;
            } else if (!*j->p || !strchr("\"\\/bfnrt", *j->p)) {
                return -1;
            }
        }
        j->p++;
    }
    if (*j->p != '"')
        return -1;
    j->p++;
    return 0;
}

static int json_number(struct json *j)
{
    const char *s = j->p;
    if (*j->p == '-')
        j->p++;
    if (*j->p < '0' || *j->p > '9')
        return -1;
    while (*j->p >= '0' && *j->p <= '9')
        j->p++;
    if (*j->p == '.') {
        j->p++;
        while (*j->p >= '0' && *j->p <= '9')
            j->p++;
    }
    return j->p > s ? 0 : -1;
}

static int json_lit(struct json *j, const char *lit)
{
    size_t n = strlen(lit);
    if (strncmp(j->p, lit, n) != 0)
        return -1;
    j->p += n;
    return 0;
}

/* "name": value, inside an object. */
static int json_member(struct json *j)
{
    json_ws(j);
    if (json_string(j) != 0)
        return -1;
    json_ws(j);
    if (*j->p++ != ':')
        return -1;
    return json_value(j);
}

/* The members of an object or the elements of an array, after the opening
 * bracket, through the closing one (`close`). */
static int json_items(struct json *j, char close)
{
    json_ws(j);
    if (*j->p == close) {
        j->p++;
        return 0;
    }
    for (;;) {
        if ((close == '}' ? json_member(j) : json_value(j)) != 0)
            return -1;
        json_ws(j);
        if (*j->p != ',')
            break;
        j->p++;
    }
    return *j->p++ == close ? 0 : -1;
}

static int json_value(struct json *j)
{
    json_ws(j);
    switch (*j->p) {
    case '{':
        j->p++;
        return json_items(j, '}');
    case '[':
        j->p++;
        return json_items(j, ']');
    case '"':
        return json_string(j);
    case 't':
        return json_lit(j, "true");
    case 'f':
        return json_lit(j, "false");
    case 'n':
        return json_lit(j, "null");
    default:
        return json_number(j);
    }
}

/* 1 if s is exactly one JSON value (plus whitespace). */
int dh_json_valid(const char *s)
{
    struct json j = { s };
    if (json_value(&j) != 0)
        return 0;
    json_ws(&j);
    return *j.p == '\0';
}

/* s without whitespace outside JSON strings, into buf. */
void dh_json_compact(char *buf, size_t len, const char *s)
{
    size_t n = 0;
    int in_str = 0;
    for (; *s && n + 1 < len; s++) {
        if (in_str) {
            buf[n++] = *s;
            if (*s == '\\' && s[1] && n + 1 < len)
                buf[n++] = *++s;
            else if (*s == '"')
                in_str = 0;
        } else if (*s == '"') {
            in_str = 1;
            buf[n++] = *s;
        } else if (!strchr(" \t\r\n", *s)) {
            buf[n++] = *s;
        }
    }
    buf[n] = '\0';
}
