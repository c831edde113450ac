/* Objects that contain others (Ray's refs inside a value): an fl_create buffer or a task's
 * result keeps the objects it contains alive until it is freed; fl_ref_contained gives new
 * references to them, from outside, and fl_arg_contained from a task, an actor call or an
 * actor constructor that takes the container as an argument. The errors of each call, and no
 * object left after many cycles. */
#define _GNU_SOURCE
#include "check.h"
#include "remote_helpers.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

static fl_runtime new_runtime(size_t workers) {
    fl_runtime rt = runtime_with_workers(workers);
    CHECK(rt != NULL);
    return rt;
}

static fl_ref put_int(fl_runtime rt, int64_t v) {
    fl_ref r = NULL;
    CHECK_OK(fl_put(rt, &v, sizeof v, &r));
    return r;
}

static fl_ref contained(fl_ref container, size_t index) {
    fl_ref r = NULL;
    CHECK_OK(fl_ref_contained(container, index, &r));
    return r;
}

static int64_t objects_now(fl_runtime rt) {
    fl_runtime_stats stats;
    CHECK_OK(fl_runtime_get_stats(rt, &stats));
    return (int64_t)stats.objects;
}

/* Waits up to 5 s for the runtime to hold `count` objects. */
static int objects_reach(fl_runtime rt, int64_t count) {
    for (int i = 0; i < 5000 && objects_now(rt) != count; i++) pause_ms(1);
    return objects_now(rt) == count;
}

static volatile int gate_open;

/* Waits for the gate (at most 20 s, so a failed check before it opens cannot hang the suite). */
static int wait_for_gate(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)args; (void)nargs;
    for (int i = 0; i < 20000 && !__atomic_load_n(&gate_open, __ATOMIC_SEQ_CST); i++) pause_ms(1);
    int64_t v = (int64_t)(intptr_t)user;
    return fl_task_return(ctx, &v, sizeof v);
}

/* A buffer that contains a ready object and a pending one: indices in order, new references
 * from fl_ref_contained, the pending one resolving later through it; the inner objects live
 * while the container does, after their own references went. */
static void test_buffer_contains(void) {
    fl_runtime rt = new_runtime(2);
    __atomic_store_n(&gate_open, 0, __ATOMIC_SEQ_CST);
    fl_ref ready = put_int(rt, 41);
    fl_ref pending = NULL;
    CHECK_OK(fl_remote(rt, wait_for_gate, (void *)(intptr_t)42, NULL, 0, NULL, &pending));
    fl_ref box = NULL;
    void *bytes = NULL;
    CHECK_OK(fl_create(rt, 4, &bytes, &box));
    memcpy(bytes, "pair", 4);
    size_t index = 99;
    CHECK_OK(fl_ref_contain(box, ready, &index));
    CHECK(index == 0);
    CHECK_OK(fl_ref_contain(box, pending, &index));
    CHECK(index == 1);
    CHECK_OK(fl_ref_contain(box, ready, NULL)); /* twice is allowed: index 2 */
    size_t count = 0;
    CHECK_OK(fl_ref_contained_count(box, &count));
    CHECK(count == 3);
    CHECK_OK(fl_seal(box));
    int64_t before = objects_now(rt);
    CHECK_OK(fl_ref_release(ready));
    CHECK_OK(fl_ref_release(pending));
    pause_ms(10);
    CHECK(objects_now(rt) == before); /* the box keeps both */

    fl_ref first = contained(box, 0), second = contained(box, 1), third = contained(box, 2);
    CHECK(get_int(first) == 41);
    CHECK(get_int(third) == 41);
    CHECK_RC(FL_ETIMEDOUT, fl_get(second, 0.02, NULL, NULL));
    __atomic_store_n(&gate_open, 1, __ATOMIC_SEQ_CST);
    CHECK(get_int(second) == 42);
    const void *data = NULL;
    size_t len = 0;
    CHECK_OK(fl_get(box, 30, &data, &len));
    CHECK(len == 4 && memcmp(data, "pair", 4) == 0);
    /* The new references are the caller's own: the box still holds the objects without them. */
    fl_ref_release(first);
    fl_ref_release(second);
    fl_ref_release(third);
    fl_ref again = contained(box, 1);
    CHECK(get_int(again) == 42);
    fl_ref_release(again);
    /* The last reference to the box frees it and what it contains. */
    CHECK_OK(fl_ref_release(box));
    CHECK(objects_reach(rt, 0));
    CHECK_OK(fl_runtime_shutdown(rt));
}

