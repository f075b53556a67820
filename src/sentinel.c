/*
 * sentinel.c — asking the sentinels for the master (see sentinel.h).
 */
#include "sentinel.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "pool.h"

int dlock__sentinel_resolve(dlock_client *c)
{
    char why[300] = "no sentinel answered";
    for (int i = 0; i < c->nsentinels; i++) {
        dlock__conn_cfg cfg = {&c->sentinels[i], c->connect_timeout_ms, c->command_timeout_ms, NULL, NULL};
        dlock__conn *conn;
        if (dlock__conn_open(&conn, &cfg) != 0) {
            snprintf(why, sizeof why, "%s", dlock_last_errmsg());
            continue;
        }
        const char *argv[3] = {"SENTINEL", "get-master-addr-by-name", c->master_name};
        dlock__reply *r = NULL;
        int rc = dlock__conn_command(conn, &r, 3, argv, NULL);
        dlock__conn_close(conn);
        if (rc) {
            snprintf(why, sizeof why, "%s", dlock_last_errmsg());
            continue;
        }
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING ||
            r->element[1]->type != REDIS_REPLY_STRING) {
            snprintf(why, sizeof why, "sentinel %s does not know master '%s'", c->sentinels[i].desc,
                     c->master_name);
            dlock__reply_free(r);
            continue;
        }
        char *end;
        long port = strtol(r->element[1]->str, &end, 10);
        int bad_port = *end || port < 1 || port > 65535;
        char *host = bad_port ? NULL : dlock__strdup(r->element[0]->str);
        dlock__reply_free(r);
        if (bad_port) {
            snprintf(why, sizeof why, "sentinel %s gave a bad port", c->sentinels[i].desc);
            continue;
        }
        if (!host)
            return dlock__err(DLOCK_ENOMEM, "out of memory");
        dlock__node *nd = &c->nodes[0];
        pthread_mutex_lock(&c->mu);
        if (!nd->ep.host || strcmp(nd->ep.host, host) != 0 || nd->ep.port != (int)port) {
            dlock__free(nd->ep.host);
            nd->ep.host = host;
            host = NULL;
            nd->ep.port = (int)port;
            snprintf(nd->ep.desc, sizeof nd->ep.desc, strchr(nd->ep.host, ':') ? "[%s]:%d" : "%s:%d",
                     nd->ep.host, nd->ep.port);
            nd->gen++;
            dlock__pool_drain(nd);
        }
        pthread_mutex_unlock(&c->mu);
        dlock__free(host);
        return 0;
    }
    return dlock__err(DLOCK_ECONN, "cannot find master '%s' through the sentinels: %s", c->master_name, why);
}

