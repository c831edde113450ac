/*
 * Shared-memory IPC: the bounded message queue and shared segments (see forklift_ipc.h).
 */
#define _GNU_SOURCE
#include "forklift_ipc.h"
#include "forklift_shim.h"
#include "forklift_sync.h"
#include "forklift_types.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A region of the overflow area that one process holds while it copies a large message in
 * (a producer, before the message is published) or out (a consumer, after taking it): if that
 * process dies meanwhile, another one that reserves a region finds its pid gone and gives the
 * pages back. pid 0: the entry is free. Guarded by the queue's lock. */
typedef struct fls_transit {
    int32_t pid;
    uint32_t unused;
    uint64_t offset;
    uint64_t span;
} fls_transit;

/* Large messages in transit at once that a death cannot leak; beyond that, a copy goes
 * untracked (and leaks its region if its process dies during the copy). */
#define QUEUE_TRANSITS 64

struct fls_queue {
    fls_shared_header header; /* kind FLS_SHARED_QUEUE; the mapping's length */
    pthread_mutex_t lock; /* robust: a holder that dies does not block the others */
    fls_shared_cond not_empty;
    fls_shared_cond not_full;
    uint64_t capacity;    /* bytes in the ring */
    uint64_t max_items;
    uint64_t head;        /* byte position of the oldest message (grows without bound) */
    uint64_t tail;        /* byte position after the newest message */
    uint64_t items;
    uint32_t closed;
    uint64_t overflow_end;  /* bytes handed out in the overflow area (page multiples) */
    uint64_t file_size;     /* the memfd's size: the header, the ring, the overflow area */
    fls_transit transit[QUEUE_TRANSITS];
};

_Static_assert(sizeof(fls_queue) <= 4096, "a queue's header fits its first page");

/* A message is a length word, then its bytes padded to 8. A large message (above a quarter of
 * the ring) lives out of line, in the overflow area of the queue's own memfd after the ring:
 * the ring holds its length word (with OUT_OF_LINE set) and its offset in that area. Every
 * process that uses the queue has the memfd, so it maps the message where it is: one copy in,
 * one copy out, and the memory goes back (hole punched) once the message is taken. */
#define OUT_OF_LINE (1ull << 63)

static size_t header_size(void) { return 4096; }
static unsigned char *ring(fls_queue *q) { return (unsigned char *)q + header_size(); }
static uint64_t cost(size_t len) { return 8 + (((uint64_t)len + 7) & ~(uint64_t)7); }
static uint64_t page_up(uint64_t n) { return (n + 4095) & ~(uint64_t)4095; }
static uint64_t overflow_start(const fls_queue *q) { return page_up(header_size() + q->capacity); }
/* A message of 8 bytes or less costs the ring no more than its out-of-line record would. */
static int out_of_line(const fls_queue *q, size_t len) { return len > 8 && cost(len) > q->capacity / 4; }

fls_queue *fls_queue_create(size_t capacity, size_t max_items, int *fd, int *error) {
    capacity = (capacity + 7) & ~(size_t)7;
    if (capacity < 16) capacity = 16;
    fls_queue *q = fls_shared_create(FLS_SHARED_QUEUE, header_size() + capacity, fd, error);
    if (!q) return NULL;
    fls_shared_mutex_init(&q->lock, 0);
    q->capacity = capacity;
    q->max_items = max_items;
    q->file_size = header_size() + capacity;
    return q;
}

fls_queue *fls_queue_open(const char *token, int *fd, int *error) {
    return fls_shared_open(token, 1u << FLS_SHARED_QUEUE, fd, error);
}

void fls_queue_unmap(fls_queue *q, int fd) { fls_shared_close(q, fd); }

size_t fls_queue_max_message(const fls_queue *q) {
    (void)q;
    return (size_t)(OUT_OF_LINE - 1) & ~(size_t)4095;
}

static void lock(fls_queue *q) {
    if (pthread_mutex_lock(&q->lock) == EOWNERDEAD) pthread_mutex_consistent(&q->lock);
}

