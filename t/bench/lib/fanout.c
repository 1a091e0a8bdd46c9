/*
 * fanout.c - the load client of t/bench/chat-fanout: one thread, epoll,
 * many WebSocket clients in one room plus one publisher; latency from a
 * timestamp inside each message.  A test client: the handshake and the
 * masked client frames are written by hand (RFC 6455, only what is needed).
 *
 *   fanout -p PORT -s SUBPATH -P PUBPATH -n CLIENTS -c COOKIEFILE
 *          -m json|raw -r 10,20,50,... -t STEP_SECONDS -w PID,PID
 *
 * COOKIEFILE: one Cookie header value a line, used round-robin (empty: no
 * cookie).  -m json: the publisher sends {"type":"message","text":"ts:N"}
 * (the platform chat); raw: the text "ts:N" (nchan's websocket pubsub).
 * A received text frame holding "ts:N" is a delivery; N is the send time
 * in microseconds (CLOCK_MONOTONIC, same process).
 *
 * Prints one line a step:
 *   step RATE sent S expected E delivered D p50_ms X p99_ms Y
 * and before them:
 *   connected N rss_before_kb A rss_idle_kb B     (sum over -w pids)
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUCKET_US   100                 /* histogram resolution */
#define NBUCKETS    (60 * 1000000 / BUCKET_US)
#define MAX_PENDING 200                 /* handshakes at once */

typedef struct {
    int       fd;
    int       state;                    /* 0 connecting, 1 handshake, 2 open, 3 dead */
    char     *buf;
    size_t    len, size;
} conn_t;

static conn_t   *conns;
static int       nconns, ep;
static uint32_t *hist;
static uint64_t  delivered, late_over, frames_in;
static int       json_mode = 1;
static uint64_t  step_start_us;

static uint64_t
now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void
die(const char *m)
{
    perror(m);
    exit(1);
}

static long
rss_kb(const char *pids)
{
    char path[64], line[256], *copy, *p, *save = NULL;
    long total = 0;
    FILE *f;

    if (pids == NULL) {
        return 0;
    }
    copy = strdup(pids);
    for (p = strtok_r(copy, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        snprintf(path, sizeof(path), "/proc/%s/status", p);
        f = fopen(path, "r");
        if (f == NULL) {
            continue;
        }
        while (fgets(line, sizeof(line), f)) {
            if (strncmp(line, "VmRSS:", 6) == 0) {
                total += atol(line + 6);
            }
        }
        fclose(f);
    }
    free(copy);
    return total;
}

static void
write_all(int fd, const char *b, size_t n)
{
    ssize_t w;
    while (n) {
        w = write(fd, b, n);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                continue;               /* a test client: spin */
            }
            return;
        }
        b += w;
        n -= w;
    }
}

/* a masked client frame (mask 0: the payload XOR 0 is the payload) */
static void
send_frame(conn_t *c, int opcode, const char *p, size_t n)
{
    char h[14 + 8192];
    size_t hl = 0;

    if (n > 8192) {
        return;
    }
    h[hl++] = (char) (0x80 | opcode);
    if (n < 126) {
        h[hl++] = (char) (0x80 | n);
    } else {
        h[hl++] = (char) (0x80 | 126);
        h[hl++] = (char) (n >> 8);
        h[hl++] = (char) (n & 0xff);
    }
    memset(h + hl, 0, 4);
    hl += 4;
    memcpy(h + hl, p, n);
    write_all(c->fd, h, hl + n);
}

static int
start_connect(conn_t *c, struct sockaddr_in *sa)
{
    struct epoll_event ev;
    int one = 1;

    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) {
        die("socket");
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, (struct sockaddr *) sa, sizeof(*sa)) < 0
        && errno != EINPROGRESS)
    {
        die("connect");
    }
    c->state = 0;
    c->size = 4096;
    c->buf = malloc(c->size);
    c->len = 0;
    ev.events = EPOLLIN | EPOLLOUT;
    ev.data.ptr = c;
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    return 0;
}

static void
frame(conn_t *c, int opcode, const char *p, size_t n)
{
    const char *t;
    uint64_t ts, now, lat;

    frames_in++;

    if (opcode == 9) {
        send_frame(c, 10, p, n);
        return;
    }
    if (opcode == 8) {
        c->state = 3;
        return;
    }
    if (opcode != 1 || c == &conns[0]) {
        return;
    }
    if (n > 12 && memcmp(p, "{\"type\":\"wel", 12) == 0) {
        return;                         /* history of earlier steps */
    }
    t = memmem(p, n, "ts:", 3);
    if (t == NULL) {
        return;
    }
    ts = strtoull(t + 3, NULL, 10);
    if (ts < step_start_us) {
        return;
    }
    now = now_us();
    lat = now > ts ? (now - ts) / BUCKET_US : 0;
    if (lat >= NBUCKETS) {
        lat = NBUCKETS - 1;
        late_over++;
    }
    hist[lat]++;
    delivered++;
}

