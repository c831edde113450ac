/*
 * Internal: the spawn and forkserver start methods of fl_process.
 *
 * spawn: the parent forks and at once execs its own program (/proc/self/exe) with this
 * library preloaded and the worker's mailbox and event fds inherited; a constructor in the
 * library notices the FORKLIFT_SPAWN variable and becomes the worker before the program's main
 * runs. The child is a fresh process: no threads, locks or memory of the parent, so functions
 * are found by name (the object file and symbol the parent's dladdr gave).
 *
 * forkserver: one server is spawned the same way, per parent process, on first use. It is
 * single-threaded and forks a worker per request (mailbox, event and status fds passed over a
 * Unix socket), reaps it and writes its end to the request's status socket.
 */
#ifndef FORKLIFT_SPAWN_H
#define FORKLIFT_SPAWN_H

#include "forklift_worker.h"

#include <stddef.h>
#include <sys/types.h>

/** Finds the object file and exported symbol of the function at `fn`. Returns 0, or -1 when
 *  it has no exported symbol (a static function, or a program linked without -rdynamic). */
int fls_function_name(const void *fn, char *path, size_t path_cap, char *symbol, size_t symbol_cap);
/** The address of `symbol` in the object file `path` (loaded if it is not yet), or NULL with
 *  a message in `error`. */
void *fls_function_resolve(const char *path, const char *symbol, char *error, size_t error_cap);

/** Starts a worker by fork + exec of this program (after fls_worker_prepare). `death_signal`
 *  as in fls_worker_init.
 *  Returns 0 or an errno (ENOEXEC: the program could not be executed). */
int fls_worker_spawn_exec(fls_worker *worker, int death_signal);

/** Starts the fork server (spawned like a worker, SIGKILLed when the calling thread ends).
 *  Returns its request socket, or -1 with `*error` an errno. */
int fls_forkserver_start(pid_t *server_pid, int *error);
/** Asks the server behind `socket` to fork a worker for `worker`, prepared with
 *  fls_worker_prepare (a daemon is killed when the
 *  server ends). Waits for its pid (sets `worker->pid`, `worker->pid_fd`) and returns the
 *  status socket, on which the server writes an fls_forkserver_end when the worker has ended;
 *  or -1 with `*error` an errno (EPIPE: the server is gone). */
int fls_forkserver_fork(int socket, fls_worker *worker, int daemon, int *error);

/** What the fork server writes on a worker's status socket when it has ended. */
typedef struct fls_forkserver_end {
    int32_t pid;
    int32_t end; /* the exit status, or the negated signal */
} fls_forkserver_end;

/** Reads a worker's end from its status socket without blocking: 1 (and `*end`) once it has
 *  ended, 0 while it runs. If the server died, the end is reported as FL_EXIT_UNKNOWN once
 *  the worker has died too (`pid_fd` its pidfd, or -1). */
int fls_forkserver_poll_end(int status_fd, int pid_fd, int *end);

#endif /* FORKLIFT_SPAWN_H */
