/*
 * Worker processes of a process-backed pool: the parent's side (open, spawn, send, wait,
 * reap) and the child's whole life (serve requests until told to exit). See forklift_worker.h.
 *
 * The child is forked from a multithreaded process, so until it calls the user's initializer
 * or task it runs only the code in this file, which uses nothing but system calls, memcpy and
 * (for typed calls) libffi. It ends with _exit, never returning into the frames it was forked in.
 */
#define _GNU_SOURCE
#include "forklift_worker.h"
#include "forklift_shim.h"
#include "forklift_fdpass.h"
#include "forklift_spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <linux/kcmp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

static size_t header_size(void) { return (sizeof(fls_mailbox) + 4095) & ~(size_t)4095; }

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void futex_wait_shared(uint32_t *word, uint32_t expected) {
    syscall(SYS_futex, word, FUTEX_WAIT, expected, NULL, NULL, 0);
}

static void futex_wake_shared(uint32_t *word) {
    syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0);
}

static uint32_t load(const uint32_t *word) { return __atomic_load_n(word, __ATOMIC_SEQ_CST); }
static void store(uint32_t *word, uint32_t value) { __atomic_store_n(word, value, __ATOMIC_SEQ_CST); }

const char *fls_signal_name(int signal) {
    switch (signal) {
    case SIGSEGV: return "SIGSEGV";
    case SIGBUS: return "SIGBUS";
    case SIGILL: return "SIGILL";
    case SIGFPE: return "SIGFPE";
    case SIGABRT: return "SIGABRT";
    case SIGKILL: return "SIGKILL";
    case SIGTERM: return "SIGTERM";
    case SIGINT: return "SIGINT";
    case SIGTRAP: return "SIGTRAP";
    case SIGSYS: return "SIGSYS";
    case SIGPIPE: return "SIGPIPE";
    case SIGHUP: return "SIGHUP";
    case SIGQUIT: return "SIGQUIT";
    case SIGUSR1: return "SIGUSR1";
    case SIGUSR2: return "SIGUSR2";
    case SIGXCPU: return "SIGXCPU";
    default: return "signal";
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Shared memory between processes                                                            */
/* ------------------------------------------------------------------------------------------ */

void *fls_map_fd(int fd, size_t len) {
    void *map = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    return map == MAP_FAILED ? NULL : map;
}

int fls_open_peer_fd(pid_t pid, int fd) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)pid, fd);
    return open(path, O_RDONLY | O_CLOEXEC);
}

void *fls_map_peer_fd(pid_t pid, int fd, size_t len) {
    int local = fls_open_peer_fd(pid, fd);
    if (local < 0) return NULL;
    void *map = fls_map_fd(local, len);
    close(local);
    return map;
}

