/* Processes, queues and shared memory through the public C ABI (multiprocessing.Process,
 * Queue and shared_memory). */
#define _GNU_SOURCE
#include "check.h"
#include "children.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static int children(void) { return child_pids(NULL, 0); }

static fl_queue shared_queue;
static fl_shm shared_segment;

/* The seed's worker: squares x, puts (x, x*x) on the queue, writes x*x into shared memory. */
static int square_into_queue(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)len;
    int64_t x;
    memcpy(&x, arg, sizeof x);
    int64_t pair[2] = {x, x * x};
    int rc = fl_queue_put(shared_queue, pair, sizeof pair, 10);
    if (rc != FL_OK) return 100 + -rc;
    int64_t *cells = NULL;
    if (fl_shm_data(shared_segment, (void **)&cells, NULL) != FL_OK) return 99;
    cells[x] = x * x;
    int64_t pid = getpid();
    return fl_task_return(ctx, &pid, sizeof pid);
}

static int behave(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)ctx;
    char what[16] = {0};
    memcpy(what, arg, len < 15 ? len : 15);
    if (strcmp(what, "seven") == 0) return 7;
    if (strcmp(what, "exit") == 0) exit(3);
    if (strcmp(what, "segv") == 0) raise(SIGSEGV);
    if (strcmp(what, "sleep") == 0) sleep(30);
    if (strcmp(what, "fail") == 0) return fl_task_fail(ctx, 300, "bad");
    if (strcmp(what, "minus two") == 0) return -2;
    if (strcmp(what, "256") == 0) return 256;
    if (strcmp(what, "pool") == 0) {
        fl_pool pool = NULL;
        return fl_pool_create(NULL, &pool) == FL_ENOTSUP ? 0 : 1;
    }
    return 0;
}

static int produce(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)len; (void)ctx;
    int64_t base;
    memcpy(&base, arg, sizeof base);
    for (int64_t i = 0; i < 1000; i++) {
        int64_t value = base + i;
        if (fl_queue_put(shared_queue, &value, sizeof value, 30) != FL_OK) return 1;
    }
    return 0;
}

static int consume(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)arg; (void)len;
    int64_t sum = 0, count = 0, value;
    size_t got;
    int rc;
    while ((rc = fl_queue_get(shared_queue, &value, sizeof value, &got, 30)) == FL_OK) {
        sum += value;
        count++;
    }
    if (rc != FL_EDONE) return 2;
    int64_t out[2] = {sum, count};
    return fl_task_return(ctx, out, sizeof out);
}

static int open_and_sum(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user;
    char name[128] = {0};
    memcpy(name, arg, len < 127 ? len : 127);
    fl_shm shm = NULL;
    int rc = fl_shm_open(name, &shm);
    if (rc != FL_OK) return fl_task_fail(ctx, -rc, fl_last_error());
    unsigned char *data = NULL;
    size_t size = 0;
    fl_shm_data(shm, (void **)&data, &size);
    uint64_t sum = 0;
    for (size_t i = 0; i < size; i++) sum += data[i];
    data[0] = 42; /* visible to the parent: no copy */
    fl_shm_close(shm);
    return fl_task_return(ctx, &sum, sizeof sum);
}

