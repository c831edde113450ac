/*
 * The spawn and forkserver start methods (see forklift_spawn.h).
 */
#define _GNU_SOURCE
#include "forklift_spawn.h"
#include "forklift_types.h"
#include "forklift_fdpass.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

extern char **environ;

/* ------------------------------------------------------------------------------------------ */
/* Functions by name                                                                          */
/* ------------------------------------------------------------------------------------------ */

/* The program's own path, or "" when it cannot be read. */
static void program_path(char *path, size_t cap) {
    ssize_t n = readlink("/proc/self/exe", path, cap - 1);
    path[n > 0 ? (size_t)n : 0] = '\0';
}

/* Copies `text` into `out` of `cap` bytes; -1 if it does not fit. */
static int copy_text(char *out, size_t cap, const char *text) {
    size_t n = strlen(text);
    if (n + 1 > cap) return -1;
    memcpy(out, text, n + 1);
    return 0;
}

int fls_function_name(const void *fn, char *path, size_t path_cap, char *symbol, size_t symbol_cap) {
    Dl_info info;
    if (!dladdr(fn, &info) || !info.dli_sname || info.dli_saddr != fn) return -1;
    char resolved[PATH_MAX];
    if (!info.dli_fname || !info.dli_fname[0] || !realpath(info.dli_fname, resolved)) {
        program_path(resolved, sizeof resolved);
    }
    if (copy_text(path, path_cap, resolved) != 0 || copy_text(symbol, symbol_cap, info.dli_sname) != 0) return -1;
    return 0;
}

void *fls_function_resolve(const char *path, const char *symbol, char *error, size_t error_cap) {
    char program[PATH_MAX];
    program_path(program, sizeof program);
    void *handle = strcmp(path, program) == 0 ? dlopen(NULL, RTLD_NOW) : dlopen(path, RTLD_NOW);
    if (!handle) {
        snprintf(error, error_cap, "the new process could not load %s: %s", path, dlerror());
        return NULL;
    }
    void *fn = dlsym(handle, symbol);
    if (!fn) snprintf(error, error_cap, "the new process found no function \"%s\" in %s", symbol, path);
    return fn;
}

/* ------------------------------------------------------------------------------------------ */
/* Spawning this program                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* The file this library is in, when it is not the program itself (then it must be preloaded
 * into the new process), or "". */
static void library_to_preload(char *path, size_t cap) {
    Dl_info info;
    char program[PATH_MAX], mine[PATH_MAX];
    path[0] = '\0';
    if (!dladdr((void *)library_to_preload, &info) || !info.dli_fname || !realpath(info.dli_fname, mine)) return;
    program_path(program, sizeof program);
    if (strcmp(mine, program) != 0) copy_text(path, cap, mine);
}

/* Forks and execs this program with `spec` in FORKLIFT_SPAWN and the fds `keep` inherited.
 * Returns 0 with `*pid`, or an errno. */
static int spawn_program(const char *spec, const int *keep, int nkeep, int death_signal, pid_t *pid) {
    char program[PATH_MAX], preload[PATH_MAX];
    program_path(program, sizeof program);
    if (!program[0]) return ENOEXEC;
    library_to_preload(preload, sizeof preload);

    /* The environment, built before the fork: the child may only exec. (clearenv() leaves
     * `environ` NULL: an empty environment.) */
    char **host = environ;
    size_t count = 0;
    while (host && host[count]) count++;
    char **env = calloc(count + 4, sizeof *env);
    char *strings[3] = {NULL, NULL, NULL};
    if (!env) return ENOMEM;
    size_t used = 0;
    const char *old_preload = NULL;
    for (size_t i = 0; i < count; i++) {
        if (strncmp(host[i], "LD_PRELOAD=", 11) == 0) {
            old_preload = host[i] + 11;
            continue;
        }
        if (strncmp(host[i], "FORKLIFT_SPAWN", 14) == 0) continue;
        env[used++] = host[i];
    }
    int failed = asprintf(&strings[0], "FORKLIFT_SPAWN=%s", spec) < 0;
    if (preload[0]) {
        failed |= asprintf(&strings[1], "LD_PRELOAD=%s%s%s", preload, old_preload ? " " : "",
                           old_preload ? old_preload : "") < 0;
        if (old_preload) failed |= asprintf(&strings[2], "FORKLIFT_SPAWN_PRELOAD=%s", old_preload) < 0;
    } else if (old_preload) {
        failed |= asprintf(&strings[1], "LD_PRELOAD=%s", old_preload) < 0;
    }
    for (int i = 0; i < 3; i++) {
        if (strings[i]) env[used++] = strings[i];
    }
    env[used] = NULL;
    char *argv[] = {program, NULL};

    int report[2] = {-1, -1};
    int error = failed ? ENOMEM : 0;
    if (!error && pipe2(report, O_CLOEXEC) != 0) error = errno;
    if (!error) {
        pid_t parent = getpid();
        pid_t child = fork();
        if (child < 0) {
            error = errno;
        } else if (child == 0) {
            for (int i = 0; i < nkeep; i++) fcntl(keep[i], F_SETFD, 0);
            if (death_signal) {
                prctl(PR_SET_PDEATHSIG, death_signal);
                if (getppid() != parent) _exit(127);
            }
            execve(program, argv, env);
            int code = errno;
            (void)!write(report[1], &code, sizeof code);
            _exit(127);
        } else {
            close(report[1]);
            report[1] = -1;
            int code = 0;
            ssize_t n;
            do {
                n = read(report[0], &code, sizeof code);
            } while (n < 0 && errno == EINTR);
            if (n == (ssize_t)sizeof code) {
                waitpid(child, NULL, 0);
                error = code ? code : ENOEXEC;
            } else {
                *pid = child;
            }
        }
    }
    if (report[0] >= 0) close(report[0]);
    if (report[1] >= 0) close(report[1]);
    for (int i = 0; i < 3; i++) free(strings[i]);
    free(env);
    return error;
}

