/* An actor's life through the C ABI: a cancelled call that waits for an argument gives up its
 * turn at once (a never-sealed argument no longer blocks the actor); a call racing
 * fl_actor_kill gets FL_OK or FL_EHANDLE, nothing else; free_state runs once for every
 * constructor that returned 0 (a NULL state included), at fl_actor_kill or at the shutdown
 * of a runtime whose actor is still alive, and never for a constructor that failed or never
 * ran. */
#define _GNU_SOURCE
#include "check.h"
#include "remote_helpers.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>

static fl_runtime new_runtime(size_t workers) {
    fl_runtime rt = runtime_with_workers(workers);
    CHECK(rt != NULL);
    return rt;
}

static fl_arg ref_arg(fl_ref r) { return (fl_arg){NULL, 0, r}; }
static fl_arg int_arg(const int64_t *v) { return (fl_arg){v, sizeof *v, NULL}; }

/* ---- a counter actor: the state is an int64 and a count of method runs ---- */

typedef struct {
    int64_t value;
    int runs;
} counter;

static int frees_seen;           /* free_state calls */
static int null_frees_seen;      /* of them, with a NULL state */
static pthread_t last_free_thread;

static int counter_init(void *user, const fl_blob *args, size_t nargs, void **state) {
    (void)user; (void)args; (void)nargs;
    counter *c = calloc(1, sizeof *c);
    if (!c) return 12;
    *state = c;
    return 0;
}

static void counter_free(void *user, void *state) {
    (void)user;
    __atomic_add_fetch(&frees_seen, 1, __ATOMIC_SEQ_CST);
    if (!state) __atomic_add_fetch(&null_frees_seen, 1, __ATOMIC_SEQ_CST);
    last_free_thread = pthread_self();
    free(state);
}

/* Adds every argument (int64) to the value and returns the new value (atomically: calls of an
 * actor with max_concurrency above 1 may overlap). */
static int counter_add(void *state, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    counter *c = state;
    __atomic_add_fetch(&c->runs, 1, __ATOMIC_SEQ_CST);
    int64_t sum = 0;
    for (size_t i = 0; i < nargs; i++) sum += as_int(&args[i]);
    int64_t v = __atomic_add_fetch(&c->value, sum, __ATOMIC_SEQ_CST);
    return fl_task_return(ctx, &v, sizeof v);
}

/* The number of method runs so far (this one included). */
static int counter_runs(void *state, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)args; (void)nargs;
    counter *c = state;
    int64_t runs = __atomic_add_fetch(&c->runs, 1, __ATOMIC_SEQ_CST);
    return fl_task_return(ctx, &runs, sizeof runs);
}

static fl_actor new_counter(fl_runtime rt, int max_concurrency) {
    fl_actor_options options;
    fl_actor_options_init(&options);
    options.max_concurrency = max_concurrency;
    fl_actor a = NULL;
    CHECK_OK(fl_actor_create(rt, counter_init, counter_free, NULL, NULL, 0, &options, &a));
    return a;
}

/* An fl_create buffer holding `v`, not sealed yet. */
static fl_ref unsealed_int(fl_runtime rt, int64_t **slot) {
    fl_ref r = NULL;
    void *data = NULL;
    CHECK_OK(fl_create(rt, sizeof(int64_t), &data, &r));
    *slot = data;
    return r;
}

static fl_ref call_with(fl_actor a, fl_remote_fn method, const fl_arg *args, size_t nargs) {
    fl_ref r = NULL;
    CHECK_OK(fl_actor_call(a, method, args, nargs, &r));
    return r;
}

/* ---- a slow task to wait for ---- */

static volatile int gate_open;

static int wait_for_gate(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)args; (void)nargs;
    while (!__atomic_load_n(&gate_open, __ATOMIC_SEQ_CST)) pause_ms(1);
    int64_t v = 1000;
    return fl_task_return(ctx, &v, sizeof v);
}

