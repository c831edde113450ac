/* Task groups: submit many, wait for all; failures; nesting; bad input. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"

#include <stdint.h>
#include <time.h>

static int add(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)len; (void)ctx;
    __atomic_fetch_add((int64_t *)user, *(const int64_t *)arg, __ATOMIC_SEQ_CST);
    return 0;
}

static int fail_odd(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)len;
    int64_t v = *(const int64_t *)arg;
    return v % 2 ? fl_task_fail(ctx, 13, "odd value") : 0;
}

static int slow(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)arg; (void)len; (void)ctx;
    struct timespec ts = {0, 200 * 1000000L};
    nanosleep(&ts, NULL);
    return 0;
}

static fl_group shared_group;

/* A tree of tasks, each submitting children to the same group. */
static int spawn_tree(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)len; (void)ctx;
    int64_t depth = *(const int64_t *)arg;
    __atomic_fetch_add((int64_t *)user, 1, __ATOMIC_SEQ_CST);
    if (depth == 0) return 0;
    int64_t child = depth - 1;
    for (int i = 0; i < 3; i++) {
        if (fl_group_submit(shared_group, spawn_tree, user, &child, sizeof child) != FL_OK) return 1;
    }
    return 0;
}

/* A task waiting on its own group's other tasks: the worker helps instead of deadlocking. */
static int wait_inner(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)arg; (void)len; (void)ctx;
    fl_group inner;
    fl_pool pool = (fl_pool)user;
    if (fl_group_create(pool, &inner) != FL_OK) return 1;
    int64_t sum = 0;
    for (int64_t i = 1; i <= 100; i++) fl_group_submit(inner, add, &sum, &i, sizeof i);
    int rc = fl_group_wait(inner, FL_FOREVER);
    fl_group_destroy(inner);
    return rc == FL_OK && sum == 5050 ? 0 : 2;
}

int main(void) {
    fl_pool_options o;
    fl_pool_options_init(&o);
    o.workers = 2;
    fl_pool pool;
    CHECK_OK(fl_pool_create(&o, &pool));

    fl_group g;
    CHECK_OK(fl_group_create(pool, &g));
    int64_t sum = 0;
    int refused = 0;
    for (int64_t i = 1; i <= 100000; i++) refused += fl_group_submit(g, add, &sum, &i, sizeof i) != FL_OK;
    CHECK(refused == 0);
    CHECK_OK(fl_group_wait(g, FL_FOREVER));
    CHECK(sum == (int64_t)100000 * 100001 / 2);
    CHECK_OK(fl_group_wait(g, 0)); /* nothing pending */

    /* Failures are reported once, by the next wait. */
    for (int64_t i = 0; i < 10; i++) CHECK_OK(fl_group_submit(g, fail_odd, NULL, &i, sizeof i));
    CHECK_RC(FL_ETASK, fl_group_wait(g, FL_FOREVER));
    CHECK(strstr(fl_last_error(), "5 task(s)") != NULL);
    CHECK(strstr(fl_last_error(), "odd value") != NULL);
    CHECK_OK(fl_group_wait(g, FL_FOREVER));

    /* Timeout, then completion. */
    CHECK_OK(fl_group_submit(g, slow, NULL, NULL, 0));
    CHECK_RC(FL_ETIMEDOUT, fl_group_wait(g, 0.01));
    CHECK_OK(fl_group_wait(g, 10.0));

    /* Tasks that submit to their own group. */
    shared_group = g;
    int64_t nodes = 0, depth = 6;
    CHECK_OK(fl_group_submit(g, spawn_tree, &nodes, &depth, sizeof depth));
    CHECK_OK(fl_group_wait(g, FL_FOREVER));
    CHECK(nodes == (729 * 3 - 1) / 2); /* 1 + 3 + ... + 3^6 */

    /* Waiting inside a task, with one worker busy elsewhere. */
    for (int i = 0; i < 4; i++) CHECK_OK(fl_group_submit(g, wait_inner, (void *)pool, NULL, 0));
    CHECK_OK(fl_group_wait(g, 30.0));

    /* Bad input. */
    fl_group bad = NULL;
    CHECK_RC(FL_EINVAL, fl_group_create(pool, NULL));
    CHECK_RC(FL_EHANDLE, fl_group_create(NULL, &bad));
    CHECK(bad == NULL);
    CHECK_RC(FL_EINVAL, fl_group_submit(g, NULL, NULL, NULL, 0));
    CHECK_RC(FL_EINVAL, fl_group_submit(g, add, NULL, NULL, 8));
    CHECK_RC(FL_EHANDLE, fl_group_submit(NULL, add, NULL, NULL, 0));
    CHECK_RC(FL_EHANDLE, fl_group_submit((fl_group)(void *)pool, add, NULL, NULL, 0));
    CHECK_RC(FL_EHANDLE, fl_group_wait(NULL, 0));
    CHECK_RC(FL_EINVAL, fl_group_wait(g, 0.0 / 0.0));

    CHECK_OK(fl_group_destroy(g));
    CHECK_RC(FL_EHANDLE, fl_group_destroy(g));
    CHECK_RC(FL_EHANDLE, fl_group_wait(g, 0));

    /* Terminate cancels queued group tasks: the wait reports them. */
    fl_group t;
    CHECK_OK(fl_group_create(pool, &t));
    for (int i = 0; i < 20; i++) CHECK_OK(fl_group_submit(t, slow, NULL, NULL, 0));
    CHECK_OK(fl_pool_terminate(pool));
    CHECK_RC(FL_ECANCELED, fl_group_wait(t, 30.0));
    CHECK_RC(FL_ESTATE, fl_group_submit(t, add, &sum, NULL, 0));
    CHECK_OK(fl_group_destroy(t));
    fl_group late;
    CHECK_RC(FL_ESTATE, fl_group_create(pool, &late));
    CHECK_OK(fl_pool_destroy(pool));
    return check_finish("test_group");
}