static void test_seed_example(void) {
    CHECK_OK(fl_queue_create(0, 0, &shared_queue));
    CHECK_OK(fl_shm_create(NULL, 8 * sizeof(int64_t), &shared_segment));
    fl_process processes[4];
    for (int64_t x = 0; x < 4; x++) CHECK_OK(fl_process_start(square_into_queue, NULL, &x, sizeof x, NULL, &processes[x]));
    for (int i = 0; i < 4; i++) CHECK_OK(fl_process_join(processes[i], 30));
    int64_t squares[4] = {-1, -1, -1, -1};
    for (int i = 0; i < 4; i++) {
        int64_t pair[2];
        size_t len = 0;
        CHECK_OK(fl_queue_get(shared_queue, pair, sizeof pair, &len, 5));
        CHECK(len == sizeof pair && pair[0] >= 0 && pair[0] < 4);
        if (pair[0] >= 0 && pair[0] < 4) squares[pair[0]] = pair[1];
    }
    int64_t *cells = NULL;
    CHECK_OK(fl_shm_data(shared_segment, (void **)&cells, NULL));
    for (int i = 0; i < 4; i++) {
        CHECK(squares[i] == i * i);
        CHECK(cells[i] == i * i);
        int code = -1;
        CHECK_OK(fl_process_exitcode(processes[i], &code));
        CHECK(code == 0);
        int64_t pid = 0, returned = 0;
        size_t len = 0;
        CHECK_OK(fl_process_pid(processes[i], &pid));
        CHECK_OK(fl_process_result(processes[i], &returned, sizeof returned, &len));
        CHECK(len == 8 && returned == pid && pid != getpid());
        CHECK_RC(0, fl_process_is_alive(processes[i]));
        CHECK_OK(fl_process_destroy(processes[i]));
        CHECK_RC(FL_EHANDLE, fl_process_join(processes[i], 0));
    }
    CHECK(children() == 0);
    CHECK_OK(fl_shm_close(shared_segment));
    CHECK_OK(fl_queue_destroy(shared_queue));
}

/* Tries a result one byte above the 1 MiB limit, then returns what fl_last_error() said. */
static int return_too_much(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)arg; (void)len;
    size_t size = (1 << 20) + 1;
    char *big = calloc(1, size);
    int rc = big ? fl_task_return(ctx, big, size) : FL_ENOMEM;
    free(big);
    if (rc != FL_ERANGE) return 1;
    const char *message = fl_last_error();
    return fl_task_return(ctx, message, strlen(message) + 1);
}

static void test_exit_codes(void) {
    struct { const char *arg; int code; } cases[] = {{"ok", 0}, {"seven", 7}, {"exit", 3}, {"segv", -SIGSEGV},
                                                     {"fail", 300 & 0xff}, {"pool", 0},
                                                     /* as an exit status holds them: negative means a signal */
                                                     {"minus two", 254}, {"256", 1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fl_process p = NULL;
        CHECK_OK(fl_process_start(behave, NULL, cases[i].arg, strlen(cases[i].arg), NULL, &p));
        CHECK_OK(fl_process_join(p, 30));
        int code = 12345;
        CHECK_OK(fl_process_exitcode(p, &code));
        CHECK(code == cases[i].code);
        if (code != cases[i].code) fprintf(stderr, "  %s: exit code %d\n", cases[i].arg, code);
        CHECK_OK(fl_process_destroy(p));
    }

    fl_process sleeper = NULL, victim = NULL;
    CHECK_OK(fl_process_start(behave, NULL, "sleep", 5, NULL, &sleeper));
    CHECK_OK(fl_process_start(behave, NULL, "sleep", 5, NULL, &victim));
    CHECK_RC(1, fl_process_is_alive(sleeper));
    int code = 0;
    CHECK_RC(FL_ESTATE, fl_process_exitcode(sleeper, &code));
    size_t len = 0;
    CHECK_RC(FL_ESTATE, fl_process_result(sleeper, NULL, 0, &len));
    CHECK_RC(FL_ETIMEDOUT, fl_process_join(sleeper, 0.05));
    CHECK_RC(FL_ESTATE, fl_process_destroy(sleeper));
    CHECK_OK(fl_process_terminate(sleeper));
    CHECK_OK(fl_process_kill(victim));
    CHECK_OK(fl_process_join(sleeper, 30));
    CHECK_OK(fl_process_join(victim, 30));
    CHECK_OK(fl_process_exitcode(sleeper, &code));
    CHECK(code == -SIGTERM);
    CHECK_OK(fl_process_exitcode(victim, &code));
    CHECK(code == -SIGKILL);
    CHECK_OK(fl_process_kill(victim)); /* already reaped: nothing happens */
    CHECK_OK(fl_process_destroy(sleeper));
    CHECK_OK(fl_process_destroy(victim));
    CHECK(children() == 0);

    fl_process p = NULL;
    fl_process_options options;
    CHECK_OK(fl_process_options_init(&options));
    CHECK(options.daemon == 0);
    options.size = 3;
    CHECK_RC(FL_EINVAL, fl_process_start(behave, NULL, NULL, 0, &options, &p));
    CHECK_RC(FL_EINVAL, fl_process_start(NULL, NULL, NULL, 0, NULL, &p));
    CHECK_RC(FL_EINVAL, fl_process_start(behave, NULL, NULL, 4, NULL, &p));
    CHECK(p == NULL);
    CHECK_RC(FL_EHANDLE, fl_process_join(NULL, 0));

    /* A result above the limit: FL_ERANGE in the child, with a message that says why. */
    char said[256] = {0};
    size_t said_len = 0;
    CHECK_OK(fl_process_start(return_too_much, NULL, NULL, 0, NULL, &p));
    CHECK_OK(fl_process_join(p, 30));
    CHECK_OK(fl_process_exitcode(p, &code));
    CHECK(code == 0);
    CHECK_OK(fl_process_result(p, said, sizeof said - 1, &said_len));
    CHECK(strstr(said, "limited to 1048576 bytes; this one has 1048577") != NULL);
    CHECK_OK(fl_process_destroy(p));
}

/* Returns "hi" as its result. */
static int answer_hi(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)arg; (void)len;
    return fl_task_return(ctx, "hi", 2);
}

