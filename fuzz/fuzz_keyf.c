/* fuzz_keyf.c — libFuzzer target: key templates. dlock_keyf() with a fixed
 * template and fuzzed arguments and buffer sizes must fail cleanly
 * (DLOCK_EINVAL) on truncation, empty or oversized keys and never write
 * out of bounds; a key it accepts must pass the key check. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "dlock.h"
#include "keys.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t bufsize = data[0] + 1u; /* 1..256 */
    if (size > 1 && data[1] & 1)
        bufsize += 512;
    char *arg = malloc(size);
    char *buf = malloc(bufsize);
    if (!arg || !buf) {
        free(arg);
        free(buf);
        return 0;
    }
    memcpy(arg, data + 1, size - 1);
    arg[size - 1] = '\0';
    int rc = dlock_keyf(buf, bufsize, "payment:%s:%d", arg, (int)size);
    if (rc == 0 && dlock__key_check(buf) != 0)
        abort();
    if (rc != 0 && (rc != DLOCK_EINVAL || buf[0] != '\0'))
        abort();
    rc = dlock_keyf(buf, bufsize, "%s", arg);
    if (rc == 0 && (strcmp(buf, arg) != 0 || dlock__key_check(buf) != 0))
        abort();
    free(arg);
    free(buf);
    return 0;
}