int fls_worker_spawn_exec(fls_worker *worker, int death_signal) {
    char spec[96];
    snprintf(spec, sizeof spec, "worker:%d:%d:%d:%d", worker->mailbox_fd, worker->event_fd, (int)getpid(),
             death_signal);
    int keep[2] = {worker->mailbox_fd, worker->event_fd};
    pid_t pid = 0;
    int error = spawn_program(spec, keep, 2, death_signal, &pid);
    if (error) return error;
    worker->pid = pid;
    worker->pid_fd = (int)syscall(SYS_pidfd_open, pid, 0);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* The fork server                                                                            */
/* ------------------------------------------------------------------------------------------ */

/* A request: the worker's mailbox fd, event fd and status socket travel as SCM_RIGHTS. */
typedef struct server_request {
    int32_t daemon;
} server_request;

int fls_forkserver_start(pid_t *server_pid, int *error) {
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
        *error = errno;
        return -1;
    }
    char spec[64];
    snprintf(spec, sizeof spec, "server:%d:%d", pair[1], (int)getpid());
    int failed = spawn_program(spec, &pair[1], 1, SIGKILL, server_pid);
    close(pair[1]);
    if (failed) {
        close(pair[0]);
        *error = failed;
        return -1;
    }
    return pair[0];
}

int fls_forkserver_fork(int socket, fls_worker *worker, int daemon, int *error) {

    int pair[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
        *error = errno;
        return -1;
    }
    server_request request = {daemon};
    int fds[3] = {worker->mailbox_fd, worker->event_fd, pair[1]};
    struct iovec iov = {&request, sizeof request};
    int failed = fls_send_fds(socket, &iov, 1, fds, 3, 0) < 0 ? errno : 0;
    close(pair[1]);
    if (failed) {
        close(pair[0]);
        *error = failed == EPIPE || failed == ECONNRESET ? EPIPE : failed;
        return -1;
    }
    /* The server answers with the pid, or a negated errno. */
    int32_t answer = 0;
    ssize_t n;
    struct pollfd p = {pair[0], POLLIN, 0};
    if (poll(&p, 1, 30000) <= 0) {
        close(pair[0]);
        *error = ETIMEDOUT;
        return -1;
    }
    do {
        n = recv(pair[0], &answer, sizeof answer, 0);
    } while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof answer || answer <= 0) {
        close(pair[0]);
        *error = n != (ssize_t)sizeof answer ? EPIPE : -answer;
        return -1;
    }
    worker->pid = answer;
    worker->pid_fd = (int)syscall(SYS_pidfd_open, (pid_t)answer, 0);
    return pair[0];
}

/* A worker forked by the server, waiting to be reaped. */
typedef struct server_child {
    pid_t pid;
    int status_fd;
} server_child;

static _Noreturn void become_worker(int mailbox_fd, int event_fd, pid_t parent, int death_signal) {
    fcntl(mailbox_fd, F_SETFD, FD_CLOEXEC);
    fcntl(event_fd, F_SETFD, FD_CLOEXEC);
    struct stat st;
    void *map = MAP_FAILED;
    if (fstat(mailbox_fd, &st) == 0) map = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, mailbox_fd, 0);
    if (map == MAP_FAILED) _exit(126);
    fls_worker worker;
    memset(&worker, 0, sizeof worker);
    worker.mailbox = map;
    worker.map_len = (size_t)st.st_size;
    worker.mailbox_fd = mailbox_fd;
    worker.event_fd = event_fd;
    worker.pid_fd = -1;
    worker.result_socket[0] = worker.result_socket[1] = -1;
    fls_worker_init init;
    memset(&init, 0, sizeof init);
    init.death_signal = death_signal;
    fls_worker_child_main(&worker, &init, parent);
}

