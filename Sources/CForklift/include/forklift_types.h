/*
 * Public C types of Forklift: status codes, handles, option structs and callback types.
 *
 * This file is the single source of the public C types. The Swift core imports it, and
 * `make header` copies the part between the PUBLIC markers into include/forklift.h, followed
 * by the prototypes of the exported functions.
 */
#ifndef FORKLIFT_TYPES_H
#define FORKLIFT_TYPES_H

/* FORKLIFT-PUBLIC-BEGIN */
#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------------------------------- */
/* Versions                                                                                  */
/* ---------------------------------------------------------------------------------------- */

/** Major version of this header. A library with another major version is incompatible. */
#define FL_VERSION_MAJOR 0
/** Minor version of this header: additions only. */
#define FL_VERSION_MINOR 1
/** Patch version of this header. */
#define FL_VERSION_PATCH 0
/** The version as one number, major * 10000 + minor * 100 + patch; compare with fl_version_number(). */
#define FL_VERSION_NUMBER (FL_VERSION_MAJOR * 10000 + FL_VERSION_MINOR * 100 + FL_VERSION_PATCH)

/* ---------------------------------------------------------------------------------------- */
/* Status codes. Every fallible call returns FL_OK or one of the negative codes below.       */
/* fl_strerror(code) names a code; fl_last_error() gives the detail of the last failure on    */
/* the calling thread.                                                                       */
/* ---------------------------------------------------------------------------------------- */

/** Success. */
#define FL_OK 0
/** An argument is invalid: a NULL pointer where one is required, an impossible size or count. */
#define FL_EINVAL (-1)
/** A handle is NULL, destroyed, released, of another type, or was never issued. */
#define FL_EHANDLE (-2)
/** Memory could not be allocated. */
#define FL_ENOMEM (-3)
/** The call is not allowed in the object's current state (submit after close, join before close). */
#define FL_ESTATE (-4)
/** The timeout expired before the awaited event. */
#define FL_ETIMEDOUT (-5)
/** The task was cancelled before it ran (fl_pool_terminate). */
#define FL_ECANCELED (-6)
/** The task reported a failure; fl_result_error() or fl_iter_error() give its code and message. */
#define FL_ETASK (-7)
/** An iterator has no more items. */
#define FL_EDONE (-8)
/** An index is out of range, or a buffer is too small for a result. */
#define FL_ERANGE (-9)
/** The call would wait for itself: joining or destroying a pool from one of its own threads. */
#define FL_EDEADLK (-10)
/** A worker initializer failed; the pool was not created. */
#define FL_EINIT (-11)
/** A source callback of fl_pool_imap() reported a failure. */
#define FL_ESOURCE (-12)
/** A system resource (thread, futex) could not be obtained; fl_last_error() names it. */
#define FL_ESYSTEM (-13)
/** A worker process died while running the task (crash, signal, exit); the message names the
 *  signal or the exit status, and the task's code is the exit status or the negated signal. */
#define FL_EWORKER (-14)
/** The operation is not available here: on this pool's backend, or inside a worker process. */
#define FL_ENOTSUP (-15)

/* ---------------------------------------------------------------------------------------- */
/* Timeouts are in seconds as a double. FL_FOREVER (any negative value) waits without limit; */
/* 0 polls.                                                                                   */
/* ---------------------------------------------------------------------------------------- */

/** Wait without a time limit. */
#define FL_FOREVER (-1.0)

/* ---------------------------------------------------------------------------------------- */
/* Handles. Opaque, never dereferenced by the caller. A handle encodes a table slot and a     */
/* generation; the library validates it on every call, so a stale or garbage handle yields    */
/* FL_EHANDLE instead of a crash.                                                             */
/* ---------------------------------------------------------------------------------------- */

/** A pool of worker threads. Create with fl_pool_create(), free with fl_pool_destroy(). */
typedef struct fl_pool_ *fl_pool;
/** The outcome of an asynchronous (or synchronous map) call, like multiprocessing's AsyncResult.
 *  Free with fl_result_release(). */
