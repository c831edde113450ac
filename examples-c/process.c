/* The seed's Process example: start one process per input, join them all, and collect the
 * results through a queue and through shared memory.
 *
 *   process_li = []
 *   for x in inputs:
 *       process = mp.Process(target=function_name, args=(x,))
 *       process.start()
 *       process_li.append(process)
 *   [process.join() for process in process_li]
 */
#define _POSIX_C_SOURCE 200809L
#include <forklift.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static fl_queue results;   /* created before the processes start, so they share it */
static fl_shm squares;     /* likewise: one int64 per input, written in place */

static int function_name(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user; (void)len; (void)ctx;
    int64_t x;
    memcpy(&x, arg, sizeof x);
    int64_t message[2] = {x, (int64_t)getpid()};
    fl_queue_put(results, message, sizeof message, FL_FOREVER);
    int64_t *cells;
    fl_shm_data(squares, (void **)&cells, NULL);
    cells[x] = x * x;
    return 0; /* the exit code */
}

int main(void) {
    enum { N = 4 };
    fl_queue_create(0, 0, &results);
    fl_shm_create(NULL, N * sizeof(int64_t), &squares);

    fl_process process_li[N];
    for (int64_t x = 0; x < N; x++) {
        if (fl_process_start(function_name, NULL, &x, sizeof x, NULL, &process_li[x]) != FL_OK) {
            fprintf(stderr, "start: %s\n", fl_last_error());
            return 1;
        }
    }
    for (int i = 0; i < N; i++) fl_process_join(process_li[i], FL_FOREVER);

    for (int i = 0; i < N; i++) {
        int64_t message[2];
        size_t len;
        fl_queue_get(results, message, sizeof message, &len, 0);
        printf("queue: input %lld done by process %lld\n", (long long)message[0], (long long)message[1]);
    }
    int64_t *cells;
    fl_shm_data(squares, (void **)&cells, NULL);
    printf("shared memory:");
    for (int i = 0; i < N; i++) printf(" %lld", (long long)cells[i]);
    printf("\n");
    for (int i = 0; i < N; i++) {
        int code;
        fl_process_exitcode(process_li[i], &code);
        if (code != 0) printf("process %d exited with %d\n", i, code);
        fl_process_destroy(process_li[i]);
    }
    fl_shm_close(squares);
    fl_queue_destroy(results);
    return 0;
}
