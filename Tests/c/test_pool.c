/* Every Pool operation through the public C ABI, including failures and edge cases. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"

#include <pthread.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

static fl_pool make_pool(int workers) {
    fl_pool_options o;
    fl_pool_options_init(&o);
    o.workers = workers;
    o.name = "test";
    fl_pool pool = NULL;
    CHECK_OK(fl_pool_create(&o, &pool));
    return pool;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Squares an int64 argument. */
static int square(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user;
    if (len != sizeof(int64_t)) return fl_task_fail(ctx, 22, "expected one int64");
    int64_t x;
    memcpy(&x, arg, sizeof x);
    int64_t y = x * x;
    return fl_task_return(ctx, &y, sizeof y);
}

/* Fails for negative inputs, with a message naming the value. */
static int checked_sqrt(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)len;
    int64_t x;
    memcpy(&x, arg, sizeof x);
    if (x < 0) {
        char message[64];
        snprintf(message, sizeof message, "negative input %lld", (long long)x);
        return fl_task_fail(ctx, 33, message);
    }
    int64_t r = 0;
    while ((r + 1) * (r + 1) <= x) r++;
    return fl_task_return(ctx, &r, sizeof r);
}

/* Returns a string result larger than the inline size, through the zero-copy buffer. */
static int repeat_char(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)len;
    unsigned n = *(const unsigned *)arg;
    void *buffer;
    int rc = fl_task_result_buffer(ctx, n, &buffer);
    if (rc != FL_OK) return rc;
    memset(buffer, 'x', n);
    return 0;
}

static int returns_code(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)arg; (void)len; (void)ctx;
    return 5;
}

static int noop(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)arg; (void)len; (void)ctx;
    return 0;
}

/* ---- apply ---------------------------------------------------------------------------- */

static void test_apply(fl_pool pool) {
    int64_t x = 12, y = 0;
    size_t len = 99;
    CHECK_OK(fl_pool_apply(pool, square, NULL, &x, sizeof x, &y, sizeof y, &len));
    CHECK(y == 144 && len == sizeof y);

    /* Result discarded when out is NULL. */
    CHECK_OK(fl_pool_apply(pool, square, NULL, &x, sizeof x, NULL, 0, &len));
    CHECK(len == sizeof y);

    /* Too small a buffer: FL_ERANGE and the size needed. */
    char small[4];
    CHECK_RC(FL_ERANGE, fl_pool_apply(pool, square, NULL, &x, sizeof x, small, sizeof small, &len));
    CHECK(len == sizeof(int64_t));

    /* Large results, zero-copy into the caller's buffer. */
    unsigned n = 5000;
    char *big = malloc(n);
    CHECK_OK(fl_pool_apply(pool, repeat_char, NULL, &n, sizeof n, big, n, &len));
    CHECK(len == n && big[0] == 'x' && big[n - 1] == 'x');
    free(big);

    /* Failures: fl_task_fail and a bare non-zero return. */
    int64_t negative = -4;
    CHECK_RC(FL_ETASK, fl_pool_apply(pool, checked_sqrt, NULL, &negative, sizeof negative, &y, sizeof y, &len));
    CHECK(strstr(fl_last_error(), "negative input -4") != NULL);
    CHECK(strstr(fl_last_error(), "33") != NULL);
    CHECK_RC(FL_ETASK, fl_pool_apply(pool, returns_code, NULL, NULL, 0, NULL, 0, NULL));
    CHECK(strstr(fl_last_error(), "returned 5") != NULL);

    /* A large argument blob is copied whole. */
    int64_t wrong[20] = {0};
    CHECK_RC(FL_ETASK, fl_pool_apply(pool, square, NULL, wrong, sizeof wrong, &y, sizeof y, &len));
    CHECK(strstr(fl_last_error(), "expected one int64") != NULL);
}

/* ---- apply_async with callbacks (the seed's log_result / log_error) --------------------- */

typedef struct {
    int64_t results[200];
    int result_count;
    int error_codes[200];
    int error_count;
    pthread_t callback_thread;
    int thread_changes;
} logbook;

static void note_thread(logbook *log) {
    pthread_t self = pthread_self();
    if (log->result_count + log->error_count == 0) log->callback_thread = self;
    else if (!pthread_equal(self, log->callback_thread)) log->thread_changes++;
}

static void log_result(void *user, fl_result result) {
    logbook *log = user;
    note_thread(log);
    const void *data;
    size_t len;
    /* No lock: callbacks are serialized on one thread. */
    if (fl_result_get(result, 0, &data, &len) == FL_OK && len == sizeof(int64_t)) {
        memcpy(&log->results[log->result_count], data, sizeof(int64_t));
    }
    log->result_count++;
}

static void log_error(void *user, fl_result result) {
    logbook *log = user;
    note_thread(log);
    int code = 0;
    const char *message = NULL;
    fl_result_error(result, &code, &message);
    log->error_codes[log->error_count++] = code;
}

