/*
 * Internal: worker processes of a process-backed pool.
 *
 * A worker process is forked by the pool thread that will feed it (its proxy). Parent and child
 * share one memory-mapped mailbox (a memfd): the proxy writes a request, the child runs it and
 * writes the response. Everything the child does before it calls the user's function is in this
 * C file; Swift code never runs in the child except the thin fl_task_* entry points, which hand
 * over to the C functions below before touching anything else.
 *
 * Waiting: the child spins, then sleeps on a process-shared futex on `request_seq`. The proxy
 * spins, then sleeps in poll() on an eventfd (written by the child when the proxy says it
 * sleeps) and on a pidfd of the child, which becomes readable the moment the child dies — so a
 * crash is noticed at once, and a per-task timeout is poll's timeout.
 */
#ifndef FORKLIFT_WORKER_H
#define FORKLIFT_WORKER_H

#include "forklift_shim.h"
#include <stdint.h>
#include <sys/types.h>

/** Request kinds. */
#define FLS_REQ_TASK 1
#define FLS_REQ_TYPED 2
#define FLS_REQ_EXIT 3
/** Run the task, answer, and exit with its status (fl_process): results must fit the mailbox. */
#define FLS_REQ_TASK_EXIT 4

/** States of a worker's initializer. */
#define FLS_INIT_PENDING 0
#define FLS_INIT_OK 1
#define FLS_INIT_FAILED 2

/** Bytes of a failure message carried in the mailbox. */
#define FLS_MAILBOX_MESSAGE 480

/** Most requests a mailbox holds in flight (a power of two). */
#define FLS_MAX_SLOTS 32
/** The largest memfd of a large argument that a worker's parent keeps for the next one, and
 *  that the worker keeps mapped while its parent sends arguments in it (bytes). */
#define FLS_KEPT_ARGUMENT_BYTES (64u << 20)

/** One request and its response: a slot of the mailbox. Request number `seq` (counted from 1)
 *  lives in slot `order[(seq - 1) % slots]`: the proxy takes any free slot, because it
 *  completes requests out of order. */
typedef struct fls_request {
    /* The request, written by the proxy before it publishes `request_seq`. */
    uint32_t kind;
    int32_t arg_fd;          /* the proxy's memfd holding an argument too large for the area, or -1 */
    fl_task_fn fn;
    void *user;
    uint64_t index;
    uint64_t arg_len;
    void (*typed_fn)(void);
    uint32_t signature_len;  /* FLS_REQ_TYPED: the signature text precedes the tuple in the area */
    /* Non-zero for a child that does not share the parent's address space (spawn, forkserver):
     * the argument begins with "OBJECT-PATH\0SYMBOL\0", `name_len` bytes, padded to 16, naming
     * the function to run instead of `fn`. */
    uint32_t name_len;
    /* Set by the proxy while the request runs when its task was cancelled (fl_cancel): the
     * child's fl_task_cancelled() reads it. Cleared before the request is published. */
    uint32_t cancel_requested;
    /* The response, written by the child before it publishes `response_seq`. */
    int32_t status;          /* FL_OK or FL_ETASK */
    int32_t code;
    uint64_t result_len;
    int32_t result_fd;       /* the child's memfd holding a result too large for the area, or -1 */
    int32_t result_pid;      /* the child that answered (whose fd table holds result_fd) */
    int64_t run_ns;          /* how long the request ran in the child */
    char message[FLS_MAILBOX_MESSAGE];
} fls_request;

/** The shared mailbox (page-aligned): control words on their own cache lines and `slots`
 *  request slots, then for each slot `capacity` bytes of argument area and `capacity` bytes of
 *  result area.
 *
 *  The proxy writes request `request_seq + 1` into its slot and then publishes it; it may have
 *  up to `slots` requests in flight. The child runs them in order: it marks each it takes in
 *  `started_seq` (and the time in `started_ns`) and each it has answered in `response_seq`. A
 *  new child (after a death) resumes after the `response_seq` it is given. */
