#define _GNU_SOURCE
#include "forklift_shim.h"

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int fls_futex_wait(uint32_t *addr, uint32_t expected, int64_t timeout_ns) {
    struct timespec ts, *tsp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = (time_t)(timeout_ns / 1000000000);
        ts.tv_nsec = (long)(timeout_ns % 1000000000);
        tsp = &ts;
    }
    long r = syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, expected, tsp, NULL, 0);
    if (r == -1 && errno == ETIMEDOUT) return -1;
    return 0;
}

void fls_futex_wake(uint32_t *addr, int n) {
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

int64_t fls_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int fls_cpu_count(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

void fls_set_thread_name(const char *name) {
    char buf[16];
    strncpy(buf, name, sizeof buf - 1);
    buf[sizeof buf - 1] = 0;
    pthread_setname_np(pthread_self(), buf);
}

int fls_thread_start(void *(*fn)(void *), void *arg, uint64_t *out) {
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 8u << 20);
    int r = pthread_create(&t, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    if (r == 0) *out = (uint64_t)t;
    return r;
}

int fls_thread_join(uint64_t thread) { return pthread_join((pthread_t)thread, NULL); }

uint64_t fls_thread_self(void) { return (uint64_t)pthread_self(); }

static _Thread_local char tls_message[1024];
static _Thread_local void *tls_worker;
static _Thread_local void *tls_ctx;

void fls_tls_set_message(const char *message) {
    size_t n = strlen(message);
    if (n >= sizeof tls_message) n = sizeof tls_message - 1;
    memcpy(tls_message, message, n);
    tls_message[n] = 0;
}
const char *fls_tls_message(void) { return tls_message; }
void *fls_tls_worker(void) { return tls_worker; }
void fls_tls_set_worker(void *worker) { tls_worker = worker; }
void *fls_tls_task_ctx(void) { return tls_ctx; }
void fls_tls_set_task_ctx(void *ctx) { tls_ctx = ctx; }