static void test_apply_async(void) {
    fl_pool pool = make_pool(2);
    static logbook log;
    memset(&log, 0, sizeof log);
    for (int64_t i = -50; i < 100; i++) {
        CHECK_OK(fl_pool_apply_async(pool, checked_sqrt, NULL, &i, sizeof i, log_result, log_error, &log, NULL));
    }
    CHECK_OK(fl_pool_close(pool));
    CHECK_OK(fl_pool_join(pool, FL_FOREVER));
    CHECK(log.result_count == 100);
    CHECK(log.error_count == 50);
    CHECK(log.thread_changes == 0);
    CHECK(!pthread_equal(log.callback_thread, pthread_self()));
    int64_t sum = 0;
    for (int i = 0; i < log.result_count; i++) sum += log.results[i];
    int64_t expected = 0;
    for (int64_t i = 0; i < 100; i++) {
        int64_t r = 0;
        while ((r + 1) * (r + 1) <= i) r++;
        expected += r;
    }
    CHECK(sum == expected);
    int all33 = 1;
    for (int i = 0; i < log.error_count; i++) all33 &= log.error_codes[i] == 33;
    CHECK(all33);
    CHECK_OK(fl_pool_destroy(pool));
}

static void test_async_result_handle(fl_pool pool) {
    int64_t x = 9;
    fl_result r;
    CHECK_OK(fl_pool_apply_async(pool, square, NULL, &x, sizeof x, NULL, NULL, NULL, &r));
    CHECK_OK(fl_result_wait(r, FL_FOREVER));
    CHECK(fl_result_ready(r) == 1);
    CHECK(fl_result_successful(r) == 1);
    const void *data;
    size_t len;
    CHECK_OK(fl_result_get(r, FL_FOREVER, &data, &len));
    CHECK(len == sizeof(int64_t) && *(const int64_t *)data == 81);
    size_t count;
    CHECK_OK(fl_result_count(r, &count));
    CHECK(count == 1);
    CHECK_OK(fl_result_item(r, 0, &data, &len));
    CHECK(*(const int64_t *)data == 81);
    CHECK_RC(FL_ERANGE, fl_result_item(r, 1, &data, &len));
    int code = -1;
    const char *message = NULL;
    CHECK_OK(fl_result_error(r, &code, &message));
    CHECK(code == 0 && message != NULL && message[0] == 0);
    CHECK_OK(fl_result_release(r));
    /* get after release */
    CHECK_RC(FL_EHANDLE, fl_result_get(r, 0, &data, &len));
    CHECK_RC(FL_EHANDLE, fl_result_release(r));

    /* A failed async result. */
    int64_t negative = -1;
    CHECK_OK(fl_pool_apply_async(pool, checked_sqrt, NULL, &negative, sizeof negative, NULL, NULL, NULL, &r));
    CHECK_RC(FL_ETASK, fl_result_get(r, FL_FOREVER, &data, &len));
    CHECK(data == NULL && len == 0);
    CHECK(fl_result_successful(r) == 0);
    CHECK_OK(fl_result_error(r, &code, &message));
    CHECK(code == 33 && strcmp(message, "negative input -1") == 0);
    CHECK_OK(fl_result_release(r));

    /* Fire and forget: no handle, no callbacks. */
    CHECK_OK(fl_pool_apply_async(pool, noop, NULL, NULL, 0, NULL, NULL, NULL, NULL));
}

/* A task that sleeps for the number of milliseconds given. */
static int sleeper(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)len; (void)ctx;
    sleep_ms(*(const int *)arg);
    return 0;
}

static void test_timeouts(fl_pool pool) {
    int ms = 300;
    fl_result r;
    CHECK_OK(fl_pool_apply_async(pool, sleeper, NULL, &ms, sizeof ms, NULL, NULL, NULL, &r));
    CHECK_RC(FL_ETIMEDOUT, fl_result_wait(r, 0.01));
    CHECK(fl_result_ready(r) == 0);
    CHECK_RC(FL_ESTATE, fl_result_successful(r));
    CHECK_RC(FL_ESTATE, fl_result_item(r, 0, NULL, NULL));
    CHECK_RC(FL_ESTATE, fl_result_error(r, NULL, NULL));
    CHECK_RC(FL_ETIMEDOUT, fl_result_get(r, 0, NULL, NULL));
    CHECK_OK(fl_result_get(r, 5.0, NULL, NULL));
    CHECK_OK(fl_result_release(r));
}

/* ---- map, starmap ---------------------------------------------------------------------- */

