"""The in-process engine of a Pool: a Forklift pool (threads, or forked C worker processes
for native functions) running Python callables and native typed calls."""

from __future__ import annotations

import ctypes
import itertools
import threading
from ctypes import byref, c_char_p, c_int, c_size_t, c_void_p

from . import _lib
from ._results import helping
from ._native import NativeFunction

_signatures: dict = {}
_signatures_lock = threading.Lock()


def native_function(function) -> NativeFunction:
    """The prepared form of a ctypes function (cached per function and signature)."""
    from ._native import as_ctypes
    function = as_ctypes(function)
    key = (id(function), tuple(function.argtypes or ()), function.restype)
    with _signatures_lock:
        entry = _signatures.get(key)
        if entry is None or entry.function is not function:
            entry = NativeFunction(function)
            _signatures[key] = entry
        return entry


class CEngine:
    """Owns one ``fl_pool``. On the thread backend it also runs Python callables: each is a
    task of one ``fl_group`` whose C function re-enters Python (taking the GIL) by task id."""

    def __init__(self, workers: int | None, backend: int, initializer=None, initargs=(), name="forklift"):
        options = _lib.PoolOptions()
        _lib.lib.fl_pool_options_init(byref(options))
        options.workers = workers if workers else -1
        options.backend = backend
        options.name = name.encode()[:10]
        self._initializer = initializer
        self._initargs = initargs
        self._init_error = None
        if initializer is not None:
            self._init_trampoline = _lib.fl_init_fn(self._run_initializer)
            options.initializer = ctypes.cast(self._init_trampoline, c_void_p)
        handle = c_void_p()
        _lib.check(_lib.lib.fl_pool_create(byref(options), byref(handle)), "pool")
        self.handle = handle
        self.workers = _lib.lib.fl_pool_workers(handle)
        self._tasks: dict = {}
        self._retired: list = []  # entries failed by terminate(), kept until the workers end
        self._ids = itertools.count(1)
        self._task_trampoline = _lib.fl_task_fn(self._run_task)
        self._done_trampoline = _lib.fl_result_cb(self._native_done)
        self._failed_trampoline = _lib.fl_result_cb(self._native_failed)
        group = c_void_p()
        if backend == _lib.BACKEND_THREAD:
            _lib.check(_lib.lib.fl_group_create(handle, byref(group)), "group")
        self._group = group
        self._closed = False

    # ---- Python callables (thread backend) ----

    def _run_initializer(self, user, data, length):
        try:
            self._initializer(*self._initargs)
            return 0
        except BaseException as error:
            self._init_error = error
            return 1

    def submit(self, function, args, kwds, finish, start=None):
        """Runs ``function(*args, **kwds)`` on a worker thread; ``finish(success, value)`` once.
        ``start()``, if given, is asked on that thread just before: False skips the call
        (it was cancelled), and ``finish`` then gets a CancelledError."""
        task_id = next(self._ids)
        self._tasks[task_id] = (function, args, kwds, finish, start)
        code = _lib.lib.fl_group_submit(self._group, self._task_trampoline, task_id, None, 0)
        if code != _lib.OK:
            self._tasks.pop(task_id, None)
            raise _lib.error(code, "submit")
        return task_id

    def _run_task(self, user, data, length, ctx):
        entry = self._tasks.pop(user, None)
        if entry is None:  # failed as cancelled by terminate() just before it could start
            return 0
        self._run_entry(entry)
        return 0

    def _run_entry(self, entry):
        function, args, kwds, finish, start = entry
        if start is not None and not start():
            finish(False, _lib.CancelledError("the call was cancelled before it ran", _lib.ECANCELED))
            return
        outer = getattr(helping, "engine", None)
        helping.engine = self
        try:
            value = function(*args, **kwds)
        except BaseException as error:
            finish(False, error)
        else:
            finish(True, value)
        finally:
            helping.engine = outer

    def run_if_queued(self, task_id: int):
        """Runs Python task `task_id` on this thread (one of the pool's workers, waiting for
        its result) if no worker has taken it yet; that worker later finds it gone."""
        entry = self._tasks.get(task_id)
        if entry is None or len(entry) != 5:  # taken, or a native call (not run from Python)
            return
        entry = self._tasks.pop(task_id, None)
        if entry is not None:
            self._run_entry(entry)

    # ---- native functions ----

    def apply_native(self, native: NativeFunction, args):
        keep = []
        packed = native.tuple_bytes(args, keep)
        result = native.Result() if native.Result is not None else None
        code = _lib.lib.fl_pool_apply_typed(self.handle, native.signature, native.address,
                                            byref(packed) if args else None,
                                            byref(result) if result is not None else None)
        _lib.check(code, "apply")
        return native.convert(result)

    def starmap_native(self, native: NativeFunction, argument_tuples, chunksize=0):
        packed, results, keep = self._pack_many(native, argument_tuples)
        count = len(argument_tuples)
        if count == 0:
            return []
        code = _lib.lib.fl_pool_starmap_typed(self.handle, native.signature, native.address, packed, count,
                                              results, chunksize or 0)
        _lib.check(code, "map")
        return self._unpack(native, results, count)

    def _pack_many(self, native, argument_tuples):
        keep = []
        count = len(argument_tuples)
        packed = (native.Tuple * max(count, 1))()
        for i, args in enumerate(argument_tuples):
            native.pack(tuple(args), packed[i], keep)
        results = (native.Result * max(count, 1))() if native.Result is not None else None
        return packed, results, keep

    @staticmethod
    def _unpack(native, results, count):
        if results is None:
            return [None] * count
        values = results[:count]
        if native.restype is c_char_p:
            return [ctypes.string_at(v) if v else None for v in values]
        return list(values)

    def apply_native_async(self, native, args, finish):
        keep = []
        packed = native.tuple_bytes(args, keep)
        task_id = next(self._ids)
        self._tasks[task_id] = (native, packed, keep, finish, None, 1)
        code = _lib.lib.fl_pool_apply_typed_async(self.handle, native.signature, native.address,
                                                  byref(packed) if args else None, self._done_trampoline,
                                                  self._failed_trampoline, task_id, None)
        if code != _lib.OK:
            self._tasks.pop(task_id, None)
            raise _lib.error(code, "apply_async")

    def starmap_native_async(self, native, argument_tuples, chunksize, finish):
        count = len(argument_tuples)
        if count == 0:
            finish(True, [])
            return
        packed, results, keep = self._pack_many(native, argument_tuples)
        task_id = next(self._ids)
        self._tasks[task_id] = (native, packed, keep, finish, results, count)
        code = _lib.lib.fl_pool_starmap_typed_async(self.handle, native.signature, native.address, packed,
                                                    count, results, chunksize or 0, self._done_trampoline,
                                                    self._failed_trampoline, task_id, None)
        if code != _lib.OK:
            self._tasks.pop(task_id, None)
            raise _lib.error(code, "map_async")

    def _native_done(self, user, result):
        entry = self._tasks.pop(user, None)
        if entry is None:  # already failed as cancelled by terminate()
            return
        native, packed, keep, finish, results, count = entry
        if results is not None or native.Result is None:
            finish(True, self._unpack(native, results, count) if results is not None else
                   ([None] * count if count > 1 or isinstance(packed, ctypes.Array) else None))
            return
        data, length = c_void_p(), c_size_t()
        _lib.lib.fl_result_get(result, 0, byref(data), byref(length))
        value = native.Result()
        ctypes.memmove(byref(value), data, min(length.value, ctypes.sizeof(value)))
        finish(True, native.convert(value))

    def _native_failed(self, user, result):
        entry = self._tasks.pop(user, None)
        if entry is None:
            return
        finish = entry[3]
        code, message = c_int(), c_char_p()
        _lib.lib.fl_result_error(result, byref(code), byref(message))
        text = message.value.decode(errors="replace") if message.value else ""
        status = code.value if code.value < 0 else _lib.ETASK
        finish(False, _lib.error(status, text) if status < 0 else _lib.TaskError(text))

    # ---- life cycle ----

    def wait_idle(self):
        if self._group:
            _lib.lib.fl_group_wait(self._group, _lib.FOREVER)

    def terminate(self):
        _lib.lib.fl_pool_terminate(self.handle)
        for task_id in list(self._tasks):
            entry = self._tasks.pop(task_id, None)
            if entry is not None:
                # A native call may still be writing into its buffers: they live until join().
                self._retired.append(entry)
                entry[3](False, _lib.CancelledError("the pool was terminated before the task ran", _lib.ECANCELED))

    def close(self):
        _lib.lib.fl_pool_close(self.handle)

    def join(self):
        if self._closed:
            return
        self._closed = True
        if self._group:
            _lib.lib.fl_group_destroy(self._group)
            self._group = None
        _lib.lib.fl_pool_close(self.handle)
        _lib.lib.fl_pool_join(self.handle, _lib.FOREVER)
        _lib.lib.fl_pool_destroy(self.handle)
        self._retired.clear()
