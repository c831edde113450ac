/* The seed's Ray example, a small task graph passing references, plain C functions (pow,
 * hypot) as remote tasks by signature, an actor counter, a 256 MiB array put once and read by
 * tasks in worker processes without a copy, and a crashing task that fails alone.
 *
 *   ray.init()
 *   @ray.remote
 *   def f(x):
 *       time.sleep(1)
 *       return x
 *   result_ids = [f.remote(i) for i in range(4)]
 *   results = ray.get(result_ids)   # [0, 1, 2, 3]
 *
 * On 2 workers the four one-second tasks take about 2 s.
 */
#define _POSIX_C_SOURCE 200809L
#include <forklift.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t value_of(const fl_blob *blob) {
    int64_t v = 0;
    memcpy(&v, blob->data, sizeof v);
    return v;
}

/* def f(x): time.sleep(1); return x */
static int f(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)nargs;
    struct timespec second = {1, 0};
    nanosleep(&second, NULL);
    int64_t x = value_of(&args[0]);
    return fl_task_return(ctx, &x, sizeof x);
}

/* def add(a, b): return a + b */
static int add(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)nargs;
    int64_t sum = value_of(&args[0]) + value_of(&args[1]);
    return fl_task_return(ctx, &sum, sizeof sum);
}

/* An actor: a counter whose state lives between calls. */
static int counter_init(void *user, const fl_blob *args, size_t nargs, void **state) {
    (void)user; (void)args; (void)nargs;
    *state = calloc(1, sizeof(int64_t));
    return *state ? 0 : 1;
}

static void counter_free(void *user, void *state) {
    (void)user;
    free(state);
}

static int counter_increment(void *state, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)args; (void)nargs;
    int64_t *count = state;
    ++*count;
    return fl_task_return(ctx, count, sizeof *count);
}

/* Sums one quarter (args[1] = 0..3) of the array in args[0]: a view of the stored object. */
static int quarter_sum(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)nargs;
    const uint64_t *numbers = args[0].data;
    size_t count = args[0].len / sizeof *numbers / 4;
    int64_t which = value_of(&args[1]);
    uint64_t total = 0;
    for (size_t i = (size_t)which * count; i < ((size_t)which + 1) * count; i++) total += numbers[i];
    return fl_task_return(ctx, &total, sizeof total);
}

/* A task with a bug: it crashes its process. */
static int crashing(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)args; (void)nargs; (void)ctx;
    raise(SIGSEGV);
    return 0;
}