static void copy_in(fls_queue *q, uint64_t at, const void *data, size_t len) {
    uint64_t offset = at % q->capacity;
    size_t first = (size_t)(q->capacity - offset) < len ? (size_t)(q->capacity - offset) : len;
    memcpy(ring(q) + offset, data, first);
    if (first < len) memcpy(ring(q), (const unsigned char *)data + first, len - first);
}

static void copy_out(fls_queue *q, uint64_t at, void *data, size_t len) {
    uint64_t offset = at % q->capacity;
    size_t first = (size_t)(q->capacity - offset) < len ? (size_t)(q->capacity - offset) : len;
    memcpy(data, ring(q) + offset, first);
    if (first < len) memcpy((unsigned char *)data + first, ring(q), len - first);
}

/* Waits (the lock held) until `need` ring bytes and an item fit. FL_OK, FL_ESTATE, FL_ETIMEDOUT. */
static int wait_for_room(fls_queue *q, uint64_t need, int64_t deadline_ns) {
    for (;;) {
        if (q->closed) return FL_ESTATE;
        int fits = q->capacity - (q->tail - q->head) >= need && (q->max_items == 0 || q->items < q->max_items);
        if (fits) return FL_OK;
        if (fls_shared_cond_wait(&q->not_full, &q->lock, deadline_ns) == ETIMEDOUT) return FL_ETIMEDOUT;
    }
}

/* Appends a message record (the lock held, room checked). */
static void append(fls_queue *q, uint64_t header, const void *body, size_t body_len) {
    copy_in(q, q->tail, &header, 8);
    if (body_len > 0) copy_in(q, q->tail + 8, body, body_len);
    /* Published last: a holder that dies mid-copy leaves the queue as it was. */
    q->tail += cost(body_len);
    __atomic_store_n(&q->items, q->items + 1, __ATOMIC_RELAXED); /* also read without the lock */
    fls_shared_cond_broadcast(&q->not_empty);
}

static void release_out_of_line(fls_queue *q, int fd, uint64_t offset, size_t len) {
    fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)(overflow_start(q) + offset), (off_t)page_up(len));
}

/* Records (the lock held) that this process holds the region at `offset`; returns its entry,
 * or -1 if every entry is taken. First gives back the regions of processes that died holding
 * theirs (a zombie still counts as alive until it is reaped). */
static int transit_begin(fls_queue *q, int fd, uint64_t offset, uint64_t span) {
    int free_entry = -1;
    for (int i = 0; i < QUEUE_TRANSITS; i++) {
        fls_transit *t = &q->transit[i];
        if (t->pid != 0 && kill(t->pid, 0) != 0 && errno == ESRCH) {
            release_out_of_line(q, fd, t->offset, t->span);
            t->pid = 0;
        }
        if (t->pid == 0 && free_entry < 0) free_entry = i;
    }
    if (free_entry >= 0) {
        q->transit[free_entry].offset = offset;
        q->transit[free_entry].span = span;
        q->transit[free_entry].pid = (int32_t)getpid();
    }
    return free_entry;
}

/* The region of entry `entry` is no longer this process's to give back (the lock held). */
static void transit_end(fls_queue *q, int entry) {
    if (entry >= 0) q->transit[entry].pid = 0;
}

/* transit_end, taking the lock for it. */
static void transit_end_locking(fls_queue *q, int entry) {
    if (entry < 0) return;
    lock(q);
    transit_end(q, entry);
    pthread_mutex_unlock(&q->lock);
}

/* Copies a large message into a fresh region of the overflow area. Returns FL_OK with the
 * region's offset and its transit entry (see transit_begin), or FL_ENOMEM. */
static int store_out_of_line(fls_queue *q, int fd, const void *data, size_t len, uint64_t *offset, int *entry) {
    uint64_t span = page_up(len);
    *entry = -1;
    lock(q);
    *offset = q->overflow_end;
    q->overflow_end += span;
    uint64_t end = overflow_start(q) + q->overflow_end;
    int grown = 1;
    if (end > q->file_size) {
        grown = ftruncate(fd, (off_t)end) == 0;
        if (grown) q->file_size = end;
    }
    if (grown) *entry = transit_begin(q, fd, *offset, span);
    pthread_mutex_unlock(&q->lock);
    if (!grown) return FL_ENOMEM;
    /* Copied without the lock: the region is this producer's until it is published. */
    void *map = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)(overflow_start(q) + *offset));
    if (map == MAP_FAILED) {
        transit_end_locking(q, *entry);
        release_out_of_line(q, fd, *offset, len);
        return FL_ENOMEM;
    }
    memcpy(map, data, len);
    munmap(map, span);
    return FL_OK;
}