typedef struct fls_mailbox {
    /* Written by the proxy; the child sleeps on request_seq. */
    uint32_t request_seq;
    uint32_t child_sleeps;
    uint32_t pad0[14];
    /* Written by the child. */
    uint32_t response_seq;
    uint32_t proxy_sleeps;
    uint32_t started_seq;    /* the request the child has taken (it died before it, or in it) */
    uint32_t wake_lost;      /* the child could not write the event fd (its task closed it) */
    int64_t started_ns;      /* when it took it (monotonic clock) */
    uint32_t proxy_wake_at;  /* written by the proxy: the response it sleeps for (0: any) */
    uint32_t pad2[9];
    uint32_t cancelled;
    uint32_t init_state;
    int32_t init_code;
    int32_t proxy_pid;
    uint32_t tasks_run;
    uint32_t slots;
    uint64_t capacity;
    uint32_t order[FLS_MAX_SLOTS];
    fls_request requests[FLS_MAX_SLOTS];
} fls_mailbox;

/** The parent's side of one worker process. Owned by the proxy thread. */
typedef struct fls_worker {
    fls_mailbox *mailbox;
    size_t map_len;
    int mailbox_fd; /* the memfd behind the mailbox (close-on-exec), passed on to spawned children */
    int event_fd;   /* written by the child when a response is ready and the proxy sleeps */
    /* A Unix socket pair: before answering with a result memfd, a forked child sends the memfd
     * through `result_socket[1]`; in flight, it outlives the child, so a result answered before
     * a crash is never lost. The proxy takes it from `result_socket[0]`. -1: none. */
    int result_socket[2];
    int pid_fd;     /* readable once the child has died; -1 when the kernel has no pidfds */
    pid_t pid;      /* 0 when no child runs */
} fls_worker;

/** What a new worker runs before its first task. */
typedef struct fls_worker_init {
    fl_init_fn fn;
    void *user;
    const void *args;
    size_t args_len;
    /** Signal the child receives when the forking thread ends (PR_SET_PDEATHSIG); 0: none. */
    int death_signal;
} fls_worker_init;

/** Outcomes of fls_worker_wait(). */
#define FLS_WAIT_READY 0
#define FLS_WAIT_DIED 1
#define FLS_WAIT_TIMEOUT 2
#define FLS_WAIT_INTERRUPTED 3

/** Creates the mailbox (`slots`, a power of two up to FLS_MAX_SLOTS; `capacity` bytes per
 *  area) and the event fd. Returns 0 or an errno. */
int fls_worker_open(fls_worker *worker, uint32_t slots, size_t capacity);
/** Unmaps and closes everything. The child must have been reaped. */
void fls_worker_close(fls_worker *worker);
/** Slot `slot`, and its argument and result areas. */
fls_request *fls_worker_request(fls_worker *worker, uint32_t slot);
void *fls_worker_arg_area(fls_worker *worker, uint32_t slot);
void *fls_worker_result_area(fls_worker *worker, uint32_t slot);
/** Records that request `seq` is in `slot` (before publishing it), and reads it back. At most
 *  `slots` requests after the last answered one may be recorded. */
void fls_worker_assign(fls_worker *worker, uint32_t seq, uint32_t slot);
uint32_t fls_worker_slot_of(fls_worker *worker, uint32_t seq);

/** Sets the mailbox's words for a new child, which resumes after request `resume` (the
 *  requests after it up to `request_seq` are run by the new child). Call before spawning. */
void fls_worker_prepare(fls_worker *worker, uint32_t resume);

/** Forks a worker process that runs `init` and then serves requests (after
 *  fls_worker_prepare). Returns 0 or an errno. The child runs only C code until it calls the
 *  initializer or a task function. */
int fls_worker_spawn(fls_worker *worker, const fls_worker_init *init);

/** The life of a worker process once its mailbox is mapped: runs `init`, then serves requests
 *  until told to exit. `parent` is the process whose death `init->death_signal` is tied to. */
_Noreturn void fls_worker_child_main(fls_worker *worker, const fls_worker_init *init, pid_t parent);

/** Publishes the request written into the mailbox and wakes the child if it sleeps. */
void fls_worker_send(fls_worker *worker);

/** Waits until `*word != seen` (the response or the initializer's report), the child dies,
 *  `deadline_ns` (monotonic; negative: none) passes, or fls_worker_interrupt() is called while
 *  `*interrupt` is non-zero. Spins `spins` polls first. */