typedef struct fl_result_ *fl_result;
/** A lazy result iterator from fl_pool_imap() or fl_pool_imap_unordered(). Free with fl_iter_destroy(). */
typedef struct fl_iter_ *fl_iter;
/** A task group on a pool: submit many tasks, wait for all of them (like TBB's task_group or
 *  libdispatch's dispatch_group). Free with fl_group_destroy(). */
typedef struct fl_group_ *fl_group;
/** A parsed function signature for typed calls (fl_signature_create). Free with
 *  fl_signature_destroy(); results and calls in flight keep what they need. */
typedef struct fl_signature_ *fl_signature;
/** A function running in its own OS process (fl_process_start), like multiprocessing.Process.
 *  Free with fl_process_destroy() once it has ended. */
typedef struct fl_process_ *fl_process;
/** A bounded queue of byte messages in shared memory: many producers and consumers, in this
 *  process and in the processes it starts afterwards (others open it by name). Free with
 *  fl_queue_destroy(). */
typedef struct fl_queue_ *fl_queue;
/** A shared-memory segment mapped into this process (anonymous or named). Unmap with
 *  fl_shm_close(). */
typedef struct fl_shm_ *fl_shm;
/** A process-shared lock, plain or recursive (multiprocessing.Lock / RLock). Free with
 *  fl_lock_destroy(). */
typedef struct fl_lock_ *fl_lock;
/** A process-shared event flag (multiprocessing.Event). Free with fl_event_destroy(). */
typedef struct fl_event_ *fl_event;
/** A process-shared counting semaphore, optionally bounded (multiprocessing.Semaphore /
 *  BoundedSemaphore). Free with fl_semaphore_destroy(). */
typedef struct fl_semaphore_ *fl_semaphore;
/** One end of a message pipe (multiprocessing.Pipe's Connection). Close with fl_pipe_close(). */
typedef struct fl_pipe_ *fl_pipe;
/** A runtime of remote tasks and objects (Ray's ray.init()). Create with fl_runtime_create()
 *  or take the default one (fl_runtime_default); end with fl_runtime_shutdown(). */
typedef struct fl_runtime_ *fl_runtime;
/** An actor of a runtime: state built by a constructor, and method calls that run against
 *  it in order (Ray's actor handle). End it with fl_actor_kill(). */
typedef struct fl_actor_ *fl_actor;
/** A reference to an object of a runtime: the future result of a remote task, or a value put
 *  into the store (Ray's ObjectRef). Each handle is one reference: release it with
 *  fl_ref_release(); the object is freed when its last reference and last task using it are
 *  gone. */
typedef struct fl_ref_ *fl_ref;
/** The context of the task running on the calling thread; valid only inside that task function. */
typedef struct fl_task_ctx_ *fl_task_ctx;

/* ---------------------------------------------------------------------------------------- */
/* Callbacks                                                                                 */
/* ---------------------------------------------------------------------------------------- */

/**
 * A task in the blob convention. Runs on a worker thread.
 *
 * `user` is the pointer given at submission, unchanged. `arg`/`arg_len` is the argument blob:
 * for apply a copy owned by the library, for map an item of the input array, for starmap one
 * of the argument blobs; it is valid until the function returns.
 *
 * Return 0 for success. To return a value, call fl_task_return() (copies) or write into the
 * buffer from fl_task_result_buffer() (zero-copy) before returning. A task without a value
 * yields an empty result. Return any non-zero code, or call fl_task_fail(), for a failure:
 * the result then reports FL_ETASK and carries the code and message.
 */
typedef int (*fl_task_fn)(void *user, const void *arg, size_t arg_len, fl_task_ctx ctx);

/**
 * A kernel for fl_pool_map_strided(): processes `count` elements starting at `in` and `out`,
 * element i being at `(char *)in + i * in_stride` and `(char *)out + i * out_stride`.
 * Runs on a worker thread, on disjoint ranges. Return 0, or a non-zero code for a failure.
 */
