/* imap over a lazily generated input: results arrive in order while the input is still being
 * produced, and at most `read_ahead` items are ever buffered — an endless input works too. */
#include <forklift.h>
#include <stdio.h>

static int collatz_steps(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)len;
    unsigned long n = *(const unsigned long *)arg, steps = 0;
    while (n != 1) {
        n = n % 2 ? 3 * n + 1 : n / 2;
        steps++;
    }
    return fl_task_return(ctx, &steps, sizeof steps);
}

typedef struct {
    unsigned long next, produced;
} naturals;

/* An endless source: 1, 2, 3, ... */
static int next_natural(void *user, const void **data, size_t *len) {
    naturals *s = user;
    s->produced = s->next++;
    *data = &s->produced;
    *len = sizeof s->produced;
    return 1;
}

int main(void) {
    fl_pool pool;
    if (fl_pool_create(NULL, &pool) != FL_OK) return 1;
    naturals source = {1, 0};
    fl_iter it;
    if (fl_pool_imap(pool, collatz_steps, NULL, next_natural, &source, 8, 64, &it) != FL_OK) return 1;
    unsigned long best = 0, best_n = 0;
    for (unsigned long n = 1; n <= 100000; n++) {
        const void *data;
        size_t len;
        if (fl_iter_next(it, FL_FOREVER, &data, &len) != FL_OK) return 1;
        unsigned long steps = *(const unsigned long *)data;
        if (steps > best) best = steps, best_n = n;
    }
    printf("below 100001, %lu takes the most Collatz steps: %lu (input read ahead: %lu items)\n", best_n, best,
           source.next - 1 - 100000);
    fl_iter_destroy(it);
    fl_pool_destroy(pool);
    return best_n == 77031 ? 0 : 1;
}
