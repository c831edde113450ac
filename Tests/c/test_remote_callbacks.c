/* The runtime's callbacks: fl_remote_options.release_user hands a task's user pointer back
 * exactly once, however the task ends (ran, retried, cancelled, an argument failed, shut
 * down), and never when the submission itself failed; fl_ref_on_ready calls back once an
 * object resolves, whatever resolves it. */
#define _GNU_SOURCE
#include "check.h"
#include "remote_helpers.h"

#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

/* What each task gets as `user`: a malloc'd record the release frees, after noting it. */
typedef struct {
    int id;
    int runs;      /* times the function ran */
    int fail_runs; /* fail this many runs first */
} job;

#define MAX_IDS 64
static int released[MAX_IDS];       /* times release_user saw each id */
static int runs_when_released[MAX_IDS];
static volatile int gate_open;

static void release_job(void *user) {
    job *j = user;
    __atomic_add_fetch(&released[j->id], 1, __ATOMIC_SEQ_CST);
    runs_when_released[j->id] = __atomic_load_n(&j->runs, __ATOMIC_SEQ_CST);
    if (j->id < 30) free(j); /* the isolated tests' records are static */
}

static int released_count(int id) { return __atomic_load_n(&released[id], __ATOMIC_SEQ_CST); }

static job *new_job(int id, int fail_runs) {
    job *j = calloc(1, sizeof *j);
    j->id = id;
    j->fail_runs = fail_runs;
    return j;
}

/* Returns the id, failing the first `fail_runs` runs; reports whether the release had already
 * happened (it must not have: the function still has `user`). */
static int run_job(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)args; (void)nargs;
    job *j = user;
    int run = __atomic_add_fetch(&j->runs, 1, __ATOMIC_SEQ_CST);
    if (released_count(j->id) != 0) return fl_task_fail(ctx, 99, "released before it ran");
    if (run <= j->fail_runs) return fl_task_fail(ctx, 5, "not yet");
    int64_t v = j->id;
    return fl_task_return(ctx, &v, sizeof v);
}

/* Two results: the id and its square. */
static int run_job_twice(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)args; (void)nargs;
    job *j = user;
    __atomic_add_fetch(&j->runs, 1, __ATOMIC_SEQ_CST);
    int64_t a = j->id, b = (int64_t)j->id * j->id;
    if (fl_task_return_at(ctx, 1, &b, sizeof b) != FL_OK) return 1;
    return fl_task_return(ctx, &a, sizeof a);
}

static int wait_for_gate(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)args; (void)nargs;
    while (!__atomic_load_n(&gate_open, __ATOMIC_ACQUIRE)) pause_ms(1);
    int64_t one = 1;
    return fl_task_return(ctx, &one, sizeof one);
}

static int fail_now(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)args; (void)nargs;
    return fl_task_fail(ctx, 7, "the cause");
}

static int die_in_process(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)args; (void)nargs; (void)ctx;
    raise(SIGKILL);
    return 0;
}

static fl_runtime new_runtime(size_t workers, size_t process_workers) {
    fl_runtime_options options;
    CHECK_OK(fl_runtime_options_init(&options));
    options.workers = workers;
    options.process_workers = process_workers;
    fl_runtime rt = NULL;
    CHECK_OK(fl_runtime_create(&options, &rt));
    return rt;
}

static fl_remote_options releasing(void) {
    fl_remote_options options;
    fl_remote_options_init(&options);
    options.release_user = release_job;
    return options;
}

