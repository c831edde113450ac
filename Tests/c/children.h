/* The child processes of the calling process, read from /proc (for the process tests: no
 * zombies, no leftover workers), and a one-worker process pool. Needs _GNU_SOURCE or
 * _POSIX_C_SOURCE before the includes. */
#ifndef FORKLIFT_CHILDREN_H
#define FORKLIFT_CHILDREN_H

#include "check.h"

#include <dirent.h>
#include <stdio.h>
#include <sys/types.h>
#include <unistd.h>

/* Stores up to `cap` child pids in `out` (which may be NULL) and returns how many there are. */
static int child_pids(pid_t *out, int cap) {
    char path[64];
    int n = 0;
    snprintf(path, sizeof path, "/proc/%d/task", (int)getpid());
    DIR *dir = opendir(path);
    if (!dir) return -1;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] == '.') continue;
        char file[600];
        snprintf(file, sizeof file, "%s/%s/children", path, entry->d_name);
        FILE *f = fopen(file, "r");
        if (!f) continue;
        int pid;
        while (fscanf(f, "%d", &pid) == 1) {
            if (out && n < cap) out[n] = pid;
            n++;
        }
        fclose(f);
    }
    closedir(dir);
    return n;
}

/* A process-backed pool of one worker. */
static inline fl_pool one_worker_process_pool(void) {
    fl_pool_options o;
    fl_pool_options_init(&o);
    o.workers = 1;
    o.backend = FL_BACKEND_PROCESS;
    fl_pool pool = NULL;
    CHECK_OK(fl_pool_create(&o, &pool));
    return pool;
}

#endif