/* A call waiting for an argument that is never sealed, or for a slow task, is cancelled: the
 * calls behind it run at once, in order, and it never runs, even once its argument resolves. */
static void test_cancelled_waiting_call_gives_up_its_turn(int max_concurrency) {
    fl_runtime rt = new_runtime(2);
    fl_actor a = new_counter(rt, max_concurrency);

    /* An unsealed buffer as the argument, released unsealed at the end. */
    int64_t *never_data = NULL;
    fl_ref never = unsealed_int(rt, &never_data);
    fl_arg never_arg = ref_arg(never);
    fl_ref blocked = call_with(a, counter_add, &never_arg, 1);
    int64_t one = 1;
    fl_arg one_arg = int_arg(&one);
    fl_ref behind = call_with(a, counter_add, &one_arg, 1);
    CHECK_RC(FL_ETIMEDOUT, fl_get(behind, 0.05, NULL, NULL)); /* held by the waiting call */
    CHECK_OK(fl_cancel(blocked));
    CHECK_RC(FL_ECANCELED, fl_get(blocked, 0, NULL, NULL));
    CHECK(get_int(behind) == 1);
    fl_ref_release(behind);

    /* A slow task as the argument: once it ends, the cancelled call still does not run. */
    __atomic_store_n(&gate_open, 0, __ATOMIC_SEQ_CST);
    fl_ref slow = NULL;
    CHECK_OK(fl_remote(rt, wait_for_gate, NULL, NULL, 0, NULL, &slow));
    fl_arg slow_arg = ref_arg(slow);
    fl_ref blocked2 = call_with(a, counter_add, &slow_arg, 1);
    int64_t ten = 10;
    fl_arg ten_arg = int_arg(&ten);
    fl_ref behind2 = call_with(a, counter_add, &ten_arg, 1);
    CHECK_OK(fl_cancel(blocked2));
    CHECK(get_int(behind2) == 11);
    __atomic_store_n(&gate_open, 1, __ATOMIC_SEQ_CST);
    CHECK(get_int(slow) == 1000);
    fl_ref runs = call_with(a, counter_runs, NULL, 0);
    CHECK(get_int(runs) == 3); /* two adds and this: neither cancelled call ran */
    CHECK_RC(FL_ECANCELED, fl_get(blocked2, 0, NULL, NULL));
    fl_ref_release(runs);

    /* The cancelled call's argument resolving later does not count it twice: a call waiting
     * for another unsealed argument still holds the calls behind it, until it is sealed. */
    int64_t *late_data = NULL;
    fl_ref late = unsealed_int(rt, &late_data);
    fl_arg late_arg = ref_arg(late);
    fl_ref cancelled_late = call_with(a, counter_add, &late_arg, 1);
    CHECK_OK(fl_cancel(cancelled_late));
    *late_data = 5;
    CHECK_OK(fl_seal(late)); /* resolves the cancelled call's argument */
    int64_t *held_data = NULL;
    fl_ref held = unsealed_int(rt, &held_data);
    fl_arg held_arg = ref_arg(held);
    fl_ref waits = call_with(a, counter_add, &held_arg, 1);
    fl_ref after = call_with(a, counter_add, &one_arg, 1);
    if (max_concurrency == 1) {
        CHECK_RC(FL_ETIMEDOUT, fl_get(after, 0.1, NULL, NULL)); /* still in order */
    }
    CHECK_RC(FL_ETIMEDOUT, fl_get(waits, 0.05, NULL, NULL)); /* never ran without its argument */
    *held_data = 100;
    CHECK_OK(fl_seal(held));
    int64_t waited = get_int(waits), last = get_int(after);
    if (max_concurrency == 1) {
        CHECK(waited == 111 && last == 112);
    } else { /* the two may overlap */
        CHECK((waited == 111 && last == 112) || (waited == 112 && last == 12));
    }
    fl_ref runs2 = call_with(a, counter_runs, NULL, 0);
    CHECK(get_int(runs2) == 6);
    CHECK_RC(FL_ECANCELED, fl_get(cancelled_late, 0, NULL, NULL));

    fl_ref refs[] = {blocked, slow, blocked2, behind2, late, cancelled_late, held, waits, after, runs2};
    for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++) CHECK_OK(fl_ref_release(refs[i]));
    CHECK_OK(fl_ref_release(never)); /* unsealed to the end */
    CHECK_OK(fl_actor_kill(a));
    CHECK_OK(fl_runtime_shutdown(rt));
    (void)never_data;
}