int fls_queue_put(fls_queue *q, int fd, const void *data, size_t len, int64_t deadline_ns) {
    if ((uint64_t)len >= OUT_OF_LINE / 2) return FL_ERANGE;
    if (!out_of_line(q, len)) {
        lock(q);
        int status = wait_for_room(q, cost(len), deadline_ns);
        if (status == FL_OK) append(q, len, data, len);
        pthread_mutex_unlock(&q->lock);
        return status;
    }
    /* Wait for room first, so a full queue costs no copy; then copy, then publish. */
    lock(q);
    int status = wait_for_room(q, cost(8), deadline_ns);
    pthread_mutex_unlock(&q->lock);
    if (status != FL_OK) return status;
    uint64_t offset = 0;
    int entry = -1;
    status = store_out_of_line(q, fd, data, len, &offset, &entry);
    if (status != FL_OK) return status;
    lock(q);
    status = wait_for_room(q, cost(8), deadline_ns);
    /* The entry goes before the message is published: a death in between leaks the region,
     * but a published region is never given back as a dead producer's. */
    transit_end(q, entry);
    if (status == FL_OK) append(q, OUT_OF_LINE | len, &offset, 8);
    pthread_mutex_unlock(&q->lock);
    if (status != FL_OK) release_out_of_line(q, fd, offset, len);
    return status;
}

/* How long a consumer finding the queue empty watches it before it sleeps: about what waking
 * a sleeping thread of another process costs here, so a message that follows soon (the answer
 * to a request just sent) is taken without a sleep and a wake-up. */
#define GET_SPIN_NS 50000

/* Watches the queue without its lock until it holds an item, it is closed, GET_SPIN_NS pass or
 * `deadline_ns` comes (negative: none). A hint only: the caller looks again under the lock. */
static void spin_until_items(fls_queue *q, int64_t deadline_ns) {
    if (__atomic_load_n(&q->items, __ATOMIC_RELAXED) != 0) return;
    int64_t start = fls_monotonic_ns();
    int64_t end = start + GET_SPIN_NS;
    if (deadline_ns >= 0 && deadline_ns < end) end = deadline_ns;
    if (end <= start) return;
    for (;;) {
        for (int i = 0; i < 64; i++) {
            if (__atomic_load_n(&q->items, __ATOMIC_RELAXED) != 0 || __atomic_load_n(&q->closed, __ATOMIC_RELAXED))
                return;
            fls_cpu_relax();
        }
        if (fls_monotonic_ns() >= end) return;
    }
}

int fls_queue_get(fls_queue *q, int fd, void *buffer, size_t capacity, size_t *len, int64_t deadline_ns) {
    spin_until_items(q, deadline_ns);
    lock(q);
    while (q->items == 0) {
        if (q->closed) {
            pthread_mutex_unlock(&q->lock);
            return FL_EDONE;
        }
        if (fls_shared_cond_wait(&q->not_empty, &q->lock, deadline_ns) == ETIMEDOUT) {
            pthread_mutex_unlock(&q->lock);
            return FL_ETIMEDOUT;
        }
    }
    uint64_t header = 0;
    copy_out(q, q->head, &header, 8);
    size_t length = (size_t)(header & ~OUT_OF_LINE);
    *len = length;
    if (length > capacity) {
        pthread_mutex_unlock(&q->lock);
        return FL_ERANGE;
    }
    uint64_t offset = 0;
    int entry = -1;
    if (header & OUT_OF_LINE) {
        copy_out(q, q->head + 8, &offset, 8);
        q->head += cost(8);
        /* After the message is taken: a death in between leaks the region, but a region
         * still in the queue is never given back as a dead consumer's. */
        entry = transit_begin(q, fd, offset, page_up(length));
    } else {
        if (length > 0) copy_out(q, q->head + 8, buffer, length);
        q->head += cost(length);
    }
    __atomic_store_n(&q->items, q->items - 1, __ATOMIC_RELAXED); /* also read without the lock */
    fls_shared_cond_broadcast(&q->not_full);
    pthread_mutex_unlock(&q->lock);
    if (!(header & OUT_OF_LINE)) return FL_OK;
    /* The message is this consumer's now: copy it out without the lock, then free it. */
    uint64_t span = page_up(length);
    void *map = mmap(NULL, span, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, (off_t)(overflow_start(q) + offset));
    int status = FL_OK;
    if (map == MAP_FAILED) {
        status = FL_ENOMEM;
    } else {
        memcpy(buffer, map, length);
        munmap(map, span);
    }
    release_out_of_line(q, fd, offset, length);
    transit_end_locking(q, entry);
    return status;
}

