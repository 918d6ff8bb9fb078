/*
 * mpi-test: checks that MPI really communicates between the ranks of a job.
 *
 *   mpirun -np N mpi-test [--mib M] [--timeout SEC] [--verbose]
 *
 * Three checks, each one verified by the ranks that take part in it:
 *
 *   1. ring: rank 0 starts a token, every rank checks what it receives from
 *      its left neighbour, adds its own rank and passes it to its right
 *      neighbour; rank 0 checks the token that comes back around.
 *   2. MPI_Allreduce: the sum of all ranks must be N*(N-1)/2 on every rank.
 *   3. large point-to-point: for every r in 1..N-1, rank 0 sends M MiB
 *      (default 16) of a deterministic pattern to rank r, rank r checks it
 *      byte for byte and sends it back, rank 0 checks the echo byte for byte.
 *      (This is the message size at which shared-memory single-copy matters:
 *      see images/mpi/README.md.)
 *
 * Every rank that passes prints "mpi-test: rank R of N on HOST: ok" and the
 * program exits 0. Any mismatch prints what failed to stderr and calls
 * MPI_Abort with a non-zero code:
 *
 *   2 ring, 3 allreduce, 4 large message, 5 usage or out of memory,
 *   6 an MPI call returned an error.
 *
 * The program has no loop of its own that can run forever. A run stuck
 * inside MPI (a hung transfer) is caught by a watchdog: a rank that has not
 * got through all the checks --timeout seconds after it started (default
 * 60, 0 = no watchdog) prints the step it is stuck in and exits with status
 * 124 without finalizing, which makes the launcher end the job.
 *
 * With one rank there is no pair to test: the ring (to itself) and the
 * reduction are checked and the large message is skipped (said in the ok
 * line).
 */
#define _GNU_SOURCE
#include <mpi.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum {
    EXIT_RING = 2,
    EXIT_ALLREDUCE = 3,
    EXIT_LARGE = 4,
    EXIT_USAGE = 5,
    EXIT_MPI = 6,
    EXIT_TIMEOUT = 124,
};

enum { TAG_RING = 101, TAG_LARGE_OUT = 102, TAG_LARGE_BACK = 103 };

static const long long RING_START = 1000003; /* any value: a prime, so a lost add shows */

static int rank = -1, nranks = 0;

/* The step this rank is in, for the watchdog. Written before each step; the
 * handler only reads it (a pointer to a string literal). */
static const char *volatile current_step = "MPI_Init";
static volatile int current_peer = -1;

static void put_str(const char *s) { (void)!write(2, s, strlen(s)); }

static void put_int(long v)
{
    char buf[24];
    int i = sizeof buf;
    int neg = v < 0;
    unsigned long u = neg ? -(unsigned long)v : (unsigned long)v;
    do {
        buf[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u && i > 1);
    if (neg)
        buf[--i] = '-';
    (void)!write(2, buf + i, sizeof buf - i);
}

static unsigned timeout_sec = 60;

/* Async-signal-safe: write(2) and _exit(2) only. */
static void on_alarm(int sig)
{
    (void)sig;
    put_str("mpi-test: rank ");
    put_int(rank);
    put_str(": TIMEOUT: step '");
    put_str(current_step);
    put_str("'");
    if (current_peer >= 0) {
        put_str(" with rank ");
        put_int(current_peer);
    }
    put_str(" did not finish within ");
    put_int((long)timeout_sec);
    put_str(" s; exiting with 124\n");
    _exit(EXIT_TIMEOUT);
}

static void fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void fail(int code, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "mpi-test: rank %d of %d: FAILED: ", rank, nranks);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
    _exit(code); /* MPI_Abort does not return; in case it does */
}

