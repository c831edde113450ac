/* Forklift's side of the benchmark workloads, through the public C API. */
#define _GNU_SOURCE
#include <forklift.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

static int noop(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)arg; (void)len; (void)ctx;
    return 0;
}

static fl_pool make_pool(int backend) {
    fl_pool_options options;
    fl_pool_options_init(&options);
    options.backend = backend;
    fl_pool pool;
    if (fl_pool_create(&options, &pool) != FL_OK) {
        fprintf(stderr, "fl_pool_create: %s\n", fl_last_error());
        exit(1);
    }
    return pool;
}

/* W1: N no-op tasks submitted one by one to a task group, then one wait. */
static double w1(fl_pool pool, long n) {
    fl_group g;
    fl_group_create(pool, &g);
    for (long i = 0; i < 10000; i++) fl_group_submit(g, noop, NULL, NULL, 0);
    fl_group_wait(g, FL_FOREVER);
    double t0 = bench_now();
    for (long i = 0; i < n; i++) fl_group_submit(g, noop, NULL, NULL, 0);
    fl_group_wait(g, FL_FOREVER);
    double t = bench_now() - t0;
    fl_group_destroy(g);
    return n / t;
}

/* W1 with a completion callback per task (apply_async, no result handle). */
static pthread_mutex_t cb_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cb_done = PTHREAD_COND_INITIALIZER;
static long cb_count, cb_target;

static void count_callback(void *user, fl_result r) {
    (void)user; (void)r;
    if (++cb_count == cb_target) { /* callbacks are serialized: plain increment */
        pthread_mutex_lock(&cb_lock);
        pthread_cond_signal(&cb_done);
        pthread_mutex_unlock(&cb_lock);
    }
}

static double w1cb(fl_pool pool, long n) {
    cb_count = 0;
    cb_target = n;
    double t0 = bench_now();
    for (long i = 0; i < n; i++) fl_pool_apply_async(pool, noop, NULL, NULL, 0, count_callback, NULL, NULL, NULL);
    pthread_mutex_lock(&cb_lock);
    while (__atomic_load_n(&cb_count, __ATOMIC_ACQUIRE) < n) pthread_cond_wait(&cb_done, &cb_lock);
    pthread_mutex_unlock(&cb_lock);
    return n / (bench_now() - t0);
}

/* W2: submit one no-op, wait for it, repeat. Microseconds per round trip. */
static double w2(fl_pool pool, long n) {
    for (long i = 0; i < 1000; i++) fl_pool_apply(pool, noop, NULL, NULL, 0, NULL, 0, NULL);
    double t0 = bench_now();
    for (long i = 0; i < n; i++) fl_pool_apply(pool, noop, NULL, NULL, 0, NULL, 0, NULL);
    return (bench_now() - t0) / n * 1e6;
}

/* W3: out[i] = in[i] * in[i] over N int64, in order, with the strided map. */
static int square_kernel(void *user, const void *in, ptrdiff_t is, void *out, ptrdiff_t os, size_t count) {
    (void)user;
    if (is == 8 && os == 8) {
        const int64_t *a = in;
        int64_t *b = out;
        for (size_t i = 0; i < count; i++) b[i] = a[i] * a[i];
        return 0;
    }
    for (size_t i = 0; i < count; i++) {
        int64_t x = *(const int64_t *)((const char *)in + (ptrdiff_t)i * is);
        *(int64_t *)((char *)out + (ptrdiff_t)i * os) = x * x;
    }
    return 0;
}

static double w3(fl_pool pool, long n) {
    int64_t *in = malloc(n * sizeof *in), *out = malloc(n * sizeof *out);
    for (long i = 0; i < n; i++) in[i] = i, out[i] = 0;
    fl_pool_map_strided(pool, square_kernel, NULL, in, 8, out, 8, n, 0); /* warm-up: pages, threads */
    double rates[BENCH_W3_REPEATS];
    for (int r = 0; r < BENCH_W3_REPEATS; r++) {
        double t0 = bench_now();
        fl_pool_map_strided(pool, square_kernel, NULL, in, 8, out, 8, n, 0);
        rates[r] = n / (bench_now() - t0);
    }
    if (out[n - 1] != (int64_t)(n - 1) * (n - 1)) exit(3);
    free(in);
    free(out);
    return bench_median(rates, BENCH_W3_REPEATS);
}

