/* The process backend of the Pool through the public C ABI: the same operations as the thread
 * backend, plus isolation — crashes, exits, kills and timeouts fail only the task that ran. */
#define _GNU_SOURCE
#include "check.h"
#include "children.h"

#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static fl_pool make_process_pool(int workers, double timeout, size_t max_tasks, int retries) {
    fl_pool_options o;
    fl_pool_options_init(&o);
    o.workers = workers;
    o.name = "proc";
    o.backend = FL_BACKEND_PROCESS;
    o.task_timeout = timeout;
    o.max_tasks_per_child = max_tasks;
    o.task_retries = retries;
    fl_pool pool = NULL;
    CHECK_OK(fl_pool_create(&o, &pool));
    return pool;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- tasks (they run in worker processes) ---- */

static int return_pid(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)arg; (void)len;
    int64_t pid = getpid();
    return fl_task_return(ctx, &pid, sizeof pid);
}

static int square(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user;
    if (len != sizeof(int64_t)) return fl_task_fail(ctx, 22, "expected one int64");
    int64_t x;
    memcpy(&x, arg, sizeof x);
    int64_t y = x * x;
    return fl_task_return(ctx, &y, sizeof y);
}

/* What the argument says: "ok", "fail", "segv", "abort", "exit", "kill", "sleep". */
static int behave(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user;
    char what[16] = {0};
    memcpy(what, arg, len < 15 ? len : 15);
    if (strcmp(what, "fail") == 0) return fl_task_fail(ctx, 42, "failed on purpose");
    if (strcmp(what, "segv") == 0) {
        volatile int *nowhere = NULL;
        *nowhere = 1;
    }
    if (strcmp(what, "abort") == 0) abort();
    if (strcmp(what, "exit") == 0) exit(3);
    if (strcmp(what, "kill") == 0) raise(SIGKILL);
    if (strcmp(what, "sleep") == 0) sleep(30);
    return fl_task_return(ctx, "fine", 4);
}

static int initialized_value;

static int initializer(void *user, const void *args, size_t len) {
    (void)user;
    if (len != sizeof(int)) return 5;
    memcpy(&initialized_value, args, sizeof(int));
    return initialized_value < 0 ? 9 : 0;
}

static int read_initialized(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)arg; (void)len;
    return fl_task_return(ctx, &initialized_value, sizeof initialized_value);
}

/* Checksums the argument and returns a result as large as it. */
static int echo_big(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user;
    void *out = NULL;
    int rc = fl_task_result_buffer(ctx, len, &out);
    if (rc != FL_OK) return rc;
    const unsigned char *in = arg;
    unsigned char *o = out;
    for (size_t i = 0; i < len; i++) o[i] = (unsigned char)(in[i] + 1);
    return 0;
}

static int nested_pool_call(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)arg; (void)len;
    fl_pool inner = NULL;
    int rc = fl_pool_create(NULL, &inner);
    size_t index = 99;
    int index_rc = fl_task_index(ctx, &index);
    int values[3] = {rc, index_rc, (int)index};
    return fl_task_return(ctx, values, sizeof values);
}

/* Crashes the first time (no marker file yet), succeeds when run again. */
static int crash_once(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user;
    char path[256] = {0};
    memcpy(path, arg, len < 255 ? len : 255);
    if (access(path, F_OK) != 0) {
        FILE *f = fopen(path, "w");
        if (f) fclose(f);
        raise(SIGSEGV);
    }
    return fl_task_return(ctx, "second", 6);
}

static int add_one(void *user, const void *in, ptrdiff_t in_stride, void *out, ptrdiff_t out_stride, size_t count) {
    (void)user;
    for (size_t i = 0; i < count; i++) {
        *(int64_t *)((char *)out + (ptrdiff_t)i * out_stride) = *(const int64_t *)((const char *)in + (ptrdiff_t)i * in_stride) + 1;
    }
    return 0;
}

/* Squares its argument after about 200 microseconds of work. */
static int slow_square(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    struct timespec pause = {0, 200 * 1000L};
    nanosleep(&pause, NULL);
    return square(user, arg, len, ctx);
}

static int noop(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)arg; (void)len; (void)ctx;
    return 0;
}

/* ---- tests ---- */

static void test_runs_in_other_processes(void) {
    fl_pool pool = make_process_pool(2, 0, 0, 0);
    int64_t pid = 0;
    size_t len = 0;
    CHECK_OK(fl_pool_apply(pool, return_pid, NULL, NULL, 0, &pid, sizeof pid, &len));
    CHECK(len == sizeof pid && pid > 0 && pid != getpid());
    pid_t children[16];
    CHECK(child_pids(children, 16) == 2);

    int64_t items[100];
    for (int i = 0; i < 100; i++) items[i] = i - 50;
    fl_result result = NULL;
    CHECK_OK(fl_pool_map(pool, square, NULL, items, sizeof items[0], 100, 7, &result));
    int ok = 1;
    for (size_t i = 0; i < 100; i++) {
        const void *data = NULL;
        size_t n = 0;
        ok &= fl_result_item(result, i, &data, &n) == FL_OK && n == 8 && *(const int64_t *)data == items[i] * items[i];
    }
    CHECK(ok);
    fl_result_release(result);

    fl_blob blobs[3] = {{"fail", 4}, {"ok", 2}, {"fail", 4}};
    CHECK_OK(fl_pool_starmap(pool, behave, NULL, blobs, 3, 1, &result));
    int code = 0;
    const char *message = NULL;
    CHECK_OK(fl_result_item_error(result, 0, &code, &message));
    CHECK(code == 42 && strstr(message, "failed on purpose") != NULL);
    const void *data = NULL;
    size_t n = 0;
    CHECK_OK(fl_result_item(result, 1, &data, &n));
    CHECK(n == 4 && memcmp(data, "fine", 4) == 0);
    fl_result_release(result);

    int64_t cells[4] = {1, 2, 3, 4};
    CHECK_RC(FL_ENOTSUP, fl_pool_map_strided(pool, add_one, NULL, cells, 8, cells, 8, 4, 0));
    int values[3] = {0, 0, 0};
    CHECK_OK(fl_pool_apply(pool, nested_pool_call, NULL, NULL, 0, values, sizeof values, NULL));
    CHECK(values[0] == FL_ENOTSUP && values[1] == FL_OK && values[2] == 0);

    CHECK_OK(fl_pool_close(pool));
    CHECK_OK(fl_pool_join(pool, FL_FOREVER));
    CHECK(child_pids(children, 16) == 0);
    CHECK_OK(fl_pool_destroy(pool));
}