static void test_map(fl_pool pool) {
    enum { N = 1000 };
    int64_t items[N];
    for (int i = 0; i < N; i++) items[i] = i;
    size_t chunks[] = {0, 1, 7, 1000, 5000};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        fl_result r;
        CHECK_OK(fl_pool_map(pool, square, NULL, items, sizeof items[0], N, chunks[c], &r));
        CHECK(fl_result_ready(r) == 1);
        CHECK_OK(fl_result_get(r, 0, NULL, NULL));
        size_t count;
        CHECK_OK(fl_result_count(r, &count));
        CHECK(count == N);
        int in_order = 1;
        for (size_t i = 0; i < count; i++) {
            const void *data;
            size_t len;
            in_order &= fl_result_item(r, i, &data, &len) == FL_OK && len == 8 &&
                        *(const int64_t *)data == (int64_t)(i * i);
        }
        CHECK(in_order);
        CHECK_OK(fl_result_release(r));
    }

    /* An empty map is ready and successful. */
    fl_result r;
    CHECK_OK(fl_pool_map(pool, square, NULL, NULL, 8, 0, 0, &r));
    size_t count = 7;
    CHECK_OK(fl_result_count(r, &count));
    CHECK(count == 0);
    CHECK(fl_result_successful(r) == 1);
    CHECK_OK(fl_result_release(r));

    /* Failed items: the map's status is the first failure's; other items keep their results. */
    int64_t mixed[6] = {4, 9, -2, 16, -7, 25};
    CHECK_OK(fl_pool_map(pool, checked_sqrt, NULL, mixed, 8, 6, 1, &r));
    CHECK_RC(FL_ETASK, fl_result_get(r, 0, NULL, NULL));
    CHECK(strstr(fl_last_error(), "item 2") != NULL);
    int code;
    const char *message;
    CHECK_OK(fl_result_error(r, &code, &message));
    CHECK(code == 33 && strcmp(message, "negative input -2") == 0);
    const void *data;
    size_t len;
    CHECK_OK(fl_result_item(r, 3, &data, &len));
    CHECK(*(const int64_t *)data == 4);
    CHECK_RC(FL_ETASK, fl_result_item(r, 4, &data, &len));
    CHECK_OK(fl_result_item_error(r, 4, &code, &message));
    CHECK(code == 33 && strcmp(message, "negative input -7") == 0);
    CHECK_OK(fl_result_item_error(r, 5, &code, &message));
    CHECK(code == 0);
    CHECK_RC(FL_ERANGE, fl_result_item_error(r, 6, &code, &message));
    CHECK(fl_result_successful(r) == 0);
    CHECK_OK(fl_result_release(r));
}

/* The item index a task sees is its position in the input. */
static int report_index(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)arg; (void)len;
    size_t index;
    int rc = fl_task_index(ctx, &index);
    if (rc != FL_OK) return rc;
    uint64_t v = index;
    return fl_task_return(ctx, &v, sizeof v);
}

static void test_task_index(fl_pool pool) {
    char items[300] = {0};
    fl_result r;
    CHECK_OK(fl_pool_map(pool, report_index, NULL, items, 1, 300, 7, &r));
    int ok = 1;
    for (size_t i = 0; i < 300; i++) {
        const void *data;
        size_t len;
        ok &= fl_result_item(r, i, &data, &len) == FL_OK && *(const uint64_t *)data == i;
    }
    CHECK(ok);
    CHECK_OK(fl_result_release(r));
}

typedef struct {
    int32_t a;
    double x;
    double y;
} triple;

/* The seed's starmap: f(i, x, y) over packed tuples. */
static int combine(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user;
    if (len != sizeof(triple)) return fl_task_fail(ctx, 1, "bad tuple");
    const triple *t = arg;
    double r = t->a * t->x + t->y;
    return fl_task_return(ctx, &r, sizeof r);
}

/* Concatenates variable-length strings with their length. */
static int measure(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)arg;
    uint64_t n = len;
    return fl_task_return(ctx, &n, sizeof n);
}

static void test_starmap(fl_pool pool) {
    triple tuples[3] = {{1, 2.0, 3.0}, {2, 2.0, 3.0}, {3, 0.5, 1.0}};
    fl_blob args[3];
    for (int i = 0; i < 3; i++) args[i] = (fl_blob){&tuples[i], sizeof tuples[i]};
    fl_result r;
    CHECK_OK(fl_pool_starmap(pool, combine, NULL, args, 3, 0, &r));
    double expected[3] = {5.0, 7.0, 2.5};
    for (size_t i = 0; i < 3; i++) {
        const void *data;
        size_t len;
        CHECK_OK(fl_result_item(r, i, &data, &len));
        CHECK(len == sizeof(double) && *(const double *)data == expected[i]);
    }
    CHECK_OK(fl_result_release(r));

    /* Blobs of different sizes, including an empty one. */
    const char *words[] = {"a", "", "three", "sixteen chars..."};
    fl_blob blobs[4];
    for (int i = 0; i < 4; i++) blobs[i] = (fl_blob){strlen(words[i]) ? words[i] : NULL, strlen(words[i])};
    CHECK_OK(fl_pool_starmap(pool, measure, NULL, blobs, 4, 1, &r));
    for (size_t i = 0; i < 4; i++) {
        const void *data;
        size_t len;
        CHECK_OK(fl_result_item(r, i, &data, &len));
        CHECK(*(const uint64_t *)data == strlen(words[i]));
    }
    CHECK_OK(fl_result_release(r));
}

