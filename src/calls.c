/*
 * calls.c — release, extend and keepalive calls of a handle (see calls.h).
 */
#include "calls.h"

#include <stdio.h>

static int group_size(const dlock_lock *l)
{
    return dlock__group_size(l->family);
}

void dlock__calls_release(const dlock_lock *l, dlock__call *calls, dlock__call_args *args)
{
    int script = l->kind == DLOCK__KIND_READ  ? DLOCK__S_READ_RELEASE
                 : l->kind == DLOCK__KIND_SEM ? DLOCK__S_SEM_RELEASE
                                              : DLOCK__S_RELEASE;
    args->v[0] = l->token;
    args->v[1] = "0"; /* not forced */
    for (size_t i = 0; i < l->nparts; i++)
        calls[i] = (dlock__call){ script, group_size(l), 2, (const char *const *)l->parts[i].names,
                                  args->v };
}

void dlock__calls_extend(const dlock_lock *l, dlock__call *calls, dlock__call_args *args,
                         int64_t ttl_ms)
{
    dlock__fmt_ll(args->ttl, ttl_ms);
    args->v[0] = l->token;
    args->v[1] = args->ttl;
    for (size_t i = 0; i < l->nparts; i++) {
        if (l->kind == DLOCK__KIND_READ || l->kind == DLOCK__KIND_SEM)
            calls[i] = (dlock__call){ DLOCK__S_MEMBER_EXTEND, group_size(l), 2,
                                      (const char *const *)l->parts[i].names, args->v };
        else /* the mutex key alone: LOCK is the first of the group */
            calls[i] = (dlock__call){ DLOCK__S_EXTEND, 1, 2, (const char *const *)l->parts[i].names,
                                      args->v };
    }
}

void dlock__calls_keepalive(const dlock_lock *l, int watching, dlock__call *call,
                            dlock__call_args *args)
{
    args->v[0] = l->token;
    args->v[1] = l->kind == DLOCK__KIND_READ    ? "r"
                 : l->kind == DLOCK__KIND_SEM   ? "s"
                 : l->kind == DLOCK__KIND_MULTI ? "m"
                                                : "w";
    args->v[2] = watching ? "1" : "0";
    *call =
        (dlock__call){ DLOCK__S_KEEPALIVE, l->nnames, 3, (const char *const *)l->names, args->v };
}