static void test_crashes_fail_only_their_task(void) {
    fl_pool pool = make_process_pool(2, 0, 0, 0);
    struct { const char *arg; int status; int code; const char *words; } cases[] = {
        {"segv", FL_EWORKER, -SIGSEGV, "SIGSEGV"},
        {"abort", FL_EWORKER, -SIGABRT, "SIGABRT"},
        {"exit", FL_EWORKER, 3, "exited with status 3"},
        {"kill", FL_EWORKER, -SIGKILL, "SIGKILL"},
        {"fail", FL_ETASK, 42, "failed on purpose"},
        {"ok", FL_OK, 0, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fl_result result = NULL;
        CHECK_OK(fl_pool_apply_async(pool, behave, NULL, cases[i].arg, strlen(cases[i].arg), NULL, NULL, NULL, &result));
        CHECK_RC(cases[i].status, fl_result_get(result, 30, NULL, NULL));
        int code = 0;
        const char *message = NULL;
        fl_result_error(result, &code, &message);
        if (cases[i].status != FL_OK) {
            CHECK(code == cases[i].code);
            CHECK(message != NULL && strstr(message, cases[i].words) != NULL);
            if (message && cases[i].status == FL_EWORKER) CHECK(strstr(message, "worker process") != NULL);
        }
        fl_result_release(result);
    }
    /* Synchronous apply reports the same, and the pool still works after all those deaths. */
    CHECK_RC(FL_EWORKER, fl_pool_apply(pool, behave, NULL, "segv", 4, NULL, 0, NULL));
    CHECK(strstr(fl_last_error(), "SIGSEGV") != NULL);
    int64_t x = 12, y = 0;
    CHECK_OK(fl_pool_apply(pool, square, NULL, &x, sizeof x, &y, sizeof y, NULL));
    CHECK(y == 144);
    CHECK_OK(fl_pool_destroy(pool));
    pid_t children[4];
    CHECK(child_pids(children, 4) == 0);
}

/* A worker killed while idle costs no task: the next task goes to a fresh worker. */
static void test_idle_death_costs_nothing(void) {
    fl_pool pool = make_process_pool(1, 0, 0, 0);
    int64_t pid = 0, next = 0;
    CHECK_OK(fl_pool_apply(pool, return_pid, NULL, NULL, 0, &pid, sizeof pid, NULL));
    CHECK(kill((pid_t)pid, SIGKILL) == 0);
    struct timespec pause = {0, 100 * 1000000L};
    nanosleep(&pause, NULL);
    CHECK_OK(fl_pool_apply(pool, return_pid, NULL, NULL, 0, &next, sizeof next, NULL));
    CHECK(next > 0 && next != pid);
    CHECK_OK(fl_pool_destroy(pool));
}

/* A worker's own eventfds (see close_descriptors). */
static int task_eventfds[64];

/* Closes every descriptor from 3 up, as daemonizing code does, then opens the file `arg`
 * names 64 times (so those numbers are taken by a regular file), or 64 eventfds of its own
 * if `arg` is "eventfd", then returns its pid. */
static int close_descriptors(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user;
    for (int fd = 3; fd < 1024; fd++) close(fd);
    char path[128] = {0};
    memcpy(path, arg, len < sizeof path - 1 ? len : sizeof path - 1);
    for (int i = 0; i < 64; i++) {
        int fd = strcmp(path, "eventfd") == 0 ? (task_eventfds[i] = eventfd(0, EFD_NONBLOCK))
                                               : open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd < 0) return 1;
    }
    int64_t pid = getpid();
    return fl_task_return(ctx, &pid, sizeof pid);
}

/* In the worker after close_descriptors("eventfd"): what its eventfds have counted. */
static int count_task_eventfds(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)arg; (void)len;
    int64_t total = 0;
    for (int i = 0; i < 64; i++) {
        uint64_t value = 0;
        if (read(task_eventfds[i], &value, sizeof value) == (ssize_t)sizeof value) total += (int64_t)value;
    }
    return fl_task_return(ctx, &total, sizeof total);
}

