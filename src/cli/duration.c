/*
 * duration.c — parsing and printing the CLI's durations.
 *
 * Syntax: one or more parts, each DIGITS [ "." DIGITS ] UNIT with UNIT one
 * of h, m, s, ms, the units in decreasing order and each at most once:
 * "250ms", "10s", "1.5s", "1m30s", "1h2m3s500ms". A lone number without a
 * unit is milliseconds ("250"); inside a compound form every part needs its
 * unit ("1m30" is refused: 30 what?). Each part is read as an integer part
 * and a decimal fraction (at most nine digits) and converted with exact
 * integer arithmetic: value = whole * unit + frac * unit / 10^k, where the
 * second term must come out as whole milliseconds. The sum may not exceed
 * CLI_DURATION_MAX_MS: one maximum for every duration option, checked here
 * so that every option states the same limit in the same words. Anything
 * else is rejected with a reason, never guessed at: a typo in a TTL should
 * stop the command, not quietly become a different TTL.
 */
#include "duration.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* The units, largest first; a compound duration uses them in this order. */
static const struct {
    const char *name;
    uint64_t ms;
} units[] = {
    { "h", 60 * 60 * 1000 },
    { "m", 60 * 1000 },
    { "s", 1000 },
    { "ms", 1 },
};

#define N_UNITS (sizeof units / sizeof units[0])

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* The unit at *p (the longest name that matches: "ms" before "m"), as an
 * index into units[], advancing *p past it; -1 if there is none. */
static int read_unit(const char **p)
{
    int best = -1;
    size_t best_len = 0, i;

    for (i = 0; i < N_UNITS; i++) {
        size_t n = strlen(units[i].name);
        if (n > best_len && strncmp(*p, units[i].name, n) == 0) {
            best = (int)i;
            best_len = n;
        }
    }
    *p += best_len;
    return best;
}

/* Read DIGITS [ "." DIGITS ] at *p into whole, frac and den (frac / den is
 * the fraction), advancing *p. Returns 0 or -1 with *why set. The integer
 * part stops growing once it is past any valid duration: the caller's
 * range check refuses it anyway, and no digit string can overflow. */
static int read_number(const char **p, uint64_t *whole, uint64_t *frac, uint64_t *den,
                       const char **why)
{
    int whole_digits = 0, frac_digits = 0;

    *whole = *frac = 0;
    *den = 1;
    for (; is_digit(**p); (*p)++, whole_digits++)
        if (*whole <= CLI_DURATION_MAX_MS)
            *whole = *whole * 10 + (uint64_t)(**p - '0');
    if (**p == '.') {
        for ((*p)++; is_digit(**p); (*p)++, frac_digits++) {
            if (frac_digits == 9) {
                *why = "too many decimal places";
                return -1;
            }
            *frac = *frac * 10 + (uint64_t)(**p - '0');
            *den *= 10;
        }
        if (frac_digits == 0) {
            *why = "expected digits after '.'";
            return -1;
        }
    }
    if (whole_digits == 0 && frac_digits == 0) {
        *why = "not a duration (examples: 250ms, 10s, 2m, 1h, 1m30s)";
        return -1;
    }
    return 0;
}

/* See duration.h. Parts are added one by one; the running total is
 * compared with the maximum before each addition, so nothing overflows. */
int cli_duration_parse(int64_t *out, const char *s, const char **why)
{
    uint64_t total = 0, whole, frac, den, part;
    int last_unit = -1, nparts = 0, u;
    const char *p = s;

    *out = 0;
    if (s == NULL || *s == '\0') {
        *why = "empty duration";
        return -1;
    }
    if (*s == '-') {
        *why = "negative durations are not allowed";
        return -1;
    }
    while (*p != '\0') {
        if (read_number(&p, &whole, &frac, &den, why) != 0)
            return -1;
        if (*p == '\0' && nparts == 0) {
            u = (int)N_UNITS - 1; /* a lone bare number: milliseconds */
        } else if ((u = read_unit(&p)) < 0) {
            *why = *p != '\0' ? "unknown unit (use h, m, s or ms; a bare number is ms)"
                              : "every part of a compound duration needs a unit (h, m, s, ms)";
            return -1;
        } else if (u <= last_unit) {
            *why = "units must go from large to small, each once (1h2m3s500ms)";
            return -1;
        }
        /* frac < 10^9 and a unit <= 3.6e6, so the product fits easily. */
        if ((frac * units[u].ms) % den != 0) {
            *why = "finer than a millisecond";
            return -1;
        }
        if (whole > CLI_DURATION_MAX_MS / units[u].ms) {
            *why = "too large: the maximum is " CLI_DURATION_MAX_TEXT;
            return -1;
        }
        part = whole * units[u].ms + frac * units[u].ms / den;
        if (part > CLI_DURATION_MAX_MS - total) {
            *why = "too large: the maximum is " CLI_DURATION_MAX_TEXT;
            return -1;
        }
        total += part;
        last_unit = u;
        nparts++;
    }
    *out = (int64_t)total;
    return 0;
}

/* See duration.h. Units grow with the value so that a human reads it at a
 * glance; precision shrinks accordingly (tenths of a second below a minute,
 * seconds below an hour, minutes above). Zero parts are left out: "5s",
 * "2m", "1h" rather than "5.0s", "2m00s", "1h00m". */
void cli_duration_format(char *buf, size_t size, int64_t ms)
{
    if (size == 0)
        return;
    if (ms < 1000)
        snprintf(buf, size, "%" PRId64 "ms", ms);
    else if (ms < 60 * 1000 && ms % 1000 < 100)
        snprintf(buf, size, "%" PRId64 "s", ms / 1000);
    else if (ms < 60 * 1000)
        snprintf(buf, size, "%" PRId64 ".%" PRId64 "s", ms / 1000, (ms % 1000) / 100);
    else if (ms < 60 * 60 * 1000 && ms % 60000 < 1000)
        snprintf(buf, size, "%" PRId64 "m", ms / 60000);
    else if (ms < 60 * 60 * 1000)
        snprintf(buf, size, "%" PRId64 "m%02" PRId64 "s", ms / 60000, (ms % 60000) / 1000);
    else if (ms % 3600000 < 60000)
        snprintf(buf, size, "%" PRId64 "h", ms / 3600000);
    else
        snprintf(buf, size, "%" PRId64 "h%02" PRId64 "m", ms / 3600000, (ms % 3600000) / 60000);
}
