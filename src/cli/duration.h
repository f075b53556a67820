/*
 * duration.h — the CLI's durations: "250ms", "10s", "2m", "1h", "1.5s";
 * a bare number is milliseconds. Parsed exactly in integer arithmetic
 * (no floating point), so "0.1s" is 100 ms and never 99.
 */
#ifndef DLOCK_CLI_DURATION_H
#define DLOCK_CLI_DURATION_H

#include <stddef.h>
#include <stdint.h>

/* Parse `s` into milliseconds. Returns 0 and sets *out, or -1 and points
 * *why at a static explanation ("negative durations are not allowed", ...).
 * Rejects: empty strings, signs, whitespace, unknown units, more than nine
 * decimals, values finer than a millisecond and values above INT64_MAX ms.
 * Zero is accepted; callers that need a positive value check for it. */
int cli_duration_parse(int64_t *out, const char *s, const char **why);

/* Format `ms` for people: "850ms", "29.1s", "4m05s", "2h07m" (truncated,
 * never rounded up). Always NUL-terminates when size > 0. */
void cli_duration_format(char *buf, size_t size, int64_t ms);

#endif /* DLOCK_CLI_DURATION_H */
