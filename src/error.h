/*
 * error.h — error reporting inside the library.
 *
 * A failing function records a message for the calling thread with
 * dlock__err(code, fmt, ...) and returns the code it was given, so failure
 * paths read `return dlock__err(DLOCK_EINVAL, "key is empty");`.
 * dlock_last_errmsg() returns that message (thread-local, fixed size).
 */
#ifndef DLOCK_ERROR_H
#define DLOCK_ERROR_H
#include "dlock.h"

int dlock__err(int code, const char *fmt, ...) DLOCK_PRINTF(2, 3);
/* Prefix the current message with "what: " (keeps the code). */
int dlock__err_prefix(int code, const char *fmt, ...) DLOCK_PRINTF(2, 3);
void dlock__err_clear(void);

#endif
