/*
 * The shared-memory arena for large objects (see forklift_arena.h).
 *
 * Each segment keeps its free ranges in an array sorted by offset. A range is "kept" (its pages
 * are allocated and mapped here and in the workers that read it) or "released" (hole-punched,
 * no pages). Adjacent free ranges merge when they are of the same kind. An allocation takes the
 * smallest kept range that fits, else the smallest released one, else a new segment. Objects
 * here are 256 KiB or more, so a linear scan over a few ranges per segment is cheap beside
 * what the caller then does with the bytes.
 */
#define _GNU_SOURCE
#include "forklift_arena.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct free_range {
    uint64_t offset;
    uint64_t len;
    /** 1: the pages are kept (allocated, possibly mapped by workers); 0: released. */
    int kept;
} free_range;

typedef struct segment {
    /* Written before the segment is published (segment_count), read without the lock after. */
    char *base;
    uint64_t span;
    int fd;
    uint64_t inode;
    /* Guarded by `lock`. */
    free_range *ranges;
    size_t count, capacity;
} segment;

static segment segments[FLS_ARENA_SEGMENTS];
static uint32_t segment_count; /* atomic: acquire/release */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static size_t retained;  /* bytes of kept free ranges, under `lock` */
static size_t in_use;    /* bytes allocated, under `lock` */
static size_t retain_limit;            /* the base limit, once `retain_limit_set` */
static int retain_limit_set;
static size_t *capacities;             /* of the live stores that have one, under `lock` */
static size_t capacity_count, capacity_room;

static uint64_t round_up(uint64_t n, uint64_t to) { return (n + to - 1) / to * to; }

static size_t default_retain_limit(void) {
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    size_t limit = (size_t)1 << 30;
    if (pages > 0 && size > 0 && (size_t)pages * (size_t)size / 8 < limit) limit = (size_t)pages * (size_t)size / 8;
    return limit;
}

/* The base limit and the live stores' capacities, whichever is smallest. Under `lock`. */
static size_t current_limit(void) {
    if (!retain_limit_set) {
        retain_limit = default_retain_limit();
        retain_limit_set = 1;
    }
    size_t limit = retain_limit;
    for (size_t i = 0; i < capacity_count; i++) {
        if (capacities[i] < limit) limit = capacities[i];
    }
    return limit;
}

/* Inserts `range` at `at` in `seg`'s array. Returns 0, or ENOMEM. */
static int insert_range(segment *seg, size_t at, free_range range) {
    if (seg->count == seg->capacity) {
        size_t capacity = seg->capacity ? seg->capacity * 2 : 16;
        free_range *grown = realloc(seg->ranges, capacity * sizeof *grown);
        if (!grown) return ENOMEM;
        seg->ranges = grown;
        seg->capacity = capacity;
    }
    memmove(&seg->ranges[at + 1], &seg->ranges[at], (seg->count - at) * sizeof *seg->ranges);
    seg->ranges[at] = range;
    seg->count++;
    return 0;
}

static void remove_range(segment *seg, size_t at) {
    memmove(&seg->ranges[at], &seg->ranges[at + 1], (seg->count - at - 1) * sizeof *seg->ranges);
    seg->count--;
}

/* Merges the range at `at` with its neighbours of the same kind that touch it. */
static void merge_around(segment *seg, size_t at) {
    if (at + 1 < seg->count) {
        free_range *r = &seg->ranges[at], *next = &seg->ranges[at + 1];
        if (r->kept == next->kept && r->offset + r->len == next->offset) {
            r->len += next->len;
            remove_range(seg, at + 1);
        }
    }
    if (at > 0) {
        free_range *prev = &seg->ranges[at - 1], *r = &seg->ranges[at];
        if (prev->kept == r->kept && prev->offset + prev->len == r->offset) {
            prev->len += r->len;
            remove_range(seg, at);
        }
    }
}

