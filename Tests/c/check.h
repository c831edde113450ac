/* A tiny test harness for the C ABI tests: CHECK macros, counters, and the closing line. */
#ifndef FORKLIFT_CHECK_H
#define FORKLIFT_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <forklift.h>

static int check_passed = 0;
static int check_failed = 0;

#define CHECK(cond)                                                                       \
    do {                                                                                  \
        if (cond) {                                                                       \
            check_passed++;                                                               \
        } else {                                                                          \
            check_failed++;                                                               \
            fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__, __LINE__, \
                    #cond, fl_last_error());                                              \
        }                                                                                 \
    } while (0)

/* Checks that an expression returns the expected status code. */
#define CHECK_RC(expected, expr)                                                          \
    do {                                                                                  \
        int rc_ = (expr);                                                                 \
        if (rc_ == (expected)) {                                                          \
            check_passed++;                                                               \
        } else {                                                                          \
            check_failed++;                                                               \
            fprintf(stderr, "%s:%d: %s returned %d (%s), expected %d (%s); last error: %s\n", \
                    __FILE__, __LINE__, #expr, rc_, fl_strerror(rc_), (expected),         \
                    fl_strerror(expected), fl_last_error());                              \
        }                                                                                 \
    } while (0)

#define CHECK_OK(expr) CHECK_RC(FL_OK, expr)

static int check_finish(const char *suite) {
    printf("%s: %d passed, %d failed\n", suite, check_passed, check_failed);
    return check_failed == 0 ? 0 : 1;
}

#endif
