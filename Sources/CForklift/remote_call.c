/*
 * Remote tasks and actor calls in a worker process: unpacks an fls_remote_call into the
 * argument blobs of the user's function, mapping large objects from the runtime's shared
 * memory instead of copying them, and calls the function. Runs in a forked child before the
 * user's code, so it uses only system calls and the C library.
 */
#define _GNU_SOURCE
#include "forklift_arena.h"
#include "forklift_worker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The state an isolated actor's constructor made in this process. */
static void *actor_state;

/* Arguments kept on the stack up to this many; more are allocated. */
#define STACK_ARGS 16

/* Mappings of the last call's shared arguments: unmapped once its answer is out, so tearing
 * down a large mapping does not delay the answer. */
static struct {
    void *data;
    size_t len;
} *unmap_later;
static size_t unmap_count, unmap_capacity;

static void release_later(void *data, size_t len) {
    if (unmap_count == unmap_capacity) {
        size_t capacity = unmap_capacity ? unmap_capacity * 2 : 16;
        void *grown = realloc(unmap_later, capacity * sizeof *unmap_later);
        if (!grown) {
            munmap(data, len);
            return;
        }
        unmap_later = grown;
        unmap_capacity = capacity;
    }
    unmap_later[unmap_count].data = data;
    unmap_later[unmap_count].len = len;
    unmap_count++;
}

void fls_remote_child_after_response(void) {
    for (size_t i = 0; i < unmap_count; i++) munmap(unmap_later[i].data, unmap_later[i].len);
    unmap_count = 0;
}

/* The owner's arena segments this process has mapped (read-only, whole): kept for the life of
 * the process, so the page tables that reading an object set up serve every later object
 * placed in the same pages. The owner never closes a segment, and a mapping keeps its file
 * alive, so an inode seen here cannot be reused for another file while it is listed. */
static struct {
    pid_t owner;
    uint64_t inode;
    uint64_t span;
    const char *base;
} arena_segments[FLS_ARENA_SEGMENTS];
static size_t arena_segment_count;

/* The base of the owner's segment `fd` (checked against `inode` and `span`), mapping it the
 * first time; NULL with errno on failure. */
static const char *arena_segment(pid_t owner, int fd, uint64_t inode, uint64_t span) {
    for (size_t i = 0; i < arena_segment_count; i++) {
        if (arena_segments[i].owner == owner && arena_segments[i].inode == inode && arena_segments[i].span == span) {
            return arena_segments[i].base;
        }
    }
    if (arena_segment_count == FLS_ARENA_SEGMENTS) {
        errno = ENOSPC;
        return NULL;
    }
    int local = fls_open_peer_fd(owner, fd);
    if (local < 0) return NULL;
    struct stat info;
    if (fstat(local, &info) != 0 || (uint64_t)info.st_ino != inode || (uint64_t)info.st_size < span) {
        close(local);
        errno = ESTALE;
        return NULL;
    }
    void *map = mmap(NULL, span, PROT_READ, MAP_SHARED | MAP_NORESERVE, local, 0);
    close(local);
    if (map == MAP_FAILED) return NULL;
    arena_segments[arena_segment_count].owner = owner;
    arena_segments[arena_segment_count].inode = inode;
    arena_segments[arena_segment_count].span = span;
    arena_segments[arena_segment_count].base = map;
    arena_segment_count++;
    return map;
}

/* The bytes of a shared argument: in an arena segment (kept mapped), or a memfd of their own
 * (inode 0: mapped for this call). NULL with errno on failure. */
static const void *shared_argument(pid_t owner, const fls_remote_arg *record) {
    if (record->inode == 0) {
        return fls_map_peer_fd(owner, record->fd, (size_t)record->len);
    }
    if (record->offset > record->span || record->len > record->span - record->offset) {
        errno = EINVAL;
        return NULL;
    }
    const char *base = arena_segment(owner, record->fd, record->inode, record->span);
    return base ? base + record->offset : NULL;
}

typedef int (*call_fn)(const fls_remote_call *call, const fl_blob *args, size_t nargs, void *context);

