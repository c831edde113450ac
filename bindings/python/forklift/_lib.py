"""Loads libforklift and declares the C functions the package calls (ctypes, ABI mode).

The library is looked up, in order, at ``$FORKLIFT_LIBRARY``, next to this package (a
wheel or ``pip install`` bundles it there), in the build folder of the source tree this
package sits in, and on the system's library path.
"""

from __future__ import annotations

import builtins
import ctypes
import ctypes.util
import multiprocessing
import os
from ctypes import (CFUNCTYPE, POINTER, Structure, c_char_p, c_double, c_int, c_size_t,
                    c_uint, c_uint8, c_uint64, c_void_p, c_int64)

#: The C API version this package was written for (major, minor).
API_VERSION = (0, 1)

FOREVER = -1.0

# Status codes (forklift.h).
OK = 0
EINVAL = -1
EHANDLE = -2
ENOMEM = -3
ESTATE = -4
ETIMEDOUT = -5
ECANCELED = -6
ETASK = -7
EDONE = -8
ERANGE = -9
EDEADLK = -10
EINIT = -11
ESOURCE = -12
ESYSTEM = -13
EWORKER = -14
ENOTSUP = -15

BACKEND_THREAD = 0
BACKEND_PROCESS = 1

# fl_cancel_with flags.
CANCEL_FORCE = 1
CANCEL_RECURSIVE = 2


class ForkliftError(Exception):
    """A call into Forklift failed. ``code`` is the C status code (``FL_E...``)."""

    def __init__(self, message: str, code: int = EINVAL):
        super().__init__(message)
        self.code = code


class TimeoutError(ForkliftError, multiprocessing.TimeoutError, builtins.TimeoutError):
    """A wait ran out of time (``FL_ETIMEDOUT``); nothing was lost, the wait may be retried.
    Also a ``multiprocessing.TimeoutError`` (what code written for multiprocessing catches) and
    the builtin ``TimeoutError``."""


class InvalidArgumentError(ForkliftError, ValueError):
    """An argument was refused (``FL_EINVAL``); nothing was done."""


class CancelledError(ForkliftError):
    """The task was cancelled before it could finish (``FL_ECANCELED``)."""


class WorkerLostError(ForkliftError):
    """The worker process running the task died (crash, signal, exit): ``FL_EWORKER``."""


class TaskError(ForkliftError):
    """A native task reported a failure; ``task_code`` is the code it returned."""

    def __init__(self, message: str, code: int = ETASK, task_code: int = 0):
        super().__init__(message, code)
        self.task_code = task_code


def _candidates():
    env = os.environ.get("FORKLIFT_LIBRARY")
    if env:
        yield env
        return
    here = os.path.dirname(os.path.abspath(__file__))
    yield os.path.join(here, "libforklift.so")
    root = os.path.dirname(os.path.dirname(os.path.dirname(here)))
    yield os.path.join(root, "build", "lib", "libforklift.so")
    found = ctypes.util.find_library("forklift")
    if found:
        yield found


def _load():
    tried = []
    for path in _candidates():
        if os.path.sep in path and not os.path.exists(path):
            tried.append(path)
            continue
        try:
            return ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL), path
        except OSError as error:
            tried.append(f"{path} ({error})")
    raise ImportError("libforklift.so not found; build it with `make lib` or set FORKLIFT_LIBRARY. "
                      "Tried: " + ", ".join(tried))


lib, LIBRARY_PATH = _load()

# ---- types ----
fl_handle = c_void_p
fl_task_fn = CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t, c_void_p)
fl_result_cb = CFUNCTYPE(None, c_void_p, c_void_p)
fl_source_fn = CFUNCTYPE(c_int, c_void_p, POINTER(c_void_p), POINTER(c_size_t))


class Blob(Structure):
    _fields_ = [("data", c_void_p), ("len", c_size_t)]


