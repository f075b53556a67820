/*
 * thread.c — a call run on a thread of its own (a blocking acquire, a
 * leader wait), watched by the test's main thread.
 *
 * Design. Tests that show a call blocks, and then ends for the right
 * reason, run it on a thread and observe it from outside: dh_thread_done()
 * is a dh_wait_until condition ("has it returned yet?"), dh_thread_join()
 * waits for the end with a bound and joins. The thread never calls cmocka:
 * it only stores the call's return value, the time it returned and its
 * last error message (thread-local: only the thread can read it). A
 * dh_thread whose test may fail while it runs must outlive the test
 * (static), since the thread still writes into it.
 */
#include "internal.h"

#include <stdio.h>

static void *thread_main(void *arg)
{
    dh_thread *t = arg;
    t->rc = t->fn(t->arg);
    t->ended_ms = dh_now_ms();
    snprintf(t->msg, sizeof t->msg, "%s", dlock_last_errmsg());
    atomic_store(&t->done, 1);
    return NULL;
}

void dh_thread_start(dh_thread *t, int (*fn)(void *arg), void *arg)
{
    t->fn = fn;
    t->arg = arg;
    t->rc = 1;
    t->ended_ms = 0;
    t->msg[0] = '\0';
    atomic_store(&t->done, 0);
    if (pthread_create(&t->th, NULL, thread_main, t) != 0)
        fail_msg("pthread_create failed");
}

int dh_thread_done(void *t)
{
    return atomic_load(&((dh_thread *)t)->done);
}

int dh_thread_join(dh_thread *t, int timeout_ms)
{
    if (!dh_wait_until(dh_thread_done, t, timeout_ms))
        fail_msg("the call on a thread did not return within %d ms", timeout_ms);
    pthread_join(t->th, NULL);
    return t->rc;
}

void dh_thread_expect(dh_thread *t, int timeout_ms, int want, const char *what)
{
    int rc = dh_thread_join(t, timeout_ms);
    if (rc != want)
        fail_msg("%s: got %d (%s), want %d (%s); %s", what, rc, dlock_strerror(rc), want,
                 dlock_strerror(want), t->msg);
}
