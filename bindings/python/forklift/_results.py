"""AsyncResult and friends, and the one thread per pool that runs callbacks."""

from __future__ import annotations

import collections
import pickle
import queue
import sys
import threading
import traceback

from . import _lib


#: On a thread-backend pool's worker thread, while it runs a task: that pool's engine. A task
#: that waits for a result of the same pool first runs that result's own tasks if no worker has
#: taken them yet (`AsyncResult._wait`), so tasks that submit to their own pool and wait cannot
#: take every worker and deadlock. (Only those: an unrelated task run there could block the
#: waiter on something the waiter itself was to do next.)
helping = threading.local()


class RemoteTraceback(Exception):
    """The traceback text of an exception raised in a worker process; set as ``__cause__``."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def __str__(self):
        return self.text


class RemoteError(Exception):
    """An exception (or result) of a task that could not travel back as itself: it does not
    pickle, or does not unpickle here. ``type_name`` names its class; the message is its text."""

    def __init__(self, type_name: str, message: str):
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message

    def __reduce__(self):
        return (RemoteError, (self.type_name, self.message))


def qualified_name(value) -> str:
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}"


def portable(error: BaseException) -> BaseException:
    """``error`` if a pickle round trip rebuilds it, else a RemoteError naming its type and
    text (an exception whose ``__init__`` takes other arguments than its ``args``, or that holds
    something unpicklable, would otherwise be lost, or raise a confusing TypeError, on the way)."""
    try:
        pickle.loads(pickle.dumps(error, pickle.HIGHEST_PROTOCOL))
        return error
    except Exception:
        return RemoteError(qualified_name(error), str(error))


def attach_traceback(error: BaseException, text: str | None) -> BaseException:
    if text:
        error.__cause__ = RemoteTraceback('\n"""\n' + text + '"""')
    return error


class Dispatcher:
    """One thread that runs a pool's callbacks, one at a time, in completion order.

    A callback that raises is reported on stderr and never stops the thread.
    """

    def __init__(self, name: str):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def post(self, function, *args):
        self._queue.put((function, args))

    def _run(self):
        while True:
            function, args = self._queue.get()
            if function is None:
                return
            try:
                function(*args)
            except BaseException:  # a callback's failure is reported, never fatal to the pool
                print("forklift: exception in a pool callback:", file=sys.stderr)
                traceback.print_exc()

    def stop(self):
        if self._thread.is_alive():
            self._queue.put((None, ()))
            if threading.current_thread() is not self._thread:
                self._thread.join()

    @property
    def thread(self):
        return self._thread


class Tracker:
    """Counts results not yet delivered, so join() can wait for callbacks to have run."""

    def __init__(self):
        self._pending = 0
        self._idle = threading.Condition()

    def add(self, count=1):
        with self._idle:
            self._pending += count

    def done(self):
        with self._idle:
            self._pending -= 1
            if self._pending == 0:
                self._idle.notify_all()

    def wait_idle(self, timeout=None):
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)


class AsyncResult:
    """The pending result of ``apply_async`` (multiprocessing.pool.AsyncResult).

    The threading.Event that a waiter sleeps on is made only when a thread waits for a result
    that is not ready yet (making one costs more than submitting the task): most results of a
    stream of tasks are ready by the time they are looked at. ``_guard`` orders making the
    event against completing the result, so no waiter misses the completion.
    """

    _guard = threading.Lock()

    def __init__(self, dispatcher: Dispatcher | None, tracker: Tracker | None,
                 callback=None, error_callback=None):
        self._done = False
        self._event = None
        self._dispatcher = dispatcher
        self._tracker = tracker
        self._callback = callback
        self._error_callback = error_callback
        self._success = None
        self._value = None
        # A thread-backend engine and the ids of its tasks that make this result (`_wait`).
        self._engine = None
        self._task_ids = ()
        if tracker is not None:
            tracker.add()

    def _made_by(self, engine, task_ids):
        """Records the engine tasks this result waits for (thread backend)."""
        self._engine = engine
        self._task_ids = task_ids

    def ready(self) -> bool:
        """Whether the call has completed."""
        return self._done

    def successful(self) -> bool:
        """Whether the call completed without raising; ValueError if it is not ready."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._success

    def wait(self, timeout=None):
        """Waits until the result is available or ``timeout`` seconds pass."""
        self._wait(timeout)

    def _wait(self, timeout) -> bool:
        if self._done:
            return True
        engine = self._engine
        if engine is not None and getattr(helping, "engine", None) is engine:
            # On a worker of the same pool: its own tasks not taken yet run here (the others
            # are running on other workers, which finish them).
            for task_id in self._task_ids:
                engine.run_if_queued(task_id)
            if self._done:
                return True
        return self._sleep(timeout)

    def _sleep(self, timeout) -> bool:
        with AsyncResult._guard:
            if self._done:
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout)

    def get(self, timeout=None):
        """The value; re-raises the task's exception; TimeoutError if not ready in time."""
        if not self._wait(timeout):
            raise _lib.TimeoutError("the result is not ready", _lib.ETIMEDOUT)
        if self._success:
            return self._value
        raise self._value

    def _set(self, success: bool, value):
        """Completes the result once (any thread); callbacks run on the dispatcher thread."""
        self._success = success
        self._value = value
        hook = self._callback if success else self._error_callback
        if hook is not None and self._dispatcher is not None:
            self._dispatcher.post(self._deliver, hook, value)
        else:
            self._finish()

    def _deliver(self, hook, value):
        try:
            hook(value)
        finally:
            self._finish()

    def _finish(self):
        with AsyncResult._guard:
            self._done = True
            event = self._event
        if event is not None:
            event.set()
        if self._tracker is not None:
            self._tracker.done()


