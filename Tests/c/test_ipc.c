/* Pipes, locks, events and semaphores between processes, and shared objects opened by name,
 * through the public C ABI (multiprocessing.Pipe, Lock, RLock, Event, Semaphore). */
#define _GNU_SOURCE
#include "check.h"
#include "children.h"

#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

static fl_pipe child_end;
static fl_pipe parent_end;
static fl_lock shared_lock;
static fl_event shared_event;
static fl_semaphore shared_semaphore;
static fl_shm shared_cells;

static int64_t *cells(void) {
    int64_t *data = NULL;
    fl_shm_data(shared_cells, (void **)&data, NULL);
    return data;
}

static void pause_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- pipes ---- */

static void test_pipe_in_process(void) {
    fl_pipe a = NULL, b = NULL;
    CHECK_RC(FL_EINVAL, fl_pipe_create(1, NULL, &b));
    CHECK_OK(fl_pipe_create(1, &a, &b));
    CHECK(a != NULL && b != NULL && a != b);
    int fd = -1;
    CHECK_OK(fl_pipe_fd(a, &fd));
    CHECK(fd >= 0);

    /* Sizes around the inline limit and a large message through shared memory. */
    size_t sizes[] = {0, 1, 100, 65536, 65537, 5u << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        unsigned char *out = malloc(n + 1), *in = malloc(n + 1);
        for (size_t k = 0; k < n; k++) out[k] = (unsigned char)(k * 7 + i);
        CHECK_OK(fl_pipe_send(a, out, n, 5));
        CHECK_OK(fl_pipe_poll(b, 5));
        size_t len = 12345;
        CHECK_OK(fl_pipe_recv(b, in, n + 1, &len, 5));
        CHECK(len == n && memcmp(in, out, n) == 0);
        /* And back the other way (duplex). */
        CHECK_OK(fl_pipe_send(b, out, n, 5));
        CHECK_OK(fl_pipe_recv(a, in, n + 1, &len, 5));
        CHECK(len == n && memcmp(in, out, n) == 0);
        free(out);
        free(in);
    }

    /* Order, a too-small buffer keeps the message, NULL/0 asks the size. */
    for (int64_t v = 0; v < 100; v++) CHECK_OK(fl_pipe_send(a, &v, sizeof v, 5));
    int64_t got = -1;
    size_t len = 0;
    char tiny[2];
    CHECK_RC(FL_ERANGE, fl_pipe_recv(b, tiny, sizeof tiny, &len, 1));
    CHECK(len == 8);
    CHECK_RC(FL_ERANGE, fl_pipe_recv(b, NULL, 0, &len, 1));
    CHECK(len == 8);
    int ordered = 1;
    for (int64_t v = 0; v < 100; v++) {
        if (fl_pipe_recv(b, &got, sizeof got, &len, 5) != FL_OK || got != v) ordered = 0;
    }
    CHECK(ordered);

    /* Timeouts. */
    CHECK_RC(FL_ETIMEDOUT, fl_pipe_poll(b, 0));
    CHECK_RC(FL_ETIMEDOUT, fl_pipe_recv(b, &got, sizeof got, &len, 0));
    CHECK_RC(FL_ETIMEDOUT, fl_pipe_recv(b, &got, sizeof got, &len, 0.05));
    CHECK_RC(FL_EINVAL, fl_pipe_recv(b, &got, sizeof got, NULL, 0));
    CHECK_RC(FL_EINVAL, fl_pipe_send(a, NULL, 4, 0));

    /* A full pipe times out its sender. */
    static char chunk[60000];
    int sent = 0, rc;
    while ((rc = fl_pipe_send(a, chunk, sizeof chunk, 0.02)) == FL_OK) sent++;
    CHECK_RC(FL_ETIMEDOUT, rc);
    CHECK(sent > 0);
    for (int i = 0; i < sent; i++) CHECK_OK(fl_pipe_recv(b, chunk, sizeof chunk, &len, 1));

    /* Closing one end: the other drains what is left, then sees the end. */
    CHECK_OK(fl_pipe_send(a, "last", 4, 1));
    CHECK_OK(fl_pipe_close(a));
    CHECK_RC(FL_EHANDLE, fl_pipe_send(a, "x", 1, 0));
    char text[8] = {0};
    CHECK_OK(fl_pipe_recv(b, text, sizeof text, &len, 1));
    CHECK(len == 4 && memcmp(text, "last", 4) == 0);
    CHECK_RC(FL_EDONE, fl_pipe_recv(b, text, sizeof text, &len, 1));
    CHECK_OK(fl_pipe_poll(b, 0)); /* the end of the stream does not block */
    CHECK_RC(FL_ESTATE, fl_pipe_send(b, "x", 1, 1));
    CHECK_OK(fl_pipe_close(b));

    /* One-way pipes: first receives, second sends. */
    fl_pipe r = NULL, w = NULL;
    CHECK_OK(fl_pipe_create(0, &r, &w));
    CHECK_RC(FL_ESTATE, fl_pipe_send(r, "x", 1, 0));
    CHECK_RC(FL_ESTATE, fl_pipe_recv(w, text, sizeof text, &len, 0));
    CHECK_RC(FL_ESTATE, fl_pipe_poll(w, 0));
    CHECK_OK(fl_pipe_send(w, "one", 3, 1));
    CHECK_OK(fl_pipe_recv(r, text, sizeof text, &len, 1));
    CHECK(len == 3 && memcmp(text, "one", 3) == 0);
    CHECK_OK(fl_pipe_close(r));
    CHECK_OK(fl_pipe_close(w));
    CHECK_RC(FL_EHANDLE, fl_pipe_close(w));
}