/* Many calls, a third waiting for unsealed arguments and cancelled in a scrambled order while
 * the others queue behind them: every call not cancelled runs, in submission order. */
static void test_many_cancelled_waiting_calls(void) {
    fl_runtime rt = new_runtime(2);
    fl_actor a = new_counter(rt, 1);
    enum { CALLS = 300 };
    fl_ref calls[CALLS], buffers[CALLS];
    int64_t *slots[CALLS];
    int64_t one = 1;
    fl_arg one_arg = int_arg(&one);
    for (int i = 0; i < CALLS; i++) {
        buffers[i] = NULL;
        if (i % 3 == 0) {
            buffers[i] = unsealed_int(rt, &slots[i]);
            fl_arg arg = ref_arg(buffers[i]);
            calls[i] = call_with(a, counter_add, &arg, 1);
        } else {
            calls[i] = call_with(a, counter_add, &one_arg, 1);
        }
    }
    for (int k = 0; k < CALLS; k++) {
        int i = (k * 7) % CALLS; /* 7 and 300 are coprime: every index once */
        if (i % 3 == 0) CHECK_OK(fl_cancel(calls[i]));
    }
    int in_order = 1;
    int64_t expected = 0;
    for (int i = 0; i < CALLS; i++) {
        if (i % 3 == 0) {
            if (fl_get(calls[i], 10, NULL, NULL) != FL_ECANCELED) in_order = 0;
            continue;
        }
        expected += 1;
        if (get_int(calls[i]) != expected) in_order = 0;
    }
    CHECK(in_order);
    for (int i = 0; i < CALLS; i++) {
        if (buffers[i]) {
            *slots[i] = 1;
            CHECK_OK(fl_seal(buffers[i]));
            fl_ref_release(buffers[i]);
        }
        fl_ref_release(calls[i]);
    }
    fl_ref runs = call_with(a, counter_runs, NULL, 0);
    CHECK(get_int(runs) == 2 * CALLS / 3 + 1);
    fl_ref_release(runs);
    CHECK_OK(fl_actor_kill(a));
    CHECK_OK(fl_runtime_shutdown(rt));
}

/* ---- calls racing a kill ---- */

typedef struct {
    fl_actor actor;
    volatile int *go;
    int other_codes; /* codes other than FL_OK and FL_EHANDLE */
    int last_other;
    int handle_errors;
} racer;

static void *call_until_killed(void *raw) {
    racer *r = raw;
    while (!__atomic_load_n(r->go, __ATOMIC_SEQ_CST)) { }
    int64_t one = 1;
    fl_arg arg = int_arg(&one);
    for (int i = 0; i < 20000; i++) {
        fl_ref ref = NULL;
        int rc = fl_actor_call(r->actor, counter_add, &arg, 1, &ref);
        if (rc == FL_OK) {
            fl_ref_release(ref);
        } else if (rc == FL_EHANDLE) {
            r->handle_errors++;
            break;
        } else {
            r->other_codes++;
            r->last_other = rc;
            break;
        }
    }
    return NULL;
}

