/*
 * multi.c — several mutexes at once, all or none (dlock_acquire_all).
 * The keys are checked and de-duplicated here; on Redis Cluster they must
 * share a slot, since one script takes them together. The protocol that
 * makes waiting for several keys deadlock-free and starvation-free is in
 * multi_acquire.lua.
 */
#include <string.h>

#include "acquire.h"
#include "alloc.h"
#include "error.h"

/* Cluster: one script must see every key, so they must share a slot. */
static int same_slot(dlock_client *c, const char *const *keys, size_t n)
{
    int rc = 0;
    char *a = NULL, *b = NULL;
    for (size_t i = 1; rc == 0 && i < n; i++) {
        rc = dlock__key_name(&a, c->prefix, keys[0], DLOCK__FAM_MUTEX, DLOCK__K_LOCK);
        if (rc == 0)
            rc = dlock__key_name(&b, c->prefix, keys[i], DLOCK__FAM_MUTEX, DLOCK__K_LOCK);
        if (rc == 0 && dlock__key_slot(a) != dlock__key_slot(b))
            rc = dlock__err(DLOCK_EINVAL,
                            "on Redis Cluster the keys of a multi-lock must share a "
                            "slot: '%s' and '%s' do not (give them a common {hash tag})",
                            keys[0], keys[i]);
        dlock__free(a);
        dlock__free(b);
        a = b = NULL;
    }
    return rc;
}

int dlock_acquire_all(dlock_lock **out, dlock_client *client, const char *const *keys, size_t n,
                      const dlock_lock_opts *opts)
{
    dlock_lock_opts o;
    int rc = dlock__acquire_check(out, client, &o, opts);
    if (rc)
        return rc;
    if (!keys || n == 0)
        return dlock__err(DLOCK_EINVAL, "no keys given");
    if (n > DLOCK_MULTI_MAX)
        return dlock__err(DLOCK_EINVAL, "%zu keys; at most %d can be locked together", n,
                          DLOCK_MULTI_MAX);
    const char *uniq[DLOCK_MULTI_MAX];
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if ((rc = dlock__key_check(keys[i])) != 0)
            return dlock__err_prefix(rc, "key %zu", i + 1);
        size_t j = 0;
        while (j < m && strcmp(uniq[j], keys[i]) != 0)
            j++;
        if (j == m)
            uniq[m++] = keys[i];
    }
    if (client->backend == DLOCK__BACKEND_CLUSTER && (rc = same_slot(client, uniq, m)) != 0)
        return rc;
    return dlock__acquire(out, client, m == 1 ? DLOCK__KIND_MUTEX : DLOCK__KIND_MULTI, uniq, m, 0,
                          1, &o);
}