/* The child's side: answer every int64 with its square; a 1 MiB message with its byte sum;
 * stop at the end of the stream. Returns how many messages it served. */
static int echo_squares(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)arg; (void)len;
    /* The parent's end came along with the fork: close it, or the end of the stream never comes. */
    if (fl_pipe_close(parent_end) != FL_OK) return 4;
    size_t cap = 2u << 20, got = 0;
    unsigned char *buffer = malloc(cap);
    int64_t served = 0;
    int rc;
    while ((rc = fl_pipe_recv(child_end, buffer, cap, &got, 30)) == FL_OK) {
        int64_t answer = 0;
        if (got == 8) {
            memcpy(&answer, buffer, 8);
            answer *= answer;
        } else {
            for (size_t i = 0; i < got; i++) answer += buffer[i];
        }
        if (fl_pipe_send(child_end, &answer, sizeof answer, 30) != FL_OK) return 3;
        served++;
    }
    free(buffer);
    if (rc != FL_EDONE) return 2;
    return fl_task_return(ctx, &served, sizeof served);
}

static void test_pipe_across_processes(void) {
    CHECK_OK(fl_pipe_create(1, &parent_end, &child_end));
    fl_process child = NULL;
    CHECK_OK(fl_process_start(echo_squares, NULL, NULL, 0, NULL, &child));
    CHECK_OK(fl_pipe_close(child_end)); /* the child has its own copy */
    int right = 1;
    size_t len = 0;
    for (int64_t v = 1; v <= 2000; v++) {
        int64_t answer = 0;
        if (fl_pipe_send(parent_end, &v, sizeof v, 10) != FL_OK) right = 0;
        if (fl_pipe_recv(parent_end, &answer, sizeof answer, &len, 10) != FL_OK || answer != v * v) right = 0;
    }
    CHECK(right);
    size_t big = 1u << 20;
    unsigned char *data = malloc(big);
    int64_t sum = 0, answer = 0;
    for (size_t i = 0; i < big; i++) {
        data[i] = (unsigned char)(i % 251);
        sum += data[i];
    }
    CHECK_OK(fl_pipe_send(parent_end, data, big, 10));
    CHECK_OK(fl_pipe_recv(parent_end, &answer, sizeof answer, &len, 10));
    CHECK(answer == sum);
    free(data);
    CHECK_OK(fl_pipe_close(parent_end)); /* the child sees the end of the stream and returns */
    CHECK_OK(fl_process_join(child, 30));
    int code = -1;
    int64_t served = 0;
    CHECK_OK(fl_process_exitcode(child, &code));
    CHECK(code == 0);
    CHECK_OK(fl_process_result(child, &served, sizeof served, &len));
    CHECK(served == 2001);
    CHECK_OK(fl_process_destroy(child));

    /* A child that dies: the parent's receive ends instead of hanging. */
    CHECK_OK(fl_pipe_create(1, &parent_end, &child_end));
    CHECK_OK(fl_process_start(echo_squares, NULL, NULL, 0, NULL, &child));
    CHECK_OK(fl_pipe_close(child_end));
    CHECK_OK(fl_process_kill(child));
    CHECK_OK(fl_process_join(child, 30));
    CHECK_RC(FL_EDONE, fl_pipe_recv(parent_end, &answer, sizeof answer, &len, 10));
    CHECK_RC(FL_ESTATE, fl_pipe_send(parent_end, &answer, sizeof answer, 10));
    CHECK_OK(fl_process_destroy(child));
    CHECK_OK(fl_pipe_close(parent_end));
}

