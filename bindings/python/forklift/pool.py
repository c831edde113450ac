"""forklift.Pool: the multiprocessing.Pool API on Forklift's engines.

Python callables run on worker processes (``backend="process"``, the default, for real
parallelism) or on the library's worker threads (``backend="thread"``). Native functions
(ctypes function pointers with ``argtypes``/``restype``) are called through the typed-call
path on the library's workers, in parallel and without the GIL, on either backend.
"""

from __future__ import annotations

import itertools
import threading
import weakref

from . import _lib
from ._engine import CEngine, native_function
from ._native import is_native
from ._results import AsyncResult, Dispatcher, IMapIterator, MapResult, Tracker
from .progress import Progress

_RUN, _CLOSE, _TERMINATE = "RUN", "CLOSE", "TERMINATE"


def _star(function, kwds=None):
    return lambda args: function(*args)


def _run_chunk(function, chunk, star):
    """Runs one chunk of a map in a worker (module level, so it pickles by reference)."""
    if star:
        return [function(*args) for args in chunk]
    return [function(item) for item in chunk]


class Pool:
    """A pool of workers with multiprocessing.Pool's methods and semantics.

    ``processes``: workers (default: the CPU count). ``initializer(*initargs)`` runs once in
    every worker. ``maxtasksperchild``: tasks a worker process runs before it is replaced.
    ``backend``: "process" (Python callables in worker processes) or "thread" (on threads;
    they then share the GIL). ``start_method`` of the worker processes: "forkserver"
    (default), "spawn" or "fork". Callbacks run on one thread per pool, in completion order.
    """

    def __init__(self, processes=None, initializer=None, initargs=(), maxtasksperchild=None,
                 backend="process", start_method="forkserver"):
        if processes is not None and processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if maxtasksperchild is not None and (not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0):
            raise ValueError("maxtasksperchild must be a positive int or None")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if backend not in ("process", "thread"):
            raise ValueError('backend must be "process" or "thread"')
        self._processes = processes or _lib.cpu_count()
        self._backend = backend
        self._iterators: weakref.WeakSet = weakref.WeakSet()  # imap iterators, drained at close
        self._feeder = None  # the thread that submits their rest after close
        self._state = _RUN
        self._lock = threading.Lock()
        self._tracker = Tracker()
        self._dispatcher = Dispatcher("forklift-callbacks")
        self._native_engine = None
        self._initializer, self._initargs = initializer, tuple(initargs)
        if backend == "thread":
            self._engine = CEngine(self._processes, _lib.BACKEND_THREAD, initializer, self._initargs)
            self._native_engine = self._engine
        else:
            from ._procpool import ProcessEngine
            self._engine = ProcessEngine(self._processes, initializer, self._initargs, maxtasksperchild,
                                         start_method)

    # ---- helpers ----

    def _check_running(self):
        if self._state != _RUN:
            raise ValueError("Pool not running")

    def _native(self):
        """The engine for native functions: the thread pool, or forked C worker processes."""
        with self._lock:
            if self._native_engine is None:
                self._native_engine = CEngine(self._processes, _lib.BACKEND_PROCESS)
            return self._native_engine

    def _default_chunksize(self, count: int) -> int:
        chunksize, extra = divmod(count, self._processes * 4)
        return chunksize + 1 if extra else max(chunksize, 1)

    # ---- apply ----

    def apply(self, func, args=(), kwds={}):
        """Calls ``func(*args, **kwds)`` in a worker and returns its value (blocks)."""
        self._check_running()
        if is_native(func) and not kwds:
            return self._native().apply_native(native_function(func), tuple(args))
        return self.apply_async(func, args, kwds).get()

    def apply_async(self, func, args=(), kwds={}, callback=None, error_callback=None):
        """Like apply, returning an AsyncResult at once."""
        self._check_running()
        result = AsyncResult(self._dispatcher, self._tracker, callback, error_callback)
        try:
            if is_native(func) and not kwds:
                self._native().apply_native_async(native_function(func), tuple(args), result._set)
            else:
                task_id = self._engine.submit(func, tuple(args), dict(kwds), result._set)
                if task_id is not None:
                    result._made_by(self._engine, (task_id,))
        except BaseException:
            self._tracker.done()
            raise
        return result

    # ---- map ----

    def map(self, func, iterable, chunksize=None, progress=False):
        """``[func(x) for x in iterable]`` computed by the workers, in order."""
        return self._map(func, iterable, chunksize, star=False, progress=progress).get()

    def starmap(self, func, iterable, chunksize=None, progress=False):
        """``[func(*args) for args in iterable]`` computed by the workers, in order."""
        return self._map(func, iterable, chunksize, star=True, progress=progress).get()

    def map_async(self, func, iterable, chunksize=None, callback=None, error_callback=None, progress=False):
        """Like map, returning an AsyncResult whose value is the list."""
        return self._map(func, iterable, chunksize, False, callback, error_callback, progress)

    def starmap_async(self, func, iterable, chunksize=None, callback=None, error_callback=None, progress=False):
        """Like starmap, returning an AsyncResult whose value is the list."""
        return self._map(func, iterable, chunksize, True, callback, error_callback, progress)

    def _map(self, func, iterable, chunksize, star, callback=None, error_callback=None, progress=False):
        self._check_running()
        items = iterable if isinstance(iterable, (list, tuple)) else list(iterable)
        count = len(items)
        if chunksize is None:
            chunksize = self._default_chunksize(count)
        elif chunksize < 1:
            raise ValueError("chunksize must be at least 1")
        if is_native(func):
            return self._map_native(func, items, star, chunksize, callback, error_callback)
        chunks = [(start, items[start:start + chunksize]) for start in range(0, count, chunksize)]
        result = MapResult(self._dispatcher, self._tracker, len(chunks), count, callback, error_callback)
        bar = Progress(count) if progress else None
        task_ids = []
        for start, chunk in chunks:
            def finish(success, values, start=start, size=len(chunk)):
                if bar is not None and success:
                    bar.advance(size)
                result._chunk_done(start, success, values)
            try:
                task_ids.append(self._engine.submit(_run_chunk, (func, chunk, star), {}, finish))
            except BaseException as error:
                result._chunk_done(start, False, error)
                break
        if task_ids and task_ids[0] is not None:
            result._made_by(self._engine, task_ids)
        if bar is not None:
            bar.attach(result)
        return result

    def _map_native(self, func, items, star, chunksize, callback, error_callback):
        native = native_function(func)
        tuples = [tuple(args) for args in items] if star else [(item,) for item in items]
        result = AsyncResult(self._dispatcher, self._tracker, callback, error_callback)
        try:
            self._native().starmap_native_async(native, tuples, chunksize, result._set)
        except BaseException:
            self._tracker.done()
            raise
        return result

    # ---- imap ----

    def imap(self, func, iterable, chunksize=1):
        """An iterator of ``func(x)`` in input order, pulling the input as it goes."""
        return self._imap(func, iterable, chunksize, ordered=True)

    def imap_unordered(self, func, iterable, chunksize=1):
        """An iterator of ``func(x)`` in completion order."""
        return self._imap(func, iterable, chunksize, ordered=False)

    def _imap(self, func, iterable, chunksize, ordered):
        self._check_running()
        if chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize}")
        native = is_native(func)

        def submit_chunk(chunk, done):
            if native:
                self._native().starmap_native_async(native_function(func), [(x,) for x in chunk], 0, done)
            else:
                self._engine.submit(_run_chunk, (func, chunk, False), {}, done)

        iterator = IMapIterator(submit_chunk, iterable, chunksize, read_ahead=4 * self._processes, ordered=ordered)
        self._iterators.add(iterator)
        return iterator

    # ---- life cycle ----

    def close(self):
        """No more tasks; the workers end once the queued ones are done. An ``imap`` made
        before goes on: a feeder thread submits the rest of its input (as multiprocessing's
        task handler does), then closes the engine; ``join`` waits for it."""
        if self._state == _RUN:
            self._state = _CLOSE
            iterators = list(self._iterators)
            if not iterators:
                self._engine.close()
                return
            self._feeder = threading.Thread(target=self._drain_then_close, args=(iterators,),
                                            name="forklift-imap-feeder", daemon=True)
            self._feeder.start()

    def _drain_then_close(self, iterators):
        for iterator in iterators:
            try:
                iterator.drain()
            except BaseException:  # terminated meanwhile: the iterator has the refusal
                pass
        if self._state == _CLOSE:
            self._engine.close()

    def terminate(self):
        """Stops the workers now; tasks not finished fail with CancelledError."""
        self._state = _TERMINATE
        self._engine.terminate()
        if self._native_engine is not None and self._native_engine is not self._engine:
            self._native_engine.terminate()
        self._finish()

    def join(self):
        """Waits for the workers to end (after close or terminate) and every callback to run."""
        if self._state == _RUN:
            raise ValueError("Pool is still running")
        if threading.current_thread() is self._dispatcher.thread:
            raise RuntimeError("join() from a callback of the same pool would wait for itself")
        self._finish()

    def _finish(self):
        feeder = self._feeder
        if feeder is not None and self._state == _CLOSE and feeder is not threading.current_thread():
            feeder.join()  # the rest of the imap inputs is submitted (after terminate: not waited for)
        self._tracker.wait_idle()
        for engine in {id(e): e for e in (self._engine, self._native_engine) if e is not None}.values():
            engine.join()
        self._dispatcher.stop()

    def __enter__(self):
        self._check_running()
        return self

    def __exit__(self, *exc):
        self.terminate()

    def __del__(self):
        if getattr(self, "_state", None) == _RUN:
            try:
                self.terminate()
            except Exception:
                pass

    def __repr__(self):
        return f"<forklift.Pool state={self._state} backend={self._backend} workers={self._processes}>"