fl_remote_fn = CFUNCTYPE(c_int, c_void_p, POINTER(Blob), c_size_t, c_void_p)
fl_actor_init_fn = CFUNCTYPE(c_int, c_void_p, POINTER(Blob), c_size_t, POINTER(c_void_p))
fl_actor_free_fn = CFUNCTYPE(None, c_void_p, c_void_p)
fl_init_fn = CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t)


class PoolOptions(Structure):
    _fields_ = [("size", c_size_t), ("workers", c_int), ("initializer", c_void_p),
                ("initializer_user", c_void_p), ("initargs", c_void_p), ("initargs_len", c_size_t),
                ("name", c_char_p), ("backend", c_int), ("task_timeout", c_double),
                ("max_tasks_per_child", c_size_t), ("task_retries", c_int)]


class ProcessOptions(Structure):
    _fields_ = [("size", c_size_t), ("daemon", c_int), ("start_method", c_int)]


class Arg(Structure):
    _fields_ = [("data", c_void_p), ("len", c_size_t), ("ref", c_void_p)]


class RuntimeOptions(Structure):
    _fields_ = [("size", c_size_t), ("workers", c_size_t), ("store_capacity", c_size_t), ("process_workers", c_size_t)]


fl_release_fn = CFUNCTYPE(None, c_void_p)
fl_ready_fn = CFUNCTYPE(None, c_void_p, c_int)


class RemoteOptions(Structure):
    _fields_ = [("size", c_size_t), ("max_retries", c_int), ("retry_on_error", c_int), ("num_cpus", c_int),
                ("isolate", c_int), ("release_user", fl_release_fn)]


class ActorOptions(Structure):
    _fields_ = [("size", c_size_t), ("max_concurrency", c_int), ("isolate", c_int), ("max_restarts", c_int),
                ("max_task_retries", c_int)]


class RuntimeStats(Structure):
    _fields_ = [(name, c_uint64) for name in ("tasks_submitted", "tasks_running", "tasks_finished",
                                               "tasks_failed", "objects", "object_bytes")]


def _declare(name, restype, *argtypes):
    function = getattr(lib, name)
    function.restype = restype
    function.argtypes = list(argtypes)
    return function


P = c_void_p
PP = POINTER(c_void_p)
SZ = c_size_t
PSZ = POINTER(c_size_t)
D = c_double
I = c_int

_declare("fl_version", c_char_p)
_declare("fl_version_number", I)
_declare("fl_strerror", c_char_p, I)
_declare("fl_last_error", c_char_p)
_declare("fl_cpu_count", I)
# pools
_declare("fl_pool_options_init", I, POINTER(PoolOptions))
_declare("fl_pool_create", I, POINTER(PoolOptions), PP)
_declare("fl_pool_workers", I, P)
_declare("fl_pool_close", I, P)
_declare("fl_pool_terminate", I, P)
_declare("fl_pool_join", I, P, D)
_declare("fl_pool_destroy", I, P)
_declare("fl_pool_apply", I, P, fl_task_fn, P, P, SZ, P, SZ, PSZ)
_declare("fl_pool_apply_async", I, P, fl_task_fn, P, P, SZ, fl_result_cb, fl_result_cb, P, PP)
_declare("fl_pool_starmap", I, P, fl_task_fn, P, POINTER(Blob), SZ, SZ, PP)
_declare("fl_pool_starmap_async", I, P, fl_task_fn, P, POINTER(Blob), SZ, SZ, fl_result_cb,
         fl_result_cb, P, PP)
