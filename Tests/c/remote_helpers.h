/* Helpers shared by the remote-engine tests: a sleep, an int64 argument, an int64 result, the
 * counters once settled. */
#ifndef FORKLIFT_REMOTE_HELPERS_H
#define FORKLIFT_REMOTE_HELPERS_H

#include <forklift.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

static inline void pause_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* An argument read as int64 (0 unless it is 8 bytes). */
static inline int64_t as_int(const fl_blob *b) {
    int64_t v = 0;
    if (b->len == sizeof v) memcpy(&v, b->data, sizeof v);
    return v;
}

/* The int64 value of an object, waiting up to 30 s; -999999 if it failed or is not 8 bytes. */
static inline int64_t get_int(fl_ref r) {
    const void *data = NULL;
    size_t len = 0;
    if (fl_get(r, 30, &data, &len) != FL_OK || len != 8) return -999999;
    int64_t v;
    memcpy(&v, data, 8);
    return v;
}

/* The runtime's counters once no task runs and every object is gone (a finishing task lets go
 * of its argument objects just after its result is seen), or after 5 s. */
static inline fl_runtime_stats stats_once_settled(fl_runtime rt) {
    fl_runtime_stats stats;
    memset(&stats, 0xff, sizeof stats);
    for (int i = 0; i < 5000; i++) {
        if (fl_runtime_get_stats(rt, &stats) == FL_OK && stats.objects == 0 && stats.tasks_running == 0) break;
        pause_ms(1);
    }
    return stats;
}

#endif