/* With SIGCHLD ignored the kernel reaps every child at once and keeps no status: a process
 * whose function returned still reports what it returned; one that died first says its
 * status was lost, and so does a pool task whose worker died. */
static void test_status_reaped_elsewhere(void) {
    struct sigaction ignore, old;
    memset(&ignore, 0, sizeof ignore);
    ignore.sa_handler = SIG_IGN;
    sigaction(SIGCHLD, &ignore, &old);
    fl_process p = NULL;
    CHECK_OK(fl_process_start(answer_hi, NULL, NULL, 0, NULL, &p));
    CHECK_OK(fl_process_join(p, 30));
    int code = -1;
    char result[8] = {0};
    size_t len = 0;
    CHECK_OK(fl_process_exitcode(p, &code));
    CHECK(code == 0);
    CHECK_OK(fl_process_result(p, result, sizeof result, &len));
    CHECK(len == 2 && memcmp(result, "hi", 2) == 0);
    CHECK_OK(fl_process_destroy(p));
    CHECK_OK(fl_process_start(behave, NULL, "seven", 5, NULL, &p));
    CHECK_OK(fl_process_join(p, 30));
    CHECK_OK(fl_process_exitcode(p, &code));
    CHECK(code == 7);
    CHECK_OK(fl_process_destroy(p));
    CHECK_OK(fl_process_start(behave, NULL, "exit", 4, NULL, &p)); /* exit(3) before answering */
    CHECK_OK(fl_process_join(p, 30));
    CHECK_OK(fl_process_exitcode(p, &code));
    CHECK(code == FL_EXIT_UNKNOWN);
    CHECK_OK(fl_process_destroy(p));

    fl_pool pool = one_worker_process_pool();
    CHECK_RC(FL_EWORKER, fl_pool_apply(pool, behave, NULL, "segv", 4, NULL, 0, NULL));
    CHECK(strstr(fl_last_error(), "exit status lost") != NULL && strstr(fl_last_error(), "SIGKILL") == NULL);
    CHECK_OK(fl_pool_apply(pool, behave, NULL, "ok", 2, NULL, 0, NULL)); /* a fresh worker */
    CHECK_OK(fl_pool_destroy(pool));
    sigaction(SIGCHLD, &old, NULL);
}

