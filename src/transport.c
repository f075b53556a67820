/*
 * transport.c — non-blocking TCP and unix-socket streams, and the fault
 * injector used by tests (see transport.h).
 *
 * connect() is started non-blocking and completed with poll() under the
 * caller's deadline, trying each address getaddrinfo() returns, so neither a
 * closed port nor a listener that never answers can hold a caller longer
 * than its connect timeout. TCP_NODELAY is set: lock traffic is many small
 * request/reply exchanges where Nagle's delay would be pure latency.
 */
#include "transport.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "clock.h"
#include "error.h"

typedef struct sock_transport {
    dlock__transport base;
    int fd;
    char desc[128];
} sock_transport;

static ssize_t sock_read(dlock__transport *t, void *buf, size_t n, int *want)
{
    sock_transport *s = (sock_transport *)t;
    for (;;) {
        ssize_t r = recv(s->fd, buf, n, 0);
        if (r > 0)
            return r;
        if (r == 0)
            return dlock__err(DLOCK_ECONN, "%s: connection closed by the server", s->desc);
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            *want = POLLIN;
            return DLOCK__IO_AGAIN;
        }
        return dlock__err(DLOCK_ECONN, "%s: read: %s", s->desc, strerror(errno));
    }
}

static ssize_t sock_write(dlock__transport *t, const void *buf, size_t n, int *want)
{
    sock_transport *s = (sock_transport *)t;
    for (;;) {
        ssize_t r = send(s->fd, buf, n, MSG_NOSIGNAL);
        if (r >= 0)
            return r > 0 ? r : DLOCK__IO_AGAIN;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            *want = POLLOUT;
            return DLOCK__IO_AGAIN;
        }
        return dlock__err(DLOCK_ECONN, "%s: write: %s", s->desc, strerror(errno));
    }
}

static int sock_poll_fd(dlock__transport *t)
{
    return ((sock_transport *)t)->fd;
}

static void sock_close(dlock__transport *t)
{
    sock_transport *s = (sock_transport *)t;
    if (s->fd >= 0)
        close(s->fd);
    dlock__free(s);
}

static const dlock__transport_ops sock_ops = { sock_read, sock_write, sock_poll_fd, sock_close,
                                               NULL };

int dlock__transport_wait(dlock__transport *t, int events, int64_t deadline_ns)
{
    if ((events & POLLIN) && t->ops->pending && t->ops->pending(t))
        return 0; /* already decrypted data waits above the socket */
    struct pollfd p = { .fd = t->ops->poll_fd(t), .events = (short)events };
    for (;;) {
        int64_t left_ns = deadline_ns - dlock__now_ns();
        if (left_ns <= 0)
            return DLOCK_ETIMEDOUT;
        int ms = (int)((left_ns + 999999) / 1000000);
        int r = poll(&p, 1, ms);
        if (r > 0)
            return 0; /* readable, writable, or an error the next I/O reports */
        if (r < 0 && errno != EINTR)
            return dlock__err(DLOCK_ECONN, "%s: poll: %s", t->desc, strerror(errno));
    }
}

/* Start a non-blocking connect of a fresh socket to addr and finish it
 * before the deadline. Returns the connected fd or a negative code. */
static int connect_one(int family, const struct sockaddr *addr, socklen_t alen, const char *desc,
                       int64_t deadline_ns)
{
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return dlock__err(DLOCK_ECONN, "%s: socket: %s", desc, strerror(errno));
    if (connect(fd, addr, alen) != 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        return dlock__err(DLOCK_ECONN, "connect to %s: %s", desc, strerror(e));
    }
    struct pollfd p = { .fd = fd, .events = POLLOUT };
    for (;;) {
        int64_t left_ns = deadline_ns - dlock__now_ns();
        if (left_ns <= 0) {
            close(fd);
            return dlock__err(DLOCK_ECONN, "connect to %s: timed out", desc);
        }
        int r = poll(&p, 1, (int)((left_ns + 999999) / 1000000));
        if (r > 0)
            break;
        if (r < 0 && errno != EINTR) {
            int e = errno;
            close(fd);
            return dlock__err(DLOCK_ECONN, "connect to %s: %s", desc, strerror(e));
        }
    }
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
        soerr = errno;
    if (soerr != 0) {
        close(fd);
        return dlock__err(DLOCK_ECONN, "connect to %s: %s", desc, strerror(soerr));
    }
    if (family != AF_UNIX) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

int dlock__transport_connect(dlock__transport **out, const dlock__endpoint *ep, int64_t deadline_ns)
{
    *out = NULL;
    int fd = -1;
    if (ep->kind == DLOCK__EP_UNIX) {
        struct sockaddr_un sa;
        memset(&sa, 0, sizeof sa);
        sa.sun_family = AF_UNIX;
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", ep->path);
        fd = connect_one(AF_UNIX, (struct sockaddr *)&sa, sizeof sa, ep->desc, deadline_ns);
    } else {
        struct addrinfo hints, *res = NULL;
        memset(&hints, 0, sizeof hints);
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_family = AF_UNSPEC;
        char port[16];
        snprintf(port, sizeof port, "%d", ep->port);
        int gai = getaddrinfo(ep->host, port, &hints, &res);
        if (gai != 0)
            return dlock__err(gai == EAI_MEMORY ? DLOCK_ENOMEM : DLOCK_ECONN,
                              "cannot resolve %s: %s", ep->host, gai_strerror(gai));
        fd = DLOCK_ECONN;
        if (!res)
            dlock__err(DLOCK_ECONN, "cannot resolve %s: no address", ep->host);
        for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
            fd = connect_one(ai->ai_family, ai->ai_addr, ai->ai_addrlen, ep->desc, deadline_ns);
            if (fd >= 0)
                break;
        }
        freeaddrinfo(res);
    }
    if (fd < 0)
        return fd;
    sock_transport *s = dlock__calloc(1, sizeof *s);
    if (!s) {
        close(fd);
        return dlock__err(DLOCK_ENOMEM, "out of memory");
    }
    s->base.ops = &sock_ops;
    snprintf(s->desc, sizeof s->desc, "%s", ep->desc);
    s->base.desc = s->desc;
    s->fd = fd;
    *out = &s->base;
    return 0;
}