/* W4: N calls of a ~1 ms function: serial time / parallel time (map, default chunksize). */
static uint64_t rounds;
static int spin_task(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)len;
    uint64_t r = bench_spin(*(const uint64_t *)arg, rounds);
    return fl_task_return(ctx, &r, sizeof r);
}

static double w4(fl_pool pool, long n) {
    uint64_t *items = malloc(n * sizeof *items);
    for (long i = 0; i < n; i++) items[i] = (uint64_t)i;
    double serial = bench_serial_seconds(items, n, rounds);
    fl_result r;
    double t0 = bench_now();
    fl_pool_map(pool, spin_task, NULL, items, sizeof *items, n, 0, &r);
    double parallel = bench_now() - t0;
    const void *data;
    size_t len;
    fl_result_item(r, n - 1, &data, &len);
    double speedup = bench_speedup(serial, parallel, *(const uint64_t *)data, bench_spin(items[n - 1], rounds));
    fl_result_release(r);
    free(items);
    return speedup;
}

/* T1: the same work through a typed starmap (libffi, no wrapper) and a blob starmap (a wrapper
 * task that unpacks the tuple and returns the result). Nanoseconds per call. */
typedef struct {
    int64_t a, b;
} pair;

static int64_t add_pair(int64_t a, int64_t b) { return a + b; }

static int add_task(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)len;
    const pair *p = arg;
    int64_t r = add_pair(p->a, p->b);
    return fl_task_return(ctx, &r, sizeof r);
}

static double t1(fl_pool pool, long n, int typed) {
    pair *tuples = malloc(n * sizeof *tuples);
    int64_t *results = malloc(n * sizeof *results);
    for (long i = 0; i < n; i++) tuples[i].a = i, tuples[i].b = 1;
    fl_signature sig;
    fl_signature_create("i64(i64, i64)", &sig);
    double best = 1e9;
    for (int round = 0; round < 3; round++) {
        double t0 = bench_now();
        if (typed) {
            fl_pool_starmap_typed(pool, sig, (fl_fn)add_pair, tuples, n, results, 0);
        } else {
            fl_result r;
            fl_pool_map(pool, add_task, NULL, tuples, sizeof *tuples, n, 0, &r);
            const void *data;
            size_t len;
            fl_result_item(r, n - 1, &data, &len);
            results[n - 1] = *(const int64_t *)data;
            fl_result_release(r);
        }
        double t = bench_now() - t0;
        if (t < best) best = t;
    }
    if (results[n - 1] != n) exit(3);
    fl_signature_destroy(sig);
    free(tuples);
    free(results);
    return best / n * 1e9;
}

/* W5: N bytes (uint64 words 0, 1, 2, ...) into a task in a worker process, a checksum back.
 * W5copy passes the buffer as the argument blob (the library copies it into shared memory);
 * W5shm builds it in a shared-memory segment and passes the segment's name (no copy). */
static int checksum_blob(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user;
    const uint64_t *words = arg;
    uint64_t sum = 0;
    for (size_t i = 0; i < len / 8; i++) sum += words[i];
    return fl_task_return(ctx, &sum, sizeof sum);
}

static int checksum_shm(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user;
    char name[64] = {0};
    memcpy(name, arg, len < 63 ? len : 63);
    fl_shm shm;
    if (fl_shm_open(name, &shm) != FL_OK) return 1;
    const uint64_t *words;
    size_t size;
    fl_shm_data(shm, (void **)&words, &size);
    uint64_t sum = 0;
    for (size_t i = 0; i < size / 8; i++) sum += words[i];
    fl_shm_close(shm);
    return fl_task_return(ctx, &sum, sizeof sum);
}

