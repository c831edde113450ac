/*
 * Internal C helpers for the Swift core. Not part of the public API and not copied into
 * include/forklift.h.
 *
 * - Atomic operations on plain memory (the Swift core keeps some atomics in raw buffers,
 *   where Synchronization.Atomic cannot live).
 * - Futex wait/wake, the monotonic clock, thread names and the CPU count.
 * - Thread-local state: the last-error message and the task/worker running on this thread.
 * - The fixed-layout records of the hot path: task nodes, result slots, task contexts.
 */
#ifndef FORKLIFT_SHIM_H
#define FORKLIFT_SHIM_H

#include "forklift_types.h"
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

/* ---- Atomics on raw memory -------------------------------------------------------------- */

static inline uint64_t fls_atomic_load_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline uint64_t fls_atomic_load_relaxed_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void fls_atomic_store_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline bool fls_atomic_cas_u64(uint64_t *p, uint64_t *expected, uint64_t desired) {
    return __atomic_compare_exchange_n(p, expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE);
}
static inline uint64_t fls_atomic_add_u64(uint64_t *p, uint64_t v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
static inline uint64_t fls_atomic_sub_u64(uint64_t *p, uint64_t v) { return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST); }
static inline uint64_t fls_atomic_or_u64(uint64_t *p, uint64_t v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }
static inline uint64_t fls_atomic_and_u64(uint64_t *p, uint64_t v) { return __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); }

static inline uint32_t fls_atomic_load_u32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void fls_atomic_store_u32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
/** A sequentially consistent load (pairs with seq_cst stores in a store-then-load handshake). */
static inline uint32_t fls_atomic_load_seq_cst_u32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
/** A sequentially consistent store: later loads cannot move before it. */
static inline void fls_atomic_store_seq_cst_u32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
static inline uint32_t fls_atomic_exchange_u32(uint32_t *p, uint32_t v) { return __atomic_exchange_n(p, v, __ATOMIC_ACQ_REL); }
static inline uint32_t fls_atomic_add_u32(uint32_t *p, uint32_t v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
static inline uint32_t fls_atomic_sub_u32(uint32_t *p, uint32_t v) { return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST); }
static inline bool fls_atomic_cas_u32(uint32_t *p, uint32_t *expected, uint32_t desired) {
    return __atomic_compare_exchange_n(p, expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE);
}

