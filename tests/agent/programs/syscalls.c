/* A syscall-heavy program for the profiler tests: getppid() and 1-byte write()s to /dev/null in a
 * loop, for argv[1] seconds (default 30), so that most of its samples are taken in the kernel.
 * Prints "ready" once running. Built with -O2 -fno-omit-frame-pointer. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

__attribute__((noinline)) long syscall_loop(double seconds) {
    int fd = open("/dev/null", O_WRONLY);
    struct timespec start, ts;
    clock_gettime(CLOCK_MONOTONIC, &start);
    long calls = 0;
    for (;;) {
        for (int i = 0; i < 1000; i++) {
            calls += getppid() > 0;
            calls += write(fd, "x", 1) == 1;
        }
        clock_gettime(CLOCK_MONOTONIC, &ts);
        if (ts.tv_sec - start.tv_sec + (ts.tv_nsec - start.tv_nsec) / 1e9 >= seconds)
            break;
    }
    close(fd);
    return calls;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 30.0;
    printf("ready\n");
    fflush(stdout);
    printf("%ld\n", syscall_loop(seconds));
    return 0;
}