/* A new segment of at least `need` bytes, all one released range; its index, or -1 with errno. */
static int add_segment(uint64_t need) {
    uint32_t index = __atomic_load_n(&segment_count, __ATOMIC_RELAXED);
    if (index == FLS_ARENA_SEGMENTS) {
        errno = ENOSPC;
        return -1;
    }
    uint64_t span = need > FLS_ARENA_SEGMENT_SIZE ? round_up(need, 2u << 20) : FLS_ARENA_SEGMENT_SIZE;
    int fd = memfd_create("forklift-arena", MFD_CLOEXEC);
    if (fd < 0) return -1;
    struct stat info;
    void *base = MAP_FAILED;
    if (ftruncate(fd, (off_t)span) == 0 && fstat(fd, &info) == 0) {
        base = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
    }
    if (base == MAP_FAILED) {
        int error = errno;
        close(fd);
        errno = error;
        return -1;
    }
    segment *seg = &segments[index];
    seg->base = base;
    seg->span = span;
    seg->fd = fd;
    seg->inode = (uint64_t)info.st_ino;
    seg->count = 0;
    if (insert_range(seg, 0, (free_range){0, span, 0}) != 0) {
        munmap(base, span);
        close(fd);
        errno = ENOMEM;
        return -1;
    }
    __atomic_store_n(&segment_count, index + 1, __ATOMIC_RELEASE);
    return (int)index;
}

void *fls_arena_alloc(size_t len, uint32_t *segment_index) {
    if (len == 0 || len > (size_t)1 << 46) {
        errno = EINVAL;
        return NULL;
    }
    uint64_t need = round_up(len, FLS_ARENA_PAGE);
    pthread_mutex_lock(&lock);
    /* The smallest fitting range, kept ranges first. */
    int best_seg = -1;
    size_t best_at = 0;
    int best_kept = 0;
    uint64_t best_len = UINT64_MAX;
    uint32_t count = __atomic_load_n(&segment_count, __ATOMIC_RELAXED);
    for (uint32_t s = 0; s < count; s++) {
        segment *seg = &segments[s];
        for (size_t i = 0; i < seg->count; i++) {
            free_range *r = &seg->ranges[i];
            if (r->len < need) continue;
            int better = best_seg < 0 || (r->kept && !best_kept) || (r->kept == best_kept && r->len < best_len);
            if (better) {
                best_seg = (int)s;
                best_at = i;
                best_kept = r->kept;
                best_len = r->len;
            }
        }
    }
    if (best_seg < 0) {
        best_seg = add_segment(need);
        if (best_seg < 0) {
            int error = errno;
            pthread_mutex_unlock(&lock);
            errno = error;
            return NULL;
        }
        best_at = 0;
        best_kept = 0;
    }
    segment *seg = &segments[best_seg];
    free_range *r = &seg->ranges[best_at];
    uint64_t offset = r->offset;
    r->offset += need;
    r->len -= need;
    if (r->len == 0) remove_range(seg, best_at);
    if (best_kept) retained -= need;
    in_use += need;
    pthread_mutex_unlock(&lock);
    *segment_index = (uint32_t)best_seg;
    return seg->base + offset;
}

/* Releases the pages of [offset, offset + len) of `seg`. */
static void release_pages(segment *seg, uint64_t offset, uint64_t len) {
    if (fallocate(seg->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)len) != 0) {
        /* Without hole punching (no such file system here: memfds always have it), the pages
         * stay; the range is then still correct to hand out. */
        (void)madvise(seg->base + offset, len, MADV_REMOVE);
    }
}

/* Puts a free range back in `seg`, sorted, merged with its neighbours. Under `lock`. */
static void put_back(segment *seg, free_range range) {
    size_t low = 0, high = seg->count;
    while (low < high) {
        size_t mid = (low + high) / 2;
        if (seg->ranges[mid].offset < range.offset) low = mid + 1;
        else high = mid;
    }
    if (insert_range(seg, low, range) != 0) {
        /* No memory for the free list: the range is lost to the arena (its pages released),
         * which costs address space, not memory. */
        if (range.kept) {
            retained -= range.len;
            release_pages(seg, range.offset, range.len);
        }
        return;
    }
    merge_around(seg, low);
}

