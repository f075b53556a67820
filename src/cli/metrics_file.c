/*
 * metrics_file.c — `dlock run --metrics-file F`: the client's metrics in
 * Prometheus text, for node_exporter's textfile collector, which must never
 * read half a file: written to F.tmp.<pid> in the same directory and renamed
 * over F in one step.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* Step 7: write the client's metrics to `path` through a temporary file in
 * the same directory and rename(2), which replaces the old file in one
 * step. Reports a failure; the exit status does not depend on it. */
void cli_write_metrics_file(dlock_client *client, const char *path)
{
    size_t n = strlen(path) + 32;
    char *tmp = malloc(n);
    FILE *f = NULL;
    int fd = -1, rc, ok = 0, err = 0;

    if (tmp == NULL) {
        cli_err("--metrics-file: out of memory");
        return;
    }
    snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0)
        f = fdopen(fd, "w");
    if (f == NULL) {
        err = errno;
        if (fd >= 0)
            close(fd);
    } else {
        rc = dlock_metrics_write(client, f);
        err = errno;
        if (fclose(f) != 0 && rc == 0) {
            rc = DLOCK_ECONN;
            err = errno;
        }
        if (rc == 0 && rename(tmp, path) == 0)
            ok = 1;
        else if (rc == 0)
            err = errno;
        if (!ok)
            unlink(tmp);
    }
    if (!ok)
        cli_err("--metrics-file %s: %s", path, err != 0 ? strerror(err) : "write failed");
    free(tmp);
}
