/* Task groups: submit many small tasks, wait for all of them (like TBB's task_group or
 * dispatch_group). Here: count the primes below 2 million in blocks, one task per block. */
#include <forklift.h>
#include <stdio.h>

typedef struct {
    unsigned long from, to;
} block;

static int is_prime(unsigned long n) {
    if (n < 2) return 0;
    for (unsigned long d = 2; d * d <= n; d++)
        if (n % d == 0) return 0;
    return 1;
}

static int count_block(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)len; (void)ctx;
    const block *b = arg;
    unsigned long found = 0;
    for (unsigned long n = b->from; n < b->to; n++) found += is_prime(n);
    __atomic_fetch_add((unsigned long *)user, found, __ATOMIC_RELAXED);
    return 0;
}

int main(void) {
    fl_pool pool;
    fl_group group;
    if (fl_pool_create(NULL, &pool) != FL_OK || fl_group_create(pool, &group) != FL_OK) {
        fprintf(stderr, "%s\n", fl_last_error());
        return 1;
    }
    unsigned long total = 0;
    for (unsigned long from = 0; from < 2000000; from += 10000) {
        block b = {from, from + 10000};
        fl_group_submit(group, count_block, &total, &b, sizeof b); /* b is copied */
    }
    int rc = fl_group_wait(group, FL_FOREVER);
    printf("primes below 2,000,000: %lu (%s)\n", total, fl_strerror(rc));
    fl_group_destroy(group);
    fl_pool_destroy(pool);
    return rc == FL_OK && total == 148933 ? 0 : 1;
}