/* Writes `len` bytes of `data` at `offset` of `fd`; 0, or -1 with errno. */
static int write_all_at(int fd, const void *data, size_t len, size_t offset) {
    size_t done = 0;
    while (done < len) {
        ssize_t n = pwrite(fd, (const char *)data + done, len - done, (off_t)(offset + done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        done += (size_t)n;
    }
    return 0;
}

int fls_memfd_write_head(int fd, size_t size, const void *head, size_t head_len, size_t data_offset,
                         const void *data, size_t len) {
    if (data_offset + len > size && ftruncate(fd, (off_t)(data_offset + len)) != 0) return -1;
    /* write() fills the pages in the kernel: much faster than faulting in a fresh mapping. */
    if (head && write_all_at(fd, head, head_len, 0) != 0) return -1;
    if (data && write_all_at(fd, data, len, data_offset) != 0) return -1;
    return 0;
}

int fls_memfd_with_head(const void *head, size_t head_len, size_t data_offset, const void *data, size_t len,
                        const char *name) {
    int fd = memfd_create(name, MFD_CLOEXEC);
    if (fd < 0) return -1;
    if (fls_memfd_write_head(fd, 0, head, head_len, data_offset, data, len) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int fls_memfd_with(const void *data, size_t len, const char *name) {
    return fls_memfd_with_head(NULL, 0, 0, data, len, name);
}

void *fls_shared_alloc(size_t len, int *fd) {
    *fd = memfd_create("forklift-object", MFD_CLOEXEC);
    if (*fd < 0) return NULL;
    void *map = MAP_FAILED;
    if (ftruncate(*fd, (off_t)len) == 0) map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
    if (map == MAP_FAILED) {
        close(*fd);
        *fd = -1;
        return NULL;
    }
    return map;
}

void *fls_spill_alloc(const char *dir, size_t len, int *fd) {
    *fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (*fd < 0) {
        size_t n = strlen(dir) + sizeof "/forklift-spill-XXXXXX";
        char *path = malloc(n);
        if (!path) return NULL;
        snprintf(path, n, "%s/forklift-spill-XXXXXX", dir);
        *fd = mkostemp(path, O_CLOEXEC);
        if (*fd >= 0) unlink(path);
        free(path);
        if (*fd < 0) return NULL;
    }
    int error = posix_fallocate(*fd, 0, (off_t)len);
    void *map = MAP_FAILED;
    if (error == 0) {
        map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
        if (map == MAP_FAILED) error = errno;
    }
    if (map == MAP_FAILED) {
        close(*fd);
        *fd = -1;
        errno = error;
        return NULL;
    }
    return map;
}

int fls_spill_directory_check(const char *path) {
    struct stat info;
    if (stat(path, &info) != 0) return errno;
    if (!S_ISDIR(info.st_mode)) return ENOTDIR;
    return access(path, W_OK | X_OK) == 0 ? 0 : errno;
}

/* ------------------------------------------------------------------------------------------ */
/* The parent's side                                                                          */
/* ------------------------------------------------------------------------------------------ */

int fls_worker_open(fls_worker *worker, uint32_t slots, size_t capacity) {
    memset(worker, 0, sizeof *worker);
    worker->event_fd = worker->pid_fd = worker->mailbox_fd = -1;
    worker->result_socket[0] = worker->result_socket[1] = -1;
    if (slots == 0 || slots > FLS_MAX_SLOTS || (slots & (slots - 1))) return EINVAL;
    worker->map_len = header_size() + 2 * (size_t)slots * capacity;
    int fd = memfd_create("forklift-mailbox", MFD_CLOEXEC);
    if (fd < 0) return errno;
    if (ftruncate(fd, (off_t)worker->map_len) != 0) {
        int error = errno;
        close(fd);
        return error;
    }
    void *map = mmap(NULL, worker->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int error = errno;
    if (map == MAP_FAILED) {
        close(fd);
        return error;
    }
    worker->mailbox = map;
    worker->mailbox_fd = fd; /* forked children inherit the mapping; spawned ones map this fd */
    worker->mailbox->capacity = capacity;
    worker->mailbox->slots = slots;
    if (slots > 1 && socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, worker->result_socket) != 0) {
        worker->result_socket[0] = worker->result_socket[1] = -1;
    }
    worker->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (worker->event_fd < 0) {
        error = errno;
        munmap(map, worker->map_len);
        close(fd);
        worker->mailbox = NULL;
        worker->mailbox_fd = -1;
        return error;
    }
    return 0;
}

void fls_worker_close(fls_worker *worker) {
    if (worker->mailbox) munmap(worker->mailbox, worker->map_len);
    if (worker->event_fd >= 0) close(worker->event_fd);
    if (worker->pid_fd >= 0) close(worker->pid_fd);
    if (worker->mailbox_fd >= 0) close(worker->mailbox_fd);
    for (int i = 0; i < 2; i++) {
        if (worker->result_socket[i] >= 0) close(worker->result_socket[i]);
    }
    memset(worker, 0, sizeof *worker);
    worker->event_fd = worker->pid_fd = worker->mailbox_fd = -1;
    worker->result_socket[0] = worker->result_socket[1] = -1;
}

static uint32_t slot_of(const fls_mailbox *mb, uint32_t seq) {
    return __atomic_load_n(&mb->order[(seq - 1) & (mb->slots - 1)], __ATOMIC_RELAXED) & (mb->slots - 1);
}

fls_request *fls_worker_request(fls_worker *worker, uint32_t slot) { return &worker->mailbox->requests[slot]; }

void *fls_worker_arg_area(fls_worker *worker, uint32_t slot) {
    fls_mailbox *mb = worker->mailbox;
    return (char *)mb + header_size() + 2 * (size_t)slot * mb->capacity;
}

void *fls_worker_result_area(fls_worker *worker, uint32_t slot) {
    return (char *)fls_worker_arg_area(worker, slot) + worker->mailbox->capacity;
}

void fls_worker_assign(fls_worker *worker, uint32_t seq, uint32_t slot) {
    fls_mailbox *mb = worker->mailbox;
    __atomic_store_n(&mb->order[(seq - 1) & (mb->slots - 1)], slot, __ATOMIC_RELAXED);
}

uint32_t fls_worker_slot_of(fls_worker *worker, uint32_t seq) { return slot_of(worker->mailbox, seq); }

static void drain_event_fd(int fd) {
    uint64_t value;
    while (read(fd, &value, sizeof value) == (ssize_t)sizeof value) {
    }
}

void fls_worker_prepare(fls_worker *worker, uint32_t resume) {
    fls_mailbox *mb = worker->mailbox;
    mb->response_seq = resume;
    mb->started_seq = resume;
    mb->child_sleeps = 0;
    mb->proxy_sleeps = 0;
    mb->wake_lost = 0;
    mb->init_state = FLS_INIT_PENDING;
    mb->init_code = 0;
    mb->tasks_run = 0;
    mb->proxy_pid = (int32_t)getpid();
    drain_event_fd(worker->event_fd);
}

int fls_worker_spawn(fls_worker *worker, const fls_worker_init *init) {
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) return errno;
    if (pid == 0) fls_worker_child_main(worker, init, parent);
    worker->pid = pid;
    worker->pid_fd = (int)syscall(SYS_pidfd_open, pid, 0);
    return 0;
}

void fls_worker_send(fls_worker *worker) {
    fls_mailbox *mb = worker->mailbox;
    store(&mb->request_seq, mb->request_seq + 1);
    if (load(&mb->child_sleeps)) futex_wake_shared(&mb->request_seq);
}

/* Whether the child has died (without reaping it). */
static int child_is_dead(fls_worker *worker) {
    if (worker->pid_fd >= 0) {
        struct pollfd fd = {worker->pid_fd, POLLIN, 0};
        return poll(&fd, 1, 0) > 0;
    }
    siginfo_t info;
    memset(&info, 0, sizeof info);
    if (waitid(P_PID, (id_t)worker->pid, &info, WEXITED | WNOHANG | WNOWAIT) != 0) return errno == ECHILD;
    return info.si_pid == worker->pid;
}

void fls_worker_interrupt(fls_worker *worker) {
    uint64_t one = 1;
    (void)!write(worker->event_fd, &one, sizeof one);
}

/* In the child: a second descriptor of the event fd, taken when the child started, and the
 * event fd's device and inode then, so a descriptor a task opened under the event fd's number
 * after closing it is not written to. */
static int event_fd_copy = -1;
static dev_t event_fd_dev;
static ino_t event_fd_ino;
static pid_t child_pid; /* for kcmp, without a getpid call per wake-up */

static void remember_event_fd(int fd) {
    child_pid = getpid();
    event_fd_copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    struct stat st;
    if (fstat(fd, &st) == 0) {
        event_fd_dev = st.st_dev;
        event_fd_ino = st.st_ino;
    }
}

/* Whether the child's event fd is still the one it started with. kcmp tells whether the
 * number and the copy name the same open file (the copy may be gone or replaced too: then
 * they differ, or kcmp fails); where kcmp is not available, the device and inode must match
 * (which tells a file, pipe or socket from it, but not another anonymous-inode descriptor
 * such as a task's own eventfd). */
static int event_fd_is_intact(int fd) {
    long same = syscall(SYS_kcmp, child_pid, child_pid, KCMP_FILE, fd, event_fd_copy);
    if (same >= 0) return same == 0;
    if (errno != ENOSYS && errno != EPERM) return 0;
    struct stat st;
    return fstat(fd, &st) == 0 && st.st_dev == event_fd_dev && st.st_ino == event_fd_ino;
}

/* In the child: wakes the sleeping proxy through the event fd; if the task closed it (or put
 * another descriptor in its place), says so in the mailbox instead (the proxy then looks at
 * it often). */
static void wake_proxy(fls_worker *worker) {
    uint64_t one = 1;
    if (!event_fd_is_intact(worker->event_fd) || (write(worker->event_fd, &one, sizeof one) < 0 && errno != EAGAIN))
        store(&worker->mailbox->wake_lost, 1);
}

/* Whether sequence number `mark` has reached `seq` (wrapping order). */
static int reached(uint32_t mark, uint32_t seq) { return (int32_t)(mark - seq) >= 0; }

/* Waits until `ready(word, value)`: the core of fls_worker_wait and fls_worker_await. */
static int wait_for(fls_worker *worker, const uint32_t *word, uint32_t value, int until_reached, uint32_t wake_at,
                    int64_t deadline_ns, int spins, const uint32_t *interrupt) {
    fls_mailbox *mb = worker->mailbox;
#define READY(w) (until_reached ? reached((w), value) : (w) != value)
    for (int i = 0; i < spins; i++) {
        if (READY(__atomic_load_n(word, __ATOMIC_ACQUIRE))) return FLS_WAIT_READY;
        fls_cpu_relax();
    }
    for (;;) {
        store(&mb->proxy_wake_at, wake_at);
        store(&mb->proxy_sleeps, 1);
        if (READY(load(word))) {
            store(&mb->proxy_sleeps, 0);
            return FLS_WAIT_READY;
        }
        int timeout_ms = -1;
        if (deadline_ns >= 0) {
            int64_t left = deadline_ns - now_ns();
            timeout_ms = left <= 0 ? 0 : (int)((left + 999999) / 1000000);
        }
        /* Without pidfds, look for a dead child every 20 ms. A child whose task closed its
         * descriptors (as daemonizing code does) cannot write the event fd: look every 5 ms
         * once it said so, and every 250 ms always, so a lost wake-up delays an answer but
         * never holds it. */
        int most_ms = load(&mb->wake_lost) ? 5 : worker->pid_fd < 0 ? 20 : 250;
        if (timeout_ms < 0 || timeout_ms > most_ms) timeout_ms = most_ms;
        struct pollfd fds[2] = {{worker->event_fd, POLLIN, 0}, {worker->pid_fd, POLLIN, 0}};
        int ready = poll(fds, worker->pid_fd >= 0 ? 2 : 1, timeout_ms);
        store(&mb->proxy_sleeps, 0);
        drain_event_fd(worker->event_fd);
        if (READY(load(word))) return FLS_WAIT_READY;
        if ((ready > 0 && (fds[1].revents & POLLIN)) || child_is_dead(worker)) {
            /* The child may have answered just before it died. */
            return READY(load(word)) ? FLS_WAIT_READY : FLS_WAIT_DIED;
        }
        if (interrupt && __atomic_load_n(interrupt, __ATOMIC_ACQUIRE)) return FLS_WAIT_INTERRUPTED;
        if (deadline_ns >= 0 && now_ns() >= deadline_ns) return FLS_WAIT_TIMEOUT;
    }
#undef READY
}

int fls_worker_wait(fls_worker *worker, const uint32_t *word, uint32_t seen, int64_t deadline_ns, int spins,
                    const uint32_t *interrupt) {
    return wait_for(worker, word, seen, 0, 0, deadline_ns, spins, interrupt);
}

int fls_worker_await(fls_worker *worker, uint32_t seq, int64_t deadline_ns, int spins, const uint32_t *interrupt) {
    return wait_for(worker, &worker->mailbox->response_seq, seq, 1, seq, deadline_ns, spins, interrupt);
}

int fls_process_try_reap(pid_t pid, int *end) {
    int status = 0;
    pid_t got;
    do {
        got = waitpid(pid, &status, WNOHANG);
    } while (got < 0 && errno == EINTR);
    if (got == 0) return 0;
    if (got < 0) return -1;
    *end = WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? -WTERMSIG(status) : -SIGKILL;
    return 1;
}

void fls_wait_readable(int fd, int64_t deadline_ns) {
    int timeout_ms = -1;
    if (deadline_ns >= 0) {
        int64_t left = deadline_ns - now_ns();
        if (left <= 0) return;
        timeout_ms = (int)((left + 999999) / 1000000);
    }
    if (fd < 0) {
        usleep(timeout_ms < 0 || timeout_ms > 10 ? 10000 : (useconds_t)timeout_ms * 1000);
        return;
    }
    struct pollfd p = {fd, POLLIN, 0};
    poll(&p, 1, timeout_ms);
}

void fls_worker_signal(fls_worker *worker, int signal) {
    if (worker->pid > 0) kill(worker->pid, signal);
}

int fls_worker_reap(fls_worker *worker) {
    int result = FL_EXIT_UNKNOWN; /* ECHILD below: reaped elsewhere (SIGCHLD ignored, waitpid(-1)) */
    if (worker->pid > 0) {
        int status = 0;
        pid_t got;
        do {
            got = waitpid(worker->pid, &status, 0);
        } while (got < 0 && errno == EINTR);
        if (got == worker->pid) {
            if (WIFEXITED(status)) result = WEXITSTATUS(status);
            else if (WIFSIGNALED(status)) result = -WTERMSIG(status);
        }
    }
    if (worker->pid_fd >= 0) close(worker->pid_fd);
    worker->pid_fd = -1;
    worker->pid = 0;
    return result;
}

int fls_worker_stop(fls_worker *worker, int64_t grace_ns) {
    if (worker->pid <= 0) return 0;
    uint32_t seq = worker->mailbox->request_seq + 1;
    fls_worker_assign(worker, seq, 0);
    fls_worker_request(worker, 0)->kind = FLS_REQ_EXIT;
    fls_worker_send(worker);
    int64_t deadline = now_ns() + grace_ns;
    while (!child_is_dead(worker)) {
        if (now_ns() >= deadline) {
            kill(worker->pid, SIGKILL);
            break;
        }
        if (worker->pid_fd >= 0) {
            struct pollfd fd = {worker->pid_fd, POLLIN, 0};
            poll(&fd, 1, 10);
        } else {
            usleep(1000);
        }
    }
    return fls_worker_reap(worker);
}

/* ------------------------------------------------------------------------------------------ */
/* The child                                                                                  */
/* ------------------------------------------------------------------------------------------ */

#define CHILD_CTX_MAGIC 0x464c4b43544b5831ull

/* The running task's context in a worker process (one task at a time: the child is
 * single-threaded unless the user's code starts threads). */
typedef struct child_ctx {
    uint64_t magic;
    fls_mailbox *mailbox;
    fls_request *request; /* the slot of the running request */
    void *result_area;
    int failed;
    void *result_map; /* a mapping of result_fd, for fl_task_result_buffer */
    size_t result_map_len;
} child_ctx;

static child_ctx *current_ctx;
static int in_worker;
/* Per slot, the result memfd of the last request there, kept open until the proxy has read
 * it (that is, until the slot is used again). */
static int pending_result_fd[FLS_MAX_SLOTS]; /* -1: none; set at the child's start */

int fls_call_restriction(void) { return in_worker ? 1 : fls_forked_with_threads ? 2 : 0; }

int fls_child_ctx_is_current(const void *ctx) {
    return in_worker && ctx != NULL && ctx == (const void *)current_ctx && current_ctx->magic == CHILD_CTX_MAGIC;
}

static void drop_result(child_ctx *ctx) {
    fls_request *rq = ctx->request;
    if (ctx->result_map) munmap(ctx->result_map, ctx->result_map_len);
    ctx->result_map = NULL;
    ctx->result_map_len = 0;
    if (rq->result_fd >= 0) close(rq->result_fd);
    rq->result_fd = -1;
    rq->result_len = 0;
}

int fls_child_task_result_buffer(const void *raw, size_t len, void **buffer) {
    child_ctx *ctx = (child_ctx *)raw;
    fls_mailbox *mb = ctx->mailbox;
    fls_request *rq = ctx->request;
    drop_result(ctx);
    *buffer = NULL;
    if (len > mb->capacity && rq->kind == FLS_REQ_TASK_EXIT) {
        snprintf(rq->message, sizeof rq->message, "a process result is limited to %llu bytes; this one has %zu",
                 (unsigned long long)mb->capacity, len);
        fls_tls_set_message(rq->message); /* the child's fl_last_error() */
        return FL_ERANGE;
    }
    if (len <= mb->capacity) {
        rq->result_len = len;
        *buffer = ctx->result_area;
        return FL_OK;
    }
    int fd = fls_memfd_with(NULL, len, "forklift-result");
    void *map = fd < 0 ? MAP_FAILED : mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        if (fd >= 0) close(fd);
        char message[96];
        snprintf(message, sizeof message, "no memory for a result of %zu bytes", len);
        fls_tls_set_message(message);
        return FL_ENOMEM;
    }
    ctx->result_map = map;
    ctx->result_map_len = len;
    rq->result_fd = fd;
    rq->result_len = len;
    *buffer = map;
    return FL_OK;
}

int fls_child_task_return(const void *raw, const void *data, size_t len) {
    /* As the thread backend checks them (Check.bytes), with the same messages. */
    if (data == NULL && len != 0) {
        char message[80];
        snprintf(message, sizeof message, "data is NULL but its length is %zu", len);
        fls_tls_set_message(message);
        return FL_EINVAL;
    }
    if (len > (size_t)PTRDIFF_MAX) {
        fls_tls_set_message("data length is impossible");
        return FL_EINVAL;
    }
    void *buffer = NULL;
    int status = fls_child_task_result_buffer(raw, len, &buffer);
    if (status == FL_OK && len > 0) memcpy(buffer, data, len);
    return status;
}

int fls_child_task_fail(const void *raw, int code, const char *message) {
    child_ctx *ctx = (child_ctx *)raw;
    fls_request *rq = ctx->request;
    drop_result(ctx);
    ctx->failed = 1;
    rq->status = FL_ETASK;
    rq->code = code;
    snprintf(rq->message, sizeof rq->message, "%s", message ? message : "task failed");
    return code;
}

uint64_t fls_child_task_index(const void *raw) { return ((const child_ctx *)raw)->request->index; }

int fls_child_task_cancelled(const void *raw) {
    const child_ctx *ctx = (const child_ctx *)raw;
    return __atomic_load_n(&ctx->mailbox->cancelled, __ATOMIC_ACQUIRE) != 0
        || __atomic_load_n(&ctx->request->cancel_requested, __ATOMIC_ACQUIRE) != 0;
}

/* Parsed signatures of typed calls, by text: a worker parses each signature once. */
#define SIGNATURE_CACHE 16
static struct {
    char *text;
    fls_sig *sig;
} signature_cache[SIGNATURE_CACHE];
static unsigned signature_next;

fls_sig *fls_child_signature(const char *text, char *error, size_t error_len) {
    for (unsigned i = 0; i < SIGNATURE_CACHE; i++) {
        if (signature_cache[i].text && strcmp(signature_cache[i].text, text) == 0) return signature_cache[i].sig;
    }
    fls_sig *sig = fls_sig_parse(text, error, error_len);
    if (!sig) return NULL;
    unsigned slot = signature_next++ % SIGNATURE_CACHE;
    if (signature_cache[slot].sig) {
        fls_sig_free(signature_cache[slot].sig);
        free(signature_cache[slot].text);
    }
    signature_cache[slot].text = strdup(text);
    signature_cache[slot].sig = sig;
    return sig;
}

/* The mapping (read-only, the whole file) of the parent's memfd that carried the last large
 * argument, if it is small enough for the parent to keep (FLS_KEPT_ARGUMENT_BYTES): the parent
 * writes the next large argument into that same file, which is then read through this mapping
 * without mapping it again (the page faults of a new mapping cost more than reading it). A
 * file is known by its device and inode: while mapped here it cannot be freed, so its inode is
 * not reused. */
static struct {
    dev_t device;
    ino_t inode;
    void *map;
    size_t len;
} kept_argument;

/* Maps the parent's argument file `fd` for `len` bytes: the kept mapping if that is the file,
 * else a new mapping, which is kept in its place when the file is small enough (`*temporary`
 * is then 0) and otherwise unmapped by the caller after the request (`*temporary` 1). */
static void *map_argument(pid_t parent, int fd, size_t len, int *temporary) {
    *temporary = 1;
    int local = fls_open_peer_fd(parent, fd);
    if (local < 0) return NULL;
    struct stat info;
    if (fstat(local, &info) != 0 || (size_t)info.st_size < len) {
        close(local);
        return NULL;
    }
    size_t size = (size_t)info.st_size;
    if (kept_argument.map && kept_argument.device == info.st_dev && kept_argument.inode == info.st_ino &&
        kept_argument.len >= len) {
        close(local);
        *temporary = 0;
        return kept_argument.map;
    }
    int keep = size <= FLS_KEPT_ARGUMENT_BYTES;
    void *map = fls_map_fd(local, keep ? size : len);
    close(local);
    if (!map || !keep) return map;
    if (kept_argument.map) munmap(kept_argument.map, kept_argument.len);
    kept_argument.device = info.st_dev;
    kept_argument.inode = info.st_ino;
    kept_argument.map = map;
    kept_argument.len = size;
    *temporary = 0;
    return map;
}

static void run_request(fls_worker *worker, uint32_t slot, child_ctx *ctx) {
    fls_mailbox *mb = worker->mailbox;
    fls_request *rq = ctx->request;
    const void *arg = fls_worker_arg_area(worker, slot);
    void *arg_map = NULL;
    if (rq->arg_fd >= 0) {
        int temporary = 1;
        void *map = map_argument((pid_t)mb->proxy_pid, rq->arg_fd, rq->arg_len, &temporary);
        if (!map) {
            fls_child_task_fail(ctx, FL_ESYSTEM, "the worker could not map its argument from the parent");
            return;
        }
        arg = map;
        if (temporary) arg_map = map;
    }
    size_t arg_len = (size_t)rq->arg_len;
    fl_task_fn fn = rq->fn;
    if (rq->name_len > 0) {
        /* A spawned child: find the function by the name the parent gave. */
        const char *path = arg;
        const char *symbol = path + strlen(path) + 1;
        size_t skip = (rq->name_len + 15) & ~(size_t)15;
        char error[FLS_MAILBOX_MESSAGE];
        fn = (fl_task_fn)fls_function_resolve(path, symbol, error, sizeof error);
        arg = (const char *)arg + skip;
        arg_len -= skip;
        if (!fn) {
            fls_child_task_fail(ctx, 127, error); /* exit code 127, as a shell's "not found" */
            if (arg_map) munmap(arg_map, rq->arg_len);
            return;
        }
    }
    if (rq->kind == FLS_REQ_TYPED) {
        const char *text = arg;
        const char *tuple = (const char *)arg + ((rq->signature_len + 15) & ~15u);
        char error[256];
        fls_sig *sig = fls_child_signature(text, error, sizeof error);
        if (!sig) {
            fls_child_task_fail(ctx, FL_EINVAL, error);
        } else {
            void *result = NULL;
            size_t size = fls_sig_result_size(sig);
            if (fls_child_task_result_buffer(ctx, size, &result) != FL_OK) {
                fls_child_task_fail(ctx, FL_ENOMEM, "no memory for a typed result");
            } else {
                fls_sig_call(sig, rq->typed_fn, tuple, size > 0 ? result : NULL);
            }
        }
    } else {
        current_ctx = ctx;
        int returned = fn(rq->user, arg, arg_len, (fl_task_ctx)ctx);
        current_ctx = NULL;
        if (!ctx->failed && returned != 0) {
            drop_result(ctx);
            rq->status = FL_ETASK;
            rq->code = returned;
            snprintf(rq->message, sizeof rq->message, "task returned %d", returned);
        }
    }
    if (arg_map) munmap(arg_map, rq->arg_len);
}

static void reset_signals(void) {
    static const int fatal[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP, SIGSYS, SIGTERM, SIGINT, SIGQUIT};
    /* A crash handler inherited from the host (or a runtime's backtracer) must not delay the
     * worker's death: the parent notices a death at once and replaces the worker. */
    for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++) signal(fatal[i], SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* Writing a core file of a large host would delay the replacement by seconds. */
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
}

int fls_worker_take_result_fd(fls_worker *worker, uint32_t *seq) {
    if (worker->result_socket[0] < 0) return -1;
    struct iovec iov = {seq, sizeof *seq};
    int fd = -1;
    if (fls_recv_fds(worker->result_socket[0], &iov, 1, &fd, 1, MSG_DONTWAIT) != (ssize_t)sizeof *seq && fd >= 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* The descriptors of the argument files this process keeps (each stored plus one; 0: a free
 * entry). A child forked from this process closes its copies at once: a kept file would
 * otherwise stay open, with its memory, in every process forked while it is kept, for as long
 * as that process lives. With every entry taken a file is not listed: a forked child then
 * holds it too (a leak, not an error). */
#define KEPT_FILE_ENTRIES 256
static int kept_files[KEPT_FILE_ENTRIES];

void fls_kept_file_add(int fd) {
    for (int i = 0; i < KEPT_FILE_ENTRIES; i++) {
        if (__atomic_load_n(&kept_files[i], __ATOMIC_RELAXED) == fd + 1) return; /* listed already */
    }
    for (int i = 0; i < KEPT_FILE_ENTRIES; i++) {
        int expected = 0;
        if (__atomic_compare_exchange_n(&kept_files[i], &expected, fd + 1, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED)) return;
    }
}

void fls_kept_file_remove(int fd) {
    for (int i = 0; i < KEPT_FILE_ENTRIES; i++) {
        int expected = fd + 1;
        if (__atomic_compare_exchange_n(&kept_files[i], &expected, 0, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED)) return;
    }
}

static void close_kept_files(void) {
    for (int i = 0; i < KEPT_FILE_ENTRIES; i++) {
        int entry = __atomic_load_n(&kept_files[i], __ATOMIC_ACQUIRE);
        if (entry) {
            close(entry - 1);
            kept_files[i] = 0;
        }
    }
}

_Noreturn void fls_worker_child_main(fls_worker *worker, const fls_worker_init *init, pid_t parent) {
    in_worker = 1;
    remember_event_fd(worker->event_fd);
    close_kept_files();
    fls_mailbox *mb = worker->mailbox;
    if (init->death_signal) {
        prctl(PR_SET_PDEATHSIG, init->death_signal);
        if (getppid() != parent) _exit(127);
    }
    reset_signals();

    int init_code = 0;
    if (init->fn) init_code = init->fn(init->user, init->args, init->args_len);
    mb->init_code = init_code;
    store(&mb->init_state, init_code == 0 ? FLS_INIT_OK : FLS_INIT_FAILED);
    if (load(&mb->proxy_sleeps)) wake_proxy(worker);
    if (init_code != 0) _exit(0);

    for (int i = 0; i < FLS_MAX_SLOTS; i++) pending_result_fd[i] = -1;
    child_ctx ctx = {CHILD_CTX_MAGIC, mb, NULL, NULL, 0, NULL, 0};
    uint32_t seen = load(&mb->response_seq); /* a replacement resumes where its predecessor ended */
    pid_t self = getpid();
    for (;;) {
        /* Wait for the next request. No spinning: the proxy needs the CPU to read the response
         * and complete the task, and a spinning child measurably slows both round trips and
         * throughput when workers and proxies share few CPUs. */
        while (__atomic_load_n(&mb->request_seq, __ATOMIC_ACQUIRE) == seen) {
            store(&mb->child_sleeps, 1);
            if (load(&mb->request_seq) == seen) futex_wait_shared(&mb->request_seq, seen);
            store(&mb->child_sleeps, 0);
        }
        uint32_t seq = seen + 1;
        uint32_t slot = slot_of(mb, seq);
        fls_request *rq = &mb->requests[slot];
        /* The proxy has read the previous result of this slot. */
        if (pending_result_fd[slot] >= 0) close(pending_result_fd[slot]);
        pending_result_fd[slot] = -1;
        __atomic_store_n(&mb->started_ns, now_ns(), __ATOMIC_RELAXED);
        store(&mb->started_seq, seq);
        if (rq->kind == FLS_REQ_EXIT) _exit(0);

        rq->status = FL_OK;
        rq->code = 0;
        rq->message[0] = '\0';
        rq->result_len = 0;
        rq->result_fd = -1;
        rq->result_pid = (int32_t)self;
        ctx.request = rq;
        ctx.result_area = fls_worker_result_area(worker, slot);
        ctx.failed = 0;
        run_request(worker, slot, &ctx);
        if (ctx.result_map) {
            munmap(ctx.result_map, ctx.result_map_len);
            ctx.result_map = NULL;
        }
        pending_result_fd[slot] = rq->result_fd;
        rq->run_ns = now_ns() - mb->started_ns;
        /* A result memfd goes to the proxy before the answer: in flight, it outlives us. */
        if (rq->result_fd >= 0 && worker->result_socket[1] >= 0) {
            struct iovec iov = {&seq, sizeof seq};
            fls_send_fds(worker->result_socket[1], &iov, 1, &rq->result_fd, 1, 0);
        }
        mb->tasks_run++;
        store(&mb->response_seq, seq);
        seen = seq;
        /* Wake a sleeping proxy only for the response it waits for (or for any, if 0). */
        uint32_t wake_at = load(&mb->proxy_wake_at);
        if (load(&mb->proxy_sleeps) && (wake_at == 0 || reached(seq, wake_at))) wake_proxy(worker);
        if (rq->kind == FLS_REQ_TASK_EXIT) _exit(rq->status == FL_OK ? 0 : fls_exit_status_of_code(rq->code));
        fls_remote_child_after_response();
    }
}
