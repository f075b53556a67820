/*
 * test_oom.c — out of memory, curl's torture mode: run core scenarios again
 * and again, making the Nth allocation inside libdlock fail for N = 0, 1,
 * 2, ... until a run needs no more allocations than N. Every step must
 * either succeed or fail cleanly with DLOCK_ENOMEM (or, for a lock whose
 * state a failure left unknown, a clear error), never crash; under the
 * ASan build (scripts/test.sh) LeakSanitizer checks at exit that no
 * failure path leaked.
 */
#include <string.h>

#include "alloc.h"
#include "harness.h"

static dh_redis *srv;

static int group_setup(void **state)
{
    (void)state;
    return dh_group_start(&srv, NULL);
}

static int group_teardown(void **state)
{
    dlock__alloc_fail_after(-1);
    return dh_group_teardown(state);
}

static int ok_or_enomem(int rc)
{
    return rc == 0 || rc == DLOCK_ENOMEM;
}

/* The primitives that hold nothing, each step succeeding or failing with
 * DLOCK_ENOMEM: a latch armed, counted down and waited for (subscribing
 * starts the listener), a barrier of one, a rate limiter's slot. Returns
 * 1 if every step succeeded. */
static int primitives(long n, dlock_client *c)
{
    int left, clean = 1, rc;
    for (int step = 0; step < 5; step++) {
        switch (step) {
        case 0:
            rc = dlock_latch_init(c, "oom:latch", 1, 60000);
            break;
        case 1:
            rc = dlock_latch_count_down(&left, c, "oom:latch");
            break;
        case 2:
            rc = dlock_latch_wait(c, "oom:latch", 1000, NULL);
            break;
        case 3:
            rc = dlock_barrier_wait(c, "oom:barrier", 1, 0, NULL);
            break;
        default:
            rc = dlock_rate_acquire(c, "oom:rate", 1000, 1000, 1000, 0, NULL);
            break;
        }
        /* after a failed init there is no latch to count down, and after a
         * failed init or count-down the wait runs out: not failures here */
        int follows =
            !clean && ((step == 1 && rc == DLOCK_EINVAL) || (step == 2 && rc == DLOCK_ETIMEDOUT));
        if (!ok_or_enomem(rc) && !follows)
            fail_msg("primitive step %d at n=%ld: %d %s", step, n, rc, dlock_last_errmsg());
        clean = clean && rc == 0;
    }
    return clean;
}

/* One scenario run with allocation failure injected after n allocations.
 * Returns 1 if it ran through without hitting the failure point. */
static int scenario(long n, int kind)
{
    dlock__alloc_fail_after(n);
    dlock_client *c = NULL;
    int rc = dlock_client_open(&c, srv->url, NULL);
    if (!ok_or_enomem(rc))
        fail_msg("open at n=%ld: %d %s", n, rc, dlock_last_errmsg());
    int clean = rc == 0;
    if (rc == 0 && kind == 3) {
        clean = primitives(n, c);
        dlock_client_close(c);
    } else if (rc == 0) {
        dlock_lock *l = NULL;
        if (kind == 0)
            rc = dlock_acquire(&l, c, "oom:mutex", NULL);
        else if (kind == 1)
            rc = dlock_sem_acquire(&l, c, "oom:sem", 2, NULL);
        else {
            const char *keys[2] = { "oom:{k}:a", "oom:{k}:b" };
            rc = dlock_acquire_all(&l, c, keys, 2, NULL);
        }
        if (!ok_or_enomem(rc))
            fail_msg("acquire at n=%ld: %d %s", n, rc, dlock_last_errmsg());
        clean = clean && rc == 0;
        if (rc == 0) {
            dlock_info info;
            rc = dlock_inspect(&info, c, "oom:mutex");
            if (!ok_or_enomem(rc))
                fail_msg("inspect at n=%ld: %d %s", n, rc, dlock_last_errmsg());
            clean = clean && rc == 0;
            rc = dlock_release(l);
            if (!ok_or_enomem(rc))
                fail_msg("release at n=%ld: %d %s", n, rc, dlock_last_errmsg());
            clean = clean && rc == 0;
        }
        dlock_client_close(c);
    }
    long made = dlock__alloc_fail_after(-1);
    /* a failed release leaves the lock to its TTL: clear it for the next run */
    dlock_client *admin = NULL;
    int removed;
    if (dlock_client_open(&admin, srv->url, NULL) == 0) {
        dlock_force_unlock(&removed, admin, "oom:mutex");
        dlock_force_unlock(&removed, admin, "oom:{k}:a");
        dlock_force_unlock(&removed, admin, "oom:{k}:b");
        dlock_client_close(admin);
    }
    dh_cmd_ok(srv, 0, "DEL dlock:{oom:sem}:sem dlock:{oom:sem}:sinfo");
    dh_cmd_ok(srv, 0, "DEL dlock:{oom:latch}:latch dlock:{oom:rate}:rate");
    return clean && made <= n;
}

static void torture(int kind)
{
    long n = 0;
    while (!scenario(n, kind)) {
        n++;
        assert_true(n < 2000); /* bounded: the scenario needs far fewer */
    }
    print_message("scenario %d: every one of the first %ld allocations failed in turn, cleanly\n",
                  kind, n);
}

static void test_oom_mutex(void **state)
{
    (void)state;
    torture(0);
}

static void test_oom_semaphore(void **state)
{
    (void)state;
    torture(1);
}

static void test_oom_multi(void **state)
{
    (void)state;
    torture(2);
}

static void test_oom_primitives(void **state)
{
    (void)state;
    torture(3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_oom_mutex),
        cmocka_unit_test(test_oom_semaphore),
        cmocka_unit_test(test_oom_multi),
        cmocka_unit_test(test_oom_primitives),
    };
    return cmocka_run_group_tests_name("oom", tests, group_setup, group_teardown);
}
