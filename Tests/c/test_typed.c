/* Typed calls through libffi: every supported type round-trips through the public C ABI. */
#include "check.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>

static fl_pool pool;

static fl_signature sig(const char *text) {
    fl_signature s = NULL;
    CHECK_OK(fl_signature_create(text, &s));
    return s;
}

/* ---- functions under test ---------------------------------------------------------------- */

static int8_t neg_i8(int8_t x) { return (int8_t)-x; }
static uint8_t inc_u8(uint8_t x) { return (uint8_t)(x + 1); }
static int16_t neg_i16(int16_t x) { return (int16_t)-x; }
static uint16_t inc_u16(uint16_t x) { return (uint16_t)(x + 1); }
static int32_t neg_i32(int32_t x) { return -x; }
static uint32_t inc_u32(uint32_t x) { return x + 1; }
static int64_t neg_i64(int64_t x) { return -x; }
static uint64_t inc_u64(uint64_t x) { return x + 1; }
static char upper(char c) { return (char)(c - 32); }
static long twice_long(long x) { return 2 * x; }
static unsigned long twice_ulong(unsigned long x) { return 2 * x; }
static size_t length(const char *s) { return strlen(s); }
static float half(float x) { return x / 2; }
static double third(double x) { return x / 3; }
static void *next_byte(void *p) { return (char *)p + 1; }

typedef struct {
    double x, y;
} vec2;
static vec2 scale(vec2 v, double k) { return (vec2){v.x * k, v.y * k}; }

typedef struct {
    int8_t tag;
    int32_t value;
} tagged;
static tagged bump(tagged t) { return (tagged){(int8_t)(t.tag + 1), t.value * 10}; }

typedef struct {
    vec2 a;
    float w;
} nested;
static double weight(nested n) { return (n.a.x + n.a.y) * n.w; }

/* The example: (int, double, const char*). */
static double mixed(int count, double factor, const char *label) {
    return count * factor + (double)strlen(label);
}

/* Eight arguments of different classes, to exercise register and stack passing. */
static double many(int8_t a, uint16_t b, int32_t c, int64_t d, float e, double f, const char *g, vec2 h) {
    return a + b + c + (double)d + e + f + (double)strlen(g) + h.x + h.y;
}

static int touched = 0;
static void touch(int *p) { *p = 42; }

/* ---- tests ------------------------------------------------------------------------------- */

#define ROUND_TRIP(type, text, fn, in, expected)                                            \
    do {                                                                                  \
        fl_signature s_ = sig(text);                                                      \
        type arg_ = (in), out_ = 0;                                                       \
        CHECK_OK(fl_pool_apply_typed(pool, s_, (fl_fn)fn, &arg_, &out_));                 \
        CHECK(out_ == (expected));                                                        \
        fl_signature_destroy(s_);                                                         \
    } while (0)

