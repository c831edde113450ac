/* Versions, status codes, options, pool creation and every kind of bad handle. */
#include "check.h"

#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static int init_fails(void *user, const void *args, size_t len) {
    (void)user; (void)args; (void)len;
    return 7;
}

static int noop(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)arg; (void)len; (void)ctx;
    return 0;
}

static int source_none(void *user, const void **data, size_t *len) {
    (void)user; (void)data; (void)len;
    return 0;
}

static int strided_noop(void *user, const void *in, ptrdiff_t is, void *out, ptrdiff_t os, size_t n) {
    (void)user; (void)in; (void)is; (void)out; (void)os; (void)n;
    return 0;
}

static void test_version_and_errors(void) {
    CHECK(fl_version_number() / 10000 == FL_VERSION_MAJOR);
    CHECK(fl_version_number() == FL_VERSION_NUMBER);
    CHECK(strcmp(fl_version(), "0.1.0") == 0);
    CHECK(strcmp(fl_strerror(FL_OK), "success") == 0);
    CHECK(strstr(fl_strerror(FL_EHANDLE), "handle") != NULL);
    CHECK(strcmp(fl_strerror(12345), "unknown status code") == 0);
    for (int code = FL_OK; code >= FL_ENOTSUP; code--) CHECK(strcmp(fl_strerror(code), "unknown status code") != 0);
    CHECK(fl_cpu_count() >= 1);
    CHECK(fl_last_error() != NULL);
}

static void test_options(void) {
    fl_pool_options o;
    CHECK_RC(FL_EINVAL, fl_pool_options_init(NULL));
    CHECK_OK(fl_pool_options_init(&o));
    CHECK(o.size == sizeof o);
    CHECK(o.workers == FL_WORKERS_DEFAULT);
    CHECK(o.initializer == NULL && o.name == NULL && o.initargs == NULL);

    fl_pool pool = (fl_pool)(uintptr_t)1;
    CHECK_RC(FL_EINVAL, fl_pool_create(NULL, NULL));

    o.workers = 0;
    CHECK_RC(FL_EINVAL, fl_pool_create(&o, &pool));
    CHECK(pool == NULL);
    CHECK(strstr(fl_last_error(), "workers") != NULL);
    o.workers = -5;
    CHECK_RC(FL_EINVAL, fl_pool_create(&o, &pool));
    o.workers = FL_WORKERS_MAX + 1;
    CHECK_RC(FL_EINVAL, fl_pool_create(&o, &pool));
    o.workers = 2;
    o.initargs = NULL;
    o.initargs_len = 8;
    CHECK_RC(FL_EINVAL, fl_pool_create(&o, &pool));

    fl_pool_options raw;
    memset(&raw, 0, sizeof raw);
    raw.workers = 2;
    CHECK_RC(FL_EINVAL, fl_pool_create(&raw, &pool));
    CHECK(strstr(fl_last_error(), "fl_pool_options_init") != NULL);

    CHECK_OK(fl_pool_options_init(&o));
    o.workers = 3;
    o.initializer = init_fails;
    CHECK_RC(FL_EINIT, fl_pool_create(&o, &pool));
    CHECK(pool == NULL);
    CHECK(strstr(fl_last_error(), "7") != NULL);
}

static void test_default_pool(void) {
    fl_pool pool = NULL;
    CHECK_OK(fl_pool_create(NULL, &pool));
    CHECK(pool != NULL);
    CHECK(fl_pool_workers(pool) == fl_cpu_count());
    CHECK_OK(fl_pool_apply(pool, noop, NULL, NULL, 0, NULL, 0, NULL));
    CHECK_OK(fl_pool_destroy(pool));
}