static void check_mpi(int rc, const char *what)
{
    if (rc != MPI_SUCCESS) {
        char msg[MPI_MAX_ERROR_STRING];
        int len = 0;
        MPI_Error_string(rc, msg, &len);
        fail(EXIT_MPI, "%s returned %d (%s)", what, rc, msg);
    }
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Byte i of the message rank 0 sends to rank `peer`: a hash of the offset
 * and the peer, so that no short period, shift, or mix-up of peers passes. */
static unsigned char pattern_byte(size_t i, int peer)
{
    uint64_t x = (uint64_t)i * 0x9E3779B97F4A7C15ull + (uint64_t)(peer + 1) * 0xD1B54A32D192ED03ull;
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 32;
    return (unsigned char)x;
}

static void fill_pattern(unsigned char *buf, size_t n, int peer)
{
    for (size_t i = 0; i < n; i++)
        buf[i] = pattern_byte(i, peer);
}

/* Compares buf with the pattern for `peer`; on a mismatch reports the first
 * bad offset, the count of bad bytes, and aborts. */
static void check_pattern(const unsigned char *buf, size_t n, int peer, const char *what)
{
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++) {
        if (buf[i] != pattern_byte(i, peer)) {
            if (bad++ == 0)
                first = i;
        }
    }
    if (bad)
        fail(EXIT_LARGE,
             "%s: %zu of %zu bytes differ; first at offset %zu: got 0x%02x, expected 0x%02x",
             what, bad, n, first, buf[first], pattern_byte(first, peer));
}

static void usage_error(const char *opt, const char *msg, const char *arg)
{
    if (rank == 0)
        fprintf(stderr,
                "mpi-test: %s: %s%s%s\nusage: mpi-test [--mib M] [--timeout SEC] [--verbose]\n",
                opt, msg, arg ? " " : "", arg ? arg : "");
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, EXIT_USAGE);
    _exit(EXIT_USAGE);
}

static long parse_num(const char *s, long lo, long hi, const char *opt)
{
    char *end;
    long v;
    if (!s)
        usage_error(opt, "missing value", NULL);
    v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo || v > hi) {
        char msg[96];
        snprintf(msg, sizeof msg, "wants a whole number from %ld to %ld, not", lo, hi);
        usage_error(opt, msg, s);
    }
    return v;
}

static void ring(int verbose)
{
    int left = (rank + nranks - 1) % nranks, right = (rank + 1) % nranks;
    long long token, expect;
    MPI_Request req;

    current_step = "ring";
    if (rank == 0) {
        token = RING_START;
        current_peer = right;
        check_mpi(MPI_Isend(&token, 1, MPI_LONG_LONG, right, TAG_RING, MPI_COMM_WORLD, &req),
                  "ring MPI_Isend");
        long long back = -1;
        current_peer = left;
        check_mpi(MPI_Recv(&back, 1, MPI_LONG_LONG, left, TAG_RING, MPI_COMM_WORLD,
                           MPI_STATUS_IGNORE),
                  "ring MPI_Recv");
        check_mpi(MPI_Wait(&req, MPI_STATUS_IGNORE), "ring MPI_Wait");
        expect = RING_START + (long long)nranks * (nranks - 1) / 2;
        if (back != expect)
            fail(EXIT_RING, "ring: token came back as %lld, expected %lld", back, expect);
        if (verbose)
            printf("mpi-test: rank 0: ring of %d ok (token %lld)\n", nranks, back);
    } else {
        current_peer = left;
        check_mpi(MPI_Recv(&token, 1, MPI_LONG_LONG, left, TAG_RING, MPI_COMM_WORLD,
                           MPI_STATUS_IGNORE),
                  "ring MPI_Recv");
        /* ranks 0..rank-1 have added themselves to the start value */
        expect = RING_START + (long long)rank * (rank - 1) / 2;
        if (token != expect)
            fail(EXIT_RING, "ring: received %lld from rank %d, expected %lld", token, left,
                 expect);
        token += rank;
        current_peer = right;
        check_mpi(MPI_Send(&token, 1, MPI_LONG_LONG, right, TAG_RING, MPI_COMM_WORLD),
                  "ring MPI_Send");
    }
    current_peer = -1;
}

static void allreduce(int verbose)
{
    long long mine = rank, sum = -1, expect = (long long)nranks * (nranks - 1) / 2;

    current_step = "MPI_Allreduce";
    check_mpi(MPI_Allreduce(&mine, &sum, 1, MPI_LONG_LONG, MPI_SUM, MPI_COMM_WORLD),
              "MPI_Allreduce");
    if (sum != expect)
        fail(EXIT_ALLREDUCE, "MPI_Allreduce: sum of ranks is %lld, expected %lld", sum, expect);
    if (verbose && rank == 0)
        printf("mpi-test: rank 0: allreduce ok (sum %lld)\n", sum);
}

