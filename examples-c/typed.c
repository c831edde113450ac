/* Typed calls: run existing C functions in parallel by signature, with no wrapper function.
 *
 *     pool.starmap(pow, [(2, 10), (3, 4), ...])      -> fl_pool_starmap_typed(..., (fl_fn)pow, ...)
 *     pool.apply(describe, args=(3, 2.5, "crates"))  -> fl_pool_apply_typed(..., (fl_fn)describe, ...)
 *
 * Arguments travel as a "tuple": a struct whose members are the arguments in order.
 */
#include <forklift.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* The seed's function_name(x, a, b), a plain C function: a * x * x + b. */
static long function_name(int x, int a, int b) { return (long)a * x * x + b; }

/* A user function of mixed argument types. */
static double describe(int count, double weight, const char *what) {
    printf("  describe(%d, %.1f, \"%s\") on a worker\n", count, weight, what);
    return count * weight + (double)strlen(what);
}

/* A struct by value, and a small integer result. */
typedef struct {
    double x, y;
} point;
static short quadrant(point p, char verbose) {
    (void)verbose;
    return (short)(p.x >= 0 ? (p.y >= 0 ? 1 : 4) : (p.y >= 0 ? 2 : 3));
}

int main(void) {
    fl_pool pool;
    if (fl_pool_create(NULL, &pool) != FL_OK) return 1;

    /* The seed's [pool.apply(function_name, args=(x, 1, 2)) for x in range(4)], no wrapper. */
    fl_signature fn_sig;
    fl_signature_create("long(int, int, int)", &fn_sig);
    long seed_results[4];
    for (int x = 0; x < 4; x++) {
        struct {
            int x, a, b;
        } fn_args = {x, 1, 2};
        fl_pool_apply_typed(pool, fn_sig, (fl_fn)function_name, &fn_args, &seed_results[x]);
    }
    printf("[apply(function_name, args=(x, 1, 2)) for x in range(4)] = [%ld, %ld, %ld, %ld]\n", seed_results[0],
           seed_results[1], seed_results[2], seed_results[3]);
    fl_signature_destroy(fn_sig);

    /* starmap over pow from libm */
    fl_signature pow_sig;
    fl_signature_create("double(double, double)", &pow_sig);
    struct {
        double base, exponent;
    } tuples[4] = {{2, 10}, {3, 4}, {10, -1}, {0.5, 3}};
    double powers[4];
    fl_pool_starmap_typed(pool, pow_sig, (fl_fn)pow, tuples, 4, powers, 0);
    printf("starmap(pow, [(2,10), (3,4), (10,-1), (0.5,3)]) = [%g, %g, %g, %g]\n", powers[0], powers[1], powers[2],
           powers[3]);

    /* apply of (int, double, const char*) */
    fl_signature describe_sig;
    fl_signature_create("double(int, double, ptr)", &describe_sig);
    struct {
        int count;
        double weight;
        const char *what;
    } args = {3, 2.5, "crates"};
    double total;
    fl_pool_apply_typed(pool, describe_sig, (fl_fn)describe, &args, &total);
    printf("apply(describe, (3, 2.5, \"crates\")) = %g\n", total);

    /* starmap over a struct-by-value function returning a short */
    fl_signature quadrant_sig;
    if (fl_signature_create("i16({double, double}, char)", &quadrant_sig) != FL_OK) {
        fprintf(stderr, "%s\n", fl_last_error());
        return 1;
    }
    struct {
        point p;
        char verbose;
    } points[4] = {{{1, 1}, 0}, {{-1, 1}, 0}, {{-1, -1}, 0}, {{1, -1}, 0}};
    short quadrants[4];
    fl_pool_starmap_typed(pool, quadrant_sig, (fl_fn)quadrant, points, 4, quadrants, 1);
    printf("quadrants = [%d, %d, %d, %d]\n", quadrants[0], quadrants[1], quadrants[2], quadrants[3]);

    fl_signature_destroy(pow_sig);
    fl_signature_destroy(describe_sig);
    fl_signature_destroy(quadrant_sig);
    fl_pool_destroy(pool);
    return seed_results[3] == 11 && powers[0] == 1024 && total == 13.5 && quadrants[2] == 3 ? 0 : 1;
}
