/* Remote tasks and objects through the public C ABI (Ray's remote, put, get, wait). */
#define _GNU_SOURCE
#include "check.h"
#include "remote_helpers.h"

#include <dirent.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

static fl_arg int_arg(const int64_t *v) { return (fl_arg){v, sizeof *v, NULL}; }
static fl_arg ref_arg(fl_ref r) { return (fl_arg){NULL, 0, r}; }

/* A runtime of `workers` threads and a store of `capacity` bytes (0: no limit). */
static fl_runtime new_runtime(size_t workers, size_t capacity) {
    fl_runtime_options options;
    CHECK_OK(fl_runtime_options_init(&options));
    options.workers = workers;
    options.store_capacity = capacity;
    fl_runtime rt = NULL;
    CHECK_OK(fl_runtime_create(&options, &rt));
    return rt;
}

/* ---- task functions ---- */

/* The seed's f(x): sleep, return x. */
static int sleep_then_echo(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)nargs;
    pause_ms(100);
    int64_t x = as_int(&args[0]);
    return fl_task_return(ctx, &x, sizeof x);
}

/* The sum of all int64 arguments. */
static int sum_args(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user;
    int64_t total = 0;
    for (size_t i = 0; i < nargs; i++) total += as_int(&args[i]);
    return fl_task_return(ctx, &total, sizeof total);
}

/* How many times `needle` occurs in `text`. */
static size_t count_of(const char *text, const char *needle) {
    size_t count = 0;
    for (const char *at = strstr(text, needle); at; at = strstr(at + 1, needle)) count++;
    return count;
}

static int fail_seven(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)args; (void)nargs;
    return fl_task_fail(ctx, 7, "seven is not allowed");
}

/* Submits two sum tasks from inside a task and waits for both (nested tasks). */
static int nested(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)args; (void)nargs;
    fl_runtime rt = user;
    int64_t a = 20, b = 22;
    fl_arg one[1] = {int_arg(&a)}, two[1] = {int_arg(&b)};
    fl_ref ra = NULL, rb = NULL;
    if (fl_remote(rt, sum_args, NULL, one, 1, NULL, &ra) != FL_OK) return 1;
    if (fl_remote(rt, sum_args, NULL, two, 1, NULL, &rb) != FL_OK) return 2;
    int64_t total = get_int(ra) + get_int(rb);
    fl_ref_release(ra);
    fl_ref_release(rb);
    return fl_task_return(ctx, &total, sizeof total);
}

/* As `nested`, but waits for both subtasks with one fl_wait before reading them (for one of
 * them when the task's argument says 1, for both otherwise). */
static int nested_wait(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    size_t wanted = nargs == 1 && as_int(&args[0]) == 1 ? 1 : 2;
    fl_runtime rt = user;
    int64_t a = 20, b = 22;
    fl_arg one[1] = {int_arg(&a)}, two[1] = {int_arg(&b)};
    fl_ref refs[2] = {NULL, NULL};
    if (fl_remote(rt, sum_args, NULL, one, 1, NULL, &refs[0]) != FL_OK) return 1;
    if (fl_remote(rt, sum_args, NULL, two, 1, NULL, &refs[1]) != FL_OK) return 2;
    unsigned char ready[2] = {0, 0};
    if (fl_wait(refs, 2, wanted, FL_FOREVER, ready) != FL_OK || (size_t)(ready[0] + ready[1]) < wanted) return 3;
    int64_t total = get_int(refs[0]) + get_int(refs[1]);
    fl_ref_release(refs[0]);
    fl_ref_release(refs[1]);
    return fl_task_return(ctx, &total, sizeof total);
}

static volatile int gate_open;

static int wait_for_gate(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)args; (void)nargs;
    while (!__atomic_load_n(&gate_open, __ATOMIC_ACQUIRE)) pause_ms(1);
    int64_t one = 1;
    return fl_task_return(ctx, &one, sizeof one);
}

/* Fails until it has been called `*(int *)user` times. */
static int flaky(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)args; (void)nargs;
    int *calls = user;
    int n = __atomic_add_fetch(&calls[0], 1, __ATOMIC_SEQ_CST);
    if (n < calls[1]) return fl_task_fail(ctx, 5, "not yet");
    int64_t v = n;
    return fl_task_return(ctx, &v, sizeof v);
}

/* ---- tests ---- */

static double seconds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* futures = [f.remote(i) for i in range(4)]; print(ray.get(futures)): the values come back
 * in order. */
static void run_seed_example(fl_runtime rt) {
    fl_ref futures[4];
    for (int64_t i = 0; i < 4; i++) {
        fl_arg arg = int_arg(&i);
        CHECK_OK(fl_remote(rt, sleep_then_echo, NULL, &arg, 1, NULL, &futures[i]));
    }
    for (int64_t i = 0; i < 4; i++) {
        CHECK(get_int(futures[i]) == i);
        CHECK_OK(fl_ref_release(futures[i]));
    }
}

static void test_seed_example(fl_runtime rt) {
    run_seed_example(rt);

    /* On a runtime of two workers, the four tasks that sleep 100 ms each take two turns (the
     * waiting caller may run a queued one itself, which still leaves two turns): not less
     * than 200 ms, which would mean more than three ran at once, and well under the 400 ms
     * of one at a time. (A bound on sleeping, not a speed measurement.) */
    fl_runtime two = new_runtime(2, 0);
    double start = seconds_now();
    run_seed_example(two);
    double elapsed = seconds_now() - start;
    CHECK(elapsed >= 0.19);
    CHECK(elapsed < 0.38);
    CHECK_OK(fl_runtime_shutdown(two));
}

static void test_dataflow(fl_runtime rt) {
    /* A chain of 200 tasks, each taking the previous one's ref, submitted before any ran. */
    int64_t zero = 0, one = 1;
    fl_ref chain = NULL;
    CHECK_OK(fl_put(rt, &zero, sizeof zero, &chain));
    for (int i = 0; i < 200; i++) {
        fl_arg args[2] = {ref_arg(chain), int_arg(&one)};
        fl_ref next = NULL;
        CHECK_OK(fl_remote(rt, sum_args, NULL, args, 2, NULL, &next));
        CHECK_OK(fl_ref_release(chain)); /* the task keeps its argument alive */
        chain = next;
    }
    CHECK(get_int(chain) == 200);
    CHECK_OK(fl_ref_release(chain));

    /* A tree: the sum of 64 leaves by pairs. */
    fl_ref level[64];
    for (int64_t i = 0; i < 64; i++) {
        fl_arg arg = int_arg(&i);
        CHECK_OK(fl_remote(rt, sum_args, NULL, &arg, 1, NULL, &level[i]));
    }
    for (int width = 64; width > 1; width /= 2) {
        for (int i = 0; i < width / 2; i++) {
            fl_arg args[2] = {ref_arg(level[2 * i]), ref_arg(level[2 * i + 1])};
            fl_ref parent = NULL;
            CHECK_OK(fl_remote(rt, sum_args, NULL, args, 2, NULL, &parent));
            fl_ref_release(level[2 * i]);
            fl_ref_release(level[2 * i + 1]);
            level[i] = parent;
        }
    }
    CHECK(get_int(level[0]) == 63 * 64 / 2);
    fl_ref_release(level[0]);
}

static void test_waiting_does_not_hold_a_worker(void) {
    /* One worker: a task waiting for an argument must not occupy it, and a task waiting
     * for tasks it submitted runs them itself. */
    fl_runtime rt = new_runtime(1, 0);

    /* A task whose argument is not sealed yet, then an independent task: the independent one
     * runs on the only worker while the first still waits (fl_get with a timeout never runs
     * a task on the calling thread, so only the worker can have run it). */
    void *buffer = NULL;
    fl_ref unsealed = NULL, waiting = NULL, free_to_run = NULL;
    CHECK_OK(fl_create(rt, sizeof(int64_t), &buffer, &unsealed));
    fl_arg pending_arg = ref_arg(unsealed);
    CHECK_OK(fl_remote(rt, sum_args, NULL, &pending_arg, 1, NULL, &waiting));
    int64_t five = 5;
    fl_arg five_arg = int_arg(&five);
    CHECK_OK(fl_remote(rt, sum_args, NULL, &five_arg, 1, NULL, &free_to_run));
    const void *data = NULL;
    size_t len = 0;
    CHECK_OK(fl_get(free_to_run, 30, &data, &len));
    CHECK(len == sizeof(int64_t) && as_int(&(fl_blob){data, len}) == 5);
    CHECK_RC(FL_ETIMEDOUT, fl_get(waiting, 0, NULL, NULL));
    int64_t nine = 9;
    memcpy(buffer, &nine, sizeof nine);
    CHECK_OK(fl_seal(unsealed));
    CHECK(get_int(waiting) == 9);
    fl_ref_release(unsealed);
    fl_ref_release(waiting);
    fl_ref_release(free_to_run);

    gate_open = 0;
    fl_ref gate = NULL, after = NULL, independent = NULL;
    CHECK_OK(fl_remote(rt, wait_for_gate, NULL, NULL, 0, NULL, &gate));
    fl_arg dep = ref_arg(gate);
    CHECK_OK(fl_remote(rt, sum_args, NULL, &dep, 1, NULL, &after));
    __atomic_store_n(&gate_open, 1, __ATOMIC_RELEASE);
    CHECK(get_int(after) == 1);
    CHECK_OK(fl_remote(rt, nested, rt, NULL, 0, NULL, &independent));
    CHECK(get_int(independent) == 42);
    /* The same through fl_wait, for both and for either: the only worker, waiting, runs the
     * subtasks. */
    fl_ref waited = NULL, waited_any = NULL;
    CHECK_OK(fl_remote(rt, nested_wait, rt, NULL, 0, NULL, &waited));
    CHECK(get_int(waited) == 42);
    int64_t one = 1;
    fl_arg want_one = int_arg(&one);
    CHECK_OK(fl_remote(rt, nested_wait, rt, &want_one, 1, NULL, &waited_any));
    CHECK(get_int(waited_any) == 42);
    fl_ref_release(waited);
    fl_ref_release(waited_any);
    fl_ref_release(gate);
    fl_ref_release(after);
    fl_ref_release(independent);
    CHECK_OK(fl_runtime_shutdown(rt));
}

static void test_failures_travel(fl_runtime rt) {
    fl_runtime_stats before, after;
    CHECK_OK(fl_runtime_get_stats(rt, &before));
    fl_ref bad = NULL, child = NULL, grandchild = NULL;
    CHECK_OK(fl_remote(rt, fail_seven, NULL, NULL, 0, NULL, &bad));
    CHECK_RC(FL_ETASK, fl_get(bad, 30, NULL, NULL));
    CHECK(strstr(fl_last_error(), "seven is not allowed") != NULL);
    CHECK(strstr(fl_last_error(), "(code 7)") != NULL); /* the code the task failed with */
    int64_t one = 1;
    fl_arg args[2] = {int_arg(&one), ref_arg(bad)};
    CHECK_OK(fl_remote(rt, sum_args, NULL, args, 2, NULL, &child));
    CHECK_RC(FL_ETASK, fl_get(child, 30, NULL, NULL));
    CHECK(strstr(fl_last_error(), "argument 1 failed") != NULL && strstr(fl_last_error(), "seven") != NULL);
    /* The cause's code, named once at the end: "argument 1 failed: seven is not allowed (code 7)". */
    CHECK(count_of(fl_last_error(), "(code 7)") == 1 && strstr(fl_last_error(), "allowed (code 7)") != NULL);
    CHECK(strstr(fl_last_error(), "(code -") == NULL); /* not the status as a code */
    fl_arg again = ref_arg(child);
    CHECK_OK(fl_remote(rt, sum_args, NULL, &again, 1, NULL, &grandchild));
    CHECK_RC(FL_ETASK, fl_get(grandchild, 30, NULL, NULL));
    /* The counters saw three failed tasks (others may run on this runtime meanwhile, none
     * of them failing). */
    CHECK_OK(fl_runtime_get_stats(rt, &after));
    CHECK(after.tasks_failed - before.tasks_failed == 3);
    CHECK(after.tasks_finished - before.tasks_finished >= 3);
    fl_ref_release(bad);
    fl_ref_release(child);
    fl_ref_release(grandchild);

    /* Retries on error, when asked. */
    fl_remote_options ro;
    CHECK_OK(fl_remote_options_init(&ro));
    ro.retry_on_error = 1;
    ro.max_retries = 2;
    int calls[2] = {0, 3}; /* succeeds on the third call */
    fl_ref r = NULL;
    CHECK_OK(fl_remote(rt, flaky, calls, NULL, 0, &ro, &r));
    CHECK(get_int(r) == 3);
    fl_ref_release(r);
    ro.max_retries = 1;
    calls[0] = 0;
    CHECK_OK(fl_remote(rt, flaky, calls, NULL, 0, &ro, &r));
    CHECK_RC(FL_ETASK, fl_get(r, 30, NULL, NULL));
    CHECK(calls[0] == 2);
    fl_ref_release(r);
}

