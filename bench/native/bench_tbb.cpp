// oneTBB's side of the benchmark workloads: task_group and parallel_for.
#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/task_group.h>

#include <atomic>
#include <vector>

extern "C" {
#include "common.h"
}

static double w1(long n) {
    tbb::task_group g;
    for (long i = 0; i < 10000; i++) g.run([] {});
    g.wait();
    double t0 = bench_now();
    for (long i = 0; i < n; i++) g.run([] {});
    g.wait();
    return n / (bench_now() - t0);
}

static double w2(long n) {
    tbb::task_group g;
    for (long i = 0; i < 1000; i++) { g.run([] {}); g.wait(); }
    double t0 = bench_now();
    for (long i = 0; i < n; i++) {
        g.run([] {});
        g.wait();
    }
    return (bench_now() - t0) / n * 1e6;
}

static double w3(long n) {
    std::vector<int64_t> in(n), out(n);
    for (long i = 0; i < n; i++) in[i] = i;
    auto body = [&](const tbb::blocked_range<long> &r) {
        for (long i = r.begin(); i < r.end(); i++) out[i] = in[i] * in[i];
    };
    tbb::parallel_for(tbb::blocked_range<long>(0, n), body);
    double rates[BENCH_W3_REPEATS];
    for (int r = 0; r < BENCH_W3_REPEATS; r++) {
        double t0 = bench_now();
        tbb::parallel_for(tbb::blocked_range<long>(0, n), body);
        rates[r] = n / (bench_now() - t0);
    }
    if (out[n - 1] != (int64_t)(n - 1) * (n - 1)) exit(3);
    return bench_median(rates, BENCH_W3_REPEATS);
}

static double w4(long n, uint64_t rounds) {
    std::vector<uint64_t> items(n), out(n);
    for (long i = 0; i < n; i++) items[i] = i;
    double serial = bench_serial_seconds(items.data(), n, rounds);
    double t0 = bench_now();
    tbb::parallel_for(tbb::blocked_range<long>(0, n), [&](const tbb::blocked_range<long> &r) {
        for (long i = r.begin(); i < r.end(); i++) out[i] = bench_spin(items[i], rounds);
    });
    double parallel = bench_now() - t0;
    return bench_speedup(serial, parallel, out[n - 1], bench_spin(items[n - 1], rounds));
}

int main(int argc, char **argv) {
    if (argc < 3) return bench_usage(argv[0]);
    long n = atol(argv[2]);
    uint64_t rounds = argc > 3 ? strtoull(argv[3], nullptr, 10) : 0;
    double v;
    if (!strcmp(argv[1], "W1")) v = w1(n);
    else if (!strcmp(argv[1], "W2")) v = w2(n);
    else if (!strcmp(argv[1], "W3")) v = w3(n);
    else if (!strcmp(argv[1], "W4")) v = w4(n, rounds);
    else return bench_usage(argv[0]);
    printf("%.6g\n", v);
    return 0;
}