/* A task that runs: released once, after its run and before its result is there. */
static void test_after_running(fl_runtime rt) {
    fl_remote_options options = releasing();
    CHECK(fl_remote_options_init(&options) == FL_OK && options.release_user == NULL); /* default: none */
    options = releasing();
    fl_ref ref = NULL;
    CHECK_OK(fl_remote(rt, run_job, new_job(0, 0), NULL, 0, &options, &ref));
    CHECK(get_int(ref) == 0);
    CHECK(released_count(0) == 1); /* before fl_get saw the result */
    CHECK(runs_when_released[0] == 1);
    CHECK_OK(fl_ref_release(ref));

    /* Retries on error: once, after the last run. */
    options.max_retries = 3;
    options.retry_on_error = 1;
    CHECK_OK(fl_remote(rt, run_job, new_job(1, 2), NULL, 0, &options, &ref));
    CHECK(get_int(ref) == 1);
    CHECK(released_count(1) == 1 && runs_when_released[1] == 3);
    CHECK_OK(fl_ref_release(ref));
    /* Retries that run out: the failure stands, and the release came once. */
    options.max_retries = 1;
    CHECK_OK(fl_remote(rt, run_job, new_job(2, 5), NULL, 0, &options, &ref));
    CHECK_RC(FL_ETASK, fl_get(ref, 30, NULL, NULL));
    CHECK(released_count(2) == 1 && runs_when_released[2] == 2);
    CHECK_OK(fl_ref_release(ref));

    /* Several returns: released before any of them resolves. */
    options = releasing();
    fl_ref refs[2] = {NULL, NULL};
    CHECK_OK(fl_remote_multi(rt, run_job_twice, new_job(3, 0), NULL, 0, &options, 2, refs));
    CHECK(get_int(refs[1]) == 9);
    CHECK(released_count(3) == 1);
    CHECK(get_int(refs[0]) == 3);
    CHECK_OK(fl_ref_release(refs[0]));
    CHECK_OK(fl_ref_release(refs[1]));

    /* A thread waiting in fl_get runs the queued task itself: released there, as well. */
    gate_open = 0;
    fl_ref blocker[2];
    size_t workers = 2; /* the runtime's */
    for (size_t i = 0; i < workers; i++) CHECK_OK(fl_remote(rt, wait_for_gate, NULL, NULL, 0, NULL, &blocker[i]));
    CHECK_OK(fl_remote(rt, run_job, new_job(4, 0), NULL, 0, &options, &ref));
    const void *data = NULL;
    size_t len = 0;
    CHECK_OK(fl_get(ref, FL_FOREVER, &data, &len)); /* no deadline: it runs the task itself */
    CHECK(len == 8 && *(const int64_t *)data == 4);
    CHECK(released_count(4) == 1);
    __atomic_store_n(&gate_open, 1, __ATOMIC_RELEASE);
    for (size_t i = 0; i < workers; i++) {
        CHECK(get_int(blocker[i]) == 1);
        CHECK_OK(fl_ref_release(blocker[i]));
    }
    CHECK_OK(fl_ref_release(ref));
}