_declare("fl_group_create", I, P, PP)
_declare("fl_group_submit", I, P, fl_task_fn, P, P, SZ)
_declare("fl_group_wait", I, P, D)
_declare("fl_group_destroy", I, P)
_declare("fl_signature_create", I, c_char_p, PP)
_declare("fl_signature_layout", I, P, PSZ, PSZ, PSZ)
_declare("fl_signature_destroy", I, P)
_declare("fl_pool_apply_typed", I, P, P, P, P, P)
_declare("fl_pool_apply_typed_async", I, P, P, P, P, fl_result_cb, fl_result_cb, P, PP)
_declare("fl_pool_starmap_typed", I, P, P, P, P, SZ, P, SZ)
_declare("fl_pool_starmap_typed_async", I, P, P, P, P, SZ, P, SZ, fl_result_cb, fl_result_cb, P, PP)
_declare("fl_result_wait", I, P, D)
_declare("fl_result_ready", I, P)
_declare("fl_result_successful", I, P)
_declare("fl_result_get", I, P, D, PP, PSZ)
_declare("fl_result_count", I, P, PSZ)
_declare("fl_result_item", I, P, SZ, PP, PSZ)
_declare("fl_result_error", I, P, POINTER(c_int), POINTER(c_char_p))
_declare("fl_result_item_error", I, P, SZ, POINTER(c_int), POINTER(c_char_p))
_declare("fl_result_release", I, P)
_declare("fl_task_return", I, P, P, SZ)
_declare("fl_task_fail", I, P, I, c_char_p)
_declare("fl_task_cancelled", I, P)
# processes and shared objects
_declare("fl_process_options_init", I, POINTER(ProcessOptions))
_declare("fl_process_start", I, fl_task_fn, P, P, SZ, POINTER(ProcessOptions), PP)
_declare("fl_process_join", I, P, D)
_declare("fl_process_is_alive", I, P)
_declare("fl_process_exitcode", I, P, POINTER(c_int))
_declare("fl_process_pid", I, P, POINTER(c_int64))
_declare("fl_process_terminate", I, P)
_declare("fl_process_kill", I, P)
_declare("fl_process_destroy", I, P)
_declare("fl_queue_create", I, SZ, SZ, PP)
_declare("fl_queue_put", I, P, P, SZ, D)
_declare("fl_queue_get", I, P, P, SZ, PSZ, D)
_declare("fl_queue_count", I, P, PSZ)
_declare("fl_queue_close", I, P)
_declare("fl_queue_name", I, P, c_char_p, SZ)
_declare("fl_queue_open", I, c_char_p, PP)
_declare("fl_queue_destroy", I, P)
_declare("fl_shm_create", I, c_char_p, SZ, PP)
_declare("fl_shm_open", I, c_char_p, PP)
_declare("fl_shm_data", I, P, PP, PSZ)
_declare("fl_shm_name", I, P, c_char_p, SZ)
_declare("fl_shm_close", I, P)
_declare("fl_shm_unlink", I, c_char_p)
_declare("fl_pipe_create", I, I, PP, PP)
_declare("fl_pipe_send", I, P, P, SZ, D)
_declare("fl_pipe_recv", I, P, P, SZ, PSZ, D)
_declare("fl_pipe_poll", I, P, D)
_declare("fl_pipe_fd", I, P, POINTER(c_int))
_declare("fl_pipe_close", I, P)
_declare("fl_lock_create", I, I, PP)
_declare("fl_lock_acquire", I, P, D)
_declare("fl_lock_release", I, P)
_declare("fl_lock_name", I, P, c_char_p, SZ)
_declare("fl_lock_open", I, c_char_p, PP)
_declare("fl_lock_destroy", I, P)
_declare("fl_event_create", I, PP)
_declare("fl_event_set", I, P)
_declare("fl_event_clear", I, P)
_declare("fl_event_is_set", I, P, POINTER(c_int))
_declare("fl_event_wait", I, P, D)
_declare("fl_event_name", I, P, c_char_p, SZ)
_declare("fl_event_open", I, c_char_p, PP)
_declare("fl_event_destroy", I, P)
_declare("fl_semaphore_create", I, c_uint, c_uint, PP)
_declare("fl_semaphore_acquire", I, P, D)
_declare("fl_semaphore_release", I, P)
_declare("fl_semaphore_value", I, P, POINTER(c_uint))
_declare("fl_semaphore_name", I, P, c_char_p, SZ)
_declare("fl_semaphore_open", I, c_char_p, PP)
_declare("fl_semaphore_destroy", I, P)
# remote
_declare("fl_runtime_options_init", I, POINTER(RuntimeOptions))
_declare("fl_runtime_create", I, POINTER(RuntimeOptions), PP)
_declare("fl_runtime_shutdown", I, P)
_declare("fl_runtime_get_stats", I, P, POINTER(RuntimeStats))
_declare("fl_remote_options_init", I, POINTER(RemoteOptions))
_declare("fl_remote", I, P, fl_remote_fn, P, POINTER(Arg), SZ, POINTER(RemoteOptions), PP)
_declare("fl_put", I, P, P, SZ, PP)
_declare("fl_get", I, P, D, PP, PSZ)
_declare("fl_wait", I, POINTER(c_void_p), SZ, SZ, D, POINTER(c_uint8))
_declare("fl_ref_clone", I, P, PP)
_declare("fl_ref_release", I, P)
_declare("fl_ref_on_ready", I, P, fl_ready_fn, P)
_declare("fl_cancel", I, P)
_declare("fl_cancel_with", I, P, c_uint)
_declare("fl_actor_options_init", I, POINTER(ActorOptions))
_declare("fl_actor_create", I, P, fl_actor_init_fn, fl_actor_free_fn, P, POINTER(Arg), SZ,
         POINTER(ActorOptions), PP)
