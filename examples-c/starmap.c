/* The seed's starmap: pool.starmap(function_name, [(1, x, y), (2, x, y)]).
 * Each tuple is a packed struct passed as one argument blob. */
#include <forklift.h>
#include <stdio.h>

typedef struct {
    int n;
    double x, y;
} tuple;

/* function_name(n, x, y) = n * x + y */
static int function_name(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user;
    if (len != sizeof(tuple)) return fl_task_fail(ctx, 1, "expected (n, x, y)");
    const tuple *t = arg;
    double r = t->n * t->x + t->y;
    return fl_task_return(ctx, &r, sizeof r);
}

int main(void) {
    fl_pool pool;
    if (fl_pool_create(NULL, &pool) != FL_OK) return 1;
    double x = 1.5, y = 10.0;
    tuple tuples[] = {{1, x, y}, {2, x, y}};
    fl_blob args[] = {{&tuples[0], sizeof tuples[0]}, {&tuples[1], sizeof tuples[1]}};
    fl_result result;
    if (fl_pool_starmap(pool, function_name, NULL, args, 2, 0, &result) != FL_OK) {
        fprintf(stderr, "starmap: %s\n", fl_last_error());
        return 1;
    }
    const void *a, *b;
    size_t len;
    fl_result_item(result, 0, &a, &len);
    fl_result_item(result, 1, &b, &len);
    printf("starmap(f, [(1, %.1f, %.1f), (2, %.1f, %.1f)]) = [%.2f, %.2f]\n", x, y, x, y,
           *(const double *)a, *(const double *)b);
    int ok = *(const double *)b == 13.0;
    fl_result_release(result);
    fl_pool_destroy(pool);
    return ok ? 0 : 1;
}