/* W5copysteady, W5steady and W5steadyput: transfers before the timed ones, and timed ones,
 * in one pool or runtime; the median of the timed ones (as Ray's W5s and W5sref and
 * multiprocessing's W5s). */
#define W5_WARMUPS 3
#define W5_TIMED 5

/* W5copysteady: W5copy in one pool, a new buffer per transfer. */
static double w5_copy_steady(fl_pool pool, long n) {
    size_t words = (size_t)n / 8;
    uint64_t *data = malloc(words * 8);
    if (!data) exit(3);
    double times[W5_WARMUPS + W5_TIMED];
    for (int i = 0; i < W5_WARMUPS + W5_TIMED; i++) {
        uint64_t expected = 0, got = 0;
        for (size_t w = 0; w < words; w++) {
            data[w] = w + (uint64_t)i;
            expected += data[w];
        }
        double t0 = bench_now();
        if (fl_pool_apply(pool, checksum_blob, NULL, data, words * 8, &got, sizeof got, NULL) != FL_OK) exit(3);
        double t = bench_now() - t0;
        if (got != expected) exit(4);
        times[i] = t;
    }
    free(data);
    return (double)n / bench_median(times + W5_WARMUPS, W5_TIMED) / (1024.0 * 1024.0 * 1024.0);
}

static double w5(fl_pool pool, long n, int shared) {
    size_t words = (size_t)n / 8;
    uint64_t expected = 0, got = 0;
    for (size_t i = 0; i < words; i++) expected += i;
    fl_shm shm = NULL;
    uint64_t *data;
    if (shared) {
        fl_shm_create(NULL, words * 8, &shm);
        fl_shm_data(shm, (void **)&data, NULL);
    } else {
        data = malloc(words * 8);
    }
    for (size_t i = 0; i < words; i++) data[i] = i;
    char name[64];
    double t0 = bench_now();
    if (shared) {
        fl_shm_name(shm, name, sizeof name);
        fl_pool_apply(pool, checksum_shm, NULL, name, strlen(name), &got, sizeof got, NULL);
    } else {
        fl_pool_apply(pool, checksum_blob, NULL, data, words * 8, &got, sizeof got, NULL);
    }
    double t = bench_now() - t0;
    if (got != expected) exit(4);
    if (shared) fl_shm_close(shm);
    else free(data);
    return (double)n / t / (1024.0 * 1024.0 * 1024.0);
}

/* W5 through the Remote engine's object store, into a task in a worker process (isolate):
 * W5store: the buffer is made in place in the store (fl_create, filled, sealed) before the
 * clock starts; W5put: the clock includes fl_put copying a ready buffer into the store (as
 * Ray's W5 includes its put). W5floor: a child forked after the buffer was filled sums the
 * shared mapping it inherited, with no handoff at all: what reading the bytes from another
 * process costs on this machine. GiB/s. */
static int remote_checksum(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)nargs;
    const uint64_t *words = args[0].data;
    uint64_t sum = 0;
    for (size_t i = 0; i < args[0].len / 8; i++) sum += words[i];
    return fl_task_return(ctx, &sum, sizeof sum);
}