static void test_wait(fl_runtime rt) {
    gate_open = 0;
    int64_t a = 5;
    fl_ref refs[3];
    CHECK_OK(fl_remote(rt, wait_for_gate, NULL, NULL, 0, NULL, &refs[0]));
    fl_arg arg = int_arg(&a);
    CHECK_OK(fl_remote(rt, sum_args, NULL, &arg, 1, NULL, &refs[1]));
    CHECK_OK(fl_put(rt, &a, sizeof a, &refs[2]));
    unsigned char ready[3] = {9, 9, 9};
    CHECK_OK(fl_wait(refs, 3, 2, 30, ready));
    CHECK(ready[0] == 0 && ready[1] == 1 && ready[2] == 1);
    CHECK_RC(FL_ETIMEDOUT, fl_wait(refs, 3, 3, 0.05, ready));
    CHECK(ready[0] == 0 && ready[1] == 1);
    CHECK_RC(FL_ETIMEDOUT, fl_get(refs[0], 0.01, NULL, NULL));
    __atomic_store_n(&gate_open, 1, __ATOMIC_RELEASE);
    CHECK_OK(fl_wait(refs, 3, 3, 30, ready));
    CHECK(ready[0] == 1 && ready[1] == 1 && ready[2] == 1);
    CHECK_RC(FL_EINVAL, fl_wait(refs, 3, 4, 0, ready));
    CHECK_RC(FL_EINVAL, fl_wait(refs, 3, 1, 0, NULL));
    for (int i = 0; i < 3; i++) fl_ref_release(refs[i]);
}

static int return_600_bytes(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)args; (void)nargs;
    static const char bytes[600] = {1};
    return fl_task_return(ctx, bytes, sizeof bytes);
}

/* A task result released while its worker is busy with a long task leaves the store (its
 * bytes stop counting against the capacity) without waiting for that task to end. */
static void test_released_result_leaves_a_busy_store(void) {
    fl_runtime rt = new_runtime(1, 1000);
    __atomic_store_n(&gate_open, 0, __ATOMIC_RELEASE);
    fl_ref result = NULL, busy = NULL, put = NULL;
    CHECK_OK(fl_remote(rt, return_600_bytes, NULL, NULL, 0, NULL, &result));
    CHECK_OK(fl_get(result, 30, NULL, NULL));
    CHECK_OK(fl_remote(rt, wait_for_gate, NULL, NULL, 0, NULL, &busy)); /* holds the only worker */
    CHECK_OK(fl_ref_release(result));
    fl_runtime_stats stats = {0};
    for (int i = 0; i < 10000; i++) { /* up to 10 s; with the bug, it stays until the gate opens */
        CHECK_OK(fl_runtime_get_stats(rt, &stats));
        if (stats.object_bytes < 600) break;
        pause_ms(1);
    }
    CHECK(stats.object_bytes < 600);
    char block[600] = {2};
    CHECK_OK(fl_put(rt, block, sizeof block, &put)); /* fits: the released result is gone */
    __atomic_store_n(&gate_open, 1, __ATOMIC_RELEASE);
    CHECK_OK(fl_get(busy, 30, NULL, NULL));
    fl_ref_release(busy);
    fl_ref_release(put);
    CHECK_OK(fl_runtime_shutdown(rt));
}

/* A task waiting for an fl_create object that is never sealed ends at shutdown, failing with
 * the object's cause, even when the caller released the object first. */
static void test_unsealed_argument_at_shutdown(void) {
    fl_runtime rt = new_runtime(1, 0);
    void *buffer = NULL;
    fl_ref unsealed = NULL, kept = NULL, waiting = NULL;
    CHECK_OK(fl_create(rt, 64, &buffer, &unsealed));
    CHECK_OK(fl_create(rt, 16, &buffer, &kept)); /* still referenced at shutdown */
    fl_arg arg = ref_arg(unsealed);
    CHECK_OK(fl_remote(rt, sum_args, NULL, &arg, 1, NULL, &waiting));
    CHECK_OK(fl_ref_release(unsealed));
    CHECK_RC(FL_ETIMEDOUT, fl_get(waiting, 0.05, NULL, NULL));
    CHECK_OK(fl_runtime_shutdown(rt));
    CHECK_RC(FL_ECANCELED, fl_get(waiting, 30, NULL, NULL));
    CHECK(strstr(fl_last_error(), "argument 0 failed") != NULL && strstr(fl_last_error(), "sealed") != NULL);
    CHECK_RC(FL_ECANCELED, fl_get(kept, 30, NULL, NULL));
    /* Sealing it now is refused (its buffer is freed): the object stays cancelled. */
    CHECK_RC(FL_ESTATE, fl_seal(kept));
    CHECK(strstr(fl_last_error(), "resolved before it was sealed") != NULL && strstr(fl_last_error(), "shut down") != NULL);
    CHECK_RC(FL_ECANCELED, fl_get(kept, 30, NULL, NULL));
    CHECK_RC(FL_ESTATE, fl_seal(kept));
    fl_ref_release(waiting);
    fl_ref_release(kept);
}

/* Returns as many zero bytes as its argument says. */
static int return_zeros(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user;
    size_t n = nargs == 1 ? (size_t)as_int(&args[0]) : 0;
    void *buffer = NULL;
    int rc = fl_task_result_buffer(ctx, n, &buffer);
    if (rc == FL_OK && n > 0) memset(buffer, 0, n);
    return rc;
}

static void test_objects_and_refcounts(void) {
    fl_runtime rt = new_runtime(2, 1000);
    char block[600];
    memset(block, 'b', sizeof block);
    fl_ref first = NULL, second = NULL, copy = NULL;
    CHECK_OK(fl_put(rt, block, sizeof block, &first));
    CHECK_RC(FL_ENOMEM, fl_put(rt, block, sizeof block, &second)); /* store full */
    CHECK(strstr(fl_last_error(), "object store full") != NULL);
    CHECK(second == NULL);
    CHECK_OK(fl_ref_clone(first, &copy));
    CHECK_OK(fl_ref_release(first));
    const void *data = NULL;
    size_t len = 0;
    CHECK_OK(fl_get(copy, 0, &data, &len)); /* the clone keeps it */
    CHECK(len == sizeof block && memcmp(data, block, len) == 0);
    CHECK_OK(fl_ref_release(copy));
    CHECK_RC(FL_EHANDLE, fl_ref_release(copy));
    CHECK_OK(fl_put(rt, block, sizeof block, &second)); /* room again */
    CHECK_OK(fl_ref_release(second));

    /* A task whose value does not fit the store fails, and is counted as failed. */
    fl_runtime_stats before, after;
    CHECK_OK(fl_runtime_get_stats(rt, &before));
    int64_t too_many = 2000;
    fl_arg count = int_arg(&too_many);
    fl_ref oversized = NULL;
    CHECK_OK(fl_remote(rt, return_zeros, NULL, &count, 1, NULL, &oversized));
    CHECK_RC(FL_ENOMEM, fl_get(oversized, 30, NULL, NULL));
    CHECK(strstr(fl_last_error(), "object store full") != NULL);
    CHECK_OK(fl_runtime_get_stats(rt, &after));
    CHECK(after.tasks_finished - before.tasks_finished == 1 && after.tasks_failed - before.tasks_failed == 1);
    CHECK_OK(fl_ref_release(oversized));
    /* A result buffer of 2^63 bytes or more is no memory: the task sees FL_ENOMEM (and fails
     * with it here), the host goes on. */
    int64_t impossible = -1; /* SIZE_MAX as the task's size_t */
    count = int_arg(&impossible);
    CHECK_OK(fl_remote(rt, return_zeros, NULL, &count, 1, NULL, &oversized));
    CHECK_RC(FL_ETASK, fl_get(oversized, 30, NULL, NULL));
    CHECK(strstr(fl_last_error(), "returned -3") != NULL);
    CHECK_OK(fl_ref_release(oversized));

    /* 1M put/get/release cycles leave nothing behind. */
    int ok = 1;
    for (int64_t i = 0; i < 1000000; i++) {
        fl_ref r = NULL;
        ok &= fl_put(rt, &i, sizeof i, &r) == FL_OK;
        ok &= fl_get(r, 0, &data, &len) == FL_OK && len == 8 && memcmp(data, &i, 8) == 0;
        ok &= fl_ref_release(r) == FL_OK;
    }
    CHECK(ok);
    /* And 10,000 tasks. */
    for (int64_t i = 0; i < 10000; i++) {
        fl_arg arg = int_arg(&i);
        fl_ref r = NULL;
        ok &= fl_remote(rt, sum_args, NULL, &arg, 1, NULL, &r) == FL_OK;
        ok &= get_int(r) == i;
        ok &= fl_ref_release(r) == FL_OK;
    }
    CHECK(ok);
    fl_runtime_stats stats = stats_once_settled(rt);
    CHECK(stats.objects == 0 && stats.object_bytes == 0);
    /* The 10,000, and the oversized and impossible ones above (failed). */
    CHECK(stats.tasks_submitted == 10002 && stats.tasks_finished == 10002 && stats.tasks_failed == 2);
    CHECK(stats.tasks_running == 0);
    CHECK_OK(fl_runtime_shutdown(rt));
}