typedef struct {
    int calls;
    int errors;
    size_t count;
    int64_t last;
} map_log;

static void map_done(void *user, fl_result result) {
    map_log *log = user;
    log->calls++;
    fl_result_count(result, &log->count);
    const void *data;
    size_t len;
    if (log->count > 0 && fl_result_item(result, log->count - 1, &data, &len) == FL_OK) {
        memcpy(&log->last, data, sizeof log->last);
    }
}

static void map_failed(void *user, fl_result result) {
    map_log *log = user;
    (void)result;
    log->errors++;
}

static void test_map_async(void) {
    fl_pool pool = make_pool(2);
    static map_log log;
    memset(&log, 0, sizeof log);
    enum { N = 500 };
    int64_t *items = malloc(N * sizeof *items);
    for (int i = 0; i < N; i++) items[i] = i;
    fl_result r;
    CHECK_OK(fl_pool_map_async(pool, square, NULL, items, sizeof *items, N, 0, map_done, map_failed, &log, &r));
    /* The input was copied: scribbling over it now changes nothing. */
    memset(items, 0xff, N * sizeof *items);
    free(items);
    CHECK_OK(fl_result_wait(r, FL_FOREVER));
    size_t count;
    CHECK_OK(fl_result_count(r, &count));
    CHECK(count == N);
    const void *data;
    size_t len;
    CHECK_OK(fl_result_item(r, 499, &data, &len));
    CHECK(*(const int64_t *)data == 499 * 499);
    CHECK_OK(fl_result_release(r));

    /* Without a result handle: only callbacks. */
    int64_t bad[3] = {1, -1, 4};
    CHECK_OK(fl_pool_map_async(pool, checked_sqrt, NULL, bad, 8, 3, 0, map_done, map_failed, &log, NULL));

    triple tuples[2] = {{1, 1.0, 1.0}, {4, 0.25, 0.0}};
    fl_blob args[2] = {{&tuples[0], sizeof tuples[0]}, {&tuples[1], sizeof tuples[1]}};
    CHECK_OK(fl_pool_starmap_async(pool, combine, NULL, args, 2, 0, NULL, NULL, NULL, &r));
    memset(tuples, 0, sizeof tuples); /* copied at submission */
    CHECK_OK(fl_result_wait(r, FL_FOREVER));
    CHECK_OK(fl_result_item(r, 1, &data, &len));
    CHECK(*(const double *)data == 1.0);
    CHECK_OK(fl_result_release(r));

    CHECK_OK(fl_pool_close(pool));
    CHECK_OK(fl_pool_join(pool, FL_FOREVER));
    CHECK(log.calls == 1 && log.errors == 1);
    CHECK(log.count == N && log.last == 499 * 499);
    CHECK_OK(fl_pool_destroy(pool));
}

/* ---- strided map ------------------------------------------------------------------------ */

static int square_kernel(void *user, const void *in, ptrdiff_t in_stride, void *out, ptrdiff_t out_stride,
                         size_t count) {
    (void)user;
    for (size_t i = 0; i < count; i++) {
        int64_t x = *(const int64_t *)((const char *)in + (ptrdiff_t)i * in_stride);
        *(int64_t *)((char *)out + (ptrdiff_t)i * out_stride) = x * x;
    }
    return 0;
}

static int failing_kernel(void *user, const void *in, ptrdiff_t in_stride, void *out, ptrdiff_t out_stride,
                          size_t count) {
    (void)out; (void)out_stride; (void)user;
    for (size_t i = 0; i < count; i++) {
        if (*(const int64_t *)((const char *)in + (ptrdiff_t)i * in_stride) == 777) return 9;
    }
    return 0;
}