/* Tasks that end without running: each released once, none run. */
static void test_without_running(void) {
    fl_runtime rt = new_runtime(1, 0);
    fl_remote_options options = releasing();
    gate_open = 0;
    fl_ref blocker = NULL, queued = NULL, waiting = NULL, on_failure = NULL, failing = NULL;
    fl_ref at_shutdown = NULL, behind_cancel = NULL;
    CHECK_OK(fl_remote(rt, wait_for_gate, NULL, NULL, 0, NULL, &blocker)); /* holds the worker */
    CHECK_OK(fl_remote(rt, run_job, new_job(10, 0), NULL, 0, &options, &queued));
    fl_arg on_blocker = {NULL, 0, blocker};
    CHECK_OK(fl_remote(rt, run_job, new_job(11, 0), &on_blocker, 1, &options, &waiting));
    /* Cancelled while queued, and while waiting for an argument. */
    CHECK_OK(fl_cancel(queued));
    CHECK_OK(fl_cancel(waiting));
    CHECK_RC(FL_ECANCELED, fl_get(queued, 0, NULL, NULL));
    /* A task behind the cancelled one's result: ends at the cancel, on this thread. */
    fl_arg on_cancelled = {NULL, 0, queued};
    CHECK_OK(fl_remote(rt, run_job, new_job(12, 0), &on_cancelled, 1, &options, &behind_cancel));
    CHECK(released_count(12) == 1); /* its argument had already failed: it ended in fl_remote */
    /* An argument that fails. */
    CHECK_OK(fl_remote(rt, fail_now, NULL, NULL, 0, NULL, &failing));
    fl_arg on_failing = {NULL, 0, failing};
    CHECK_OK(fl_remote(rt, run_job, new_job(13, 0), &on_failing, 1, &options, &on_failure));
    /* Queued at shutdown. */
    CHECK_OK(fl_remote(rt, run_job, new_job(14, 0), NULL, 0, &options, &at_shutdown));
    CHECK(released_count(14) == 0);
    __atomic_store_n(&gate_open, 1, __ATOMIC_RELEASE);
    CHECK(get_int(blocker) == 1);
    CHECK_RC(FL_ETASK, fl_get(on_failure, 30, NULL, NULL));
    CHECK(released_count(13) == 1 && runs_when_released[13] == 0);
    CHECK_OK(fl_runtime_shutdown(rt));
    for (int id = 10; id <= 14; id++) {
        CHECK(released_count(id) == 1);
        CHECK(runs_when_released[id] == 0 || id == 14); /* 14 may have run before the shutdown */
    }
    fl_ref refs[7] = {blocker, queued, waiting, on_failure, failing, at_shutdown, behind_cancel};
    for (int i = 0; i < 7; i++) CHECK_OK(fl_ref_release(refs[i]));
}

static int64_t seven(void) { return 7; }

/* A submission that fails keeps `user` the caller's; the calls whose user pointer is not the
 * task's own refuse a release. */
static void test_refused(fl_runtime rt) {
    fl_remote_options options = releasing();
    job *mine = new_job(20, 0);
    fl_ref ref = NULL;
    fl_arg bad = {NULL, 4, NULL}; /* a blob NULL with a length */
    CHECK_RC(FL_EINVAL, fl_remote(rt, run_job, mine, &bad, 1, &options, &ref));
    options.max_retries = -1;
    CHECK_RC(FL_EINVAL, fl_remote(rt, run_job, mine, NULL, 0, &options, &ref));
    options = releasing();
    CHECK_RC(FL_EHANDLE, fl_remote(NULL, run_job, mine, NULL, 0, &options, &ref));
    fl_ref refs[2];
    CHECK_RC(FL_EINVAL, fl_remote_multi(rt, run_job, mine, NULL, 0, &options, 0, refs));
    CHECK(released_count(20) == 0);
    CHECK_OK(fl_function_register("release_test.run_job", run_job, mine));
    CHECK_RC(FL_EINVAL, fl_remote_named(rt, "release_test.run_job", NULL, 0, &options, &ref));
    CHECK(strstr(fl_last_error(), "release_user") != NULL);
    CHECK_OK(fl_function_unregister("release_test.run_job"));
    fl_signature sig = NULL;
    CHECK_OK(fl_signature_create("i64()", &sig));
    CHECK_RC(FL_EINVAL, fl_remote_typed(rt, sig, (fl_fn)seven, NULL, 0, &options, &ref));
    CHECK(strstr(fl_last_error(), "release_user") != NULL);
    CHECK_OK(fl_signature_destroy(sig));
    CHECK(released_count(20) == 0);
    /* Options of the layout before release_user are still read, with none. */
    options.size = offsetof(fl_remote_options, release_user);
    CHECK_OK(fl_remote(rt, run_job, mine, NULL, 0, &options, &ref));
    CHECK(get_int(ref) == 20);
    CHECK_OK(fl_ref_release(ref));
    CHECK(released_count(20) == 0);
    free(mine);
}

/* An isolated task: released in this process once, after its runs (its worker process dying,
 * and the retry). */
static job isolated_jobs[2] = {{30, 0, 0}, {31, 0, 0}}; /* there before the worker process */