static void test_scalars(void) {
    ROUND_TRIP(int8_t, "i8(i8)", neg_i8, 5, -5);
    ROUND_TRIP(int8_t, "i8(i8)", neg_i8, -127, 127);
    ROUND_TRIP(uint8_t, "u8(u8)", inc_u8, 255, 0);
    ROUND_TRIP(uint8_t, "u8(u8)", inc_u8, 200, 201);
    ROUND_TRIP(int16_t, "i16(i16)", neg_i16, 1000, -1000);
    ROUND_TRIP(uint16_t, "u16(u16)", inc_u16, 65535, 0);
    ROUND_TRIP(int32_t, "i32(i32)", neg_i32, 123456, -123456);
    ROUND_TRIP(int32_t, "int(int)", neg_i32, -7, 7);
    ROUND_TRIP(uint32_t, "u32(u32)", inc_u32, 4000000000u, 4000000001u);
    ROUND_TRIP(uint32_t, "unsigned(unsigned)", inc_u32, 1u, 2u);
    ROUND_TRIP(int64_t, "i64(i64)", neg_i64, -5000000000LL, 5000000000LL);
    ROUND_TRIP(uint64_t, "u64(u64)", inc_u64, 18446744073709551614ULL, 18446744073709551615ULL);
    ROUND_TRIP(char, "char(char)", upper, 'a', 'A');
    ROUND_TRIP(long, "long(long)", twice_long, -21L, -42L);
    ROUND_TRIP(unsigned long, "ulong(ulong)", twice_ulong, 21UL, 42UL);
    ROUND_TRIP(float, "float(float)", half, 3.0f, 1.5f);
    ROUND_TRIP(double, "double(double)", third, 9.0, 3.0);

    /* Sign extension must not leak garbage from the widened return register. */
    fl_signature s = sig("i8(i8)");
    int64_t wide = 0x7777777777777777LL;
    int8_t in = 1;
    CHECK_OK(fl_pool_apply_typed(pool, s, (fl_fn)neg_i8, &in, &wide));
    CHECK((int8_t)(wide & 0xff) == -1);
    CHECK((wide & ~(int64_t)0xff) == (0x7777777777777777LL & ~(int64_t)0xff)); /* only 1 byte written */
    fl_signature_destroy(s);

    s = sig("size_t(ptr)");
    const char *text = "forklift";
    size_t n = 0;
    CHECK_OK(fl_pool_apply_typed(pool, s, (fl_fn)length, &text, &n));
    CHECK(n == 8);
    fl_signature_destroy(s);

    s = sig("ptr(ptr)");
    char buffer[4];
    void *p = buffer, *q = NULL;
    CHECK_OK(fl_pool_apply_typed(pool, s, (fl_fn)next_byte, &p, &q));
    CHECK(q == buffer + 1);
    fl_signature_destroy(s);

    s = sig("void(ptr)");
    int *target = &touched;
    size_t result_size = 99;
    CHECK_OK(fl_signature_layout(s, NULL, NULL, &result_size));
    CHECK(result_size == 0);
    CHECK_OK(fl_pool_apply_typed(pool, s, (fl_fn)touch, &target, NULL));
    CHECK(touched == 42);
    fl_signature_destroy(s);
}

static void test_structs(void) {
    fl_signature s = sig("{double, double}({double,double}, double)");
    struct {
        vec2 v;
        double k;
    } args = {{1.5, -2.0}, 4.0};
    vec2 out = {0, 0};
    CHECK_OK(fl_pool_apply_typed(pool, s, (fl_fn)scale, &args, &out));
    CHECK(out.x == 6.0 && out.y == -8.0);
    fl_signature_destroy(s);

    s = sig("{i8, i32}({i8, i32})");
    tagged t = {-3, 7}, r = {0, 0};
    CHECK_OK(fl_pool_apply_typed(pool, s, (fl_fn)bump, &t, &r));
    CHECK(r.tag == -2 && r.value == 70);
    fl_signature_destroy(s);

    s = sig("double({{double, double}, float})");
    nested nn = {{1.0, 2.0}, 0.5f};
    double w = 0;
    CHECK_OK(fl_pool_apply_typed(pool, s, (fl_fn)weight, &nn, &w));
    CHECK(w == 1.5);
    fl_signature_destroy(s);
}

static void test_layout_and_mixed(void) {
    /* The tuple is laid out like the equivalent C struct. */
    struct tuple {
        int count;
        double factor;
        const char *label;
    };
    fl_signature s = sig("double(int, double, ptr)");
    size_t nargs, tuple_size, result_size;
    CHECK_OK(fl_signature_layout(s, &nargs, &tuple_size, &result_size));
    CHECK(nargs == 3 && tuple_size == sizeof(struct tuple) && result_size == sizeof(double));
    struct tuple args = {3, 2.5, "four"};
    double out = 0;
    CHECK_OK(fl_pool_apply_typed(pool, s, (fl_fn)mixed, &args, &out));
    CHECK(out == 11.5);
    fl_signature_destroy(s);

    struct eight {
        int8_t a;
        uint16_t b;
        int32_t c;
        int64_t d;
        float e;
        double f;
        const char *g;
        vec2 h;
    } e8 = {-1, 2, 3, 4, 0.5f, 0.25, "xyz", {10, 20}};
    s = sig("double(i8, u16, i32, i64, float, double, ptr, {double, double})");
    CHECK_OK(fl_signature_layout(s, &nargs, &tuple_size, NULL));
    CHECK(nargs == 8 && tuple_size == sizeof e8);
    CHECK_OK(fl_pool_apply_typed(pool, s, (fl_fn)many, &e8, &out));
    CHECK(out == -1 + 2 + 3 + 4 + 0.5 + 0.25 + 3 + 10 + 20);
    fl_signature_destroy(s);

    s = sig(" i32 ( void ) ");
    CHECK_OK(fl_signature_layout(s, &nargs, &tuple_size, &result_size));
    CHECK(nargs == 0 && tuple_size == 0 && result_size == 4);
    fl_signature_destroy(s);
}

