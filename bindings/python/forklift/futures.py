"""forklift.futures.Executor: a concurrent.futures.Executor on a Forklift Pool.

Works with ``concurrent.futures.as_completed``/``wait`` and ``asyncio.wrap_future``, like
ProcessPoolExecutor and ThreadPoolExecutor.
"""

from __future__ import annotations

import concurrent.futures

from ._engine import native_function
from ._native import is_native
from ._results import Tracker
from .pool import Pool


class Executor(concurrent.futures.Executor):
    """Runs calls on ``max_workers`` workers: processes (``backend="process"``, the default)
    or threads (``backend="thread"``). Native ctypes functions run without the GIL."""

    def __init__(self, max_workers=None, backend="process", initializer=None, initargs=(),
                 max_tasks_per_child=None, start_method="forkserver"):
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        self._pool = Pool(max_workers, initializer, initargs, max_tasks_per_child, backend, start_method)
        self._tracker = Tracker()
        self._shutdown = False
        self._futures: set = set()  # not finished yet (for shutdown's cancel_futures)

    def submit(self, fn, /, *args, **kwargs):
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        future = concurrent.futures.Future()
        self._tracker.add()
        self._futures.add(future)
        started = []  # the one answer of start(), once asked

        def start():
            # The call is handed to its worker: from now on it runs (cancel() says False);
            # one cancelled before never runs. Asked again (a dead worker's queued calls are
            # handed to another), it gives the same answer.
            if not started:
                started.append(future.set_running_or_notify_cancel())
            return started[0]

        def finish(success, value):
            try:
                if not started:  # a native call, or one the engine did not ask about
                    if not start():
                        return
                elif future.cancelled():
                    return
                if success:
                    future.set_result(value)
                else:
                    future.set_exception(value)
            finally:
                self._futures.discard(future)
                self._tracker.done()
        try:
            if is_native(fn) and not kwargs:
                # Native calls cannot be held back once submitted: they run from the start.
                start()
                self._pool._native().apply_native_async(native_function(fn), tuple(args), finish)
            else:
                self._pool._engine.submit(fn, tuple(args), dict(kwargs), finish, start)
        except BaseException:
            self._futures.discard(future)
            self._tracker.done()
            raise
        return future

    def map(self, fn, *iterables, timeout=None, chunksize=1):
        """Like Executor.map; with chunksize > 1 the calls travel in chunks."""
        if chunksize > 1:
            result = self._pool.starmap_async(fn, list(zip(*iterables)), chunksize)
            return iter(result.get(timeout))
        return super().map(fn, *iterables, timeout=timeout)

    def shutdown(self, wait=True, *, cancel_futures=False):
        """As concurrent.futures: with ``cancel_futures``, the calls not started are cancelled
        (they never run); running ones finish."""
        self._shutdown = True
        if cancel_futures:
            for future in list(self._futures):
                future.cancel()  # False for a running one, which goes on
        if wait:
            self._tracker.wait_idle()
            self._pool.close()
            self._pool.join()
        else:
            self._pool.close()
