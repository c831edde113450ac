/* Typed remote tasks through the public C ABI: plain C functions called by signature as
 * remote tasks (fl_remote_typed), values and references as arguments, graphs of them, named
 * typed functions, bad input, and the same calls isolated in worker processes. */
#define _GNU_SOURCE
#include "check.h"
#include "remote_helpers.h"
#include "children.h"

#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

/* ---- plain C functions: nothing here knows about Forklift ---- */

int64_t add_i64(int64_t a, int64_t b) { return a + b; }

/* A negative 32-bit result: libffi widens it, the object must hold exactly 4 bytes. */
int32_t negate_i32(int32_t x) { return -x; }

uint8_t low_byte(uint64_t x) { return (uint8_t)(x & 0xff); }

typedef struct point {
    double x, y;
} point;

point scale_point(point p, double by) {
    point out = {p.x * by, p.y * by};
    return out;
}

double point_length(point p) { return sqrt(p.x * p.x + p.y * p.y); }

/* Mixed widths: the tuple has padding between the arguments. */
int64_t mixed(int8_t a, double b, int16_t c, int64_t d, float e) {
    return (int64_t)a + (int64_t)b + (int64_t)c + d + (int64_t)e;
}

static int side_effect;
void set_side_effect(int value) { side_effect = value; }

int32_t current_pid(void) { return (int32_t)getpid(); }

int32_t crash_now(int32_t code) {
    if (code > 0) raise(SIGSEGV);
    return code;
}

/* ---- helpers ---- */

static fl_arg value(const void *data, size_t len) {
    fl_arg arg = {data, len, NULL};
    return arg;
}

static fl_arg ref(fl_ref r) {
    fl_arg arg = {NULL, 0, r};
    return arg;
}

static fl_signature signature(const char *text) {
    fl_signature sig = NULL;
    CHECK_OK(fl_signature_create(text, &sig));
    return sig;
}

static double get_double(fl_ref r) {
    double v = -999999.0;
    get_value(r, &v, sizeof v);
    return v;
}

static int32_t get_i32(fl_ref r) {
    int32_t v = -999999;
    get_value(r, &v, sizeof v);
    return v;
}

static fl_runtime runtime_with(size_t process_workers) {
    fl_runtime rt = runtime_with_processes(process_workers);
    CHECK(rt != NULL);
    return rt;
}

/* ---- tests ---- */

/* pow, fmax and sqrt from libm as remote tasks, values and references mixed: a graph. */
static void test_values_and_graph(fl_runtime rt, const fl_remote_options *options) {
    fl_signature binary = signature("double(double, double)");
    fl_signature unary = signature("double(double)");
    double two = 2.0, ten = 10.0, half = 0.5;
    fl_arg pow_args[2] = {value(&two, sizeof two), value(&ten, sizeof ten)};
    fl_ref power = NULL, root = NULL, larger = NULL, again = NULL;
    CHECK_OK(fl_remote_typed(rt, binary, (fl_fn)pow, pow_args, 2, options, &power));
    CHECK(power != NULL);
    fl_arg root_args[1] = {ref(power)};
    CHECK_OK(fl_remote_typed(rt, unary, (fl_fn)sqrt, root_args, 1, options, &root));
    fl_arg max_args[2] = {ref(root), ref(power)};
    CHECK_OK(fl_remote_typed(rt, binary, (fl_fn)fmax, max_args, 2, options, &larger));
    fl_arg mixed_args[2] = {ref(larger), value(&half, sizeof half)};
    CHECK_OK(fl_remote_typed(rt, binary, (fl_fn)pow, mixed_args, 2, options, &again));
    /* The signatures may go once the tasks are submitted. */
    CHECK_OK(fl_signature_destroy(binary));
    CHECK_OK(fl_signature_destroy(unary));
    CHECK(get_double(power) == 1024.0);
    CHECK(get_double(root) == 32.0);
    CHECK(get_double(larger) == 1024.0);
    CHECK(get_double(again) == 32.0);
    fl_ref_release(power);
    fl_ref_release(root);
    fl_ref_release(larger);
    fl_ref_release(again);
}