/* Nesting: a box holding a box; freeing the outer frees all three objects. */
static void test_nested_boxes(void) {
    fl_runtime rt = new_runtime(2);
    fl_ref leaf = put_int(rt, 7);
    fl_ref inner = NULL, outer = NULL;
    void *bytes = NULL;
    CHECK_OK(fl_create(rt, 0, &bytes, &inner));
    CHECK_OK(fl_ref_contain(inner, leaf, NULL));
    CHECK_OK(fl_seal(inner));
    CHECK_OK(fl_create(rt, 0, &bytes, &outer));
    CHECK_OK(fl_ref_contain(outer, inner, NULL));
    CHECK_OK(fl_seal(outer));
    fl_ref_release(leaf);
    fl_ref_release(inner);
    CHECK(objects_now(rt) == 3);
    fl_ref got_inner = contained(outer, 0);
    fl_ref got_leaf = contained(got_inner, 0);
    CHECK(get_int(got_leaf) == 7);
    fl_ref_release(got_inner);
    fl_ref_release(got_leaf);
    CHECK_OK(fl_ref_release(outer));
    CHECK(objects_reach(rt, 0));
    CHECK_OK(fl_runtime_shutdown(rt));
}

static int nothing(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)args; (void)nargs;
    return fl_task_return(ctx, NULL, 0);
}

static void test_errors(void) {
    fl_runtime rt = new_runtime(2);
    fl_runtime other = new_runtime(1);
    fl_ref plain = put_int(rt, 1);
    fl_ref foreign = put_int(other, 2);
    fl_ref box = NULL;
    void *bytes = NULL;
    CHECK_OK(fl_create(rt, 8, &bytes, &box));
    CHECK_RC(FL_EINVAL, fl_ref_contain(box, box, NULL));
    CHECK_RC(FL_EINVAL, fl_ref_contain(box, foreign, NULL));
    CHECK_RC(FL_EHANDLE, fl_ref_contain(box, NULL, NULL));
    CHECK_RC(FL_EHANDLE, fl_ref_contain(NULL, plain, NULL));
    CHECK_RC(FL_ESTATE, fl_ref_contain(plain, box, NULL)); /* a put is not an unsealed buffer */
    fl_ref task = NULL;
    CHECK_OK(fl_remote(rt, nothing, NULL, NULL, 0, NULL, &task));
    CHECK_RC(FL_ESTATE, fl_ref_contain(task, plain, NULL)); /* nor is a task's result */
    CHECK_OK(fl_ref_contain(box, plain, NULL));
    CHECK_OK(fl_seal(box));
    CHECK_RC(FL_ESTATE, fl_ref_contain(box, plain, NULL)); /* sealed */
    size_t count = 9;
    CHECK_OK(fl_ref_contained_count(plain, &count));
    CHECK(count == 0);
    CHECK_RC(FL_EINVAL, fl_ref_contained_count(box, NULL));
    CHECK_RC(FL_EHANDLE, fl_ref_contained_count(NULL, &count));
    fl_ref out = (fl_ref)1;
    CHECK_RC(FL_ERANGE, fl_ref_contained(box, 1, &out));
    CHECK(out == NULL);
    CHECK_RC(FL_ERANGE, fl_ref_contained(box, SIZE_MAX, &out));
    CHECK_RC(FL_ERANGE, fl_ref_contained(box, (size_t)1 << 63, &out));
    CHECK_RC(FL_ERANGE, fl_ref_contained(plain, 0, &out));
    CHECK_RC(FL_EINVAL, fl_ref_contained(box, 0, NULL));
    CHECK_RC(FL_EHANDLE, fl_ref_contained(NULL, 0, &out));
    /* Outside a task. */
    CHECK_RC(FL_ENOTSUP, fl_arg_contained(0, 0, &out));
    CHECK_RC(FL_EHANDLE, fl_task_contain(NULL, 0, plain, NULL));
    /* Nothing was lost: the box still holds `plain`. */
    fl_ref held = contained(box, 0);
    CHECK(get_int(held) == 1);
    fl_ref_release(held);
    fl_ref_release(task);
    fl_ref_release(plain);
    fl_ref_release(box);
    fl_ref_release(foreign);
    CHECK_OK(fl_runtime_shutdown(rt));
    CHECK_OK(fl_runtime_shutdown(other));
}