/* ---- locks ---- */

/* Adds 1 to cells[0] 2000 times with a read-modify-write that only the lock makes safe. */
static int locked_increments(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)arg; (void)len; (void)ctx;
    volatile int64_t *counter = cells();
    for (int i = 0; i < 2000; i++) {
        if (fl_lock_acquire(shared_lock, 30) != FL_OK) return 1;
        int64_t value = counter[0];
        if (i % 64 == 0) sched_yield();
        counter[0] = value + 1;
        if (fl_lock_release(shared_lock) != FL_OK) return 2;
    }
    return 0;
}

/* Takes the lock, says so through the event, then waits to be killed (or dies at once). */
static int hold_lock(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)ctx; (void)len;
    if (fl_lock_acquire(shared_lock, 30) != FL_OK) return 1;
    fl_event_set(shared_event);
    if (arg && ((const char *)arg)[0] == 'd') raise(SIGKILL);
    sleep(30);
    return 0;
}

static void test_lock(void) {
    CHECK_RC(FL_EINVAL, fl_lock_create(0, NULL));
    CHECK_OK(fl_lock_create(0, &shared_lock));
    CHECK_OK(fl_lock_acquire(shared_lock, 0));
    CHECK_RC(FL_ESTATE, fl_lock_acquire(shared_lock, 1)); /* would deadlock */
    CHECK_OK(fl_lock_release(shared_lock));
    CHECK_RC(FL_ESTATE, fl_lock_release(shared_lock));

    /* Recursive. */
    fl_lock rlock = NULL;
    CHECK_OK(fl_lock_create(1, &rlock));
    CHECK_OK(fl_lock_acquire(rlock, 0));
    CHECK_OK(fl_lock_acquire(rlock, 0));
    CHECK_OK(fl_lock_release(rlock));
    CHECK_OK(fl_lock_release(rlock));
    CHECK_RC(FL_ESTATE, fl_lock_release(rlock));
    CHECK_OK(fl_lock_destroy(rlock));
    CHECK_RC(FL_EHANDLE, fl_lock_acquire(rlock, 0));

    /* Mutual exclusion across 4 processes. */
    CHECK_OK(fl_shm_create(NULL, 64, &shared_cells));
    cells()[0] = 0;
    fl_process workers[4];
    for (int i = 0; i < 4; i++) CHECK_OK(fl_process_start(locked_increments, NULL, NULL, 0, NULL, &workers[i]));
    for (int i = 0; i < 4; i++) {
        int code = -1;
        CHECK_OK(fl_process_join(workers[i], 60));
        CHECK_OK(fl_process_exitcode(workers[i], &code));
        CHECK(code == 0);
        CHECK_OK(fl_process_destroy(workers[i]));
    }
    CHECK(cells()[0] == 8000);

    /* A holder blocks others until it dies; its death hands the lock over. */
    CHECK_OK(fl_event_create(&shared_event));
    fl_process holder = NULL;
    CHECK_OK(fl_process_start(hold_lock, NULL, "s", 1, NULL, &holder));
    CHECK_OK(fl_event_wait(shared_event, 30));
    CHECK_RC(FL_ETIMEDOUT, fl_lock_acquire(shared_lock, 0));
    CHECK_RC(FL_ETIMEDOUT, fl_lock_acquire(shared_lock, 0.05));
    CHECK_OK(fl_process_kill(holder));
    CHECK_OK(fl_lock_acquire(shared_lock, 30));
    CHECK_OK(fl_lock_release(shared_lock));
    CHECK_OK(fl_process_join(holder, 30));
    CHECK_OK(fl_process_destroy(holder));
    /* ... also when it dies by itself. */
    CHECK_OK(fl_event_clear(shared_event));
    CHECK_OK(fl_process_start(hold_lock, NULL, "d", 1, NULL, &holder));
    CHECK_OK(fl_process_join(holder, 30));
    int code = 0;
    CHECK_OK(fl_process_exitcode(holder, &code));
    CHECK(code == -SIGKILL);
    CHECK_OK(fl_lock_acquire(shared_lock, 5));
    CHECK_OK(fl_lock_release(shared_lock));
    CHECK_OK(fl_process_destroy(holder));
    CHECK_OK(fl_event_destroy(shared_event));
    CHECK_OK(fl_lock_destroy(shared_lock));
}