static void *open_gate_later(void *unused) {
    (void)unused;
    pause_ms(100);
    __atomic_store_n(&gate_open, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void test_shutdown_with_work_in_flight(void) {
    fl_runtime rt = new_runtime(1, 0);
    gate_open = 0;
    fl_ref running = NULL, queued = NULL, dependent = NULL;
    CHECK_OK(fl_remote(rt, wait_for_gate, NULL, NULL, 0, NULL, &running));
    int64_t x = 1;
    fl_arg arg = int_arg(&x);
    CHECK_OK(fl_remote(rt, sum_args, NULL, &arg, 1, NULL, &queued));
    fl_arg dep = ref_arg(running);
    CHECK_OK(fl_remote(rt, sum_args, NULL, &dep, 1, NULL, &dependent));
    pause_ms(50);
    /* The running task ends a little after shutdown has begun waiting for it. */
    pthread_t opener;
    pthread_create(&opener, NULL, open_gate_later, NULL);
    CHECK_OK(fl_runtime_shutdown(rt));
    pthread_join(opener, NULL);
    CHECK(get_int(running) == 1); /* it was running: it finished */
    int rc_queued = fl_get(queued, 0, NULL, NULL);
    CHECK(rc_queued == FL_OK || rc_queued == FL_ECANCELED);
    int rc_dep = fl_get(dependent, 0, NULL, NULL);
    CHECK(rc_dep == FL_OK || rc_dep == FL_ECANCELED);
    CHECK_RC(FL_EHANDLE, fl_remote(rt, sum_args, NULL, NULL, 0, NULL, &queued));
    fl_ref_release(running);
    fl_ref_release(queued);
    fl_ref_release(dependent);
}

static void test_bad_input(fl_runtime rt) {
    fl_ref r = NULL;
    /* Worker counts are size_t: 2^63 or more is as far above 1024 as 1025 is. */
    {
        const size_t counts[] = {1025, SIZE_MAX, (size_t)1 << 63};
        for (size_t i = 0; i < 3; i++) {
            for (int field = 0; field < 2; field++) {
                fl_runtime_options options;
                CHECK_OK(fl_runtime_options_init(&options));
                if (field == 0) options.workers = counts[i];
                else options.process_workers = counts[i];
                fl_runtime made = (fl_runtime)(void *)&made;
                CHECK_RC(FL_EINVAL, fl_runtime_create(&options, &made));
                CHECK(made == NULL && strstr(fl_last_error(), "more than 1024") != NULL);
            }
        }
        CHECK(strstr(fl_last_error(), "9223372036854775808 process workers") != NULL);
        /* A store capacity that large is no limit at all. */
        fl_runtime_options options;
        CHECK_OK(fl_runtime_options_init(&options));
        options.workers = 1;
        options.store_capacity = SIZE_MAX;
        fl_runtime unbounded = NULL;
        CHECK_OK(fl_runtime_create(&options, &unbounded));
        static char megabyte[1 << 20];
        CHECK_OK(fl_put(unbounded, megabyte, sizeof megabyte, &r));
        CHECK_OK(fl_ref_release(r));
        CHECK_OK(fl_runtime_shutdown(unbounded));
        r = NULL;
    }
    CHECK_RC(FL_EINVAL, fl_remote(rt, NULL, NULL, NULL, 0, NULL, &r));
    CHECK_RC(FL_EINVAL, fl_remote(rt, sum_args, NULL, NULL, 2, NULL, &r));
    fl_arg bad_blob = {NULL, 4, NULL};
    CHECK_RC(FL_EINVAL, fl_remote(rt, sum_args, NULL, &bad_blob, 1, NULL, &r));
    fl_arg bad_ref = {NULL, 0, (fl_ref)(uintptr_t)0x4F00000012345678ull};
    CHECK_RC(FL_EHANDLE, fl_remote(rt, sum_args, NULL, &bad_ref, 1, NULL, &r));
    fl_remote_options ro = {0, 0, 0, 0, 0, NULL};
    CHECK_RC(FL_EINVAL, fl_remote(rt, sum_args, NULL, NULL, 0, &ro, &r));
    CHECK_RC(FL_EHANDLE, fl_get(NULL, 0, NULL, NULL));
    CHECK(strstr(fl_last_error(), "ref handle is NULL, destroyed, released or not a ref") != NULL);
    CHECK_RC(FL_EINVAL, fl_put(rt, NULL, 3, &r));
    CHECK_RC(FL_EHANDLE, fl_put(NULL, "x", 1, &r));
    CHECK(r == NULL);
    /* Sizes and counts of 2^63 or more (negative as signed numbers) are refused, not trusted. */
    CHECK_RC(FL_EINVAL, fl_remote(rt, sum_args, NULL, &bad_blob, SIZE_MAX, NULL, &r));
    CHECK(strstr(fl_last_error(), "nargs") != NULL);
    static char one_byte[1];
    fl_arg huge_pair[2] = {{one_byte, (size_t)1 << 62, NULL}, {one_byte, (size_t)1 << 62, NULL}};
    CHECK_RC(FL_EINVAL, fl_remote(rt, sum_args, NULL, huge_pair, 2, NULL, &r)); /* the sum overflows */
    fl_arg huge_blob = {one_byte, (size_t)1 << 50, NULL};
    CHECK_RC(FL_ENOMEM, fl_remote(rt, sum_args, NULL, &huge_blob, 1, NULL, &r)); /* no memory, no trap */
    void *buffer = NULL;
    CHECK_RC(FL_EINVAL, fl_create(rt, SIZE_MAX, &buffer, &r));
    CHECK(r == NULL && buffer == NULL);
    fl_ref refs[1] = {NULL};
    const void *views[1];
    size_t lens[1];
    unsigned char flags[1];
    CHECK_RC(FL_EINVAL, fl_get_many(refs, SIZE_MAX, 0, views, lens, NULL));
    CHECK_RC(FL_EINVAL, fl_wait(refs, SIZE_MAX, 1, 0, flags));
    CHECK_RC(FL_EINVAL, fl_wait(refs, 1, SIZE_MAX, 0, flags));
}

/* ---- actors ---- */

typedef struct {
    int64_t value;
    int64_t inside, most; /* calls running at once, and the most seen */
} counter_state;

static int freed_states;

static int counter_init(void *user, const fl_blob *args, size_t nargs, void **state) {
    (void)user;
    if (nargs == 1 && as_int(&args[0]) < 0) return 9; /* a constructor that fails */
    counter_state *c = calloc(1, sizeof *c);
    c->value = nargs == 1 ? as_int(&args[0]) : 0;
    *state = c;
    return 0;
}

static void counter_free(void *user, void *state) {
    (void)user;
    __atomic_add_fetch(&freed_states, 1, __ATOMIC_SEQ_CST);
    free(state);
}

/* value += args[0] (a blob or a ref), returns the new value. Not thread-safe on purpose. */
static int counter_add(void *state, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    counter_state *c = state;
    int64_t by = nargs ? as_int(&args[0]) : 1;
    int64_t seen = c->value;
    if ((seen & 63) == 0) sched_yield();
    c->value = seen + by;
    return fl_task_return(ctx, &c->value, sizeof c->value);
}

static int init_gate_open = 1;
static int gate_waiters; /* calls waiting at the gate, across actors */

/* counter_init once init_gate_open is set: calls queue up while the constructor runs. */
static int gated_counter_init(void *user, const fl_blob *args, size_t nargs, void **state) {
    while (!__atomic_load_n(&init_gate_open, __ATOMIC_ACQUIRE)) pause_ms(1);
    return counter_init(user, args, nargs, state);
}

/* Waits for the gate, counting how many calls are inside at once. */
static int counter_wait_gate(void *state, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)args; (void)nargs;
    counter_state *c = state;
    __atomic_add_fetch(&gate_waiters, 1, __ATOMIC_SEQ_CST);
    int64_t inside = __atomic_add_fetch(&c->inside, 1, __ATOMIC_SEQ_CST);
    int64_t most = __atomic_load_n(&c->most, __ATOMIC_SEQ_CST);
    while (inside > most && !__atomic_compare_exchange_n(&c->most, &most, inside, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    }
    while (!__atomic_load_n(&gate_open, __ATOMIC_ACQUIRE)) pause_ms(1);
    __atomic_sub_fetch(&gate_waiters, 1, __ATOMIC_SEQ_CST);
    __atomic_sub_fetch(&c->inside, 1, __ATOMIC_SEQ_CST);
    int64_t most_now = __atomic_load_n(&c->most, __ATOMIC_SEQ_CST);
    return fl_task_return(ctx, &most_now, sizeof most_now);
}

typedef struct {
    fl_actor actor;
    int calls;
    int64_t results[500];
    int ok;
} caller;

static void *call_many(void *raw) {
    caller *c = raw;
    fl_ref refs[500];
    c->ok = 1;
    for (int i = 0; i < c->calls; i++) c->ok &= fl_actor_call(c->actor, counter_add, NULL, 0, &refs[i]) == FL_OK;
    for (int i = 0; i < c->calls; i++) {
        c->results[i] = get_int(refs[i]);
        fl_ref_release(refs[i]);
    }
    return NULL;
}

/* Returns the id of the thread it runs on. */
static int thread_id_task(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)args; (void)nargs;
    uint64_t id = (uint64_t)pthread_self();
    return fl_task_return(ctx, &id, sizeof id);
}

/* An actor method returning the id of its thread (the state is unused). */
static int thread_id_method(void *state, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    return thread_id_task(state, args, nargs, ctx);
}

/* Tries to shut its own runtime down; returns the status it got. */
static int shutdown_own_runtime(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)args; (void)nargs;
    int64_t rc = fl_runtime_shutdown((fl_runtime)user);
    return fl_task_return(ctx, &rc, sizeof rc);
}

static uint64_t get_thread_id(fl_ref r, double timeout) {
    uint64_t id = 0;
    const void *data = NULL;
    size_t len = 0;
    if (fl_get(r, timeout, &data, &len) == FL_OK && len == sizeof id) memcpy(&id, data, sizeof id);
    return id;
}

static void test_get_runs_a_queued_task_itself(void) {
    /* The only worker is held by a task; a task queued behind it is run by fl_get on the
     * waiting thread when it waits with no limit, never when it waits with a timeout. */
    fl_runtime rt = new_runtime(1, 0);
    uint64_t me = (uint64_t)pthread_self();
    gate_open = 0;
    fl_ref gate = NULL, queued = NULL;
    CHECK_OK(fl_remote(rt, wait_for_gate, NULL, NULL, 0, NULL, &gate));
    pause_ms(50); /* the worker has taken the gate task */
    CHECK_OK(fl_remote(rt, thread_id_task, NULL, NULL, 0, NULL, &queued));
    CHECK_RC(FL_ETIMEDOUT, fl_get(queued, 0.05, NULL, NULL));
    CHECK(get_thread_id(queued, FL_FOREVER) == me);
    CHECK_RC(FL_ETIMEDOUT, fl_get(gate, 0, NULL, NULL)); /* the worker is still held */
    fl_runtime_stats stats;
    CHECK_OK(fl_runtime_get_stats(rt, &stats));
    CHECK(stats.tasks_finished == 1 && stats.tasks_running == 1);

    /* A task with a reference argument runs inline once its argument is ready. */
    int64_t five = 5;
    fl_arg five_arg = int_arg(&five);
    fl_ref put = NULL, sum = NULL;
    CHECK_OK(fl_put(rt, &five, sizeof five, &put));
    fl_arg args[2] = {ref_arg(put), five_arg};
    CHECK_OK(fl_remote(rt, sum_args, NULL, args, 2, NULL, &sum));
    const void *data = NULL;
    size_t len = 0;
    CHECK_OK(fl_get(sum, FL_FOREVER, &data, &len));
    CHECK(len == 8 && *(const int64_t *)data == 10);

    /* An actor call queued alone behind the held worker: the same. */
    __atomic_store_n(&gate_open, 1, __ATOMIC_RELEASE);
    CHECK(get_int(gate) == 1);
    int64_t start = 0;
    fl_arg init_arg = int_arg(&start);
    fl_actor actor = NULL;
    CHECK_OK(fl_actor_create(rt, counter_init, counter_free, NULL, &init_arg, 1, NULL, &actor));
    fl_ref warm = NULL, call = NULL;
    CHECK_OK(fl_actor_call(actor, thread_id_method, NULL, 0, &warm));
    CHECK(get_thread_id(warm, 30) != 0); /* constructed */
    gate_open = 0;
    fl_ref gate2 = NULL;
    CHECK_OK(fl_remote(rt, wait_for_gate, NULL, NULL, 0, NULL, &gate2));
    pause_ms(50);
    CHECK_OK(fl_actor_call(actor, thread_id_method, NULL, 0, &call));
    CHECK(get_thread_id(call, FL_FOREVER) == me);
    CHECK_RC(FL_ETIMEDOUT, fl_get(gate2, 0, NULL, NULL));

    /* A task run inline may not shut its runtime down (it would wait for itself). */
    fl_ref refused = NULL;
    CHECK_OK(fl_remote(rt, shutdown_own_runtime, rt, NULL, 0, NULL, &refused));
    CHECK_OK(fl_get(refused, FL_FOREVER, &data, &len));
    CHECK(len == 8 && *(const int64_t *)data == FL_EDEADLK);
    fl_ref_release(refused);

    /* Shutdown after inline runs: the held worker's task finishes, nothing is lost. */
    pthread_t opener;
    pthread_create(&opener, NULL, open_gate_later, NULL);
    CHECK_OK(fl_actor_kill(actor));
    CHECK_OK(fl_runtime_shutdown(rt));
    pthread_join(opener, NULL);
    CHECK(get_int(gate2) == 1);
    fl_ref refs[] = {gate, queued, put, sum, warm, call, gate2};
    for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++) fl_ref_release(refs[i]);
}