/* ---- tasks ---- */

static fl_runtime task_runtime;

static int square(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)nargs;
    int64_t v = as_int(&args[0]);
    v *= v;
    return fl_task_return(ctx, &v, sizeof v);
}

/* Submits `n` children (square of 0..n-1), returns n and contains their refs in result 0. */
static int fan_out(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)nargs;
    int64_t n = as_int(&args[0]);
    for (int64_t i = 0; i < n; i++) {
        fl_arg arg = {&i, sizeof i, NULL};
        fl_ref child = NULL;
        if (fl_remote(task_runtime, square, NULL, &arg, 1, NULL, &child) != FL_OK) return 1;
        size_t index = 0;
        int rc = fl_task_contain(ctx, 0, child, &index);
        fl_ref_release(child);
        if (rc != FL_OK || index != (size_t)i) return 2;
    }
    return fl_task_return(ctx, &n, sizeof n);
}

/* Sums the int64 values of the objects that argument 0 contains (fl_arg_contained). */
static int sum_contained(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)args; (void)nargs;
    int64_t total = 0;
    for (size_t i = 0;; i++) {
        fl_ref r = NULL;
        int rc = fl_arg_contained(0, i, &r);
        if (rc == FL_ERANGE) break;
        if (rc != FL_OK) return 10;
        total += get_int(r);
        fl_ref_release(r);
    }
    return fl_task_return(ctx, &total, sizeof total);
}

/* The errors of fl_arg_contained and fl_task_contain inside a task: argument 0 a ref, 1 a blob. */
static int contained_errors(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)args;
    fl_ref r = NULL;
    int64_t failures = 0;
    if (fl_arg_contained(nargs, 0, &r) != FL_ERANGE) failures += 1;
    if (fl_arg_contained(SIZE_MAX, 0, &r) != FL_ERANGE) failures += 1;
    if (fl_arg_contained(0, SIZE_MAX, &r) != FL_ERANGE) failures += 1;
    if (fl_task_contain(ctx, SIZE_MAX, NULL, NULL) != FL_ERANGE) failures += 1000;
    if (fl_arg_contained(1, 0, &r) != FL_EINVAL) failures += 10;
    if (fl_arg_contained(0, 0, NULL) != FL_EINVAL) failures += 100;
    if (fl_task_contain(ctx, 1, NULL, NULL) != FL_ERANGE) failures += 1000;
    if (fl_task_contain(ctx, 0, NULL, NULL) != FL_EHANDLE) failures += 10000;
    return fl_task_return(ctx, &failures, sizeof failures);
}

/* Contains argument 0's ref in result 1 of a task with two results. */
static int contain_in_second(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)args; (void)nargs;
    fl_ref r = NULL;
    if (fl_arg_contained(0, 0, &r) != FL_OK) return 1;
    int rc = fl_task_contain(ctx, 1, r, NULL);
    fl_ref_release(r);
    int64_t v = rc;
    fl_task_return_at(ctx, 1, &v, sizeof v);
    return fl_task_return(ctx, &v, sizeof v);
}

static void test_tasks(void) {
    fl_runtime rt = task_runtime = new_runtime(2);
    int64_t n = 6;
    fl_arg arg = {&n, sizeof n, NULL};
    fl_ref fan = NULL;
    CHECK_OK(fl_remote(rt, fan_out, NULL, &arg, 1, NULL, &fan));
    CHECK(get_int(fan) == 6);
    size_t count = 0;
    CHECK_OK(fl_ref_contained_count(fan, &count));
    CHECK(count == 6);
    for (size_t i = 0; i < count; i++) {
        fl_ref child = contained(fan, i);
        CHECK(get_int(child) == (int64_t)(i * i));
        fl_ref_release(child);
    }
    /* The container passed on to another task, which reads what it contains. */
    fl_arg ref_arg = {NULL, 0, fan};
    fl_ref sum = NULL;
    CHECK_OK(fl_remote(rt, sum_contained, NULL, &ref_arg, 1, NULL, &sum));
    CHECK(get_int(sum) == 0 + 1 + 4 + 9 + 16 + 25);
    fl_ref_release(sum);
    /* Errors inside a task. */
    fl_arg two[2] = {{NULL, 0, fan}, {&n, sizeof n, NULL}};
    fl_ref errors = NULL;
    CHECK_OK(fl_remote(rt, contained_errors, NULL, two, 2, NULL, &errors));
    CHECK(get_int(errors) == 0);
    fl_ref_release(errors);
    /* Result 1 of a task with two. */
    fl_ref outs[2] = {NULL, NULL};
    CHECK_OK(fl_remote_multi(rt, contain_in_second, NULL, &ref_arg, 1, NULL, 2, outs));
    CHECK(get_int(outs[0]) == FL_OK);
    CHECK_OK(fl_ref_contained_count(outs[1], &count));
    CHECK(count == 1);
    CHECK_OK(fl_ref_contained_count(outs[0], &count));
    CHECK(count == 0);
    fl_ref child = contained(outs[1], 0);
    CHECK(get_int(child) == 0);
    fl_ref_release(child);
    fl_ref_release(outs[0]);
    fl_ref_release(outs[1]);
    fl_ref_release(fan);
    fl_runtime_stats stats = stats_once_settled(rt);
    CHECK(stats.objects == 0);
    CHECK_OK(fl_runtime_shutdown(rt));
}