static double w5_remote(const char *mode, long n) {
    size_t words = (size_t)n / 8;
    uint64_t expected = 0, got = 0;
    for (size_t i = 0; i < words; i++) expected += i;
    if (strcmp(mode, "W5floor") == 0) {
        /* The floor: the buffer already in shared memory, a child forked after it was filled
         * (so it needs no handoff at all) sums its inherited mapping and writes the sum to a pipe. */
        uint64_t *data = mmap(NULL, words * 8, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (data == MAP_FAILED) exit(3);
        for (size_t i = 0; i < words; i++) data[i] = i;
        int fds[2];
        if (pipe(fds) != 0) exit(3);
        double t0 = bench_now();
        pid_t child = fork();
        if (child == 0) {
            uint64_t sum = 0;
            for (size_t i = 0; i < words; i++) sum += data[i];
            _exit(write(fds[1], &sum, sizeof sum) == (ssize_t)sizeof sum ? 0 : 1);
        }
        if (read(fds[0], &got, sizeof got) != (ssize_t)sizeof got) exit(3);
        double t = bench_now() - t0;
        waitpid(child, NULL, 0);
        if (got != expected) exit(4);
        munmap(data, words * 8);
        return (double)n / t / (1024.0 * 1024.0 * 1024.0);
    }
    fl_runtime_options options;
    fl_runtime_options_init(&options);
    options.workers = 1;
    options.process_workers = 1;
    fl_runtime rt = NULL;
    if (fl_runtime_create(&options, &rt) != FL_OK) exit(3);
    fl_remote_options isolated;
    fl_remote_options_init(&isolated);
    isolated.isolate = 1;
    if (strcmp(mode, "W5steady") == 0 || strcmp(mode, "W5steadyput") == 0) {
        /* Steady state: in one runtime, a new object per transfer, W5_WARMUPS transfers first,
         * then the median of W5_TIMED. W5steady makes each object in place and seals it before
         * its clock starts; W5steadyput puts a filled buffer inside the clock (as Ray's W5s). */
        int put = strcmp(mode, "W5steadyput") == 0;
        uint64_t *source = put ? malloc(words * 8) : NULL;
        if (put && !source) exit(3);
        double times[W5_WARMUPS + W5_TIMED];
        for (int i = 0; i < W5_WARMUPS + W5_TIMED; i++) {
            uint64_t *words_out = source;
            fl_ref object = NULL, result = NULL;
            if (!put && fl_create(rt, words * 8, (void **)&words_out, &object) != FL_OK) exit(3);
            for (size_t w = 0; w < words; w++) words_out[w] = w + (uint64_t)i;
            if (!put) fl_seal(object);
            const void *view = NULL;
            double t0 = bench_now();
            if (put && fl_put(rt, source, words * 8, &object) != FL_OK) exit(3);
            fl_arg arg = {NULL, 0, object};
            fl_remote(rt, remote_checksum, NULL, &arg, 1, &isolated, &result);
            if (fl_get(result, FL_FOREVER, &view, NULL) == FL_OK) memcpy(&got, view, sizeof got);
            times[i] = bench_now() - t0;
            if (got != expected + (uint64_t)i * words) exit(4);
            fl_ref_release(result);
            fl_ref_release(object);
        }
        free(source);
        fl_runtime_shutdown(rt);
        return (double)n / bench_median(times + W5_WARMUPS, W5_TIMED) / (1024.0 * 1024.0 * 1024.0);
    }
    fl_ref object = NULL, result = NULL;
    uint64_t *data = NULL;
    double t0;
    if (strcmp(mode, "W5store") == 0) {
        fl_create(rt, words * 8, (void **)&data, &object);
        for (size_t i = 0; i < words; i++) data[i] = i;
        fl_seal(object);
        t0 = bench_now();
    } else {
        data = malloc(words * 8);
        for (size_t i = 0; i < words; i++) data[i] = i;
        t0 = bench_now();
        fl_put(rt, data, words * 8, &object);
    }
    fl_arg arg = {NULL, 0, object};
    const void *view = NULL;
    fl_remote(rt, remote_checksum, NULL, &arg, 1, &isolated, &result);
    if (fl_get(result, FL_FOREVER, &view, NULL) == FL_OK) memcpy(&got, view, sizeof got);
    double t = bench_now() - t0;
    if (got != expected) exit(4);
    if (strcmp(mode, "W5put") == 0) free(data);
    fl_ref_release(result);
    fl_ref_release(object);
    fl_runtime_shutdown(rt);
    return (double)n / t / (1024.0 * 1024.0 * 1024.0);
}

/* The Remote engine: R1 no-op remote tasks, get all (tasks/s); R2 remote + get, repeat (us);
 * W8 put then get of an 8-byte object, released (us). */
static int remote_noop(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)args; (void)nargs; (void)ctx;
    return 0;
}

static int actor_init(void *user, const fl_blob *args, size_t nargs, void **state) {
    (void)user; (void)args; (void)nargs;
    *state = calloc(1, sizeof(int64_t));
    return 0;
}