static void test_actors(fl_runtime rt) {
    /* A counter called from 4 threads at once: one call at a time, in the order they entered. */
    int64_t start = 1000;
    fl_arg init_arg = int_arg(&start);
    fl_actor counter = NULL;
    freed_states = 0;
    CHECK_OK(fl_actor_create(rt, counter_init, counter_free, NULL, &init_arg, 1, NULL, &counter));
    caller callers[4];
    pthread_t threads[4];
    for (int t = 0; t < 4; t++) {
        callers[t].actor = counter;
        callers[t].calls = 500;
        pthread_create(&threads[t], NULL, call_many, &callers[t]);
    }
    static unsigned char seen[2001];
    memset(seen, 0, sizeof seen);
    int ordered = 1, unique = 1;
    for (int t = 0; t < 4; t++) {
        pthread_join(threads[t], NULL);
        CHECK(callers[t].ok);
        for (int i = 0; i < 500; i++) {
            int64_t v = callers[t].results[i];
            if (i > 0 && v <= callers[t].results[i - 1]) ordered = 0;
            if (v < 1001 || v > 3000 || seen[v - 1000]++) unique = 0;
        }
    }
    CHECK(ordered); /* each thread's calls ran in its order */
    CHECK(unique);  /* no lost or doubled update: never two calls at once */

    /* A call waiting for a reference does not let a later call pass it. */
    gate_open = 0;
    fl_ref gate = NULL, first = NULL, second = NULL;
    CHECK_OK(fl_remote(rt, wait_for_gate, NULL, NULL, 0, NULL, &gate)); /* returns 1 */
    fl_arg by_gate = ref_arg(gate);
    int64_t hundred = 100;
    fl_arg by_hundred = int_arg(&hundred);
    CHECK_OK(fl_actor_call(counter, counter_add, &by_gate, 1, &first));
    CHECK_OK(fl_actor_call(counter, counter_add, &by_hundred, 1, &second));
    pause_ms(20);
    unsigned char ready[1] = {9};
    CHECK_RC(FL_ETIMEDOUT, fl_wait(&second, 1, 1, 0, ready)); /* still behind the first */
    __atomic_store_n(&gate_open, 1, __ATOMIC_RELEASE);
    CHECK(get_int(first) == 3001);
    CHECK(get_int(second) == 3101);
    fl_ref_release(gate);
    fl_ref_release(first);
    fl_ref_release(second);

    /* Kill: calls not started are cancelled; the state is freed once. */
    gate_open = 0;
    fl_ref blocked = NULL, pending = NULL;
    CHECK_OK(fl_actor_call(counter, counter_wait_gate, NULL, 0, &blocked));
    CHECK_OK(fl_actor_call(counter, counter_add, NULL, 0, &pending));
    pause_ms(20);
    CHECK_OK(fl_actor_kill(counter));
    fl_ref too_late = NULL;
    CHECK_RC(FL_EHANDLE, fl_actor_call(counter, counter_add, NULL, 0, &too_late));
    CHECK(strstr(fl_last_error(), "not an actor") != NULL); /* the message names the kind of handle */
    CHECK(too_late == NULL);
    CHECK_RC(FL_ECANCELED, fl_get(pending, 30, NULL, NULL));
    CHECK(strstr(fl_last_error(), "killed") != NULL);
    CHECK(freed_states == 0); /* a call still runs */
    __atomic_store_n(&gate_open, 1, __ATOMIC_RELEASE);
    CHECK_OK(fl_get(blocked, 30, NULL, NULL));
    for (int i = 0; i < 2000 && __atomic_load_n(&freed_states, __ATOMIC_SEQ_CST) == 0; i++) pause_ms(1);
    CHECK(freed_states == 1);
    fl_ref_release(blocked);
    fl_ref_release(pending);

    /* A failing constructor fails every call, with its message. */
    int64_t negative = -1;
    fl_arg bad = int_arg(&negative);
    fl_actor broken = NULL;
    fl_ref r = NULL;
    CHECK_OK(fl_actor_create(rt, counter_init, counter_free, NULL, &bad, 1, NULL, &broken));
    CHECK_OK(fl_actor_call(broken, counter_add, NULL, 0, &r));
    CHECK_RC(FL_ESTATE, fl_get(r, 30, NULL, NULL));
    CHECK(strstr(fl_last_error(), "constructor failed") != NULL);
    fl_ref_release(r);
    CHECK_OK(fl_actor_kill(broken));

    /* max_concurrency 2: two calls run at once, whether they were queued while the
       constructor ran (round 0) or after it had ended (round 1). */
    fl_actor_options ao;
    CHECK_OK(fl_actor_options_init(&ao));
    CHECK(ao.max_concurrency == 1);
    ao.max_concurrency = 2;
    fl_actor pair = NULL;
    freed_states = 0;
    for (int round = 0; round < 2; round++) {
        __atomic_store_n(&init_gate_open, round, __ATOMIC_RELEASE);
        gate_open = 0;
        CHECK_OK(fl_actor_create(rt, gated_counter_init, counter_free, NULL, NULL, 0, &ao, &pair));
        if (round == 1) pause_ms(20);
        fl_ref a = NULL, b = NULL;
        CHECK_OK(fl_actor_call(pair, counter_wait_gate, NULL, 0, &a));
        CHECK_OK(fl_actor_call(pair, counter_wait_gate, NULL, 0, &b));
        __atomic_store_n(&init_gate_open, 1, __ATOMIC_RELEASE);
        for (int i = 0; i < 5000 && __atomic_load_n(&gate_waiters, __ATOMIC_SEQ_CST) < 2; i++) pause_ms(1);
        CHECK(__atomic_load_n(&gate_waiters, __ATOMIC_SEQ_CST) == 2);
        __atomic_store_n(&gate_open, 1, __ATOMIC_RELEASE);
        int64_t most = get_int(a) > get_int(b) ? get_int(a) : get_int(b);
        CHECK(most == 2);
        fl_ref_release(a);
        fl_ref_release(b);
        CHECK_OK(fl_actor_kill(pair));
        /* The calls may still be ending on their workers, the last of which frees the state:
         * wait for that, so that no later test sees it counted. */
        for (int i = 0; i < 2000 && __atomic_load_n(&freed_states, __ATOMIC_SEQ_CST) == round; i++) pause_ms(1);
        CHECK(__atomic_load_n(&freed_states, __ATOMIC_SEQ_CST) == round + 1);
    }
    ao.max_concurrency = 0;
    CHECK_RC(FL_EINVAL, fl_actor_create(rt, counter_init, NULL, NULL, NULL, 0, &ao, &pair));
    CHECK_RC(FL_EINVAL, fl_actor_create(rt, NULL, NULL, NULL, NULL, 0, NULL, &pair));
}

/* ---- cancel ---- */

static int ran_count;

static int count_run(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)args; (void)nargs; (void)ctx;
    __atomic_add_fetch(&ran_count, 1, __ATOMIC_SEQ_CST);
    return 0;
}

/* Runs until fl_task_cancelled says stop (or 30 s). */
static int until_cancelled(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)args; (void)nargs;
    for (int i = 0; i < 30000 && !fl_task_cancelled(ctx); i++) pause_ms(1);
    int64_t stopped = fl_task_cancelled(ctx);
    return fl_task_return(ctx, &stopped, sizeof stopped);
}

/* A stream of calls from one thread (the worker running them takes the queued ones together
 * and waits a moment for the next): every call runs once, in order; a kill in the middle of
 * the stream cancels exactly the calls that had not started (a tail of the stream), and the
 * state is freed once. */
typedef struct {
    fl_actor actor;
    int delay_us;
} killer;

static void *kill_after(void *raw) {
    killer *k = raw;
    usleep((useconds_t)k->delay_us);
    fl_actor_kill(k->actor);
    return NULL;
}

static void test_actor_streams(fl_runtime rt) {
    enum { CALLS = 20000 };
    static fl_ref refs[CALLS];
    static uint8_t ready[CALLS];
    for (int round = 0; round < 3; round++) {
        freed_states = 0;
        fl_actor counter = NULL;
        CHECK_OK(fl_actor_create(rt, counter_init, counter_free, NULL, NULL, 0, NULL, &counter));
        /* Round 0: all calls, then every get. Round 1: a get every 7 calls as well. Round 2:
         * all calls, then one fl_wait for all of them (with no deadline), then every get. */
        int ordered = 1;
        for (int i = 0; i < CALLS; i++) {
            if (fl_actor_call(counter, counter_add, NULL, 0, &refs[i]) != FL_OK) ordered = 0;
            if (round == 1 && i % 7 == 6 && get_int(refs[i - 3]) != i - 2) ordered = 0;
        }
        if (round == 2) {
            memset(ready, 0, sizeof ready);
            CHECK_OK(fl_wait(refs, CALLS, CALLS, FL_FOREVER, ready));
            int all = 1;
            for (int i = 0; i < CALLS; i++) all &= ready[i];
            CHECK(all);
        }
        for (int i = 0; i < CALLS; i++) {
            if (get_int(refs[i]) != i + 1) ordered = 0;
            fl_ref_release(refs[i]);
        }
        CHECK(ordered);
        CHECK_OK(fl_actor_kill(counter));
        for (int i = 0; i < 2000 && __atomic_load_n(&freed_states, __ATOMIC_SEQ_CST) == 0; i++) pause_ms(1);
        CHECK(freed_states == 1);
    }

    /* A runtime of its own, whose counters must settle: no object left, every admitted call
     * ended (a call refused because the kill came first counts as neither). */
    fl_runtime own = NULL;
    CHECK_OK(fl_runtime_create(NULL, &own));
    for (int round = 0; round < 24; round++) {
        /* Most kills come at once (while the constructor or the first calls run), others later. */
        int delay = round % 3 != 2 ? 0 : 250 * (round / 3);
        freed_states = 0;
        fl_actor counter = NULL;
        CHECK_OK(fl_actor_create(own, counter_init, counter_free, NULL, NULL, 0, NULL, &counter));
        killer k = {counter, delay};
        pthread_t thread;
        pthread_create(&thread, NULL, kill_after, &k);
        int submitted = 0;
        while (submitted < CALLS) {
            int rc = fl_actor_call(counter, counter_add, NULL, 0, &refs[submitted]);
            if (rc != FL_OK) {
                CHECK(rc == FL_EHANDLE || rc == FL_ESTATE); /* the handle is gone, or the kill came first */
                break;
            }
            submitted++;
        }
        pthread_join(thread, NULL);
        int ran = 0, cancelled = 0, well_formed = 1;
        for (int i = 0; i < submitted; i++) {
            const void *data = NULL;
            int rc = fl_get(refs[i], 30, &data, NULL);
            if (rc == FL_OK && cancelled == 0 && *(const int64_t *)data == ran + 1) {
                ran++;
            } else if (rc == FL_ECANCELED) {
                cancelled++;
            } else {
                well_formed = 0;
            }
            fl_ref_release(refs[i]);
        }
        CHECK(well_formed); /* values 1..ran in order, then only cancellations */
        CHECK(ran + cancelled == submitted);
        for (int i = 0; i < 2000 && __atomic_load_n(&freed_states, __ATOMIC_SEQ_CST) == 0; i++) pause_ms(1);
        CHECK(freed_states == 1);
        fl_runtime_stats stats;
        for (int i = 0; i < 2000; i++) {
            CHECK_OK(fl_runtime_get_stats(own, &stats));
            if (stats.objects == 0 && stats.tasks_running == 0) break;
            pause_ms(1);
        }
        CHECK(stats.objects == 0);
        CHECK(stats.tasks_submitted == stats.tasks_finished);
    }
    CHECK_OK(fl_runtime_shutdown(own));
}

