/*
 * sha1.h — SHA-1, only to name Lua scripts for EVALSHA (not for security).
 */
#ifndef DLOCK_SHA1_H
#define DLOCK_SHA1_H
#include <stddef.h>

/* Write the 40 lowercase hex digits of SHA-1(data) and a NUL into hex. */
void dlock__sha1_hex(char hex[41], const void *data, size_t len);

#endif