static void test_queue_semantics(void) {
    fl_queue q = NULL;
    CHECK_OK(fl_queue_create(256, 2, &q));
    CHECK_OK(fl_queue_put(q, "a", 1, 0));
    CHECK_OK(fl_queue_put(q, "bcd", 3, 0));
    CHECK_RC(FL_ETIMEDOUT, fl_queue_put(q, "e", 1, 0.01)); /* max_items */
    size_t count = 0;
    CHECK_OK(fl_queue_count(q, &count));
    CHECK(count == 2);
    char big[300];
    memset(big, 'x', sizeof big);
    CHECK_RC(FL_ETIMEDOUT, fl_queue_put(q, big, sizeof big, 0)); /* max_items, even out of line */
    char small[2];
    size_t len = 0;
    CHECK_OK(fl_queue_get(q, small, sizeof small, &len, 0));
    CHECK(len == 1 && small[0] == 'a');
    CHECK_RC(FL_ERANGE, fl_queue_get(q, small, sizeof small, &len, 0));
    CHECK(len == 3); /* still queued */
    CHECK_RC(FL_ERANGE, fl_queue_get(q, NULL, 0, &len, 0));
    char buffer[8];
    CHECK_OK(fl_queue_get(q, buffer, sizeof buffer, &len, 0));
    CHECK(len == 3 && memcmp(buffer, "bcd", 3) == 0);
    CHECK_RC(FL_ETIMEDOUT, fl_queue_get(q, buffer, sizeof buffer, &len, 0.01));
    /* wrap around the ring many times */
    int ok = 1;
    for (int i = 0; i < 1000; i++) {
        char message[40];
        int n = snprintf(message, sizeof message, "message %d", i);
        ok &= fl_queue_put(q, message, (size_t)n, 0) == FL_OK;
        ok &= fl_queue_get(q, buffer, 0, &len, 0) == FL_ERANGE && len == (size_t)n;
        char back[40];
        ok &= fl_queue_get(q, back, sizeof back, &len, 0) == FL_OK && len == (size_t)n && memcmp(back, message, len) == 0;
    }
    CHECK(ok);
    CHECK_OK(fl_queue_put(q, "z", 1, 0));
    CHECK_OK(fl_queue_close(q));
    CHECK_OK(fl_queue_close(q));
    CHECK_RC(FL_ESTATE, fl_queue_put(q, "y", 1, 0));
    CHECK_OK(fl_queue_get(q, buffer, sizeof buffer, &len, 0));
    CHECK_RC(FL_EDONE, fl_queue_get(q, buffer, sizeof buffer, &len, FL_FOREVER));
    CHECK_RC(FL_EINVAL, fl_queue_put(q, NULL, 3, 0));
    CHECK_RC(FL_EINVAL, fl_queue_get(q, buffer, sizeof buffer, NULL, 0));
    CHECK_OK(fl_queue_destroy(q));
    CHECK_RC(FL_EHANDLE, fl_queue_put(q, "a", 1, 0));
    CHECK_RC(FL_EINVAL, fl_queue_create(0, 0, NULL));
    /* Capacities near SIZE_MAX are impossible, not wrapped round to a small ring. */
    const size_t huge[] = {SIZE_MAX, SIZE_MAX - 7, SIZE_MAX - 4095, SIZE_MAX / 2 + 1, ((size_t)1 << 40) + 1};
    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
        q = (fl_queue)(void *)&q;
        CHECK_RC(FL_EINVAL, fl_queue_create(huge[i], 0, &q));
        CHECK(q == NULL && strstr(fl_last_error(), "impossible") != NULL);
    }
    CHECK(strstr(fl_last_error(), "1099511627777") != NULL);
    CHECK_RC(FL_EINVAL, fl_queue_create(SIZE_MAX, 0, &q));
    CHECK(strstr(fl_last_error(), "18446744073709551615") != NULL);
}

