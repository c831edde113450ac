/* Helpers shared by the remote-engine tests: a sleep, an int64 argument, an int64 result, the
 * counters once settled. */
#ifndef FORKLIFT_REMOTE_HELPERS_H
#define FORKLIFT_REMOTE_HELPERS_H

#include <forklift.h>
#include <stdint.h>
#include <stdio.h>
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
/* Copies the value of an object, `size` bytes, into `out`, waiting up to 30 s; returns 0 (and
 * leaves `out` alone) if it failed or holds another number of bytes, else 1. */
static inline int get_value(fl_ref r, void *out, size_t size) {
    const void *data = NULL;
    size_t len = 0;
    if (fl_get(r, 30, &data, &len) != FL_OK || len != size) return 0;
    memcpy(out, data, size);
    return 1;
}

static inline int64_t get_int(fl_ref r) {
    int64_t v = -999999;
    get_value(r, &v, sizeof v);
    return v;
}

/* Copies into `line` the /proc/self/maps line of the mapping that holds `p`, if that mapping
 * is shared (MAP_SHARED: 's' in its permissions); returns 0 when `p` is in no shared mapping.
 * The line ends with the mapping's inode and path (a memfd, or a file of a spill directory). */
static inline int shared_mapping_of(const void *p, char *line, int size) {
    FILE *maps = fopen("/proc/self/maps", "r");
    if (!maps) return 0;
    int found = 0;
    while (fgets(line, size, maps)) {
        unsigned long start = 0, end = 0;
        char perms[8] = {0};
        if (sscanf(line, "%lx-%lx %7s", &start, &end, perms) != 3) continue;
        if ((uintptr_t)p >= start && (uintptr_t)p < end) {
            found = perms[3] == 's';
            break;
        }
    }
    fclose(maps);
    return found;
}

/* A runtime with `workers` worker threads, or NULL. */
static inline fl_runtime runtime_with_workers(size_t workers) {
    fl_runtime_options options;
    fl_runtime rt = NULL;
    if (fl_runtime_options_init(&options) != FL_OK) return NULL;
    options.workers = workers;
    return fl_runtime_create(&options, &rt) == FL_OK ? rt : NULL;
}

/* A runtime with two worker threads and `process_workers` worker processes, or NULL. */
static inline fl_runtime runtime_with_processes(size_t process_workers) {
    fl_runtime_options options;
    fl_runtime rt = NULL;
    if (fl_runtime_options_init(&options) != FL_OK) return NULL;
    options.workers = 2;
    options.process_workers = process_workers;
    return fl_runtime_create(&options, &rt) == FL_OK ? rt : NULL;
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