static void test_starmap_and_map(void) {
    /* The seed's starmap over pow from libm, with no wrapper function. */
    fl_signature s = sig("double(double, double)");
    enum { N = 1000 };
    struct {
        double base, exponent;
    } tuples[N];
    double results[N];
    for (int i = 0; i < N; i++) tuples[i].base = 1.0 + i * 0.001, tuples[i].exponent = (double)(i % 7);
    CHECK_OK(fl_pool_starmap_typed(pool, s, (fl_fn)pow, tuples, N, results, 0));
    int ok = 1;
    for (int i = 0; i < N; i++) ok &= results[i] == pow(tuples[i].base, tuples[i].exponent);
    CHECK(ok);
    CHECK_RC(FL_EINVAL, fl_pool_map_typed(pool, s, (fl_fn)pow, tuples, N, results, 0)); /* two arguments */
    fl_signature_destroy(s);

    s = sig("double(double)");
    double in[N], out[N];
    for (int i = 0; i < N; i++) in[i] = (double)i * i;
    CHECK_OK(fl_pool_map_typed(pool, s, (fl_fn)sqrt, in, N, out, 13));
    ok = 1;
    for (int i = 0; i < N; i++) ok &= out[i] == (double)i;
    CHECK(ok);
    CHECK_OK(fl_pool_map_typed(pool, s, (fl_fn)sqrt, NULL, 0, NULL, 0)); /* empty */
    fl_signature_destroy(s);

    s = sig("i8(i8)");
    int8_t small_in[300], small_out[300];
    for (int i = 0; i < 300; i++) small_in[i] = (int8_t)(i - 150 > 127 ? 127 : (i - 150 < -127 ? -127 : i - 150));
    CHECK_OK(fl_pool_map_typed(pool, s, (fl_fn)neg_i8, small_in, 300, small_out, 0));
    ok = 1;
    for (int i = 0; i < 300; i++) ok &= small_out[i] == (int8_t)-small_in[i];
    CHECK(ok);
    fl_signature_destroy(s);
}

static int callbacks_seen = 0;
static void count_done(void *user, fl_result r) {
    (void)user; (void)r;
    callbacks_seen++;
}

static void test_async(void) {
    fl_signature s = sig("double(double, double)");
    struct {
        double a, b;
    } args = {2.0, 10.0};
    fl_result r;
    CHECK_OK(fl_pool_apply_typed_async(pool, s, (fl_fn)pow, &args, NULL, NULL, NULL, &r));
    args.a = 0; /* copied at submission */
    const void *data;
    size_t len;
    CHECK_OK(fl_result_get(r, FL_FOREVER, &data, &len));
    CHECK(len == sizeof(double) && *(const double *)data == 1024.0);
    CHECK_OK(fl_result_release(r));

    /* The signature may be destroyed while calls using it are queued. */
    CHECK_OK(fl_pool_apply_typed_async(pool, s, (fl_fn)pow, &args, count_done, NULL, NULL, NULL));
    struct {
        double a, b;
    } tuples[64];
    double results[64];
    for (int i = 0; i < 64; i++) tuples[i].a = 2.0, tuples[i].b = (double)i;
    CHECK_OK(fl_pool_starmap_typed_async(pool, s, (fl_fn)pow, tuples, 64, results, 4, count_done, NULL, NULL, &r));
    CHECK_OK(fl_signature_destroy(s));
    CHECK_OK(fl_result_wait(r, FL_FOREVER));
    int ok = 1;
    for (int i = 0; i < 64; i++) ok &= results[i] == ldexp(1.0, i);
    CHECK(ok);
    CHECK_OK(fl_result_release(r));
}

