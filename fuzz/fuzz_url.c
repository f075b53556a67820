/* fuzz_url.c — libFuzzer target: the URL parser (dlock__url_parse) on
 * arbitrary bytes. Any input must give 0 or DLOCK_EINVAL, never a crash,
 * a leak or an out-of-bounds read; a parsed endpoint must be consistent. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dlock.h"
#include "url.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    dlock__endpoint ep;
    int rc = dlock__url_parse(&ep, s);
    if (rc == 0) {
        if (ep.kind == DLOCK__EP_TCP && (!ep.host || ep.port < 1 || ep.port > 65535))
            abort();
        if (ep.kind == DLOCK__EP_UNIX && (!ep.path || ep.path[0] != '/'))
            abort();
        if (ep.kind == DLOCK__EP_TCP && strchr(ep.desc, '@'))
            abort(); /* the description (used in messages) never has user info */
        dlock__endpoint_clear(&ep);
    } else if (rc != DLOCK_EINVAL && rc != DLOCK_ENOMEM) {
        abort();
    }
    free(s);
    return 0;
}
