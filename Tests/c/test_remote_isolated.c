/* Remote tasks and actors in worker processes, through the public C ABI: isolation, crashes,
 * retries after a killed worker, force-cancel, objects in shared memory, actor restarts. */
#define _GNU_SOURCE
#include "check.h"
#include "remote_helpers.h"
#include "children.h"

#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Shared with the worker processes: mapped before the runtime forks them. */
typedef struct shared_counters {
    uint32_t runs;        /* runs of flaky_task */
    uint32_t method_runs; /* runs of flaky_method */
    uint32_t started;     /* set by a task when it starts (force-cancel test) */
    uint32_t saw_cancel;  /* set by a task that saw fl_task_cancelled() become 1 (cancel test) */
    uint32_t constructions; /* starts of dying_init */
    uint32_t deaths_left;   /* how many more starts of dying_init die */
} shared_counters;
static shared_counters *shared;

/* Written by tasks; in the host it must stay 0. */
static int host_global;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static fl_runtime isolated_runtime(size_t process_workers) {
    fl_runtime rt = runtime_with_processes(process_workers);
    CHECK(rt != NULL);
    return rt;
}

/* Options of an actor living in a process of its own. */
static fl_actor_options isolated_actor(int max_restarts, int max_task_retries) {
    fl_actor_options options;
    fl_actor_options_init(&options);
    options.isolate = 1;
    options.max_restarts = max_restarts;
    options.max_task_retries = max_task_retries;
    return options;
}

static fl_remote_options isolated(int max_retries) {
    fl_remote_options options;
    fl_remote_options_init(&options);
    options.isolate = 1;
    options.max_retries = max_retries;
    return options;
}

/* ---- task functions (run in worker processes) ---- */

/* Returns the worker's pid and writes to a global (which the host must not see). */
static int whoami(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)args; (void)nargs;
    host_global = 42;
    int64_t pid = getpid();
    return fl_task_return(ctx, &pid, sizeof pid);
}

/* The sum of every argument read as uint64 words (any length). */
static int sum_words(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user;
    uint64_t total = 0;
    for (size_t i = 0; i < nargs; i++) {
        const uint64_t *words = args[i].data;
        for (size_t w = 0; w < args[i].len / 8; w++) total += words[w];
    }
    return fl_task_return(ctx, &total, sizeof total);
}

/* A result of args[0] bytes (uint64 words 0, 1, 2, ...) built in place. */
/* The inode of the shared mapping that holds `p`, or -1 when `p` is in no shared mapping of
 * this process. Two processes that find the same inode (and device) for their views read the
 * same pages: nothing was copied. */
static int64_t shared_mapping_inode(const void *p) {
    char line[512];
    unsigned long start = 0, end = 0, offset = 0, node = 0;
    char perms[8] = {0}, device[32] = {0};
    if (!shared_mapping_of(p, line, sizeof line)) return -1;
    if (sscanf(line, "%lx-%lx %7s %lx %31s %lu", &start, &end, perms, &offset, device, &node) != 6) return -1;
    return (int64_t)node;
}

/* In a worker process: the inode of the shared mapping its argument's bytes are in. */
static int argument_inode(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user;
    if (nargs != 1) return 1;
    int64_t inode = shared_mapping_inode(args[0].data);
    return fl_task_return(ctx, &inode, sizeof inode);
}

/* Mappings of `inode` in this process (lines of /proc/self/maps). */
static int mappings_of_inode(int64_t inode) {
    FILE *maps = fopen("/proc/self/maps", "r");
    if (!maps) return -1;
    char line[512];
    int count = 0;
    while (fgets(line, sizeof line, maps)) {
        unsigned long start = 0, end = 0, offset = 0, node = 0;
        char perms[8] = {0}, device[32] = {0};
        if (sscanf(line, "%lx-%lx %7s %lx %31s %lu", &start, &end, perms, &offset, device, &node) == 6 &&
            (int64_t)node == inode) {
            count++;
        }
    }
    fclose(maps);
    return count;
}

/* In a worker process: {where its argument is in this process, the inode of the mapping it is
 * in, how many mappings of that inode this process has, the sum of its words}. */
static int probe_argument(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user;
    if (nargs != 1) return 1;
    int64_t out[4];
    out[0] = (int64_t)(uintptr_t)args[0].data;
    out[1] = shared_mapping_inode(args[0].data);
    out[2] = mappings_of_inode(out[1]);
    uint64_t total = 0;
    const uint64_t *words = args[0].data;
    for (size_t w = 0; w < args[0].len / 8; w++) total += words[w];
    out[3] = (int64_t)total;
    return fl_task_return(ctx, out, sizeof out);
}

static int make_words(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)nargs;
    size_t len = (size_t)as_int(&args[0]);
    uint64_t *words = NULL;
    int rc = fl_task_result_buffer(ctx, len, (void **)&words);
    if (rc != FL_OK) return rc;
    for (size_t w = 0; w < len / 8; w++) words[w] = w;
    return 0;
}

static int crash(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)args; (void)nargs; (void)ctx;
    raise(SIGSEGV);
    return 0;
}

static int exit_three(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)args; (void)nargs; (void)ctx;
    _exit(3);
}

static int fail_seven(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)args; (void)nargs;
    return fl_task_fail(ctx, 7, "seven");
}

/* Killed (SIGKILL) on its first two runs, then returns its run count. */
static int flaky_task(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)args; (void)nargs;
    int64_t run = __atomic_add_fetch(&shared->runs, 1, __ATOMIC_SEQ_CST);
    if (run < 3) raise(SIGKILL);
    return fl_task_return(ctx, &run, sizeof run);
}

/* Runs until killed. */
static int forever(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)args; (void)nargs; (void)ctx;
    __atomic_store_n(&shared->started, 1, __ATOMIC_SEQ_CST);
    for (;;) pause_ms(10);
    return 0;
}