static void
on_read(conn_t *c)
{
    ssize_t r;
    size_t off, hl, plen;
    unsigned char *b;
    char *e;

    for ( ;; ) {
        if (c->size - c->len < 2048) {
            c->size *= 2;
            c->buf = realloc(c->buf, c->size);
        }
        r = read(c->fd, c->buf + c->len, c->size - c->len);
        if (r == 0) {
            c->state = 3;
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            close(c->fd);
            return;
        }
        if (r < 0) {
            if (errno != EAGAIN && errno != EINTR) {
                c->state = 3;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
            }
            return;
        }
        c->len += r;

        if (c->state == 1) {
            e = memmem(c->buf, c->len, "\r\n\r\n", 4);
            if (e == NULL) {
                continue;
            }
            if (c->len < 12 || memcmp(c->buf + 9, "101", 3) != 0) {
                fprintf(stderr, "handshake refused: %.*s\n",
                        (int) (c->len < 200 ? c->len : 200), c->buf);
                exit(1);
            }
            off = e + 4 - c->buf;
            memmove(c->buf, c->buf + off, c->len - off);
            c->len -= off;
            c->state = 2;
        }

        off = 0;
        while (c->len - off >= 2) {
            b = (unsigned char *) c->buf + off;
            plen = b[1] & 0x7f;
            hl = 2;
            if (plen == 126) {
                if (c->len - off < 4) break;
                plen = (b[2] << 8) | b[3];
                hl = 4;
            } else if (plen == 127) {
                if (c->len - off < 10) break;
                plen = 0;
                for (int i = 0; i < 8; i++) plen = (plen << 8) | b[2 + i];
                hl = 10;
            }
            if (c->len - off < hl + plen) {
                if (hl + plen > c->size) {
                    c->size = hl + plen + 4096;
                    c->buf = realloc(c->buf, c->size);
                }
                break;
            }
            frame(c, b[0] & 0x0f, (char *) b + hl, plen);
            off += hl + plen;
        }
        if (off) {
            memmove(c->buf, c->buf + off, c->len - off);
            c->len -= off;
        }
    }
}

static int opened, pending;
static char **cookies;
static int ncookies;
static const char *host_port, *sub_path, *pub_path;

