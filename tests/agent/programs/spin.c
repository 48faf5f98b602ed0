/* A CPU-bound program with a known call chain for the profiler tests: main -> outer_loop ->
 * spin_leaf, for argv[1] seconds (default 30). Prints "ready" and the run-time addresses of main,
 * outer_loop and spin_leaf once running; when done, "done CALLS CPU_SECONDS": spin_leaf calls
 * and the CPU time the process got (the throughput the overhead benchmark compares).
 *
 * Built by the tests twice: -O2 -fno-omit-frame-pointer (full stacks) and -O2
 * -fomit-frame-pointer (unwound with its .eh_frame; without that section, the stack stops at the
 * leaf). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The volatile local gives spin_leaf a stack frame: GCC 12 sets up no frame pointer in a leaf
 * function that needs no stack, even with -fno-omit-frame-pointer, and the walk would then skip
 * straight from spin_leaf to main. */
__attribute__((noinline)) unsigned long spin_leaf(unsigned long seed) {
    volatile unsigned long state = seed;
    for (int i = 0; i < 200000; i++) {
        unsigned long x = state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state = x;
    }
    return state;
}

__attribute__((noinline)) unsigned long outer_loop(double seconds, unsigned long *calls) {
    unsigned long acc = 1;
    double end = now() + seconds;
    while (now() < end) {
        acc += spin_leaf(acc);
        ++*calls;
    }
    return acc;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 30.0;
    unsigned long calls = 0;
    printf("ready %p %p %p\n", (void *)main, (void *)outer_loop, (void *)spin_leaf);
    fflush(stdout);
    unsigned long acc = outer_loop(seconds, &calls);
    struct timespec cpu;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu);
    printf("done %lu %.6f %lu\n", calls, cpu.tv_sec + cpu.tv_nsec / 1e9, acc & 1);
    return 0;
}