static void test_cancel(void) {
    fl_runtime rt = new_runtime(1, 0);
    gate_open = 0;
    ran_count = 0;
    fl_ref blocker = NULL, queued = NULL, waiting = NULL, dependent = NULL, value = NULL;
    CHECK_OK(fl_remote(rt, wait_for_gate, NULL, NULL, 0, NULL, &blocker)); /* holds the one worker */
    CHECK_OK(fl_remote(rt, count_run, NULL, NULL, 0, NULL, &queued));     /* queued behind it */
    fl_arg dep = ref_arg(blocker);
    CHECK_OK(fl_remote(rt, count_run, NULL, &dep, 1, NULL, &waiting));    /* waits for its argument */
    CHECK_OK(fl_cancel(queued));
    CHECK_OK(fl_cancel(waiting));
    CHECK_RC(FL_ECANCELED, fl_get(queued, 0, NULL, NULL)); /* at once */
    CHECK(strstr(fl_last_error(), "cancelled") != NULL);
    CHECK_RC(FL_ECANCELED, fl_get(waiting, 0, NULL, NULL));
    fl_arg on_cancelled = ref_arg(queued);
    CHECK_OK(fl_remote(rt, count_run, NULL, &on_cancelled, 1, NULL, &dependent));
    CHECK_RC(FL_ECANCELED, fl_get(dependent, 30, NULL, NULL)); /* the cause travels */
    __atomic_store_n(&gate_open, 1, __ATOMIC_RELEASE);
    CHECK(get_int(blocker) == 1);
    /* A running task sees fl_task_cancelled and stops early. */
    fl_ref running = NULL;
    CHECK_OK(fl_remote(rt, until_cancelled, NULL, NULL, 0, NULL, &running));
    pause_ms(20);
    CHECK_OK(fl_cancel(running));
    CHECK_RC(FL_ECANCELED, fl_get(running, 30, NULL, NULL));
    /* Cancelling a finished task changes nothing; a put object cannot be cancelled. */
    CHECK_OK(fl_cancel(blocker));
    CHECK(get_int(blocker) == 1);
    int64_t x = 3;
    CHECK_OK(fl_put(rt, &x, sizeof x, &value));
    CHECK_RC(FL_EINVAL, fl_cancel(value));
    CHECK_RC(FL_EHANDLE, fl_cancel(NULL));
    CHECK_OK(fl_runtime_shutdown(rt)); /* drains: every task has ended */
    CHECK(ran_count == 0); /* neither cancelled task ran, nor the dependent */
    fl_ref refs[6] = {blocker, queued, waiting, dependent, value, running};
    for (int i = 0; i < 6; i++) CHECK_OK(fl_ref_release(refs[i]));
}

/* Submits a task running until cancelled and returns its reference (the handle's bytes). */
static int submit_and_return(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)args; (void)nargs;
    fl_ref child = NULL;
    if (fl_remote((fl_runtime)user, until_cancelled, NULL, NULL, 0, NULL, &child) != FL_OK) return 1;
    return fl_task_return(ctx, &child, sizeof child);
}

/* ---- recursive cancel: a task's nested tasks ---- */

/* What a parent task made, for the main thread to look at. */
typedef struct {
    fl_runtime rt;
    fl_actor actor;      /* NULL: no actor call */
    int grandchild;      /* the running child submits a running grandchild of its own */
    fl_ref running;      /* a child running until cancelled */
    fl_ref queued;       /* a child that cannot start (the workers are busy) */
    fl_ref call_running; /* two actor calls (an actor's calls are not the task's children) */
    fl_ref call_queued;
    fl_ref late;         /* submitted once the parent saw its own cancel */
    int late_rc;         /* fl_get(late, 0) right after submitting it */
    int children_ready;
    int finished;        /* the parent's function returned (its object resolves at the cancel) */
    int64_t objects_midway; /* objects alive after 2000 nested submit/get/release cycles */
} family;

static fl_ref grandchild_ref;

/* A child that submits a grandchild running until cancelled, then waits until cancelled. */
static int child_with_grandchild(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)args; (void)nargs;
    family *f = user;
    fl_ref g = NULL;
    if (fl_remote(f->rt, until_cancelled, NULL, NULL, 0, NULL, &g) != FL_OK) return 1;
    __atomic_store_n(&grandchild_ref, g, __ATOMIC_SEQ_CST);
    for (int i = 0; i < 30000 && !fl_task_cancelled(ctx); i++) pause_ms(1);
    return 0;
}

/* Makes its children, tells the main thread, waits to be cancelled, then submits one more. */
static int parent_task(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)args; (void)nargs;
    family *f = user;
    /* Finished children leave the parent's list: their objects go with their last reference. */
    for (int i = 0; i < 2000; i++) {
        fl_ref r = NULL;
        if (fl_remote(f->rt, count_run, NULL, NULL, 0, NULL, &r) != FL_OK) return 1;
        if (fl_get(r, 30, NULL, NULL) != FL_OK) return 2;
        fl_ref_release(r);
    }
    fl_runtime_stats stats;
    if (fl_runtime_get_stats(f->rt, &stats) != FL_OK) return 3;
    f->objects_midway = (int64_t)stats.objects;
    __atomic_store_n(&ran_count, 0, __ATOMIC_SEQ_CST);
    if (fl_remote(f->rt, f->grandchild ? child_with_grandchild : until_cancelled, f, NULL, 0, NULL, &f->running) != FL_OK)
        return 4;
    for (int i = 0; i < 30000 && !fl_task_cancelled(ctx) && !f->grandchild; i++) {
        fl_runtime_stats s;
        if (fl_runtime_get_stats(f->rt, &s) == FL_OK && s.tasks_running >= 2) break; /* the child holds the other worker */
        pause_ms(1);
    }
    for (int i = 0; i < 30000 && f->grandchild && !__atomic_load_n(&grandchild_ref, __ATOMIC_SEQ_CST); i++) pause_ms(1);
    if (fl_remote(f->rt, count_run, NULL, NULL, 0, NULL, &f->queued) != FL_OK) return 5;
    if (f->actor) {
        if (fl_actor_call(f->actor, count_run, NULL, 0, &f->call_running) != FL_OK) return 6;
        if (fl_actor_call(f->actor, count_run, NULL, 0, &f->call_queued) != FL_OK) return 7;
    }
    __atomic_store_n(&f->children_ready, 1, __ATOMIC_SEQ_CST);
    for (int i = 0; i < 30000 && !fl_task_cancelled(ctx); i++) pause_ms(1);
    if (fl_remote(f->rt, count_run, NULL, NULL, 0, NULL, &f->late) != FL_OK) return 8;
    f->late_rc = fl_get(f->late, 0, NULL, NULL);
    /* A child the cancel did not reach ends when cancelled itself (the main thread does). */
    fl_get(f->running, 30, NULL, NULL);
    __atomic_store_n(&f->finished, 1, __ATOMIC_SEQ_CST);
    return 0;
}

static void wait_finished(family *f) {
    for (int i = 0; i < 30000 && !__atomic_load_n(&f->finished, __ATOMIC_SEQ_CST); i++) pause_ms(1);
    CHECK(f->finished);
}

static void wait_children(family *f) {
    for (int i = 0; i < 30000 && !__atomic_load_n(&f->children_ready, __ATOMIC_SEQ_CST); i++) pause_ms(1);
    CHECK(f->children_ready);
}

static int actor_nothing_init(void *user, const fl_blob *args, size_t nargs, void **state) {
    (void)user; (void)args; (void)nargs;
    *state = NULL;
    return 0;
}

static void release_family(family *f, fl_ref parent) {
    fl_ref refs[6] = {parent, f->running, f->queued, f->call_running, f->call_queued, f->late};
    for (int i = 0; i < 6; i++)
        if (refs[i]) CHECK_OK(fl_ref_release(refs[i]));
}

/* fl_cancel (ray.cancel, recursive=True) cancels what the task submitted while running and has
 * not finished (not its actor calls), and what it submits afterwards; grandchildren too.
 * fl_cancel_with without FL_CANCEL_RECURSIVE cancels the task alone; a finished task's
 * children run on. */