static void
handshake(conn_t *c, const char *path, int i)
{
    char req[4096];
    int n;
    struct epoll_event ev;

    n = snprintf(req, sizeof(req),
                 "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 "Sec-WebSocket-Version: 13\r\n%s%s%s\r\n",
                 path, host_port,
                 ncookies ? "Cookie: " : "",
                 ncookies ? cookies[i % ncookies] : "",
                 ncookies ? "\r\n" : "");
    write_all(c->fd, req, n);
    c->state = 1;
    ev.events = EPOLLIN;
    ev.data.ptr = c;
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void
poll_once(int timeout_ms, const char *path)
{
    struct epoll_event evs[512];
    int n, i;
    conn_t *c;

    n = epoll_wait(ep, evs, 512, timeout_ms);
    for (i = 0; i < n; i++) {
        c = evs[i].data.ptr;
        if (c->state == 0) {
            if (evs[i].events & (EPOLLERR | EPOLLHUP)) {
                fprintf(stderr, "connect failed (client %d)\n", (int) (c - conns));
                exit(1);
            }
            handshake(c, c == &conns[0] ? pub_path : sub_path, (int) (c - conns));
            continue;
        }
        if (c->state == 3) {
            continue;
        }
        {
            int was = c->state;
            on_read(c);
            if (was == 1 && c->state == 2) {
                opened++;
                pending--;
            }
        }
    }
}

static void
quantiles(uint64_t total, double *p50, double *p99)
{
    uint64_t acc = 0, q50 = (total + 1) / 2, q99 = (total * 99 + 99) / 100;
    int i, got50 = 0;

    *p50 = *p99 = -1;
    for (i = 0; i < NBUCKETS; i++) {
        acc += hist[i];
        if (!got50 && acc >= q50) {
            *p50 = (i + 0.5) * BUCKET_US / 1000.0;
            got50 = 1;
        }
        if (acc >= q99) {
            *p99 = (i + 0.5) * BUCKET_US / 1000.0;
            return;
        }
    }
}

int
main(int argc, char **argv)
{
    int port = 0, n = 1000, opt, i, step_secs = 3, nrates = 0;
    const char *sub = "/", *pub = NULL, *cookie_file = NULL, *rates = "10,20,50,100,167,200,400",
               *pids = NULL;
    int rate_list[64];
    struct sockaddr_in sa;
    char line[8192], *p, *save = NULL, msg[256], hp[64];
    FILE *f;
    long rss0, rss1;
    uint64_t t0, sent, expected, end;
    double p50, p99;

    while ((opt = getopt(argc, argv, "p:s:P:n:c:m:r:t:w:")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 's': sub = optarg; break;
        case 'P': pub = optarg; break;
        case 'n': n = atoi(optarg); break;
        case 'c': cookie_file = optarg; break;
        case 'm': json_mode = strcmp(optarg, "raw") != 0; break;
        case 'r': rates = optarg; break;
        case 't': step_secs = atoi(optarg); break;
        case 'w': pids = optarg; break;
        default: fprintf(stderr, "usage: see fanout.c\n"); return 2;
        }
    }
    if (pub == NULL) pub = sub;
    sub_path = sub;
    pub_path = pub;

    if (cookie_file) {
        f = fopen(cookie_file, "r");
        if (f == NULL) die(cookie_file);
        while (fgets(line, sizeof(line), f)) {
            line[strcspn(line, "\r\n")] = '\0';
            if (*line == '\0') continue;
            cookies = realloc(cookies, sizeof(char *) * (ncookies + 1));
            cookies[ncookies++] = strdup(line);
        }
        fclose(f);
    }
    for (p = strtok_r(strdup(rates), ",", &save); p && nrates < 64;
         p = strtok_r(NULL, ",", &save))
    {
        rate_list[nrates++] = atoi(p);
    }

    snprintf(hp, sizeof(hp), "127.0.0.1:%d", port);
    host_port = hp;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    hist = calloc(NBUCKETS, sizeof(uint32_t));
    ep = epoll_create1(0);
    nconns = n + 1;
    conns = calloc(nconns, sizeof(conn_t));

    rss0 = rss_kb(pids);

    /* conns[0] is the publisher; then the subscribers, MAX_PENDING at once */
    for (i = 0; i < nconns || pending; ) {
        while (i < nconns && pending < MAX_PENDING) {
            start_connect(&conns[i], &sa);
            pending++;
            i++;
        }
        poll_once(100, sub);
    }

    /*
     * settle: the welcomes and the join notices (the platform chat sends
     * every client's "joined" to everyone in the room: N*N/2 frames) until
     * nothing came for a second, at most 120 s
     */
    end = now_us() + 120000000;
    for ( ;; ) {
        uint64_t before = frames_in, quiet = now_us() + 1000000;
        while (now_us() < quiet) poll_once(50, sub);
        if (frames_in == before || now_us() > end) break;
    }
    rss1 = rss_kb(pids);
    printf("connected %d rss_before_kb %ld rss_idle_kb %ld\n", opened - 1, rss0, rss1);
    fflush(stdout);

    if (json_mode) {
        const char *o = "{\"type\":\"options\",\"echo\":false}";
        send_frame(&conns[0], 1, o, strlen(o));
    }

    for (int s = 0; s < nrates; s++) {
        int rate = rate_list[s];
        int alive = 0;
        uint64_t next;

        for (i = 1; i < nconns; i++) alive += conns[i].state == 2;
        memset(hist, 0, NBUCKETS * sizeof(uint32_t));
        delivered = 0;
        late_over = 0;
        step_start_us = now_us();
        t0 = step_start_us;
        end = t0 + (uint64_t) step_secs * 1000000;
        sent = 0;
        next = t0;
        while (now_us() < end) {
            uint64_t now = now_us();
            while (next <= now && next < end) {
                int len = json_mode
                    ? snprintf(msg, sizeof(msg),
                               "{\"type\":\"message\",\"text\":\"ts:%llu\"}",
                               (unsigned long long) now_us())
                    : snprintf(msg, sizeof(msg), "ts:%llu",
                               (unsigned long long) now_us());
                send_frame(&conns[0], 1, msg, len);
                sent++;
                next = t0 + sent * 1000000ULL / rate;
            }
            now = now_us();
            poll_once(next > now ? (int) ((next - now) / 1000) : 0, sub);
        }
        /* drain: up to 2 s more */
        expected = sent * alive;
        end = now_us() + 2000000;
        while (delivered < expected && now_us() < end) poll_once(20, sub);

        /* missing deliveries count as "too late" for the quantiles */
        if (expected > delivered) {
            hist[NBUCKETS - 1] += expected - delivered;
        }
        quantiles(expected > delivered ? expected : delivered, &p50, &p99);
        printf("step %d sent %llu expected %llu delivered %llu p50_ms %.1f p99_ms %.1f rss_kb %ld\n",
               rate, (unsigned long long) sent, (unsigned long long) expected,
               (unsigned long long) delivered, p50, p99, rss_kb(pids));
        fflush(stdout);
        if (p99 >= 1000 && rate >= 167) {
            break;                      /* far beyond capacity: stop */
        }
    }
    return 0;
}