/* ---- events ---- */

static int wait_then_report(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)arg; (void)len;
    int rc = fl_event_wait(shared_event, 30);
    int64_t when = rc == FL_OK ? 1 : -1;
    return fl_task_return(ctx, &when, sizeof when);
}

static void test_event(void) {
    CHECK_OK(fl_event_create(&shared_event));
    int set = -1;
    CHECK_OK(fl_event_is_set(shared_event, &set));
    CHECK(set == 0);
    CHECK_RC(FL_ETIMEDOUT, fl_event_wait(shared_event, 0));
    CHECK_RC(FL_ETIMEDOUT, fl_event_wait(shared_event, 0.02));
    fl_process waiters[3];
    for (int i = 0; i < 3; i++) CHECK_OK(fl_process_start(wait_then_report, NULL, NULL, 0, NULL, &waiters[i]));
    pause_ms(50);
    for (int i = 0; i < 3; i++) CHECK_RC(1, fl_process_is_alive(waiters[i])); /* all still waiting */
    CHECK_OK(fl_event_set(shared_event));
    for (int i = 0; i < 3; i++) {
        int64_t got = 0;
        size_t len = 0;
        CHECK_OK(fl_process_join(waiters[i], 30));
        CHECK_OK(fl_process_result(waiters[i], &got, sizeof got, &len));
        CHECK(got == 1);
        CHECK_OK(fl_process_destroy(waiters[i]));
    }
    CHECK_OK(fl_event_is_set(shared_event, &set));
    CHECK(set == 1);
    CHECK_OK(fl_event_wait(shared_event, 0));
    CHECK_OK(fl_event_clear(shared_event));
    CHECK_RC(FL_ETIMEDOUT, fl_event_wait(shared_event, 0));
    CHECK_RC(FL_EINVAL, fl_event_is_set(shared_event, NULL));
    CHECK_OK(fl_event_destroy(shared_event));
}

/* ---- semaphores ---- */