static void large(size_t bytes, long mib, int verbose)
{
    unsigned char *buf = malloc(bytes);
    char what[96];

    if (!buf)
        fail(EXIT_USAGE, "cannot allocate %zu bytes", bytes);
    /* the size is passed as a count of MPI_BYTE: it must fit in an int */
    if (bytes > (size_t)0x7fffffff)
        fail(EXIT_USAGE, "--mib %ld is too large for one message", mib);

    if (rank == 0) {
        unsigned char *echo = malloc(bytes);
        if (!echo)
            fail(EXIT_USAGE, "cannot allocate %zu bytes", bytes);
        for (int r = 1; r < nranks; r++) {
            fill_pattern(buf, bytes, r);
            memset(echo, 0, bytes);
            current_peer = r;
            double t0 = now();
            current_step = "large message: send to peer";
            check_mpi(MPI_Send(buf, (int)bytes, MPI_BYTE, r, TAG_LARGE_OUT, MPI_COMM_WORLD),
                      "large MPI_Send");
            current_step = "large message: receive the echo from peer";
            MPI_Status st;
            check_mpi(MPI_Recv(echo, (int)bytes, MPI_BYTE, r, TAG_LARGE_BACK, MPI_COMM_WORLD, &st),
                      "large MPI_Recv");
            double t1 = now();
            int got = -1;
            MPI_Get_count(&st, MPI_BYTE, &got);
            if (got != (int)bytes)
                fail(EXIT_LARGE, "large message: echo from rank %d has %d bytes, expected %zu", r,
                     got, bytes);
            snprintf(what, sizeof what, "large message: echo of %ld MiB from rank %d", mib, r);
            check_pattern(echo, bytes, r, what);
            if (verbose)
                printf("mpi-test: rank 0: %ld MiB to rank %d and back in %.3f s\n", mib, r,
                       t1 - t0);
        }
        free(echo);
    } else {
        MPI_Status st;
        int got = -1;
        memset(buf, 0, bytes);
        current_peer = 0;
        current_step = "large message: receive from peer";
        check_mpi(MPI_Recv(buf, (int)bytes, MPI_BYTE, 0, TAG_LARGE_OUT, MPI_COMM_WORLD, &st),
                  "large MPI_Recv");
        MPI_Get_count(&st, MPI_BYTE, &got);
        if (got != (int)bytes)
            fail(EXIT_LARGE, "large message: rank 0 sent %d bytes, expected %zu", got, bytes);
        snprintf(what, sizeof what, "large message: %ld MiB from rank 0", mib);
        check_pattern(buf, bytes, rank, what);
        current_step = "large message: send the echo to peer";
        check_mpi(MPI_Send(buf, (int)bytes, MPI_BYTE, 0, TAG_LARGE_BACK, MPI_COMM_WORLD),
                  "large MPI_Send (echo)");
    }
    current_peer = -1;
    free(buf);
}

int main(int argc, char **argv)
{
    long mib = 16;
    int verbose = 0;
    char host[MPI_MAX_PROCESSOR_NAME] = "?";
    int hostlen = 0;

    /* The watchdog covers MPI_Init too (a launcher that never answers). The
     * default is replaced below if --timeout is given. */
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc)
            timeout_sec = (unsigned)strtoul(argv[i + 1], NULL, 10);
    signal(SIGALRM, on_alarm);
    alarm(timeout_sec);

    MPI_Init(&argc, &argv);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    MPI_Get_processor_name(host, &hostlen);

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--mib") == 0)
            mib = parse_num(argv[++i], 1, 2047, "--mib");
        else if (strcmp(argv[i], "--timeout") == 0)
            timeout_sec = (unsigned)parse_num(argv[++i], 0, 86400, "--timeout");
        else if (strcmp(argv[i], "--verbose") == 0 || strcmp(argv[i], "-v") == 0)
            verbose = 1;
        else
            usage_error(argv[i], "unknown argument", NULL);
    }

    double t0 = now();
    ring(verbose);
    allreduce(verbose);
    if (nranks > 1)
        large((size_t)mib << 20, mib, verbose);

    /* Print "ok" only once every rank has passed every check: a rank that
     * failed has aborted the job before anyone gets past this barrier. */
    current_step = "final MPI_Barrier";
    check_mpi(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
    alarm(0);
    if (verbose && rank == 0)
        printf("mpi-test: rank 0: all checks in %.3f s\n", now() - t0);
    if (nranks > 1)
        printf("mpi-test: rank %d of %d on %s: ok\n", rank, nranks, host);
    else
        printf("mpi-test: rank %d of %d on %s: ok (one rank: no large message pair)\n", rank,
               nranks, host);
    fflush(stdout);
    MPI_Finalize();
    return 0;
}