static void test_bad_input(void) {
    const char *bad[] = {"",          "double",          "double(",         "double(double",
                         "foo(int)",  "double(int,)",    "double(void,int)", "int(...)",
                         "int(int, ...)", "{}(int)",     "double(double) x", "void(int",
                         "{double(int)", "int(i33)",     "(int)",            "int(void x)"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fl_signature s = (fl_signature)(void *)&s;
        CHECK_RC(FL_EINVAL, fl_signature_create(bad[i], &s));
        CHECK(s == NULL);
    }
    fl_signature s = NULL;
    CHECK_RC(FL_EINVAL, fl_signature_create("int(int, ...)", &s));
    CHECK(strstr(fl_last_error(), "variadic") != NULL);
    CHECK_RC(FL_EINVAL, fl_signature_create("int(qword)", &s));
    CHECK(strstr(fl_last_error(), "qword") != NULL && strstr(fl_last_error(), "offset 4") != NULL);
    /* A long signature: the message shows it around the offset and still gives the reason. */
    {
        static char many[1024] = "int(";
        for (int i = 0; i < 65; i++) strcat(many, i ? ",int" : "int");
        strcat(many, ")");
        CHECK_RC(FL_EINVAL, fl_signature_create(many, &s));
        CHECK(strstr(fl_last_error(), "more than 64 arguments") != NULL);
        CHECK(strstr(fl_last_error(), "offset 260") != NULL && strstr(fl_last_error(), "(264 characters)") != NULL);
    }
    /* Structs nest 8 levels deep at most: an argument that is a struct is level 1. */
    for (int levels = 8; levels <= 9; levels++) {
        char text[64] = "void(";
        for (int i = 0; i < levels; i++) strcat(text, "{");
        strcat(text, "int");
        for (int i = 0; i < levels; i++) strcat(text, "}");
        strcat(text, ")");
        if (levels == 8) {
            CHECK_OK(fl_signature_create(text, &s));
            CHECK_OK(fl_signature_destroy(s));
        } else {
            CHECK_RC(FL_EINVAL, fl_signature_create(text, &s));
            CHECK(strstr(fl_last_error(), "nested deeper than 8") != NULL);
        }
    }
    CHECK_RC(FL_EINVAL, fl_signature_create(NULL, &s));
    CHECK_RC(FL_EINVAL, fl_signature_create("int(int)", NULL));

    s = sig("i32(i32)");
    int32_t x = 1, y = 0;
    CHECK_RC(FL_EINVAL, fl_pool_apply_typed(pool, s, NULL, &x, &y));
    CHECK_RC(FL_EINVAL, fl_pool_apply_typed(pool, s, (fl_fn)neg_i32, NULL, &y));
    CHECK_RC(FL_EHANDLE, fl_pool_apply_typed(NULL, s, (fl_fn)neg_i32, &x, &y));
    CHECK_RC(FL_EINVAL, fl_pool_map_typed(pool, s, (fl_fn)neg_i32, &x, 1, NULL, 0)); /* nowhere to put results */
    CHECK_RC(FL_EINVAL, fl_pool_starmap_typed(pool, s, (fl_fn)neg_i32, NULL, 5, &y, 0));
    CHECK_RC(FL_EINVAL, fl_pool_starmap_typed_async(pool, s, (fl_fn)neg_i32, &x, 1, &y, 0, NULL, NULL, NULL, NULL));
    CHECK_RC(FL_EHANDLE, fl_pool_apply_typed(pool, (fl_signature)(void *)pool, (fl_fn)neg_i32, &x, &y));
    CHECK_OK(fl_signature_destroy(s));
    CHECK_RC(FL_EHANDLE, fl_signature_destroy(s));
    CHECK_RC(FL_EHANDLE, fl_pool_apply_typed(pool, s, (fl_fn)neg_i32, &x, &y));
    CHECK_RC(FL_EHANDLE, fl_signature_layout(s, NULL, NULL, NULL));
    CHECK_RC(FL_EHANDLE, fl_signature_destroy(NULL));
}

int main(void) {
    CHECK_OK(fl_pool_create(NULL, &pool));
    test_scalars();
    test_structs();
    test_layout_and_mixed();
    test_starmap_and_map();
    test_async();
    test_bad_input();
    CHECK_OK(fl_pool_close(pool));
    CHECK_OK(fl_pool_join(pool, FL_FOREVER));
    CHECK(callbacks_seen == 2);
    CHECK_OK(fl_pool_destroy(pool));
    return check_finish("test_typed");
}
