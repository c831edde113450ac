#define _GNU_SOURCE
#include "forklift_shim.h"

#include <errno.h>
#include <stdlib.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <string.h>
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

int fls_thread_start(void *(*fn)(void *), void *arg, uint64_t *out) {
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 8u << 20);
    int r = pthread_create(&t, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    if (r == 0) *out = (uint64_t)t;
    return r;
}

int fls_thread_join(uint64_t thread) { return pthread_join((pthread_t)thread, NULL); }

uint64_t fls_thread_self(void) { return (uint64_t)pthread_self(); }

static _Thread_local char tls_message[1024];
static _Thread_local void *tls_worker;
static _Thread_local void *tls_ctx;
static _Thread_local void *tls_callback_thread;
static _Thread_local void *tls_worker_process;

void *fls_tls_worker_process(void) { return tls_worker_process; }
void fls_tls_set_worker_process(void *process) { tls_worker_process = process; }

void *fls_tls_callback_thread(void) { return tls_callback_thread; }
void fls_tls_set_callback_thread(void *thread) { tls_callback_thread = thread; }

void fls_tls_set_message(const char *message) {
    size_t n = strlen(message);
    if (n >= sizeof tls_message) n = sizeof tls_message - 1;
    memcpy(tls_message, message, n);
    tls_message[n] = 0;
}
const char *fls_tls_message(void) { return tls_message; }
void *fls_tls_worker(void) { return tls_worker; }
void fls_tls_set_worker(void *worker) { tls_worker = worker; }
void *fls_tls_task_ctx(void) { return tls_ctx; }
void fls_tls_set_task_ctx(void *ctx) { tls_ctx = ctx; }

static __thread void *tls_remote_outputs;
static __thread void *tls_remote_task;
void *fls_tls_remote_task(void) { return tls_remote_task; }
void fls_tls_set_remote_task(void *task) { tls_remote_task = task; }
void *fls_tls_remote_outputs(void) { return tls_remote_outputs; }
void fls_tls_set_remote_outputs(void *outputs) { tls_remote_outputs = outputs; }

/* ---- Task node allocation ---------------------------------------------------------------- */

enum { NODE_SLAB = 64, NODE_LOCAL_MAX = 256, NODE_BATCH = 128 };

/* Batches of freed nodes, linked through `next`; each batch's last node links to the next batch. */
static fls_node *node_stack;
static pthread_key_t node_key;
static pthread_once_t node_once = PTHREAD_ONCE_INIT;

typedef struct {
    fls_node *local; /* for allocation */
    size_t local_count;
    fls_node *batch_head; /* being collected for the shared stack */
    fls_node *batch_tail;
    size_t batch_count;
    int registered;
} node_cache;

static __thread node_cache cache;

static void push_chain(fls_node *head, fls_node *tail) {
    fls_node *top = __atomic_load_n(&node_stack, __ATOMIC_RELAXED);
    do {
        tail->next = top;
    } while (!__atomic_compare_exchange_n(&node_stack, &top, head, 1, __ATOMIC_RELEASE, __ATOMIC_RELAXED));
}

/* At thread exit, the thread's nodes go back to the shared stack. */
static void node_cache_exit(void *unused) {
    (void)unused;
    if (cache.batch_head) push_chain(cache.batch_head, cache.batch_tail);
    if (cache.local) {
        fls_node *tail = cache.local;
        while (tail->next) tail = tail->next;
        push_chain(cache.local, tail);
    }
    cache.local = cache.batch_head = cache.batch_tail = NULL;
    cache.local_count = cache.batch_count = 0;
}

static void node_key_init(void) { pthread_key_create(&node_key, node_cache_exit); }

static void register_cache(void) {
    pthread_once(&node_once, node_key_init);
    pthread_setspecific(node_key, &cache);
    cache.registered = 1;
}

fls_node *fls_node_alloc(void) {
    fls_node *node = cache.local;
    if (!node) {
        if (!cache.registered) register_cache();
        node = __atomic_exchange_n(&node_stack, NULL, __ATOMIC_ACQUIRE);
        cache.local_count = NODE_LOCAL_MAX; /* unknown length: treat as full */
        if (!node) {
            /* Line-aligned, so each node spans exactly two cache lines. */
            fls_node *slab = aligned_alloc(64, sizeof(fls_node) * NODE_SLAB);
            if (!slab) return NULL;
            for (int i = 0; i < NODE_SLAB - 1; i++) slab[i].next = &slab[i + 1];
            slab[NODE_SLAB - 1].next = NULL;
            node = slab;
            cache.local_count = NODE_SLAB;
        }
    }
    fls_node *next = node->next;
    cache.local = next;
    if (cache.local_count) cache.local_count--;
    /* A recycled node was last written by the worker that freed it: fetch the next one for
     * writing now, so that miss overlaps this submission instead of stalling the next. */
    if (next) {
        fls_prefetch_for_write(next);
        fls_prefetch_for_write((char *)next + 64);
    }
    memset(node, 0, offsetof(fls_node, inline_arg));
    return node;
}

void fls_node_free(fls_node *node) {
    if (!cache.registered) register_cache();
    if (cache.local_count < NODE_LOCAL_MAX) {
        node->next = cache.local;
        cache.local = node;
        cache.local_count++;
        return;
    }
    node->next = cache.batch_head;
    cache.batch_head = node;
    if (!cache.batch_tail) cache.batch_tail = node;
    if (++cache.batch_count == NODE_BATCH) {
        push_chain(cache.batch_head, cache.batch_tail);
        cache.batch_head = cache.batch_tail = NULL;
        cache.batch_count = 0;
    }
}

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