/* A task cancelled while it runs: its result has resolved, so it can contain nothing. */
static volatile int cancelled_contain_rc;
static volatile int contain_task_started;

static int contain_after_cancel(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)args; (void)nargs;
    __atomic_store_n(&contain_task_started, 1, __ATOMIC_SEQ_CST);
    for (int i = 0; i < 20000 && !fl_task_cancelled(ctx); i++) pause_ms(1);
    fl_ref r = NULL;
    if (fl_arg_contained(0, 0, &r) != FL_OK) {
        __atomic_store_n(&cancelled_contain_rc, 1, __ATOMIC_SEQ_CST);
        return 0;
    }
    __atomic_store_n(&cancelled_contain_rc, fl_task_contain(ctx, 0, r, NULL), __ATOMIC_SEQ_CST);
    fl_ref_release(r);
    return 0;
}

static void test_cancelled_task(void) {
    fl_runtime rt = new_runtime(2);
    fl_ref leaf = put_int(rt, 3);
    fl_ref box = NULL;
    void *bytes = NULL;
    CHECK_OK(fl_create(rt, 0, &bytes, &box));
    CHECK_OK(fl_ref_contain(box, leaf, NULL));
    CHECK_OK(fl_seal(box));
    fl_arg arg = {NULL, 0, box};
    cancelled_contain_rc = 12345;
    contain_task_started = 0;
    fl_ref task = NULL;
    CHECK_OK(fl_remote(rt, contain_after_cancel, NULL, &arg, 1, NULL, &task));
    for (int i = 0; i < 20000 && !__atomic_load_n(&contain_task_started, __ATOMIC_SEQ_CST); i++) pause_ms(1);
    CHECK_OK(fl_cancel(task));
    CHECK_RC(FL_ECANCELED, fl_get(task, 30, NULL, NULL));
    for (int i = 0; i < 5000 && __atomic_load_n(&cancelled_contain_rc, __ATOMIC_SEQ_CST) == 12345; i++) pause_ms(1);
    CHECK(cancelled_contain_rc == FL_ESTATE);
    size_t count = 9;
    CHECK_OK(fl_ref_contained_count(task, &count));
    CHECK(count == 0);
    fl_ref_release(task);
    fl_ref_release(leaf);
    fl_ref_release(box);
    fl_runtime_stats stats = stats_once_settled(rt);
    CHECK(stats.objects == 0);
    CHECK_OK(fl_runtime_shutdown(rt));
}

/* ---- actors ---- */

/* The state: the sum of what the constructor's argument 0 contains. */
static int sum_init(void *user, const fl_blob *args, size_t nargs, void **state) {
    (void)user; (void)args; (void)nargs;
    int64_t *total = calloc(1, sizeof *total);
    if (!total) return 12;
    for (size_t i = 0;; i++) {
        fl_ref r = NULL;
        int rc = fl_arg_contained(0, i, &r);
        if (rc == FL_ERANGE) break;
        if (rc != FL_OK) {
            free(total);
            return 20;
        }
        *total += get_int(r);
        fl_ref_release(r);
    }
    *state = total;
    return 0;
}

static void free_total(void *user, void *state) {
    (void)user;
    free(state);
}

