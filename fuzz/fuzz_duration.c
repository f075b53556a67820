/* fuzz_duration.c — libFuzzer target: the CLI's duration parser. Any input
 * gives a value within [0, CLI_DURATION_MAX_MS] or a reason; an accepted
 * value written as "<ms>ms" parses back to itself, and its human form
 * (cli_duration_format, e.g. "4m05s") parses back to at most the value. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "duration.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    int64_t ms = -1;
    const char *why = NULL;
    if (cli_duration_parse(&ms, s, &why) == 0) {
        if (ms < 0 || (uint64_t)ms > CLI_DURATION_MAX_MS)
            abort();
        char back[64];
        snprintf(back, sizeof back, "%lldms", (long long)ms);
        int64_t again = -1;
        if (cli_duration_parse(&again, back, &why) != 0 || again != ms)
            abort();
        char human[64];
        cli_duration_format(human, sizeof human, ms);
        if (cli_duration_parse(&again, human, &why) != 0 || again > ms || again < 0)
            abort();
    } else if (!why || !why[0]) {
        abort();
    }
    free(s);
    return 0;
}
