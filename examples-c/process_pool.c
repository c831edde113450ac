/* A process pool survives a crashing task: the worker that segfaults is replaced, only its
 * task fails (with FL_EWORKER naming the signal), and every other task completes. */
#include <forklift.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int fragile_square(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)len;
    int64_t x;
    memcpy(&x, arg, sizeof x);
    if (x == 3) {
        volatile int *nowhere = NULL;
        *nowhere = 1; /* native code with a bug: only this task's process dies */
    }
    int64_t y = x * x;
    return fl_task_return(ctx, &y, sizeof y);
}

int main(void) {
    fl_pool_options options;
    fl_pool_options_init(&options);
    options.backend = FL_BACKEND_PROCESS;
    options.workers = 2;
    fl_pool pool;
    if (fl_pool_create(&options, &pool) != FL_OK) {
        fprintf(stderr, "create: %s\n", fl_last_error());
        return 1;
    }
    int64_t inputs[6] = {0, 1, 2, 3, 4, 5};
    fl_result result;
    fl_pool_map(pool, fragile_square, NULL, inputs, sizeof inputs[0], 6, 1, &result);
    for (size_t i = 0; i < 6; i++) {
        const void *data;
        size_t len;
        int code;
        const char *message;
        if (fl_result_item(result, i, &data, &len) == FL_OK) {
            printf("%lld -> %lld\n", (long long)inputs[i], (long long)*(const int64_t *)data);
        } else {
            fl_result_item_error(result, i, &code, &message);
            printf("%lld -> failed: %s\n", (long long)inputs[i], message);
        }
    }
    fl_result_release(result);
    int64_t x = 7, y = 0;
    fl_pool_apply(pool, fragile_square, NULL, &x, sizeof x, &y, sizeof y, NULL);
    printf("the pool carries on: 7 -> %lld\n", (long long)y);
    fl_pool_close(pool);
    fl_pool_join(pool, FL_FOREVER);
    fl_pool_destroy(pool);
    return 0;
}