static void test_bad_handles(void) {
    fl_pool pool;
    fl_pool_options o;
    fl_pool_options_init(&o);
    o.workers = 1;
    CHECK_OK(fl_pool_create(&o, &pool));

    /* NULL, garbage, a real pointer, and a handle of another type. */
    int local = 0;
    fl_pool garbage = (fl_pool)(uintptr_t)0xdeadbeefcafeULL;
    fl_pool pointer = (fl_pool)(void *)&local;
    fl_pool huge_index = (fl_pool)(uintptr_t)0x4601000012345678ULL;
    fl_pool handles[] = {NULL, garbage, pointer, huge_index};
    for (size_t i = 0; i < sizeof handles / sizeof handles[0]; i++) {
        fl_pool h = handles[i];
        fl_result r = NULL;
        fl_iter it = NULL;
        CHECK_RC(FL_EHANDLE, fl_pool_workers(h));
        CHECK_RC(FL_EHANDLE, fl_pool_apply(h, noop, NULL, NULL, 0, NULL, 0, NULL));
        CHECK_RC(FL_EHANDLE, fl_pool_apply_async(h, noop, NULL, NULL, 0, NULL, NULL, NULL, &r));
        CHECK(r == NULL);
        CHECK_RC(FL_EHANDLE, fl_pool_map(h, noop, NULL, NULL, 0, 0, 0, &r));
        CHECK_RC(FL_EHANDLE, fl_pool_close(h));
        CHECK_RC(FL_EHANDLE, fl_pool_terminate(h));
        CHECK_RC(FL_EHANDLE, fl_pool_join(h, 0));
        CHECK_RC(FL_EHANDLE, fl_pool_destroy(h));
        fl_result hr = (fl_result)(void *)h;
        fl_iter hi = (fl_iter)(void *)h;
        fl_group hg = (fl_group)(void *)h;
        size_t count;
        const void *data;
        size_t len;
        int code;
        const char *message;
        CHECK_RC(FL_EHANDLE, fl_pool_starmap(h, noop, NULL, NULL, 0, 0, &r));
        CHECK_RC(FL_EHANDLE, fl_pool_map_async(h, noop, NULL, NULL, 0, 0, 0, NULL, NULL, NULL, &r));
        CHECK_RC(FL_EHANDLE, fl_pool_starmap_async(h, noop, NULL, NULL, 0, 0, NULL, NULL, NULL, &r));
        CHECK_RC(FL_EHANDLE, fl_pool_imap(h, noop, NULL, source_none, NULL, 1, 0, &it));
        CHECK_RC(FL_EHANDLE, fl_pool_imap_unordered(h, noop, NULL, source_none, NULL, 1, 0, &it));
        CHECK(it == NULL);
        CHECK_RC(FL_EHANDLE, fl_result_wait(hr, 0));
        CHECK_RC(FL_EHANDLE, fl_result_ready(hr));
        CHECK_RC(FL_EHANDLE, fl_result_successful(hr));
        CHECK_RC(FL_EHANDLE, fl_result_get(hr, 0, &data, &len));
        CHECK_RC(FL_EHANDLE, fl_result_count(hr, &count));
        CHECK_RC(FL_EHANDLE, fl_result_item(hr, 0, &data, &len));
        CHECK_RC(FL_EHANDLE, fl_result_error(hr, &code, &message));
        CHECK_RC(FL_EHANDLE, fl_result_item_error(hr, 0, &code, &message));
        CHECK_RC(FL_EHANDLE, fl_result_release(hr));
        CHECK_RC(FL_EHANDLE, fl_iter_next(hi, 0, &data, &len));
        CHECK_RC(FL_EHANDLE, fl_iter_error(hi, &code, &message));
        CHECK_RC(FL_EHANDLE, fl_iter_destroy(hi));
        CHECK_RC(FL_EHANDLE, fl_group_submit(hg, noop, NULL, NULL, 0));
        CHECK_RC(FL_EHANDLE, fl_group_wait(hg, 0));
        CHECK_RC(FL_EHANDLE, fl_group_destroy(hg));
        CHECK_RC(FL_EHANDLE, fl_pool_map_strided(h, strided_noop, NULL, NULL, 0, NULL, 0, 0, 0));
    }

    /* A pool handle used as a result handle and the other way round. */
    fl_result r;
    CHECK_OK(fl_pool_apply_async(pool, noop, NULL, NULL, 0, NULL, NULL, NULL, &r));
    CHECK_RC(FL_EHANDLE, fl_result_wait((fl_result)(void *)pool, 0));
    CHECK_RC(FL_EHANDLE, fl_pool_close((fl_pool)(void *)r));
    CHECK_OK(fl_result_wait(r, FL_FOREVER));
    CHECK_OK(fl_result_release(r));

    /* join before close, then the normal order, then a destroyed handle. */
    CHECK_RC(FL_ESTATE, fl_pool_join(pool, 0));
    CHECK(strstr(fl_last_error(), "close") != NULL);
    CHECK_OK(fl_pool_close(pool));
    CHECK_OK(fl_pool_close(pool)); /* idempotent */
    CHECK_RC(FL_ESTATE, fl_pool_apply(pool, noop, NULL, NULL, 0, NULL, 0, NULL));
    CHECK_RC(FL_ESTATE, fl_pool_apply_async(pool, noop, NULL, NULL, 0, NULL, NULL, NULL, &r));
    CHECK_OK(fl_pool_join(pool, FL_FOREVER));
    CHECK_OK(fl_pool_join(pool, FL_FOREVER)); /* joining again is harmless */
    CHECK_OK(fl_pool_destroy(pool));
    CHECK_RC(FL_EHANDLE, fl_pool_destroy(pool));
    CHECK_RC(FL_EHANDLE, fl_pool_workers(pool));
    CHECK_RC(FL_EHANDLE, fl_pool_apply(pool, noop, NULL, NULL, 0, NULL, 0, NULL));

    /* Handles are not reused: a new pool does not revive the old handle. */
    fl_pool again;
    CHECK_OK(fl_pool_create(&o, &again));
    CHECK(again != pool);
    CHECK_RC(FL_EHANDLE, fl_pool_workers(pool));
    CHECK(fl_pool_workers(again) == 1);
    CHECK_OK(fl_pool_destroy(again));
}

