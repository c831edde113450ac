/* The spawn and forkserver start methods of fl_process_start, through the public C ABI.
 * Task functions are non-static: a spawned process finds them by their exported name (the
 * suite links with -rdynamic). */
#define _GNU_SOURCE
#include "check.h"
#include "children.h"

#include <signal.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

/* Changed by the parent before starting children: a fork child sees the change, a spawned
 * one (a new run of the program) the initial value. */
int64_t parent_marker = 1;

int square_task(void *user, const void *arg, size_t len, fl_task_ctx ctx);
int marker_task(void *user, const void *arg, size_t len, fl_task_ctx ctx);
int behave_task(void *user, const void *arg, size_t len, fl_task_ctx ctx);
int sum_task(void *user, const void *arg, size_t len, fl_task_ctx ctx);
int queue_task(void *user, const void *arg, size_t len, fl_task_ctx ctx);

int square_task(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user;
    if (len != 8) return 90;
    int64_t x;
    memcpy(&x, arg, 8);
    int64_t out[2] = {x * x, getpid()};
    return fl_task_return(ctx, out, sizeof out);
}

int marker_task(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)arg; (void)len;
    return fl_task_return(ctx, &parent_marker, sizeof parent_marker);
}

int behave_task(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)ctx;
    char what[16] = {0};
    memcpy(what, arg, len < 15 ? len : 15);
    if (strcmp(what, "seven") == 0) return 7;
    if (strcmp(what, "segv") == 0) raise(SIGSEGV);
    if (strcmp(what, "sleep") == 0) sleep(30);
    if (strcmp(what, "fail") == 0) return fl_task_fail(ctx, 42, "failed on purpose");
    return 0;
}

int sum_task(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user;
    int64_t sum = 0;
    for (size_t i = 0; i < len; i++) sum += ((const unsigned char *)arg)[i];
    return fl_task_return(ctx, &sum, sizeof sum);
}

/* Opens the queue named in the argument and puts its pid there. */
int queue_task(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)ctx;
    char name[128] = {0};
    memcpy(name, arg, len < 127 ? len : 127);
    fl_queue q = NULL;
    if (fl_queue_open(name, &q) != FL_OK) return 3;
    int64_t pid = getpid();
    int rc = fl_queue_put(q, &pid, sizeof pid, 5);
    fl_queue_destroy(q);
    return rc == FL_OK ? 0 : 4;
}

static int local_task(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)arg; (void)len; (void)ctx;
    return 0;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Children other than the fork server. */
static int workers_left(void) {
    pid_t pids[64];
    int n = child_pids(pids, 64), left = 0;
    for (int i = 0; i < n && i < 64; i++) {
        char path[64], comm[32] = {0};
        snprintf(path, sizeof path, "/proc/%d/comm", (int)pids[i]);
        FILE *f = fopen(path, "r");
        if (f) {
            if (!fgets(comm, sizeof comm, f)) comm[0] = 0;
            fclose(f);
        }
        if (strncmp(comm, "forklift-fsrv", 13) != 0) left++;
    }
    return left;
}

static fl_process_options with_method(int method) {
    fl_process_options options;
    fl_process_options_init(&options);
    options.start_method = method;
    return options;
}

static int run_to_end(fl_task_fn fn, const void *arg, size_t len, int method, void *result, size_t cap, int *code) {
    fl_process_options options = with_method(method);
    fl_process p = NULL;
    int rc = fl_process_start(fn, NULL, arg, len, &options, &p);
    if (rc != FL_OK) return rc;
    rc = fl_process_join(p, 60);
    if (rc == FL_OK) rc = fl_process_exitcode(p, code);
    size_t got = 0;
    if (rc == FL_OK && result) rc = fl_process_result(p, result, cap, &got);
    fl_process_destroy(p);
    return rc;
}

