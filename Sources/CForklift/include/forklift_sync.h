/*
 * Internal: process-shared objects that other processes can open by name — the locks, events
 * and semaphores behind fl_lock, fl_event and fl_semaphore — and the message pipes behind
 * fl_pipe. Plain C, so they work the same in a parent, a forked child, a spawned child and a
 * worker process.
 *
 * A shared object lives in a memfd mapping that begins with an fls_shared_header. Processes
 * forked after its creation inherit the mapping; any other process of the same user maps it
 * through the "memfd:PID:FD" token of a process that has it open (via /proc/PID/fd).
 */
#ifndef FORKLIFT_SYNC_H
#define FORKLIFT_SYNC_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/** Kinds of shared object (the header's `kind`). */
#define FLS_SHARED_QUEUE 1
#define FLS_SHARED_LOCK 2
#define FLS_SHARED_RLOCK 3
#define FLS_SHARED_EVENT 4
#define FLS_SHARED_SEMAPHORE 5

/** The first bytes of every shared object. */
typedef struct fls_shared_header {
    uint32_t magic;
    uint32_t kind;
    uint64_t map_len;
} fls_shared_header;

/** Maps a new zero-filled shared object of `size` bytes (at least the header) in a memfd.
 *  Returns it with the header filled and `*fd` the memfd, or NULL with `*error` an errno. */
void *fls_shared_create(uint32_t kind, size_t size, int *fd, int *error);
/** Maps an existing shared object from its "memfd:PID:FD" token. `kinds` is a bit mask of
 *  the acceptable kinds (1 << kind). Returns it with `*fd` its new fd, or NULL with `*error`:
 *  an errno, or EPROTOTYPE when the object is of another kind. */
void *fls_shared_open(const char *token, uint32_t kinds, int *fd, int *error);
/** Unmaps the object from this process and closes `fd`. */
void fls_shared_close(void *object, int fd);

/** Initializes a process-shared, robust mutex (error-checking, or recursive) in shared memory. */
void fls_shared_mutex_init(pthread_mutex_t *mutex, int recursive);
/** A condition variable in shared memory that survives its waiters: a change counter that
 *  waiters sleep on with a shared futex, and the count of waiters (so a signal with nobody
 *  waiting makes no system call). A process killed while it waits leaves no state behind
 *  that later signals wait for (glibc's process-shared pthread_cond_t does: its next
 *  broadcast waits for the dead waiter forever); at worst its stale count costs the next
 *  signals a useless wake call. Zero-filled is initialized. */
typedef struct fls_shared_cond {
    uint32_t changes;
    uint32_t waiters;
} fls_shared_cond;

/** Releases `mutex` (held, robust), sleeps until `cond` is signalled or `deadline_ns` passes
 *  (CLOCK_MONOTONIC, negative: none), then takes `mutex` again (marking it consistent if its
 *  holder died). Returns 0 (signalled, or woken for no reason: the caller checks its
 *  predicate again) or ETIMEDOUT. */
int fls_shared_cond_wait(fls_shared_cond *cond, pthread_mutex_t *mutex, int64_t deadline_ns);
/** Wakes every waiter of `cond`; `cond`'s mutex is held. Always all of them: one woken and
 *  killed before it takes the mutex would otherwise take the wake-up with it. */
void fls_shared_cond_broadcast(fls_shared_cond *cond);

/** A lock, a recursive lock, an event or a semaphore. */
typedef struct fls_sync fls_sync;

/** Creates a sync object of `kind` (FLS_SHARED_LOCK, _RLOCK, _EVENT, _SEMAPHORE). A semaphore
 *  starts at `value` and may not exceed `max` (0: no bound). */
fls_sync *fls_sync_create(uint32_t kind, int64_t value, int64_t max, int *fd, int *error);
/** The kind of `sync`. */
uint32_t fls_sync_kind(const fls_sync *sync);

/** Takes the lock. FL_OK (also when the holder died: the lock is handed over), FL_ETIMEDOUT,
 *  FL_ESTATE (a plain lock already held by this thread: waiting would deadlock). */
int fls_lock_acquire(fls_sync *sync, int64_t deadline_ns);
/** Releases the lock. FL_OK, or FL_ESTATE when the calling thread does not hold it. */
int fls_lock_release(fls_sync *sync);

/** Sets the event and wakes every waiter. */
void fls_event_set(fls_sync *sync);
/** Clears the event. */
void fls_event_clear(fls_sync *sync);
/** Non-zero if the event is set. */
int fls_event_is_set(fls_sync *sync);
/** Waits until the event is set: FL_OK or FL_ETIMEDOUT. */
int fls_event_wait(fls_sync *sync, int64_t deadline_ns);

/** Decrements the semaphore, waiting while it is zero: FL_OK or FL_ETIMEDOUT. */
int fls_semaphore_acquire(fls_sync *sync, int64_t deadline_ns);
/** Increments the semaphore and wakes one waiter: FL_OK, or FL_ERANGE at its bound. */
int fls_semaphore_release(fls_sync *sync);
/** The semaphore's value now. */
int64_t fls_semaphore_value(fls_sync *sync);

/* ---- pipes ---- */

/** Messages up to this size travel in the socket; larger ones in a memfd passed along. */
#define FLS_PIPE_INLINE (64 * 1024)

/** Creates a connected pair of message sockets. Returns 0 or an errno. */
int fls_pipe_create(int fds[2]);
/** Sends one message: FL_OK, FL_ETIMEDOUT, FL_ESTATE (the other end is closed), FL_ENOMEM,
 *  FL_ESYSTEM. Messages are atomic: concurrent senders never interleave. */
int fls_pipe_send(int fd, const void *data, size_t len, int64_t deadline_ns);
/** Receives one message into `buffer`: FL_OK with `*len`; FL_ERANGE with `*len` the size
 *  needed (the message stays); FL_EDONE (the other end is closed and nothing is left);
 *  FL_ETIMEDOUT; FL_ESYSTEM. Readers of one end must be serialized by the caller. */
int fls_pipe_recv(int fd, void *buffer, size_t capacity, size_t *len, int64_t deadline_ns);
/** Waits until a message (or the end of the stream) can be received: FL_OK or FL_ETIMEDOUT. */
int fls_pipe_poll(int fd, int64_t deadline_ns);

#endif /* FORKLIFT_SYNC_H */
