/* Spins (so that a profiler samples it) until a line arrives on stdin, then asks to be traced by its
 * parent (PTRACE_TRACEME) and execs argv[1..]: the kernel stops the new program right after the exec,
 * before the dynamic loader has mapped any library. The parent detaches when it wants it to go on.
 * Prints "ready" once spinning. Used to hold a Python at the start of its life (profiler tests). */
#include <poll.h>
#include <stdio.h>
#include <sys/ptrace.h>
#include <unistd.h>

static volatile unsigned long sink;

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    printf("ready\n");
    fflush(stdout);
    struct pollfd in = {.fd = 0, .events = POLLIN};
    while (poll(&in, 1, 0) == 0)
        for (unsigned long i = 0; i < 1000000; i++)
            sink += i;
    char line[64];
    if (read(0, line, sizeof line) <= 0)
        return 3;
    if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) != 0)
        return 4;
    execv(argv[1], argv + 1);
    return 5;
}