/* Bytes of memory the queue's memfd holds now (from its name, "memfd:PID:FD"). */
static long long queue_memory(fl_queue q) {
    char name[64], path[96];
    int pid = 0, fd = 0;
    if (fl_queue_name(q, name, sizeof name) != FL_OK || sscanf(name, "memfd:%d:%d", &pid, &fd) != 2) return -1;
    snprintf(path, sizeof path, "/proc/%d/fd/%d", pid, fd);
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_blocks * 512 : -1;
}

/* Puts `count` messages of `size` bytes (byte k of message i: (i + k) % 251). */
static int produce_large(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)len; (void)ctx;
    int64_t spec[2];
    memcpy(spec, arg, sizeof spec);
    unsigned char *message = malloc((size_t)spec[1]);
    for (int64_t i = 0; i < spec[0]; i++) {
        for (int64_t k = 0; k < spec[1]; k++) message[k] = (unsigned char)((i + k) % 251);
        if (fl_queue_put(shared_queue, message, (size_t)spec[1], 30) != FL_OK) return 1;
    }
    free(message);
    return 0;
}

static void test_queue_large_messages(void) {
    /* Messages larger than the ring travel out of line, in order with the small ones. */
    fl_queue q = NULL;
    CHECK_OK(fl_queue_create(256, 0, &q));
    size_t big = 5u << 20;
    unsigned char *data = malloc(big), *back = malloc(big);
    for (size_t k = 0; k < big; k++) data[k] = (unsigned char)(k * 13);
    CHECK_OK(fl_queue_put(q, "one", 3, 0));
    CHECK_OK(fl_queue_put(q, data, 300, 0));
    CHECK_OK(fl_queue_put(q, data, big, 0));
    CHECK_OK(fl_queue_put(q, "two", 3, 0));
    size_t len = 0, count = 0;
    CHECK_OK(fl_queue_count(q, &count));
    CHECK(count == 4);
    CHECK_OK(fl_queue_get(q, back, big, &len, 0));
    CHECK(len == 3 && memcmp(back, "one", 3) == 0);
    CHECK_OK(fl_queue_get(q, back, big, &len, 0));
    CHECK(len == 300 && memcmp(back, data, 300) == 0);
    CHECK_RC(FL_ERANGE, fl_queue_get(q, back, 1000, &len, 0)); /* stays queued */
    CHECK(len == big);
    CHECK_OK(fl_queue_get(q, back, big, &len, 0));
    CHECK(len == big && memcmp(back, data, big) == 0);
    CHECK_OK(fl_queue_get(q, back, big, &len, 0));
    CHECK(len == 3 && memcmp(back, "two", 3) == 0);
    CHECK(queue_memory(q) < (1 << 20)); /* taken messages give their memory back */
    CHECK_OK(fl_queue_destroy(q));
    free(data);

    /* 1 MiB messages from two producer processes through a 4 KiB queue. */
    CHECK_OK(fl_queue_create(4096, 4, &shared_queue));
    fl_process producers[2];
    int64_t spec[2] = {20, 1 << 20};
    for (int i = 0; i < 2; i++) CHECK_OK(fl_process_start(produce_large, NULL, spec, sizeof spec, NULL, &producers[i]));
    int right = 1;
    int seen[20] = {0};
    for (int m = 0; m < 40; m++) {
        if (fl_queue_get(shared_queue, back, big, &len, 30) != FL_OK || len != (1u << 20)) {
            right = 0;
            break;
        }
        int i = (int)back[0]; /* (i + 0) % 251 */
        for (size_t k = 0; k < len && right; k++) right &= back[k] == (unsigned char)((i + (int)k) % 251);
        if (i < 20) seen[i]++;
    }
    CHECK(right);
    for (int i = 0; i < 20; i++) CHECK(seen[i] == 2);
    for (int i = 0; i < 2; i++) {
        int code = -1;
        CHECK_OK(fl_process_join(producers[i], 60));
        CHECK_OK(fl_process_exitcode(producers[i], &code));
        CHECK(code == 0);
        CHECK_OK(fl_process_destroy(producers[i]));
    }
    CHECK(queue_memory(shared_queue) < (1 << 20));
    CHECK_OK(fl_queue_destroy(shared_queue));
    free(back);
}