/* Asks for a result buffer of the size its argument names; returns what that call returned. */
static int ask_for_buffer(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)len;
    size_t size;
    memcpy(&size, arg, sizeof size);
    void *buffer = &size;
    int rc = fl_task_result_buffer(ctx, size, &buffer);
    if (rc == FL_OK) return fl_task_fail(ctx, 1, "the buffer was granted");
    if (buffer != NULL) return fl_task_fail(ctx, 2, "the buffer pointer was left set");
    return fl_task_return(ctx, &rc, sizeof rc);
}

static void test_bad_arguments(void) {
    fl_pool pool;
    fl_pool_options o;
    fl_pool_options_init(&o);
    o.workers = 2;
    CHECK_OK(fl_pool_create(&o, &pool));
    fl_result r = NULL;
    char buf[8];
    size_t len;
    CHECK_RC(FL_EINVAL, fl_pool_apply(pool, NULL, NULL, NULL, 0, NULL, 0, NULL));
    CHECK_RC(FL_EINVAL, fl_pool_apply(pool, noop, NULL, NULL, 4, NULL, 0, NULL));
    CHECK_RC(FL_EINVAL, fl_pool_apply(pool, noop, NULL, NULL, 0, NULL, 4, &len));
    CHECK_RC(FL_EINVAL, fl_pool_apply_async(pool, NULL, NULL, NULL, 0, NULL, NULL, NULL, &r));
    CHECK_RC(FL_EINVAL, fl_pool_apply_async(pool, noop, NULL, NULL, 3, NULL, NULL, NULL, &r));
    CHECK_RC(FL_EINVAL, fl_pool_map(pool, noop, NULL, NULL, 8, 10, 0, &r));
    CHECK_RC(FL_EINVAL, fl_pool_map(pool, noop, NULL, buf, 1, 8, 0, NULL));
    CHECK_RC(FL_EINVAL, fl_pool_map(pool, NULL, NULL, buf, 1, 8, 0, &r));
    CHECK_RC(FL_EINVAL, fl_pool_map(pool, noop, NULL, buf, SIZE_MAX / 2, 4, 0, &r));
    CHECK(strstr(fl_last_error(), "impossible") != NULL);
    /* Sizes are named as the unsigned numbers they are. */
    CHECK_RC(FL_EINVAL, fl_pool_map(pool, noop, NULL, buf, 8, SIZE_MAX, 0, &r));
    CHECK(strstr(fl_last_error(), "18446744073709551615 items of 8 bytes") != NULL);
    CHECK_RC(FL_EINVAL, fl_pool_map(pool, noop, NULL, buf, SIZE_MAX / 2 + 2, 2, 0, &r));
    CHECK(strstr(fl_last_error(), "2 items of 9223372036854775809 bytes") != NULL);
    /* A result buffer of 2^63 bytes or more is no memory, not a small buffer (the caller's
     * 16 bytes here). */
    const size_t sizes[] = {SIZE_MAX, (size_t)1 << 63, SIZE_MAX - 15};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char out[16];
        int answer = 0;
        len = 0;
        CHECK_OK(fl_pool_apply(pool, ask_for_buffer, NULL, &sizes[i], sizeof sizes[i], out, sizeof out, &len));
        memcpy(&answer, out, sizeof answer);
        CHECK(len == sizeof answer && answer == FL_ENOMEM);
    }
    CHECK_RC(FL_EINVAL, fl_pool_map_async(pool, noop, NULL, buf, 1, 8, 0, NULL, NULL, NULL, NULL));
    CHECK_RC(FL_EINVAL, fl_pool_starmap(pool, noop, NULL, NULL, 3, 0, &r));
    fl_blob bad = {NULL, 5};
    CHECK_RC(FL_EINVAL, fl_pool_starmap(pool, noop, NULL, &bad, 1, 0, &r));
    CHECK_RC(FL_EINVAL, fl_pool_map_strided(pool, NULL, NULL, buf, 1, buf, 1, 8, 0));
    CHECK_RC(FL_EINVAL, fl_pool_map_strided_async(pool, NULL, NULL, buf, 1, buf, 1, 8, 0, NULL, NULL, NULL, &r));
    CHECK_RC(FL_EINVAL, fl_pool_imap(pool, noop, NULL, NULL, NULL, 1, 0, (fl_iter *)&r));
    CHECK_RC(FL_EINVAL, fl_pool_join(pool, 0.0 / 0.0));
    CHECK(r == NULL);
    /* NULL out-parameters where they are required. */
    CHECK_OK(fl_pool_apply_async(pool, noop, NULL, NULL, 0, NULL, NULL, NULL, &r));
    CHECK_RC(FL_EINVAL, fl_result_count(r, NULL));
    CHECK_RC(FL_EINVAL, fl_result_wait(r, 0.0 / 0.0));
    CHECK_OK(fl_result_wait(r, FL_FOREVER));
    CHECK_OK(fl_result_get(r, 0, NULL, NULL)); /* data and len may be NULL */
    CHECK_OK(fl_result_error(r, NULL, NULL));
    CHECK_RC(FL_ERANGE, fl_result_item(r, SIZE_MAX, NULL, NULL));
    CHECK(strstr(fl_last_error(), "item 18446744073709551615 of") != NULL);
    CHECK_OK(fl_result_release(r));
    CHECK_RC(FL_EINVAL, fl_pool_imap(pool, noop, NULL, source_none, NULL, 1, 0, NULL));
    CHECK_RC(FL_EINVAL, fl_pool_imap_unordered(pool, NULL, NULL, source_none, NULL, 1, 0, (fl_iter *)&r));
    /* Functions for use inside a task fail outside one. */
    void *p;
    size_t index;
    CHECK_RC(FL_EHANDLE, fl_task_return(NULL, buf, 1));
    CHECK_RC(FL_EHANDLE, fl_task_result_buffer((fl_task_ctx)(void *)buf, 4, &p));
    CHECK_RC(FL_EHANDLE, fl_task_fail(NULL, 3, "x"));
    CHECK_RC(FL_EHANDLE, fl_task_index(NULL, &index));
    CHECK_RC(FL_EHANDLE, fl_task_cancelled(NULL));
    CHECK_OK(fl_pool_destroy(pool));
}