/* ------------------------------------------------------- fault injection */

/* The delay fault: a write starts a hold (unless one is running) that ends
 * delay_ms later; until then reads find nothing and the transport's poll
 * descriptor is a timer that fires when the hold ends, so a caller that
 * polls sleeps through the delay instead of spinning. The first read after
 * the hold ends it; the next write starts another. */
typedef struct fault_transport {
    dlock__transport base;
    dlock__transport *inner;
    dlock__faults f;
    long reads, writes;
    int stall_fd[2]; /* a pipe nobody writes: polling it never fires */
    int delay_fd;    /* the delay fault's timer (CLOCK_MONOTONIC), or -1 */
    int holding;     /* a hold is running: replies wait for hold_until */
    int64_t hold_until;
} fault_transport;

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* 1 while a hold of the delay fault runs (replies not delivered yet). */
static int held_back(const fault_transport *ft)
{
    return ft->holding && mono_ns() < ft->hold_until;
}

static ssize_t fault_read(dlock__transport *t, void *buf, size_t n, int *want)
{
    fault_transport *ft = (fault_transport *)t;
    ft->reads++;
    if (ft->f.reset_after_reads && ft->reads >= ft->f.reset_after_reads)
        return dlock__err(DLOCK_ECONN, "%s: read: Connection reset by peer (injected)", t->desc);
    if (ft->f.stall_after_reads && ft->reads >= ft->f.stall_after_reads) {
        *want = POLLIN;
        return DLOCK__IO_AGAIN;
    }
    if (held_back(ft)) {
        *want = POLLIN;
        return DLOCK__IO_AGAIN;
    }
    ft->holding = 0;
    if (ft->f.short_read && n > ft->f.short_read)
        n = ft->f.short_read;
    return ft->inner->ops->read(ft->inner, buf, n, want);
}

static ssize_t fault_write(dlock__transport *t, const void *buf, size_t n, int *want)
{
    fault_transport *ft = (fault_transport *)t;
    ft->writes++;
    if (ft->f.reset_after_writes && ft->writes >= ft->f.reset_after_writes)
        return dlock__err(DLOCK_ECONN, "%s: write: Connection reset by peer (injected)", t->desc);
    if (ft->f.short_write && n > ft->f.short_write)
        n = ft->f.short_write;
    ssize_t w = ft->inner->ops->write(ft->inner, buf, n, want);
    if (w > 0 && ft->delay_fd >= 0 && !ft->holding && ft->writes >= ft->f.delay_from_write) {
        ft->holding = 1;
        ft->hold_until = mono_ns() + (int64_t)ft->f.delay_ms * 1000000;
        struct itimerspec its = { .it_value = { (time_t)(ft->hold_until / 1000000000),
                                                (long)(ft->hold_until % 1000000000) } };
        timerfd_settime(ft->delay_fd, TFD_TIMER_ABSTIME, &its, NULL);
    }
    return w;
}

static int fault_poll_fd(dlock__transport *t)
{
    fault_transport *ft = (fault_transport *)t;
    if (ft->f.stall_after_reads && ft->reads >= ft->f.stall_after_reads)
        return ft->stall_fd[0];
    if (held_back(ft))
        return ft->delay_fd;
    return ft->inner->ops->poll_fd(ft->inner);
}

static void fault_close(dlock__transport *t)
{
    fault_transport *ft = (fault_transport *)t;
    ft->inner->ops->close(ft->inner);
    close(ft->stall_fd[0]);
    close(ft->stall_fd[1]);
    if (ft->delay_fd >= 0)
        close(ft->delay_fd);
    dlock__free(ft);
}

static int fault_pending(dlock__transport *t)
{
    fault_transport *ft = (fault_transport *)t;
    return !held_back(ft) && ft->inner->ops->pending && ft->inner->ops->pending(ft->inner);
}

static const dlock__transport_ops fault_ops = { fault_read, fault_write, fault_poll_fd, fault_close,
                                                fault_pending };

int dlock__transport_inject(dlock__transport **t, const dlock__faults *f)
{
    fault_transport *ft = dlock__calloc(1, sizeof *ft);
    if (!ft)
        return dlock__err(DLOCK_ENOMEM, "out of memory");
    if (pipe2(ft->stall_fd, O_CLOEXEC) != 0) {
        dlock__free(ft);
        return dlock__err(DLOCK_ENOMEM, "pipe: %s", strerror(errno));
    }
    ft->delay_fd = -1;
    if (f->delay_ms > 0 &&
        (ft->delay_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)) < 0) {
        int e = errno;
        close(ft->stall_fd[0]);
        close(ft->stall_fd[1]);
        dlock__free(ft);
        return dlock__err(DLOCK_ENOMEM, "timerfd_create: %s", strerror(e));
    }
    ft->base.ops = &fault_ops;
    ft->base.desc = (*t)->desc;
    ft->inner = *t;
    ft->f = *f;
    *t = &ft->base;
    return 0;
}
