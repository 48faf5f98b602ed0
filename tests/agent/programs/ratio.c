/* Two code paths doing work in a known 2:1 ratio, for the profiler's accuracy tests (Pixie's
 * profiler tests use the same idea): main -> dispatch -> path_a -> leaf twice as often as
 * main -> dispatch -> path_b -> leaf, with the same work per leaf call.
 *
 *   ratio SECONDS            the 2:1 loop for SECONDS of wall time
 *   ratio SECONDS deep N     the same, each path first recursing N frames of 1 KiB through
 *                            `descend` (a stack deeper than the profiler's copy)
 *   ratio SECONDS wait       the same, once a line was read from stdin (after "ready")
 *
 * Prints "ready ADDR_main ADDR_dispatch ADDR_path_a ADDR_path_b ADDR_leaf" once running; when done,
 * "done LEAF_CALLS CPU_SECONDS" (its own CPU time, from getrusage, and the work it did: the
 * throughput the overhead benchmark compares). Built by the tests with and without frame pointers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

/* An empty asm after each call keeps the call from being a tail call (-O2 would turn
 * "return f(x)" into a jump, and the caller's frame would vanish from every stack). */
#define KEEP_FRAME() asm volatile("" ::: "memory")

static unsigned long leaf_calls;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) unsigned long leaf(unsigned long seed) {
    volatile unsigned long state = seed | 1;
    for (int i = 0; i < 100000; i++) {
        unsigned long x = state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state = x;
    }
    leaf_calls++;
    return state;
}

__attribute__((noinline)) unsigned long descend(unsigned long seed, int depth) {
    volatile char pad[1024]; /* 1 KiB of stack per frame */
    pad[0] = (char)seed;
    unsigned long out = depth > 0 ? descend(seed + pad[0], depth - 1) : leaf(seed);
    KEEP_FRAME();
    return out + pad[0];
}

static int deep_frames;

__attribute__((noinline)) unsigned long path_a(unsigned long seed) {
    unsigned long out = deep_frames ? descend(seed, deep_frames) : leaf(seed);
    KEEP_FRAME();
    return out;
}

__attribute__((noinline)) unsigned long path_b(unsigned long seed) {
    unsigned long out = deep_frames ? descend(seed, deep_frames) : leaf(seed);
    KEEP_FRAME();
    return out;
}

/* Two path_a calls for each path_b call: path_a gets 2/3 of the work. */
__attribute__((noinline)) unsigned long dispatch(unsigned long seed) {
    unsigned long acc = path_a(seed);
    acc += path_a(acc);
    acc += path_b(acc);
    KEEP_FRAME();
    return acc;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 30.0;
    int wait = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "deep") == 0 && i + 1 < argc)
            deep_frames = atoi(argv[++i]);
        else if (strcmp(argv[i], "wait") == 0)
            wait = 1;
    }
    printf("ready %p %p %p %p %p\n", (void *)main, (void *)dispatch, (void *)path_a, (void *)path_b, (void *)leaf);
    fflush(stdout);
    if (wait) {
        char line[16];
        if (!fgets(line, sizeof(line), stdin))
            return 1;
    }
    unsigned long acc = 1;
    double end = now() + seconds;
    while (now() < end)
        acc += dispatch(acc);
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    double cpu = usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 + usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6;
    printf("done %lu %.6f %lu\n", leaf_calls, cpu, acc & 1);
    return 0;
}