/* Adds what argument 0 contains to the state; returns the new total. */
static int add_contained(void *state, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)args; (void)nargs;
    int64_t *total = state;
    for (size_t i = 0;; i++) {
        fl_ref r = NULL;
        int rc = fl_arg_contained(0, i, &r);
        if (rc == FL_ERANGE) break;
        if (rc != FL_OK) return 30;
        *total += get_int(r);
        fl_ref_release(r);
    }
    return fl_task_return(ctx, total, sizeof *total);
}

/* A box of `count` puts of 1..count. */
static fl_ref box_of(fl_runtime rt, int count) {
    fl_ref box = NULL;
    void *bytes = NULL;
    CHECK_OK(fl_create(rt, 0, &bytes, &box));
    for (int i = 1; i <= count; i++) {
        fl_ref leaf = put_int(rt, i);
        CHECK_OK(fl_ref_contain(box, leaf, NULL));
        fl_ref_release(leaf);
    }
    CHECK_OK(fl_seal(box));
    return box;
}

static void test_actor(void) {
    fl_runtime rt = new_runtime(2);
    fl_ref three = box_of(rt, 3); /* 6 */
    fl_ref four = box_of(rt, 4);  /* 10 */
    fl_arg arg = {NULL, 0, three};
    fl_actor a = NULL;
    CHECK_OK(fl_actor_create(rt, sum_init, free_total, NULL, &arg, 1, NULL, &a));
    fl_arg call_arg = {NULL, 0, four};
    fl_ref r = NULL;
    CHECK_OK(fl_actor_call(a, add_contained, &call_arg, 1, &r));
    CHECK(get_int(r) == 16);
    fl_ref_release(r);
    CHECK_OK(fl_actor_kill(a));
    fl_ref_release(three);
    fl_ref_release(four);
    fl_runtime_stats stats = stats_once_settled(rt);
    CHECK(stats.objects == 0);
    CHECK_OK(fl_runtime_shutdown(rt));
}

/* ---- isolated tasks: no containing in a worker process ---- */

static int contain_in_process(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)args; (void)nargs;
    int64_t rc = fl_task_contain(ctx, 0, NULL, NULL);
    fl_ref r = NULL;
    if (fl_arg_contained(0, 0, &r) != FL_ENOTSUP) rc = 1;
    return fl_task_return(ctx, &rc, sizeof rc);
}

static void test_isolated(void) {
    fl_runtime rt = runtime_with_processes(1);
    CHECK(rt != NULL);
    if (!rt) return;
    fl_remote_options options;
    fl_remote_options_init(&options);
    options.isolate = 1;
    fl_ref leaf = put_int(rt, 5);
    fl_ref box = NULL;
    void *bytes = NULL;
    CHECK_OK(fl_create(rt, 0, &bytes, &box));
    CHECK_OK(fl_ref_contain(box, leaf, NULL));
    CHECK_OK(fl_seal(box));
    fl_arg arg = {NULL, 0, box};
    fl_ref r = NULL;
    CHECK_OK(fl_remote(rt, contain_in_process, NULL, &arg, 1, &options, &r));
    CHECK(get_int(r) == FL_ENOTSUP);
    fl_ref_release(r);
    fl_ref_release(box);
    fl_ref_release(leaf);
    CHECK_OK(fl_runtime_shutdown(rt));
}

/* ---- no leak: many cycles, and threads reading one container ---- */

static fl_ref shared_box;

static void *read_box(void *unused) {
    (void)unused;
    long bad = 0;
    for (int i = 0; i < 2000; i++) {
        fl_ref r = NULL;
        if (fl_ref_contained(shared_box, (size_t)(i % 4), &r) != FL_OK) {
            bad++;
            continue;
        }
        if (get_int(r) != i % 4 + 1) bad++;
        fl_ref_release(r);
    }
    return (void *)bad;
}