static void test_isolated(void) {
    fl_runtime rt = new_runtime(1, 1);
    fl_remote_options options = releasing();
    options.isolate = 1;
    options.max_retries = 1;
    fl_ref ref = NULL;
    CHECK_OK(fl_remote(rt, die_in_process, &isolated_jobs[0], NULL, 0, &options, &ref));
    CHECK_RC(FL_EWORKER, fl_get(ref, 60, NULL, NULL));
    CHECK(released_count(30) == 1);
    CHECK_OK(fl_ref_release(ref));
    options.max_retries = 0;
    CHECK_OK(fl_remote(rt, run_job, &isolated_jobs[1], NULL, 0, &options, &ref));
    CHECK(get_int(ref) == 31);
    CHECK(released_count(31) == 1 && runs_when_released[31] == 0); /* it ran in the other process */
    CHECK_OK(fl_ref_release(ref));
    CHECK_OK(fl_runtime_shutdown(rt));
}

/* Many tasks from several threads, half cancelled: every user pointer comes back once (the
 * address sanitizer run would report a double free or a leak). */
typedef struct { fl_runtime rt; int base; } submitter;

static int counted_releases;
static void release_counted(void *user) {
    __atomic_add_fetch(&counted_releases, 1, __ATOMIC_SEQ_CST);
    free(user);
}

static int run_counted(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)args; (void)nargs;
    int64_t v = *(int *)user;
    return fl_task_return(ctx, &v, sizeof v);
}

static int run_counted_arg(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)nargs;
    int64_t v = as_int(&args[0]);
    return fl_task_return(ctx, &v, sizeof v);
}

static void *submit_many(void *raw) {
    submitter *s = raw;
    fl_remote_options options;
    fl_remote_options_init(&options);
    options.release_user = release_counted;
    for (int i = 0; i < 2000; i++) {
        int *value = malloc(sizeof *value);
        *value = s->base + i;
        fl_ref ref = NULL;
        if (fl_remote(s->rt, run_counted, value, NULL, 0, &options, &ref) != FL_OK) {
            free(value);
            continue;
        }
        if (i % 2) fl_cancel(ref);
        fl_ref_release(ref);
    }
    return NULL;
}

static void test_many_threads(void) {
    fl_runtime rt = new_runtime(2, 0);
    pthread_t threads[4];
    submitter subs[4];
    for (int t = 0; t < 4; t++) {
        subs[t] = (submitter){rt, t * 10000};
        pthread_create(&threads[t], NULL, submit_many, &subs[t]);
    }
    for (int t = 0; t < 4; t++) pthread_join(threads[t], NULL);
    CHECK_OK(fl_runtime_shutdown(rt));
    CHECK(__atomic_load_n(&counted_releases, __ATOMIC_SEQ_CST) == 4 * 2000);
}

/* ---- fl_ref_on_ready ---- */

typedef struct {
    int calls;
    int status;
    pthread_t thread;
    fl_ref read;     /* a reference to read in the callback (NULL: none) */
    int64_t value;   /* what fl_get(read, 0) gave there */
    int get_rc;
} readiness;

static void on_ready(void *user, int status) {
    readiness *r = user;
    r->status = status;
    r->thread = pthread_self();
    if (r->read) {
        const void *data = NULL;
        size_t len = 0;
        r->get_rc = fl_get(r->read, 0, &data, &len);
        if (r->get_rc == FL_OK && len == sizeof r->value) memcpy(&r->value, data, sizeof r->value);
    }
    __atomic_add_fetch(&r->calls, 1, __ATOMIC_SEQ_CST);
}

static int calls_of(readiness *r) { return __atomic_load_n(&r->calls, __ATOMIC_SEQ_CST); }

/* Waits up to 30 s for the callback. */
static int called(readiness *r) {
    for (int i = 0; i < 30000 && calls_of(r) == 0; i++) pause_ms(1);
    return calls_of(r);
}