static void test_a_task_closing_descriptors(void) {
    /* The worker can no longer wake its waiting proxy through a descriptor, yet the answer
     * arrives (the proxy looks at the mailbox often from then on), and the worker goes on;
     * the file now under the old descriptor numbers gets nothing written to it. */
    fl_pool pool = make_process_pool(1, 0, 0, 0);
    fl_result result = NULL;
    int64_t pid = 0, again = 0;
    size_t len = 0;
    const void *data = NULL;
    char path[64];
    snprintf(path, sizeof path, "/tmp/forklift-fds-%d", (int)getpid());
    unlink(path);
    CHECK_OK(fl_pool_apply_async(pool, close_descriptors, NULL, path, strlen(path), NULL, NULL, NULL, &result));
    CHECK_OK(fl_result_get(result, 10, &data, &len));
    if (len == sizeof pid) memcpy(&pid, data, sizeof pid);
    CHECK(pid > 0 && pid != getpid());
    CHECK_OK(fl_result_release(result));
    for (int i = 0; i < 3; i++) {
        CHECK_OK(fl_pool_apply_async(pool, return_pid, NULL, NULL, 0, NULL, NULL, NULL, &result));
        CHECK_OK(fl_result_get(result, 10, &data, &len));
        if (len == sizeof again) memcpy(&again, data, sizeof again);
        CHECK(again == pid); /* the same process */
        CHECK_OK(fl_result_release(result));
    }
    CHECK_OK(fl_pool_destroy(pool));
    struct stat st;
    CHECK(stat(path, &st) == 0 && st.st_size == 0);
    unlink(path);
    /* The same with the task's own eventfds in their place: none of them counts a wake-up. */
    pool = make_process_pool(1, 0, 0, 0);
    CHECK_OK(fl_pool_apply_async(pool, close_descriptors, NULL, "eventfd", 7, NULL, NULL, NULL, &result));
    CHECK_OK(fl_result_get(result, 10, &data, &len));
    CHECK_OK(fl_result_release(result));
    for (int i = 0; i < 3; i++) {
        int64_t counted = -1;
        CHECK_OK(fl_pool_apply_async(pool, count_task_eventfds, NULL, NULL, 0, NULL, NULL, NULL, &result));
        CHECK_OK(fl_result_get(result, 10, &data, &len));
        if (len == sizeof counted) memcpy(&counted, data, sizeof counted);
        CHECK(counted == 0);
        CHECK_OK(fl_result_release(result));
    }
    CHECK_OK(fl_pool_destroy(pool));
}

static void test_timeout_kills_and_replaces(void) {
    fl_pool pool = make_process_pool(1, 0.3, 0, 0);
    double start = now_s();
    CHECK_RC(FL_EWORKER, fl_pool_apply(pool, behave, NULL, "sleep", 5, NULL, 0, NULL));
    double took = now_s() - start;
    CHECK(took < 10); /* generous: the machine may be loaded; the task itself sleeps 30 s */
    CHECK(strstr(fl_last_error(), "task timeout") != NULL);
    char out[8] = {0};
    CHECK_OK(fl_pool_apply(pool, behave, NULL, "ok", 2, out, sizeof out, NULL));
    CHECK(memcmp(out, "fine", 4) == 0);
    CHECK_OK(fl_pool_destroy(pool));
}

static void test_max_tasks_per_child(void) {
    fl_pool pool = make_process_pool(1, 0, 2, 0);
    int64_t pids[6];
    for (int i = 0; i < 6; i++) CHECK_OK(fl_pool_apply(pool, return_pid, NULL, NULL, 0, &pids[i], 8, NULL));
    CHECK(pids[0] == pids[1] && pids[2] == pids[3] && pids[4] == pids[5]);
    CHECK(pids[1] != pids[2] && pids[3] != pids[4] && pids[0] != pids[4]);
    CHECK_OK(fl_pool_destroy(pool));
}

static void test_initializer_in_each_process(void) {
    fl_pool_options o;
    fl_pool_options_init(&o);
    o.workers = 2;
    o.backend = FL_BACKEND_PROCESS;
    o.initializer = initializer;
    int value = 77;
    o.initargs = &value;
    o.initargs_len = sizeof value;
    o.max_tasks_per_child = 1; /* every task sees a freshly initialized process */
    fl_pool pool = NULL;
    CHECK_OK(fl_pool_create(&o, &pool));
    for (int i = 0; i < 4; i++) {
        int seen = 0;
        CHECK_OK(fl_pool_apply(pool, read_initialized, NULL, NULL, 0, &seen, sizeof seen, NULL));
        CHECK(seen == 77);
    }
    CHECK(initialized_value == 0); /* the parent never ran it */
    CHECK_OK(fl_pool_destroy(pool));

    value = -1;
    CHECK_RC(FL_EINIT, fl_pool_create(&o, &pool));
    pid_t children[4];
    CHECK(child_pids(children, 4) == 0);
}

static void test_retries_after_a_death(void) {
    char path[128];
    snprintf(path, sizeof path, "/tmp/forklift-crash-once-%d", (int)getpid());
    unlink(path);
    fl_pool pool = make_process_pool(1, 0, 0, 1);
    char out[8] = {0};
    CHECK_OK(fl_pool_apply(pool, crash_once, NULL, path, strlen(path), out, sizeof out, NULL));
    CHECK(memcmp(out, "second", 6) == 0);
    CHECK_OK(fl_pool_destroy(pool));
    unlink(path);

    /* Without retries the same task fails with the death. */
    pool = make_process_pool(1, 0, 0, 0);
    CHECK_RC(FL_EWORKER, fl_pool_apply(pool, crash_once, NULL, path, strlen(path), NULL, 0, NULL));
    CHECK_OK(fl_pool_apply(pool, crash_once, NULL, path, strlen(path), out, sizeof out, NULL));
    CHECK_OK(fl_pool_destroy(pool));
    unlink(path);
}

