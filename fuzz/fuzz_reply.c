/* fuzz_reply.c — libFuzzer target: hostile replies. Arbitrary bytes are fed,
 * in chunks whose sizes come from the input, through dlock's bounded reply
 * reader; every reply that comes out is walked and its strings are handed
 * to the parsers of stored lock values and holder entries, as the acquire,
 * inspect and state code does with script results. */
#include <hiredis/hiredis.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "keys.h"
#include "reply.h"

static void walk(const dlock__reply *r, int depth)
{
    if (!r || depth > 16)
        return;
    if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_ERROR) {
        if (r->str[r->len] != '\0')
            abort();
        dlock_info info;
        memset(&info, 0, sizeof info);
        char token[DLOCK__TOKEN_LEN + 1];
        dlock__parse_lock_value(&info, token, r->str, r->len);
        dlock_holder h;
        for (int mode = 0; mode <= DLOCK_WRITE; mode++)
            dlock__parse_holder(&h, mode, r->str, 1795000000000000ull);
    }
    for (size_t i = 0; i < r->elements; i++)
        walk(r->element[i], depth + 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    redisReader *rd = dlock__reader_new();
    if (!rd)
        return 0;
    size_t off = 0;
    unsigned chunk = size ? (unsigned)data[0] % 64 + 1 : 1;
    while (off < size) {
        size_t n = size - off < chunk ? size - off : chunk;
        if (redisReaderFeed(rd, (const char *)data + off, n) != REDIS_OK)
            break;
        off += n;
        void *obj = NULL;
        int rc;
        while ((rc = redisReaderGetReply(rd, &obj)) == REDIS_OK && obj) {
            walk(obj, 0);
            dlock__reply_free(obj);
            obj = NULL;
        }
        dlock__reader_take_over_limit();
        if (rc != REDIS_OK)
            break;
    }
    redisReaderFree(rd);
    return 0;
}