/* Checks the call, makes the blobs (mapping shared objects), calls `fn`, unmaps. */
static int with_arguments(const void *bytes, size_t len, call_fn fn, void *context, char *error, size_t error_len) {
    const fls_remote_call *call = bytes;
    if (len < sizeof *call || (len - sizeof *call) / sizeof(fls_remote_arg) < call->nargs) {
        snprintf(error, error_len, "malformed remote call (%zu bytes)", len);
        return -1;
    }
    const fls_remote_arg *records = (const fls_remote_arg *)(call + 1);
    if (call->signature_len > 0) {
        size_t text_at = sizeof *call + call->nargs * sizeof *records;
        if (call->signature_len > len - text_at || ((const char *)bytes)[text_at + call->signature_len - 1] != '\0') {
            snprintf(error, error_len, "malformed remote call: bad signature text");
            return -1;
        }
    }
    fl_blob stack[STACK_ARGS];
    fl_blob *blobs = call->nargs <= STACK_ARGS ? stack : malloc(call->nargs * sizeof *blobs);
    if (!blobs) {
        snprintf(error, error_len, "no memory for %u arguments", call->nargs);
        return -1;
    }
    size_t mapped = 0;
    int failed = 0;
    for (uint32_t i = 0; i < call->nargs; i++) {
        const fls_remote_arg *record = &records[i];
        blobs[i].len = (size_t)record->len;
        blobs[i].data = NULL;
        if (record->len == 0) continue;
        if (record->fd >= 0) {
            blobs[i].data = shared_argument((pid_t)call->owner_pid, record);
            if (!blobs[i].data) {
                snprintf(error, error_len, "could not map argument %u (%llu bytes) from process %d: %s", i,
                         (unsigned long long)record->len, (int)call->owner_pid, strerror(errno));
                failed = 1;
                break;
            }
            mapped = i + 1;
        } else {
            if (record->offset > len || record->len > len - record->offset) {
                snprintf(error, error_len, "malformed remote call: argument %u out of range", i);
                failed = 1;
                break;
            }
            blobs[i].data = (const char *)bytes + record->offset;
        }
    }
    int code = failed ? -1 : fn(call, blobs, call->nargs, context);
    /* A mapping of its own is unmapped once the answer is out; an arena segment stays. */
    for (size_t i = 0; i < mapped; i++) {
        if (records[i].fd >= 0 && records[i].inode == 0 && blobs[i].data) release_later((void *)blobs[i].data, blobs[i].len);
    }
    if (blobs != stack) free(blobs);
    return code;
}

/* A typed task: the C function through libffi, its return value the task's result. */
static int call_typed(const fls_remote_call *call, const fl_blob *args, size_t nargs, void *context) {
    const char *text = (const char *)((const fls_remote_arg *)(call + 1) + call->nargs);
    char error[256];
    fls_sig *sig = fls_child_signature(text, error, sizeof error);
    if (!sig) {
        fls_child_task_fail(context, FL_EINVAL, error);
        return -1;
    }
    size_t size = fls_sig_result_size(sig);
    void *result = NULL;
    if (size > 0 && fls_child_task_result_buffer(context, size, &result) != FL_OK) {
        fls_child_task_fail(context, FL_ENOMEM, "no memory for a typed result");
        return -1;
    }
    if (fls_sig_call_blobs(sig, call->fn, args, nargs, result, error, sizeof error) != 0) {
        fls_child_task_fail(context, FL_EINVAL, error);
        return -1;
    }
    return 0;
}

static int call_task(const fls_remote_call *call, const fl_blob *args, size_t nargs, void *context) {
    if (call->signature_len > 0) return call_typed(call, args, nargs, context);
    fl_remote_fn fn = (fl_remote_fn)call->fn;
    return fn(call->is_method ? actor_state : call->user, args, nargs, (fl_task_ctx)context);
}

int fls_remote_child_task(void *user, const void *arg, size_t len, fl_task_ctx ctx) {
    (void)user;
    char error[FLS_MAILBOX_MESSAGE] = "";
    int code = with_arguments(arg, len, call_task, ctx, error, sizeof error);
    if (code == -1 && error[0] != '\0') {
        fls_child_task_fail(ctx, FL_ESYSTEM, error);
    }
    return code;
}

static int call_constructor(const fls_remote_call *call, const fl_blob *args, size_t nargs, void *context) {
    (void)context;
    fl_actor_init_fn fn = (fl_actor_init_fn)call->fn;
    return fn(call->user, args, nargs, &actor_state);
}

int fls_remote_child_construct(void *user, const void *args, size_t len) {
    (void)user;
    char error[FLS_MAILBOX_MESSAGE] = "";
    return with_arguments(args, len, call_constructor, NULL, error, sizeof error);
}
