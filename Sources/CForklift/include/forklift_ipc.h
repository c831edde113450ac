/*
 * Internal: inter-process primitives that live in shared memory — the bounded message queue
 * behind fl_queue and the segments behind fl_shm. Plain C over mmap, process-shared robust
 * mutexes and futex condition variables (fls_shared_cond), so they work the same in a parent,
 * a forked child and a worker process (where no Swift code may run before the user's function).
 */
#ifndef FORKLIFT_IPC_H
#define FORKLIFT_IPC_H

#include <stddef.h>
#include <stdint.h>

/** A process-shared bounded queue of byte messages (its header; the ring follows). */
typedef struct fls_queue fls_queue;

/** Creates a queue holding up to `capacity` bytes of messages (each costs its length + 8,
 *  rounded up to 8) and at most `max_items` messages (0: no count limit), in a memfd (`*fd`).
 *  NULL on failure, with `*error` an errno. */
fls_queue *fls_queue_create(size_t capacity, size_t max_items, int *fd, int *error);
/** Maps the queue of a "memfd:PID:FD" token (see fls_shared_open). */
fls_queue *fls_queue_open(const char *token, int *fd, int *error);
/** Unmaps the queue in this process and closes `fd`. */
void fls_queue_unmap(fls_queue *queue, int fd);
/** The largest message the queue accepts (messages above a quarter of the ring travel out of
 *  line, in the queue's memfd, so this is not bounded by the ring). */
size_t fls_queue_max_message(const fls_queue *queue);
/** Appends a copy of `data`; `fd` is this process's descriptor of the queue's memfd. Returns
 *  FL_OK, FL_ERANGE (impossibly large), FL_ENOMEM, FL_ESTATE (closed) or FL_ETIMEDOUT (still
 *  full at `deadline_ns`; negative: wait forever). */
int fls_queue_put(fls_queue *queue, int fd, const void *data, size_t len, int64_t deadline_ns);
/** Removes the oldest message into `buffer`. Returns FL_OK with `*len`; FL_ERANGE with `*len`
 *  the size needed (the message stays queued); FL_EDONE (closed and empty); FL_ETIMEDOUT;
 *  FL_ENOMEM (a large message could not be mapped: it is lost). */
int fls_queue_get(fls_queue *queue, int fd, void *buffer, size_t capacity, size_t *len, int64_t deadline_ns);
/** Refuses further puts and wakes every waiter. */
void fls_queue_close(fls_queue *queue);
/** Messages queued now. */
size_t fls_queue_count(fls_queue *queue);

/** A mapped shared-memory segment. */
typedef struct fls_segment {
    void *data;
    size_t size;
    int fd;
    int named;
} fls_segment;

/** Creates a segment of `size` bytes: anonymous (a memfd) when `name` is NULL, else a POSIX
 *  shared-memory object that must not exist yet. Returns 0 or an errno. */
int fls_segment_create(const char *name, size_t size, fls_segment *segment);
/** Maps an existing segment: a POSIX name, or the "memfd:PID:FD" token of an anonymous one.
 *  Returns 0 or an errno. */
int fls_segment_open(const char *name, fls_segment *segment);
/** Unmaps and closes. */
void fls_segment_close(fls_segment *segment);

#endif /* FORKLIFT_IPC_H */
