/* The seed's apply_async with callback and error_callback:
 *
 *     def log_result(result): results.append(result)
 *     def log_error(error):   errors.append(error)
 *     pool = mp.Pool()
 *     for i in iterable:
 *         pool.apply_async(function_name, args=(i,), callback=log_result, error_callback=log_error)
 *     pool.close()
 *     pool.join()
 *
 * Callbacks run on the pool's one callback thread, serialized and in completion order, so
 * log_result appends to its list without a lock — exactly as the Python version relies on.
 */
#include <forklift.h>
#include <stdio.h>

typedef struct {
    long results[32];
    int result_count;
    char errors[32][64];
    int error_count;
} logs;

/* Fails for multiples of 5, to exercise the error callback. */
static int function_name(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)len;
    int i = *(const int *)arg;
    if (i % 5 == 0) return fl_task_fail(ctx, 5, "multiples of five are rejected");
    long r = (long)i * 100;
    return fl_task_return(ctx, &r, sizeof r);
}

static void log_result(void *user, fl_result result) {
    logs *l = user;
    const void *data;
    size_t len;
    fl_result_get(result, 0, &data, &len);
    l->results[l->result_count++] = *(const long *)data;
}

static void log_error(void *user, fl_result result) {
    logs *l = user;
    int code;
    const char *message;
    fl_result_error(result, &code, &message);
    snprintf(l->errors[l->error_count++], sizeof l->errors[0], "code %d: %s", code, message);
}

int main(void) {
    static logs l;
    fl_pool pool;
    if (fl_pool_create(NULL, &pool) != FL_OK) return 1;
    for (int i = 1; i <= 12; i++) {
        fl_pool_apply_async(pool, function_name, NULL, &i, sizeof i, log_result, log_error, &l, NULL);
    }
    fl_pool_close(pool);
    fl_pool_join(pool, FL_FOREVER);
    printf("results (completion order):");
    for (int i = 0; i < l.result_count; i++) printf(" %ld", l.results[i]);
    printf("\nerrors:\n");
    for (int i = 0; i < l.error_count; i++) printf("  %s\n", l.errors[i]);
    fl_pool_destroy(pool);
    return l.result_count == 10 && l.error_count == 2 ? 0 : 1;
}
