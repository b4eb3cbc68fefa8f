/*
 * corral-load: a steady, bounded synthetic workload for Corral's tiny guest.
 *
 * Usage: corral-load CPU_PCT DISK_KBPS NET_KBPS [NET_TARGET [TRACE STEP_MS]]
 *
 *   CPU_PCT    0..100: each online vCPU is busy CPU_PCT % of every 100 ms
 *              period (one thread per online CPU, pinned to it).
 *   TRACE      a load trace replacing CPU_PCT ("-": none): two hex digits a
 *              step, 00..64 (0..100 %), at most MAX_TRACE steps.  Each
 *              vCPU's busy time in a period is what the trace asks for over
 *              that period, so steps need not line up with periods.  The
 *              trace starts when corral-load does and starts again at its end.
 *   STEP_MS    how long each step lasts, in ms (10..86400000).
 *   DISK_KBPS  KiB/s of raw I/O on /dev/vda (reads + writes together, half
 *              each), O_DIRECT, confined to the first 32 MiB of the device.
 *              Every write puts back the block that was just read, so the
 *              disk content does not change.  Never touches another device.
 *   NET_KBPS   KiB/s of UDP payload sent to NET_TARGET port 9 (discard).
 *   NET_TARGET the guest's gateway, which is always the host itself: the
 *              host side of QEMU's user-mode network (10.0.2.2, the default)
 *              or the host's address on Corral's libvirt bridge.  /init
 *              passes it; traffic never goes anywhere else.
 *
 * 0 turns a load off.  Rates use a token bucket refilled every 100 ms.
 * The parent prints one status line, forks the worker and exits 0, so that
 * /init can run it in the foreground and know the line has been printed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#include <linux/fs.h>

#define PERIOD_NS 100000000LL /* 100 ms */
#define DISK_DEVICE "/dev/vda"
#define DISK_REGION (32LL * 1024 * 1024)
#define NET_ADDR "10.0.2.2"
static const char *net_target = NET_ADDR;
#define NET_PORT 9
#define NET_DGRAM 1024
#define MAX_TRACE 1024 /* steps; the kernel command line holds fewer */

static volatile uint64_t sink;

/* The load trace (ntrace == 0: none), set before any thread starts. */
static unsigned char trace[MAX_TRACE];
static long ntrace;
static int64_t step_ns;
static int64_t trace_t0;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_until(int64_t t) {
    struct timespec ts = {.tv_sec = t / 1000000000LL, .tv_nsec = t % 1000000000LL};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static long parse_arg(const char *s, long max, const char *what) {
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 0 || v > max) {
        fprintf(stderr, "corral-load: bad %s value '%s' (0..%ld), turning it off\n", what, s, max);
        return 0;
    }
    return v;
}

/* Parse TRACE ("-" or hex pairs); 0 when it is not a valid trace. */
static long parse_trace(const char *s) {
    size_t len = strlen(s);
    if (strcmp(s, "-") == 0)
        return 0;
    if (len == 0 || len % 2 != 0 || len / 2 > MAX_TRACE) {
        fprintf(stderr, "corral-load: bad trace (%zu characters), turning it off\n", len);
        return 0;
    }
    for (size_t i = 0; i < len; i += 2) {
        char pair[3] = {s[i], s[i + 1], '\0'};
        char *end = NULL;
        long v = strtol(pair, &end, 16);
        if (!isxdigit((unsigned char)s[i]) || !isxdigit((unsigned char)s[i + 1]) || *end != '\0' || v > 100) {
            fprintf(stderr, "corral-load: bad trace step %zu '%s', turning the trace off\n", i / 2 + 1, pair);
            return 0;
        }
        trace[i / 2] = (unsigned char)v;
    }
    return (long)(len / 2);
}

/* ---- CPU ---------------------------------------------------------------- */

/* Busy ns the trace asks of one vCPU over [from, to), times relative to trace_t0 (from >= 0). */
static int64_t trace_busy(int64_t from, int64_t to) {
    int64_t busy = 0;
    int64_t cycle = step_ns * ntrace;
    while (from < to) {
        int64_t in_step = from % step_ns;
        long i = (long)((from % cycle) / step_ns);
        int64_t end = from - in_step + step_ns;
        if (end > to)
            end = to;
        busy += (end - from) * trace[i] / 100;
        from = end;
    }
    return busy;
}

struct cpu_arg {
    int cpu;
    long pct;
};