#define IN_TRANSIT_MESSAGE (8u << 20)

/* Puts 8 MiB messages until killed. */
static int put_forever(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)arg; (void)len; (void)ctx;
    unsigned char *data = malloc(IN_TRANSIT_MESSAGE);
    if (!data) return 1;
    memset(data, 7, IN_TRANSIT_MESSAGE);
    for (;;) fl_queue_put(shared_queue, data, IN_TRANSIT_MESSAGE, FL_FOREVER);
}

/* Takes messages until killed. */
static int get_forever(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)arg; (void)len; (void)ctx;
    unsigned char *data = malloc(IN_TRANSIT_MESSAGE);
    if (!data) return 1;
    size_t got = 0;
    for (;;) fl_queue_get(shared_queue, data, IN_TRANSIT_MESSAGE, &got, FL_FOREVER);
}

/* Producers and consumers killed while they copy a large message in or out: the regions
 * they held are given back (at the next large message), so an empty queue does not keep
 * their memory; an empty message fits even the smallest queue. */
static void test_queue_deaths_mid_copy(void) {
    CHECK_OK(fl_queue_create(65536, 0, &shared_queue));
    unsigned char *buffer = malloc(IN_TRANSIT_MESSAGE);
    memset(buffer, 1, IN_TRANSIT_MESSAGE);
    size_t len = 0;
    for (int round = 0; round < 24; round++) {
        int consumer = round % 2;
        fl_process p = NULL;
        CHECK_OK(fl_process_start(consumer ? get_forever : put_forever, NULL, NULL, 0, NULL, &p));
        if (consumer)
            for (int i = 0; i < 3; i++) CHECK_OK(fl_queue_put(shared_queue, buffer, IN_TRANSIT_MESSAGE, 30));
        struct timespec pause = {0, (1 + round % 7) * 1000000L};
        nanosleep(&pause, NULL);
        CHECK_OK(fl_process_kill(p));
        CHECK_OK(fl_process_join(p, 30));
        CHECK_OK(fl_process_destroy(p));
        while (fl_queue_get(shared_queue, buffer, IN_TRANSIT_MESSAGE, &len, 0) == FL_OK) {}
    }
    /* One more message through: its put gives back what the last dead ones held. */
    CHECK_OK(fl_queue_put(shared_queue, buffer, IN_TRANSIT_MESSAGE, 30));
    CHECK_OK(fl_queue_get(shared_queue, buffer, IN_TRANSIT_MESSAGE, &len, 30));
    long long kept = queue_memory(shared_queue);
    CHECK(kept >= 0 && kept < (2 << 20));
    CHECK_OK(fl_queue_destroy(shared_queue));
    free(buffer);

    for (size_t capacity = 1; capacity <= 64; capacity++) {
        fl_queue q = NULL;
        CHECK_OK(fl_queue_create(capacity, 0, &q));
        CHECK_OK(fl_queue_put(q, NULL, 0, 0));
        char out[4];
        CHECK_OK(fl_queue_get(q, out, sizeof out, &len, 0));
        CHECK(len == 0);
        CHECK_OK(fl_queue_destroy(q));
    }
}

