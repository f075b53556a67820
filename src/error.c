/*
 * error.c — error codes to text, the per-thread last-error message, and the
 * library version.
 */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char last_msg[512];

const char *dlock_version(void)
{
    return DLOCK_VERSION_STRING;
}

const char *dlock_strerror(int code)
{
    switch (code) {
    case DLOCK_OK:
        return "success";
    case DLOCK_EINVAL:
        return "invalid argument";
    case DLOCK_ENOMEM:
        return "out of memory";
    case DLOCK_EBUSY:
        return "lock is held by someone else";
    case DLOCK_ETIMEDOUT:
        return "timed out waiting for the lock";
    case DLOCK_ENOTHELD:
        return "lock is no longer held (expired, lost or taken over)";
    case DLOCK_ECONN:
        return "cannot reach the Redis server";
    case DLOCK_EQUORUM:
        return "too few Redis nodes or replicas confirmed it (quorum not reached)";
    case DLOCK_EAUTH:
        return "authentication failed";
    case DLOCK_EPROTO:
        return "unexpected reply from the Redis server";
    case DLOCK_ECLOSED:
        return "the client was closed";
    case DLOCK_ECANCELED:
        return "the wait was cancelled";
    case DLOCK_ESYS:
        return "a system call failed";
    default:
        return "unknown error";
    }
}

const char *dlock_last_errmsg(void)
{
    return last_msg;
}

int dlock__err(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_msg, sizeof last_msg, fmt, ap);
    va_end(ap);
    return code;
}

int dlock__err_prefix(int code, const char *fmt, ...)
{
    char head[256], old[sizeof last_msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    memcpy(old, last_msg, sizeof old);
    snprintf(last_msg, sizeof last_msg, "%s: %s", head, old[0] ? old : dlock_strerror(code));
    return code;
}

void dlock__err_clear(void)
{
    last_msg[0] = '\0';
}
