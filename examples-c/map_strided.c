/* The numeric fast path: square 10 million int64 in place. The kernel gets contiguous
 * ranges, so there is no per-element call or allocation. */
#include <forklift.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static int square(void *user, const void *in, ptrdiff_t in_stride, void *out, ptrdiff_t out_stride, size_t n) {
    (void)user;
    for (size_t i = 0; i < n; i++) {
        int64_t x = *(const int64_t *)((const char *)in + (ptrdiff_t)i * in_stride);
        *(int64_t *)((char *)out + (ptrdiff_t)i * out_stride) = x * x;
    }
    return 0;
}

int main(void) {
    size_t n = 10 * 1000 * 1000;
    int64_t *v = malloc(n * sizeof *v);
    if (!v) return 1;
    for (size_t i = 0; i < n; i++) v[i] = (int64_t)i;
    fl_pool pool;
    if (fl_pool_create(NULL, &pool) != FL_OK) return 1;
    int rc = fl_pool_map_strided(pool, square, NULL, v, sizeof *v, v, sizeof *v, n, 0);
    printf("squared %zu int64 in place: v[3] = %lld, v[n-1] = %lld (%s)\n", n, (long long)v[3],
           (long long)v[n - 1], fl_strerror(rc));
    int ok = rc == FL_OK && v[n - 1] == (int64_t)(n - 1) * (int64_t)(n - 1);
    fl_pool_destroy(pool);
    free(v);
    return ok ? 0 : 1;
}