static void test_method(int method, const char *label) {
    /* A value back through fl_task_return. */
    int64_t x = 12, out[2] = {0, 0};
    int code = -1;
    CHECK_OK(run_to_end(square_task, &x, sizeof x, method, out, sizeof out, &code));
    CHECK(code == 0 && out[0] == 144 && out[1] != getpid());

    /* A fresh process: the parent's later change is not there. */
    int64_t marker = 0;
    CHECK_OK(run_to_end(marker_task, NULL, 0, method, &marker, sizeof marker, &code));
    CHECK(marker == 1);

    /* Exit codes. */
    CHECK_OK(run_to_end(behave_task, "seven", 5, method, NULL, 0, &code));
    CHECK(code == 7);
    CHECK_OK(run_to_end(behave_task, "segv", 4, method, NULL, 0, &code));
    CHECK(code == -SIGSEGV);
    CHECK_OK(run_to_end(behave_task, "fail", 4, method, NULL, 0, &code));
    CHECK(code == 42);

    /* A 3 MiB argument (it travels in a memfd of its own). */
    size_t big = 3u << 20;
    unsigned char *data = malloc(big);
    int64_t expected = 0, sum = 0;
    for (size_t i = 0; i < big; i++) {
        data[i] = (unsigned char)(i % 253);
        expected += data[i];
    }
    CHECK_OK(run_to_end(sum_task, data, big, method, &sum, sizeof sum, &code));
    CHECK(sum == expected);
    free(data);

    /* Shared objects by name. */
    fl_queue q = NULL;
    char name[64];
    CHECK_OK(fl_queue_create(0, 0, &q));
    CHECK_OK(fl_queue_name(q, name, sizeof name));
    CHECK_OK(run_to_end(queue_task, name, strlen(name), method, NULL, 0, &code));
    CHECK(code == 0);
    int64_t pid = 0;
    size_t len = 0;
    CHECK_OK(fl_queue_get(q, &pid, sizeof pid, &len, 5));
    CHECK(pid > 0 && pid != getpid());
    CHECK_OK(fl_queue_destroy(q));

    /* terminate and kill reach the child; join sees the signal. */
    fl_process_options options = with_method(method);
    fl_process p = NULL;
    CHECK_OK(fl_process_start(behave_task, NULL, "sleep", 5, &options, &p));
    CHECK_RC(1, fl_process_is_alive(p));
    CHECK_RC(FL_ETIMEDOUT, fl_process_join(p, 0.05));
    CHECK_OK(fl_process_terminate(p));
    CHECK_OK(fl_process_join(p, 30));
    CHECK_OK(fl_process_exitcode(p, &code));
    CHECK(code == -SIGTERM);
    CHECK_OK(fl_process_destroy(p));

    /* What cannot cross into a new process is refused up front. */
    int user = 0;
    p = NULL;
    CHECK_RC(FL_EINVAL, fl_process_start(square_task, &user, &x, sizeof x, &options, &p));
    CHECK(p == NULL);
    CHECK_RC(FL_EINVAL, fl_process_start(local_task, NULL, NULL, 0, &options, &p));
    CHECK(strstr(fl_last_error(), "exported") != NULL);

    /* Many at once. */
    fl_process many[16];
    double start = now();
    for (int64_t i = 0; i < 16; i++) CHECK_OK(fl_process_start(square_task, NULL, &i, sizeof i, &options, &many[i]));
    int right = 1;
    for (int64_t i = 0; i < 16; i++) {
        int64_t got[2] = {-1, -1};
        if (fl_process_join(many[i], 60) != FL_OK || fl_process_result(many[i], got, sizeof got, &len) != FL_OK ||
            got[0] != i * i)
            right = 0;
        fl_process_destroy(many[i]);
    }
    double elapsed = now() - start;
    CHECK(right);
    printf("%s: 16 processes started and joined in %.1f ms (%.2f ms each)\n", label, elapsed * 1e3, elapsed * 1e3 / 16);
    CHECK(workers_left() == 0);
}

int main(void) {
    parent_marker = 2;
    int64_t marker = 0;
    int code = -1;
    CHECK_OK(run_to_end(marker_task, NULL, 0, FL_START_FORK, &marker, sizeof marker, &code));
    CHECK(marker == 2); /* a fork child is a copy */

    test_method(FL_START_SPAWN, "spawn");
    test_method(FL_START_FORKSERVER, "forkserver");

    fl_process_options options = with_method(7);
    fl_process p = NULL;
    CHECK_RC(FL_EINVAL, fl_process_start(square_task, NULL, NULL, 0, &options, &p));
    /* An older, smaller options struct (before start_method) still works: fork. */
    options = with_method(FL_START_SPAWN);
    options.size = sizeof(size_t) + sizeof(int);
    int user = 0;
    CHECK_OK(fl_process_start(local_task, &user, NULL, 0, &options, &p));
    CHECK_OK(fl_process_join(p, 30));
    CHECK_OK(fl_process_destroy(p));
    CHECK(workers_left() == 0);

    /* After clearenv() (environ NULL) a spawned process still starts, with an empty
     * environment. Last: the environment does not come back. */
    clearenv();
    int64_t x = 9, out[2] = {0, 0};
    CHECK_OK(run_to_end(square_task, &x, sizeof x, FL_START_SPAWN, out, sizeof out, &code));
    CHECK(code == 0 && out[0] == 81);
    CHECK(workers_left() == 0);
    return check_finish("start_methods");
}