int fls_worker_wait(fls_worker *worker, const uint32_t *word, uint32_t seen, int64_t deadline_ns, int spins,
                    const uint32_t *interrupt);

/** Waits until request `seq` is answered (`response_seq` reaches it), the child dies,
 *  `deadline_ns` passes, or fls_worker_interrupt() is called while `*interrupt` is non-zero.
 *  The child wakes the proxy only for that response, not for the ones before it. */
int fls_worker_await(fls_worker *worker, uint32_t seq, int64_t deadline_ns, int spins, const uint32_t *interrupt);

/** Wakes the proxy waiting in fls_worker_wait() (from any thread). */
void fls_worker_interrupt(fls_worker *worker);

/** Reaps `pid` if it has ended, without blocking: 1 (and `*end`: exit code, or the negated
 *  signal), 0 while it runs, -1 if it is not our child (already reaped elsewhere). */
int fls_process_try_reap(pid_t pid, int *end);
/** Waits until `fd` is readable or `deadline_ns` (negative: none) passes. */
void fls_wait_readable(int fd, int64_t deadline_ns);

/** Sends `signal` to the child (if any). */
void fls_worker_signal(fls_worker *worker, int signal);

/** Waits for the dead or dying child and describes its end. Returns the exit code (>= 0), the
 *  negated signal number, or FL_EXIT_UNKNOWN if it was reaped elsewhere. Clears `pid`. */
int fls_worker_reap(fls_worker *worker);

/** Asks an idle child (no request in flight) to exit, then reaps it (killing it if it has not
 *  gone after `grace_ns`). */
int fls_worker_stop(fls_worker *worker, int64_t grace_ns);

/** Takes the next result memfd a child sent (see `result_socket`): returns it and stores the
 *  request number it answers in `*seq`; -1 when none is waiting. */
int fls_worker_take_result_fd(fls_worker *worker, uint32_t *seq);
/** Maps `len` bytes of `fd` read-only, populated, or NULL. */
void *fls_map_fd(int fd, size_t len);
/** Maps `len` bytes of another process's file descriptor read-only (via /proc/PID/fd), or NULL. */
void *fls_map_peer_fd(pid_t pid, int fd, size_t len);
/** Opens (read-only, close-on-exec) the file that process `pid` holds as its descriptor `fd`,
 *  through /proc/PID/fd/FD; a new descriptor of this process, or -1 with errno. */
int fls_open_peer_fd(pid_t pid, int fd);
/** Creates a memfd holding a copy of `data`; returns the fd or -1. */
int fls_memfd_with(const void *data, size_t len, const char *name);
/** Creates a memfd of `data_offset + len` bytes holding `head_len` bytes of `head` at its start
 *  (`head` may be NULL) and a copy of `data` at `data_offset` (>= head_len), both written by
 *  the kernel from where they are (no staging copy); returns the fd, or -1 with errno. */
int fls_memfd_with_head(const void *head, size_t head_len, size_t data_offset, const void *data, size_t len,
                        const char *name);
/** Lists `fd`, an argument file this process keeps, so a child forked from it closes its copy
 *  at once (fork-method workers and processes; listing a listed one does nothing).
 *  Thread-safe. */
void fls_kept_file_add(int fd);
/** Unlists `fd` (no effect if it is not listed); call it before closing the file, so a child
 *  forked meanwhile cannot close an unrelated descriptor that reuses the number. Thread-safe. */
void fls_kept_file_remove(int fd);
/** Writes into the memfd `fd`, now `size` bytes long, what fls_memfd_with_head() writes into a
 *  new one, growing it to `data_offset + len` bytes if it is shorter (a longer one keeps its
 *  size; the bytes past the new contents are stale). Pages the file already has are reused,
 *  which costs far less than fresh ones. Returns 0, or -1 with errno. */
int fls_memfd_write_head(int fd, size_t size, const void *head, size_t head_len, size_t data_offset,
                         const void *data, size_t len);
/** Creates a memfd of `len` bytes and maps it for reading and writing (shared): returns the
 *  mapping and stores the fd in `*fd`, or returns NULL. */