typedef int (*fl_kernel_fn)(void *user, const void *in, ptrdiff_t in_stride, void *out,
                            ptrdiff_t out_stride, size_t count);

/**
 * A worker initializer: runs once on each worker thread before it takes its first task.
 * Return 0, or a non-zero code to make fl_pool_create() fail with FL_EINIT.
 */
typedef int (*fl_init_fn)(void *user, const void *initargs, size_t initargs_len);

/**
 * A completion callback of an asynchronous call. Runs on the pool's callback thread: one
 * thread per pool, callbacks serialized and in completion order, so a callback may append
 * to a list without a lock. `result` is valid for the duration of the callback (even if the
 * caller has released its own reference); read it with fl_result_get(), fl_result_item() or
 * fl_result_error() using a zero timeout. The callback must not release it. When the
 * submission asked for no result handle, `result` is valid only during the callback and only
 * on the callback thread.
 */
typedef void (*fl_result_cb)(void *user, fl_result result);

/**
 * An input source for fl_pool_imap(). Called on the thread that calls fl_pool_imap() or
 * fl_iter_next(), never concurrently. Set `*data`/`*len` to the next item (copied before the
 * next call) and return 1; return 0 at the end; return a negative code for a failure, which
 * ends the input and is reported by fl_iter_next() as FL_ESOURCE after the items before it.
 */
typedef int (*fl_source_fn)(void *user, const void **data, size_t *len);

/** Any C function, cast to this type for the typed calls: `(fl_fn)pow`. */
typedef void (*fl_fn)(void);

/** A borrowed byte range: one argument blob of fl_pool_starmap(). */
typedef struct fl_blob {
    /** First byte; may be NULL only when len is 0. */
    const void *data;
    /** Length in bytes. */
    size_t len;
} fl_blob;

/* ---------------------------------------------------------------------------------------- */
/* Options                                                                                    */
/* ---------------------------------------------------------------------------------------- */

/** `workers` value meaning one worker per online CPU. */
#define FL_WORKERS_DEFAULT (-1)
/** The largest number of workers a pool accepts. */
#define FL_WORKERS_MAX 1024

/** Pool backend: worker threads in the calling process. */
#define FL_BACKEND_THREAD 0
/**
 * Pool backend: worker processes. Each worker thread of the pool feeds one worker process,
 * forked when the pool is created (and again to replace one that died or reached
 * max_tasks_per_child). Arguments and results travel through memory shared with that process;
 * a crash, a signal or an exit in a task fails only that task (FL_EWORKER), and the worker is
 * replaced. An argument above 256 KiB goes in a shared-memory file; a worker keeps the file of
 * its last one (up to 64 MiB) for the next, so a pool may hold that much per worker process
 * until it is destroyed. The task function, its `user` pointer and the initializer must be
 * valid in the child: the child sees the parent's memory as it was at the fork, so pass data
 * in the argument blob. The child runs only Forklift's C code until it calls the initializer or a task;
 * inside a task only the fl_task_* calls are available (no nested pool calls: FL_ENOTSUP).
 * fl_pool_terminate() kills the worker processes at once; their tasks fail with FL_ECANCELED.
 */
#define FL_BACKEND_PROCESS 1

/**
 * Options of fl_pool_create(). Always fill with fl_pool_options_init() first, then change
 * fields: `size` lets newer libraries accept older structs.
 */