/* Polls fl_task_cancelled() for up to 30 s: records when it becomes 1 and returns 0, or
 * fails with 9 if it never does. */
static int until_cancelled(fl_task_ctx ctx) {
    __atomic_store_n(&shared->started, 1, __ATOMIC_SEQ_CST);
    for (int i = 0; i < 30000; i++) {
        if (fl_task_cancelled(ctx) == 1) {
            __atomic_store_n(&shared->saw_cancel, 1, __ATOMIC_SEQ_CST);
            return 0;
        }
        pause_ms(1);
    }
    return fl_task_fail(ctx, 9, "never told of the cancel");
}

static int task_until_cancelled(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)args; (void)nargs;
    return until_cancelled(ctx);
}

/* Returns {its process id, fl_task_cancelled() now}. */
static int pid_and_cancelled(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)args; (void)nargs;
    int64_t out[2] = {getpid(), fl_task_cancelled(ctx)};
    return fl_task_return(ctx, out, sizeof out);
}

/* ---- an isolated actor: a counter ---- */

static int counter_init(void *user, const fl_blob *args, size_t nargs, void **state) {
    (void)user;
    int64_t start = nargs > 0 ? as_int(&args[0]) : 0;
    if (start < 0) return (int)-start; /* a negative start value makes the constructor fail with it */
    int64_t *count = malloc(sizeof *count);
    if (!count) return 1;
    *count = start;
    *state = count;
    return 0;
}

static int counter_increment(void *state, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)args; (void)nargs;
    int64_t *count = state;
    *count += 1;
    return fl_task_return(ctx, count, sizeof *count);
}

static int counter_pid(void *state, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)state; (void)args; (void)nargs;
    int64_t pid = getpid();
    return fl_task_return(ctx, &pid, sizeof pid);
}

static int method_until_cancelled(void *state, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)state; (void)args; (void)nargs;
    return until_cancelled(ctx);
}

static int method_pid_and_cancelled(void *state, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)state;
    return pid_and_cancelled(NULL, args, nargs, ctx);
}

static int counter_die(void *state, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)state; (void)args; (void)nargs; (void)ctx;
    raise(SIGKILL);
    return 0;
}

/* Killed on its first run only, then increments. */
static int flaky_method(void *state, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    if (__atomic_add_fetch(&shared->method_runs, 1, __ATOMIC_SEQ_CST) == 1) raise(SIGKILL);
    return counter_increment(state, args, nargs, ctx);
}

/* A counter whose process dies (SIGKILL) in the constructor while `deaths_left` says so. */
static int dying_init(void *user, const fl_blob *args, size_t nargs, void **state) {
    __atomic_add_fetch(&shared->constructions, 1, __ATOMIC_SEQ_CST);
    uint32_t left = __atomic_load_n(&shared->deaths_left, __ATOMIC_SEQ_CST);
    if (left > 0) {
        __atomic_store_n(&shared->deaths_left, left - 1, __ATOMIC_SEQ_CST);
        raise(SIGKILL);
    }
    return counter_init(user, args, nargs, state);
}

/* ---- tests ---- */

static void test_isolation_and_objects(void) {
    fl_runtime rt = isolated_runtime(2);
    fl_remote_options opts = isolated(0);
    fl_ref r = NULL;
    CHECK_OK(fl_remote(rt, whoami, NULL, NULL, 0, &opts, &r));
    int64_t pid = get_int(r);
    CHECK(pid > 0 && pid != getpid());
    CHECK(host_global == 0);
    fl_ref_release(r);

    /* Arguments: a blob, a small object and a large one (in shared memory), and a large
     * result made in the worker, fed to the next isolated task. */
    const size_t big = 8u << 20;
    uint64_t *words = NULL;
    fl_ref large = NULL;
    CHECK_OK(fl_create(rt, big, (void **)&words, &large));
    uint64_t expected = 0;
    for (size_t w = 0; w < big / 8; w++) {
        words[w] = w * 3;
        expected += w * 3;
    }
    CHECK_OK(fl_seal(large));
    uint64_t small_value = 11, blob_value = 100;
    fl_ref small = NULL;
    CHECK_OK(fl_put(rt, &small_value, sizeof small_value, &small));
    fl_arg args[3] = {{&blob_value, sizeof blob_value, NULL}, {NULL, 0, small}, {NULL, 0, large}};
    CHECK_OK(fl_remote(rt, sum_words, NULL, args, 3, &opts, &r));
    CHECK(get_int(r) == (int64_t)(expected + 111));
    fl_ref_release(r);

    /* No copy: the worker process reads the large object's bytes from the very shared
     * mapping this process wrote them into (same inode, mapped shared on both sides), and
     * this process's view is that buffer too. */
    int64_t host_inode = shared_mapping_inode(words);
    CHECK(host_inode > 0);
    const void *view = NULL;
    CHECK_OK(fl_get(large, 30, &view, NULL));
    CHECK(view == (const void *)words);
    fl_arg large_arg = {NULL, 0, large};
    CHECK_OK(fl_remote(rt, argument_inode, NULL, &large_arg, 1, &opts, &r));
    CHECK(get_int(r) == host_inode);
    fl_ref_release(r);

    int64_t length = 4 << 20;
    fl_arg len_arg = {&length, sizeof length, NULL};
    fl_ref made = NULL;
    CHECK_OK(fl_remote(rt, make_words, NULL, &len_arg, 1, &opts, &made));
    const void *data = NULL;
    size_t len = 0;
    CHECK_OK(fl_get(made, 30, &data, &len));
    CHECK(len == (size_t)length);
    CHECK(data != NULL && ((const uint64_t *)data)[12345] == 12345);
    /* A large result made in a worker process is shared memory too: this process's view and
     * the next worker's argument are the same pages. */
    int64_t made_inode = shared_mapping_inode(data);
    CHECK(made_inode > 0);
    fl_arg made_probe = {NULL, 0, made};
    CHECK_OK(fl_remote(rt, argument_inode, NULL, &made_probe, 1, &opts, &r));
    CHECK(get_int(r) == made_inode);
    fl_ref_release(r);
    uint64_t made_sum = ((uint64_t)length / 8) * ((uint64_t)length / 8 - 1) / 2;
    fl_arg made_arg = {NULL, 0, made};
    CHECK_OK(fl_remote(rt, sum_words, NULL, &made_arg, 1, &opts, &r));
    CHECK(get_int(r) == (int64_t)made_sum);
    fl_ref_release(r);
    /* The same large object read by a task on a thread. */
    CHECK_OK(fl_remote(rt, sum_words, NULL, &made_arg, 1, NULL, &r));
    CHECK(get_int(r) == (int64_t)made_sum);
    fl_ref_release(r);

    /* A failure in the worker travels as an object and fails dependents with its cause. */
    fl_ref failed = NULL;
    CHECK_OK(fl_remote(rt, fail_seven, NULL, NULL, 0, &opts, &failed));
    fl_arg failed_arg = {NULL, 0, failed};
    CHECK_OK(fl_remote(rt, sum_words, NULL, &failed_arg, 1, &opts, &r));
    CHECK_RC(FL_ETASK, fl_get(failed, 30, NULL, NULL));
    CHECK(strstr(fl_last_error(), "seven") != NULL);
    CHECK_RC(FL_ETASK, fl_get(r, 30, NULL, NULL));
    CHECK(strstr(fl_last_error(), "argument 0 failed") != NULL);
    fl_ref_release(r);
    fl_ref_release(failed);

    fl_ref_release(made);
    fl_ref_release(small);
    fl_ref_release(large);
    fl_runtime_stats stats = stats_once_settled(rt);
    CHECK(stats.objects == 0 && stats.object_bytes == 0);
    CHECK_OK(fl_runtime_shutdown(rt));
    CHECK(child_pids(NULL, 0) == 0);
}