static void actor_free(void *user, void *state) {
    (void)user;
    free(state);
}

static int actor_increment(void *state, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)args; (void)nargs;
    int64_t *count = state;
    ++*count;
    return fl_task_return(ctx, count, sizeof *count);
}

/* W6: calls on one actor: W6s one call at a time (call, get), W6p all calls first, then get
 * each (calls/s). */
static double actor_bench(const char *mode, long n) {
    fl_runtime rt = NULL;
    fl_runtime_create(NULL, &rt);
    fl_actor actor = NULL;
    fl_actor_create(rt, actor_init, actor_free, NULL, NULL, 0, NULL, &actor);
    double t0 = bench_now();
    if (strcmp(mode, "W6s") == 0) {
        for (long i = 0; i < n; i++) {
            fl_ref r = NULL;
            fl_actor_call(actor, actor_increment, NULL, 0, &r);
            fl_get(r, FL_FOREVER, NULL, NULL);
            fl_ref_release(r);
        }
    } else {
        fl_ref *refs = malloc((size_t)n * sizeof *refs);
        for (long i = 0; i < n; i++) fl_actor_call(actor, actor_increment, NULL, 0, &refs[i]);
        for (long i = 0; i < n; i++) {
            fl_get(refs[i], FL_FOREVER, NULL, NULL);
            fl_ref_release(refs[i]);
        }
        free(refs);
    }
    double value = n / (bench_now() - t0);
    fl_actor_kill(actor);
    fl_runtime_shutdown(rt);
    return value;
}

static double remote_bench(const char *mode, long n) {
    fl_runtime rt = NULL;
    fl_runtime_create(NULL, &rt);
    double value = 0;
    if (strcmp(mode, "R1") == 0) {
        fl_ref *refs = malloc((size_t)n * sizeof *refs);
        double t0 = bench_now();
        for (long i = 0; i < n; i++) fl_remote(rt, remote_noop, NULL, NULL, 0, NULL, &refs[i]);
        for (long i = 0; i < n; i++) {
            fl_get(refs[i], FL_FOREVER, NULL, NULL);
            fl_ref_release(refs[i]);
        }
        value = n / (bench_now() - t0);
        free(refs);
    } else if (strcmp(mode, "R2") == 0) {
        double t0 = bench_now();
        for (long i = 0; i < n; i++) {
            fl_ref r = NULL;
            fl_remote(rt, remote_noop, NULL, NULL, 0, NULL, &r);
            fl_get(r, FL_FOREVER, NULL, NULL);
            fl_ref_release(r);
        }
        value = (bench_now() - t0) / n * 1e6;
    } else {
        int64_t x = 42;
        double t0 = bench_now();
        for (long i = 0; i < n; i++) {
            fl_ref r = NULL;
            const void *data = NULL;
            fl_put(rt, &x, sizeof x, &r);
            fl_get(r, FL_FOREVER, &data, NULL);
            x += *(const int64_t *)data & 1;
            fl_ref_release(r);
        }
        value = (bench_now() - t0) / n * 1e6;
    }
    fl_runtime_shutdown(rt);
    return value;
}

/* Q1: a message to a child process through one fl_queue and its echo back through another,
 * repeated (multiprocessing.Queue's round trip); µs per round trip. The child is an
 * fl_process that inherited both queues. */
static fl_queue q1_requests, q1_answers;

static int q1_echo(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)arg; (void)len;
    char message[64];
    size_t got = 0;
    while (fl_queue_get(q1_requests, message, sizeof message, &got, 30) == FL_OK && got > 0) {
        if (fl_queue_put(q1_answers, message, got, 30) != FL_OK) return 2;
    }
    return fl_task_return(ctx, NULL, 0);
}

