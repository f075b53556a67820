/*
 * net.c — loopback ports for the tests: free ports for servers, closed
 * ports ("unreachable server") and listeners that never accept ("slow
 * connect").
 *
 * Design. Only loopback is ever used (DESIGN.md: an unreachable server is
 * a closed loopback port, a slow connect a loopback listener that never
 * accepts). A closed port is a socket bound and never listening, kept open
 * until dh_cleanup(), so nobody else can take the port while a test points
 * at it; connects to it are refused at once. Port 6379 is never handed
 * out, so a test cannot touch a developer's own server.
 */
#include "internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct sockaddr_in loopback(int port)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    return a;
}

int dh__loopback_socket(int *port_out)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = loopback(0);
    socklen_t alen = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &alen) != 0) {
        close(fd);
        return -1;
    }
    *port_out = ntohs(a.sin_port);
    return fd;
}

int dh_free_port(void)
{
    /* Never 6379; at most 55535, so that a cluster node's bus port
     * (port + 10000) exists too. */
    for (int i = 0; i < 200; i++) {
        int port;
        int fd = dh__loopback_socket(&port);
        if (fd < 0)
            return -1;
        close(fd);
        if (port != 6379 && port > 1024 && port <= 55535)
            return port;
    }
    return -1;
}

int dh_closed_port(void)
{
    dh__reg_init();
    for (int i = 0; i < 20; i++) {
        int port;
        int fd = dh__loopback_socket(&port);
        if (fd < 0)
            return -1;
        if (port == 6379) {
            close(fd);
            continue;
        }
        /* Bound but not listening: connects get RST (refused), and no
         * one else can take the port while we hold it. */
        dh__reg_add_fd(fd);
        return port;
    }
    return -1;
}

const char *dh_closed_url(char *buf, size_t len)
{
    snprintf(buf, len, "redis://127.0.0.1:%d", dh_closed_port());
    return buf;
}

int dh_noaccept_listener(void)
{
    dh__reg_init();
    int port;
    int fd = dh__loopback_socket(&port);
    if (fd < 0)
        return -1;
    if (port == 6379 || listen(fd, 0) != 0) {
        close(fd);
        return -1;
    }
    dh__reg_add_fd(fd);
    /* Fill the accept queue (backlog 0 holds one connection) so that later
     * SYNs are dropped and connects stall, like an overloaded server. Even
     * if a later connect did complete, nothing would ever answer it. */
    struct sockaddr_in a = loopback(port);
    for (int i = 0; i < 8; i++) {
        int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (c < 0)
            break;
        dh__reg_add_fd(c);
        if (connect(c, (struct sockaddr *)&a, sizeof a) == 0)
            continue;
        if (errno != EINPROGRESS)
            break;
        struct pollfd pfd = { c, POLLOUT, 0 };
        if (poll(&pfd, 1, 200) == 0)
            break; /* this connect stalls: the queue is full */
    }
    return port;
}