ApplyResult = AsyncResult


class MapResult(AsyncResult):
    """The pending result of ``map_async``/``starmap_async``: a list once every chunk is done."""

    def __init__(self, dispatcher, tracker, chunks: int, length: int, callback=None, error_callback=None):
        super().__init__(dispatcher, tracker, callback, error_callback)
        self._items = [None] * length
        self._remaining = chunks
        self._lock = threading.Lock()
        self._failed = False
        if chunks == 0:
            self._set(True, [])

    def _chunk_done(self, start: int, success: bool, values):
        with self._lock:
            if self._failed:
                return
            if not success:
                self._failed = True
                last = True
            else:
                self._items[start:start + len(values)] = values
                self._remaining -= 1
                last = self._remaining == 0
        if last:
            if success:
                self._set(True, self._items)
            else:
                self._set(False, values)


class IMapIterator:
    """The iterator of ``imap`` (in order) and ``imap_unordered`` (completion order).

    Chunks are submitted as the iterator is consumed, at most ``read_ahead`` ahead, so an
    endless input works; ``next(timeout)`` raises TimeoutError when nothing came in time. When
    the pool is closed, ``drain`` submits the rest of the input at once (multiprocessing's
    ``close`` lets an ``imap`` made before it finish), so the results can still be read.
    """

    def __init__(self, submit_chunk, items, chunksize: int, read_ahead: int, ordered: bool):
        self._submit_chunk = submit_chunk
        self._items = iter(items)
        self._chunksize = max(1, chunksize)
        self._read_ahead = max(1, read_ahead)
        self._ordered = ordered
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._done_chunks: dict[int, tuple] = {}
        self._completion = collections.deque()
        self._submitted = 0
        self._next_chunk = 0
        self._exhausted = False
        self._buffer = collections.deque()
        self._source_error = None  # raised by the input: delivered after the items before it
        self._feeding = threading.Lock()  # the input is read by one thread at a time
        self._fill()

    def drain(self):
        """Submits the rest of the input (the pool is closing; on its feeder thread), a few
        chunks per hold of the input, so the reader's own fills are not held up."""
        self._read_ahead = float("inf")
        while not self._exhausted:
            with self._feeding:
                self._fill_locked(limit=16)

    def _fill(self):
        # While another thread reads the input (the feeder), it fills for this one too.
        if self._feeding.acquire(blocking=False):
            try:
                self._fill_locked()
            finally:
                self._feeding.release()

    def _fill_locked(self, limit=None):
        while not self._exhausted and self._submitted - self._next_chunk < self._read_ahead:
            if limit is not None:
                if limit == 0:
                    return
                limit -= 1
            chunk = []
            try:
                for item in self._items:
                    chunk.append(item)
                    if len(chunk) == self._chunksize:
                        break
            except Exception as error:
                # The items before the failure first: a reader that sees the input exhausted
                # must see their chunk counted too.
                if chunk:
                    self._submit(chunk)
                self._source_error = error
                self._exhausted = True
                return
            if not chunk:
                self._exhausted = True
                return
            self._submit(chunk)
            if len(chunk) < self._chunksize:
                self._exhausted = True

    def _submit(self, chunk):
        index = self._submitted
        self._submitted += 1
        try:
            self._submit_chunk(chunk, lambda success, values, index=index: self._chunk_done(index, success, values))
        except BaseException as error:
            # Refused (the pool was terminated): the chunk ends with the refusal, the input here.
            self._chunk_done(index, False, error)
            self._exhausted = True
            raise

    def _chunk_done(self, index, success, values):
        with self._arrived:
            if self._ordered:
                self._done_chunks[index] = (success, values)
            else:
                self._completion.append((success, values))
            self._arrived.notify_all()

    def __iter__(self):
        return self

    def __next__(self):
        return self.next()

    def next(self, timeout=None):
        if self._buffer:
            return self._buffer.popleft()
        with self._arrived:
            while True:
                if self._ordered and self._next_chunk in self._done_chunks:
                    success, values = self._done_chunks.pop(self._next_chunk)
                    break
                if not self._ordered and self._completion:
                    success, values = self._completion.popleft()
                    break
                if self._exhausted and self._next_chunk >= self._submitted:
                    if self._source_error is not None:
                        error, self._source_error = self._source_error, None
                        raise error
                    raise StopIteration
                if not self._arrived.wait(timeout):
                    raise _lib.TimeoutError("no result arrived in time", _lib.ETIMEDOUT)
            self._next_chunk += 1
        if success:
            self._buffer.extend(values)  # kept even if submitting more fails below
        self._fill()
        if not success:
            raise values
        if not self._buffer:
            return self.next(timeout)
        return self._buffer.popleft()

    __next__ = next