static void test_cycles(void) {
    fl_runtime rt = new_runtime(2);
    long failures = 0;
    for (int i = 0; i < 20000; i++) {
        fl_ref box = NULL, leaf = NULL;
        void *bytes = NULL;
        failures += fl_create(rt, 0, &bytes, &box) != FL_OK;
        for (int64_t v = 1; v <= 2; v++) {
            fl_ref put = NULL;
            failures += fl_put(rt, &v, sizeof v, &put) != FL_OK;
            failures += fl_ref_contain(box, put, NULL) != FL_OK;
            fl_ref_release(put);
        }
        failures += fl_seal(box) != FL_OK;
        failures += fl_ref_contained(box, (size_t)(i % 2), &leaf) != FL_OK;
        fl_ref_release(box); /* the leaf outlives the box through its own reference */
        failures += get_int(leaf) != i % 2 + 1;
        fl_ref_release(leaf);
    }
    CHECK(failures == 0);
    shared_box = box_of(rt, 4);
    pthread_t threads[3];
    for (int t = 0; t < 3; t++) pthread_create(&threads[t], NULL, read_box, NULL);
    long bad = 0;
    for (int t = 0; t < 3; t++) {
        void *result = NULL;
        pthread_join(threads[t], &result);
        bad += (long)result;
    }
    CHECK(bad == 0);
    fl_ref_release(shared_box);
    CHECK(objects_reach(rt, 0));
    CHECK_OK(fl_runtime_shutdown(rt));
}

/* ---- retries: a run that fails lets go of what it contained ---- */

static int attempts_made;

static int contain_then_fail_once(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)args; (void)nargs;
    int attempt = __atomic_add_fetch(&attempts_made, 1, __ATOMIC_SEQ_CST);
    for (int i = 0; i < attempt; i++) { /* attempt 1 contains one object, attempt 2 two */
        fl_ref r = NULL;
        if (fl_arg_contained(0, (size_t)i, &r) != FL_OK) return 50;
        size_t index = 99;
        int rc = fl_task_contain(ctx, 0, r, &index);
        fl_ref_release(r);
        if (rc != FL_OK || index != (size_t)i) return 51;
    }
    if (attempt == 1) return 7; /* an error: retried */
    int64_t v = attempt;
    return fl_task_return(ctx, &v, sizeof v);
}

static void test_retry_starts_empty(void) {
    fl_runtime rt = new_runtime(2);
    fl_ref box = NULL;
    void *bytes = NULL;
    CHECK_OK(fl_create(rt, 0, &bytes, &box));
    for (int64_t v = 10; v <= 11; v++) {
        fl_ref leaf = put_int(rt, v);
        CHECK_OK(fl_ref_contain(box, leaf, NULL));
        fl_ref_release(leaf);
    }
    CHECK_OK(fl_seal(box));
    fl_remote_options options;
    fl_remote_options_init(&options);
    options.max_retries = 1;
    options.retry_on_error = 1;
    attempts_made = 0;
    fl_arg arg = {NULL, 0, box};
    fl_ref r = NULL;
    CHECK_OK(fl_remote(rt, contain_then_fail_once, NULL, &arg, 1, &options, &r));
    CHECK(get_int(r) == 2);
    size_t count = 0;
    CHECK_OK(fl_ref_contained_count(r, &count));
    CHECK(count == 2);
    fl_ref first = contained(r, 0), second = contained(r, 1);
    CHECK(get_int(first) == 10 && get_int(second) == 11);
    fl_ref_release(first);
    fl_ref_release(second);
    fl_ref_release(r);
    fl_ref_release(box);
    CHECK(objects_reach(rt, 0));
    CHECK_OK(fl_runtime_shutdown(rt));
}

/* ---- a long chain (each box holding the one before) frees without deep recursion ---- */

static void test_long_chain(void) {
    fl_runtime rt = new_runtime(2);
    fl_ref head = put_int(rt, 0);
    long failures = 0;
    for (int i = 0; i < 200000; i++) {
        fl_ref box = NULL;
        void *bytes = NULL;
        failures += fl_create(rt, 0, &bytes, &box) != FL_OK;
        failures += fl_ref_contain(box, head, NULL) != FL_OK;
        failures += fl_seal(box) != FL_OK;
        fl_ref_release(head);
        head = box;
    }
    CHECK(failures == 0);
    CHECK(objects_now(rt) == 200001);
    CHECK_OK(fl_ref_release(head)); /* frees all 200,001 objects */
    CHECK(objects_reach(rt, 0));
    CHECK_OK(fl_runtime_shutdown(rt));
}

int main(void) {
    test_buffer_contains();
    test_nested_boxes();
    test_errors();
    test_tasks();
    test_cancelled_task();
    test_actor();
    test_isolated();
    test_cycles();
    test_retry_starts_empty();
    test_long_chain();
    return check_finish("remote_contained");
}