/* Enters a section guarded by the semaphore; records the most processes inside at once. */
static int guarded_section(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)arg; (void)len; (void)ctx;
    int64_t *c = cells();
    for (int round = 0; round < 5; round++) {
        if (fl_semaphore_acquire(shared_semaphore, 30) != FL_OK) return 1;
        int64_t inside = __atomic_add_fetch(&c[1], 1, __ATOMIC_SEQ_CST);
        int64_t most = __atomic_load_n(&c[2], __ATOMIC_SEQ_CST);
        while (inside > most && !__atomic_compare_exchange_n(&c[2], &most, inside, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
        }
        pause_ms(5);
        __atomic_sub_fetch(&c[1], 1, __ATOMIC_SEQ_CST);
        if (fl_semaphore_release(shared_semaphore) != FL_OK) return 2;
    }
    return 0;
}

static void test_semaphore(void) {
    fl_semaphore s = NULL;
    CHECK_RC(FL_EINVAL, fl_semaphore_create(3, 2, &s));
    CHECK_OK(fl_semaphore_create(1, 2, &s));
    unsigned value = 99;
    CHECK_OK(fl_semaphore_value(s, &value));
    CHECK(value == 1);
    CHECK_OK(fl_semaphore_acquire(s, 0));
    CHECK_RC(FL_ETIMEDOUT, fl_semaphore_acquire(s, 0));
    CHECK_RC(FL_ETIMEDOUT, fl_semaphore_acquire(s, 0.02));
    CHECK_OK(fl_semaphore_release(s));
    CHECK_OK(fl_semaphore_release(s));
    CHECK_RC(FL_ERANGE, fl_semaphore_release(s)); /* bounded at 2 */
    CHECK_OK(fl_semaphore_value(s, &value));
    CHECK(value == 2);
    CHECK_OK(fl_semaphore_destroy(s));
    /* An unbounded semaphore stops at UINT_MAX, the largest value the API can show. */
    CHECK_OK(fl_semaphore_create(UINT_MAX, 0, &s));
    CHECK_RC(FL_ERANGE, fl_semaphore_release(s));
    CHECK(strstr(fl_last_error(), "4294967295") != NULL);
    CHECK_OK(fl_semaphore_value(s, &value));
    CHECK(value == UINT_MAX);
    CHECK_OK(fl_semaphore_acquire(s, 0));
    CHECK_OK(fl_semaphore_release(s));
    CHECK_OK(fl_semaphore_destroy(s));

    /* At most two of five processes inside at once. */
    CHECK_OK(fl_semaphore_create(2, 0, &shared_semaphore));
    int64_t *c = cells();
    c[1] = c[2] = 0;
    fl_process workers[5];
    for (int i = 0; i < 5; i++) CHECK_OK(fl_process_start(guarded_section, NULL, NULL, 0, NULL, &workers[i]));
    for (int i = 0; i < 5; i++) {
        int code = -1;
        CHECK_OK(fl_process_join(workers[i], 60));
        CHECK_OK(fl_process_exitcode(workers[i], &code));
        CHECK(code == 0);
        CHECK_OK(fl_process_destroy(workers[i]));
    }
    CHECK(c[2] >= 1 && c[2] <= 2);
    CHECK(c[1] == 0);
    CHECK_OK(fl_semaphore_value(shared_semaphore, &value));
    CHECK(value == 2);
    CHECK_OK(fl_semaphore_destroy(shared_semaphore));
}

/* ---- opening by name ---- */