static void test_strided(fl_pool pool) {
    enum { N = 100000 };
    int64_t *data = malloc(N * sizeof *data);
    for (int i = 0; i < N; i++) data[i] = i;
    /* In place. */
    CHECK_OK(fl_pool_map_strided(pool, square_kernel, NULL, data, 8, data, 8, N, 0));
    int ok = 1;
    for (int64_t i = 0; i < N; i++) ok &= data[i] == i * i;
    CHECK(ok);

    /* Strided: every other element of a pair array into a separate output, reversed. */
    int64_t pairs[20], out[10];
    for (int i = 0; i < 20; i++) pairs[i] = i;
    CHECK_OK(fl_pool_map_strided(pool, square_kernel, NULL, pairs, 16, out + 9, -8, 10, 3));
    ok = 1;
    for (int i = 0; i < 10; i++) ok &= out[9 - i] == (int64_t)(2 * i) * (2 * i);
    CHECK(ok);

    /* A failing chunk: status and the element range. */
    for (int i = 0; i < N; i++) data[i] = i;
    CHECK_RC(FL_ETASK, fl_pool_map_strided(pool, failing_kernel, NULL, data, 8, NULL, 0, N, 100));
    CHECK(strstr(fl_last_error(), "700..<800") != NULL);

    /* Zero elements. */
    CHECK_OK(fl_pool_map_strided(pool, square_kernel, NULL, NULL, 8, NULL, 8, 0, 0));

    /* Async. */
    for (int i = 0; i < N; i++) data[i] = 3;
    fl_result r;
    CHECK_OK(fl_pool_map_strided_async(pool, square_kernel, NULL, data, 8, data, 8, N, 1000, NULL, NULL, NULL, &r));
    CHECK_OK(fl_result_get(r, FL_FOREVER, NULL, NULL));
    size_t count = 1;
    CHECK_OK(fl_result_count(r, &count));
    CHECK(count == 0);
    CHECK(data[0] == 9 && data[N - 1] == 9);
    CHECK_OK(fl_result_release(r));
    free(data);
}

/* ---- imap, imap_unordered --------------------------------------------------------------- */

typedef struct {
    int64_t next;
    int64_t end;
    int fail_at; /* -1: never */
    int pulled;
    int64_t value;
} counter_source;

static int count_up(void *user, const void **data, size_t *len) {
    counter_source *s = user;
    if (s->fail_at >= 0 && s->next == s->fail_at) return -42;
    if (s->next >= s->end) return 0;
    s->value = s->next++;
    s->pulled++;
    *data = &s->value;
    *len = sizeof s->value;
    return 1;
}

static void test_imap(fl_pool pool) {
    counter_source source = {0, 200, -1, 0, 0};
    fl_iter it;
    CHECK_OK(fl_pool_imap(pool, square, NULL, count_up, &source, 3, 16, &it));
    /* Read-ahead is bounded: nothing consumed yet, at most 16 items pulled. */
    CHECK(source.pulled <= 16);
    int ok = 1, n = 0, max_ahead = 0;
    const void *data;
    size_t len;
    int rc;
    while ((rc = fl_iter_next(it, FL_FOREVER, &data, &len)) == FL_OK) {
        ok &= len == 8 && *(const int64_t *)data == (int64_t)n * n;
        n++;
        if (source.pulled - n > max_ahead) max_ahead = source.pulled - n;
    }
    CHECK_RC(FL_EDONE, rc);
    CHECK(ok && n == 200);
    CHECK(max_ahead <= 16);
    CHECK_RC(FL_EDONE, fl_iter_next(it, 0, &data, &len));
    CHECK_OK(fl_iter_destroy(it));
    CHECK_RC(FL_EHANDLE, fl_iter_next(it, 0, &data, &len));

    /* Unordered: every result once, in any order. */
    counter_source s2 = {0, 100, -1, 0, 0};
    CHECK_OK(fl_pool_imap_unordered(pool, square, NULL, count_up, &s2, 1, 0, &it));
    static char seen[100];
    memset(seen, 0, sizeof seen);
    n = 0;
    while ((rc = fl_iter_next(it, FL_FOREVER, &data, &len)) == FL_OK) {
        int64_t v = *(const int64_t *)data;
        int64_t root = 0;
        while (root * root < v) root++;
        if (root < 100 && root * root == v) seen[root]++;
        n++;
    }
    CHECK_RC(FL_EDONE, rc);
    int each_once = 1;
    for (int i = 0; i < 100; i++) each_once &= seen[i] == 1;
    CHECK(n == 100 && each_once);
    CHECK_OK(fl_iter_destroy(it));

    /* Failing items and a failing source. */
    counter_source s3 = {-2, 3, 1, 0, 0};
    CHECK_OK(fl_pool_imap(pool, checked_sqrt, NULL, count_up, &s3, 2, 0, &it));
    CHECK_RC(FL_ETASK, fl_iter_next(it, FL_FOREVER, &data, &len)); /* -2 */
    int code;
    const char *message;
    CHECK_OK(fl_iter_error(it, &code, &message));
    CHECK(code == 33 && strcmp(message, "negative input -2") == 0);
    CHECK_RC(FL_ETASK, fl_iter_next(it, FL_FOREVER, &data, &len)); /* -1 */
    CHECK_OK(fl_iter_next(it, FL_FOREVER, &data, &len));            /* 0 */
    CHECK(*(const int64_t *)data == 0);
    CHECK_OK(fl_iter_error(it, &code, &message));
    CHECK(code == 0);
    CHECK_RC(FL_ESOURCE, fl_iter_next(it, FL_FOREVER, &data, &len)); /* the source failed at 1 */
    CHECK(strstr(fl_last_error(), "-42") != NULL);
    CHECK_RC(FL_EDONE, fl_iter_next(it, FL_FOREVER, &data, &len));
    CHECK_OK(fl_iter_destroy(it));

    /* Destroy with work in flight, on an endless input. */
    counter_source s4 = {0, 1000000, -1, 0, 0};
    CHECK_OK(fl_pool_imap(pool, square, NULL, count_up, &s4, 1, 4, &it));
    CHECK_OK(fl_iter_next(it, FL_FOREVER, &data, &len));
    CHECK_OK(fl_iter_destroy(it));
    CHECK(s4.pulled < 100); /* an endless input is never read ahead */
}