/* Integer widths, structs by value, padding in the tuple, a void function. */
static void test_types(fl_runtime rt, const fl_remote_options *options) {
    fl_signature add = signature("i64(i64, i64)");
    int64_t a = 40, b = 2;
    fl_arg add_args[2] = {value(&a, sizeof a), value(&b, sizeof b)};
    fl_ref sum = NULL;
    CHECK_OK(fl_remote_typed(rt, add, (fl_fn)add_i64, add_args, 2, options, &sum));
    CHECK(get_int(sum) == 42);

    fl_signature neg = signature("i32(i32)");
    int32_t seven = 7;
    fl_arg neg_args[1] = {value(&seven, sizeof seven)};
    fl_ref negated = NULL;
    CHECK_OK(fl_remote_typed(rt, neg, (fl_fn)negate_i32, neg_args, 1, options, &negated));
    const void *data = NULL;
    size_t len = 0;
    CHECK_OK(fl_get(negated, 30, &data, &len));
    CHECK(len == 4);
    CHECK(get_i32(negated) == -7);

    fl_signature low = signature("u8(u64)");
    uint64_t word = 0x1234567890abcdefULL;
    fl_arg low_args[1] = {value(&word, sizeof word)};
    fl_ref byte = NULL;
    CHECK_OK(fl_remote_typed(rt, low, (fl_fn)low_byte, low_args, 1, options, &byte));
    CHECK_OK(fl_get(byte, 30, &data, &len));
    CHECK(len == 1 && ((const uint8_t *)data)[0] == 0xef);

    fl_signature scale = signature("{double, double}({double, double}, double)");
    fl_signature length = signature("double({double, double})");
    point p = {3.0, 4.0};
    double by = 2.0;
    fl_arg scale_args[2] = {value(&p, sizeof p), value(&by, sizeof by)};
    fl_ref scaled = NULL, measured = NULL;
    CHECK_OK(fl_remote_typed(rt, scale, (fl_fn)scale_point, scale_args, 2, options, &scaled));
    fl_arg length_args[1] = {ref(scaled)};
    CHECK_OK(fl_remote_typed(rt, length, (fl_fn)point_length, length_args, 1, options, &measured));
    CHECK_OK(fl_get(scaled, 30, &data, &len));
    CHECK(len == sizeof(point));
    if (len == sizeof(point)) {
        point out;
        memcpy(&out, data, sizeof out);
        CHECK(out.x == 6.0 && out.y == 8.0);
    }
    CHECK(get_double(measured) == 10.0);

    fl_signature mix = signature("i64(i8, double, i16, i64, float)");
    int8_t m1 = -3;
    double m2 = 1000.0;
    int16_t m3 = 300;
    int64_t m4 = 5000000000LL;
    float m5 = 2.0f;
    fl_arg mix_args[5] = {value(&m1, 1), value(&m2, 8), value(&m3, 2), value(&m4, 8), value(&m5, 4)};
    fl_ref mixed_ref = NULL;
    CHECK_OK(fl_remote_typed(rt, mix, (fl_fn)mixed, mix_args, 5, options, &mixed_ref));
    CHECK(get_int(mixed_ref) == 5000001299LL);

    fl_signature pid = signature("i32(void)");
    fl_ref who = NULL;
    CHECK_OK(fl_remote_typed(rt, pid, (fl_fn)current_pid, NULL, 0, options, &who));
    int32_t worker_pid = get_i32(who);
    int isolated = options && options->isolate;
    CHECK(worker_pid > 0);
    CHECK(isolated ? worker_pid != (int32_t)getpid() : worker_pid == (int32_t)getpid());

    fl_signature setter = signature("void(int)");
    int forty_two = 42;
    fl_arg set_args[1] = {value(&forty_two, sizeof forty_two)};
    fl_ref done = NULL;
    side_effect = 0;
    CHECK_OK(fl_remote_typed(rt, setter, (fl_fn)set_side_effect, set_args, 1, options, &done));
    CHECK_OK(fl_get(done, 30, &data, &len));
    CHECK(len == 0);
    /* In a worker process the write stays there. */
    CHECK(side_effect == (isolated ? 0 : 42));

    fl_signature sigs[] = {add, neg, low, scale, length, mix, pid, setter};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) CHECK_OK(fl_signature_destroy(sigs[i]));
    fl_ref refs[] = {sum, negated, byte, scaled, measured, mixed_ref, who, done};
    for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++) CHECK_OK(fl_ref_release(refs[i]));
}

/* Bad input: refused at submission with nothing made, or (an object argument of another size)
 * a task failure naming the argument; a failed argument travels. */
