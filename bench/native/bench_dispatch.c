/* libdispatch's side: dispatch_group_async_f, a semaphore round trip, dispatch_apply_f. */
#include <dispatch/dispatch.h>

#include "common.h"

static void noop(void *ctx) { (void)ctx; }

static double w1(long n) {
    dispatch_queue_t q = dispatch_get_global_queue(DISPATCH_QUEUE_PRIORITY_DEFAULT, 0);
    dispatch_group_t g = dispatch_group_create();
    for (long i = 0; i < 10000; i++) dispatch_group_async_f(g, q, NULL, noop);
    dispatch_group_wait(g, DISPATCH_TIME_FOREVER);
    double t0 = bench_now();
    for (long i = 0; i < n; i++) dispatch_group_async_f(g, q, NULL, noop);
    dispatch_group_wait(g, DISPATCH_TIME_FOREVER);
    double t = bench_now() - t0;
    dispatch_release(g);
    return n / t;
}

static void signal_done(void *ctx) { dispatch_semaphore_signal((dispatch_semaphore_t)ctx); }

static double w2(long n) {
    dispatch_queue_t q = dispatch_get_global_queue(DISPATCH_QUEUE_PRIORITY_DEFAULT, 0);
    dispatch_semaphore_t s = dispatch_semaphore_create(0);
    for (long i = 0; i < 1000; i++) {
        dispatch_async_f(q, s, signal_done);
        dispatch_semaphore_wait(s, DISPATCH_TIME_FOREVER);
    }
    double t0 = bench_now();
    for (long i = 0; i < n; i++) {
        dispatch_async_f(q, s, signal_done);
        dispatch_semaphore_wait(s, DISPATCH_TIME_FOREVER);
    }
    double t = bench_now() - t0;
    dispatch_release(s);
    return t / n * 1e6;
}

typedef struct {
    const int64_t *in;
    int64_t *out;
    long n, chunk;
} square_job;

static void square_chunk(void *ctx, size_t c) {
    square_job *j = ctx;
    long start = (long)c * j->chunk, end = start + j->chunk < j->n ? start + j->chunk : j->n;
    for (long i = start; i < end; i++) j->out[i] = j->in[i] * j->in[i];
}

static double w3(long n) {
    int64_t *in = malloc(n * sizeof *in), *out = malloc(n * sizeof *out);
    for (long i = 0; i < n; i++) in[i] = i, out[i] = 0;
    /* dispatch_apply over chunks: one iteration per element would be unfairly slow. */
    long chunks = 64;
    square_job j = {in, out, n, (n + chunks - 1) / chunks};
    dispatch_queue_t q = dispatch_get_global_queue(DISPATCH_QUEUE_PRIORITY_DEFAULT, 0);
    dispatch_apply_f((size_t)chunks, q, &j, square_chunk);
    double rates[BENCH_W3_REPEATS];
    for (int r = 0; r < BENCH_W3_REPEATS; r++) {
        double t0 = bench_now();
        dispatch_apply_f((size_t)chunks, q, &j, square_chunk);
        rates[r] = n / (bench_now() - t0);
    }
    if (out[n - 1] != (int64_t)(n - 1) * (n - 1)) exit(3);
    free(in);
    free(out);
    return bench_median(rates, BENCH_W3_REPEATS);
}

typedef struct {
    const uint64_t *items;
    uint64_t *out;
    uint64_t rounds;
} spin_job;

static void spin_one(void *ctx, size_t i) {
    spin_job *j = ctx;
    j->out[i] = bench_spin(j->items[i], j->rounds);
}

static double w4(long n, uint64_t rounds) {
    uint64_t *items = malloc(n * sizeof *items), *out = malloc(n * sizeof *out);
    for (long i = 0; i < n; i++) items[i] = (uint64_t)i;
    double serial = bench_serial_seconds(items, n, rounds);
    spin_job j = {items, out, rounds};
    double t0 = bench_now();
    dispatch_apply_f((size_t)n, dispatch_get_global_queue(DISPATCH_QUEUE_PRIORITY_DEFAULT, 0), &j, spin_one);
    double parallel = bench_now() - t0;
    double speedup = bench_speedup(serial, parallel, out[n - 1], bench_spin(items[n - 1], rounds));
    free(items);
    free(out);
    return speedup;
}

int main(int argc, char **argv) {
    if (argc < 3) return bench_usage(argv[0]);
    long n = atol(argv[2]);
    uint64_t rounds = argc > 3 ? strtoull(argv[3], NULL, 10) : 0;
    double v;
    if (!strcmp(argv[1], "W1")) v = w1(n);
    else if (!strcmp(argv[1], "W2")) v = w2(n);
    else if (!strcmp(argv[1], "W3")) v = w3(n);
    else if (!strcmp(argv[1], "W4")) v = w4(n, rounds);
    else return bench_usage(argv[0]);
    printf("%.6g\n", v);
    return 0;
}
