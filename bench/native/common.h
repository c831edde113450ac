/* Shared by the native benchmark programs: clock, the CPU-bound work unit, argument parsing.
 * Every program is run as `prog WORKLOAD N` and prints one number (the workload's unit). */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* W4's work unit: `rounds` steps of a data-dependent integer recurrence the compiler cannot
 * fold. bench/run.py calibrates rounds so that one call takes about 1 ms. */
static inline uint64_t bench_spin(uint64_t seed, uint64_t rounds) {
    uint64_t x = seed | 1;
    for (uint64_t i = 0; i < rounds; i++) x = x * 6364136223846793005ULL + 1442695040888963407ULL + (x >> 17);
    return x;
}

/* W4's baseline: seconds to run the work unit over every item on this one thread. */
static inline double bench_serial_seconds(const uint64_t *items, long n, uint64_t rounds) {
    uint64_t sink = 0;
    double t0 = bench_now();
    for (long i = 0; i < n; i++) sink += bench_spin(items[i], rounds);
    double t = bench_now() - t0;
    if (sink == 42) fprintf(stderr, "(sink)\n"); /* keeps the loop from being optimized away */
    return t;
}

/* W4's result: the speed-up, after checking the parallel run's last value. */
static inline double bench_speedup(double serial, double parallel, uint64_t last, uint64_t expected) {
    if (last != expected) exit(3);
    fprintf(stderr, "serial %.3f s, parallel %.3f s\n", serial, parallel);
    return serial / parallel;
}

/* W3 times this many maps after its warm-up and reports the median rate: one map of 10M
 * elements takes about 10 ms, so a single one can land on a passing hiccup of the machine. */
enum { BENCH_W3_REPEATS = 5 };

/* The median of `n` values (sorts them in place). */
static inline double bench_median(double *values, int n) {
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && values[j - 1] > values[j]; j--) {
            double t = values[j];
            values[j] = values[j - 1];
            values[j - 1] = t;
        }
    return values[n / 2];
}

static inline int bench_usage(const char *prog) {
    fprintf(stderr, "usage: %s W1|W1cb|W2|W3|W4|W5shm|W5copy|W5store|W5put|W5floor|W6s|W6p|W7rt|W7tp|R1|R2|W8|T1typed|T1blob|calibrate N [ROUNDS]\n", prog);
    return 2;
}

#endif