static void *cpu_worker(void *p) {
    struct cpu_arg *a = p;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(a->cpu, &set);
    sched_setaffinity(0, sizeof(set), &set); /* best effort */
    int64_t busy = PERIOD_NS * a->pct / 100;
    int64_t start = now_ns();
    if (ntrace > 0 && start < trace_t0)
        start = trace_t0;
    uint64_t x = 0;
    /* Spin in chunks of ~0.5-2 ms between clock reads: with several vCPUs
     * under TCG the guest clock is the HPET, and every read is an emulated
     * MMIO access that serializes the vCPUs in QEMU. */
    long iters = 1000;
    for (;;) {
        if (ntrace > 0)
            busy = trace_busy(start - trace_t0, start - trace_t0 + PERIOD_NS);
        int64_t stop = start + busy;
        int64_t t = now_ns();
        while (t < stop) {
            for (long i = 0; i < iters; i++)
                x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            sink = x;
            int64_t t2 = now_ns();
            if (t2 - t < 500000 && iters < (1L << 26))
                iters *= 2;
            else if (t2 - t > 2000000 && iters > 16)
                iters /= 2;
            t = t2;
        }
        start += PERIOD_NS;
        int64_t now = now_ns();
        if (start < now - PERIOD_NS)  /* fell far behind (paused guest): resync */
            start = now;
        if (busy < PERIOD_NS)
            sleep_until(start);
    }
    return NULL;
}

/* ---- token bucket ------------------------------------------------------- */

struct bucket {
    int64_t per_tick; /* bytes added every PERIOD_NS */
    int64_t tokens;
    int64_t next;
};

static void bucket_init(struct bucket *b, long kbps) {
    b->per_tick = (int64_t)kbps * 1024 * PERIOD_NS / 1000000000LL;
    if (b->per_tick < 1)
        b->per_tick = 1;
    b->tokens = 0;
    b->next = now_ns();
}

/* Wait for the next tick and add its tokens; the bucket never holds more
 * than two ticks' worth so a stall does not turn into a burst. */
static void bucket_refill(struct bucket *b, int64_t unit) {
    sleep_until(b->next);
    b->next += PERIOD_NS;
    int64_t now = now_ns();
    if (b->next < now - PERIOD_NS)
        b->next = now;
    b->tokens += b->per_tick;
    int64_t cap = 2 * b->per_tick > unit ? 2 * b->per_tick : unit;
    if (b->tokens > cap)
        b->tokens = cap;
}

/* ---- disk --------------------------------------------------------------- */

static void *disk_worker(void *p) {
    long kbps = *(long *)p;
    int fd = -1;
    for (int i = 0; i < 50 && fd < 0; i++) { /* the driver may still be probing */
        fd = open(DISK_DEVICE, O_RDWR | O_DIRECT | O_CLOEXEC);
        if (fd < 0)
            usleep(100000);
    }
    if (fd < 0) {
        fprintf(stderr, "corral-load: %s: %s; disk load off\n", DISK_DEVICE, strerror(errno));
        return NULL;
    }
    uint64_t size = 0;
    if (ioctl(fd, BLKGETSIZE64, &size) != 0 || size == 0) {
        fprintf(stderr, "corral-load: cannot size %s; disk load off\n", DISK_DEVICE);
        close(fd);
        return NULL;
    }
    int64_t chunk = kbps >= 640 ? 65536 : 4096;
    int64_t region = (int64_t)size < DISK_REGION ? (int64_t)size : DISK_REGION;
    region -= region % chunk;
    if (region < chunk) {
        fprintf(stderr, "corral-load: %s too small; disk load off\n", DISK_DEVICE);
        close(fd);
        return NULL;
    }
    void *buf = NULL;
    if (posix_memalign(&buf, 4096, (size_t)chunk) != 0) {
        close(fd);
        return NULL;
    }
    struct bucket b;
    bucket_init(&b, kbps);
    int64_t off = 0;
    int have_block = 0; /* 1: buf holds the block at off, next op writes it back */
    for (;;) {
        bucket_refill(&b, chunk);
        while (b.tokens >= chunk) {
            ssize_t n;
            if (!have_block) {
                n = pread(fd, buf, (size_t)chunk, off);
                have_block = n == chunk;
            } else {
                n = pwrite(fd, buf, (size_t)chunk, off);
                have_block = 0;
                off += chunk;
                if (off >= region)
                    off = 0;
            }
            b.tokens -= chunk;
            if (n != chunk) { /* I/O error: skip this block, try again next tick */
                have_block = 0;
                off = (off + chunk) % region;
                break;
            }
        }
    }
    return NULL;
}