static void test_calls_racing_a_kill(void) {
    fl_runtime rt = new_runtime(2);
    int other_codes = 0, last_other = 0, handle_errors = 0;
    for (int round = 0; round < 60; round++) {
        fl_actor a = new_counter(rt, round % 2 ? 1 : 2);
        volatile int go = 0;
        racer racers[3];
        pthread_t threads[3];
        for (int t = 0; t < 3; t++) {
            racers[t] = (racer){a, &go, 0, 0, 0};
            pthread_create(&threads[t], NULL, call_until_killed, &racers[t]);
        }
        __atomic_store_n(&go, 1, __ATOMIC_SEQ_CST);
        struct timespec ts = {0, (long)(round % 10) * 100000L};
        nanosleep(&ts, NULL);
        CHECK_OK(fl_actor_kill(a));
        for (int t = 0; t < 3; t++) {
            pthread_join(threads[t], NULL);
            other_codes += racers[t].other_codes;
            handle_errors += racers[t].handle_errors;
            if (racers[t].other_codes) last_other = racers[t].last_other;
        }
    }
    CHECK(other_codes == 0);
    if (other_codes) fprintf(stderr, "a call racing the kill returned %d (%s)\n", last_other, fl_strerror(last_other));
    CHECK(handle_errors > 0); /* the kill did land on calls in flight */
    CHECK_OK(fl_runtime_shutdown(rt));
}

/* ---- free_state ---- */

static int null_init(void *user, const fl_blob *args, size_t nargs, void **state) {
    (void)user; (void)args; (void)nargs;
    *state = NULL;
    return 0;
}

static int failing_init(void *user, const fl_blob *args, size_t nargs, void **state) {
    (void)user; (void)args; (void)nargs;
    *state = NULL;
    return 7;
}

static int state_is_null(void *state, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)args; (void)nargs;
    int64_t v = state == NULL;
    return fl_task_return(ctx, &v, sizeof v);
}

static int frees(void) { return __atomic_load_n(&frees_seen, __ATOMIC_SEQ_CST); }

/* Waits up to 5 s for free_state to have been called `count` times in all. */
static int frees_reach(int count) {
    for (int i = 0; i < 5000 && frees() < count; i++) pause_ms(1);
    return frees() == count;
}

static void test_free_state(void) {
    fl_runtime rt = new_runtime(2);
    int base = frees();

    /* A NULL state is a state: free_state gets it once. */
    fl_actor a = NULL;
    CHECK_OK(fl_actor_create(rt, null_init, counter_free, NULL, NULL, 0, NULL, &a));
    fl_ref r = call_with(a, state_is_null, NULL, 0);
    CHECK(get_int(r) == 1);
    fl_ref_release(r);
    CHECK_OK(fl_actor_kill(a));
    CHECK(frees_reach(base + 1));
    CHECK(__atomic_load_n(&null_frees_seen, __ATOMIC_SEQ_CST) == 1);

    /* A constructor that failed: no free_state. */
    CHECK_OK(fl_actor_create(rt, failing_init, counter_free, NULL, NULL, 0, NULL, &a));
    r = call_with(a, state_is_null, NULL, 0);
    CHECK_RC(FL_ESTATE, fl_get(r, 30, NULL, NULL));
    fl_ref_release(r);
    CHECK_OK(fl_actor_kill(a));
    pause_ms(20);
    CHECK(frees() == base + 1);

    /* A constructor killed before it ran (it waited for an unsealed argument): no free_state. */
    int64_t *data = NULL;
    fl_ref never = unsealed_int(rt, &data);
    fl_arg arg = ref_arg(never);
    CHECK_OK(fl_actor_create(rt, null_init, counter_free, NULL, &arg, 1, NULL, &a));
    CHECK_OK(fl_actor_kill(a));
    fl_ref_release(never);
    pause_ms(20);
    CHECK(frees() == base + 1);

    /* An actor still alive at shutdown: the shutdown frees its state, on its own thread, once;
     * the handle then refuses calls with FL_ESTATE, and fl_actor_kill frees it. */
    fl_actor alive = new_counter(rt, 1);
    fl_actor idle = new_counter(rt, 2);
    int64_t two = 2;
    fl_arg two_arg = int_arg(&two);
    r = call_with(alive, counter_add, &two_arg, 1);
    CHECK(get_int(r) == 2);
    fl_ref_release(r);
    r = call_with(idle, counter_runs, NULL, 0); /* its constructor has run */
    CHECK(get_int(r) == 1);
    fl_ref_release(r);
    last_free_thread = (pthread_t)0;
    CHECK_OK(fl_runtime_shutdown(rt));
    CHECK(frees() == base + 3);
    CHECK(pthread_equal(last_free_thread, pthread_self()));
    fl_ref late = NULL;
    CHECK_RC(FL_ESTATE, fl_actor_call(alive, counter_add, &two_arg, 1, &late));
    CHECK(late == NULL);
    CHECK_OK(fl_actor_kill(alive));
    CHECK_OK(fl_actor_kill(idle));
    CHECK_RC(FL_EHANDLE, fl_actor_kill(alive));
    CHECK(frees() == base + 3);
}