void fls_arena_free(void *data, size_t len, uint32_t segment_index) {
    if (!data || len == 0 || segment_index >= __atomic_load_n(&segment_count, __ATOMIC_ACQUIRE)) return;
    segment *seg = &segments[segment_index];
    uint64_t need = round_up(len, FLS_ARENA_PAGE);
    uint64_t offset = (uint64_t)((char *)data - seg->base);
    pthread_mutex_lock(&lock);
    in_use -= need;
    int keep = retained + need <= current_limit();
    if (keep) {
        retained += need;
        put_back(seg, (free_range){offset, need, 1});
        pthread_mutex_unlock(&lock);
        return;
    }
    pthread_mutex_unlock(&lock);
    /* Released outside the lock: punching a large range takes a while. The range is nobody's
     * until it is put back. */
    release_pages(seg, offset, need);
    pthread_mutex_lock(&lock);
    put_back(seg, (free_range){offset, need, 0});
    pthread_mutex_unlock(&lock);
}

int fls_arena_place_of(const void *data, uint32_t segment_index, fls_arena_place *place) {
    if (segment_index >= __atomic_load_n(&segment_count, __ATOMIC_ACQUIRE)) return EINVAL;
    const segment *seg = &segments[segment_index];
    if ((const char *)data < seg->base || (const char *)data >= seg->base + seg->span) return EINVAL;
    place->fd = seg->fd;
    place->pad = 0;
    place->offset = (uint64_t)((const char *)data - seg->base);
    place->span = seg->span;
    place->inode = seg->inode;
    return 0;
}

void fls_arena_trim(void) {
    pthread_mutex_lock(&lock);
    uint32_t count = __atomic_load_n(&segment_count, __ATOMIC_RELAXED);
    for (uint32_t s = 0; s < count; s++) {
        segment *seg = &segments[s];
        for (size_t i = 0; i < seg->count; i++) {
            if (!seg->ranges[i].kept) continue;
            release_pages(seg, seg->ranges[i].offset, seg->ranges[i].len);
            seg->ranges[i].kept = 0;
        }
        /* All free ranges are released now: merge the ones that touch. */
        size_t out = 0;
        for (size_t i = 0; i < seg->count; i++) {
            if (out > 0 && seg->ranges[out - 1].offset + seg->ranges[out - 1].len == seg->ranges[i].offset) {
                seg->ranges[out - 1].len += seg->ranges[i].len;
            } else {
                seg->ranges[out++] = seg->ranges[i];
            }
        }
        seg->count = out;
    }
    retained = 0;
    pthread_mutex_unlock(&lock);
}

size_t fls_arena_retained(void) {
    pthread_mutex_lock(&lock);
    size_t bytes = retained;
    pthread_mutex_unlock(&lock);
    return bytes;
}

size_t fls_arena_in_use(void) {
    pthread_mutex_lock(&lock);
    size_t bytes = in_use;
    pthread_mutex_unlock(&lock);
    return bytes;
}

size_t fls_arena_retain_limit(void) {
    pthread_mutex_lock(&lock);
    size_t limit = current_limit();
    pthread_mutex_unlock(&lock);
    return limit;
}

void fls_arena_set_retain_limit(size_t bytes) {
    pthread_mutex_lock(&lock);
    retain_limit = bytes;
    retain_limit_set = 1;
    pthread_mutex_unlock(&lock);
}

void fls_arena_add_capacity(size_t bytes) {
    pthread_mutex_lock(&lock);
    if (capacity_count == capacity_room) {
        size_t room = capacity_room ? capacity_room * 2 : 8;
        size_t *grown = realloc(capacities, room * sizeof *grown);
        if (!grown) { /* without room, the store's capacity does not bound the kept pages */
            pthread_mutex_unlock(&lock);
            return;
        }
        capacities = grown;
        capacity_room = room;
    }
    capacities[capacity_count++] = bytes;
    pthread_mutex_unlock(&lock);
}

void fls_arena_remove_capacity(size_t bytes) {
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < capacity_count; i++) {
        if (capacities[i] != bytes) continue;
        capacities[i] = capacities[--capacity_count];
        break;
    }
    pthread_mutex_unlock(&lock);
}
