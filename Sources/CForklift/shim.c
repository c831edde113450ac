#define _GNU_SOURCE
#include "forklift_shim.h"

#include <errno.h>
#include <stdlib.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int fls_futex_wait(uint32_t *addr, uint32_t expected, int64_t timeout_ns) {
    struct timespec ts, *tsp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = (time_t)(timeout_ns / 1000000000);
        ts.tv_nsec = (long)(timeout_ns % 1000000000);
        tsp = &ts;
    }
    long r = syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, expected, tsp, NULL, 0);
    if (r == -1 && errno == ETIMEDOUT) return -1;
    return 0;
}

void fls_futex_wake(uint32_t *addr, int n) {
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

void fls_word_lock_contended(uint32_t *word) {
    /* Spin briefly: the holders of these locks keep them for a few instructions. */
    for (int i = 0; i < 100; i++) {
        fls_cpu_relax();
        uint32_t unlocked = 0;
        if (__atomic_load_n(word, __ATOMIC_RELAXED) == 0 &&
            __atomic_compare_exchange_n(word, &unlocked, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
            return;
        }
    }
    /* Then sleep, marking the word as waited on (2); whoever takes it this way leaves it at 2,
     * so its unlock wakes the next sleeper. */
    while (__atomic_exchange_n(word, 2, __ATOMIC_ACQUIRE) != 0) fls_futex_wait(word, 2, -1);
}

int64_t fls_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t fls_thread_id(void) {
    return (int64_t)syscall(SYS_gettid);
}

int fls_cpu_count(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

void fls_set_thread_name(const char *name) {
    char buf[16];
    strncpy(buf, name, sizeof buf - 1);
    buf[sizeof buf - 1] = 0;
    pthread_setname_np(pthread_self(), buf);
}

/* Threads started by fls_thread_start and not joined yet. */
static int live_threads;
int fls_forked_with_threads;

/* In the child of every fork() of this process (the program's or Forklift's own). */
static void note_fork_in_child(void) {
    if (__atomic_load_n(&live_threads, __ATOMIC_RELAXED) > 0) fls_forked_with_threads = 1;
}

__attribute__((constructor)) static void watch_forks(void) { pthread_atfork(NULL, NULL, note_fork_in_child); }

int fls_thread_start(void *(*fn)(void *), void *arg, uint64_t *out) {
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 8u << 20);
    /* Counted before the thread exists, so a fork meanwhile already counts it. */
    __atomic_add_fetch(&live_threads, 1, __ATOMIC_SEQ_CST);
    int r = pthread_create(&t, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    if (r == 0) *out = (uint64_t)t;
    else __atomic_sub_fetch(&live_threads, 1, __ATOMIC_SEQ_CST);
    return r;
}

int fls_thread_join(uint64_t thread) {
    int r = pthread_join((pthread_t)thread, NULL);
    if (r == 0) __atomic_sub_fetch(&live_threads, 1, __ATOMIC_SEQ_CST);
    return r;
}

uint64_t fls_thread_self(void) { return (uint64_t)pthread_self(); }

static _Thread_local char tls_message[FLS_MESSAGE_MAX + 1];
static _Thread_local fls_thread_state thread_state;

fls_thread_state *fls_tls_state(void) { return &thread_state; }

void *fls_tls_worker_process(void) { return thread_state.worker_process; }
void fls_tls_set_worker_process(void *process) { thread_state.worker_process = process; }

void *fls_tls_callback_thread(void) { return thread_state.callback_thread; }
void fls_tls_set_callback_thread(void *thread) { thread_state.callback_thread = thread; }

void fls_tls_set_message(const char *message) { fls_message_fit(tls_message, message); }

static int is_continuation(char byte) { return ((unsigned char)byte & 0xC0) == 0x80; }

void fls_message_fit(char *buffer, const char *message) {
    size_t n = strlen(message);
    if (n <= FLS_MESSAGE_MAX) {
        memcpy(buffer, message, n + 1);
        return;
    }
    static const char gap[] = " ... ";
    size_t room = FLS_MESSAGE_MAX - (sizeof gap - 1);
    size_t head = room / 4;
    while (head > 0 && is_continuation(message[head])) head--;
    size_t from = n - (room - room / 4);
    while (from < n && is_continuation(message[from])) from++;
    memcpy(buffer, message, head);
    memcpy(buffer + head, gap, sizeof gap - 1);
    memcpy(buffer + head + sizeof gap - 1, message + from, n - from + 1);
}

char *fls_message_dup(const char *message) {
    size_t n = strlen(message);
    char *copy = malloc((n > FLS_MESSAGE_MAX ? FLS_MESSAGE_MAX : n) + 1);
    if (copy) fls_message_fit(copy, message);
    return copy;
}
const char *fls_tls_message(void) { return tls_message; }
void *fls_tls_worker(void) { return thread_state.worker; }
void fls_tls_set_worker(void *worker) { thread_state.worker = worker; }
void *fls_tls_task_ctx(void) { return thread_state.task_ctx; }
void fls_tls_set_task_ctx(void *ctx) { thread_state.task_ctx = ctx; }

void *fls_tls_remote_task(void) { return thread_state.remote_task; }
void fls_tls_set_remote_task(void *task) { thread_state.remote_task = task; }
void *fls_tls_remote_outputs(void) { return thread_state.remote_outputs; }
void fls_tls_set_remote_outputs(void *outputs) { thread_state.remote_outputs = outputs; }

/* ---- Task node and block allocation ------------------------------------------------------ */

/* Two size classes of fixed-size blocks: task nodes (128 bytes, two cache lines) and small
 * blocks (fls_block_alloc: 64 bytes, one line). Each thread keeps a free list per class; a
 * thread that frees more than it allocates gathers batches and pushes them onto the class's
 * shared stack, and a thread whose list is empty takes the whole stack with one exchange, or
 * else carves a run of 64 blocks from its slab, mapped from the system (not malloc, so no
 * arena lock and no consolidation of malloc's bins when a slab is added), whose pages are
 * touched only as runs are carved. A thread's first slab of a class is 256 KiB; a thread that
 * uses it up gets slabs of 2 MiB. Both are ordinary pages, not transparent huge pages: in a
 * VM whose free memory goes back to the host, a huge page comes from exactly the free 2 MiB
 * blocks the host has taken back, and its first fault cost 1.2-4.2 ms here against 0.65-0.72
 * ms for the 512 ordinary pages it replaces (a 64 MiB first-touch test). W6p right after an
 * idle spell ran at 1.39-2.10 M calls/s with huge slabs and 2.09-2.85 M with ordinary ones
 * (six alternating runs each). A free block's first word links it. */

enum { SLAB_BYTES = 256 * 1024, LARGE_SLAB_BYTES = 2 * 1024 * 1024, CARVE_RUN = 64, LOCAL_MAX = 256, BATCH = 128 };

typedef struct free_block {
    struct free_block *next;
} free_block;

typedef struct {
    free_block *local; /* for allocation */
    size_t local_count;
    free_block *batch_head; /* being collected for the shared stack */
    free_block *batch_tail;
    size_t batch_count;
    char *carve; /* the rest of this thread's slab */
    char *carve_end;
    size_t slabs; /* slabs mapped so far */
} block_cache;

typedef struct {
    block_cache nodes;
    block_cache blocks;
    int registered;
} thread_caches;

/* Per class: batches of freed blocks, linked through `next`; each batch's last block links to
 * the next batch. */
static free_block *node_stack;
static free_block *block_stack;
static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static __thread thread_caches caches;

static void push_chain(free_block **stack, free_block *head, free_block *tail) {
    free_block *top = __atomic_load_n(stack, __ATOMIC_RELAXED);
    do {
        tail->next = top;
    } while (!__atomic_compare_exchange_n(stack, &top, head, 1, __ATOMIC_RELEASE, __ATOMIC_RELAXED));
}

/* Gives a leaving thread's blocks to the shared stack: its lists, and the blocks of its slab's
 * page in use that were not carved yet; the slab's untouched pages go back to the system. */
static void cache_flush(block_cache *cache, free_block **stack, size_t size) {
    if (cache->batch_head) push_chain(stack, cache->batch_head, cache->batch_tail);
    if (cache->local) {
        free_block *tail = cache->local;
        while (tail->next) tail = tail->next;
        push_chain(stack, cache->local, tail);
    }
    if (cache->carve != cache->carve_end) {
        uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
        char *cut = (char *)(((uintptr_t)cache->carve + page - 1) & ~(page - 1));
        if (cut < cache->carve_end) munmap(cut, (size_t)(cache->carve_end - cut));
        free_block *head = NULL, *tail = NULL;
        for (char *p = cache->carve; p + size <= cut && p < cache->carve_end; p += size) {
            free_block *block = (free_block *)p;
            block->next = head;
            head = block;
            if (!tail) tail = block;
        }
        if (head) push_chain(stack, head, tail);
    }
    memset(cache, 0, sizeof *cache);
}

/* At thread exit, the thread's blocks go back to the shared stacks. */
static void caches_exit(void *unused) {
    (void)unused;
    cache_flush(&caches.nodes, &node_stack, sizeof(fls_node));
    cache_flush(&caches.blocks, &block_stack, FLS_BLOCK_SIZE);
}

static void cache_key_init(void) { pthread_key_create(&cache_key, caches_exit); }

static void register_caches(void) {
    pthread_once(&cache_once, cache_key_init);
    pthread_setspecific(cache_key, &caches);
    caches.registered = 1;
}

/* A slab of `bytes` of fresh pages, NULL if out of memory. */
static char *map_slab(size_t bytes) {
    char *slab = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return slab == MAP_FAILED ? NULL : slab;
}

/* A block for a cache whose list is empty: the class's whole shared stack if it holds any
 * (recycled memory first: fresh pages cost a fault each), else one carved from the slab. */
static free_block *cache_refill(block_cache *cache, free_block **stack, size_t size) {
    if (!caches.registered) register_caches();
    if (__atomic_load_n(stack, __ATOMIC_RELAXED)) {
        free_block *chain = __atomic_exchange_n(stack, NULL, __ATOMIC_ACQUIRE);
        if (chain) {
            cache->local = chain->next;
            cache->local_count = LOCAL_MAX; /* unknown length: treat as full */
            return chain;
        }
    }
    if (cache->carve == cache->carve_end) {
        size_t bytes = cache->slabs == 0 ? SLAB_BYTES : LARGE_SLAB_BYTES;
        char *slab = map_slab(bytes);
        if (!slab) return NULL;
        cache->slabs++;
        cache->carve = slab;
        cache->carve_end = slab + bytes;
    }
    /* A run of CARVE_RUN blocks at once (the slab is a multiple of it): the first to return,
     * the others onto the list. */
    free_block *block = (free_block *)cache->carve;
    char *end = cache->carve + CARVE_RUN * size;
    for (char *p = cache->carve + size; p < end; p += size) ((free_block *)p)->next = p + size < end ? (free_block *)(p + size) : NULL;
    cache->local = (free_block *)(cache->carve + size);
    cache->local_count = CARVE_RUN - 1;
    cache->carve = end;
    return block;
}

static inline free_block *cache_take(block_cache *cache, free_block **stack, size_t size) {
    free_block *block = cache->local;
    if (!block) return cache_refill(cache, stack, size);
    cache->local = block->next;
    if (cache->local_count) cache->local_count--;
    return block;
}

static inline void cache_give(block_cache *cache, free_block **stack, void *raw) {
    if (!caches.registered) register_caches();
    free_block *block = raw;
    if (cache->local_count < LOCAL_MAX) {
        block->next = cache->local;
        cache->local = block;
        cache->local_count++;
        return;
    }
    block->next = cache->batch_head;
    cache->batch_head = block;
    if (!cache->batch_tail) cache->batch_tail = block;
    if (++cache->batch_count == BATCH) {
        push_chain(stack, cache->batch_head, cache->batch_tail);
        cache->batch_head = cache->batch_tail = NULL;
        cache->batch_count = 0;
    }
}

/* Under AddressSanitizer or ThreadSanitizer, nodes and blocks come from malloc and go back
 * with free: the sanitizers then know each one's lifetime, so a use after free is reported as
 * one (with where it was freed), and a block reused for something else cannot pass for a race
 * between its two lives. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define FLS_BLOCKS_FROM_MALLOC 1
#endif
#endif

#ifdef FLS_BLOCKS_FROM_MALLOC

fls_node *fls_node_alloc(void) {
    fls_node *node = aligned_alloc(64, sizeof(fls_node));
    if (node) memset(node, 0, offsetof(fls_node, inline_arg));
    return node;
}

void fls_node_free(fls_node *node) { free(node); }

void *fls_block_alloc(void) { return aligned_alloc(64, FLS_BLOCK_SIZE); }

void fls_block_free(void *block) { free(block); }

#else

fls_node *fls_node_alloc(void) {
    fls_node *node = (fls_node *)cache_take(&caches.nodes, &node_stack, sizeof(fls_node));
    if (!node) return NULL;
    /* A recycled node was last written by the worker that freed it: fetch the next one for
     * writing now, so that miss overlaps this submission instead of stalling the next. */
    if (caches.nodes.local) {
        fls_prefetch_for_write(caches.nodes.local);
        fls_prefetch_for_write((char *)caches.nodes.local + 64);
    }
    memset(node, 0, offsetof(fls_node, inline_arg));
    return node;
}

void fls_node_free(fls_node *node) { cache_give(&caches.nodes, &node_stack, node); }

void *fls_block_alloc(void) {
    void *block = cache_take(&caches.blocks, &block_stack, FLS_BLOCK_SIZE);
    if (block && caches.blocks.local) fls_prefetch_for_write(caches.blocks.local);
    return block;
}

void fls_block_free(void *block) { cache_give(&caches.blocks, &block_stack, block); }

#endif

/* ---- Work-stealing deque ----------------------------------------------------------------- */

fls_deque *fls_deque_create(int64_t capacity) {
    fls_deque *d = aligned_alloc(64, (sizeof(fls_deque) + 63) & ~(size_t)63); /* size: a multiple of 64 */
    if (!d) return NULL;
    memset(d, 0, sizeof *d);
    d->buffer = calloc((size_t)capacity, sizeof(fls_node *));
    if (!d->buffer) {
        free(d);
        return NULL;
    }
    d->mask = capacity - 1;
    return d;
}

void fls_deque_destroy(fls_deque *d) {
    free(d->buffer);
    free(d);
}