_declare("fl_actor_call", I, P, fl_remote_fn, POINTER(Arg), SZ, PP)
_declare("fl_actor_kill", I, P)
_declare("fl_function_register", I, c_char_p, fl_remote_fn, P)
_declare("fl_function_unregister", I, c_char_p)
_declare("fl_remote_typed", I, P, P, P, POINTER(Arg), SZ, POINTER(RemoteOptions), PP)
_declare("fl_remote_named", I, P, c_char_p, POINTER(Arg), SZ, POINTER(RemoteOptions), PP)
_declare("fl_remote_multi", I, P, fl_remote_fn, P, POINTER(Arg), SZ, POINTER(RemoteOptions), SZ, PP)
_declare("fl_task_return_at", I, P, SZ, P, SZ)
_declare("fl_create", I, P, SZ, PP, PP)
_declare("fl_seal", I, P)
_declare("fl_ref_contain", I, P, P, PSZ)
_declare("fl_ref_contained", I, P, SZ, PP)
_declare("fl_ref_contained_count", I, P, PSZ)
_declare("fl_task_contain", I, P, SZ, P, PSZ)
_declare("fl_arg_contained", I, SZ, SZ, PP)
_declare("fl_get_many", I, POINTER(c_void_p), SZ, D, PP, PSZ, POINTER(c_int))
_declare("fl_runtime_trace_start", I, P)
_declare("fl_runtime_trace_stop", I, P)
_declare("fl_runtime_trace_write", I, P, c_char_p)
_declare("fl_runtime_set_spill_directory", I, P, c_char_p)


def version() -> str:
    """The library's version string."""
    return lib.fl_version().decode()


def _check_version():
    number = lib.fl_version_number()
    major, minor = number // 10000, number // 100 % 100
    if major != API_VERSION[0] or minor < API_VERSION[1]:
        raise ImportError(f"{LIBRARY_PATH} is Forklift {version()}; this package needs "
                          f"{API_VERSION[0]}.{API_VERSION[1]} or a later {API_VERSION[0]}.x")


_check_version()

_ERRORS = {EINVAL: InvalidArgumentError, ETIMEDOUT: TimeoutError, ECANCELED: CancelledError, EWORKER: WorkerLostError}


def last_error() -> str:
    message = lib.fl_last_error()
    return message.decode(errors="replace") if message else ""


def error(code: int, context: str = "") -> ForkliftError:
    """The exception for status ``code``, with the calling thread's detail message."""
    detail = last_error() or lib.fl_strerror(code).decode()
    message = f"{context}: {detail}" if context else detail
    return _ERRORS.get(code, ForkliftError)(message, code)


def check(code: int, context: str = "") -> int:
    """Raises the matching exception when ``code`` is negative; returns it otherwise."""
    if code < 0:
        raise error(code, context)
    return code


def cpu_count() -> int:
    """Logical CPUs this process may run on."""
    return lib.fl_cpu_count()