typedef struct fl_pool_options {
    /** sizeof(fl_pool_options), set by fl_pool_options_init(). */
    size_t size;
    /** Worker threads: FL_WORKERS_DEFAULT (the CPU count) or 1 .. FL_WORKERS_MAX. */
    int workers;
    /** Optional; runs once on every worker before its first task. */
    fl_init_fn initializer;
    /** Passed unchanged to the initializer. */
    void *initializer_user;
    /** Initializer arguments; copied by fl_pool_create(). May be NULL when initargs_len is 0. */
    const void *initargs;
    /** Length of initargs in bytes. */
    size_t initargs_len;
    /** Thread name prefix (at most 10 characters are used); copied. NULL means "forklift". */
    const char *name;
    /** FL_BACKEND_THREAD (the default) or FL_BACKEND_PROCESS. */
    int backend;
    /** Process backend: seconds a task may run before its worker process is killed and
     *  replaced; the task then fails with FL_EWORKER (code -SIGKILL, the message names the
     *  timeout), and is not retried. 0 (the default) or less: no limit. */
    double task_timeout;
    /** Process backend: tasks a worker process runs before it is replaced by a fresh one
     *  (multiprocessing's maxtasksperchild). 0 (the default): no limit. */
    size_t max_tasks_per_child;
    /** Process backend: how many times a task is run again, on a fresh worker, after the
     *  worker running it died (at most task_retries + 1 runs in all). 0 (the default): a
     *  death fails the task with FL_EWORKER. */
    int task_retries;
} fl_pool_options;

/**
 * Start methods of fl_process_start(), as in multiprocessing.
 *
 * FL_START_FORK (the default): the child is a fork of the caller. Fastest (about 0.1 ms); the
 * child sees the parent's memory as it was, so `user`, globals and handles created before the
 * start (queues, pipes, locks, shared memory) just work. The parent may be multithreaded: the
 * child runs only Forklift's C code until it calls the function, but the function itself runs
 * in a copy of a multithreaded process, so it must not rely on locks another thread could have
 * held at the fork (most libraries' internal locks; malloc is safe with glibc).
 *
 * FL_START_SPAWN: the child is a new run of the program (fork + exec of /proc/self/exe, with
 * this library preloaded), which becomes the worker before the program's main() runs. Slowest
 * (a few ms: the program is loaded again) but clean: no threads, locks or memory of the
 * parent. The function is found by name, so it must be an exported symbol (a function of a
 * shared library, or of a program linked with -rdynamic); `user` must be NULL; data travels in
 * the argument, and shared objects are opened by name (fl_queue_name/fl_queue_open, ...).
 *
 * FL_START_FORKSERVER: a fork server is spawned (as above) on first use, once per parent
 * process; each start asks it to fork a child. As clean as spawn, about as fast as fork, with
 * spawn's rules for the function, `user` and shared objects. The server ends with the parent.
 */
#define FL_START_FORK 0
#define FL_START_SPAWN 1
#define FL_START_FORKSERVER 2

/**
 * The exit code (fl_process_exitcode) of a process that ended without finishing its function
 * when its exit status was lost: collected elsewhere in this program (SIGCHLD set to SIG_IGN,
 * or a waitpid(-1) or wait() of the host's), or with the fork server that held it gone. A
 * process that finished its function reports the function's return value in any case. Worker
 * processes that end this way fail their task with FL_EWORKER, saying so.
 */
#define FL_EXIT_UNKNOWN (-1000)

/**
 * Options of fl_process_start(). Fill with fl_process_options_init() first.
 */
typedef struct fl_process_options {
    /** sizeof(fl_process_options), set by fl_process_options_init(). */
    size_t size;
    /** Non-zero: a daemon process, killed (SIGKILL) when the parent process ends, however it
     *  ends (exit, crash, SIGKILL). Default 0: the process runs on after the parent ends. */
    int daemon;
    /** FL_START_FORK (default), FL_START_SPAWN or FL_START_FORKSERVER (see above). */
    int start_method;
} fl_process_options;

/**
 * A remote task (fl_remote): `args[0..nargs)` are its arguments in order, each a byte blob; an
 * argument given as a reference arrives as the bytes of its object. They are valid until the
 * function returns. Return a value with fl_task_return() or fl_task_result_buffer(); return 0
 * for success, non-zero or fl_task_fail() for a failure, which the task's object then holds.
 */
typedef int (*fl_remote_fn)(void *user, const fl_blob *args, size_t nargs, fl_task_ctx ctx);

/**
 * What fl_ref_on_ready() calls once an object resolves: `status` is FL_OK for a value, else
 * the failure's status, which fl_get() on a reference to the object then returns.
 */