/* Appends its pid to the file the argument names, then dies. */
static int log_and_die(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)ctx;
    char path[128] = {0};
    memcpy(path, arg, len < sizeof path - 1 ? len : sizeof path - 1);
    FILE *f = fopen(path, "a");
    if (f) {
        fprintf(f, "%d\n", (int)getpid());
        fclose(f);
    }
    raise(SIGKILL);
    return 0;
}

static int lines_in(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int lines = 0, c;
    while ((c = fgetc(f)) != EOF) lines += c == '\n';
    fclose(f);
    return lines;
}

/* A task that always kills its worker runs task_retries + 1 times, whether the caller ran it
 * on a borrowed worker (fl_pool_apply) or it was queued (apply_async), and the failure names
 * every run; terminate ends the retries of a task that keeps dying, and destroy returns. */
static void test_retries_are_counted(void) {
    char path[128];
    snprintf(path, sizeof path, "/tmp/forklift-retries-%d", (int)getpid());
    for (int retries = 0; retries <= 2; retries++) {
        for (int queued = 0; queued <= 1; queued++) {
            unlink(path);
            fl_pool pool = make_process_pool(2, 0, 0, retries);
            if (queued) {
                fl_result r = NULL;
                CHECK_OK(fl_pool_apply_async(pool, log_and_die, NULL, path, strlen(path), NULL, NULL, NULL, &r));
                CHECK_RC(FL_EWORKER, fl_result_get(r, 60, NULL, NULL));
                CHECK_OK(fl_result_release(r));
            } else {
                CHECK_RC(FL_EWORKER, fl_pool_apply(pool, log_and_die, NULL, path, strlen(path), NULL, 0, NULL));
                if (retries > 0) {
                    char times[32];
                    snprintf(times, sizeof times, "run %d times", retries + 1);
                    CHECK(strstr(fl_last_error(), times) != NULL);
                }
            }
            CHECK(lines_in(path) == retries + 1);
            CHECK_OK(fl_pool_destroy(pool));
        }
    }
    unlink(path);
    fl_pool pool = make_process_pool(1, 0, 0, 1000000);
    fl_result r = NULL;
    CHECK_OK(fl_pool_apply_async(pool, behave, NULL, "kill", 4, NULL, NULL, NULL, &r));
    struct timespec pause = {0, 300 * 1000000L};
    nanosleep(&pause, NULL);
    CHECK_OK(fl_pool_terminate(pool));
    CHECK_OK(fl_pool_join(pool, 30));
    CHECK_RC(FL_ECANCELED, fl_result_get(r, 30, NULL, NULL));
    CHECK(strstr(fl_last_error(), "terminated") != NULL);
    CHECK_OK(fl_result_release(r));
    CHECK_OK(fl_pool_destroy(pool));
}

/* An int64 source of 0..n-1. */
typedef struct {
    int64_t next, count, value;
} counting_source;

static int count_up(void *user, const void **data, size_t *len) {
    counting_source *source = user;
    if (source->next >= source->count) return 0;
    source->value = source->next++;
    *data = &source->value;
    *len = sizeof source->value;
    return 1;
}

/* Item 1 sleeps past the task timeout; the others echo. */
static int echo_but_one_sleeps(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user;
    int64_t x = 0;
    if (len == sizeof x) memcpy(&x, arg, sizeof x);
    if (x == 1) sleep(30);
    return fl_task_return(ctx, &x, sizeof x);
}

/* An imap item that exceeded the task timeout is a worker failure (FL_EWORKER), which
 * fl_iter_next tells apart from its own wait running out (FL_ETIMEDOUT, iterator unchanged). */
static void test_task_timeout_in_imap(void) {
    fl_pool pool = make_process_pool(1, 0.3, 0, 0);
    counting_source source = {0, 3, 0};
    fl_iter it = NULL;
    CHECK_OK(fl_pool_imap(pool, echo_but_one_sleeps, NULL, count_up, &source, 1, 0, &it));
    const void *data = NULL;
    size_t len = 0;
    CHECK_OK(fl_iter_next(it, 30, &data, &len));
    CHECK(len == 8 && *(const int64_t *)data == 0);
    CHECK_RC(FL_EWORKER, fl_iter_next(it, 30, &data, &len));
    int code = 0;
    const char *message = NULL;
    CHECK_OK(fl_iter_error(it, &code, &message));
    CHECK(code == -SIGKILL && message && strstr(message, "task timeout"));
    CHECK_OK(fl_iter_next(it, 30, &data, &len));
    CHECK(len == 8 && *(const int64_t *)data == 2);
    CHECK_RC(FL_EDONE, fl_iter_next(it, 30, &data, &len));
    CHECK_OK(fl_iter_destroy(it));
    CHECK_OK(fl_pool_destroy(pool));
}

/* fl_task_return refuses an impossible length in a worker process as on a thread. */
static int return_impossible(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)arg; (void)len;
    int rc = fl_task_return(ctx, "x", (size_t)1 << 63);
    int null_rc = fl_task_return(ctx, NULL, 4);
    int64_t both[2] = {rc, null_rc};
    return fl_task_return(ctx, both, sizeof both);
}