static void test_deaths_and_retries(void) {
    fl_runtime rt = isolated_runtime(1);
    fl_remote_options opts = isolated(0);
    fl_ref r = NULL;
    CHECK_OK(fl_remote(rt, crash, NULL, NULL, 0, &opts, &r));
    CHECK_RC(FL_EWORKER, fl_get(r, 30, NULL, NULL));
    CHECK(strstr(fl_last_error(), "SIGSEGV") != NULL);
    fl_ref_release(r);
    CHECK_OK(fl_remote(rt, exit_three, NULL, NULL, 0, &opts, &r));
    CHECK_RC(FL_EWORKER, fl_get(r, 30, NULL, NULL));
    CHECK(strstr(fl_last_error(), "exited with status 3") != NULL);
    fl_ref_release(r);
    /* The host goes on, and so does the runtime, on a fresh worker process. */
    CHECK_OK(fl_remote(rt, whoami, NULL, NULL, 0, &opts, &r));
    CHECK(get_int(r) > 0);
    fl_ref_release(r);

    /* Killed twice, then done: with two retries it succeeds on its third run... */
    shared->runs = 0;
    fl_remote_options retrying = isolated(2);
    CHECK_OK(fl_remote(rt, flaky_task, NULL, NULL, 0, &retrying, &r));
    CHECK(get_int(r) == 3);
    fl_ref_release(r);
    /* ...with one it fails, naming the signal. */
    shared->runs = 0;
    retrying.max_retries = 1;
    CHECK_OK(fl_remote(rt, flaky_task, NULL, NULL, 0, &retrying, &r));
    CHECK_RC(FL_EWORKER, fl_get(r, 30, NULL, NULL));
    CHECK(strstr(fl_last_error(), "SIGKILL") != NULL);
    CHECK(shared->runs == 2);
    fl_ref_release(r);
    CHECK_OK(fl_runtime_shutdown(rt));
    CHECK(child_pids(NULL, 0) == 0);
}

static void test_force_cancel(void) {
    fl_runtime rt = isolated_runtime(1);
    fl_remote_options opts = isolated(3); /* a cancelled task is not retried */
    shared->started = 0;
    fl_ref r = NULL;
    CHECK_OK(fl_remote(rt, forever, NULL, NULL, 0, &opts, &r));
    double deadline = now_s() + 30;
    while (!__atomic_load_n(&shared->started, __ATOMIC_SEQ_CST) && now_s() < deadline) pause_ms(1);
    CHECK(shared->started == 1);
    double t0 = now_s();
    CHECK_OK(fl_cancel_force(r));
    CHECK_RC(FL_ECANCELED, fl_get(r, 30, NULL, NULL));
    /* The worker is free again: the next task runs on a fresh process. */
    fl_ref next = NULL;
    CHECK_OK(fl_remote(rt, whoami, NULL, NULL, 0, &opts, &next));
    CHECK(get_int(next) > 0);
    CHECK(now_s() - t0 < 20);
    CHECK_OK(fl_cancel_force(next)); /* finished already: no effect */
    CHECK(get_int(next) > 0);
    fl_ref_release(next);
    fl_ref_release(r);
    /* A put object cannot be cancelled. */
    int64_t v = 1;
    CHECK_OK(fl_put(rt, &v, sizeof v, &r));
    CHECK_RC(FL_EINVAL, fl_cancel_force(r));
    fl_ref_release(r);
    CHECK_OK(fl_runtime_shutdown(rt));
    CHECK(child_pids(NULL, 0) == 0);
}

