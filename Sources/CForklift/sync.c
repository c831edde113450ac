/*
 * Process-shared objects opened by name, locks, events, semaphores and message pipes
 * (see forklift_sync.h).
 */
#define _GNU_SOURCE
#include "forklift_sync.h"
#include "forklift_types.h"
#include "forklift_fdpass.h"
#include "forklift_worker.h"

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SHARED_MAGIC 0x464b5348u /* "FKSH" */

/* ------------------------------------------------------------------------------------------ */
/* Shared objects                                                                             */
/* ------------------------------------------------------------------------------------------ */

void *fls_shared_create(uint32_t kind, size_t size, int *fd, int *error) {
    if (size < sizeof(fls_shared_header)) size = sizeof(fls_shared_header);
    int memfd = memfd_create("forklift-shared", MFD_CLOEXEC);
    if (memfd < 0) {
        *error = errno;
        return NULL;
    }
    if (ftruncate(memfd, (off_t)size) != 0) {
        *error = errno;
        close(memfd);
        return NULL;
    }
    void *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    if (map == MAP_FAILED) {
        *error = errno;
        close(memfd);
        return NULL;
    }
    fls_shared_header *header = map;
    header->kind = kind;
    header->map_len = size;
    __atomic_store_n(&header->magic, SHARED_MAGIC, __ATOMIC_RELEASE);
    *fd = memfd;
    return map;
}