void fls_queue_close(fls_queue *q) {
    lock(q);
    __atomic_store_n(&q->closed, 1, __ATOMIC_RELAXED); /* also read without the lock */
    fls_shared_cond_broadcast(&q->not_empty);
    fls_shared_cond_broadcast(&q->not_full);
    pthread_mutex_unlock(&q->lock);
}

size_t fls_queue_count(fls_queue *q) {
    lock(q);
    size_t n = (size_t)q->items;
    pthread_mutex_unlock(&q->lock);
    return n;
}

/* ------------------------------------------------------------------------------------------ */
/* Segments                                                                                   */
/* ------------------------------------------------------------------------------------------ */

static int map_segment(int fd, size_t size, int named, fls_segment *segment) {
    void *data = size > 0 ? mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : NULL;
    if (data == MAP_FAILED) {
        int error = errno;
        close(fd);
        return error;
    }
    segment->data = data;
    segment->size = size;
    segment->fd = fd;
    segment->named = named;
    return 0;
}

/* The name anonymous segments' memfds get (what /proc shows as "/memfd:NAME (deleted)"). */
#define SEGMENT_MEMFD_NAME "forklift-shm"

/* Whether the /proc/PID/fd/N link at `path` names an anonymous segment's memfd, not some other
 * descriptor of that process (a file, a socket, a queue's memfd). */
static int is_segment_link(const char *path) {
    char target[128];
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n < 0) return 0;
    target[n] = 0;
    static const char expected[] = "/memfd:" SEGMENT_MEMFD_NAME " (deleted)";
    return strcmp(target, expected) == 0;
}

/* The same for a descriptor of this process. */
static int is_segment_memfd(int fd) {
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    return is_segment_link(path);
}

int fls_segment_create(const char *name, size_t size, fls_segment *segment) {
    int fd = name ? shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600)
                  : memfd_create(SEGMENT_MEMFD_NAME, MFD_CLOEXEC);
    if (fd < 0) return errno;
    if (ftruncate(fd, (off_t)size) != 0) {
        int error = errno;
        close(fd);
        if (name) shm_unlink(name);
        return error;
    }
    int error = map_segment(fd, size, name != NULL, segment);
    if (error && name) shm_unlink(name);
    return error;
}

int fls_segment_open(const char *name, fls_segment *segment) {
    int pid = 0, number = 0, fd;
    char tail = 0;
    if (sscanf(name, "memfd:%d:%d%c", &pid, &number, &tail) == 2) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/fd/%d", pid, number);
        /* Looked at before it is opened (opening a device or a terminal may do something),
         * and again after (the number may have been reused in between). */
        if (!is_segment_link(path)) return access(path, F_OK) == 0 ? EPROTOTYPE : errno;
        fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd >= 0 && !is_segment_memfd(fd)) {
            close(fd);
            return EPROTOTYPE;
        }
    } else {
        fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
    }
    if (fd < 0) return errno;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int error = errno;
        close(fd);
        return error;
    }
    return map_segment(fd, (size_t)st.st_size, pid == 0, segment);
}

void fls_segment_close(fls_segment *segment) {
    if (segment->data) munmap(segment->data, segment->size);
    if (segment->fd >= 0) close(segment->fd);
    segment->data = NULL;
    segment->fd = -1;
}
