/*
 * consumer.c — a program built against an installed dlock (find_package or
 * pkg-config, see check.sh): prints the library's version, checks that the
 * header and the library agree, and with a URL takes and releases a lock.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <dlock.h>

int main(int argc, char **argv)
{
    dlock_client *c = NULL;
    dlock_lock *l = NULL;
    int rc;

    printf("dlock %s\n", dlock_version());
    if (strcmp(dlock_version(), DLOCK_VERSION_STRING) != 0) {
        fprintf(stderr, "header %s, library %s\n", DLOCK_VERSION_STRING, dlock_version());
        return 2;
    }
    if (argc < 2)
        return 0;
    rc = dlock_client_open(&c, argv[1], NULL);
    if (rc == 0)
        rc = dlock_try_acquire(&l, c, "install:consumer", NULL);
    if (rc != 0) {
        fprintf(stderr, "%s: %s\n", dlock_strerror(rc), dlock_last_errmsg());
        dlock_client_close(c);
        return 1;
    }
    printf("fencing token %" PRIu64 "\n", dlock_lock_fencing_token(l));
    rc = dlock_release(l);
    dlock_client_close(c);
    return rc == 0 ? 0 : 1;
}