static void test_impossible_result_length(void) {
    for (int backend = 0; backend <= 1; backend++) {
        fl_pool pool = backend ? make_process_pool(1, 0, 0, 0) : NULL;
        if (!backend) {
            fl_pool_options o;
            fl_pool_options_init(&o);
            o.workers = 1;
            CHECK_OK(fl_pool_create(&o, &pool));
        }
        int64_t both[2] = {0, 0};
        CHECK_OK(fl_pool_apply(pool, return_impossible, NULL, NULL, 0, both, sizeof both, NULL));
        CHECK(both[0] == FL_EINVAL);
        CHECK(both[1] == FL_EINVAL);
        CHECK_OK(fl_pool_destroy(pool));
    }
}

static void test_large_arguments_and_results(void) {
    fl_pool pool = make_process_pool(2, 0, 0, 0);
    size_t sizes[] = {0, 1, 1 << 20, (1 << 20) + 1, 5u << 20};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t n = sizes[k];
        unsigned char *in = malloc(n + 1), *out = malloc(n + 1);
        for (size_t i = 0; i < n; i++) in[i] = (unsigned char)(i * 7 + k);
        size_t got = 0;
        CHECK_OK(fl_pool_apply(pool, echo_big, NULL, in, n, out, n + 1, &got));
        CHECK(got == n);
        int same = 1;
        for (size_t i = 0; i < n; i++) same &= out[i] == (unsigned char)(in[i] + 1);
        CHECK(same);
        free(in);
        free(out);
    }
    CHECK_OK(fl_pool_destroy(pool));
}

/* Sums the bytes of its argument, and says how many there were; dies by SIGKILL when the
 * argument starts with 'k'. */
static int sum_or_die(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user;
    const unsigned char *in = arg;
    if (len > 0 && in[0] == 'k') raise(SIGKILL);
    uint64_t answer[2] = {0, len};
    for (size_t i = 0; i < len; i++) answer[0] += in[i];
    return fl_task_return(ctx, answer, sizeof answer);
}

/* A buffer of `n` bytes of pattern `k`, and the sum of its bytes. */
static unsigned char *pattern(size_t n, unsigned k, uint64_t *sum) {
    unsigned char *p = malloc(n);
    *sum = 0;
    for (size_t i = 0; i < n; i++) {
        p[i] = (unsigned char)(i * (k + 3) + k + (i >> 12));
        *sum += p[i];
    }
    if (n > 0 && p[0] == 'k') { /* never die by accident */
        *sum -= p[0];
        p[0] = 'j';
        *sum += p[0];
    }
    return p;
}

/* How many of this process's descriptors are argument files a pool made ("forklift-argument"). */
static int argument_files(void) {
    int n = 0;
    for (int fd = 0; fd < 4096; fd++) {
        char path[64], target[256];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t len = readlink(path, target, sizeof target - 1);
        if (len <= 0) continue;
        target[len] = 0;
        n += strstr(target, "forklift-argument") != NULL;
    }
    return n;
}

static int count_argument_files(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)arg; (void)len;
    int64_t n = argument_files();
    return fl_task_return(ctx, &n, sizeof n);
}

static int open_descriptors(void) {
    int n = 0;
    for (int fd = 0; fd < 4096; fd++) n += fcntl(fd, F_GETFD) != -1;
    return n;
}

/* Large arguments (beyond a mailbox slot) in turn on one worker: shorter after longer (the
 * worker sees exactly its own bytes), longer after shorter, one past the size a worker keeps
 * for reuse, one whose worker dies holding it, and several in flight at once. Every worker
 * descriptor is gone after the pool. */
static void test_large_arguments_in_turn(void) {
    int before = open_descriptors();
    fl_pool pool = make_process_pool(1, 0, 0, 0);
    size_t sizes[] = {3u << 20, (3u << 19) + 5, 5u << 20, 2u << 20, 65u << 20, (1u << 20) + 3, 4u << 20};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        uint64_t sum = 0, answer[2] = {0, 0};
        unsigned char *in = pattern(sizes[k], (unsigned)k, &sum);
        CHECK_OK(fl_pool_apply(pool, sum_or_die, NULL, in, sizes[k], answer, sizeof answer, NULL));
        CHECK(answer[0] == sum && answer[1] == sizes[k]);
        free(in);
    }
    /* The worker dies with a large argument; the next one is whole in the new worker. */
    uint64_t sum = 0, answer[2] = {0, 0};
    unsigned char *in = pattern(2u << 20, 9, &sum);
    in[0] = 'k';
    CHECK_RC(FL_EWORKER, fl_pool_apply(pool, sum_or_die, NULL, in, 2u << 20, answer, sizeof answer, NULL));
    free(in);
    in = pattern((2u << 20) + 11, 10, &sum);
    CHECK_OK(fl_pool_apply(pool, sum_or_die, NULL, in, (2u << 20) + 11, answer, sizeof answer, NULL));
    CHECK(answer[0] == sum && answer[1] == (2u << 20) + 11);
    free(in);
    /* Several in flight on the one worker (pipelined), each with its own bytes. */
    enum { COUNT = 12 };
    unsigned char *ins[COUNT];
    uint64_t sums[COUNT];
    fl_result results[COUNT];
    for (int i = 0; i < COUNT; i++) {
        size_t n = (1u << 20) + (size_t)i * 40000;
        ins[i] = pattern(n, (unsigned)(20 + i), &sums[i]);
        CHECK_OK(fl_pool_apply_async(pool, sum_or_die, NULL, ins[i], n, NULL, NULL, NULL, &results[i]));
    }
    for (int i = 0; i < COUNT; i++) {
        const void *data = NULL;
        size_t len = 0;
        CHECK_OK(fl_result_get(results[i], 60, &data, &len));
        CHECK(len == sizeof answer);
        if (len == sizeof answer) {
            memcpy(answer, data, sizeof answer);
            CHECK(answer[0] == sums[i] && answer[1] == (1u << 20) + (size_t)i * 40000);
        }
        fl_result_release(results[i]);
        free(ins[i]);
    }
    /* The pool keeps one argument file; a process forked now does not hold it open, nor does a
     * worker of another pool. */
    CHECK(argument_files() == 1);
    fl_process child = NULL;
    CHECK_OK(fl_process_start(count_argument_files, NULL, NULL, 0, NULL, &child));
    CHECK_OK(fl_process_join(child, 30));
    int64_t held = -1;
    size_t held_len = 0;
    CHECK_OK(fl_process_result(child, &held, sizeof held, &held_len));
    CHECK(held_len == sizeof held && held == 0);
    CHECK_OK(fl_process_destroy(child));
    fl_pool other = make_process_pool(1, 0, 0, 0);
    held = -1;
    CHECK_OK(fl_pool_apply(other, count_argument_files, NULL, NULL, 0, &held, sizeof held, NULL));
    CHECK(held == 0);
    CHECK_OK(fl_pool_destroy(other));
    CHECK_OK(fl_pool_destroy(pool));
    CHECK(argument_files() == 0);
    CHECK(open_descriptors() == before);
}

