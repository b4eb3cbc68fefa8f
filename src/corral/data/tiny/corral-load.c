/*
 * corral-load: a steady, bounded synthetic workload for Corral's tiny guest.
 *
 * Usage: corral-load CPU_PCT DISK_KBPS NET_KBPS [NET_TARGET]
 *
 *   CPU_PCT    0..100: each online vCPU is busy CPU_PCT % of every 100 ms
 *              period (one thread per online CPU, pinned to it).
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

static volatile uint64_t sink;

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

/* ---- CPU ---------------------------------------------------------------- */

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
    uint64_t x = 0;
    /* Spin in chunks of ~0.5-2 ms between clock reads: with several vCPUs
     * under TCG the guest clock is the HPET, and every read is an emulated
     * MMIO access that serializes the vCPUs in QEMU. */
    long iters = 1000;
    for (;;) {
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
        if (a->pct < 100)
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
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: corral-load CPU_PCT DISK_KBPS NET_KBPS [NET_TARGET]\n");
        return 2;
    }
    if (argc == 5)
        net_target = argv[4];
    static long cpu, disk, net;
    cpu = parse_arg(argv[1], 100, "cpu");
    disk = parse_arg(argv[2], 10L * 1024 * 1024, "disk");
    net = parse_arg(argv[3], 10L * 1024 * 1024, "net");
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu < 1)
        ncpu = 1;
    printf("corral-load: cpu=%ld disk=%ld net=%ld vcpus=%ld target=%s\n", cpu, disk, net, ncpu, net_target);
    fflush(stdout);
    if (cpu == 0 && disk == 0 && net == 0)
        return 0;

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
    if (cpu > 0) {
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
