/*
 * duration.c — parsing and printing the CLI's durations.
 *
 * Syntax: DIGITS [ "." DIGITS ] [ UNIT ], UNIT one of ms, s, m, h; no unit
 * means milliseconds. The number is read as an integer part and a decimal
 * fraction (at most nine digits) and converted with exact integer
 * arithmetic: value = whole * unit + frac * unit / 10^k, where the second
 * term must come out as whole milliseconds. Anything else is rejected with a
 * reason, never guessed at: a typo in a TTL should stop the command, not
 * quietly become a different TTL.
 */
#include "duration.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* Multiplier in milliseconds for a unit suffix, or 0 if the suffix is not a
 * unit. The suffix must be the whole rest of the string. */
static uint64_t unit_ms(const char *u)
{
    if (u[0] == '\0' || strcmp(u, "ms") == 0)
        return 1;
    if (strcmp(u, "s") == 0)
        return 1000;
    if (strcmp(u, "m") == 0)
        return 60 * 1000;
    if (strcmp(u, "h") == 0)
        return 60 * 60 * 1000;
    return 0;
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* See duration.h. The integer part is accumulated in 64 bits with an
 * overflow check at each digit; the final sum is checked against INT64_MAX
 * before it is formed. */
int cli_duration_parse(int64_t *out, const char *s, const char **why)
{
    uint64_t whole = 0, frac = 0, den = 1, unit, frac_ms;
    int whole_digits = 0, frac_digits = 0;
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
    for (; is_digit(*p); p++, whole_digits++) {
        if (whole > (UINT64_MAX - 9) / 10) {
            *why = "too large";
            return -1;
        }
        whole = whole * 10 + (uint64_t)(*p - '0');
    }
    if (*p == '.') {
        for (p++; is_digit(*p); p++, frac_digits++) {
            if (frac_digits == 9) {
                *why = "too many decimal places";
                return -1;
            }
            frac = frac * 10 + (uint64_t)(*p - '0');
            den *= 10;
        }
        if (frac_digits == 0) {
            *why = "expected digits after '.'";
            return -1;
        }
    }
    if (whole_digits == 0 && frac_digits == 0) {
        *why = "not a number (examples: 250ms, 10s, 2m, 1h)";
        return -1;
    }
    unit = unit_ms(p);
    if (unit == 0) {
        *why = "unknown unit (use ms, s, m or h; a bare number is ms)";
        return -1;
    }
    /* frac < 10^9 and unit <= 3.6e6, so the product fits easily. */
    if ((frac * unit) % den != 0) {
        *why = "finer than a millisecond";
        return -1;
    }
    frac_ms = frac * unit / den;
    if (whole > ((uint64_t)INT64_MAX - frac_ms) / unit) {
        *why = "too large";
        return -1;
    }
    *out = (int64_t)(whole * unit + frac_ms);
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
        snprintf(buf, size, "%" PRId64 "h%02" PRId64 "m", ms / 3600000,
                 (ms % 3600000) / 60000);
}