static void test_bad_input(fl_runtime rt, const fl_remote_options *options) {
    fl_signature binary = signature("double(double, double)");
    double x = 1.0;
    float small = 1.0f;
    fl_ref out = (fl_ref)1;
    fl_arg one[1] = {value(&x, sizeof x)};
    CHECK_RC(FL_EINVAL, fl_remote_typed(rt, binary, (fl_fn)pow, one, 1, options, &out));
    CHECK(out == NULL);
    CHECK(strstr(fl_last_error(), "1 arguments given") != NULL && strstr(fl_last_error(), "takes 2") != NULL);
    fl_arg wrong_size[2] = {value(&x, sizeof x), value(&small, sizeof small)};
    out = (fl_ref)1;
    CHECK_RC(FL_EINVAL, fl_remote_typed(rt, binary, (fl_fn)pow, wrong_size, 2, options, &out));
    CHECK(out == NULL);
    CHECK(strstr(fl_last_error(), "args[1] holds 4 bytes") != NULL);
    fl_arg good[2] = {value(&x, sizeof x), value(&x, sizeof x)};
    CHECK_RC(FL_EINVAL, fl_remote_typed(rt, binary, NULL, good, 2, options, &out));
    CHECK_RC(FL_EINVAL, fl_remote_typed(rt, binary, (fl_fn)pow, good, 2, options, NULL));
    CHECK_RC(FL_EINVAL, fl_remote_typed(rt, binary, (fl_fn)pow, NULL, 2, options, &out));
    CHECK_RC(FL_EHANDLE, fl_remote_typed(rt, NULL, (fl_fn)pow, good, 2, options, &out));
    CHECK_RC(FL_EHANDLE, fl_remote_typed(NULL, binary, (fl_fn)pow, good, 2, options, &out));
    fl_arg dangling[2] = {value(&x, sizeof x), ref((fl_ref)(uintptr_t)0x7777)};
    CHECK_RC(FL_EHANDLE, fl_remote_typed(rt, binary, (fl_fn)pow, dangling, 2, options, &out));
    fl_runtime_stats stats = stats_once_settled(rt);
    CHECK(stats.objects == 0);

    /* An object of 4 bytes where a double is expected: the task fails, pow is not called. */
    fl_ref four = NULL, failed = NULL, dependent = NULL;
    CHECK_OK(fl_put(rt, &small, sizeof small, &four));
    fl_arg from_object[2] = {value(&x, sizeof x), ref(four)};
    CHECK_OK(fl_remote_typed(rt, binary, (fl_fn)pow, from_object, 2, options, &failed));
    CHECK_RC(FL_ETASK, fl_get(failed, 30, NULL, NULL));
    CHECK(strstr(fl_last_error(), "argument 1 holds 4 bytes") != NULL);
    /* ... and a task taking that result fails with it as the cause. */
    fl_signature unary = signature("double(double)");
    fl_arg from_failed[1] = {ref(failed)};
    CHECK_OK(fl_remote_typed(rt, unary, (fl_fn)sqrt, from_failed, 1, options, &dependent));
    CHECK_RC(FL_ETASK, fl_get(dependent, 30, NULL, NULL));
    CHECK(strstr(fl_last_error(), "argument 0 failed") != NULL && strstr(fl_last_error(), "holds 4 bytes") != NULL);
    fl_ref_release(four);
    fl_ref_release(failed);
    fl_ref_release(dependent);
    CHECK_OK(fl_signature_destroy(binary));
    CHECK_OK(fl_signature_destroy(unary));
    stats = stats_once_settled(rt);
    CHECK(stats.objects == 0 && stats.object_bytes == 0);
}

/* Typed functions registered by name: fl_remote_named calls them as typed tasks, traces name them. */
static void test_named(fl_runtime rt) {
    fl_signature binary = signature("double(double, double)");
    fl_signature other = signature("double(double)");
    CHECK_OK(fl_function_register_typed("typed.pow", binary, (fl_fn)pow));
    CHECK_OK(fl_function_register_typed("typed.pow", binary, (fl_fn)pow)); /* the same again */
    CHECK_RC(FL_ESTATE, fl_function_register_typed("typed.pow", other, (fl_fn)pow));
    CHECK_RC(FL_ESTATE, fl_function_register_typed("typed.pow", binary, (fl_fn)fmax));
    CHECK_RC(FL_EINVAL, fl_function_register_typed("", binary, (fl_fn)pow));
    CHECK_RC(FL_EINVAL, fl_function_register_typed(NULL, binary, (fl_fn)pow));
    CHECK_RC(FL_EINVAL, fl_function_register_typed("typed.none", binary, NULL));
    CHECK_RC(FL_EHANDLE, fl_function_register_typed("typed.none", NULL, (fl_fn)pow));
    /* The registration keeps the signature it needs. */
    CHECK_OK(fl_signature_destroy(binary));
    CHECK_OK(fl_runtime_trace_start(rt));
    double three = 3.0, four = 4.0;
    fl_arg args[2] = {value(&three, sizeof three), value(&four, sizeof four)};
    fl_ref r = NULL, unnamed = NULL;
    CHECK_OK(fl_remote_named(rt, "typed.pow", args, 2, NULL, &r));
    CHECK(get_double(r) == 81.0);
    fl_arg short_args[1] = {value(&three, sizeof three)};
    CHECK_RC(FL_EINVAL, fl_remote_named(rt, "typed.pow", short_args, 1, NULL, &unnamed));
    CHECK(unnamed == NULL);
    fl_signature add = signature("i64(i64, i64)");
    int64_t a = 1, b = 2;
    fl_arg add_args[2] = {value(&a, sizeof a), value(&b, sizeof b)};
    CHECK_OK(fl_remote_typed(rt, add, (fl_fn)add_i64, add_args, 2, NULL, &unnamed));
    CHECK(get_int(unnamed) == 3);
    CHECK_OK(fl_runtime_trace_stop(rt));
    char path[64];
    snprintf(path, sizeof path, "/tmp/forklift-typed-trace-%d.json", (int)getpid());
    CHECK_OK(fl_runtime_trace_write(rt, path));
    FILE *file = fopen(path, "r");
    CHECK(file != NULL);
    if (file) {
        static char text[1 << 16];
        size_t n = fread(text, 1, sizeof text - 1, file);
        text[n] = 0;
        fclose(file);
        CHECK(strstr(text, "\"name\":\"typed.pow\"") != NULL);
        CHECK(strstr(text, "\"name\":\"add_i64\"") != NULL);
    }
    remove(path);
    CHECK_OK(fl_function_unregister("typed.pow"));
    fl_ref gone = (fl_ref)1;
    CHECK_RC(FL_EINVAL, fl_remote_named(rt, "typed.pow", args, 2, NULL, &gone));
    CHECK(gone == NULL);
    fl_ref_release(r);
    fl_ref_release(unnamed);
    CHECK_OK(fl_signature_destroy(other));
    CHECK_OK(fl_signature_destroy(add));
}

