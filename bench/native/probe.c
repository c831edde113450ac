/* The machine's state: how long two CPUs take to pass a cache line back and forth.
 *
 * Two threads, pinned to CPUs 0 and 1, take turns writing one shared word. Prints the mean
 * nanoseconds per round trip (two cache-line transfers). Every benchmark whose tasks cross
 * threads moves lines between cores, so its figures follow this one. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>

#include "common.h"

static long turns;
static long shared_word __attribute__((aligned(64)));

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static void *answer(void *unused) {
    (void)unused;
    pin(1);
    for (long i = 0; i < turns; i++) {
        while (__atomic_load_n(&shared_word, __ATOMIC_ACQUIRE) != 2 * i + 1) {}
        __atomic_store_n(&shared_word, 2 * i + 2, __ATOMIC_RELEASE);
    }
    return NULL;
}

int main(int argc, char **argv) {
    turns = argc > 1 ? atol(argv[1]) : 200000;
    pthread_t other;
    pin(0);
    pthread_create(&other, NULL, answer, NULL);
    double t0 = bench_now();
    for (long i = 0; i < turns; i++) {
        __atomic_store_n(&shared_word, 2 * i + 1, __ATOMIC_RELEASE);
        while (__atomic_load_n(&shared_word, __ATOMIC_ACQUIRE) != 2 * i + 2) {}
    }
    double t = bench_now() - t0;
    pthread_join(other, NULL);
    printf("%.6g\n", t / turns * 1e9);
    return 0;
}