/* In a pool worker forked before the objects existed: open each by name and use it. */
static int use_by_name(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)len;
    const char *names = arg; /* queue, lock, event, semaphore names, 64 bytes each */
    fl_queue q = NULL;
    fl_lock l = NULL;
    fl_event e = NULL;
    fl_semaphore s = NULL;
    if (fl_queue_open(names, &q) != FL_OK) return fl_task_fail(ctx, 1, fl_last_error());
    if (fl_lock_open(names + 64, &l) != FL_OK) return fl_task_fail(ctx, 2, fl_last_error());
    if (fl_event_open(names + 128, &e) != FL_OK) return fl_task_fail(ctx, 3, fl_last_error());
    if (fl_semaphore_open(names + 192, &s) != FL_OK) return fl_task_fail(ctx, 4, fl_last_error());
    int64_t message = getpid();
    if (fl_queue_put(q, &message, sizeof message, 5) != FL_OK) return 5;
    if (fl_lock_acquire(l, 5) != FL_OK || fl_lock_release(l) != FL_OK) return 6;
    if (fl_event_set(e) != FL_OK) return 7;
    if (fl_semaphore_release(s) != FL_OK) return 8;
    /* Opening an object as the wrong kind is refused. */
    fl_lock wrong = NULL;
    if (fl_lock_open(names + 128, &wrong) != FL_EINVAL) return 9;
    fl_queue_destroy(q);
    fl_lock_destroy(l);
    fl_event_destroy(e);
    fl_semaphore_destroy(s);
    return 0;
}

static void test_open_by_name(void) {
    fl_pool pool = one_worker_process_pool(); /* its worker process exists before the objects */
    fl_queue q = NULL;
    fl_lock l = NULL;
    fl_event e = NULL;
    fl_semaphore s = NULL;
    CHECK_OK(fl_queue_create(0, 0, &q));
    CHECK_OK(fl_lock_create(0, &l));
    CHECK_OK(fl_event_create(&e));
    CHECK_OK(fl_semaphore_create(0, 0, &s));
    char names[256] = {0};
    CHECK_OK(fl_queue_name(q, names, 64));
    CHECK_OK(fl_lock_name(l, names + 64, 64));
    CHECK_OK(fl_event_name(e, names + 128, 64));
    CHECK_OK(fl_semaphore_name(s, names + 192, 64));
    CHECK(strncmp(names, "memfd:", 6) == 0);
    char small[4];
    CHECK_RC(FL_ERANGE, fl_queue_name(q, small, sizeof small));
    int rc = fl_pool_apply(pool, use_by_name, NULL, names, sizeof names, NULL, 0, NULL);
    CHECK_OK(rc);
    if (rc != FL_OK) fprintf(stderr, "  task failed: %s\n", fl_last_error());
    size_t len = 0;
    int64_t pid = 0;
    CHECK_OK(fl_queue_get(q, &pid, sizeof pid, &len, 5));
    CHECK(pid > 0 && pid != getpid());
    CHECK_OK(fl_event_wait(e, 0));
    CHECK_OK(fl_semaphore_acquire(s, 0));
    CHECK_OK(fl_pool_destroy(pool));

    /* In this process: a second handle on the same object. */
    fl_event e2 = NULL;
    CHECK_OK(fl_event_open(names + 128, &e2));
    CHECK_OK(fl_event_clear(e2));
    CHECK_RC(FL_ETIMEDOUT, fl_event_wait(e, 0));
    CHECK_OK(fl_event_destroy(e2));
    /* Bad names. */
    fl_queue bad = NULL;
    CHECK_RC(FL_EINVAL, fl_queue_open("nonsense", &bad));
    CHECK_RC(FL_EINVAL, fl_queue_open("memfd:1:999999", &bad));
    CHECK_RC(FL_EINVAL, fl_queue_open(names + 64, &bad)); /* a lock is not a queue */
    fl_event bad_event = NULL;
    CHECK_RC(FL_EINVAL, fl_event_open(names + 64, &bad_event)); /* nor an event */
    CHECK(strstr(fl_last_error(), "is not an event") != NULL && bad_event == NULL);
    fl_semaphore bad_semaphore = NULL;
    CHECK_RC(FL_EINVAL, fl_semaphore_open(NULL, &bad_semaphore));
    CHECK(bad == NULL && bad_semaphore == NULL);
    /* A queue still opens by name after a large message has grown its memory. */
    {
        fl_queue grown = NULL, reopened = NULL;
        CHECK_OK(fl_queue_create(4096, 0, &grown));
        size_t big_len = 1 << 20;
        char *big = malloc(big_len), *back = malloc(big_len);
        memset(big, 0x5a, big_len);
        CHECK_OK(fl_queue_put(grown, big, big_len, 0));
        char grown_name[64];
        CHECK_OK(fl_queue_name(grown, grown_name, sizeof grown_name));
        CHECK_OK(fl_queue_open(grown_name, &reopened));
        size_t got = 0;
        CHECK_OK(fl_queue_get(reopened, back, big_len, &got, 5));
        CHECK(got == big_len && memcmp(big, back, big_len) == 0);
        CHECK_OK(fl_queue_destroy(reopened));
        CHECK_OK(fl_queue_destroy(grown));
        free(big);
        free(back);
    }
    CHECK_OK(fl_queue_destroy(q));
    CHECK_OK(fl_lock_destroy(l));
    CHECK_OK(fl_event_destroy(e));
    CHECK_OK(fl_semaphore_destroy(s));
}

