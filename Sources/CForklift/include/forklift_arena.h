#ifndef FORKLIFT_ARENA_H
#define FORKLIFT_ARENA_H

/*
 * The shared-memory arena: where the remote object store keeps large objects (of
 * FLS_SHARE_MINIMUM bytes or more, in a runtime with worker processes).
 *
 * A few large sparse memfd segments, mapped once in this process and once in each worker
 * process that reads from them, are cut into page-aligned ranges. A freed range keeps its pages
 * (up to a process-wide retention limit) and is handed out again first, so the next object of
 * about that size finds its pages allocated and already in the page tables of this process and
 * of every worker that read the last one: no page faults, no zeroing, no mmap per object.
 * Setting up the page tables of a fresh 256 MiB mapping costs more than reading it.
 *
 * Thread-safe: one lock around the free lists; the segment table is append-only and read
 * without it. Segments live until the process ends; their retained pages go back to the
 * system with fls_arena_trim (runtime shutdown) or when the limit is passed.
 */

#include <stddef.h>
#include <stdint.h>

/** The most segments; an allocation that needs another falls back to a memfd of its own. */
#define FLS_ARENA_SEGMENTS 64
/** Virtual size of a segment; a larger allocation gets a segment of its own size. */
#define FLS_ARENA_SEGMENT_SIZE (1ull << 30)
/** Granularity of allocations: ranges are page-aligned, so a range's pages can be released. */
#define FLS_ARENA_PAGE 4096

/** Where an allocation lives: what a worker process needs to map it. */
typedef struct fls_arena_place {
    /** The segment's memfd in this process (open until the process ends). */
    int32_t fd;
    int32_t pad;
    /** Offset of the allocation in the segment. */
    uint64_t offset;
    /** Length of the whole segment (what a worker maps once). */
    uint64_t span;
    /** The segment's inode: a worker checks it when it maps the segment, and keys its cache by it. */
    uint64_t inode;
} fls_arena_place;

/** `len` (> 0) bytes of shared memory, writable; the segment's index in `*segment`. NULL with
 *  errno when no segment can hold it (ENOMEM, EMFILE, ...). Retained pages come back first:
 *  the bytes are then whatever the last user left, not zeros. */
void *fls_arena_alloc(size_t len, uint32_t *segment);

/** Gives back an allocation of `len` bytes at `data` in `segment`. Its pages are kept for the
 *  next allocation while the retained bytes stay within the limit, else released. */
void fls_arena_free(void *data, size_t len, uint32_t segment);

/** Fills `place` for an allocation at `data` in `segment`. Returns 0, or EINVAL. */
int fls_arena_place_of(const void *data, uint32_t segment, fls_arena_place *place);

/** Releases the pages of every free range (memory back to the system); allocations keep theirs. */
void fls_arena_trim(void);

/** Bytes of free ranges whose pages are kept now. */
size_t fls_arena_retained(void);

/** Bytes of ranges allocated now (rounded up to pages). */
size_t fls_arena_in_use(void);

/** The retention limit in bytes: by default the smaller of 1 GiB and an eighth of physical
 *  memory, and of the live stores' capacities (fls_arena_add_capacity). Setting the base limit
 *  lower than what is retained releases nothing until the next free. */
size_t fls_arena_retain_limit(void);
void fls_arena_set_retain_limit(size_t bytes);

/** A store with a capacity of `bytes` (> 0) begins or ends: while it lives, the pages kept for
 *  reuse stay within its capacity too (the limit is the smallest of the live stores'
 *  capacities and the base limit). Each add is matched by one remove of the same bytes. */
void fls_arena_add_capacity(size_t bytes);
void fls_arena_remove_capacity(size_t bytes);

#endif