typedef struct {
    int n;
    int ms;
} sleepy_source;

static int sleepy_items(void *user, const void **data, size_t *len) {
    sleepy_source *s = user;
    if (s->n-- <= 0) return 0;
    *data = &s->ms;
    *len = sizeof s->ms;
    return 1;
}

static void test_imap_timeout(fl_pool pool) {
    sleepy_source s = {2, 300};
    fl_iter it;
    CHECK_OK(fl_pool_imap(pool, sleeper, NULL, sleepy_items, &s, 1, 0, &it));
    const void *data;
    size_t len;
    CHECK_RC(FL_ETIMEDOUT, fl_iter_next(it, 0.02, &data, &len));
    CHECK_OK(fl_iter_next(it, 10.0, &data, &len));
    CHECK_OK(fl_iter_next(it, 10.0, &data, &len));
    CHECK_RC(FL_EDONE, fl_iter_next(it, 10.0, &data, &len));
    CHECK_OK(fl_iter_destroy(it));
}

/* close() drains open iterators, so join never waits on a consumer. */
static void test_close_drains_imap(void) {
    fl_pool pool = make_pool(2);
    counter_source s = {0, 50, -1, 0, 0};
    fl_iter it;
    CHECK_OK(fl_pool_imap(pool, square, NULL, count_up, &s, 2, 4, &it));
    CHECK_OK(fl_pool_close(pool));
    CHECK(s.pulled == 50);
    CHECK_OK(fl_pool_join(pool, 30.0));
    int n = 0, ok = 1;
    const void *data;
    size_t len;
    while (fl_iter_next(it, FL_FOREVER, &data, &len) == FL_OK) {
        ok &= *(const int64_t *)data == (int64_t)n * n;
        n++;
    }
    CHECK(ok && n == 50);
    CHECK_OK(fl_iter_destroy(it));
    CHECK_RC(FL_ESTATE, fl_pool_imap(pool, square, NULL, count_up, &s, 1, 0, &it));
    CHECK_OK(fl_pool_destroy(pool));
}

/* ---- initializer ------------------------------------------------------------------------ */

static __thread int64_t worker_offset = -1;

static int set_offset(void *user, const void *initargs, size_t len) {
    if (len != sizeof(int64_t)) return 1;
    memcpy(&worker_offset, initargs, sizeof worker_offset);
    int *count = user;
    __atomic_fetch_add(count, 1, __ATOMIC_SEQ_CST);
    return 0;
}

static int add_offset(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)len;
    int64_t v = *(const int64_t *)arg + worker_offset;
    return fl_task_return(ctx, &v, sizeof v);
}

static void test_initializer(void) {
    static int init_count = 0;
    int64_t offset = 1000;
    fl_pool_options o;
    fl_pool_options_init(&o);
    o.workers = 3;
    o.initializer = set_offset;
    o.initializer_user = &init_count;
    o.initargs = &offset;
    o.initargs_len = sizeof offset;
    fl_pool pool;
    CHECK_OK(fl_pool_create(&o, &pool));
    offset = 0; /* copied at create */
    CHECK(init_count == 3); /* every initializer ran before create returned */
    int64_t items[64];
    for (int i = 0; i < 64; i++) items[i] = i;
    fl_result r;
    CHECK_OK(fl_pool_map(pool, add_offset, NULL, items, 8, 64, 1, &r));
    int ok = 1;
    for (size_t i = 0; i < 64; i++) {
        const void *data;
        size_t len;
        ok &= fl_result_item(r, i, &data, &len) == FL_OK && *(const int64_t *)data == (int64_t)i + 1000;
    }
    CHECK(ok);
    CHECK_OK(fl_result_release(r));
    CHECK_OK(fl_pool_destroy(pool));
}

/* ---- terminate: every pending task completes once, cancelled ---------------------------- */

typedef struct {
    int ok;
    int cancelled;
    int other;
} tally;

static void count_ok(void *user, fl_result r) {
    (void)r;
    ((tally *)user)->ok++;
}

static void count_error(void *user, fl_result r) {
    tally *t = user;
    int code;
    fl_result_error(r, &code, NULL);
    if (code == FL_ECANCELED) t->cancelled++; else t->other++;
}

static int cooperative(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)arg; (void)len;
    for (int i = 0; i < 2000; i++) {
        if (fl_task_cancelled(ctx) == 1) return fl_task_fail(ctx, 99, "stopped early");
        sleep_ms(1);
    }
    return 0;
}