/* ---- waiters that die while they wait ---- */

static fl_queue dying_queue;

/* Started as a process: waits forever on the object `args` names (it is killed meanwhile). */
static int wait_forever(void *user, const void *args, size_t len, fl_task_ctx ctx) {
    (void)user; (void)len; (void)ctx;
    char buffer[8];
    size_t got = 0;
    switch (*(const char *)args) {
    case 'p': return fl_queue_put(dying_queue, "x", 1, FL_FOREVER); /* the queue is full */
    case 'g': return fl_queue_get(dying_queue, buffer, sizeof buffer, &got, FL_FOREVER); /* empty */
    case 'e': return fl_event_wait(shared_event, FL_FOREVER);
    default: return fl_semaphore_acquire(shared_semaphore, FL_FOREVER);
    }
}

/* Waits up to 5 s until process `pid` sleeps in the futex system call (what
 * /proc/PID/syscall shows first); returns whether it does. */
static int sleeps_in_futex(int64_t pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%lld/syscall", (long long)pid);
    for (int i = 0; i < 5000; i++) {
        FILE *file = fopen(path, "r");
        long number = -1;
        if (file) {
            if (fscanf(file, "%ld", &number) != 1) number = -1;
            fclose(file);
        }
        if (number == SYS_futex) return 1;
        pause_ms(1);
    }
    return 0;
}

/* Starts a process waiting on object `which`, waits until it sleeps there, kills it. */
static void kill_a_waiter(char which) {
    fl_process waiter = NULL;
    int64_t pid = 0;
    CHECK_OK(fl_process_start(wait_forever, NULL, &which, 1, NULL, &waiter));
    CHECK_OK(fl_process_pid(waiter, &pid));
    CHECK(sleeps_in_futex(pid)); /* so the kill lands in the wait this test is about */
    CHECK_RC(1, fl_process_is_alive(waiter));
    CHECK_OK(fl_process_kill(waiter));
    CHECK_OK(fl_process_join(waiter, 30));
    CHECK_OK(fl_process_destroy(waiter));
}