static int echo_after_gate(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)nargs;
    while (!__atomic_load_n(&gate_open, __ATOMIC_ACQUIRE)) pause_ms(1);
    int64_t v = as_int(&args[0]);
    return fl_task_return(ctx, &v, sizeof v);
}

static void test_on_ready(void) {
    fl_runtime rt = new_runtime(1, 0);
    /* Resolved already: at once, on this thread. */
    int64_t five = 5;
    fl_ref put = NULL;
    CHECK_OK(fl_put(rt, &five, sizeof five, &put));
    readiness now = {0};
    now.read = put;
    CHECK_OK(fl_ref_on_ready(put, on_ready, &now));
    CHECK(calls_of(&now) == 1 && now.status == FL_OK && pthread_equal(now.thread, pthread_self()));
    CHECK(now.get_rc == FL_OK && now.value == 5);

    /* A task's result: once it resolves, on the worker, readable there; two callbacks. */
    gate_open = 0;
    fl_arg arg = {&five, sizeof five, NULL};
    fl_ref task = NULL;
    CHECK_OK(fl_remote(rt, echo_after_gate, NULL, &arg, 1, NULL, &task));
    readiness first = {0}, second = {0};
    first.read = task;
    CHECK_OK(fl_ref_on_ready(task, on_ready, &first));
    CHECK_OK(fl_ref_on_ready(task, on_ready, &second));
    pause_ms(20);
    CHECK(calls_of(&first) == 0 && calls_of(&second) == 0); /* not before it resolves */
    __atomic_store_n(&gate_open, 1, __ATOMIC_RELEASE);
    CHECK(called(&first) == 1 && called(&second) == 1);
    CHECK(first.status == FL_OK && first.get_rc == FL_OK && first.value == 5);
    CHECK(!pthread_equal(first.thread, pthread_self()));
    CHECK(get_int(task) == 5);

    /* A failure: its status. A dependent of it: the cause's status. */
    fl_ref failing = NULL, dependent = NULL;
    gate_open = 0;
    fl_ref blocker = NULL;
    CHECK_OK(fl_remote(rt, echo_after_gate, NULL, &arg, 1, NULL, &blocker));
    CHECK_OK(fl_remote(rt, fail_now, NULL, NULL, 0, NULL, &failing));
    fl_arg on_failing = {NULL, 0, failing};
    CHECK_OK(fl_remote(rt, run_job, NULL, &on_failing, 1, NULL, &dependent));
    readiness failed = {0}, after = {0};
    CHECK_OK(fl_ref_on_ready(failing, on_ready, &failed));
    CHECK_OK(fl_ref_on_ready(dependent, on_ready, &after));
    /* Cancelled: at the cancel, on this thread (the worker is still held). */
    fl_ref queued = NULL;
    CHECK_OK(fl_remote(rt, echo_after_gate, NULL, &arg, 1, NULL, &queued));
    readiness cancelled = {0};
    CHECK_OK(fl_ref_on_ready(queued, on_ready, &cancelled));
    CHECK_OK(fl_cancel(queued));
    CHECK(calls_of(&cancelled) == 1 && cancelled.status == FL_ECANCELED);
    CHECK(pthread_equal(cancelled.thread, pthread_self()));
    __atomic_store_n(&gate_open, 1, __ATOMIC_RELEASE);
    CHECK(called(&failed) == 1 && failed.status == FL_ETASK);
    CHECK(called(&after) == 1 && after.status == FL_ETASK);

    /* fl_create: at fl_seal, on the sealing thread; one whose last reference goes unsealed:
     * FL_ECANCELED then. */
    void *buffer = NULL;
    fl_ref made = NULL, dropped = NULL;
    CHECK_OK(fl_create(rt, 8, &buffer, &made));
    readiness sealed = {0}, never = {0};
    sealed.read = made;
    CHECK_OK(fl_ref_on_ready(made, on_ready, &sealed));
    memcpy(buffer, &five, sizeof five);
    CHECK(calls_of(&sealed) == 0);
    CHECK_OK(fl_seal(made));
    CHECK(calls_of(&sealed) == 1 && sealed.status == FL_OK && sealed.value == 5);
    CHECK_OK(fl_create(rt, 8, &buffer, &dropped));
    CHECK_OK(fl_ref_on_ready(dropped, on_ready, &never));
    CHECK_OK(fl_ref_release(dropped));
    CHECK(calls_of(&never) == 1 && never.status == FL_ECANCELED);

    /* Queued at shutdown: FL_ECANCELED by then. */
    gate_open = 0;
    fl_ref held = NULL, late = NULL;
    CHECK_OK(fl_remote(rt, echo_after_gate, NULL, &arg, 1, NULL, &held));
    CHECK_OK(fl_remote(rt, echo_after_gate, NULL, &arg, 1, NULL, &late));
    readiness at_shutdown = {0};
    CHECK_OK(fl_ref_on_ready(late, on_ready, &at_shutdown));
    pause_ms(20);
    __atomic_store_n(&gate_open, 1, __ATOMIC_RELEASE);
    CHECK_OK(fl_runtime_shutdown(rt));
    CHECK(calls_of(&at_shutdown) == 1);
    CHECK(at_shutdown.status == FL_OK || at_shutdown.status == FL_ECANCELED);

    /* Bad input. */
    CHECK_RC(FL_EHANDLE, fl_ref_on_ready(NULL, on_ready, NULL));
    CHECK_RC(FL_EINVAL, fl_ref_on_ready(put, NULL, NULL));
    CHECK_RC(FL_EHANDLE, fl_ref_on_ready(dropped, on_ready, &never)); /* released */
    CHECK(calls_of(&never) == 1);
    fl_ref refs[9] = {put, task, failing, dependent, blocker, queued, made, held, late};
    for (int i = 0; i < 9; i++) CHECK_OK(fl_ref_release(refs[i]));
}