/* A shutdown waits for an actor's running call, then frees its state; a call queued behind it
 * resolves as cancelled. */
static void *open_gate_soon(void *unused) {
    (void)unused;
    pause_ms(100);
    __atomic_store_n(&gate_open, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static int counter_wait_gate(void *state, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)args; (void)nargs;
    counter *c = state;
    while (!__atomic_load_n(&gate_open, __ATOMIC_SEQ_CST)) pause_ms(1);
    c->value += 1;
    return fl_task_return(ctx, &c->value, sizeof c->value);
}

static void test_shutdown_frees_after_the_running_call(void) {
    fl_runtime rt = new_runtime(2);
    int base = frees();
    __atomic_store_n(&gate_open, 0, __ATOMIC_SEQ_CST);
    fl_actor a = new_counter(rt, 1);
    fl_ref running = call_with(a, counter_wait_gate, NULL, 0);
    fl_ref queued = call_with(a, counter_runs, NULL, 0);
    pause_ms(20);
    pthread_t opener;
    pthread_create(&opener, NULL, open_gate_soon, NULL);
    CHECK_OK(fl_runtime_shutdown(rt));
    pthread_join(opener, NULL);
    CHECK(get_int(running) == 1);
    int rc = fl_get(queued, 0, NULL, NULL);
    CHECK(rc == FL_ECANCELED || rc == FL_OK); /* it may have run before the shutdown began */
    CHECK(frees() == base + 1);
    fl_ref_release(running);
    fl_ref_release(queued);
    CHECK_OK(fl_actor_kill(a));
    CHECK(frees() == base + 1);
}

/* ---- a constructor whose argument failed ---- */

static int failing_task(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)args; (void)nargs; (void)ctx;
    return 5;
}

static int die_in_process(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx) {
    (void)user; (void)args; (void)nargs; (void)ctx;
    raise(SIGKILL);
    return 0;
}

/* Calls of an actor whose constructor failed because an argument did fail with FL_ESTATE (an
 * actor without state), whatever the argument's own status: cancelled, a task error, or a
 * worker process that died (the actor itself runs on threads). */