static void test_typed_calls(void) {
    fl_pool pool = make_process_pool(2, 0, 0, 0);
    fl_signature sig = NULL;
    CHECK_OK(fl_signature_create("double(double, double)", &sig));
    double args[2] = {2.0, 10.0}, out = 0;
    CHECK_OK(fl_pool_apply_typed(pool, sig, (fl_fn)pow, args, &out));
    CHECK(out == 1024.0);
    double tuples[8][2];
    double results[8];
    for (int i = 0; i < 8; i++) {
        tuples[i][0] = i;
        tuples[i][1] = 2;
    }
    CHECK_OK(fl_pool_starmap_typed(pool, sig, (fl_fn)pow, tuples, 8, results, 3));
    int ok = 1;
    for (int i = 0; i < 8; i++) ok &= results[i] == (double)(i * i);
    CHECK(ok);
    fl_signature_destroy(sig);
    CHECK_OK(fl_pool_destroy(pool));
}

static void test_terminate_kills_running_tasks(void) {
    fl_pool pool = make_process_pool(2, 0, 0, 0);
    fl_result running[2], queued;
    for (int i = 0; i < 2; i++) CHECK_OK(fl_pool_apply_async(pool, behave, NULL, "sleep", 5, NULL, NULL, NULL, &running[i]));
    CHECK_OK(fl_pool_apply_async(pool, behave, NULL, "ok", 2, NULL, NULL, NULL, &queued));
    struct timespec pause = {0, 200 * 1000000L};
    nanosleep(&pause, NULL);
    double start = now_s();
    CHECK_OK(fl_pool_terminate(pool));
    CHECK_OK(fl_pool_join(pool, 20));
    CHECK(now_s() - start < 10);
    for (int i = 0; i < 2; i++) {
        CHECK_RC(FL_ECANCELED, fl_result_get(running[i], 0, NULL, NULL));
        fl_result_release(running[i]);
    }
    CHECK_RC(FL_ECANCELED, fl_result_get(queued, 0, NULL, NULL));
    fl_result_release(queued);
    pid_t children[4];
    CHECK(child_pids(children, 4) == 0);
    CHECK_OK(fl_pool_destroy(pool));
}

/* ---- crash safety under load: SIGKILL random workers while thousands of tasks are in flight ---- */

typedef struct {
    volatile int stop;
    int kills;
} killer_state;

static void *killer(void *raw) {
    killer_state *state = raw;
    unsigned seed = 12345;
    while (!state->stop && state->kills < 40) {
        struct timespec pause = {0, 10 * 1000000L};
        nanosleep(&pause, NULL);
        pid_t children[16];
        int n = child_pids(children, 16);
        if (n <= 0) continue;
        if (n > 16) n = 16;
        seed = seed * 1103515245u + 12345u;
        if (kill(children[(seed >> 16) % (unsigned)n], SIGKILL) == 0) state->kills++;
    }
    return NULL;
}

static void test_killing_workers_under_load(void) {
    enum { TASKS = 4000 };
    fl_pool pool = make_process_pool(2, 0, 0, 0);
    static fl_result results[TASKS];
    killer_state state = {0, 0};
    pthread_t thread;
    double start = now_s();
    pthread_create(&thread, NULL, killer, &state);
    for (int i = 0; i < TASKS; i++) {
        int64_t x = i;
        CHECK_OK(fl_pool_apply_async(pool, slow_square, NULL, &x, sizeof x, NULL, NULL, NULL, &results[i]));
    }
    int done = 0, died = 0, wrong = 0, other = 0, hung = 0;
    for (int i = 0; i < TASKS; i++) {
        const void *data = NULL;
        size_t len = 0;
        int rc = fl_result_get(results[i], 60, &data, &len);
        if (rc == FL_OK) {
            if (len == 8 && *(const int64_t *)data == (int64_t)i * i) done++;
            else wrong++;
        } else if (rc == FL_EWORKER) {
            int code = 0;
            const char *message = NULL;
            fl_result_error(results[i], &code, &message);
            if (code == -SIGKILL && strstr(message, "SIGKILL")) died++;
            else other++;
        } else if (rc == FL_ETIMEDOUT) {
            hung++;
        } else {
            other++;
        }
        fl_result_release(results[i]);
    }
    state.stop = 1;
    pthread_join(thread, NULL);
    double took = now_s() - start;
    CHECK(done + died == TASKS);
    CHECK(wrong == 0 && other == 0 && hung == 0);
    CHECK(state.kills > 0);
    /* A kill fails the task the worker was running, or none if it was idle. */
    CHECK(died <= state.kills);
    printf("crash safety: %d tasks in flight, %d workers killed, %d tasks failed with FL_EWORKER, "
           "%d done, 0 lost, %d hung, %.2f s\n", TASKS, state.kills, died, done, hung, took);
    /* The pool is still whole. */
    for (int i = 0; i < 50; i++) CHECK_OK(fl_pool_apply(pool, noop, NULL, NULL, 0, NULL, 0, NULL));
    CHECK_OK(fl_pool_destroy(pool));
    pid_t children[4];
    CHECK(child_pids(children, 4) == 0);
}