typedef void (*fl_ready_fn)(void *user, int status);

/** One argument of a remote task: a reference (`ref` not NULL: the object's bytes, once it is
 *  ready; the task waits for it without holding a worker), or a blob (`data`, `len`: copied
 *  at submission). */
typedef struct fl_arg {
    const void *data;
    size_t len;
    fl_ref ref;
} fl_arg;

/**
 * Options of fl_runtime_create(). Fill with fl_runtime_options_init() first.
 */
typedef struct fl_runtime_options {
    /** sizeof(fl_runtime_options), set by fl_runtime_options_init(). */
    size_t size;
    /** Worker threads running remote tasks; 0 (the default): one per CPU. */
    size_t workers;
    /** Bytes of object data the store may hold at once (results and put values); a put or a
     *  result beyond it fails with FL_ENOMEM ("object store full"), or goes to a file with
     *  fl_runtime_set_spill_directory(). 0 (the default): no limit. */
    size_t store_capacity;
    /** Worker processes for tasks and actors that ask for isolation (`isolate` in their
     *  options), forked when the runtime starts; 0 (the default): none, and such tasks are
     *  refused with FL_EINVAL. With process workers, objects of 256 KiB or more live in shared
     *  memory that the worker processes map without a copy: segments of a process-wide arena,
     *  which each worker process maps once. A freed object's pages are kept for the next
     *  large objects (up to 1 GiB, or an eighth of physical memory if less, in the whole
     *  process, and within `store_capacity` while a runtime with one lives) so that they cost
     *  no page faults in this process or in the workers, and go back to the system at
     *  fl_runtime_shutdown(). */
    size_t process_workers;
} fl_runtime_options;

/**
 * Options of one remote task (fl_remote). Fill with fl_remote_options_init() first; NULL means
 * the defaults.
 */
typedef struct fl_remote_options {
    /** sizeof(fl_remote_options), set by fl_remote_options_init(). */
    size_t size;
    /** How many more times a task runs before its failure stands: after a failure with
     *  `retry_on_error`, and for an isolated task (`isolate`) after its worker process died.
     *  Default 0. */
    int max_retries;
    /** Non-zero: a task that fails (non-zero return, fl_task_fail) runs again, up to
     *  `max_retries` times (Ray's retry_exceptions). Default 0. */
    int retry_on_error;
    /** CPUs the task holds while it runs (Ray's num_cpus), 0 to the runtime's worker count.
     *  Tasks that ask for CPUs start only while the workers not held by other such tasks
     *  suffice; until then they wait without holding a worker, in submission order. A task
     *  waiting in fl_get() lends its CPUs meanwhile. 0 (the default): not counted. */
    int num_cpus;
    /** Non-zero: the task runs in one of the runtime's worker processes (its
     *  `process_workers`), not on a thread of the caller's process: a crash, exit or leak in it
     *  cannot touch the host. A task whose worker process dies fails with FL_EWORKER (naming
     *  the signal or exit status) after running again up to `max_retries` times on fresh
     *  workers (with or without `retry_on_error`). fl_cancel_force() kills it while it runs.
     *  The function and `user` must be valid in a process forked when the runtime started
     *  (code and data that existed then); the task cannot submit tasks or get objects, and has
     *  one return. Default 0. */
    int isolate;
    /** Called once with the task's `user` when the runtime is done with it, so that a `user`
     *  made for one task can be freed however the task ends (as sqlite3's destructor
     *  arguments): after the function's last run (retries included), before the task's
     *  results resolve; or, for a task that ends without running (cancelled, an argument
     *  failed, the runtime shut down), as it ends, which for a cancelled task can be after
     *  its results resolved as cancelled. Not called when the submission fails: `user` is
     *  then still the caller's. Runs on the thread that ends the task: a worker, or a thread
     *  in fl_get(), fl_cancel(), fl_seal(), fl_actor_kill() or fl_runtime_shutdown(); keep
     *  it short, and take no lock there that such a caller may hold. For an isolated task it
     *  runs in this process. Only fl_remote() and fl_remote_multi() take one (their `user`
     *  is the task's own): FL_EINVAL elsewhere. NULL (the default): none. */
    void (*release_user)(void *user);
} fl_remote_options;