static void test_bad_input(void) {
    /* No process workers: isolated tasks are refused. */
    fl_runtime_options options;
    fl_runtime_options_init(&options);
    options.workers = 1;
    fl_runtime rt = NULL;
    CHECK_OK(fl_runtime_create(&options, &rt));
    fl_remote_options opts = isolated(0);
    fl_ref r = (fl_ref)1;
    CHECK_RC(FL_EINVAL, fl_remote(rt, whoami, NULL, NULL, 0, &opts, &r));
    CHECK(r == NULL);
    CHECK(strstr(fl_last_error(), "process_workers") != NULL);
    CHECK_OK(fl_runtime_shutdown(rt));
    /* Options of the layout before process_workers are still accepted. */
    options.size = offsetof(fl_runtime_options, process_workers);
    CHECK_OK(fl_runtime_create(&options, &rt));
    CHECK_OK(fl_runtime_shutdown(rt));
    options.size = sizeof options;
    options.process_workers = 5000;
    CHECK_RC(FL_EINVAL, fl_runtime_create(&options, &rt));

    rt = isolated_runtime(1);
    fl_ref refs[2];
    CHECK_RC(FL_EINVAL, fl_remote_multi(rt, whoami, NULL, NULL, 0, &opts, 2, refs));
    /* Remote options of the layout before isolate: a task on a thread. */
    fl_remote_options old = isolated(0);
    old.size = offsetof(fl_remote_options, isolate);
    CHECK_OK(fl_remote(rt, whoami, NULL, NULL, 0, &old, &r));
    CHECK(get_int(r) == getpid());
    fl_ref_release(r);
    host_global = 0; /* that task ran in the host */

    fl_actor_options actor_opts;
    fl_actor_options_init(&actor_opts);
    fl_actor a = NULL;
    actor_opts.isolate = 1;
    actor_opts.max_concurrency = 2;
    CHECK_RC(FL_EINVAL, fl_actor_create(rt, counter_init, NULL, NULL, NULL, 0, &actor_opts, &a));
    actor_opts.max_concurrency = 1;
    actor_opts.max_restarts = -1;
    CHECK_RC(FL_EINVAL, fl_actor_create(rt, counter_init, NULL, NULL, NULL, 0, &actor_opts, &a));
    actor_opts.isolate = 0;
    actor_opts.max_restarts = 1;
    CHECK_RC(FL_EINVAL, fl_actor_create(rt, counter_init, NULL, NULL, NULL, 0, &actor_opts, &a));
    CHECK(strstr(fl_last_error(), "need isolate") != NULL);
    CHECK_OK(fl_runtime_shutdown(rt));
}

static fl_actor isolated_counter(fl_runtime rt, int64_t start, int max_restarts, int max_task_retries) {
    fl_actor_options options = isolated_actor(max_restarts, max_task_retries);
    fl_arg arg = {&start, sizeof start, NULL};
    fl_actor a = NULL;
    CHECK_OK(fl_actor_create(rt, counter_init, NULL, NULL, &arg, 1, &options, &a));
    return a;
}

static int64_t call_int(fl_actor a, fl_remote_fn method, int *status) {
    fl_ref r = NULL;
    int64_t value = -1;
    *status = fl_actor_call(a, method, NULL, 0, &r);
    if (*status != FL_OK) return value;
    const void *data = NULL;
    size_t len = 0;
    *status = fl_get(r, 30, &data, &len);
    if (*status == FL_OK && len == sizeof value) memcpy(&value, data, sizeof value);
    fl_ref_release(r);
    return value;
}

static int pid_alive(pid_t pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d", (int)pid);
    return access(path, F_OK) == 0;
}

/* Waits until a task sets shared->started, then cancels `r` (not by force): the ref resolves
 * as cancelled at once, and the task, still running in its process, sees fl_task_cancelled()
 * become 1 and returns. */
static void cancel_running(fl_ref r, int force) {
    double deadline = now_s() + 30;
    while (!__atomic_load_n(&shared->started, __ATOMIC_SEQ_CST) && now_s() < deadline) pause_ms(1);
    CHECK(shared->started == 1);
    CHECK(shared->saw_cancel == 0);
    CHECK_OK(force ? fl_cancel_force(r) : fl_cancel(r));
    CHECK_RC(FL_ECANCELED, fl_get(r, 30, NULL, NULL));
    CHECK(strstr(fl_last_error(), "the task was cancelled") != NULL);
    deadline = now_s() + 30;
    while (!__atomic_load_n(&shared->saw_cancel, __ATOMIC_SEQ_CST) && now_s() < deadline) pause_ms(1);
    CHECK(shared->saw_cancel == 1);
}

/* fl_cancel reaches a task or an actor call running in a worker process through
 * fl_task_cancelled(); the process is not killed, and the next request there is not told. */