/* ---- network ------------------------------------------------------------ */

static void *net_worker(void *p) {
    long kbps = *(long *)p;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fprintf(stderr, "corral-load: socket: %s; net load off\n", strerror(errno));
        return NULL;
    }
    struct sockaddr_in to;
    memset(&to, 0, sizeof(to));
    to.sin_family = AF_INET;
    to.sin_port = htons(NET_PORT);
    if (inet_pton(AF_INET, net_target, &to.sin_addr) != 1) {
        fprintf(stderr, "corral-load: bad net target '%s'; net load off\n", net_target);
        return NULL;
    }
    char buf[NET_DGRAM];
    memset(buf, 'c', sizeof(buf));
    struct bucket b;
    bucket_init(&b, kbps);
    for (;;) {
        bucket_refill(&b, NET_DGRAM);
        while (b.tokens >= NET_DGRAM) {
            /* unconnected socket: ICMP port-unreachable does not fail later sends */
            ssize_t n = sendto(fd, buf, sizeof(buf), 0, (struct sockaddr *)&to, sizeof(to));
            b.tokens -= NET_DGRAM;
            if (n < 0)
                break; /* no route yet, buffer full...: retry next tick */
        }
    }
    return NULL;
}

/* ---- main --------------------------------------------------------------- */

int main(int argc, char **argv) {
    if (argc != 4 && argc != 5 && argc != 7) {
        fprintf(stderr, "usage: corral-load CPU_PCT DISK_KBPS NET_KBPS [NET_TARGET [TRACE STEP_MS]]\n");
        return 2;
    }
    if (argc >= 5)
        net_target = argv[4];
    static long cpu, disk, net;
    cpu = parse_arg(argv[1], 100, "cpu");
    disk = parse_arg(argv[2], 10L * 1024 * 1024, "disk");
    net = parse_arg(argv[3], 10L * 1024 * 1024, "net");
    if (argc == 7) {
        long step_ms = parse_arg(argv[6], 86400000L, "step_ms");
        ntrace = parse_trace(argv[5]);
        if (ntrace > 0 && step_ms < 10) {
            fprintf(stderr, "corral-load: step_ms=%s is below 10 ms, turning the trace off\n", argv[6]);
            ntrace = 0;
        }
        step_ns = (int64_t)step_ms * 1000000LL;
        if (ntrace > 0)
            cpu = 0; /* the trace replaces the fixed CPU load */
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu < 1)
        ncpu = 1;
    if (ntrace > 0)
        printf("corral-load: cpu=trace disk=%ld net=%ld vcpus=%ld target=%s trace=%ld step_ms=%lld\n", disk, net,
               ncpu, net_target, ntrace, (long long)(step_ns / 1000000LL));
    else
        printf("corral-load: cpu=%ld disk=%ld net=%ld vcpus=%ld target=%s\n", cpu, disk, net, ncpu, net_target);
    fflush(stdout);
    if (cpu == 0 && disk == 0 && net == 0 && ntrace == 0)
        return 0;
    trace_t0 = now_ns(); /* step 0 begins as the guest says it is ready */

    pid_t pid = fork();
    if (pid < 0) {
        perror("corral-load: fork");
        return 1;
    }
    if (pid > 0)
        return 0;
    setsid();
    /* Yield to the console shell and acpid: the guest stays controllable even
     * at cpu=100, and the load is unchanged when nothing else wants the CPU. */
    errno = 0;
    if (nice(10) == -1 && errno != 0)
        perror("corral-load: nice");

    pthread_t t;
    if (cpu > 0 || ntrace > 0) {
        static struct cpu_arg args[1024];
        for (long i = 0; i < ncpu && i < 1024; i++) {
            args[i].cpu = (int)i;
            args[i].pct = cpu;
            if (pthread_create(&t, NULL, cpu_worker, &args[i]) != 0)
                fprintf(stderr, "corral-load: cannot start cpu thread %ld\n", i);
        }
    }
    if (disk > 0 && pthread_create(&t, NULL, disk_worker, &disk) != 0)
        fprintf(stderr, "corral-load: cannot start disk thread\n");
    if (net > 0 && pthread_create(&t, NULL, net_worker, &net) != 0)
        fprintf(stderr, "corral-load: cannot start net thread\n");
    for (;;)
        pause();
}
