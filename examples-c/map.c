/* The seed's map: pool.map(function_name, [1, 2, 3]) — results in input order. */
#include <forklift.h>
#include <stdio.h>

static int cube(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)len;
    int x = *(const int *)arg;
    int y = x * x * x;
    return fl_task_return(ctx, &y, sizeof y);
}

int main(void) {
    fl_pool pool;
    if (fl_pool_create(NULL, &pool) != FL_OK) return 1;
    int inputs[] = {1, 2, 3};
    fl_result result;
    if (fl_pool_map(pool, cube, NULL, inputs, sizeof inputs[0], 3, 0, &result) != FL_OK) {
        fprintf(stderr, "map: %s\n", fl_last_error());
        return 1;
    }
    printf("map(cube, [1, 2, 3]) = [");
    int ok = 1;
    for (size_t i = 0; i < 3; i++) {
        const void *data;
        size_t len;
        ok &= fl_result_item(result, i, &data, &len) == FL_OK;
        printf("%s%d", i ? ", " : "", *(const int *)data);
    }
    printf("]\n");
    fl_result_release(result);
    fl_pool_destroy(pool);
    return ok ? 0 : 1;
}