/* The child of a fork() made while a pool's threads run: only a started process's calls work
 * (the shared queue made before the fork does), every other call is FL_ENOTSUP, never a hang
 * on threads that are not there. Returns the child's failed checks (0 on success). */
static int forked_child_checks(fl_pool pool, fl_queue queue, int pools_alive) {
    int failed = 0;
    int64_t x = 3;
    int rc = fl_pool_apply(pool, noop, NULL, &x, sizeof x, NULL, 0, NULL);
    if (pools_alive) {
        failed += rc != FL_ENOTSUP || strstr(fl_last_error(), "fork()") == NULL;
        fl_pool fresh = NULL;
        failed += fl_pool_create(NULL, &fresh) != FL_ENOTSUP;
        fl_runtime rt = NULL;
        failed += fl_runtime_create(NULL, &rt) != FL_ENOTSUP;
        failed += fl_pool_destroy(pool) != FL_ENOTSUP;
    } else {
        /* No thread ran at the fork: the child is free to start its own. */
        fl_pool fresh = NULL;
        failed += fl_pool_create(NULL, &fresh) != FL_OK;
        failed += fl_pool_apply(fresh, noop, NULL, &x, sizeof x, NULL, 0, NULL) != FL_OK;
        failed += fl_pool_destroy(fresh) != FL_OK;
    }
    failed += fl_queue_put(queue, "from the child", 14, 5) != FL_OK;
    return failed;
}

