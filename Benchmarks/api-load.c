// A compiled load generator for refreshd's control API: keep-alive HTTP/1.1 over the unix socket
// or a TCP listener, C connections with one request outstanding each, driven by one thread with
// epoll (so the client costs less than the server it measures, as wrk does; wrk has no unix
// sockets). Prints requests/s and latency percentiles as one JSON line.
//
//   cc -O2 -o api-load Benchmarks/api-load.c
//   api-load TARGET CONNECTIONS SECONDS PATH
//     TARGET  unix:/run/refreshd/refreshd.sock or 127.0.0.1:8470
//     PATH    a request path; "{seg}" becomes a segment id cycling over 10,000, "{acct}" an
//             account name acct-(segment % ACCOUNTS) with ACCOUNTS from the environment (default 1,
//             then "default")
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int fd;
    double sent;
    char buf[1 << 16];
    size_t have;
} conn_t;

static const char *target, *pattern;
static int accounts = 1;
static long counter = 0;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int dial(void) {
    int fd;
    if (strncmp(target, "unix:", 5) == 0) {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        strncpy(a.sun_path, target + 5, sizeof a.sun_path - 1);
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) { perror(target); exit(1); }
    } else {
        char host[64];
        const char *colon = strrchr(target, ':');
        snprintf(host, sizeof host, "%.*s", (int)(colon - target), target);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(colon + 1))};
        inet_pton(AF_INET, host, &a.sin_addr);
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) { perror(target); exit(1); }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

static void send_request(conn_t *c) {
    char path[512], req[1024];
    long seg = counter++ % 10000;
    char acct[32];
    if (accounts > 1) snprintf(acct, sizeof acct, "acct-%ld", seg % accounts);
    else snprintf(acct, sizeof acct, "default");
    size_t o = 0;
    for (const char *p = pattern; *p && o < sizeof path - 64;) {
        if (strncmp(p, "{seg}", 5) == 0) { o += sprintf(path + o, "00000000-0000-4000-8000-%012ld", seg); p += 5; }
        else if (strncmp(p, "{acct}", 6) == 0) { o += sprintf(path + o, "%s", acct); p += 6; }
        else path[o++] = *p++;
    }
    path[o] = 0;
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: refreshd\r\n\r\n", path);
    c->sent = now();
    c->have = 0;
    if (write(c->fd, req, n) != n) { perror("write"); exit(1); }
}

// The length of a complete response in the buffer, or 0 while it is incomplete.
static size_t complete(conn_t *c) {
    c->buf[c->have] = 0;
    char *end = strstr(c->buf, "\r\n\r\n");
    if (!end) return 0;
    if (strncmp(c->buf, "HTTP/1.1 200", 12) != 0) {
        fprintf(stderr, "not 200: %.200s\n", c->buf);
        exit(1);
    }
    char *cl = strcasestr(c->buf, "content-length:");
    if (!cl || cl > end) { fprintf(stderr, "no content-length\n"); exit(1); }
    size_t total = (end + 4 - c->buf) + strtoul(cl + 15, NULL, 10);
    return c->have >= total ? total : 0;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: api-load TARGET CONNECTIONS SECONDS PATH\n");
        return 64;
    }
    target = argv[1];
    int n = atoi(argv[2]);
    double seconds = atof(argv[3]);
    pattern = argv[4];
    if (getenv("ACCOUNTS")) accounts = atoi(getenv("ACCOUNTS"));
    size_t cap = 1 << 22, count = 0;
    double *lat = malloc(cap * sizeof *lat);
    conn_t *conns = calloc(n, sizeof *conns);
    int ep = epoll_create1(0);
    for (int i = 0; i < n; i++) {
        conns[i].fd = dial();
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = &conns[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &e);
    }
    double start = now(), stop = start + seconds, worst = 0;
    for (int i = 0; i < n; i++) send_request(&conns[i]);
    struct epoll_event events[256];
    while (now() < stop) {
        int k = epoll_wait(ep, events, 256, 100);
        for (int i = 0; i < k; i++) {
            conn_t *c = events[i].data.ptr;
            ssize_t r = read(c->fd, c->buf + c->have, sizeof c->buf - 1 - c->have);
            if (r <= 0) { fprintf(stderr, "connection closed by the server\n"); return 1; }
            c->have += r;
            if (!complete(c)) continue;
            double l = now() - c->sent;
            if (l > worst) worst = l;
            if (count < cap) lat[count++] = l;
            send_request(c);
        }
    }
    double elapsed = now() - start;
    qsort(lat, count, sizeof *lat, cmp);
#define P(q) (count ? lat[(size_t)((count - 1) * (q))] * 1000 : 0)
    printf("{\"target\": \"%s\", \"path\": \"%s\", \"connections\": %d, \"seconds\": %.1f, \"requests\": %zu, "
           "\"rps\": %.0f, \"p50_ms\": %.3f, \"p90_ms\": %.3f, \"p99_ms\": %.3f, \"p999_ms\": %.3f, \"max_ms\": %.3f}\n",
           target, pattern, n, elapsed, count, count / elapsed, P(0.5), P(0.9), P(0.99), P(0.999), worst * 1000);
    return 0;
}