static void test_terminate(void) {
    fl_pool pool = make_pool(2);
    static tally t;
    memset(&t, 0, sizeof t);
    int ms = 50;
    enum { N = 40 };
    fl_result kept[N];
    for (int i = 0; i < N; i++) {
        CHECK_OK(fl_pool_apply_async(pool, sleeper, NULL, &ms, sizeof ms, count_ok, count_error, &t, &kept[i]));
    }
    int64_t items[1000];
    for (int i = 0; i < 1000; i++) items[i] = i;
    fl_result map_result;
    CHECK_OK(fl_pool_map_async(pool, square, NULL, items, 8, 1000, 10, NULL, NULL, NULL, &map_result));
    sleep_ms(20);
    CHECK_OK(fl_pool_terminate(pool));
    CHECK_OK(fl_pool_terminate(pool)); /* idempotent */
    CHECK_RC(FL_ESTATE, fl_pool_apply_async(pool, noop, NULL, NULL, 0, NULL, NULL, NULL, NULL));
    CHECK_OK(fl_pool_join(pool, 30.0));
    CHECK(t.ok + t.cancelled == N);
    CHECK(t.cancelled >= N - 4);
    CHECK(t.other == 0);
    int cancelled_results = 0;
    for (int i = 0; i < N; i++) {
        CHECK(fl_result_ready(kept[i]) == 1);
        if (fl_result_get(kept[i], 0, NULL, NULL) == FL_ECANCELED) cancelled_results++;
        CHECK_OK(fl_result_release(kept[i]));
    }
    CHECK(cancelled_results == t.cancelled);
    CHECK_RC(FL_ECANCELED, fl_result_get(map_result, 0, NULL, NULL));
    CHECK_RC(FL_ECANCELED, fl_result_item(map_result, 999, NULL, NULL));
    CHECK_OK(fl_result_release(map_result));
    CHECK_OK(fl_pool_destroy(pool));

    /* A running task sees the cancellation and may stop early. */
    pool = make_pool(1);
    fl_result r;
    CHECK_OK(fl_pool_apply_async(pool, cooperative, NULL, NULL, 0, NULL, NULL, NULL, &r));
    sleep_ms(30);
    CHECK_OK(fl_pool_destroy(pool)); /* destroy of a running pool terminates it */
    CHECK_RC(FL_ETASK, fl_result_get(r, 10.0, NULL, NULL));
    CHECK(strstr(fl_last_error(), "stopped early") != NULL);
    CHECK_OK(fl_result_release(r));
}

/* ---- nested submission: a task waits for work of its own pool ---------------------------- */

static fl_pool nested_pool;

static int nested_sum(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)len;
    int64_t depth = *(const int64_t *)arg;
    if (depth == 0) {
        int64_t one = 1;
        return fl_task_return(ctx, &one, sizeof one);
    }
    /* Two children: one apply, one map; this worker runs them itself if nobody else is free. */
    int64_t child = depth - 1, a = 0;
    int rc = fl_pool_apply(nested_pool, nested_sum, NULL, &child, sizeof child, &a, sizeof a, NULL);
    if (rc != FL_OK) return fl_task_fail(ctx, 2, fl_last_error());
    fl_result r;
    int64_t children[2] = {child, child};
    rc = fl_pool_map(nested_pool, nested_sum, NULL, children, 8, 2, 1, &r);
    if (rc != FL_OK) return fl_task_fail(ctx, 3, fl_last_error());
    int64_t total = a;
    for (size_t i = 0; i < 2; i++) {
        const void *data;
        size_t l;
        if (fl_result_item(r, i, &data, &l) != FL_OK) return fl_task_fail(ctx, 4, fl_last_error());
        total += *(const int64_t *)data;
    }
    fl_result_release(r);
    return fl_task_return(ctx, &total, sizeof total);
}

static int join_own_pool(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)arg; (void)len; (void)ctx;
    int *rc = user;
    *rc = fl_pool_join(nested_pool, 0);
    return 0;
}

static int iterate_inside(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)arg; (void)len;
    counter_source s = {0, 20, -1, 0, 0};
    fl_iter it;
    if (fl_pool_imap(nested_pool, square, NULL, count_up, &s, 1, 2, &it) != FL_OK) return 1;
    int64_t sum = 0;
    const void *data;
    size_t l;
    while (fl_iter_next(it, FL_FOREVER, &data, &l) == FL_OK) sum += *(const int64_t *)data;
    fl_iter_destroy(it);
    return fl_task_return(ctx, &sum, sizeof sum);
}