static void test_cancel_reaches_the_process(void) {
    fl_runtime rt = isolated_runtime(1);
    fl_remote_options opts = isolated(0);
    int64_t before[2] = {0, 0}, after[2] = {0, 0};
    fl_ref r = NULL;
    CHECK_OK(fl_remote(rt, pid_and_cancelled, NULL, NULL, 0, &opts, &r));
    CHECK(get_value(r, before, sizeof before));
    CHECK(before[0] > 0 && before[0] != getpid() && before[1] == 0);
    fl_ref_release(r);
    shared->started = 0;
    shared->saw_cancel = 0;
    CHECK_OK(fl_remote(rt, task_until_cancelled, NULL, NULL, 0, &opts, &r));
    cancel_running(r, 0);
    fl_ref_release(r);
    CHECK_OK(fl_remote(rt, pid_and_cancelled, NULL, NULL, 0, &opts, &r));
    CHECK(get_value(r, after, sizeof after));
    CHECK(after[0] == before[0]); /* the same process: not killed */
    CHECK(after[1] == 0);         /* the cancel was that request's alone */
    fl_ref_release(r);

    fl_actor a = isolated_counter(rt, 0, 0, 0);
    CHECK_OK(fl_actor_call(a, method_pid_and_cancelled, NULL, 0, &r));
    CHECK(get_value(r, before, sizeof before));
    CHECK(before[0] > 0 && before[0] != getpid() && before[1] == 0);
    fl_ref_release(r);
    /* By force too: an actor call is cancelled as by fl_cancel, its process lives on. */
    for (int force = 0; force <= 1; force++) {
        shared->started = 0;
        shared->saw_cancel = 0;
        CHECK_OK(fl_actor_call(a, method_until_cancelled, NULL, 0, &r));
        cancel_running(r, force);
        fl_ref_release(r);
        CHECK_OK(fl_actor_call(a, method_pid_and_cancelled, NULL, 0, &r));
        CHECK(get_value(r, after, sizeof after));
        CHECK(after[0] == before[0] && after[1] == 0);
        fl_ref_release(r);
    }
    int status;
    CHECK(call_int(a, counter_increment, &status) == 1); /* the state is intact */
    CHECK(status == FL_OK);
    CHECK_OK(fl_actor_kill(a));
    CHECK_OK(fl_runtime_shutdown(rt));
    CHECK(child_pids(NULL, 0) == 0);
}

static void test_isolated_actor(void) {
    fl_runtime rt = isolated_runtime(0); /* actors need no process workers */
    fl_actor a = isolated_counter(rt, 10, 0, 0);
    /* Calls from the host in order; the state lives in the actor's process. */
    fl_ref refs[50];
    for (int i = 0; i < 50; i++) CHECK_OK(fl_actor_call(a, counter_increment, NULL, 0, &refs[i]));
    int in_order = 1;
    for (int i = 0; i < 50; i++) {
        if (get_int(refs[i]) != 11 + i) in_order = 0;
        fl_ref_release(refs[i]);
    }
    CHECK(in_order);
    int status;
    int64_t pid = call_int(a, counter_pid, &status);
    CHECK(status == FL_OK && pid > 0 && pid != getpid());
    CHECK(call_int(a, counter_pid, &status) == pid);
    CHECK_OK(fl_actor_kill(a));
    double deadline = now_s() + 10;
    while (pid_alive((pid_t)pid) && now_s() < deadline) pause_ms(5);
    CHECK(!pid_alive((pid_t)pid));

    /* A constructor that fails: every call fails with its code. */
    a = isolated_counter(rt, -5, 0, 0);
    call_int(a, counter_increment, &status);
    CHECK(status == FL_ESTATE);
    CHECK(strstr(fl_last_error(), "constructor returned 5") != NULL);
    CHECK_OK(fl_actor_kill(a));
    CHECK_OK(fl_runtime_shutdown(rt));
    CHECK(child_pids(NULL, 0) == 0);
}

static void test_actor_restarts(void) {
    fl_runtime rt = isolated_runtime(0);
    /* One restart: the call that died fails, the next runs on a new process with the state
     * built again by the constructor; a second death ends the actor. */
    fl_actor a = isolated_counter(rt, 0, 1, 0);
    int status;
    CHECK(call_int(a, counter_increment, &status) == 1 && status == FL_OK);
    int64_t first_pid = call_int(a, counter_pid, &status);
    call_int(a, counter_die, &status);
    CHECK(status == FL_EWORKER);
    CHECK(strstr(fl_last_error(), "SIGKILL") != NULL);
    CHECK(call_int(a, counter_increment, &status) == 1 && status == FL_OK);
    int64_t second_pid = call_int(a, counter_pid, &status);
    CHECK(second_pid > 0 && second_pid != first_pid);
    call_int(a, counter_die, &status);
    CHECK(status == FL_EWORKER);
    call_int(a, counter_increment, &status);
    CHECK(status == FL_EWORKER);
    CHECK(strstr(fl_last_error(), "1 restarts allowed") != NULL);
    CHECK_OK(fl_actor_kill(a));

    /* max_task_retries: the call that was running when the process died runs again. */
    shared->method_runs = 0;
    a = isolated_counter(rt, 100, 1, 1);
    CHECK(call_int(a, flaky_method, &status) == 101 && status == FL_OK);
    CHECK(shared->method_runs == 2);
    CHECK(call_int(a, counter_increment, &status) == 102);
    /* Left alive: shutdown ends its process. */
    CHECK_OK(fl_runtime_shutdown(rt));
    CHECK(child_pids(NULL, 0) == 0);
    CHECK_RC(FL_EHANDLE, fl_actor_kill((fl_actor)NULL));
    fl_actor_kill(a);
}

/* An isolated actor's constructor reads the middle byte of its 1 MiB argument object. */
#define CONSTRUCTOR_BYTES (1 << 20)
static int middle_byte_init(void *user, const fl_blob *args, size_t nargs, void **state) {
    (void)user;
    if (nargs != 1 || args[0].len != CONSTRUCTOR_BYTES) return 5;
    char *kept = malloc(1);
    if (!kept) return 6;
    *kept = ((const char *)args[0].data)[CONSTRUCTOR_BYTES / 2];
    *state = kept;
    return 0;
}

static int middle_byte_get(void *state, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)args; (void)nargs;
    return fl_task_return(ctx, state, 1);
}

/* A restarted isolated actor builds its state from the constructor's own argument, even when
 * the caller released that object and a new one took its place in the store. */
