/* Helpers shared by the remote-engine tests: a sleep, an int64 argument, an int64 result. */
#ifndef FORKLIFT_REMOTE_HELPERS_H
#define FORKLIFT_REMOTE_HELPERS_H

#include <forklift.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

static void pause_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* An argument read as int64 (0 unless it is 8 bytes). */
static int64_t as_int(const fl_blob *b) {
    int64_t v = 0;
    if (b->len == sizeof v) memcpy(&v, b->data, sizeof v);
    return v;
}

/* The int64 value of an object, waiting up to 30 s; -999999 if it failed or is not 8 bytes. */
static int64_t get_int(fl_ref r) {
    const void *data = NULL;
    size_t len = 0;
    if (fl_get(r, 30, &data, &len) != FL_OK || len != 8) return -999999;
    int64_t v;
    memcpy(&v, data, 8);
    return v;
}

#endif
