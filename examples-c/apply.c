/* The seed's synchronous apply:
 *
 *     with mp.Pool(mp.cpu_count()) as pool:
 *         results = [pool.apply(function_name, args=(x, 1, 2)) for x in range(4)]
 *
 * In C the arguments travel as a packed struct (the argument blob) and the result is written
 * straight into the caller's variable.
 */
#include <forklift.h>
#include <stdio.h>

typedef struct {
    int x, a, b;
} args;

/* function_name(x, a, b) = a * x * x + b */
static int function_name(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user;
    if (len != sizeof(args)) return fl_task_fail(ctx, 1, "expected (x, a, b)");
    const args *p = arg;
    long result = (long)p->a * p->x * p->x + p->b;
    return fl_task_return(ctx, &result, sizeof result);
}

int main(void) {
    fl_pool pool;
    if (fl_pool_create(NULL, &pool) != FL_OK) { /* NULL options: one worker per CPU */
        fprintf(stderr, "fl_pool_create: %s\n", fl_last_error());
        return 1;
    }
    printf("pool of %d workers\n", fl_pool_workers(pool));
    long results[4];
    for (int x = 0; x < 4; x++) {
        args a = {x, 1, 2};
        int rc = fl_pool_apply(pool, function_name, NULL, &a, sizeof a, &results[x], sizeof results[x], NULL);
        if (rc != FL_OK) {
            fprintf(stderr, "apply: %s: %s\n", fl_strerror(rc), fl_last_error());
            return 1;
        }
    }
    printf("results = [%ld, %ld, %ld, %ld]\n", results[0], results[1], results[2], results[3]);
    fl_pool_close(pool);
    fl_pool_join(pool, FL_FOREVER);
    fl_pool_destroy(pool);
    return results[3] == 11 ? 0 : 1;
}
