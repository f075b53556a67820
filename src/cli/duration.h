/*
 * duration.h — the CLI's durations: "250ms", "10s", "1.5s", "2m", "1h",
 * and compound forms such as "1m30s" or "1h2m3s500ms"; a bare number is
 * milliseconds. Parsed exactly in integer arithmetic (no floating point),
 * so "0.1s" is 100 ms and never 99.
 */
#ifndef DLOCK_CLI_DURATION_H
#define DLOCK_CLI_DURATION_H

#include <stddef.h>
#include <stdint.h>

/* The longest duration any option takes: 8760 hours, a year of 365 days.
 * Longer waits or TTLs are typos, not plans (and the library's own limit,
 * 2^40 ms, is far above it). */
#define CLI_DURATION_MAX_MS ((uint64_t)8760 * 60 * 60 * 1000)
#define CLI_DURATION_MAX_TEXT "8760h (365 days)"

/* Parse `s` into milliseconds. Returns 0 and sets *out, or -1 and points
 * *why at a static explanation ("negative durations are not allowed", ...).
 * Rejects: empty strings, signs, whitespace, unknown units, units out of
 * order or repeated, a part without a unit in a compound form, more than
 * nine decimals in a part, values finer than a millisecond and values above
 * CLI_DURATION_MAX_MS. Zero is accepted; callers that need a positive value
 * check for it. */
int cli_duration_parse(int64_t *out, const char *s, const char **why);

/* Format `ms` for people: "850ms", "29.1s", "4m05s", "2h07m" (truncated,
 * never rounded up). For 0 <= ms <= CLI_DURATION_MAX_MS the result parses
 * back with cli_duration_parse() to at most `ms`. Always NUL-terminates when size > 0. */
void cli_duration_format(char *buf, size_t size, int64_t ms);

#endif /* DLOCK_CLI_DURATION_H */