/* Reaps every ended worker and reports its end on its status socket. */
static void reap_children(server_child *children, size_t *count) {
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        fls_forkserver_end end = {pid, WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status)};
        for (size_t i = 0; i < *count; i++) {
            if (children[i].pid != pid) continue;
            (void)!send(children[i].status_fd, &end, sizeof end, MSG_NOSIGNAL | MSG_DONTWAIT);
            close(children[i].status_fd);
            children[i] = children[--*count];
            break;
        }
    }
}

static _Noreturn void server_main(int socket, pid_t parent) {
    fcntl(socket, F_SETFD, FD_CLOEXEC);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(0);
    prctl(PR_SET_NAME, "forklift-fsrv");
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    size_t count = 0, capacity = 16;
    server_child *children = malloc(capacity * sizeof *children);
    if (sfd < 0 || !children) _exit(1);
    for (;;) {
        struct pollfd fds[2] = {{socket, POLLIN, 0}, {sfd, POLLIN, 0}};
        if (poll(fds, 2, -1) < 0) continue;
        if (fds[1].revents) {
            struct signalfd_siginfo info;
            while (read(sfd, &info, sizeof info) == (ssize_t)sizeof info) {
            }
            reap_children(children, &count);
        }
        if (!fds[0].revents) continue;
        server_request request;
        int received[3];
        struct iovec iov = {&request, sizeof request};
        ssize_t n = fls_recv_fds(socket, &iov, 1, received, 3, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN)) _exit(0); /* the parent has gone */
        if (n < 0) continue;
        if (n != (ssize_t)sizeof request || received[2] < 0) {
            for (int i = 0; i < 3; i++) {
                if (received[i] >= 0) close(received[i]);
            }
            continue;
        }
        if (count == capacity) {
            server_child *grown = realloc(children, 2 * capacity * sizeof *children);
            if (grown) {
                children = grown;
                capacity *= 2;
            }
        }
        pid_t server = getpid();
        pid_t pid = count < capacity ? fork() : -1;
        if (pid == 0) {
            close(socket);
            close(sfd);
            close(received[2]);
            for (size_t i = 0; i < count; i++) close(children[i].status_fd);
            sigprocmask(SIG_UNBLOCK, &chld, NULL);
            become_worker(received[0], received[1], server, request.daemon ? SIGKILL : 0);
        }
        int32_t answer = pid > 0 ? (int32_t)pid : -(int32_t)(pid < 0 ? errno : ENOMEM);
        close(received[0]);
        close(received[1]);
        (void)!send(received[2], &answer, sizeof answer, MSG_NOSIGNAL);
        if (pid > 0) {
            children[count].pid = pid;
            children[count].status_fd = received[2];
            count++;
        } else {
            close(received[2]);
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* The entry of a spawned process                                                             */
/* ------------------------------------------------------------------------------------------ */

/* Runs when the library is loaded. In a process spawned by spawn_program, it becomes the
 * worker or the fork server and never returns to the program's own start-up. */
__attribute__((constructor)) static void spawned_entry(void) {
    const char *found = getenv("FORKLIFT_SPAWN");
    if (!found) return;
    char spec[96];
    int fits = copy_text(spec, sizeof spec, found) == 0;
    unsetenv("FORKLIFT_SPAWN");
    int a = -1, b = -1, parent = 0, death_signal = 0;
    int worker = fits && sscanf(spec, "worker:%d:%d:%d:%d", &a, &b, &parent, &death_signal) == 4;
    int server = fits && !worker && sscanf(spec, "server:%d:%d", &a, &parent) == 2;
    /* Not a spec spawn_program writes (a variable set by hand): the program starts as usual. */
    if (!worker && !server) return;
    const char *preload = getenv("FORKLIFT_SPAWN_PRELOAD");
    if (preload) {
        setenv("LD_PRELOAD", preload, 1);
        unsetenv("FORKLIFT_SPAWN_PRELOAD");
    } else {
        unsetenv("LD_PRELOAD");
    }
    if (worker) become_worker(a, b, (pid_t)parent, death_signal);
    server_main(a, (pid_t)parent);
}

int fls_forkserver_poll_end(int status_fd, int pid_fd, int *end) {
    fls_forkserver_end message;
    ssize_t n = recv(status_fd, &message, sizeof message, MSG_DONTWAIT);
    if (n == (ssize_t)sizeof message) {
        *end = message.end;
        return 1;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return 0;
    /* The server is gone: the end is unknown; the process counts as ended once it has died. */
    struct pollfd p = {pid_fd, POLLIN, 0};
    if (pid_fd >= 0 && poll(&p, 1, 0) == 0) return 0;
    *end = FL_EXIT_UNKNOWN;
    return 1;
}