static double q1(long n) {
    if (fl_queue_create(1 << 16, 0, &q1_requests) != FL_OK || fl_queue_create(1 << 16, 0, &q1_answers) != FL_OK) exit(3);
    fl_process child = NULL;
    if (fl_process_start(q1_echo, NULL, NULL, 0, NULL, &child) != FL_OK) exit(3);
    int64_t value = 0, back = 0;
    size_t got = 0;
    double t0 = 0;
    for (long i = -100; i < n; i++) { /* 100 round trips before the clock */
        if (i == 0) t0 = bench_now();
        value = i;
        if (fl_queue_put(q1_requests, &value, sizeof value, 30) != FL_OK) exit(3);
        if (fl_queue_get(q1_answers, &back, sizeof back, &got, 30) != FL_OK || back != value) exit(4);
    }
    double t = bench_now() - t0;
    fl_queue_put(q1_requests, "", 0, 30); /* an empty message ends the child */
    fl_process_join(child, 30);
    fl_process_destroy(child);
    fl_queue_destroy(q1_requests);
    fl_queue_destroy(q1_answers);
    return t / n * 1e6;
}

int main(int argc, char **argv) {
    if (argc < 3) return bench_usage(argv[0]);
    long n = atol(argv[2]);
    if (argc > 3) rounds = strtoull(argv[3], NULL, 10);
    if (strcmp(argv[1], "calibrate") == 0) { /* seconds per call of bench_spin(rounds=N) */
        double t0 = bench_now();
        uint64_t s = 0;
        for (int i = 0; i < 200; i++) s += bench_spin((uint64_t)i, (uint64_t)n);
        printf("%.9f\n", (bench_now() - t0) / 200 + (double)(s & 1) * 1e-12);
        return 0;
    }
    if (strcmp(argv[1], "Q1") == 0) {
        printf("%.6g\n", q1(n));
        return 0;
    }
    if (strcmp(argv[1], "W6s") == 0 || strcmp(argv[1], "W6p") == 0) {
        printf("%.6g\n", actor_bench(argv[1], n));
        return 0;
    }
    if (strcmp(argv[1], "W5store") == 0 || strcmp(argv[1], "W5put") == 0 || strcmp(argv[1], "W5floor") == 0 ||
        strcmp(argv[1], "W5steady") == 0 || strcmp(argv[1], "W5steadyput") == 0) {
        printf("%.6g\n", w5_remote(argv[1], n));
        return 0;
    }
    if (strcmp(argv[1], "R1") == 0 || strcmp(argv[1], "R2") == 0 || strcmp(argv[1], "W8") == 0) {
        printf("%.6g\n", remote_bench(argv[1], n));
        return 0;
    }
    /* W7: the process backend; W7rt round trips as W2, W7tp no-op throughput as W1. */
    int process = strncmp(argv[1], "W7", 2) == 0 || strncmp(argv[1], "W5", 2) == 0;
    fl_pool pool = make_pool(process ? FL_BACKEND_PROCESS : FL_BACKEND_THREAD);
    double v;
    if (strcmp(argv[1], "W7rt") == 0) v = w2(pool, n);
    else if (strcmp(argv[1], "W5copy") == 0) v = w5(pool, n, 0);
    else if (strcmp(argv[1], "W5copysteady") == 0) v = w5_copy_steady(pool, n);
    else if (strcmp(argv[1], "W5shm") == 0) v = w5(pool, n, 1);
    else if (strcmp(argv[1], "W7tp") == 0) v = w1(pool, n);
    else if (strcmp(argv[1], "W1") == 0) v = w1(pool, n);
    else if (strcmp(argv[1], "W1cb") == 0) v = w1cb(pool, n);
    else if (strcmp(argv[1], "W2") == 0) v = w2(pool, n);
    else if (strcmp(argv[1], "W3") == 0) v = w3(pool, n);
    else if (strcmp(argv[1], "W4") == 0) v = w4(pool, n);
    else if (strcmp(argv[1], "T1typed") == 0) v = t1(pool, n, 1);
    else if (strcmp(argv[1], "T1blob") == 0) v = t1(pool, n, 0);
    else return bench_usage(argv[0]);
    printf("%.6g\n", v);
    fl_pool_destroy(pool);
    return 0;
}