static void test_options(void) {
    fl_pool_options o;
    fl_pool_options_init(&o);
    CHECK(o.backend == FL_BACKEND_THREAD && o.task_timeout == 0 && o.max_tasks_per_child == 0 && o.task_retries == 0);
    fl_pool pool = NULL;
    o.backend = 7;
    CHECK_RC(FL_EINVAL, fl_pool_create(&o, &pool));
    o.backend = FL_BACKEND_THREAD;
    o.task_timeout = 1;
    CHECK_RC(FL_EINVAL, fl_pool_create(&o, &pool)); /* process-only option on a thread pool */
    o.backend = FL_BACKEND_PROCESS;
    o.task_retries = -1;
    CHECK_RC(FL_EINVAL, fl_pool_create(&o, &pool));
    CHECK(pool == NULL);
}

/* ---- pipelining: several requests in flight to one worker process ---- */

/* Shared with the workers (mapped before the pools fork them): crash-once flags. */
static fl_shm pipeline_flags;

/* Lets tasks queue up: the pool's single worker is not ready before they are all submitted. */
static int slow_start(void *user, const void *args, size_t len) {
    (void)user; (void)args; (void)len;
    struct timespec pause = {0, 100 * 1000000L};
    nanosleep(&pause, NULL);
    return 0;
}

/* arg: {i, mode}. Mode 0: a 300 KiB result (larger than a mailbox slot) of byte i and the pid
 * in front; 1: SIGKILL; 2: sleep 30 s; 3: SIGKILL the first time (flag i in shared memory). */
static int pipelined_item(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)len;
    int64_t in[2];
    memcpy(in, arg, sizeof in);
    if (in[1] == 1) raise(SIGKILL);
    if (in[1] == 2) sleep(30);
    if (in[1] == 3) {
        unsigned char *flags = NULL;
        fl_shm_data(pipeline_flags, (void **)&flags, NULL);
        if (__atomic_exchange_n(&flags[in[0]], 1, __ATOMIC_SEQ_CST) == 0) raise(SIGKILL);
    }
    size_t n = 300u << 10;
    unsigned char *out = NULL;
    if (fl_task_result_buffer(ctx, n, (void **)&out) != FL_OK) return 5;
    memset(out, (int)(in[0] & 0xff), n);
    int64_t pid = getpid();
    memcpy(out, &pid, sizeof pid);
    return 0;
}

/* Submits `count` items to a one-worker pool whose worker starts late, so they are all queued
 * and go to the worker process in one pipeline; item `special` gets `mode`. Checks every
 * other item's result and returns the special item's status; `pids` gets each item's pid. */
static int run_pipeline(double timeout, int retries, int count, int special, int mode, int64_t *pids) {
    fl_pool_options o;
    fl_pool_options_init(&o);
    o.workers = 1;
    o.backend = FL_BACKEND_PROCESS;
    o.task_timeout = timeout;
    o.task_retries = retries;
    o.initializer = slow_start;
    fl_pool pool = NULL;
    CHECK_OK(fl_pool_create(&o, &pool));
    fl_result results[64];
    for (int i = 0; i < count; i++) {
        int64_t arg[2] = {i, i == special ? mode : 0};
        CHECK_OK(fl_pool_apply_async(pool, pipelined_item, NULL, arg, sizeof arg, NULL, NULL, NULL, &results[i]));
    }
    int special_status = FL_OK, right = 1;
    for (int i = 0; i < count; i++) {
        const void *data = NULL;
        size_t n = 0;
        int rc = fl_result_get(results[i], 60, &data, &n);
        if (i == special) {
            special_status = rc;
            if (rc == FL_OK && n == (300u << 10)) memcpy(&pids[i], data, sizeof pids[i]);
        } else if (rc != FL_OK || n != (300u << 10) || ((const unsigned char *)data)[n - 1] != (unsigned char)i) {
            right = 0;
            fprintf(stderr, "  item %d: %s\n", i, rc == FL_OK ? "wrong result" : fl_last_error());
        } else {
            memcpy(&pids[i], data, sizeof pids[i]);
        }
        fl_result_release(results[i]);
    }
    CHECK(right);
    CHECK_OK(fl_pool_destroy(pool));
    return special_status;
}

