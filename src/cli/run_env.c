/*
 * run_env.c — step 4 of a run (run.c): the environment CMD starts with.
 *
 * DLOCK_KEY and DLOCK_FENCING_TOKEN name the first key; DLOCK_KEYS and
 * DLOCK_FENCING_TOKENS list every key once, in the order given, each token
 * taken from our own handle or, for a key an outer run holds (a nested
 * run), from that run's line in DLOCK_HELD; DLOCK_SLOT and DLOCK_PERMITS
 * describe a semaphore hold. DLOCK_HELD gets this run's own holds appended,
 * so a run started by CMD finds them. What does not apply is removed, so CMD
 * never sees a value inherited from an outer dlock.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "run.h"

/* The fencing token of `key`: the outer hold's (cover, may be NULL) or our
 * handle's. */
static uint64_t fence_of(const run_ctx *c, const cli_held_entry *cover, const char *key)
{
    size_t i, n = c->lock != NULL ? dlock_lock_count(c->lock) : 0;

    if (cover != NULL)
        return cover->fence;
    for (i = 0; i < n; i++)
        if (strcmp(dlock_lock_key_at(c->lock, i), key) == 0)
            return dlock_lock_fencing_token_at(c->lock, i);
    return 0;
}

/* Append " text" (no space before the first) to the string *s of length
 * *len. Returns 0 or -1 (out of memory). */
static int join_word(char **s, size_t *len, const char *text)
{
    size_t n = strlen(text);
    char *b = realloc(*s, *len + n + 2);

    if (b == NULL)
        return -1;
    if (*len > 0)
        b[(*len)++] = ' ';
    memcpy(b + *len, text, n + 1);
    *len += n;
    *s = b;
    return 0;
}

/* DLOCK_KEYS and DLOCK_FENCING_TOKENS (each key once, in the order given)
 * into *keys and *tokens, and this run's own lines of DLOCK_HELD into
 * add[*nadd]. Returns 0 or -1 (out of memory). */
static int list_held(const run_ctx *c, char **keys, char **tokens, cli_held_entry *add,
                     size_t *nadd)
{
    size_t i, k, klen = 0, tlen = 0;
    char num[32];
    int slot = c->lock != NULL ? dlock_lock_slot(c->lock) : -1;
    int permits = c->lock != NULL ? dlock_lock_permits(c->lock) : 1;

    *nadd = 0;
    for (i = 0; i < c->o.nkeys; i++) {
        for (k = 0; k < i && strcmp(c->o.keys[k], c->o.keys[i]) != 0; k++)
            ;
        if (k < i)
            continue; /* a duplicate */
        uint64_t fence = fence_of(c, c->cover[i], c->o.keys[i]);
        snprintf(num, sizeof num, "%" PRIu64, fence);
        if (join_word(keys, &klen, c->o.keys[i]) != 0 || join_word(tokens, &tlen, num) != 0)
            return -1;
        if (c->cover[i] == NULL)
            add[(*nadd)++] =
                (cli_held_entry){ (long)getpid(), run_held_kind(c), fence,     slot,        permits,
                                  c->o.limit,     c->url_id,        c->prefix, c->o.keys[i] };
    }
    return 0;
}

/* Step 4's environment (run.h). Variables that do not apply (DLOCK_SLOT without
 * --limit; all but DLOCK_KEY with --rate) are removed, so CMD never sees a
 * value inherited from an outer dlock (DLOCK_HELD excepted: it is added
 * to). Returns 0 or an exit status (reported). */
int run_set_env(run_ctx *c)
{
    static const char *const lists[] = { "DLOCK_FENCING_TOKEN", "DLOCK_KEYS",
                                         "DLOCK_FENCING_TOKENS", "DLOCK_SLOT", "DLOCK_PERMITS" };
    char *keys = NULL, *tokens = NULL, *held = NULL, num[32], slot[16], permits[16];
    cli_held_entry add[DLOCK_MULTI_MAX];
    const cli_held_entry *pc = c->cover[0];
    size_t nadd = 0, i;
    int ex = cli_child_setenv(&c->child, "DLOCK_KEY", c->o.key);

    if (c->o.hold == HOLD_RATE) {
        for (i = 0; ex == 0 && i < sizeof lists / sizeof lists[0]; i++)
            ex = cli_child_setenv(&c->child, lists[i], NULL);
        return ex;
    }
    if (ex == 0 && (list_held(c, &keys, &tokens, add, &nadd) != 0 ||
                    (held = cli_held_append(c->held.inherited, add, nadd)) == NULL)) {
        cli_err("out of memory");
        ex = CLI_EX_SOFTWARE;
    }
    snprintf(num, sizeof num, "%" PRIu64, fence_of(c, pc, c->o.key));
    snprintf(slot, sizeof slot, "%d", pc != NULL ? pc->slot : dlock_lock_slot(c->lock));
    snprintf(permits, sizeof permits, "%d", pc != NULL ? pc->permits : dlock_lock_permits(c->lock));
    if (ex == 0)
        ex = cli_child_setenv(&c->child, "DLOCK_FENCING_TOKEN", num);
    if (ex == 0)
        ex = cli_child_setenv(&c->child, "DLOCK_KEYS", keys);
    if (ex == 0)
        ex = cli_child_setenv(&c->child, "DLOCK_FENCING_TOKENS", tokens);
    if (ex == 0)
        ex = cli_child_setenv(&c->child, "DLOCK_SLOT", c->o.hold == HOLD_PERMIT ? slot : NULL);
    if (ex == 0)
        ex =
            cli_child_setenv(&c->child, "DLOCK_PERMITS", c->o.hold == HOLD_PERMIT ? permits : NULL);
    if (ex == 0)
        ex = cli_child_setenv(&c->child, "DLOCK_HELD", held[0] != '\0' ? held : NULL);
    free(keys);
    free(tokens);
    free(held);
    return ex;
}