/**
 * An actor's constructor (fl_actor_create): builds the state from `args` (as for a remote
 * task) and stores it in `*state` (NULL is a state too). Return 0, or a non-zero code: then
 * every call of the actor fails with FL_ESTATE ("the actor's constructor failed: ..."), as
 * when one of `args` is a reference to an object that failed (the constructor does not run),
 * and free_state is not called. Runs on a worker thread.
 */
typedef int (*fl_actor_init_fn)(void *user, const fl_blob *args, size_t nargs, void **state);

/** Frees an actor's state when the actor ends, once its last running call has ended: after
 *  fl_actor_kill (on the thread calling it, or the one that ran that call, or one in another
 *  call on the actor just then), or in the fl_runtime_shutdown() of an actor still alive (on
 *  the thread calling it, before it returns). Called once, with whatever the constructor
 *  stored (NULL included), if the constructor ran and returned 0; not for an isolated actor. */
typedef void (*fl_actor_free_fn)(void *user, void *state);

/**
 * Options of fl_actor_create(). Fill with fl_actor_options_init() first; NULL means the
 * defaults.
 */
typedef struct fl_actor_options {
    /** sizeof(fl_actor_options), set by fl_actor_options_init(). */
    size_t size;
    /** How many calls may run at once (Ray's max_concurrency). 1 (the default): one at a time,
     *  in submission order. Above 1, calls start in submission order and may overlap, so the
     *  methods must synchronize their use of the state. */
    int max_concurrency;
    /** Non-zero: the actor lives in a worker process of its own (forked for it, not one of the
     *  runtime's `process_workers`, which need not be set): the constructor runs there and the
     *  state never leaves it; `free_state` is not called (the state ends with the process).
     *  max_concurrency must be 1. Default 0. */
    int isolate;
    /** For an isolated actor: how many times its process is started again, constructor
     *  included, after it dies (Ray's max_restarts). Beyond that, calls fail with FL_EWORKER
     *  (after deaths in the constructor too: "the actor's constructor failed: ...").
     *  A process that dies in the constructor is started again after a pause that doubles
     *  from 1 ms up to 1 s; fl_actor_kill or the runtime's shutdown ends that pause, and the
     *  restarts, at once. Default 0. */
    int max_restarts;
    /** For an isolated actor: how many times a call that was running when the process died
     *  runs again on the restarted process (Ray's max_task_retries); 0 (the default): it fails
     *  with FL_EWORKER, and later calls go to the restarted process. */
    int max_task_retries;
} fl_actor_options;

/** A flag of fl_cancel_with(): a running isolated task's process is killed (fl_cancel_force()). */
#define FL_CANCEL_FORCE 1
/** A flag of fl_cancel_with(): the task's nested tasks are cancelled too (as by fl_cancel()). */
#define FL_CANCEL_RECURSIVE 2

/** Counters of a runtime (fl_runtime_get_stats). */
typedef struct fl_runtime_stats {
    /** Tasks submitted so far. */
    uint64_t tasks_submitted;
    /** Tasks running now. */
    uint64_t tasks_running;
    /** Tasks whose object is resolved (ran, failed without running, or cancelled). */
    uint64_t tasks_finished;
    /** Of those, the ones whose object holds a failure. */
    uint64_t tasks_failed;
    /** Objects alive now (referenced, or used by a task). */
    uint64_t objects;
    /** Bytes of object data the store holds now. */
    uint64_t object_bytes;
} fl_runtime_stats;

/** Default capacity of fl_queue_create() in bytes (1 MiB). */
#define FL_QUEUE_DEFAULT_CAPACITY (1024 * 1024)

/* FORKLIFT-PUBLIC-END */

#endif /* FORKLIFT_TYPES_H */