static void test_pipelined_deaths(void) {
    int64_t pids[64] = {0};
    /* A death mid-pipeline: answered items keep their (memfd-sized) results, the item fails,
     * the items behind it run in a fresh worker. */
    CHECK_RC(FL_EWORKER, run_pipeline(0, 0, 40, 17, 1, pids));
    CHECK(pids[0] > 0 && pids[0] == pids[16]);
    CHECK(pids[18] > 0 && pids[18] != pids[16] && pids[18] == pids[39]);
    /* A timeout mid-pipeline. */
    memset(pids, 0, sizeof pids);
    CHECK_RC(FL_EWORKER, run_pipeline(0.3, 0, 12, 5, 2, pids));
    CHECK(pids[4] > 0 && pids[6] > 0 && pids[6] != pids[4]);
    /* A retry mid-pipeline: the item runs again in the fresh worker and succeeds. */
    CHECK_OK(fl_shm_create(NULL, 64, &pipeline_flags));
    memset(pids, 0, sizeof pids);
    CHECK_OK(run_pipeline(0, 1, 12, 5, 3, pids));
    CHECK(pids[5] > 0 && pids[5] != pids[4] && pids[5] == pids[6]);
    CHECK_OK(fl_shm_close(pipeline_flags));
    CHECK(child_pids(NULL, 0) == 0);
}

/* ---- fl_pool_apply from a thread outside the pool runs the task in an idle worker process
 * itself (no pool thread in between); these check the edges of that path ---- */

typedef struct {
    fl_pool pool;
    int calls, ok, refused, cancelled, other;
    const char *what;
} applier;

static void *apply_loop(void *raw) {
    applier *a = raw;
    for (int i = 0; i < a->calls; i++) {
        int64_t x = i, y = -1;
        int rc = a->what ? fl_pool_apply(a->pool, behave, NULL, a->what, strlen(a->what), NULL, 0, NULL)
                         : fl_pool_apply(a->pool, square, NULL, &x, sizeof x, &y, sizeof y, NULL);
        if (rc == FL_OK && (a->what || y == x * x)) a->ok++;
        else if (rc == FL_ESTATE || rc == FL_EHANDLE) a->refused++;
        else if (rc == FL_ECANCELED) a->cancelled++;
        else a->other++;
    }
    return NULL;
}

static void test_apply_on_the_calling_thread(void) {
    /* Three threads applying at once on two workers: some borrow, some queue; all right. */
    fl_pool pool = make_process_pool(2, 0, 0, 0);
    applier a[3];
    pthread_t threads[3];
    for (int i = 0; i < 3; i++) {
        a[i] = (applier){pool, 2000, 0, 0, 0, 0, NULL};
        pthread_create(&threads[i], NULL, apply_loop, &a[i]);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(threads[i], NULL);
        CHECK(a[i].ok == 2000);
    }
    /* A crash in a borrowed process fails the call; the pool goes on. */
    CHECK_RC(FL_EWORKER, fl_pool_apply(pool, behave, NULL, "segv", 4, NULL, 0, NULL));
    int64_t x = 7, y = 0;
    CHECK_OK(fl_pool_apply(pool, square, NULL, &x, sizeof x, &y, sizeof y, NULL));
    CHECK(y == 49);

    /* Terminate while a thread waits in a borrowed process: cancelled, no hang. */
    applier sleeper = {pool, 1, 0, 0, 0, 0, "sleep"};
    pthread_t thread;
    pthread_create(&thread, NULL, apply_loop, &sleeper);
    struct timespec pause = {0, 200 * 1000000L};
    nanosleep(&pause, NULL);
    double start = now_s();
    CHECK_OK(fl_pool_terminate(pool));
    pthread_join(thread, NULL);
    CHECK(sleeper.cancelled == 1);
    CHECK(now_s() - start < 10);
    CHECK_OK(fl_pool_join(pool, 20));
    CHECK_OK(fl_pool_destroy(pool));
    CHECK(child_pids(NULL, 0) == 0);

    /* Close and destroy while threads apply: every call succeeds or is refused. */
    pool = make_process_pool(2, 0, 0, 0);
    for (int i = 0; i < 2; i++) {
        a[i] = (applier){pool, 3000, 0, 0, 0, 0, NULL};
        pthread_create(&threads[i], NULL, apply_loop, &a[i]);
    }
    pause.tv_nsec = 20 * 1000000L;
    nanosleep(&pause, NULL);
    CHECK_OK(fl_pool_close(pool));
    CHECK_OK(fl_pool_join(pool, 30));
    for (int i = 0; i < 2; i++) {
        pthread_join(threads[i], NULL);
        CHECK(a[i].ok + a[i].refused == 3000 && a[i].other == 0 && a[i].cancelled == 0);
    }
    CHECK_OK(fl_pool_destroy(pool));
    CHECK(child_pids(NULL, 0) == 0);
}

int main(void) {
    test_a_task_closing_descriptors(); /* first: a lost wake-up showed there every time (later, not always) */
    test_options();
    test_runs_in_other_processes();
    test_crashes_fail_only_their_task();
    test_idle_death_costs_nothing();
    test_timeout_kills_and_replaces();
    test_max_tasks_per_child();
    test_initializer_in_each_process();
    test_retries_after_a_death();
    test_retries_are_counted();
    test_impossible_result_length();
    test_task_timeout_in_imap();
    test_large_arguments_and_results();
    test_large_arguments_in_turn();
    test_typed_calls();
    test_terminate_kills_running_tasks();
    test_killing_workers_under_load();
    test_pipelined_deaths();
    test_apply_on_the_calling_thread();
    return check_finish("process_pool");
}