int main(void) {
    fl_runtime_options options;
    fl_runtime_options_init(&options);
    options.workers = 2;
    options.process_workers = 2; /* for the isolated tasks below */
    fl_runtime ray = NULL;
    if (fl_runtime_create(&options, &ray) != FL_OK) {
        fprintf(stderr, "runtime: %s\n", fl_last_error());
        return 1;
    }

    int wrong = 0; /* set when a result differs from what it should be */
    double start = now();
    fl_ref result_ids[4];
    for (int64_t i = 0; i < 4; i++) {
        fl_arg arg = {&i, sizeof i, NULL}; /* copied: i may change right after */
        fl_remote(ray, f, NULL, &arg, 1, NULL, &result_ids[i]);
    }
    printf("results = [");
    for (int i = 0; i < 4; i++) {
        const void *data = NULL;
        if (fl_get(result_ids[i], FL_FOREVER, &data, NULL) != FL_OK) {
            fprintf(stderr, "get: %s\n", fl_last_error());
            return 1;
        }
        int64_t x;
        memcpy(&x, data, sizeof x);
        printf("%s%lld", i ? ", " : "", (long long)x);
        if (x != i) wrong = 1;
    }
    printf("]   (%.1f s on 2 workers)\n", now() - start);

    /* A graph: add(f(0), f(1)) and add(that, f(2)), wired by references before anything ran. */
    fl_arg first[2] = {{NULL, 0, result_ids[0]}, {NULL, 0, result_ids[1]}};
    fl_ref partial = NULL, total = NULL;
    fl_remote(ray, add, NULL, first, 2, NULL, &partial);
    fl_arg second[2] = {{NULL, 0, partial}, {NULL, 0, result_ids[2]}};
    fl_remote(ray, add, NULL, second, 2, NULL, &total);
    const void *data = NULL;
    fl_get(total, FL_FOREVER, &data, NULL);
    int64_t sum;
    memcpy(&sum, data, sizeof sum);
    printf("add(add(f(0), f(1)), f(2)) = %lld\n", (long long)sum);
    if (sum != 3) wrong = 1;

    /* Plain C functions as remote tasks, no wrapper: pow(hypot(3, 4), 2), wired by a reference. */
    fl_signature binary = NULL;
    fl_signature_create("double(double, double)", &binary);
    double three = 3.0, four = 4.0, two = 2.0;
    fl_arg sides[2] = {{&three, sizeof three, NULL}, {&four, sizeof four, NULL}};
    fl_ref hypotenuse = NULL, squared = NULL;
    fl_remote_typed(ray, binary, (fl_fn)hypot, sides, 2, NULL, &hypotenuse);
    fl_arg power[2] = {{NULL, 0, hypotenuse}, {&two, sizeof two, NULL}};
    fl_remote_typed(ray, binary, (fl_fn)pow, power, 2, NULL, &squared);
    fl_signature_destroy(binary);
    double typed_result = 0;
    if (fl_get(squared, FL_FOREVER, &data, NULL) == FL_OK) memcpy(&typed_result, data, sizeof typed_result);
    printf("pow(hypot(3, 4), 2) as typed remote tasks = %g\n", typed_result);
    if (typed_result < 24.999 || typed_result > 25.001) wrong = 1;
    fl_ref_release(hypotenuse);
    fl_ref_release(squared);

    /* counter = Counter.remote(); [counter.increment.remote() for _ in range(5)] */
    fl_actor counter = NULL;
    fl_actor_create(ray, counter_init, counter_free, NULL, NULL, 0, NULL, &counter);
    fl_ref calls[5];
    for (int i = 0; i < 5; i++) fl_actor_call(counter, counter_increment, NULL, 0, &calls[i]);
    printf("counter = [");
    for (int i = 0; i < 5; i++) {
        const void *count = NULL;
        fl_get(calls[i], FL_FOREVER, &count, NULL);
        int64_t value;
        memcpy(&value, count, sizeof value);
        printf("%s%lld", i ? ", " : "", (long long)value);
        if (value != i + 1) wrong = 1;
        fl_ref_release(calls[i]);
    }
    printf("]\n");
    fl_actor_kill(counter);

    /* array_ref = ray.put(np.arange(32M, dtype=uint64)); four tasks in worker processes read
       it, none copies it: the array is written in place into the store's shared memory
       (fl_create) and each worker process maps it. */
    fl_remote_options isolated;
    fl_remote_options_init(&isolated);
    isolated.isolate = 1;
    size_t count = (size_t)32 << 20; /* 256 MiB of uint64 */
    void *buffer = NULL;
    fl_ref array = NULL;
    if (fl_create(ray, count * sizeof(uint64_t), &buffer, &array) != FL_OK) {
        fprintf(stderr, "create: %s\n", fl_last_error());
        return 1;
    }
    uint64_t *numbers = buffer;
    for (size_t i = 0; i < count; i++) numbers[i] = i;
    fl_seal(array);
    double sum_start = now();
    fl_ref parts[4];
    int64_t quarters[4] = {0, 1, 2, 3};
    for (int i = 0; i < 4; i++) {
        fl_arg args[2] = {{NULL, 0, array}, {&quarters[i], sizeof quarters[i], NULL}};
        fl_remote(ray, quarter_sum, NULL, args, 2, &isolated, &parts[i]);
    }
    const void *views[4];
    size_t lengths[4];
    fl_get_many(parts, 4, FL_FOREVER, views, lengths, NULL);
    uint64_t grand = 0;
    for (int i = 0; i < 4; i++) {
        uint64_t part;
        memcpy(&part, views[i], sizeof part);
        grand += part;
        fl_ref_release(parts[i]);
    }
    fl_runtime_stats stats;
    fl_runtime_get_stats(ray, &stats);
    printf("sum of a 256 MiB array by 4 tasks in worker processes = %llu (expected %llu), store holds %.0f MiB, %.2f s\n",
           (unsigned long long)grand, (unsigned long long)((uint64_t)count * (count - 1) / 2),
           (double)stats.object_bytes / (1 << 20), now() - sum_start);
    if (grand != (uint64_t)count * (count - 1) / 2) wrong = 1;
    fl_ref_release(array);

    /* A crash in an isolated task fails that task alone; the program and the runtime go on. */
    fl_ref crashed = NULL;
    fl_remote(ray, crashing, NULL, NULL, 0, &isolated, &crashed);
    int status = fl_get(crashed, FL_FOREVER, NULL, NULL);
    printf("isolated task that crashed: %s: %s\n", fl_strerror(status), fl_last_error());
    fl_ref_release(crashed);

    for (int i = 0; i < 4; i++) fl_ref_release(result_ids[i]);
    fl_ref_release(partial);
    fl_ref_release(total);
    fl_runtime_shutdown(ray);
    if (wrong) fprintf(stderr, "remote: a result above is not what it should be\n");
    return wrong;
}