static void test_cancel_recursive(void) {
    /* Recursive: the running child stops, the queued child and the child submitted after the
     * cancel never run; the actor calls the task made are the actor's, and run. */
    {
        fl_runtime rt = new_runtime(2, 0);
        family f = {.rt = rt};
        CHECK_OK(fl_actor_create(rt, actor_nothing_init, NULL, NULL, NULL, 0, NULL, &f.actor));
        fl_ref parent = NULL;
        CHECK_OK(fl_remote(rt, parent_task, &f, NULL, 0, NULL, &parent));
        wait_children(&f);
        CHECK(f.objects_midway >= 0 && f.objects_midway < 100); /* 2,000 ended children are not kept */
        CHECK_OK(fl_cancel(parent));
        CHECK_RC(FL_ECANCELED, fl_get(parent, 0, NULL, NULL));
        CHECK_RC(FL_ECANCELED, fl_get(f.queued, 0, NULL, NULL));      /* at once */
        CHECK_RC(FL_ECANCELED, fl_get(f.running, 30, NULL, NULL));    /* it saw fl_task_cancelled */
        CHECK_OK(fl_get(f.call_running, 30, NULL, NULL));
        CHECK_OK(fl_get(f.call_queued, 30, NULL, NULL));
        wait_finished(&f);
        CHECK_OK(fl_actor_kill(f.actor));
        CHECK_OK(fl_runtime_shutdown(rt));
        CHECK(f.late != NULL);
        CHECK(f.late_rc == FL_ECANCELED);
        CHECK(ran_count == 2); /* the actor calls; neither the queued child nor the late child */
        release_family(&f, parent);
    }
    /* Grandchildren: cancelling the parent reaches the task its child submitted. */
    {
        fl_runtime rt = new_runtime(3, 0);
        family f = {.rt = rt, .grandchild = 1};
        __atomic_store_n(&grandchild_ref, NULL, __ATOMIC_SEQ_CST);
        fl_ref parent = NULL;
        CHECK_OK(fl_remote(rt, parent_task, &f, NULL, 0, NULL, &parent));
        wait_children(&f);
        fl_ref g = __atomic_load_n(&grandchild_ref, __ATOMIC_SEQ_CST);
        CHECK(g != NULL);
        CHECK_OK(fl_cancel_force(parent));
        CHECK_RC(FL_ECANCELED, fl_get(f.running, 30, NULL, NULL));
        if (g) {
            CHECK_RC(FL_ECANCELED, fl_get(g, 30, NULL, NULL));
            CHECK_OK(fl_ref_release(g));
        }
        CHECK_OK(fl_runtime_shutdown(rt));
        release_family(&f, parent);
    }
    /* Not recursive: the children run on, and so does the one submitted after the cancel. */
    {
        fl_runtime rt = new_runtime(2, 0);
        family f = {.rt = rt};
        fl_ref parent = NULL;
        CHECK_OK(fl_remote(rt, parent_task, &f, NULL, 0, NULL, &parent));
        wait_children(&f);
        CHECK_OK(fl_cancel_with(parent, 0));
        CHECK_RC(FL_ECANCELED, fl_get(parent, 0, NULL, NULL));
        CHECK_RC(FL_ETIMEDOUT, fl_get(f.running, 0.05, NULL, NULL)); /* still running */
        CHECK_OK(fl_cancel(f.running));                              /* ends the parent's wait */
        wait_finished(&f);
        CHECK_OK(fl_runtime_shutdown(rt));
        CHECK(f.late_rc != FL_ECANCELED);
        CHECK(ran_count == 2); /* the queued child and the late one ran */
        release_family(&f, parent);
    }
    /* A finished task's children are not its to cancel; unknown flags are refused. */
    {
        fl_runtime rt = new_runtime(2, 0);
        fl_ref parent = NULL, child = NULL;
        CHECK_OK(fl_remote(rt, submit_and_return, rt, NULL, 0, NULL, &parent));
        CHECK(get_value(parent, &child, sizeof child));
        CHECK_OK(fl_cancel(parent));
        CHECK_RC(FL_ETIMEDOUT, fl_get(child, 0.05, NULL, NULL)); /* runs on */
        CHECK_RC(FL_EINVAL, fl_cancel_with(parent, 4));
        CHECK(strstr(fl_last_error(), "flags") != NULL);
        CHECK_RC(FL_EHANDLE, fl_cancel_with(NULL, FL_CANCEL_RECURSIVE));
        CHECK_OK(fl_cancel_with(child, FL_CANCEL_FORCE | FL_CANCEL_RECURSIVE));
        CHECK_RC(FL_ECANCELED, fl_get(child, 30, NULL, NULL));
        CHECK_OK(fl_runtime_shutdown(rt));
        CHECK_OK(fl_ref_release(parent));
        CHECK_OK(fl_ref_release(child));
    }
}

/* ---- functions by name, and the trace ---- */

/* Exported (not static): the trace names it by its symbol. */
int remote_test_product(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx);
int remote_test_product(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user;
    int64_t product = 1;
    for (size_t i = 0; i < nargs; i++) product *= as_int(&args[i]);
    return fl_task_return(ctx, &product, sizeof product);
}

/* Writes the runtime's trace to `path`, reads it into `text` (`size` bytes at most, NUL
 * included), removes the file. */
static void written_trace(fl_runtime rt, const char *path, char *text, size_t size) {
    CHECK_OK(fl_runtime_trace_write(rt, path));
    FILE *file = fopen(path, "r");
    CHECK(file != NULL);
    size_t length = file ? fread(text, 1, size - 1, file) : 0;
    text[length] = 0;
    if (file) fclose(file);
    unlink(path);
}

static void test_names_and_trace(fl_runtime rt) {
    /* Registration and submission by name. */
    int64_t offset = 1000;
    CHECK_OK(fl_function_register("sum", sum_args, NULL));
    CHECK_OK(fl_function_register("sum", sum_args, NULL)); /* the same again: fine */
    CHECK_RC(FL_ESTATE, fl_function_register("sum", fail_seven, NULL));
    CHECK(strstr(fl_last_error(), "already registered") != NULL);
    CHECK_RC(FL_ESTATE, fl_function_register("sum", sum_args, &offset)); /* another user */
    CHECK_RC(FL_EINVAL, fl_function_register("", sum_args, NULL));
    CHECK_RC(FL_EINVAL, fl_function_register(NULL, sum_args, NULL));
    CHECK_RC(FL_EINVAL, fl_function_register("x", NULL, NULL));
    char long_name[300];
    memset(long_name, 'n', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = 0;
    CHECK_RC(FL_EINVAL, fl_function_register(long_name, sum_args, NULL));

    CHECK_OK(fl_runtime_trace_start(rt));
    int64_t a = 40, b = 2;
    fl_arg two[2] = {int_arg(&a), int_arg(&b)};
    fl_ref named = NULL, missing = (fl_ref)1, products[8];
    CHECK_OK(fl_remote_named(rt, "sum", two, 2, NULL, &named));
    CHECK(get_int(named) == 42);
    CHECK_RC(FL_EINVAL, fl_remote_named(rt, "no such function", two, 2, NULL, &missing));
    CHECK(missing == NULL);
    CHECK(strstr(fl_last_error(), "no such function") != NULL);
    CHECK_RC(FL_EINVAL, fl_remote_named(rt, NULL, two, 2, NULL, &missing));
    for (int i = 0; i < 8; i++) CHECK_OK(fl_remote(rt, remote_test_product, NULL, two, 2, NULL, &products[i]));
    for (int i = 0; i < 8; i++) CHECK(get_int(products[i]) == 80);
    fl_actor counter = NULL;
    fl_ref call = NULL;
    CHECK_OK(fl_actor_create(rt, counter_init, counter_free, NULL, NULL, 0, NULL, &counter));
    CHECK_OK(fl_actor_call(counter, counter_add, NULL, 0, &call));
    CHECK(get_int(call) == 1);
    CHECK_OK(fl_runtime_trace_stop(rt));
    fl_ref after = NULL;
    CHECK_OK(fl_remote_named(rt, "sum", two, 2, NULL, &after)); /* not recorded */
    CHECK(get_int(after) == 42);

    char path[64];
    snprintf(path, sizeof path, "/tmp/forklift-trace-%d.json", (int)getpid());
    static char text[1 << 16];
    written_trace(rt, path, text, sizeof text);
    CHECK(strstr(text, "\"traceEvents\"") != NULL);
    CHECK(count_of(text, "\"ph\":\"X\"") == 11); /* 1 + 8 tasks, a constructor, a call */
    CHECK(count_of(text, "\"name\":\"sum\"") == 1);
    CHECK(count_of(text, "\"name\":\"remote_test_product\"") == 8);
    CHECK(count_of(text, "\"name\":\"actor constructor\"") == 1);
    CHECK(count_of(text, "\"cat\":\"actor\"") == 1);
    CHECK_RC(FL_ESYSTEM, fl_runtime_trace_write(rt, "/nonexistent-dir/trace.json"));
    CHECK_RC(FL_EINVAL, fl_runtime_trace_write(rt, NULL));
    CHECK_RC(FL_EHANDLE, fl_runtime_trace_start(NULL));

    CHECK_OK(fl_function_unregister("sum"));
    CHECK_RC(FL_EINVAL, fl_function_unregister("sum"));
    CHECK_RC(FL_EINVAL, fl_remote_named(rt, "sum", two, 2, NULL, &missing));
    /* Written after the unregistration, the trace still names the task that ran as "sum". */
    written_trace(rt, path, text, sizeof text);
    CHECK(count_of(text, "\"name\":\"sum\"") == 1);

    /* One function under two names, with other user pointers: each task is traced under the
     * name it was submitted by. */
    fl_runtime own = new_runtime(1, 0);
    CHECK_OK(fl_function_register("beta", sum_args, &offset));
    CHECK_OK(fl_function_register("alpha", sum_args, &a));
    CHECK_OK(fl_runtime_trace_start(own));
    fl_ref by_name[3];
    CHECK_OK(fl_remote_named(own, "beta", two, 2, NULL, &by_name[0]));
    CHECK_OK(fl_remote_named(own, "alpha", two, 2, NULL, &by_name[1]));
    CHECK_OK(fl_remote_named(own, "beta", two, 2, NULL, &by_name[2]));
    for (int i = 0; i < 3; i++) CHECK(get_int(by_name[i]) == 42);
    written_trace(own, path, text, sizeof text);
    CHECK(count_of(text, "\"name\":\"alpha\"") == 1);
    CHECK(count_of(text, "\"name\":\"beta\"") == 2);
    for (int i = 0; i < 3; i++) fl_ref_release(by_name[i]);
    CHECK_OK(fl_function_unregister("alpha"));
    CHECK_OK(fl_function_unregister("beta"));
    CHECK_OK(fl_runtime_shutdown(own));
    fl_ref_release(named);
    fl_ref_release(after);
    fl_ref_release(call);
    for (int i = 0; i < 8; i++) fl_ref_release(products[i]);
    CHECK_OK(fl_actor_kill(counter));
}

/* ---- zero-copy create/seal, get of many ---- */

static void test_create_seal_and_get_many(void) {
    fl_runtime rt = new_runtime(2, 1 << 20);
    fl_runtime_stats stats;

    /* A buffer filled in place; a task that takes it waits for the seal. */
    void *buffer = NULL;
    fl_ref made = NULL, summed = NULL;
    CHECK_OK(fl_create(rt, sizeof(int64_t), &buffer, &made));
    CHECK(buffer != NULL && made != NULL);
    fl_arg arg = ref_arg(made);
    CHECK_OK(fl_remote(rt, sum_args, NULL, &arg, 1, NULL, &summed));
    CHECK_RC(FL_ETIMEDOUT, fl_get(made, 0.05, NULL, NULL));
    CHECK_RC(FL_ETIMEDOUT, fl_get(summed, 0, NULL, NULL));
    int64_t value = 4242;
    memcpy(buffer, &value, sizeof value);
    CHECK_OK(fl_seal(made));
    const void *view = NULL;
    size_t len = 0;
    CHECK_OK(fl_get(made, 30, &view, &len));
    CHECK(len == 8 && memcmp(view, &value, 8) == 0);
    CHECK(get_int(summed) == 4242); /* ran after the seal, on the sealed bytes */
    CHECK_RC(FL_ESTATE, fl_seal(made)); /* sealed already */
    CHECK(strstr(fl_last_error(), "unsealed") != NULL);
    CHECK_RC(FL_ESTATE, fl_seal(summed)); /* a task's result */
    CHECK_OK(fl_runtime_get_stats(rt, &stats));
    CHECK(stats.object_bytes >= 16);

    /* A large one, counted against the capacity from the start. */
    void *big = NULL;
    fl_ref large = NULL, too_large = NULL;
    CHECK_OK(fl_create(rt, 600 * 1024, &big, &large));
    memset(big, 7, 600 * 1024);
    CHECK_RC(FL_ENOMEM, fl_create(rt, 600 * 1024, &buffer, &too_large));
    CHECK(too_large == NULL && buffer == NULL);
    CHECK(strstr(fl_last_error(), "store full") != NULL);
    CHECK_OK(fl_seal(large));
    /* Released without a seal: freed, bytes given back. */
    fl_ref abandoned = NULL;
    CHECK_OK(fl_create(rt, 1000, &buffer, &abandoned));
    CHECK_OK(fl_ref_release(abandoned));

    /* Get of many: all ready; then a failure and a timeout among them. */
    int64_t a = 1, b = 2;
    fl_arg one = int_arg(&a);
    fl_ref refs[4] = {NULL, NULL, NULL, NULL};
    CHECK_OK(fl_remote(rt, sum_args, NULL, &one, 1, NULL, &refs[0]));
    CHECK_OK(fl_put(rt, &b, sizeof b, &refs[1]));
    refs[2] = large;
    const void *views[4];
    size_t lens[4];
    int statuses[4];
    CHECK_OK(fl_get_many(refs, 3, 30, views, lens, statuses));
    CHECK(lens[0] == 8 && memcmp(views[0], &a, 8) == 0 && memcmp(views[1], &b, 8) == 0);
    CHECK(lens[2] == 600 * 1024 && ((const char *)views[2])[600 * 1024 - 1] == 7);
    CHECK(views[2] == big); /* the very buffer that was filled: no copy */
    CHECK(statuses[0] == FL_OK && statuses[1] == FL_OK && statuses[2] == FL_OK);
    fl_ref failing = NULL, pending_forever = NULL;
    CHECK_OK(fl_remote(rt, fail_seven, NULL, NULL, 0, NULL, &failing));
    CHECK_OK(fl_create(rt, 8, &buffer, &pending_forever));
    fl_ref mixed[3] = {refs[0], failing, pending_forever};
    CHECK_RC(FL_ETASK, fl_get_many(mixed, 3, 0.05, views, lens, statuses));
    CHECK(strstr(fl_last_error(), "seven") != NULL);
    CHECK(statuses[0] == FL_OK && statuses[1] == FL_ETASK && statuses[2] == FL_ETIMEDOUT);
    CHECK(views[1] == NULL && lens[2] == 0 && views[0] != NULL);
    fl_ref only_pending[1] = {pending_forever};
    CHECK_RC(FL_ETIMEDOUT, fl_get_many(only_pending, 1, 0, views, lens, NULL));
    fl_ref with_bad[2] = {refs[0], (fl_ref)0x1234};
    CHECK_RC(FL_EHANDLE, fl_get_many(with_bad, 2, 0, views, lens, NULL));
    CHECK_RC(FL_EINVAL, fl_get_many(NULL, 2, 0, views, lens, NULL));
    CHECK_OK(fl_get_many(NULL, 0, 0, NULL, NULL, NULL));
    CHECK_RC(FL_EINVAL, fl_create(rt, 8, NULL, &too_large));
    CHECK_RC(FL_EHANDLE, fl_seal(NULL));

    fl_ref_release(made);
    fl_ref_release(summed);
    fl_ref_release(large);
    fl_ref_release(refs[0]);
    fl_ref_release(refs[1]);
    fl_ref_release(failing);
    fl_ref_release(pending_forever);
    stats = stats_once_settled(rt);
    CHECK(stats.objects == 0 && stats.object_bytes == 0);
    CHECK_OK(fl_runtime_shutdown(rt));
}

/* ---- several returns ---- */

/* Returns x, x*x and x*x*x as results 0, 1 and 2; fails for a negative x. */
static int powers(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)nargs;
    int64_t x = as_int(&args[0]), square = x * x, cube = square * x;
    if (x < 0) return fl_task_fail(ctx, 3, "negative input");
    if (fl_task_return_at(ctx, 3, &x, sizeof x) != FL_ERANGE) return 10; /* only 3 returns */
    if (fl_task_return_at(ctx, SIZE_MAX, &x, sizeof x) != FL_ERANGE) return 14; /* not a negative index */
    if (fl_task_return_at(ctx, 2, &cube, sizeof cube) != FL_OK) return 11;
    if (fl_task_return_at(ctx, 1, &square, sizeof square) != FL_OK) return 12;
    return fl_task_return_at(ctx, 0, &x, sizeof x) == FL_OK ? 0 : 13;
}