/* Many objects, callbacks registered from several threads while the tasks resolve: each
 * called once (a callback that frees its record twice would show under the sanitizer). */
static int ready_calls;
static void count_ready(void *user, int status) {
    (void)status;
    __atomic_add_fetch(&ready_calls, 1, __ATOMIC_SEQ_CST);
    free(user);
}

static void *register_many(void *raw) {
    submitter *s = raw;
    for (int i = 0; i < 2000; i++) {
        int64_t v = i;
        fl_arg arg = {&v, sizeof v, NULL};
        fl_ref ref = NULL;
        if (fl_remote(s->rt, run_counted_arg, NULL, &arg, 1, NULL, &ref) != FL_OK) continue;
        if (i % 3 == 0) fl_cancel(ref);
        if (fl_ref_on_ready(ref, count_ready, malloc(1)) != FL_OK) continue;
        fl_ref_release(ref);
    }
    return NULL;
}

static void test_on_ready_many_threads(void) {
    fl_runtime rt = new_runtime(2, 0);
    pthread_t threads[4];
    submitter subs[4];
    for (int t = 0; t < 4; t++) {
        subs[t] = (submitter){rt, 0};
        pthread_create(&threads[t], NULL, register_many, &subs[t]);
    }
    for (int t = 0; t < 4; t++) pthread_join(threads[t], NULL);
    CHECK_OK(fl_runtime_shutdown(rt));
    CHECK(__atomic_load_n(&ready_calls, __ATOMIC_SEQ_CST) == 4 * 2000);
}

int main(void) {
    alarm(300);
    fl_runtime rt = new_runtime(2, 0);
    test_after_running(rt);
    test_refused(rt);
    CHECK_OK(fl_runtime_shutdown(rt));
    test_without_running();
    test_isolated();
    test_many_threads();
    test_on_ready();
    test_on_ready_many_threads();
    return check_finish("remote_callbacks");
}