static void test_restart_reads_the_constructor_argument(void) {
    fl_runtime rt = isolated_runtime(1);
    char *bytes = malloc(CONSTRUCTOR_BYTES);
    CHECK(bytes != NULL);
    memset(bytes, 'A', CONSTRUCTOR_BYTES);
    fl_ref first = NULL, second = NULL, r = NULL;
    CHECK_OK(fl_put(rt, bytes, CONSTRUCTOR_BYTES, &first));
    fl_actor_options options = isolated_actor(1, 0);
    fl_arg arg = {NULL, 0, first};
    fl_actor a = NULL;
    CHECK_OK(fl_actor_create(rt, middle_byte_init, NULL, NULL, &arg, 1, &options, &a));
    const void *data = NULL;
    size_t len = 0;
    CHECK_OK(fl_actor_call(a, middle_byte_get, NULL, 0, &r));
    CHECK(fl_get(r, 30, &data, &len) == FL_OK && len == 1 && *(const char *)data == 'A');
    fl_ref_release(r);
    CHECK_OK(fl_ref_release(first)); /* the actor still needs it for a restart */
    memset(bytes, 'B', CONSTRUCTOR_BYTES);
    CHECK_OK(fl_put(rt, bytes, CONSTRUCTOR_BYTES, &second)); /* may take the freed memory */
    int status;
    call_int(a, counter_die, &status);
    CHECK(status == FL_EWORKER);
    CHECK_OK(fl_actor_call(a, middle_byte_get, NULL, 0, &r));
    CHECK(fl_get(r, 30, &data, &len) == FL_OK && len == 1 && *(const char *)data == 'A');
    fl_ref_release(r);
    fl_ref_release(second);
    CHECK_OK(fl_actor_kill(a));
    CHECK_OK(fl_runtime_shutdown(rt));
    free(bytes);
}

static void test_restart_after_a_death_in_the_constructor(void) {
    /* A process that dies in the constructor is started again, constructor included, within
     * max_restarts; past them, the constructor's failure names the death. */
    fl_runtime rt = isolated_runtime(1);
    fl_actor_options options = isolated_actor(2, 0);
    int status;
    for (uint32_t deaths = 0; deaths <= 3; deaths++) {
        __atomic_store_n(&shared->constructions, 0, __ATOMIC_SEQ_CST);
        __atomic_store_n(&shared->deaths_left, deaths, __ATOMIC_SEQ_CST);
        fl_actor a = NULL;
        CHECK_OK(fl_actor_create(rt, dying_init, NULL, NULL, NULL, 0, &options, &a));
        int64_t value = call_int(a, counter_increment, &status);
        if (deaths <= 2) {
            CHECK(status == FL_OK && value == 1);
            CHECK(__atomic_load_n(&shared->constructions, __ATOMIC_SEQ_CST) == deaths + 1);
        } else {
            CHECK(status == FL_EWORKER); /* the actor died: 3 starts, 3 deaths in the constructor */
            CHECK(strstr(fl_last_error(), "constructor failed") != NULL && strstr(fl_last_error(), "SIGKILL") != NULL);
            CHECK(__atomic_load_n(&shared->constructions, __ATOMIC_SEQ_CST) == 3);
        }
        CHECK_OK(fl_actor_kill(a));
    }
    __atomic_store_n(&shared->deaths_left, 0, __ATOMIC_SEQ_CST);
    CHECK_OK(fl_runtime_shutdown(rt));
}

/* Waits (up to 30 s) until dying_init has started `count` times. */
static int constructions_reach(uint32_t count) {
    for (int i = 0; i < 30000 && __atomic_load_n(&shared->constructions, __ATOMIC_SEQ_CST) < count; i++) usleep(1000);
    return __atomic_load_n(&shared->constructions, __ATOMIC_SEQ_CST) >= count;
}

static void test_kill_and_shutdown_end_the_restarts(void) {
    /* A constructor that always dies, with restarts enough for minutes of pauses (1 ms
     * doubling to 1 s): a kill, and then a shutdown, end the pauses at once. The bounds below
     * only tell an ended pause from one left to run its course. */
    fl_runtime rt = isolated_runtime(1);
    fl_actor_options options = isolated_actor(1000, 0);
    __atomic_store_n(&shared->deaths_left, 1000000, __ATOMIC_SEQ_CST);
    for (int round = 0; round < 2; round++) {
        __atomic_store_n(&shared->constructions, 0, __ATOMIC_SEQ_CST);
        fl_actor a = NULL;
        CHECK_OK(fl_actor_create(rt, dying_init, NULL, NULL, NULL, 0, &options, &a));
        fl_ref call = NULL;
        CHECK_OK(fl_actor_call(a, counter_increment, NULL, 0, &call));
        CHECK(constructions_reach(12)); /* the pauses have reached 1 ms << 11, about 2 s */
        double t0 = now_s();
        if (round == 0) {
            CHECK_OK(fl_actor_kill(a));
            int rc = fl_get(call, 20, NULL, NULL);
            CHECK(rc == FL_ECANCELED || rc == FL_ESTATE);
            CHECK(now_s() - t0 < 20);
        } else {
            CHECK_OK(fl_runtime_shutdown(rt));
            CHECK(now_s() - t0 < 20);
            int rc = fl_get(call, 0, NULL, NULL);
            CHECK(rc == FL_ECANCELED || rc == FL_ESTATE);
        }
        fl_ref_release(call);
        uint32_t seen = __atomic_load_n(&shared->constructions, __ATOMIC_SEQ_CST);
        usleep(50 * 1000);
        CHECK(__atomic_load_n(&shared->constructions, __ATOMIC_SEQ_CST) == seen); /* no more starts */
        if (round == 1) fl_actor_kill(a); /* frees the handle */
    }
    __atomic_store_n(&shared->deaths_left, 0, __ATOMIC_SEQ_CST);
    CHECK(child_pids(NULL, 0) == 0);
}