void *fls_shared_alloc(size_t len, int *fd);
/** Creates an unnamed file of `len` (> 0) bytes in the directory `dir` (O_TMPFILE; where the
 *  file system lacks it, a file unlinked at once), allocates its blocks (so a full disk fails
 *  here, not as a SIGBUS on a later write) and maps it for reading and writing (shared):
 *  returns the mapping and stores the fd in `*fd`, or returns NULL with errno set. */
void *fls_spill_alloc(const char *dir, size_t len, int *fd);
/** 0 when `path` is a directory the process may create files in, else an errno value. */
int fls_spill_directory_check(const char *path);

/* ---- remote tasks and actors in worker processes ---- */

/** What a remote task, actor call or actor constructor sends to a worker process: this
 *  header, `nargs` records, then the arguments' bytes that travel inline. The argument of
 *  fls_remote_child_task, or the initializer arguments of fls_remote_child_construct. */
typedef struct fls_remote_call {
    /** The fl_remote_fn to call (an fl_actor_init_fn for a constructor). */
    void (*fn)(void);
    /** Its `user` (ignored for a method: the actor's state is passed instead). */
    void *user;
    uint32_t nargs;
    /** Non-zero: an actor method, called with the state its constructor made in this process. */
    uint32_t is_method;
    /** The process whose descriptors the records' `fd` name (the runtime's). */
    int32_t owner_pid;
    /** Non-zero: a typed task. `fn` is any C function, called through libffi with one
     *  argument per blob, and this many bytes of signature text (its NUL included) follow the
     *  records, padded to 16 bytes. */
    uint32_t signature_len;
} fls_remote_call;

/** One argument of an fls_remote_call. */
typedef struct fls_remote_arg {
    /** Inline (fd < 0): where its bytes begin, counted from the start of the call; else
     *  where they begin in the memfd. */
    uint64_t offset;
    uint64_t len;
    /** >= 0: the bytes are `len` bytes at `offset` in the owner's memfd `fd`, mapped read-only. */
    int32_t fd;
    uint32_t pad;
    /** With `fd`, non-zero: the memfd is a segment of the owner's arena (forklift_arena.h),
     *  `span` bytes long, with this inode; the worker maps it whole once and keeps it. */
    uint64_t inode;
    uint64_t span;
} fls_remote_arg;

/** Runs an fls_remote_call in a worker process (an fl_task_fn: `arg` is the call). */
int fls_remote_child_task(void *user, const void *arg, size_t len, fl_task_ctx ctx);
/** Unmaps the shared arguments of the call just answered (called by the worker's loop). */
void fls_remote_child_after_response(void);
/** Runs an actor's constructor call in its worker process (an fl_init_fn: `args` is the
 *  call) and keeps the state for the methods; returns the constructor's code. */
int fls_remote_child_construct(void *user, const void *args, size_t len);

/** The signature parsed from `text`, from a per-process cache (a worker parses each text
 *  once); NULL with a message in `error` if it does not parse. */
fls_sig *fls_child_signature(const char *text, char *error, size_t error_len);

/** The name of a signal ("SIGSEGV"), or "signal". */
const char *fls_signal_name(int signal);

/* ---- the child's task context (used by the fl_task_* entry points) ---- */

/** Non-zero if `ctx` is the context of the task running in this worker process. */
int fls_child_ctx_is_current(const void *ctx);
int fls_child_task_return(const void *ctx, const void *data, size_t len);
int fls_child_task_result_buffer(const void *ctx, size_t len, void **buffer);
int fls_child_task_fail(const void *ctx, int code, const char *message);
uint64_t fls_child_task_index(const void *ctx);
int fls_child_task_cancelled(const void *ctx);
/** Which calls this process may make: 0 all; 1 a worker process's (fl_task_*, queues, pipes,
 *  locks, events, semaphores, shared memory); 2 the same, in the child of a fork() the
 *  program made while Forklift threads ran (`fls_forked_with_threads`). */
int fls_call_restriction(void);

/** The exit status of a started process whose function failed with `code` (not 0): its low 8
 *  bits, or 1 if those are 0, so a failure never reads as success and a negative code never
 *  as a signal. The child exits with it; the parent reports it from the child's answer. */
static inline int fls_exit_status_of_code(int code) { return (code & 0xff) ? (code & 0xff) : 1; }

#endif /* FORKLIFT_WORKER_H */