static void test_queue_across_processes(void) {
    CHECK_OK(fl_queue_create(4096, 0, &shared_queue)); /* small: producers block on a full queue */
    fl_process producers[3], consumers[2];
    for (int i = 0; i < 2; i++) CHECK_OK(fl_process_start(consume, NULL, NULL, 0, NULL, &consumers[i]));
    for (int64_t i = 0; i < 3; i++) {
        int64_t base = i * 1000;
        CHECK_OK(fl_process_start(produce, NULL, &base, sizeof base, NULL, &producers[i]));
    }
    for (int i = 0; i < 3; i++) {
        CHECK_OK(fl_process_join(producers[i], 60));
        int code = -1;
        CHECK_OK(fl_process_exitcode(producers[i], &code));
        CHECK(code == 0);
        fl_process_destroy(producers[i]);
    }
    CHECK_OK(fl_queue_close(shared_queue)); /* consumers drain, then see FL_EDONE */
    int64_t sum = 0, count = 0;
    for (int i = 0; i < 2; i++) {
        CHECK_OK(fl_process_join(consumers[i], 60));
        int64_t out[2] = {0, 0};
        size_t len = 0;
        CHECK_OK(fl_process_result(consumers[i], out, sizeof out, &len));
        CHECK(len == sizeof out);
        sum += out[0];
        count += out[1];
        fl_process_destroy(consumers[i]);
    }
    CHECK(count == 3000);
    CHECK(sum == 2999LL * 3000 / 2);
    CHECK_OK(fl_queue_destroy(shared_queue));
}

static void test_shared_memory(void) {
    /* Anonymous, opened by name in a pool worker started before the segment existed. */
    fl_pool pool = one_worker_process_pool();
    fl_shm shm = NULL;
    CHECK_OK(fl_shm_create(NULL, 3 << 20, &shm));
    unsigned char *data = NULL;
    size_t size = 0;
    CHECK_OK(fl_shm_data(shm, (void **)&data, &size));
    CHECK(size == 3u << 20);
    uint64_t expected = 0;
    for (size_t i = 0; i < size; i++) {
        data[i] = (unsigned char)(i % 251);
        expected += data[i];
    }
    char name[64];
    CHECK_OK(fl_shm_name(shm, name, sizeof name));
    CHECK(strncmp(name, "memfd:", 6) == 0);
    CHECK_RC(FL_ERANGE, fl_shm_name(shm, name, 4));
    uint64_t sum = 0;
    CHECK_OK(fl_pool_apply(pool, open_and_sum, NULL, name, strlen(name), &sum, sizeof sum, NULL));
    CHECK(sum == expected);
    CHECK(data[0] == 42); /* the worker wrote into the same memory */
    CHECK_OK(fl_shm_close(shm));
    CHECK_RC(FL_EHANDLE, fl_shm_data(shm, (void **)&data, &size));

    /* Named: survives its creator's unmap until unlinked. */
    char named[64];
    snprintf(named, sizeof named, "/forklift-test-%d", (int)getpid());
    CHECK_OK(fl_shm_create(named, 4096, &shm));
    fl_shm again = NULL;
    CHECK_RC(FL_ESTATE, fl_shm_create(named, 4096, &again));
    CHECK_OK(fl_shm_data(shm, (void **)&data, NULL));
    data[1] = 7;
    CHECK_OK(fl_shm_close(shm));
    CHECK_OK(fl_pool_apply(pool, open_and_sum, NULL, named, strlen(named), &sum, sizeof sum, NULL));
    CHECK(sum == 7);
    CHECK_OK(fl_shm_open(named, &again));
    CHECK_OK(fl_shm_data(again, (void **)&data, &size));
    CHECK(size == 4096 && data[0] == 42 && data[1] == 7);
    CHECK_OK(fl_shm_unlink(named));
    CHECK_RC(FL_EINVAL, fl_shm_unlink(named));
    CHECK(data[1] == 7); /* the mapping outlives the name */
    CHECK_OK(fl_shm_close(again));
    char path[96];
    snprintf(path, sizeof path, "/dev/shm%s", named);
    CHECK(access(path, F_OK) != 0);
    CHECK_RC(FL_EINVAL, fl_shm_open(named, &again));
    CHECK_RC(FL_EINVAL, fl_shm_open("memfd:1:999999", &again));
    CHECK_RC(FL_EINVAL, fl_shm_create(NULL, 0, &again));
    /* A name fl_shm_open would take for an anonymous segment's token is refused. */
    char token_like[64];
    snprintf(token_like, sizeof token_like, "memfd:%d:1", (int)getpid());
    CHECK_RC(FL_EINVAL, fl_shm_create(token_like, 4096, &again));
    CHECK(strstr(fl_last_error(), "memfd:") != NULL);
    CHECK_RC(FL_EINVAL, fl_shm_create(NULL, SIZE_MAX, &again));
    CHECK(strstr(fl_last_error(), "18446744073709551615") != NULL); /* the size asked for, not -1 */
    CHECK_OK(fl_pool_destroy(pool));
}