/* Many typed tasks in a chain and fanned in: counters settle, nothing is left in the store. */
static void test_many(fl_runtime rt, const fl_remote_options *options, int count) {
    fl_signature add = signature("i64(i64, i64)");
    int64_t one = 1, zero = 0;
    fl_arg first[2] = {value(&zero, sizeof zero), value(&one, sizeof one)};
    fl_ref chain = NULL;
    CHECK_OK(fl_remote_typed(rt, add, (fl_fn)add_i64, first, 2, options, &chain));
    for (int i = 1; i < count; i++) {
        fl_arg next[2] = {ref(chain), value(&one, sizeof one)};
        fl_ref after = NULL;
        CHECK_OK(fl_remote_typed(rt, add, (fl_fn)add_i64, next, 2, options, &after));
        fl_ref_release(chain);
        chain = after;
    }
    CHECK(get_int(chain) == count);
    fl_ref_release(chain);
    CHECK_OK(fl_signature_destroy(add));
    fl_runtime_stats stats = stats_once_settled(rt);
    CHECK(stats.objects == 0 && stats.tasks_running == 0);
}

/* In a worker process: a typed function that crashes fails its task alone with FL_EWORKER. */
static void test_isolated_crash(fl_runtime rt) {
    fl_remote_options options;
    fl_remote_options_init(&options);
    options.isolate = 1;
    fl_signature sig = signature("i32(i32)");
    int32_t crash = 1, fine = 0;
    fl_arg crash_args[1] = {value(&crash, sizeof crash)};
    fl_arg fine_args[1] = {value(&fine, sizeof fine)};
    fl_ref crashed = NULL, after = NULL;
    CHECK_OK(fl_remote_typed(rt, sig, (fl_fn)crash_now, crash_args, 1, &options, &crashed));
    CHECK_RC(FL_EWORKER, fl_get(crashed, 30, NULL, NULL));
    CHECK(strstr(fl_last_error(), "SIGSEGV") != NULL);
    CHECK_OK(fl_remote_typed(rt, sig, (fl_fn)crash_now, fine_args, 1, &options, &after));
    CHECK(get_i32(after) == 0);
    fl_ref_release(crashed);
    fl_ref_release(after);
    CHECK_OK(fl_signature_destroy(sig));
}

int main(void) {
    fl_runtime rt = runtime_with(0);
    test_values_and_graph(rt, NULL);
    test_types(rt, NULL);
    test_bad_input(rt, NULL);
    test_named(rt);
    test_many(rt, NULL, 2000);
    CHECK_OK(fl_runtime_shutdown(rt));

    rt = runtime_with(2);
    fl_remote_options isolated;
    CHECK_OK(fl_remote_options_init(&isolated));
    isolated.isolate = 1;
    test_values_and_graph(rt, &isolated);
    test_types(rt, &isolated);
    test_bad_input(rt, &isolated);
    test_many(rt, &isolated, 300);
    test_isolated_crash(rt);
    CHECK_OK(fl_runtime_shutdown(rt));
    CHECK(child_pids(NULL, 0) == 0);
    return check_finish("test_remote_typed");
}