static void test_constructor_argument_failed(void) {
    fl_runtime rt = runtime_with_processes(1);
    CHECK(rt != NULL);
    if (!rt) return;
    __atomic_store_n(&gate_open, 0, __ATOMIC_SEQ_CST);
    fl_ref slow = NULL;
    CHECK_OK(fl_remote(rt, wait_for_gate, NULL, NULL, 0, NULL, &slow));
    CHECK_OK(fl_cancel(slow));
    fl_ref failed = NULL;
    CHECK_OK(fl_remote(rt, failing_task, NULL, NULL, 0, NULL, &failed));
    fl_remote_options isolated;
    fl_remote_options_init(&isolated);
    isolated.isolate = 1;
    fl_ref died = NULL;
    CHECK_OK(fl_remote(rt, die_in_process, NULL, NULL, 0, &isolated, &died));
    fl_ref causes[3] = {slow, failed, died};
    int expected_cause[3] = {FL_ECANCELED, FL_ETASK, FL_EWORKER};
    for (int i = 0; i < 3; i++) {
        CHECK_RC(expected_cause[i], fl_get(causes[i], 30, NULL, NULL));
        fl_arg arg = ref_arg(causes[i]);
        fl_actor a = NULL;
        CHECK_OK(fl_actor_create(rt, counter_init, counter_free, NULL, &arg, 1, NULL, &a));
        for (int call = 0; call < 3; call++) {
            fl_ref r = call_with(a, counter_runs, NULL, 0);
            CHECK_RC(FL_ESTATE, fl_get(r, 30, NULL, NULL));
            const char *message = fl_last_error();
            CHECK(message && strstr(message, "constructor failed") && strstr(message, "argument 0 failed"));
            fl_ref_release(r);
        }
        CHECK_OK(fl_actor_kill(a));
    }
    __atomic_store_n(&gate_open, 1, __ATOMIC_SEQ_CST);
    fl_ref_release(slow);
    fl_ref_release(failed);
    fl_ref_release(died);
    CHECK_OK(fl_runtime_shutdown(rt));
}

/* ---- a shutdown racing callers ---- */

typedef struct {
    fl_actor actor;
    volatile int stop;
    int unexpected; /* codes of fl_actor_call other than FL_OK and FL_ESTATE */
} caller;

/* Calls the actor, cancels every other call and releases it, until told to stop. */
static void *call_and_cancel(void *raw) {
    caller *c = raw;
    for (long i = 0; !__atomic_load_n(&c->stop, __ATOMIC_SEQ_CST); i++) {
        fl_ref r = NULL;
        int rc = fl_actor_call(c->actor, counter_runs, NULL, 0, &r);
        if (rc == FL_ESTATE) continue;
        if (rc != FL_OK) {
            c->unexpected++;
            continue;
        }
        if (i % 2) fl_cancel(r);
        fl_ref_release(r);
    }
    return NULL;
}

/* A shutdown while two threads call an actor (and cancel calls): it frees the state once, on its
 * own thread, before it returns, whichever thread held the actor's turn at that moment. */
static void test_shutdown_racing_callers(void) {
    for (int round = 0; round < 30; round++) {
        fl_runtime rt = new_runtime(2);
        int base = frees();
        caller c = {new_counter(rt, 1 + round % 2), 0, 0};
        fl_ref first = call_with(c.actor, counter_runs, NULL, 0); /* the constructor has run */
        CHECK(get_int(first) == 1);
        fl_ref_release(first);
        pthread_t threads[2];
        for (int t = 0; t < 2; t++) pthread_create(&threads[t], NULL, call_and_cancel, &c);
        pause_ms(2 + round % 5);
        last_free_thread = (pthread_t)0;
        CHECK_OK(fl_runtime_shutdown(rt));
        CHECK(frees() == base + 1);
        CHECK(pthread_equal(last_free_thread, pthread_self()));
        __atomic_store_n(&c.stop, 1, __ATOMIC_SEQ_CST);
        for (int t = 0; t < 2; t++) pthread_join(threads[t], NULL);
        CHECK(c.unexpected == 0);
        CHECK_OK(fl_actor_kill(c.actor));
        CHECK(frees() == base + 1);
    }
}

int main(void) {
    test_cancelled_waiting_call_gives_up_its_turn(1);
    test_cancelled_waiting_call_gives_up_its_turn(3);
    test_many_cancelled_waiting_calls();
    test_calls_racing_a_kill();
    test_free_state();
    test_shutdown_frees_after_the_running_call();
    test_constructor_argument_failed();
    test_shutdown_racing_callers();
    return check_finish("actor_lifecycle");
}