static void test_waiters_that_die(void) {
    /* A process killed while it sleeps on a queue, an event or a semaphore leaves nothing that
     * later calls wait for: the others' calls keep their timeouts and wake-ups, round after
     * round (with glibc's process-shared condition variables, the second round hung). */
    alarm(120); /* a hang fails the test instead of holding the suite */
    char buffer[8];
    size_t got = 0;
    CHECK_OK(fl_queue_create(0, 1, &dying_queue)); /* one message at most */
    CHECK_OK(fl_event_create(&shared_event));
    CHECK_OK(fl_semaphore_create(0, 0, &shared_semaphore));
    for (int round = 0; round < 3; round++) {
        CHECK_OK(fl_queue_put(dying_queue, "a", 1, 0)); /* full */
        kill_a_waiter('p');
        CHECK_OK(fl_queue_get(dying_queue, buffer, sizeof buffer, &got, 1));
        CHECK_RC(FL_ETIMEDOUT, fl_queue_get(dying_queue, buffer, sizeof buffer, &got, 0.01));
        kill_a_waiter('g');
        CHECK_OK(fl_queue_put(dying_queue, "b", 1, 1));
        CHECK_RC(FL_ETIMEDOUT, fl_queue_put(dying_queue, "c", 1, 0.01));
        CHECK_OK(fl_queue_get(dying_queue, buffer, sizeof buffer, &got, 1));
        kill_a_waiter('e');
        CHECK_OK(fl_event_set(shared_event));
        CHECK_OK(fl_event_wait(shared_event, 1));
        CHECK_OK(fl_event_clear(shared_event));
        CHECK_RC(FL_ETIMEDOUT, fl_event_wait(shared_event, 0.01));
        kill_a_waiter('s');
        CHECK_OK(fl_semaphore_release(shared_semaphore));
        CHECK_OK(fl_semaphore_acquire(shared_semaphore, 1));
        CHECK_RC(FL_ETIMEDOUT, fl_semaphore_acquire(shared_semaphore, 0.01));
    }
    /* A waiter that lives on is still woken by the others. */
    fl_process waiter = NULL;
    char which = 'g';
    CHECK_OK(fl_process_start(wait_forever, NULL, &which, 1, NULL, &waiter));
    pause_ms(50);
    CHECK_OK(fl_queue_put(dying_queue, "d", 1, 1));
    CHECK_OK(fl_process_join(waiter, 30));
    int code = -1;
    CHECK_OK(fl_process_exitcode(waiter, &code));
    CHECK(code == 0);
    CHECK_OK(fl_process_destroy(waiter));
    alarm(0);
    CHECK_OK(fl_queue_destroy(dying_queue));
    CHECK_OK(fl_event_destroy(shared_event));
    CHECK_OK(fl_semaphore_destroy(shared_semaphore));
}

static void test_segment_tokens(void) {
    /* A "memfd:PID:FD" token maps only an anonymous segment's memfd, not any descriptor. */
    char path[64];
    snprintf(path, sizeof path, "/tmp/forklift-not-a-segment-%d", (int)getpid());
    FILE *file = fopen(path, "w+");
    CHECK(file != NULL);
    if (!file) return;
    fputs("precious data", file);
    fflush(file);
    char token[64];
    snprintf(token, sizeof token, "memfd:%d:%d", (int)getpid(), fileno(file));
    fl_shm shm = NULL;
    CHECK_RC(FL_EINVAL, fl_shm_open(token, &shm));
    CHECK(shm == NULL && strstr(fl_last_error(), "not a shared-memory segment") != NULL);
    snprintf(token, sizeof token, "memfd:%d:1", (int)getpid()); /* stdout */
    CHECK_RC(FL_EINVAL, fl_shm_open(token, &shm));
    fl_queue q = NULL;
    char queue_token[64];
    CHECK_OK(fl_queue_create(0, 0, &q));
    CHECK_OK(fl_queue_name(q, queue_token, sizeof queue_token));
    CHECK_RC(FL_EINVAL, fl_shm_open(queue_token, &shm)); /* a queue's memfd is not a segment */
    CHECK_OK(fl_queue_destroy(q));
    /* A real one still opens. */
    fl_shm made = NULL, opened = NULL;
    CHECK_OK(fl_shm_create(NULL, 4096, &made));
    CHECK_OK(fl_shm_name(made, token, sizeof token));
    CHECK_OK(fl_shm_open(token, &opened));
    CHECK_OK(fl_shm_close(opened));
    CHECK_OK(fl_shm_close(made));
    fclose(file);
    unlink(path);
}

int main(void) {
    test_pipe_in_process();
    test_pipe_across_processes();
    test_lock();
    test_event();
    test_semaphore();
    test_open_by_name();
    test_waiters_that_die();
    test_segment_tokens();
    CHECK_OK(fl_shm_close(shared_cells));
    CHECK(child_pids(NULL, 0) == 0);
    return check_finish("ipc");
}