static void test_shutdown_with_work_in_flight(void) {
    fl_runtime rt = isolated_runtime(2);
    fl_remote_options opts = isolated(0);
    fl_ref refs[40];
    int64_t length = 1024;
    fl_arg arg = {&length, sizeof length, NULL};
    for (int i = 0; i < 40; i++) CHECK_OK(fl_remote(rt, make_words, NULL, &arg, 1, &opts, &refs[i]));
    fl_actor a = isolated_counter(rt, 0, 0, 0);
    fl_ref call = NULL;
    CHECK_OK(fl_actor_call(a, counter_increment, NULL, 0, &call));
    CHECK_OK(fl_runtime_shutdown(rt));
    int settled = 1;
    for (int i = 0; i < 40; i++) {
        int rc = fl_get(refs[i], 0, NULL, NULL);
        if (rc != FL_OK && rc != FL_ECANCELED) settled = 0;
        fl_ref_release(refs[i]);
    }
    CHECK(settled);
    int rc = fl_get(call, 0, NULL, NULL);
    CHECK(rc == FL_OK || rc == FL_ECANCELED);
    fl_ref_release(call);
    fl_actor_kill(a);
    CHECK(child_pids(NULL, 0) == 0);
}

/* An object spilled to a file reaches a worker process as that file's mapping: the worker
 * sums it right, and its mapping is the file's inode. */
static void test_spilled_object_in_a_worker(void) {
    char dir[] = "/tmp/forklift-spill-isolated-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    fl_runtime_options options;
    CHECK_OK(fl_runtime_options_init(&options));
    options.workers = 2;
    options.process_workers = 1;
    options.store_capacity = 1 << 20;
    fl_runtime rt = NULL;
    CHECK_OK(fl_runtime_create(&options, &rt));
    CHECK_OK(fl_runtime_set_spill_directory(rt, dir));
    const size_t big = 4u << 20; /* four times the capacity */
    uint64_t *words = NULL;
    fl_ref large = NULL;
    CHECK_OK(fl_create(rt, big, (void **)&words, &large));
    uint64_t expected = 0;
    for (size_t w = 0; w < big / 8; w++) {
        words[w] = w ^ 0x5555;
        expected += w ^ 0x5555;
    }
    CHECK_OK(fl_seal(large));
    fl_remote_options opts = isolated(0);
    fl_arg arg = {NULL, 0, large};
    fl_ref r = NULL;
    CHECK_OK(fl_remote(rt, sum_words, NULL, &arg, 1, &opts, &r));
    CHECK(get_int(r) == (int64_t)expected);
    fl_ref_release(r);
    int64_t host_inode = shared_mapping_inode(words);
    CHECK(host_inode > 0);
    CHECK_OK(fl_remote(rt, argument_inode, NULL, &arg, 1, &opts, &r));
    CHECK(get_int(r) == host_inode);
    fl_ref_release(r);
    fl_runtime_stats stats;
    CHECK_OK(fl_runtime_get_stats(rt, &stats));
    CHECK(stats.object_bytes <= options.store_capacity);
    fl_ref_release(large);
    CHECK_OK(fl_runtime_shutdown(rt));
    rmdir(dir);
}

/* Bytes of memory that the shared-memory arena's segments hold in this process, found through
 * the memfds in /proc/self/fd; -1 if there are none. */
static long long arena_bytes_held(void) {
    DIR *fds = opendir("/proc/self/fd");
    if (!fds) return -1;
    long long bytes = -1;
    struct dirent *entry;
    while ((entry = readdir(fds)) != NULL) {
        char path[300], target[256];
        snprintf(path, sizeof path, "/proc/self/fd/%s", entry->d_name);
        ssize_t n = readlink(path, target, sizeof target - 1);
        if (n <= 0) continue;
        target[n] = '\0';
        struct stat info;
        if (strncmp(target, "/memfd:forklift-arena", 21) != 0 || stat(path, &info) != 0) continue;
        bytes = (bytes < 0 ? 0 : bytes) + (long long)info.st_blocks * 512;
    }
    closedir(fds);
    return bytes;
}

/* A new object of `len` bytes filled with words (w * 7 + seed), sealed; its sum in `*sum`. */
static fl_ref patterned_object(fl_runtime rt, size_t len, uint64_t seed, uint64_t *sum, void **buffer) {
    uint64_t *words = NULL;
    fl_ref ref = NULL;
    CHECK_OK(fl_create(rt, len, (void **)&words, &ref));
    if (!words) return ref;
    *sum = 0;
    for (size_t w = 0; w < len / 8; w++) {
        words[w] = w * 7 + seed;
        *sum += words[w];
    }
    memset((char *)words + len / 8 * 8, 0x5a, len % 8);
    CHECK_OK(fl_seal(ref));
    if (buffer) *buffer = words;
    return ref;
}

/* Large objects live in the shared-memory arena: a freed object's pages serve the next one (in
 * this process and in the worker processes that read it, without mapping anything again), the
 * bytes are always the new object's own, and shutdown gives the kept pages back. */