/* Starts a sleeping process from a thread that then ends. */
static void *start_from_thread(void *raw) {
    fl_process_options options;
    fl_process_options_init(&options);
    options.daemon = *(int *)raw;
    fl_process p = NULL;
    fl_process_start(behave, NULL, "sleep", 5, &options, &p);
    return p;
}

static void test_daemon(void) {
    int settings[2] = {1, 0};
    fl_process started[2];
    for (int i = 0; i < 2; i++) {
        pthread_t thread;
        void *out = NULL;
        pthread_create(&thread, NULL, start_from_thread, &settings[i]);
        pthread_join(thread, &out);
        started[i] = out;
        CHECK(out != NULL);
    }
    /* Neither ends with the thread that started it. */
    for (int i = 0; i < 2; i++) {
        CHECK_RC(FL_ETIMEDOUT, fl_process_join(started[i], 0.2));
        CHECK_OK(fl_process_kill(started[i]));
        CHECK_OK(fl_process_join(started[i], 20));
    }
    for (int i = 0; i < 2; i++) CHECK_OK(fl_process_destroy(started[i]));
}

/* Whether `pid` has ended (gone, or a zombie nobody reaped yet). */
static int ended(pid_t pid) {
    char path[64], state = 0;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 1;
    int matched = fscanf(f, "%*d (%*[^)]) %c", &state);
    fclose(f);
    return matched != 1 || state == 'Z' || state == 'X';
}

/* A daemon ends with its parent process: a helper run of this program starts a daemon, prints
 * its pid and exits without joining it. */
static void test_daemon_ends_with_parent(void) {
    char self[512] = {0}, command[600];
    if (readlink("/proc/self/exe", self, sizeof self - 1) <= 0) return;
    snprintf(command, sizeof command, "'%s' --start-daemon", self);
    FILE *helper = popen(command, "r");
    CHECK(helper != NULL);
    if (!helper) return;
    long pid = 0;
    char line[64] = {0};
    if (fgets(line, sizeof line, helper)) pid = strtol(line, NULL, 10);
    CHECK(pclose(helper) == 0);
    CHECK(pid > 0);
    int gone = 0;
    for (int i = 0; i < 200 && pid > 0 && !(gone = ended((pid_t)pid)); i++) {
        struct timespec pause = {0, 50 * 1000000L};
        nanosleep(&pause, NULL);
    }
    CHECK(gone);
}

static int start_daemon_and_exit(void) {
    fl_process_options options;
    fl_process_options_init(&options);
    options.daemon = 1;
    fl_process daemon = NULL;
    if (fl_process_start(behave, NULL, "sleep", 5, &options, &daemon) != FL_OK) return 1;
    int64_t pid = 0;
    fl_process_pid(daemon, &pid);
    printf("%lld\n", (long long)pid);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--start-daemon") == 0) return start_daemon_and_exit();
    test_seed_example();
    test_exit_codes();
    test_status_reaped_elsewhere();
    test_queue_semantics();
    test_queue_across_processes();
    test_queue_large_messages();
    test_queue_deaths_mid_copy();
    test_shared_memory();
    test_daemon();
    test_daemon_ends_with_parent();
    CHECK(children() == 0);
    return check_finish("process");
}