/* A single-return task: fl_task_return_at beyond 0 is out of range. */
static int one_return_probe(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)args; (void)nargs;
    int64_t v = 5;
    int64_t rc = fl_task_return_at(ctx, 1, &v, sizeof v);
    return fl_task_return(ctx, &rc, sizeof rc);
}

static void test_several_returns(fl_runtime rt) {
    int64_t x = 3;
    fl_arg arg = int_arg(&x);
    fl_ref out[3] = {NULL, NULL, NULL};
    CHECK_OK(fl_remote_multi(rt, powers, NULL, &arg, 1, NULL, 3, out));
    CHECK(get_int(out[0]) == 3 && get_int(out[1]) == 9 && get_int(out[2]) == 27);
    /* Each result is its own object: it flows into another task by itself. */
    fl_arg both[2] = {ref_arg(out[1]), ref_arg(out[2])};
    fl_ref total = NULL;
    CHECK_OK(fl_remote(rt, sum_args, NULL, both, 2, NULL, &total));
    CHECK(get_int(total) == 36);
    fl_ref_release(total);
    /* Released in any order. */
    fl_ref_release(out[1]);
    fl_ref_release(out[0]);
    fl_ref_release(out[2]);

    /* A failure fails every result. */
    int64_t negative = -2;
    fl_arg bad = int_arg(&negative);
    CHECK_OK(fl_remote_multi(rt, powers, NULL, &bad, 1, NULL, 3, out));
    for (int i = 0; i < 3; i++) {
        CHECK_RC(FL_ETASK, fl_get(out[i], 30, NULL, NULL));
        CHECK(strstr(fl_last_error(), "negative input") != NULL);
        CHECK(strstr(fl_last_error(), "(code -") == NULL && count_of(fl_last_error(), "(code ") == 1); /* the task's code, once */
        fl_ref_release(out[i]);
    }
    /* Results not set are empty. */
    fl_ref two[2] = {NULL, NULL};
    CHECK_OK(fl_remote_multi(rt, sum_args, NULL, &arg, 1, NULL, 2, two));
    const void *data = NULL;
    size_t len = 99;
    CHECK(get_int(two[0]) == 3);
    CHECK_OK(fl_get(two[1], 30, &data, &len));
    CHECK(len == 0);
    fl_ref_release(two[0]);
    fl_ref_release(two[1]);
    /* One return: index 1 is out of range. */
    fl_ref probe = NULL;
    CHECK_OK(fl_remote(rt, one_return_probe, NULL, NULL, 0, NULL, &probe));
    CHECK(get_int(probe) == FL_ERANGE);
    fl_ref_release(probe);
    /* Bad input. */
    fl_ref none[2] = {(fl_ref)1, (fl_ref)1};
    CHECK_RC(FL_EINVAL, fl_remote_multi(rt, powers, NULL, &arg, 1, NULL, 0, none));
    CHECK_RC(FL_EINVAL, fl_remote_multi(rt, powers, NULL, &arg, 1, NULL, 2000, none));
    CHECK_RC(FL_EINVAL, fl_remote_multi(rt, powers, NULL, &arg, 1, NULL, 2, NULL));
    CHECK_RC(FL_EHANDLE, fl_remote_multi(NULL, powers, NULL, &arg, 1, NULL, 2, none));
    CHECK(none[0] == NULL && none[1] == NULL);
    CHECK_RC(FL_EHANDLE, fl_task_return_at(NULL, 1, &x, sizeof x));
}

/* ---- CPU counts ---- */

static int cpus_inside, cpus_most;

/* Counts how many counted tasks run at once; args[0] = CPUs it asked for. */
static int hold_cpus(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)nargs;
    int64_t cpus = as_int(&args[0]);
    int inside = __atomic_add_fetch(&cpus_inside, (int)cpus, __ATOMIC_SEQ_CST);
    int most = __atomic_load_n(&cpus_most, __ATOMIC_SEQ_CST);
    while (inside > most && !__atomic_compare_exchange_n(&cpus_most, &most, inside, 0, __ATOMIC_SEQ_CST,
                                                         __ATOMIC_SEQ_CST)) {
    }
    pause_ms(5);
    __atomic_sub_fetch(&cpus_inside, (int)cpus, __ATOMIC_SEQ_CST);
    return fl_task_return(ctx, &cpus, sizeof cpus);
}

/* Asks for both CPUs, then waits for a task asking for one: it lends its CPUs meanwhile. */
static int hold_all_then_wait(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)args; (void)nargs;
    fl_runtime rt = user;
    fl_remote_options options;
    fl_remote_options_init(&options);
    options.num_cpus = 1;
    int64_t one = 1;
    fl_arg arg = int_arg(&one);
    fl_ref inner = NULL;
    if (fl_remote(rt, hold_cpus, NULL, &arg, 1, &options, &inner) != FL_OK) return 1;
    int64_t got = get_int(inner);
    fl_ref_release(inner);
    return fl_task_return(ctx, &got, sizeof got);
}

static void test_cpu_counts(void) {
    fl_runtime rt = new_runtime(2, 0);
    fl_remote_options options;
    CHECK_OK(fl_remote_options_init(&options));
    CHECK(options.num_cpus == 0);

    /* Tasks of 2 CPUs on 2 workers run one at a time; of 1 CPU, two at a time. */
    int64_t two = 2, one = 1;
    fl_arg arg2 = int_arg(&two), arg1 = int_arg(&one);
    fl_ref refs[12];
    options.num_cpus = 2;
    for (int i = 0; i < 6; i++) CHECK_OK(fl_remote(rt, hold_cpus, NULL, &arg2, 1, &options, &refs[i]));
    for (int i = 0; i < 6; i++) CHECK(get_int(refs[i]) == 2);
    CHECK(cpus_most == 2); /* one task of 2 at a time */
    for (int i = 0; i < 6; i++) fl_ref_release(refs[i]);
    cpus_most = 0;
    options.num_cpus = 1;
    for (int i = 0; i < 12; i++) CHECK_OK(fl_remote(rt, hold_cpus, NULL, &arg1, 1, &options, &refs[i]));
    for (int i = 0; i < 12; i++) CHECK(get_int(refs[i]) == 1);
    CHECK(cpus_most <= 2);
    for (int i = 0; i < 12; i++) fl_ref_release(refs[i]);
    /* Mixed: a 2-CPU task never overlaps a 1-CPU one. */
    cpus_most = 0;
    for (int i = 0; i < 8; i++) {
        options.num_cpus = i % 2 ? 2 : 1;
        CHECK_OK(fl_remote(rt, hold_cpus, NULL, i % 2 ? &arg2 : &arg1, 1, &options, &refs[i]));
    }
    for (int i = 0; i < 8; i++) CHECK(get_int(refs[i]) == (i % 2 ? 2 : 1));
    CHECK(cpus_most <= 2);
    for (int i = 0; i < 8; i++) fl_ref_release(refs[i]);

    /* A task holding every CPU waits for one that needs a CPU: no deadlock. */
    options.num_cpus = 2;
    fl_ref outer = NULL;
    CHECK_OK(fl_remote(rt, hold_all_then_wait, rt, NULL, 0, &options, &outer));
    CHECK(get_int(outer) == 1);
    fl_ref_release(outer);
    /* The same when fl_get with no limit runs the outer task on this thread: it lends its
     * CPUs there too. */
    for (int i = 0; i < 20; i++) {
        CHECK_OK(fl_remote(rt, hold_all_then_wait, rt, NULL, 0, &options, &outer));
        const void *data = NULL;
        size_t len = 0;
        CHECK_OK(fl_get(outer, FL_FOREVER, &data, &len));
        CHECK(len == 8 && *(const int64_t *)data == 1);
        fl_ref_release(outer);
    }
    /* Tasks that waited for their CPUs are let go of once they ran: with every reference
     * released, no object of theirs is left. */
    fl_runtime_stats stats = stats_once_settled(rt);
    CHECK(stats.objects == 0 && stats.object_bytes == 0);

    /* Bad counts; an options struct of the earlier layout (no num_cpus) still works. */
    fl_ref bad = NULL;
    options.num_cpus = 3;
    CHECK_RC(FL_EINVAL, fl_remote(rt, hold_cpus, NULL, &arg1, 1, &options, &bad));
    CHECK(strstr(fl_last_error(), "num_cpus") != NULL);
    options.num_cpus = -1;
    CHECK_RC(FL_EINVAL, fl_remote(rt, hold_cpus, NULL, &arg1, 1, &options, &bad));
    options.num_cpus = 0;
    options.size = offsetof(fl_remote_options, num_cpus);
    CHECK_OK(fl_remote(rt, hold_cpus, NULL, &arg1, 1, &options, &bad));
    CHECK(get_int(bad) == 1);
    fl_ref_release(bad);

    /* Shutdown: tasks still waiting for CPUs resolve as cancelled. */
    CHECK_OK(fl_remote_options_init(&options));
    options.num_cpus = 2;
    for (int i = 0; i < 8; i++) CHECK_OK(fl_remote(rt, hold_cpus, NULL, &arg2, 1, &options, &refs[i]));
    CHECK_OK(fl_runtime_shutdown(rt));
    int cancelled = 0;
    for (int i = 0; i < 8; i++) {
        int rc = fl_get(refs[i], 30, NULL, NULL);
        CHECK(rc == FL_OK || rc == FL_ECANCELED);
        cancelled += rc == FL_ECANCELED;
        fl_ref_release(refs[i]);
    }
    CHECK(cancelled > 0);
}