static inline void *fls_atomic_load_ptr(void *const *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void *fls_atomic_exchange_ptr(void **p, void *v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
static inline bool fls_atomic_cas_ptr(void **p, void **expected, void *desired) {
    return __atomic_compare_exchange_n(p, expected, desired, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}
static inline void *fls_atomic_load_seq_cst_ptr(void *const *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static inline void fls_atomic_store_ptr(void **p, void *v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

/** A full (sequentially consistent) fence. */
static inline void fls_fence_seq_cst(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
/** Starts fetching the cache line at `p` for reading (shared, so a thread writing it keeps
 *  its copy; a hint; never faults). */
static inline void fls_prefetch_for_read(const void *p) { __builtin_prefetch(p, 0, 3); }
/** Starts fetching the cache line at `p` for writing (a hint; never faults). */
static inline void fls_prefetch_for_write(const void *p) {
#if defined(__x86_64__)
    __asm__ volatile("prefetchw %0" : : "m"(*(const char *)p));
#else
    __builtin_prefetch(p, 1, 3);
#endif
}
/** A hint to the CPU inside a spin loop. */
static inline void fls_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/** Bytes of an argument that a ring cell carries itself (see fls_ring_cell). */
#define FLS_CELL_INLINE 16

/** One cell of the bounded MPMC ring in the task queue, alone on its cache line so that a
 *  producer writing one cell and a consumer reading the next do not share a line.
 *  A cell holds either a node (`node`), or, with `node` NULL, a small task itself: a group
 *  task or an apply without a result, with its argument inline. Such a task crosses from the
 *  submitting core to the running one as this one line, without a node. */
typedef struct fls_ring_cell {
    uint64_t sequence;
    struct fls_node *node;
    fl_task_fn fn;
    void *user;
    void *owner;
    uint32_t kind;
    uint32_t arg_len;
    unsigned char inline_arg[FLS_CELL_INLINE];
} fls_ring_cell;

/* ---- System ----------------------------------------------------------------------------- */

/** Waits while *addr == expected, at most timeout_ns (negative: no limit). Returns 0 when woken
 *  or the value differed, -1 on timeout. Process-private futex. */
int fls_futex_wait(uint32_t *addr, uint32_t expected, int64_t timeout_ns);
/** Wakes up to n waiters of addr. */
void fls_futex_wake(uint32_t *addr, int n);
/** A mutex in one 32-bit word of the caller's memory (0: unlocked, 1: locked, 2: locked with
 *  waiters), for locks embedded in small records: no allocation, one CAS when uncontended.
 *  Not recursive; process-private. */
void fls_word_lock_contended(uint32_t *word);
static inline void fls_word_lock(uint32_t *word) {
    uint32_t unlocked = 0;
    if (__atomic_compare_exchange_n(word, &unlocked, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) return;
    fls_word_lock_contended(word);
}
static inline void fls_word_unlock(uint32_t *word) {
    if (__atomic_exchange_n(word, 0, __ATOMIC_RELEASE) == 2) fls_futex_wake(word, 1);
}
/** CLOCK_MONOTONIC in nanoseconds. */
int64_t fls_monotonic_ns(void);
/** The kernel's id of the calling thread (gettid). */
int64_t fls_thread_id(void);
/** Online CPUs (sched_getaffinity first, then sysconf); at least 1. */
int fls_cpu_count(void);
/** Names the calling thread (truncated to 15 bytes). */
void fls_set_thread_name(const char *name);
/** Starts a detached=false pthread running fn(arg); stores it in *out. Returns 0 or errno. */
int fls_thread_start(void *(*fn)(void *), void *arg, uint64_t *out);
/** Joins a thread started by fls_thread_start. */
int fls_thread_join(uint64_t thread);
/** Set in the child of a fork() made while threads of fls_thread_start ran (not joined yet):
 *  only the calls a worker process has work there (see `fls_call_restriction`). */
extern int fls_forked_with_threads;
/** The calling thread's id for identity checks. */
uint64_t fls_thread_self(void);

/* ---- Thread-local state ----------------------------------------------------------------- */

/** Stores the last-error message of this thread (copied, as fls_message_fit fits it). */
void fls_tls_set_message(const char *message);

/** The longest message kept (a failure's, the last error's), in bytes without the NUL. */
#define FLS_MESSAGE_MAX 1023
/** Copies `message` into `buffer` (room for FLS_MESSAGE_MAX bytes and the NUL). A longer one
 *  keeps its first quarter and its end, where a chain of causes ("argument 0 failed: ...")
 *  puts the first cause, with " ... " between them; cut between UTF-8 characters. */
void fls_message_fit(char *buffer, const char *message);
/** fls_message_fit into a malloc'd copy of the right size (NULL if out of memory). */
char *fls_message_dup(const char *message);
/** The last-error message of this thread ("" when none). */
const char *fls_tls_message(void);

/** A thread's pointers that the engine reads and writes around every task, together so that a
 * hot path finds them with one thread-local lookup (fls_tls_state) instead of one per field.
 * The getters and setters below read and write the same fields. */
typedef struct {
    /** The worker object (opaque to C) running on this thread, or NULL. */
    void *worker;
    /** The task context active on this thread, or NULL. */
    void *task_ctx;
    /** The worker process fed by this thread (a process pool's worker thread), or NULL. */
    void *worker_process;
    /** The callback thread object (opaque to C) running on this thread, or NULL. */
    void *callback_thread;
    /** The remote task holding CPUs that runs on this thread, or NULL. */
    void *remote_task;
    /** The extra outputs of the remote task running on this thread (fl_task_return_at). */
    void *remote_outputs;
} fls_thread_state;

/** The calling thread's state; the address stays valid for the thread's lifetime. */
fls_thread_state *fls_tls_state(void);
/** The worker object (opaque to C) running on this thread, or NULL. */
void *fls_tls_worker(void);
void fls_tls_set_worker(void *worker);
/** The callback thread object (opaque to C) running on this thread, or NULL. */
void *fls_tls_callback_thread(void);
void fls_tls_set_callback_thread(void *thread);
/** The worker process fed by the calling thread (a process pool's worker thread), or NULL. */
void *fls_tls_worker_process(void);
void fls_tls_set_worker_process(void *process);
/** The task context active on this thread, or NULL. */
void *fls_tls_task_ctx(void);
void fls_tls_set_task_ctx(void *ctx);
/** The extra outputs of the remote task running on this thread (fl_task_return_at). */
void *fls_tls_remote_outputs(void);
void fls_tls_set_remote_outputs(void *outputs);
/** The remote task holding CPUs that runs on this thread, if any. */
void *fls_tls_remote_task(void);
void fls_tls_set_remote_task(void *task);

/* ---- Hot-path records ------------------------------------------------------------------- */

/** Bytes of a result stored inline in its slot, without an allocation. */
#define FLS_SLOT_INLINE 8
/** A slot's status while its task has not completed. */
#define FLS_SLOT_PENDING 1

/** Kinds of a slot's storage (fls_slot.external). */
#define FLS_STORAGE_HEAP 0
#define FLS_STORAGE_EXTERNAL 1
#define FLS_STORAGE_MAPPED 2
#define FLS_STORAGE_SHARE_LARGE 3
#define FLS_STORAGE_ARENA 4
/** Bytes from which an object of a runtime with worker processes lives in shared memory. */
#define FLS_SHARE_MINIMUM (256 * 1024)

/** The outcome of one task (one item of a map). */
typedef struct fls_slot {
    /** FLS_SLOT_PENDING, FL_OK, or a failure status (FL_ETASK, FL_ECANCELED, FL_EWORKER, ...). */
    int32_t status;
    /** The task's own non-zero code when status is FL_ETASK. */
    int32_t code;
    /** Result length in bytes. */
    size_t len;
    /** The result bytes when they do not fit inline: see `storage`. */
    void *heap;
    /** The failure message (malloc'd), or NULL. */
    char *message;
    /** What `heap` is: FLS_STORAGE_HEAP (malloc'd), FLS_STORAGE_EXTERNAL (a caller's buffer the
     *  slot does not own) or FLS_STORAGE_MAPPED (a shared mapping of a memfd, whose descriptor
     *  is in `inline_data`) or FLS_STORAGE_ARENA (a range of the shared-memory arena, whose
     *  segment index is in `inline_data`; see forklift_arena.h). A pending slot marked
     *  FLS_STORAGE_SHARE_LARGE puts results of FLS_SHARE_MINIMUM bytes or more into shared
     *  memory. */
    uint32_t external;
    uint32_t reserved;
    unsigned char inline_data[FLS_SLOT_INLINE];
} fls_slot;

/** What a running task may write its result into. Lives on the worker's stack. */
typedef struct fls_ctx_record {
    /** Destination of the result. */
    fls_slot *slot;
    /** A caller-supplied result buffer (fl_pool_apply), or NULL. */
    void *external;
    size_t external_cap;
    /** Item index within its map (0 for apply). */
    uint64_t index;
    /** Points to a flag that becomes non-zero when the pool is terminated. */
    const uint32_t *cancelled;
} fls_ctx_record;

/** Bytes of an argument blob kept inside a task node. */
#define FLS_NODE_INLINE 48

/** Kinds of task node. */
#define FLS_NODE_APPLY 1
#define FLS_NODE_JOB 2
#define FLS_NODE_GROUP 3
/** An apply with callbacks and no result handle: after it runs, the node itself carries the
 *  outcome and the callbacks to the callback thread. */
#define FLS_NODE_CALLBACK_APPLY 4

/** One unit of work in a pool's queue. 128 bytes. */
typedef struct fls_node {
    struct fls_node *next;
    uint32_t kind;
    /** 1 when `arg` is a malloc'd copy that the node owns. */
    uint16_t arg_is_heap;
    /** 1 for a copy, on its consumer's stack, of a task that a ring cell carried: the node is
     *  not freed after it runs. */
    uint16_t is_cell_copy;
    fl_task_fn fn;
    void *user;
    const void *arg;
    size_t arg_len;
    /** A retained Swift object: the result box (apply) or the job (job runner); or the group. */
    void *owner;
    union {
        struct {
            /** A caller buffer for a synchronous apply, or NULL. */
            void *external;
            size_t external_cap;
            /** First item index (imap chunks). */
            uint64_t index;
        };
        /** FLS_NODE_CALLBACK_APPLY: the callbacks and their user pointer. */
        struct {
            fl_result_cb on_result;
            fl_result_cb on_error;
            void *callback_user;
        };
    };
    union {
        unsigned char inline_arg[FLS_NODE_INLINE];
        /** FLS_NODE_CALLBACK_APPLY, once run: the outcome (the argument is dead by then). */
        fls_slot result;
    };
} fls_node;

_Static_assert(sizeof(fls_slot) <= FLS_NODE_INLINE, "a slot must fit where the argument was");
_Static_assert(sizeof(fls_node) == 128, "task nodes are two cache lines");
_Static_assert(sizeof(fls_ring_cell) == 64, "a ring cell is one cache line");
_Static_assert(FLS_CELL_INLINE <= FLS_NODE_INLINE, "a cell's argument fits a node's");

/** Fills a ring cell the caller has claimed with a node (the sequence word is not touched). */
static inline void fls_ring_cell_put_node(fls_ring_cell *cell, fls_node *node) { cell->node = node; }

/** Fills a ring cell the caller has claimed with a task itself (len <= FLS_CELL_INLINE). */
static inline void fls_ring_cell_put_task(fls_ring_cell *cell, uint32_t kind, fl_task_fn fn, void *user, void *owner,
                                          const void *arg, uint32_t len) {
    cell->node = NULL;
    cell->fn = fn;
    cell->user = user;
    cell->owner = owner;
    cell->kind = kind;
    cell->arg_len = len;
    if (len) memcpy(cell->inline_arg, arg, len);
}

/** Reads a full ring cell the caller has taken: its node, or NULL after copying the task it
 *  carries into `scratch`, marked `is_cell_copy` (then `scratch` is what to run). */
static inline fls_node *fls_ring_cell_take(const fls_ring_cell *cell, fls_node *scratch) {
    if (cell->node) return cell->node;
    memset(scratch, 0, offsetof(fls_node, inline_arg));
    scratch->kind = cell->kind;
    scratch->is_cell_copy = 1;
    scratch->fn = cell->fn;
    scratch->user = cell->user;
    scratch->owner = cell->owner;
    scratch->arg_len = cell->arg_len;
    if (cell->arg_len) {
        memcpy(scratch->inline_arg, cell->inline_arg, cell->arg_len);
        scratch->arg = scratch->inline_arg;
    }
    return scratch;
}

/** Where a node's inline argument lives. */
static inline void *fls_node_inline_arg(fls_node *node) { return node->inline_arg; }
/** Where a callback-only apply's node keeps its outcome once run. */
static inline fls_slot *fls_node_result(fls_node *node) { return &node->result; }

/* ---- Task node allocation ----------------------------------------------------------------- */

/** A task node with every field zeroed except `next`'s successors' use. Nodes come from a
 *  per-thread free list, refilled in one atomic exchange from a process-wide stack that
 *  freeing threads return batches to, else carved from the thread's 256 KiB slab (mapped
 *  from the system). Never returns NULL unless memory is exhausted. Slabs are kept for reuse,
 *  not returned to the system (but for the untouched pages of a leaving thread's slab). */
fls_node *fls_node_alloc(void);
/** Returns a node to the calling thread's free list (batches go back to the shared stack). */
void fls_node_free(fls_node *node);

/** A small record's memory: one 64-byte block (line-aligned, contents undefined) from an
 *  allocator like the nodes' (its own slabs, per-thread free lists and shared stack), for
 *  records made on one thread and freed on another once per task (a remote object's slot and
 *  words, a remote task's control words), where malloc would contend for its arena lock.
 *  NULL only when memory is exhausted. */
void *fls_block_alloc(void);
/** Returns a block of fls_block_alloc (from any thread). */
void fls_block_free(void *block);
/** Bytes of an fls_block_alloc block. */
#define FLS_BLOCK_SIZE 64
/* A remote object's block: its slot (rounded up to 16 bytes), then four words (ready, lock,
 * resolved, produced by a task). */
_Static_assert(((sizeof(fls_slot) + 15) & ~(size_t)15) + 16 <= FLS_BLOCK_SIZE, "a slot and four words fit a block");

/* ---- Work-stealing deque ------------------------------------------------------------------- */

/*
 * A Chase-Lev work-stealing deque of task nodes with a fixed capacity, with the memory orderings
 * of Le, Pop, Cohen and Zappa Nardelli, "Correct and Efficient Work-Stealing for Weak Memory
 * Models" (PPoPP 2013), figure 1. The owner pushes and takes at the bottom (LIFO); other threads
 * steal at the top (FIFO). `top` and `bottom` sit on their own cache lines. A full deque refuses
 * the push and the caller uses the shared queue instead, so the buffer never has to grow.
 */
typedef struct fls_deque {
    int64_t top;
    char pad0[56];
    int64_t bottom;
    char pad1[56];
    fls_node **buffer;
    int64_t mask;
} fls_deque;

/** Owner only. Returns 0, or -1 when the deque is full. */
static inline int fls_deque_push(fls_deque *d, fls_node *node) {
    int64_t b = __atomic_load_n(&d->bottom, __ATOMIC_RELAXED);
    int64_t t = __atomic_load_n(&d->top, __ATOMIC_ACQUIRE);
    if (b - t > d->mask) return -1;
    __atomic_store_n(&d->buffer[b & d->mask], node, __ATOMIC_RELAXED);
    /* The paper's release fence + relaxed store, as one release store (the same guarantee, and
     * one ThreadSanitizer can see). */
    __atomic_store_n(&d->bottom, b + 1, __ATOMIC_RELEASE);
    /* Sequentially consistent from here: a worker about to park, which checks every deque
     * after announcing itself, sees this node, or this thread sees it parked and wakes it. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return 0;
}

/** Owner only. The most recently pushed node, or NULL when empty. */
static inline fls_node *fls_deque_take(fls_deque *d) {
    /* Empty without writing anything: `top` only grows, so an old value that already reaches
     * `bottom` proves emptiness. Keeps the line of an unused deque quiet for spinning peers. */
    if (__atomic_load_n(&d->top, __ATOMIC_RELAXED) >= __atomic_load_n(&d->bottom, __ATOMIC_RELAXED)) return NULL;
    int64_t b = __atomic_load_n(&d->bottom, __ATOMIC_RELAXED) - 1;
    __atomic_store_n(&d->bottom, b, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    int64_t t = __atomic_load_n(&d->top, __ATOMIC_RELAXED);
    fls_node *node = NULL;
    if (t <= b) {
        node = __atomic_load_n(&d->buffer[b & d->mask], __ATOMIC_RELAXED);
        if (t == b) {
            /* The last node: race the thieves for it. */
            if (!__atomic_compare_exchange_n(&d->top, &t, t + 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) node = NULL;
            __atomic_store_n(&d->bottom, b + 1, __ATOMIC_RELAXED);
        }
    } else {
        __atomic_store_n(&d->bottom, b + 1, __ATOMIC_RELAXED);
    }
    return node;
}

/** Any thread. The oldest node, or NULL when empty or when another thief won the race
 *  (`*contended` is then set to 1, and the caller may retry). */
static inline fls_node *fls_deque_steal(fls_deque *d, int *contended) {
    /* Cheap look first: reporting empty on a stale view is allowed (a worker parks only after
     * re-checking with fls_deque_is_empty), and it spares the fence on idle deques. */
    if (__atomic_load_n(&d->top, __ATOMIC_RELAXED) >= __atomic_load_n(&d->bottom, __ATOMIC_RELAXED)) return NULL;
    int64_t t = __atomic_load_n(&d->top, __ATOMIC_ACQUIRE);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    int64_t b = __atomic_load_n(&d->bottom, __ATOMIC_ACQUIRE);
    if (t >= b) return NULL;
    fls_node *node = __atomic_load_n(&d->buffer[t & d->mask], __ATOMIC_RELAXED);
    if (!__atomic_compare_exchange_n(&d->top, &t, t + 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
        *contended = 1;
        return NULL;
    }
    return node;
}

/** Any thread: whether the deque looked empty (sequentially consistent loads). */
static inline int fls_deque_is_empty(fls_deque *d) {
    int64_t t = __atomic_load_n(&d->top, __ATOMIC_SEQ_CST);
    int64_t b = __atomic_load_n(&d->bottom, __ATOMIC_SEQ_CST);
    return t >= b;
}

/** A deque of `capacity` (a power of two) slots; NULL when out of memory. */
fls_deque *fls_deque_create(int64_t capacity);
void fls_deque_destroy(fls_deque *d);

/* ---- Typed calls (signature.c) --------------------------------------------------------------- */

/** A parsed signature prepared for libffi. Immutable once made: shared by any threads. */
typedef struct fls_sig fls_sig;
/** Parses and prepares a signature; NULL with a message in `error` on failure. */
fls_sig *fls_sig_parse(const char *text, char *error, size_t error_len);
void fls_sig_free(fls_sig *sig);
size_t fls_sig_nargs(const fls_sig *sig);
/** Bytes of an argument tuple: the arguments as members of a C struct, in order. */
size_t fls_sig_tuple_size(const fls_sig *sig);
/** Bytes of the result (0 for void). */
size_t fls_sig_result_size(const fls_sig *sig);
/** Calls `fn` with the arguments in `tuple`; writes the result (if any) to `result`. */
void fls_sig_call(const fls_sig *sig, void (*fn)(void), const void *tuple, void *result);
/** Bytes of argument `index` (< fls_sig_nargs). */
size_t fls_sig_arg_size(const fls_sig *sig, size_t index);
/** Calls `fn` with one argument per blob: each blob holds exactly its argument's bytes (the
 *  value, as a C variable of that type holds it). Checks the count and every size first: on a
 *  mismatch nothing is called, a message goes to `error` and -1 is returned; else 0. */
int fls_sig_call_blobs(const fls_sig *sig, void (*fn)(void), const fl_blob *args, size_t nargs, void *result,
                       char *error, size_t error_len);

#endif /* FORKLIFT_SHIM_H */