static void test_fork_by_the_program(void) {
    fl_queue queue = NULL;
    CHECK_OK(fl_queue_create(0, 0, &queue));
    for (int pools_alive = 1; pools_alive >= 0; pools_alive--) {
        fl_pool pool = NULL;
        fl_pool_options o;
        CHECK_OK(fl_pool_options_init(&o));
        o.workers = 2;
        CHECK_OK(fl_pool_create(&o, &pool));
        if (!pools_alive) CHECK_OK(fl_pool_destroy(pool));
        pid_t child = fork();
        CHECK(child >= 0);
        if (child == 0) {
            alarm(30);
            _exit(forked_child_checks(pool, queue, pools_alive));
        }
        int status = 0;
        CHECK(waitpid(child, &status, 0) == child);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        char message[32];
        size_t len = 0;
        CHECK_OK(fl_queue_get(queue, message, sizeof message, &len, 5));
        CHECK(len == 14 && memcmp(message, "from the child", 14) == 0);
        if (pools_alive) {
            int64_t x = 3;
            CHECK_OK(fl_pool_apply(pool, noop, NULL, &x, sizeof x, NULL, 0, NULL)); /* the parent's goes on */
            CHECK_OK(fl_pool_destroy(pool));
        }
    }
    CHECK_OK(fl_queue_destroy(queue));
}

/* With the thread limit reached at each step of creation, fl_pool_create and
 * fl_runtime_create return (FL_ESYSTEM, or FL_OK once the limit allows them): creation used to
 * wait for a callback thread that never started. RLIMIT_NPROC binds only a user other than
 * root, so a child takes the nobody user; without root this is skipped. */
static void test_thread_limit(void) {
    if (geteuid() != 0) return;
    for (int limit = 1; limit <= 6; limit++) {
        for (int what = 0; what < 3; what++) {
            pid_t child = fork();
            CHECK(child >= 0);
            if (child == 0) {
                alarm(30);
                if (setgid(65534) != 0 || setuid(65534) != 0) _exit(3);
                struct rlimit rl = {(rlim_t)limit, (rlim_t)limit};
                if (setrlimit(RLIMIT_NPROC, &rl) != 0) _exit(3);
                int rc;
                if (what == 0) {
                    fl_pool pool = NULL;
                    rc = fl_pool_create(NULL, &pool);
                    if (rc == FL_OK) rc = fl_pool_destroy(pool);
                } else {
                    fl_runtime_options options;
                    fl_runtime_options_init(&options);
                    options.workers = 1;
                    options.process_workers = (size_t)(what - 1);
                    fl_runtime rt = NULL;
                    rc = fl_runtime_create(&options, &rt);
                    if (rc == FL_OK) rc = fl_runtime_shutdown(rt);
                }
                _exit(rc == FL_OK || rc == FL_ESYSTEM ? 0 : 4);
            }
            int status = 0;
            CHECK(waitpid(child, &status, 0) == child);
            CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        }
    }
}

int main(void) {
    test_fork_by_the_program();
    test_thread_limit(); /* first: no other test's threads may run at its second fork */
    test_version_and_errors();
    test_options();
    test_default_pool();
    test_bad_handles();
    test_bad_arguments();
    return check_finish("test_basics");
}