/* ---- spilling ---- */

enum { SPILL_CAPACITY = 64 << 10, SPILL_OBJECT = 48 << 10 };
static unsigned char spill_pattern[256 << 10];

/* Returns the first `len` bytes of spill_pattern (len: the int64 argument). */
static int pattern_bytes(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)nargs;
    return fl_task_return(ctx, spill_pattern, (size_t)as_int(&args[0]));
}

/* The byte sum of the first argument. */
static int byte_sum(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)nargs;
    int64_t total = 0;
    for (size_t i = 0; i < args[0].len; i++) total += ((const unsigned char *)args[0].data)[i];
    return fl_task_return(ctx, &total, sizeof total);
}

/* Whether `p` lies in a shared mapping of a file in `dir`. */
static int mapped_from(const void *p, const char *dir) {
    char line[1024];
    return shared_mapping_of(p, line, sizeof line) && strstr(line, dir) != NULL;
}

static int directory_is_empty(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int entries = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) entries++;
    closedir(d);
    return entries == 0;
}

static int bytes_match(fl_ref r, size_t len) {
    const void *data = NULL;
    size_t got = 0;
    return fl_get(r, 30, &data, &got) == FL_OK && got == len && memcmp(data, spill_pattern, len) == 0;
}

static void test_spill(void) {
    for (size_t i = 0; i < sizeof spill_pattern; i++) spill_pattern[i] = (unsigned char)(i * 7 + i / 251);
    char dir[] = "/tmp/forklift-spill-test-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    fl_runtime rt = new_runtime(2, SPILL_CAPACITY);

    /* Bad input: not a directory, a missing one, a bad handle. */
    CHECK_RC(FL_EINVAL, fl_runtime_set_spill_directory(rt, "/proc/self/status"));
    CHECK_RC(FL_EINVAL, fl_runtime_set_spill_directory(rt, "/nonexistent/forklift"));
    CHECK_RC(FL_EHANDLE, fl_runtime_set_spill_directory(NULL, dir));

    /* Without a spill directory, what does not fit fails. */
    fl_ref first = NULL, refused = NULL;
    CHECK_OK(fl_put(rt, spill_pattern, SPILL_OBJECT, &first));
    CHECK_RC(FL_ENOMEM, fl_put(rt, spill_pattern, SPILL_OBJECT, &refused));
    CHECK(strstr(fl_last_error(), "object store full") != NULL);

    /* With one: puts, a created buffer and a task's result that do not fit go to files there,
     * read back through views of the files' mappings; the store's bytes stay within capacity. */
    CHECK_OK(fl_runtime_set_spill_directory(rt, dir));
    fl_ref spilled[3] = {NULL, NULL, NULL};
    CHECK_OK(fl_put(rt, spill_pattern, SPILL_OBJECT, &spilled[0]));
    void *buffer = NULL;
    CHECK_OK(fl_create(rt, 100 << 10, &buffer, &spilled[1]));
    CHECK(mapped_from(buffer, dir));
    memcpy(buffer, spill_pattern, 100 << 10);
    CHECK_OK(fl_seal(spilled[1]));
    int64_t result_len = 80 << 10;
    fl_arg len_arg = int_arg(&result_len);
    CHECK_OK(fl_remote(rt, pattern_bytes, NULL, &len_arg, 1, NULL, &spilled[2]));
    CHECK(bytes_match(first, SPILL_OBJECT));
    CHECK(bytes_match(spilled[0], SPILL_OBJECT));
    CHECK(bytes_match(spilled[1], 100 << 10));
    CHECK(bytes_match(spilled[2], 80 << 10));
    const void *view = NULL;
    CHECK_OK(fl_get(first, 30, &view, NULL));
    CHECK(!mapped_from(view, dir));
    for (int i = 0; i < 3; i++) {
        CHECK_OK(fl_get(spilled[i], 30, &view, NULL));
        CHECK(mapped_from(view, dir));
    }
    fl_runtime_stats stats;
    CHECK_OK(fl_runtime_get_stats(rt, &stats));
    CHECK(stats.object_bytes == SPILL_OBJECT);
    CHECK(stats.objects == 4);

    /* A task reads a spilled object as its argument. */
    int64_t expected = 0;
    for (size_t i = 0; i < (100 << 10); i++) expected += spill_pattern[i];
    fl_arg spilled_arg = ref_arg(spilled[1]);
    fl_ref sum = NULL;
    CHECK_OK(fl_remote(rt, byte_sum, NULL, &spilled_arg, 1, NULL, &sum));
    CHECK(get_int(sum) == expected);
    fl_ref_release(sum);

    /* Released, everything is gone: no object, no byte, no file. */
    fl_ref_release(first);
    for (int i = 0; i < 3; i++) CHECK_OK(fl_ref_release(spilled[i]));
    stats = stats_once_settled(rt);
    CHECK(stats.objects == 0 && stats.object_bytes == 0);
    CHECK(directory_is_empty(dir));

    /* An unsealed spilled buffer released without a seal goes too. */
    fl_ref filler = NULL, unsealed = NULL;
    CHECK_OK(fl_put(rt, spill_pattern, SPILL_OBJECT, &filler));
    CHECK_OK(fl_create(rt, SPILL_OBJECT, &buffer, &unsealed));
    CHECK(mapped_from(buffer, dir));
    CHECK_OK(fl_ref_release(unsealed));
    CHECK_OK(fl_ref_release(filler));

    /* Turned off again: what does not fit fails again. */
    CHECK_OK(fl_runtime_set_spill_directory(rt, NULL));
    CHECK_OK(fl_put(rt, spill_pattern, SPILL_OBJECT, &filler));
    CHECK_RC(FL_ENOMEM, fl_put(rt, spill_pattern, SPILL_OBJECT, &refused));
    CHECK_OK(fl_remote(rt, pattern_bytes, NULL, &len_arg, 1, NULL, &spilled[2]));
    CHECK_RC(FL_ENOMEM, fl_get(spilled[2], 30, NULL, NULL));
    fl_ref_release(spilled[2]);
    fl_ref_release(filler);
    stats = stats_once_settled(rt);
    CHECK(stats.objects == 0 && stats.object_bytes == 0);
    CHECK_OK(fl_runtime_shutdown(rt));
    CHECK(directory_is_empty(dir));
    rmdir(dir);
}

/* ---- two shutdowns at once; a failure down a long chain ---- */

static fl_runtime racing_runtime;
static int racing_status[2];
static volatile int racing_go;

static void *shut_down_racing(void *which) {
    while (!__atomic_load_n(&racing_go, __ATOMIC_ACQUIRE)) sched_yield();
    racing_status[(intptr_t)which] = fl_runtime_shutdown(racing_runtime);
    return NULL;
}

static void test_concurrent_shutdowns(void) {
    /* Two threads shut one runtime down at once: one call does it, the other finds the handle
     * going (FL_EHANDLE); neither waits forever, nor tears down what the other tears down. */
    alarm(120); /* a hang fails the test instead of holding the suite */
    int both_right = 1;
    for (int round = 0; round < 50; round++) {
        racing_runtime = new_runtime(1, 0);
        racing_go = 0;
        pthread_t threads[2];
        for (intptr_t i = 0; i < 2; i++) pthread_create(&threads[i], NULL, shut_down_racing, (void *)i);
        __atomic_store_n(&racing_go, 1, __ATOMIC_RELEASE);
        for (int i = 0; i < 2; i++) pthread_join(threads[i], NULL);
        both_right &= (racing_status[0] == FL_OK && racing_status[1] == FL_EHANDLE) ||
                      (racing_status[1] == FL_OK && racing_status[0] == FL_EHANDLE);
    }
    alarm(0);
    CHECK(both_right);
}

static void test_failure_down_a_long_chain(void) {
    /* Each task of the chain takes the previous one's result; the first fails. An object's
     * message is kept within 1023 bytes (it would otherwise grow by a prefix per link, and the
     * chain's memory with the square of its length): its start, " ... ", and its end, where
     * the first cause is (before, the start alone was kept, cut at 1023 bytes). */
    fl_runtime rt = new_runtime(2, 0);
    enum { LINKS = 3000 };
    static fl_ref chain[LINKS];
    CHECK_OK(fl_remote(rt, fail_seven, NULL, NULL, 0, NULL, &chain[0]));
    int submitted = 1;
    for (int i = 1; i < LINKS; i++) {
        fl_arg previous = {NULL, 0, chain[i - 1]};
        submitted &= fl_remote(rt, sum_args, NULL, &previous, 1, NULL, &chain[i]) == FL_OK;
    }
    CHECK(submitted);
    CHECK_RC(FL_ETASK, fl_get(chain[LINKS - 1], 30, NULL, NULL));
    const char *message = fl_last_error();
    CHECK(strlen(message) <= 1023);
    CHECK(strncmp(message, "argument 0 failed: ", 19) == 0);
    CHECK(strstr(message, " ... ") != NULL);
    size_t length = strlen(message);
    static const char first_cause[] = "seven is not allowed (code 7)"; /* fail_seven's, at the end */
    CHECK(length >= sizeof first_cause && strcmp(message + length - (sizeof first_cause - 1), first_cause) == 0);
    for (int i = 0; i < LINKS; i++) fl_ref_release(chain[i]);
    fl_runtime_stats stats = stats_once_settled(rt);
    CHECK(stats.objects == 0);
    CHECK_OK(fl_runtime_shutdown(rt));
}

int main(void) {
    fl_runtime rt = NULL;
    CHECK_OK(fl_runtime_default(&rt));
    fl_runtime again = NULL;
    CHECK_OK(fl_runtime_default(&again));
    CHECK(again == rt);
    test_seed_example(rt);
    test_dataflow(rt);
    test_failures_travel(rt);
    test_wait(rt);
    test_bad_input(rt);
    test_actors(rt);
    test_actor_streams(rt);
    test_names_and_trace(rt);
    test_several_returns(rt);
    test_create_seal_and_get_many();
    test_cpu_counts();
    test_waiting_does_not_hold_a_worker();
    test_get_runs_a_queued_task_itself();
    test_objects_and_refcounts();
    test_released_result_leaves_a_busy_store();
    test_unsealed_argument_at_shutdown();
    test_shutdown_with_work_in_flight();
    test_cancel();
    test_cancel_recursive();
    test_spill();
    test_concurrent_shutdowns();
    test_failure_down_a_long_chain();
    CHECK_OK(fl_runtime_shutdown(rt));
    CHECK_RC(FL_EHANDLE, fl_runtime_shutdown(rt));
    return check_finish("remote");
}
