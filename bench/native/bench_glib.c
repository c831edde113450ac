/* GLib's side: GThreadPool with one thread per CPU. Completion is counted with an atomic and
 * a GCond, since GThreadPool has no built-in "wait for these tasks". */
#include <glib.h>

#include "common.h"

static GMutex lock;
static GCond done;
static gint remaining;

static void noop(gpointer data, gpointer user) {
    (void)data; (void)user;
    if (g_atomic_int_dec_and_test(&remaining)) {
        g_mutex_lock(&lock);
        g_cond_signal(&done);
        g_mutex_unlock(&lock);
    }
}

static void wait_all(void) {
    g_mutex_lock(&lock);
    while (g_atomic_int_get(&remaining) > 0) g_cond_wait(&done, &lock);
    g_mutex_unlock(&lock);
}

static GThreadPool *make_pool(void) {
    return g_thread_pool_new(noop, NULL, (gint)g_get_num_processors(), TRUE, NULL);
}

static double w1(long n) {
    GThreadPool *pool = make_pool();
    g_atomic_int_set(&remaining, 10000);
    for (long i = 0; i < 10000; i++) g_thread_pool_push(pool, GINT_TO_POINTER(1), NULL);
    wait_all();
    g_atomic_int_set(&remaining, (gint)n);
    double t0 = bench_now();
    for (long i = 0; i < n; i++) g_thread_pool_push(pool, GINT_TO_POINTER(1), NULL);
    wait_all();
    double t = bench_now() - t0;
    g_thread_pool_free(pool, FALSE, TRUE);
    return n / t;
}

static double w2(long n) {
    GThreadPool *pool = make_pool();
    for (long i = 0; i < 1000; i++) {
        g_atomic_int_set(&remaining, 1);
        g_thread_pool_push(pool, GINT_TO_POINTER(1), NULL);
        wait_all();
    }
    double t0 = bench_now();
    for (long i = 0; i < n; i++) {
        g_atomic_int_set(&remaining, 1);
        g_thread_pool_push(pool, GINT_TO_POINTER(1), NULL);
        wait_all();
    }
    double t = bench_now() - t0;
    g_thread_pool_free(pool, FALSE, TRUE);
    return t / n * 1e6;
}

int main(int argc, char **argv) {
    if (argc < 3) return bench_usage(argv[0]);
    long n = atol(argv[2]);
    double v;
    if (!strcmp(argv[1], "W1")) v = w1(n);
    else if (!strcmp(argv[1], "W2")) v = w2(n);
    else return bench_usage(argv[0]);
    printf("%.6g\n", v);
    return 0;
}