void *fls_shared_open(const char *token, uint32_t kinds, int *fd, int *error) {
    int pid = 0, number = 0;
    char tail = 0;
    if (sscanf(token, "memfd:%d:%d%c", &pid, &number, &tail) != 2 || pid <= 0 || number < 0) {
        *error = EINVAL;
        return NULL;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd/%d", pid, number);
    int memfd = open(path, O_RDWR | O_CLOEXEC);
    if (memfd < 0) {
        *error = errno;
        return NULL;
    }
    struct stat st;
    if (fstat(memfd, &st) != 0 || (size_t)st.st_size < sizeof(fls_shared_header)) {
        *error = EPROTOTYPE;
        close(memfd);
        return NULL;
    }
    /* A queue's memfd grows past map_len while it holds large messages out of line, so the
       file may be longer than the object: only its first map_len bytes are the object. */
    fls_shared_header *peek = mmap(NULL, sizeof(fls_shared_header), PROT_READ, MAP_SHARED, memfd, 0);
    if (peek == MAP_FAILED) {
        *error = errno;
        close(memfd);
        return NULL;
    }
    uint64_t map_len = peek->map_len;
    int valid = __atomic_load_n(&peek->magic, __ATOMIC_ACQUIRE) == SHARED_MAGIC && peek->kind < 32 &&
                (kinds & (1u << peek->kind)) && map_len >= sizeof(fls_shared_header) &&
                map_len <= (uint64_t)st.st_size;
    munmap(peek, sizeof(fls_shared_header));
    if (!valid) {
        close(memfd);
        *error = EPROTOTYPE;
        return NULL;
    }
    void *map = mmap(NULL, (size_t)map_len, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    if (map == MAP_FAILED) {
        *error = errno;
        close(memfd);
        return NULL;
    }
    *fd = memfd;
    return map;
}

void fls_shared_close(void *object, int fd) {
    if (object) munmap(object, (size_t)((fls_shared_header *)object)->map_len);
    if (fd >= 0) close(fd);
}

/* ------------------------------------------------------------------------------------------ */
/* Locks, events, semaphores                                                                  */
/* ------------------------------------------------------------------------------------------ */

struct fls_sync {
    fls_shared_header header;
    /* Lock and RLock: the lock itself. Event and semaphore: guards `value`. Robust: a holder
     * that dies hands the mutex to the next taker instead of blocking it forever. */
    pthread_mutex_t mutex;
    fls_shared_cond changed; /* event and semaphore */
    int64_t value;          /* event: set or not; semaphore: its count */
    int64_t max;            /* semaphore: the bound, 0 for none */
};

void fls_shared_mutex_init(pthread_mutex_t *mutex, int recursive) {
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    pthread_mutexattr_settype(&attr, recursive ? PTHREAD_MUTEX_RECURSIVE : PTHREAD_MUTEX_ERRORCHECK);
    pthread_mutex_init(mutex, &attr);
    pthread_mutexattr_destroy(&attr);
}

fls_sync *fls_sync_create(uint32_t kind, int64_t value, int64_t max, int *fd, int *error) {
    fls_sync *sync = fls_shared_create(kind, sizeof(fls_sync), fd, error);
    if (!sync) return NULL;
    fls_shared_mutex_init(&sync->mutex, kind == FLS_SHARED_RLOCK);
    sync->value = value;
    sync->max = max;
    return sync;
}

uint32_t fls_sync_kind(const fls_sync *sync) { return sync->header.kind; }

static struct timespec timespec_of(int64_t ns) {
    struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    return ts;
}

/* Takes the mutex, marking it consistent if its holder died. 0, ETIMEDOUT or EDEADLK. */
static int take(pthread_mutex_t *mutex, int64_t deadline_ns) {
    int r;
    if (deadline_ns < 0) {
        r = pthread_mutex_lock(mutex);
    } else {
        struct timespec ts = timespec_of(deadline_ns);
        r = pthread_mutex_clocklock(mutex, CLOCK_MONOTONIC, &ts);
    }
    if (r == EOWNERDEAD) {
        pthread_mutex_consistent(mutex);
        r = 0;
    }
    return r;
}

int fls_shared_cond_wait(fls_shared_cond *cond, pthread_mutex_t *mutex, int64_t deadline_ns) {
    /* Read and counted under the mutex, so a signaller (which holds it) that changes the
     * counter after this sees the waiter, and the futex call below returns at once. */
    uint32_t seen = __atomic_load_n(&cond->changes, __ATOMIC_RELAXED);
    __atomic_add_fetch(&cond->waiters, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(mutex);
    struct timespec ts = timespec_of(deadline_ns < 0 ? 0 : deadline_ns);
    /* A shared futex (no _PRIVATE): the waker may be another process. FUTEX_WAIT_BITSET takes
     * an absolute CLOCK_MONOTONIC deadline. */
    long r = syscall(SYS_futex, &cond->changes, FUTEX_WAIT_BITSET, seen, deadline_ns < 0 ? NULL : &ts, NULL,
                     FUTEX_BITSET_MATCH_ANY);
    int timed_out = r == -1 && errno == ETIMEDOUT;
    __atomic_sub_fetch(&cond->waiters, 1, __ATOMIC_SEQ_CST);
    take(mutex, -1);
    return timed_out ? ETIMEDOUT : 0;
}

void fls_shared_cond_broadcast(fls_shared_cond *cond) {
    __atomic_add_fetch(&cond->changes, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&cond->waiters, __ATOMIC_SEQ_CST) != 0)
        syscall(SYS_futex, &cond->changes, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
}

int fls_lock_acquire(fls_sync *sync, int64_t deadline_ns) {
    switch (take(&sync->mutex, deadline_ns)) {
    case 0: return FL_OK;
    case ETIMEDOUT: return FL_ETIMEDOUT;
    case EDEADLK: return FL_ESTATE;
    default: return FL_ESYSTEM;
    }
}

int fls_lock_release(fls_sync *sync) {
    return pthread_mutex_unlock(&sync->mutex) == 0 ? FL_OK : FL_ESTATE;
}

void fls_event_set(fls_sync *sync) {
    take(&sync->mutex, -1);
    sync->value = 1;
    fls_shared_cond_broadcast(&sync->changed);
    pthread_mutex_unlock(&sync->mutex);
}

void fls_event_clear(fls_sync *sync) {
    take(&sync->mutex, -1);
    sync->value = 0;
    pthread_mutex_unlock(&sync->mutex);
}

int fls_event_is_set(fls_sync *sync) { return __atomic_load_n(&sync->value, __ATOMIC_ACQUIRE) != 0; }

/* Takes the mutex and waits until `value` is non-zero: FL_OK (the mutex held) or
 * FL_ETIMEDOUT (released). */
static int take_when_positive(fls_sync *sync, int64_t deadline_ns) {
    take(&sync->mutex, -1);
    while (sync->value == 0) {
        if (fls_shared_cond_wait(&sync->changed, &sync->mutex, deadline_ns) == ETIMEDOUT && sync->value == 0) {
            pthread_mutex_unlock(&sync->mutex);
            return FL_ETIMEDOUT;
        }
    }
    return FL_OK;
}

int fls_event_wait(fls_sync *sync, int64_t deadline_ns) {
    int status = take_when_positive(sync, deadline_ns);
    if (status == FL_OK) pthread_mutex_unlock(&sync->mutex);
    return status;
}

int fls_semaphore_acquire(fls_sync *sync, int64_t deadline_ns) {
    int status = take_when_positive(sync, deadline_ns);
    if (status == FL_OK) {
        sync->value--;
        pthread_mutex_unlock(&sync->mutex);
    }
    return status;
}

int fls_semaphore_release(fls_sync *sync) {
    take(&sync->mutex, -1);
    int status = FL_OK;
    /* The value is an unsigned int at the C API: UINT_MAX bounds an unbounded one too. */
    if ((sync->max > 0 && sync->value >= sync->max) || sync->value >= (int64_t)UINT_MAX) {
        status = FL_ERANGE;
    } else {
        sync->value++;
        fls_shared_cond_broadcast(&sync->changed);
    }
    pthread_mutex_unlock(&sync->mutex);
    return status;
}

int64_t fls_semaphore_value(fls_sync *sync) { return __atomic_load_n(&sync->value, __ATOMIC_ACQUIRE); }

/* ------------------------------------------------------------------------------------------ */
/* Pipes                                                                                      */
/* ------------------------------------------------------------------------------------------ */

#define PIPE_MAGIC 0x50495045u /* "PIPE" */
#define PIPE_INLINE 0
#define PIPE_MEMFD 1

/* The head of every message on the socket. */
typedef struct pipe_header {
    uint32_t magic;
    uint32_t kind;
    uint64_t len;
} pipe_header;

int fls_pipe_create(int fds[2]) {
    return socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) == 0 ? 0 : errno;
}

/* Waits for `events` on `fd` until `deadline_ns`: 1 ready (or hung up), 0 timed out. */
static int wait_fd(int fd, short events, int64_t deadline_ns) {
    for (;;) {
        int timeout_ms = -1;
        if (deadline_ns >= 0) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            int64_t left = deadline_ns - ((int64_t)now.tv_sec * 1000000000 + now.tv_nsec);
            if (left <= 0) timeout_ms = 0;
            else timeout_ms = (int)((left + 999999) / 1000000 > 1 << 30 ? 1 << 30 : (left + 999999) / 1000000);
        }
        struct pollfd p = {fd, events, 0};
        int r = poll(&p, 1, timeout_ms);
        if (r > 0) return 1;
        if (r == 0 && timeout_ms == 0) return 0;
        if (r < 0 && errno != EINTR) return 1; /* let the caller's call report the error */
    }
}

int fls_pipe_send(int fd, const void *data, size_t len, int64_t deadline_ns) {
    pipe_header header = {PIPE_MAGIC, len > FLS_PIPE_INLINE ? PIPE_MEMFD : PIPE_INLINE, len};
    struct iovec iov[2] = {{&header, sizeof header}, {(void *)data, header.kind == PIPE_INLINE ? len : 0}};
    int memfd = -1;
    if (header.kind == PIPE_MEMFD) {
        memfd = fls_memfd_with(data, len, "forklift-pipe");
        if (memfd < 0) return FL_ENOMEM;
    }
    int status;
    for (;;) {
        if (fls_send_fds(fd, iov, 2, &memfd, memfd >= 0 ? 1 : 0, MSG_DONTWAIT) >= 0) {
            status = FL_OK;
            break;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) {
            if (!wait_fd(fd, POLLOUT, deadline_ns)) {
                status = FL_ETIMEDOUT;
                break;
            }
            continue;
        }
        status = (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN) ? FL_ESTATE : FL_ESYSTEM;
        break;
    }
    if (memfd >= 0) close(memfd); /* the message in flight keeps the memory */
    return status;
}

int fls_pipe_poll(int fd, int64_t deadline_ns) {
    return wait_fd(fd, POLLIN, deadline_ns) ? FL_OK : FL_ETIMEDOUT;
}

int fls_pipe_recv(int fd, void *buffer, size_t capacity, size_t *len, int64_t deadline_ns) {
    pipe_header header;
    for (;;) {
        ssize_t n = recv(fd, &header, sizeof header, MSG_PEEK | MSG_DONTWAIT);
        if (n == 0) return FL_EDONE;
        if (n > 0) break;
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return errno == ECONNRESET ? FL_EDONE : FL_ESYSTEM;
        if (!wait_fd(fd, POLLIN, deadline_ns)) return FL_ETIMEDOUT;
    }
    if (header.magic != PIPE_MAGIC) return FL_ESYSTEM;
    *len = (size_t)header.len;
    if (header.len > capacity) return FL_ERANGE;
    struct iovec iov[2] = {{&header, sizeof header}, {buffer, header.kind == PIPE_INLINE ? (size_t)header.len : 0}};
    int memfd = -1;
    ssize_t n = fls_recv_fds(fd, iov, 2, &memfd, 1, MSG_DONTWAIT);
    if (n < (ssize_t)sizeof header) {
        if (memfd >= 0) close(memfd);
        return FL_ESYSTEM;
    }
    if (header.kind == PIPE_INLINE) {
        if (memfd >= 0) close(memfd);
        return FL_OK;
    }
    if (memfd < 0) return FL_ESYSTEM;
    int status = FL_OK;
    void *map = mmap(NULL, (size_t)header.len, PROT_READ, MAP_SHARED | MAP_POPULATE, memfd, 0);
    if (map == MAP_FAILED) {
        status = FL_ENOMEM;
    } else {
        memcpy(buffer, map, (size_t)header.len);
        munmap(map, (size_t)header.len);
    }
    close(memfd);
    return status;
}
