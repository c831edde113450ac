// The header must compile as C++ without warnings, and its types must be usable there.
#include <forklift.h>

static int task(void *, const void *, size_t, fl_task_ctx ctx) { return fl_task_return(ctx, nullptr, 0); }

int main() {
    fl_pool pool = nullptr;
    fl_pool_options options;
    fl_pool_options_init(&options);
    options.workers = 1;
    if (fl_pool_create(&options, &pool) != FL_OK) return 1;
    int rc = fl_pool_apply(pool, task, nullptr, nullptr, 0, nullptr, 0, nullptr);
    fl_pool_destroy(pool);
    return rc == FL_OK ? 0 : 1;
}