static void test_nested(void) {
    for (int workers = 1; workers <= 2; workers++) {
        nested_pool = make_pool(workers);
        int64_t depth = 5, total = 0;
        CHECK_OK(fl_pool_apply(nested_pool, nested_sum, NULL, &depth, sizeof depth, &total, sizeof total, NULL));
        CHECK(total == 243); /* 3^5 leaves */
        int64_t sum = 0;
        CHECK_OK(fl_pool_apply(nested_pool, iterate_inside, NULL, NULL, 0, &sum, sizeof sum, NULL));
        CHECK(sum == 2470); /* sum of squares 0..19 */
        int rc = 0;
        CHECK_OK(fl_pool_apply(nested_pool, join_own_pool, &rc, NULL, 0, NULL, 0, NULL));
        CHECK(rc == FL_EDEADLK);
        CHECK_OK(fl_pool_destroy(nested_pool));
    }
}

/* A callback may not destroy or join its own pool, and gets FL_EDEADLK instead of hanging. */
static int callback_destroy_rc = 0;
static fl_pool callback_pool;

static void destroy_from_callback(void *user, fl_result r) {
    (void)user; (void)r;
    callback_destroy_rc = fl_pool_destroy(callback_pool);
}

static void test_callback_deadlock(void) {
    callback_pool = make_pool(1);
    CHECK_OK(fl_pool_apply_async(callback_pool, noop, NULL, NULL, 0, destroy_from_callback, NULL, NULL, NULL));
    CHECK_OK(fl_pool_close(callback_pool));
    CHECK_OK(fl_pool_join(callback_pool, FL_FOREVER));
    CHECK(callback_destroy_rc == FL_EDEADLK);
    CHECK_OK(fl_pool_destroy(callback_pool));
}

/* A callback of a submission without a result handle gets a handle valid only during the
 * callback: readable there, not releasable, and rejected afterwards. */
static fl_result stashed_scoped;
static int scoped_get_rc = -100, scoped_release_rc = -100;

static void stash_scoped(void *user, fl_result r) {
    (void)user;
    stashed_scoped = r;
    scoped_get_rc = fl_result_get(r, 0, NULL, NULL);
    scoped_release_rc = fl_result_release(r);
}

static void test_scoped_callback_handles(void) {
    fl_pool pool = make_pool(1);
    int64_t x = 3;
    CHECK_OK(fl_pool_apply_async(pool, square, NULL, &x, sizeof x, stash_scoped, NULL, NULL, NULL));
    CHECK_OK(fl_pool_close(pool));
    CHECK_OK(fl_pool_join(pool, FL_FOREVER));
    CHECK(scoped_get_rc == FL_OK);
    CHECK(scoped_release_rc == FL_EHANDLE);
    CHECK(stashed_scoped != NULL);
    CHECK_RC(FL_EHANDLE, fl_result_get(stashed_scoped, 0, NULL, NULL));
    CHECK_RC(FL_EHANDLE, fl_result_ready(stashed_scoped));
    CHECK_OK(fl_pool_destroy(pool));
}

/* A result stays readable after its pool is destroyed, and inside a callback after release. */
static int late_read_ok = 0;

static void read_after_release(void *user, fl_result r) {
    (void)user;
    const void *data;
    size_t len;
    late_read_ok = fl_result_get(r, 0, &data, &len) == FL_OK && *(const int64_t *)data == 49;
}

static void test_result_lifetimes(void) {
    fl_pool pool = make_pool(1);
    int64_t x = 7;
    fl_result r, r2;
    CHECK_OK(fl_pool_apply_async(pool, square, NULL, &x, sizeof x, NULL, NULL, NULL, &r));
    int ms = 50;
    CHECK_OK(fl_pool_apply_async(pool, sleeper, NULL, &ms, sizeof ms, NULL, NULL, NULL, NULL));
    CHECK_OK(fl_pool_apply_async(pool, square, NULL, &x, sizeof x, read_after_release, NULL, NULL, &r2));
    CHECK_OK(fl_result_release(r2)); /* released before its callback ran */
    CHECK_OK(fl_pool_close(pool));
    CHECK_OK(fl_pool_destroy(pool));
    CHECK(late_read_ok == 1);
    const void *data;
    size_t len;
    CHECK_OK(fl_result_get(r, FL_FOREVER, &data, &len));
    CHECK(*(const int64_t *)data == 49);
    CHECK_OK(fl_result_release(r));
}

int main(void) {
    fl_pool pool = make_pool(2);
    test_apply(pool);
    test_async_result_handle(pool);
    test_timeouts(pool);
    test_map(pool);
    test_task_index(pool);
    test_starmap(pool);
    test_strided(pool);
    test_imap(pool);
    test_imap_timeout(pool);
    CHECK_OK(fl_pool_close(pool));
    CHECK_OK(fl_pool_join(pool, FL_FOREVER));
    CHECK_OK(fl_pool_destroy(pool));

    test_apply_async();
    test_map_async();
    test_close_drains_imap();
    test_initializer();
    test_terminate();
    test_nested();
    test_callback_deadlock();
    test_result_lifetimes();
    test_scoped_callback_handles();
    return check_finish("test_pool");
}