static void test_arena_reuses_pages(void) {
    fl_runtime rt = isolated_runtime(1); /* one worker process: every call below runs there */
    fl_remote_options opts = isolated(0);
    const size_t len = 3u << 20;
    uint64_t sum_a = 0, sum_b = 0;
    void *buffer_a = NULL, *buffer_b = NULL;
    fl_ref a = patterned_object(rt, len, 1, &sum_a, &buffer_a);
    fl_arg arg = {NULL, 0, a};
    fl_ref r = NULL;
    int64_t first[4] = {0}, again[4] = {0};
    CHECK_OK(fl_remote(rt, probe_argument, NULL, &arg, 1, &opts, &r));
    CHECK(get_value(r, first, sizeof first));
    CHECK(first[1] > 0 && first[1] == shared_mapping_inode(buffer_a));
    /* Mapped once by the worker (a forked worker also inherits this process's own mapping of
     * a segment made before it started). */
    CHECK(first[2] == 1 || first[2] == 2);
    CHECK(first[3] == (int64_t)sum_a);
    fl_ref_release(r);
    fl_ref_release(a);
    CHECK(stats_once_settled(rt).objects == 0);

    /* The next object of that size takes the same pages here, and the worker reads it where
     * it read the first, through the one mapping it made then: no stale byte of the first. */
    fl_ref b = patterned_object(rt, len, 1000, &sum_b, &buffer_b);
    CHECK(buffer_b == buffer_a);
    CHECK(arena_bytes_held() >= (long long)len);
    arg.ref = b;
    CHECK_OK(fl_remote(rt, probe_argument, NULL, &arg, 1, &opts, &r));
    CHECK(get_value(r, again, sizeof again));
    CHECK(again[0] == first[0]);
    CHECK(again[1] == first[1]);
    CHECK(again[2] == first[2]);
    CHECK(again[3] == (int64_t)sum_b && sum_b != sum_a);
    fl_ref_release(r);
    fl_ref_release(b);

    /* Objects of many sizes (not whole pages either) made and freed in a shuffled order, some
     * alive while others come and go: each one is read back whole in the worker. */
    enum { COUNT = 48, LIVE = 6 };
    fl_ref live[LIVE] = {NULL};
    uint64_t live_sum[LIVE] = {0};
    uint64_t state = 12345;
    int mismatches = 0, mapped_again = 0;
    for (int i = 0; i < COUNT; i++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        size_t size = (256u << 10) + (size_t)(state >> 33) % (4u << 20);
        int at = (int)((state >> 20) % LIVE);
        if (live[at]) fl_ref_release(live[at]);
        live[at] = patterned_object(rt, size, (uint64_t)i, &live_sum[at], NULL);
        int probe = (int)((state >> 12) % LIVE);
        if (!live[probe]) continue;
        arg.ref = live[probe];
        int64_t seen[4] = {0};
        CHECK_OK(fl_remote(rt, probe_argument, NULL, &arg, 1, &opts, &r));
        CHECK(get_value(r, seen, sizeof seen));
        if (seen[3] != (int64_t)live_sum[probe]) mismatches++;
        if (seen[1] == first[1] && seen[2] != first[2]) mapped_again++;
        fl_ref_release(r);
    }
    CHECK(mismatches == 0);
    CHECK(mapped_again == 0); /* a segment is mapped once in the worker, however often read */
    for (int i = 0; i < LIVE; i++) {
        if (live[i]) fl_ref_release(live[i]);
    }
    fl_runtime_stats stats = stats_once_settled(rt);
    CHECK(stats.objects == 0 && stats.object_bytes == 0);
    /* Freed, the pages are kept for the next objects until shutdown gives them back. */
    CHECK(arena_bytes_held() > 0);
    CHECK_OK(fl_runtime_shutdown(rt));
    CHECK(arena_bytes_held() == 0);
    CHECK(child_pids(NULL, 0) == 0);
}

/* Resident memory of this process, in bytes. */
static long resident_bytes(void) {
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    fclose(f);
    return resident * sysconf(_SC_PAGESIZE);
}

static int echo_blob(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)nargs;
    return fl_task_return(ctx, args[0].data, args[0].len);
}

/* With process workers, values below the shared-memory minimum live on the heap: each is
 * freed with its last reference (puts, fl_create buffers and task results leaked their bytes:
 * 2,000 puts of 100 KB grew this process by 200 MB). */
static void test_small_objects_are_freed(void) {
    fl_runtime rt = isolated_runtime(1);
    static unsigned char data[100000];
    memset(data, 7, sizeof data);
    for (int round = 0; round < 2; round++) {
        long before = resident_bytes();
        for (int i = 0; i < 2000; i++) {
            fl_ref put = NULL, made = NULL, result = NULL;
            void *buffer = NULL;
            if (fl_put(rt, data, sizeof data, &put) != FL_OK) { CHECK(0); break; }
            if (fl_create(rt, sizeof data, &buffer, &made) != FL_OK) { CHECK(0); break; }
            memcpy(buffer, data, sizeof data);
            fl_seal(made);
            fl_arg arg = {data, sizeof data, NULL};
            if (i % 10 == 0 && fl_remote(rt, echo_blob, NULL, &arg, 1, NULL, &result) == FL_OK) {
                const void *got = NULL;
                size_t len = 0;
                CHECK(fl_get(result, 30, &got, &len) == FL_OK && len == sizeof data);
                fl_ref_release(result);
            }
            fl_ref_release(put);
            fl_ref_release(made);
        }
        long grown = resident_bytes() - before;
        if (round == 1) CHECK(grown < 40L * 1000 * 1000); /* the leak was 400 MB a round */
    }
    /* Settled: a worker lets go of a finished task, and of its result, just after the result
     * is seen. */
    fl_runtime_stats stats = stats_once_settled(rt);
    CHECK(stats.objects == 0 && stats.object_bytes == 0);
    CHECK_OK(fl_runtime_shutdown(rt));
}

int main(void) {
    shared = mmap(NULL, sizeof *shared, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED) return 1;
    memset(shared, 0, sizeof *shared);
    test_isolation_and_objects();
    test_small_objects_are_freed();
    test_deaths_and_retries();
    test_force_cancel();
    test_cancel_reaches_the_process();
    test_bad_input();
    test_isolated_actor();
    test_actor_restarts();
    test_restart_reads_the_constructor_argument();
    test_restart_after_a_death_in_the_constructor();
    test_kill_and_shutdown_end_the_restarts();
    test_shutdown_with_work_in_flight();
    test_spilled_object_in_a_worker();
    test_arena_reuses_pages();
    return check_finish("test_remote_isolated");
}
