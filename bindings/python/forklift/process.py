"""Processes and process-shared objects with the names of :mod:`multiprocessing`.

``Queue``, ``Pipe``, ``SharedMemory``, ``Lock``, ``RLock``, ``Event``, ``Semaphore`` and
``BoundedSemaphore`` are built on Forklift's shared objects; ``Process`` runs a Python
callable in a new interpreter started by :mod:`multiprocessing` (``forkserver`` by default).

Shared objects given to a ``Process`` (in ``args``, ``kwargs`` or as attributes of a
``Process`` subclass) are reopened by name in the child. An anonymous object's name stays
valid while the process that created it holds it open, so create shared objects in a
process that outlives the children using them (usually the parent). Pipe connections
travel as file descriptors. With ``start_method="fork"`` nothing is reopened: the child
inherits the parent's handles.
"""

import ctypes
import errno
import mmap
import multiprocessing
import os
import pickle
import queue as _queue
import select
import socket
import struct
import sys
import threading
import time
import weakref
from multiprocessing import reduction as _reduction
from multiprocessing.process import BaseProcess

from . import _lib

__all__ = ["Process", "Queue", "SimpleQueue", "JoinableQueue", "Pipe", "Connection",
           "SharedMemory", "Lock", "RLock", "Event", "Semaphore", "BoundedSemaphore", "ShutDown"]

Full = _queue.Full
Empty = _queue.Empty

#: Raised by a queue after :meth:`Queue.shutdown` (``queue.ShutDown`` where Python has it).
ShutDown = getattr(_queue, "ShutDown", None)
if ShutDown is None:
    class ShutDown(Exception):
        """The queue was shut down: no more puts, and gets once it is empty."""

_PROTOCOL = pickle.HIGHEST_PROTOCOL
_NAME_LEN = 64
# Longest single wait inside the library, so that signals (Ctrl-C) are handled while blocked.
_SLICE = 0.2

_lib_c = _lib.lib


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

def _timeout(block=True, timeout=None):
    """Seconds to wait, ``None`` for no limit."""
    if not block:
        return 0.0
    if timeout is None:
        return None
    return max(0.0, float(timeout))


def _wait(call, timeout, owner):
    """Calls ``call(seconds)`` in slices of at most ``_SLICE`` until it returns something other
    than ``ETIMEDOUT`` or ``timeout`` (``None``: no limit) has passed; returns the last status.
    Raises ``owner.error`` if ``owner`` (a ``_Handle``) is closed meanwhile."""
    if timeout is not None and timeout <= 0:
        return call(0.0)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if deadline is None:
            step = _SLICE
        else:
            step = min(_SLICE, max(0.0, deadline - time.monotonic()))
        code = call(step)
        if code != _lib.ETIMEDOUT:
            return code
        if deadline is not None and time.monotonic() >= deadline:
            return code
        if owner.closed:
            raise owner.error(f"{owner.kind} was closed while waiting")


def _remaining(deadline):
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _deadline(timeout):
    return None if timeout is None else time.monotonic() + timeout


def _name_of(getter, handle):
    buffer = ctypes.create_string_buffer(_NAME_LEN)
    _lib.check(getter(handle, buffer, _NAME_LEN), "name")
    return buffer.value.decode()


def _pointer(data):
    """``(argument, length)`` to pass a bytes-like object as a ``const void *`` (no copy for
    bytes and writable contiguous buffers; the argument keeps the buffer alive)."""
    if isinstance(data, bytes):
        return data, len(data)
    view = memoryview(data)
    if view.readonly or not view.c_contiguous:
        data = view.tobytes()
        return data, len(data)
    view = view.cast("B")
    if view.nbytes == 0:
        return None, 0
    return (ctypes.c_char * view.nbytes).from_buffer(view), view.nbytes


class _Handle:
    """Owns one C handle; destroys it once closed and no call is using it."""

    __slots__ = ("value", "_destroy", "_lock", "_active", "_closed", "kind", "error")

    def __init__(self, value, destroy, kind, error=ValueError):
        self.value = value
        self.error = error
        self._destroy = destroy
        self._lock = threading.Lock()
        self._active = 0
        self._closed = False
        self.kind = kind

    def __enter__(self):
        with self._lock:
            if self._closed:
                raise self.error(f"{self.kind} is closed")
            self._active += 1
        return self.value

    def __exit__(self, *exc):
        with self._lock:
            self._active -= 1
            last = self._closed and self._active == 0
        if last:
            self._destroy(self.value)

    @property
    def closed(self):
        return self._closed

    def close(self):
        with self._lock:
            if self._closed:
                return
            self._closed = True
            now = self._active == 0
        if now:
            self._destroy(self.value)


def _dumps(obj):
    """Pickles ``obj`` as multiprocessing does (its reducers included); a bytes-like object."""
    return _reduction.ForkingPickler.dumps(obj, _PROTOCOL)


def _new_handle():
    return ctypes.c_void_p()


# ---------------------------------------------------------------------------------------------
# Queues
# ---------------------------------------------------------------------------------------------

def _rebuild_queue(cls, name, maxsize):
    queue = cls.__new__(cls)
    queue._open(name, maxsize)
    return queue


class Queue:
    """A process-shared FIFO queue of picklable objects (``multiprocessing.Queue``).

    Messages live in a shared-memory ring of ``capacity`` bytes (0: the library default,
    1 MiB); messages of any size are accepted (large ones are stored out of line).
    ``maxsize`` > 0 limits the number of queued items. Puts are synchronous: there is no
    feeder thread, so an object is in the queue when ``put`` returns.
    """

    def __init__(self, maxsize=0, capacity=0):
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        maxsize = max(0, int(maxsize))
        handle = _new_handle()
        _lib.check(_lib_c.fl_queue_create(capacity, maxsize, ctypes.byref(handle)), "fl_queue_create")
        self._setup(handle.value, maxsize)

    def _open(self, name, maxsize):
        handle = _new_handle()
        code = _lib_c.fl_queue_open(name.encode(), ctypes.byref(handle))
        _lib.check(code, f"cannot open queue {name!r} (its creator must still hold it)")
        self._setup(handle.value, maxsize)

    def _setup(self, value, maxsize):
        self._maxsize = maxsize
        self._handle = _Handle(value, _lib_c.fl_queue_destroy, "queue")
        self._local = threading.local()
        self._finalizer = weakref.finalize(self, self._handle.close)

    def __reduce__(self):
        with self._handle as handle:
            name = _name_of(_lib_c.fl_queue_name, handle)
        return _rebuild_queue, (type(self), name, self._maxsize)

    def _buffer(self, size):
        buffer = getattr(self._local, "buffer", None)
        if buffer is None or len(buffer) < size:
            buffer = ctypes.create_string_buffer(max(size, 4096))
            self._local.buffer = buffer
        return buffer

    def put(self, obj, block=True, timeout=None):
        """Appends ``obj`` (pickled); raises ``queue.Full`` if there is no room in time."""
        self._put_bytes(_dumps(obj), _timeout(block, timeout))

    def _put_bytes(self, data, timeout):
        argument, length = _pointer(data)
        with self._handle as handle:
            code = _wait(lambda step: _lib_c.fl_queue_put(handle, argument, length, step), timeout,
                         self._handle)
        if code == _lib.ETIMEDOUT:
            raise Full
        if code == _lib.ESTATE:
            raise ShutDown("the queue was shut down")
        _lib.check(code, "fl_queue_put")

    def get(self, block=True, timeout=None):
        """Removes and returns the oldest object; raises ``queue.Empty`` if none comes in time."""
        timeout = _timeout(block, timeout)
        deadline = _deadline(timeout)
        length = ctypes.c_size_t()
        buffer = self._buffer(0)
        with self._handle as handle:
            while True:
                code = _wait(lambda step: _lib_c.fl_queue_get(handle, buffer, len(buffer),
                                                              ctypes.byref(length), step),
                             _remaining(deadline), self._handle)
                if code != _lib.ERANGE:
                    break
                # The message stays queued; grow and retry (another consumer may take it first).
                buffer = self._buffer(length.value)
        if code == _lib.ETIMEDOUT:
            raise Empty
        if code == _lib.EDONE:
            raise ShutDown("the queue was shut down and is empty")
        _lib.check(code, "fl_queue_get")
        return pickle.loads(memoryview(buffer).cast("B")[:length.value])

    def put_nowait(self, obj):
        """``put(obj, False)``."""
        self.put(obj, False)

    def get_nowait(self):
        """``get(False)``."""
        return self.get(False)

    def qsize(self):
        """Number of queued items (a snapshot)."""
        count = ctypes.c_size_t()
        with self._handle as handle:
            _lib.check(_lib_c.fl_queue_count(handle, ctypes.byref(count)), "fl_queue_count")
        return count.value

    def empty(self):
        """True if no item is queued (a snapshot)."""
        return self.qsize() == 0

    def full(self):
        """True if ``maxsize`` items are queued (a snapshot; byte capacity is not considered)."""
        return self._maxsize > 0 and self.qsize() >= self._maxsize

    def shutdown(self):
        """Closes the queue for every process: puts raise ``ShutDown``, gets return what is left
        and then raise ``ShutDown``; blocked callers wake."""
        with self._handle as handle:
            _lib.check(_lib_c.fl_queue_close(handle), "fl_queue_close")

    def close(self):
        """Releases this process's handle; other processes keep using the queue."""
        self._finalizer()

    def join_thread(self):
        """No-op (there is no feeder thread)."""

    def cancel_join_thread(self):
        """No-op (there is no feeder thread)."""

    def __repr__(self):
        state = "closed" if self._handle.closed else f"maxsize={self._maxsize}"
        return f"<forklift.Queue {state}>"


class SimpleQueue:
    """An unbounded process-shared queue with ``multiprocessing.SimpleQueue``'s methods."""

    def __init__(self, capacity=0):
        self._queue = Queue(0, capacity)

    def put(self, obj):
        """Appends ``obj`` (pickled)."""
        self._queue.put(obj)

    def get(self):
        """Removes and returns the oldest object, waiting for one."""
        return self._queue.get()

    def empty(self):
        """True if no item is queued (a snapshot)."""
        return self._queue.empty()

    def close(self):
        """Releases this process's handle."""
        self._queue.close()

    def __reduce__(self):
        return _rebuild_simple_queue, (self._queue,)


def _rebuild_simple_queue(queue):
    simple = SimpleQueue.__new__(SimpleQueue)
    simple._queue = queue
    return simple


class JoinableQueue(Queue):
    """A ``Queue`` with ``task_done()`` and ``join()`` (``multiprocessing.JoinableQueue``)."""

    def __init__(self, maxsize=0, capacity=0):
        super().__init__(maxsize, capacity)
        self._tasks = (Lock(), Semaphore(0), Event())
        self._tasks[2].set()

    def __reduce__(self):
        rebuild, args = super().__reduce__()
        return _rebuild_joinable, (args, self._tasks)

    def put(self, obj, block=True, timeout=None):
        data = _dumps(obj)
        lock, count, done = self._tasks
        with lock:
            count.release()
            done.clear()
        try:
            self._put_bytes(data, _timeout(block, timeout))
        except BaseException:
            self._finish_one()
            raise

    def _finish_one(self):
        lock, count, done = self._tasks
        with lock:
            if not count.acquire(False):
                raise ValueError("task_done() called too many times")
            if count.get_value() == 0:
                done.set()

    def task_done(self):
        """Marks one item taken with ``get`` as processed."""
        self._finish_one()

    def join(self):
        """Waits until every item put has been marked with ``task_done``."""
        self._tasks[2].wait()


def _rebuild_joinable(args, tasks):
    queue = _rebuild_queue(*args)
    queue._tasks = tasks
    return queue


# ---------------------------------------------------------------------------------------------
# Locks, events, semaphores
# ---------------------------------------------------------------------------------------------

class _Shared:
    """A named process-shared object: ``__reduce__`` reopens it by name in another process."""

    _kind = ""
    _name_fn = _open_fn = _destroy_fn = None

    def _adopt(self, value):
        self._handle = _Handle(value, getattr(_lib_c, self._destroy_fn), self._kind)
        self._finalizer = weakref.finalize(self, self._handle.close)

    def _reopen(self, name):
        handle = _new_handle()
        code = getattr(_lib_c, self._open_fn)(name.encode(), ctypes.byref(handle))
        _lib.check(code, f"cannot open {self._kind} {name!r} (its creator must still hold it)")
        self._adopt(handle.value)

    def __reduce__(self):
        with self._handle as handle:
            name = _name_of(getattr(_lib_c, self._name_fn), handle)
        return _rebuild_shared, (type(self), name)

    def close(self):
        """Releases this process's handle (no thread of this process may be waiting on it)."""
        self._finalizer()


def _rebuild_shared(cls, name):
    obj = cls.__new__(cls)
    obj._reopen(name)
    return obj


class _Acquirable:
    """``with obj:`` acquires on entry and releases on exit."""

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


class Lock(_Acquirable, _Shared):
    """A process-shared lock (``multiprocessing.Lock``); only the holding thread may release it.

    If the holder's process dies, the next acquirer gets the lock."""

    _kind = "lock"
    _name_fn, _open_fn, _destroy_fn = "fl_lock_name", "fl_lock_open", "fl_lock_destroy"
    _recursive = 0

    def __init__(self):
        handle = _new_handle()
        _lib.check(_lib_c.fl_lock_create(self._recursive, ctypes.byref(handle)), "fl_lock_create")
        self._adopt(handle.value)

    def acquire(self, block=True, timeout=None):
        """Takes the lock; returns False if it could not within ``timeout`` seconds."""
        timeout = _timeout(block, timeout)
        with self._handle as handle:
            code = _wait(lambda step: _lib_c.fl_lock_acquire(handle, step), timeout, self._handle)
        if code == _lib.OK:
            return True
        if code == _lib.ETIMEDOUT:
            return False
        if code == _lib.ESTATE:
            # A plain lock already held by this thread: nobody else can release it.
            if timeout is None:
                raise RuntimeError("deadlock: this thread already holds the lock")
            time.sleep(timeout)
            return False
        raise _lib.error(code, "fl_lock_acquire")

    #: What a release by a thread that does not hold the lock raises (as multiprocessing).
    _not_held = (ValueError, "lock is not held by this thread")

    def release(self):
        """Releases the lock (one level of an RLock); raises ``ValueError`` (``AssertionError``
        for an RLock) if this thread does not hold it."""
        with self._handle as handle:
            code = _lib_c.fl_lock_release(handle)
        if code == _lib.ESTATE:
            error, message = self._not_held
            raise error(message)
        _lib.check(code, "fl_lock_release")

    def __repr__(self):
        return f"<forklift.{type(self).__name__}>"


class RLock(Lock):
    """A process-shared recursive lock (``multiprocessing.RLock``)."""

    _recursive = 1
    _not_held = (AssertionError, "attempt to release recursive lock not owned by thread")


class Event(_Shared):
    """A process-shared event flag (``multiprocessing.Event``)."""

    _kind = "event"
    _name_fn, _open_fn, _destroy_fn = "fl_event_name", "fl_event_open", "fl_event_destroy"

    def __init__(self):
        handle = _new_handle()
        _lib.check(_lib_c.fl_event_create(ctypes.byref(handle)), "fl_event_create")
        self._adopt(handle.value)

    def set(self):
        """Sets the flag and wakes every waiter in every process."""
        with self._handle as handle:
            _lib.check(_lib_c.fl_event_set(handle), "fl_event_set")

    def clear(self):
        """Clears the flag."""
        with self._handle as handle:
            _lib.check(_lib_c.fl_event_clear(handle), "fl_event_clear")

    def is_set(self):
        """True if the flag is set."""
        value = ctypes.c_int()
        with self._handle as handle:
            _lib.check(_lib_c.fl_event_is_set(handle, ctypes.byref(value)), "fl_event_is_set")
        return bool(value.value)

    def wait(self, timeout=None):
        """Waits until the flag is set; returns False if ``timeout`` seconds passed first."""
        timeout = _timeout(True, timeout)
        with self._handle as handle:
            code = _wait(lambda step: _lib_c.fl_event_wait(handle, step), timeout, self._handle)
        if code == _lib.ETIMEDOUT:
            return False
        _lib.check(code, "fl_event_wait")
        return True

    def __repr__(self):
        return f"<forklift.Event set={self.is_set()}>"


class Semaphore(_Acquirable, _Shared):
    """A process-shared counting semaphore (``multiprocessing.Semaphore``)."""

    _kind = "semaphore"
    _name_fn, _open_fn, _destroy_fn = "fl_semaphore_name", "fl_semaphore_open", "fl_semaphore_destroy"
    _bounded = False

    def __init__(self, value=1):
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        handle = _new_handle()
        bound = value if self._bounded else 0
        _lib.check(_lib_c.fl_semaphore_create(value, bound, ctypes.byref(handle)), "fl_semaphore_create")
        self._adopt(handle.value)

    def acquire(self, block=True, timeout=None):
        """Decrements the counter; returns False if it stayed zero for ``timeout`` seconds."""
        timeout = _timeout(block, timeout)
        with self._handle as handle:
            code = _wait(lambda step: _lib_c.fl_semaphore_acquire(handle, step), timeout,
                         self._handle)
        if code == _lib.ETIMEDOUT:
            return False
        _lib.check(code, "fl_semaphore_acquire")
        return True

    def release(self):
        """Increments the counter and wakes one waiter."""
        with self._handle as handle:
            code = _lib_c.fl_semaphore_release(handle)
        if code == _lib.ERANGE:
            raise ValueError("semaphore or lock released too many times")
        _lib.check(code, "fl_semaphore_release")

    def get_value(self):
        """The counter's current value (a snapshot)."""
        value = ctypes.c_uint()
        with self._handle as handle:
            _lib.check(_lib_c.fl_semaphore_value(handle, ctypes.byref(value)), "fl_semaphore_value")
        return value.value

    def __repr__(self):
        return f"<forklift.{type(self).__name__} value={self.get_value()}>"


class BoundedSemaphore(Semaphore):
    """A semaphore that cannot be released above its initial value
    (``multiprocessing.BoundedSemaphore``); such a release raises ``ValueError``."""

    _bounded = True


# ---------------------------------------------------------------------------------------------
# Shared memory
# ---------------------------------------------------------------------------------------------

def _unmap(handle):
    _lib_c.fl_shm_close(handle)


class SharedMemory:
    """A shared-memory block (``multiprocessing.shared_memory.SharedMemory``).

    ``name=None`` with ``create=True`` makes an anonymous block: it is freed when its last
    mapping goes, and its name (``"memfd:PID:FD"``, different in each process that maps it)
    can be opened while that process has it open. A given name makes a POSIX block that
    lives until :meth:`unlink`.
    ``buf`` is a writable memoryview of the mapping (usable as a numpy buffer).
    """

    def __init__(self, name=None, create=False, size=0):
        if size < 0:
            raise ValueError("'size' must be a positive integer")
        handle = _new_handle()
        if create:
            if size == 0:
                raise ValueError("'size' must be a positive number different from zero")
            c_name = None if name is None else self._c_name(name).encode()
            code = _lib_c.fl_shm_create(c_name, size, ctypes.byref(handle))
            if code == _lib.ESTATE:
                raise FileExistsError(f"shared memory {name!r} exists")
            _lib.check(code, "fl_shm_create")
        else:
            if name is None:
                raise ValueError("'name' can only be None if create=True")
            code = _lib_c.fl_shm_open(self._c_name(name).encode(), ctypes.byref(handle))
            if code == _lib.EINVAL:
                raise FileNotFoundError(f"no shared memory named {name!r}: {_lib.last_error()}")
            _lib.check(code, "fl_shm_open")
        value = handle.value
        address, length = ctypes.c_void_p(), ctypes.c_size_t()
        code = _lib_c.fl_shm_data(value, ctypes.byref(address), ctypes.byref(length))
        if code < 0:
            _unmap(value)
            raise _lib.error(code, "fl_shm_data")
        self._name = _name_of(_lib_c.fl_shm_name, value)
        self._size = length.value
        # The mapping's lifetime follows this ctypes array: any view of `buf` keeps it alive.
        self._map = (ctypes.c_ubyte * max(self._size, 1)).from_address(address.value)
        self._finalizer = weakref.finalize(self._map, _unmap, value)
        self._map_refs = sys.getrefcount(self._map)
        self._buf = self._view()

    @staticmethod
    def _c_name(name):
        if name.startswith("memfd:") or name.startswith("/"):
            return name
        return "/" + name

    def _view(self):
        whole = memoryview(self._map)
        try:
            return whole.cast("B")[:self._size]
        finally:
            whole.release()

    @property
    def buf(self):
        """A memoryview of the block, or None after :meth:`close`."""
        return self._buf

    @property
    def name(self):
        """The name another process passes to ``SharedMemory(name)``."""
        return self._name[1:] if self._name.startswith("/") else self._name

    @property
    def size(self):
        """Size in bytes."""
        return self._size

    def close(self):
        """Unmaps the block from this process. Raises ``BufferError`` while views of ``buf``
        (slices, numpy arrays) exist; the block then stays usable."""
        if self._map is None:
            return
        self._buf.release()
        self._buf = None
        if sys.getrefcount(self._map) > self._map_refs:
            self._buf = self._view()
            raise BufferError("cannot close exported pointers exist")
        self._map = None
        self._finalizer()

    def unlink(self):
        """Removes a named block's name (it is freed when its last mapping goes); does nothing
        for an anonymous block."""
        if self._name.startswith("/"):
            code = _lib_c.fl_shm_unlink(self._name.encode())
            if code == _lib.EINVAL:
                raise FileNotFoundError(f"no shared memory named {self.name!r}")
            _lib.check(code, "fl_shm_unlink")

    def __reduce__(self):
        return type(self), (self.name, False, self.size)

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r}, size={self._size})"


# ---------------------------------------------------------------------------------------------
# Pipes
# ---------------------------------------------------------------------------------------------

# The pipe's wire format (a SOCK_SEQPACKET socket): every message starts with this header;
# up to _INLINE bytes follow in the same packet, larger messages travel in a memfd passed
# with SCM_RIGHTS.
_HEADER = struct.Struct("=IIQ")
_MAGIC = 0x50495045
_KIND_INLINE, _KIND_MEMFD = 0, 1
_INLINE = 64 * 1024


class _NativeEnd:
    """A pipe end held through the C API (``fl_pipe``)."""

    def __init__(self, value):
        self.handle = _Handle(value, _lib_c.fl_pipe_close, "connection", OSError)
        self.buffer = ctypes.create_string_buffer(4096)

    def fileno(self):
        fd = ctypes.c_int()
        with self.handle as handle:
            _lib.check(_lib_c.fl_pipe_fd(handle, ctypes.byref(fd)), "fl_pipe_fd")
        return fd.value

    def send(self, data, timeout):
        argument, length = _pointer(data)
        with self.handle as handle:
            code = _wait(lambda step: _lib_c.fl_pipe_send(handle, argument, length, step), timeout,
                         self.handle)
        if code == _lib.ESTATE:
            raise BrokenPipeError("the other end of the pipe is closed")
        _lib.check(code, "fl_pipe_send")

    def recv(self, maxlength):
        length = ctypes.c_size_t()
        with self.handle as handle:
            while True:
                buffer = self.buffer
                # With maxlength, a longer message is reported (FL_ERANGE) and stays in the pipe.
                capacity = len(buffer) if maxlength is None else min(len(buffer), maxlength)
                code = _wait(lambda step: _lib_c.fl_pipe_recv(handle, buffer, capacity,
                                                              ctypes.byref(length), step), None,
                             self.handle)
                if code != _lib.ERANGE:
                    break
                if maxlength is not None and length.value > maxlength:
                    raise OSError(f"message of {length.value} bytes exceeds maxlength {maxlength}")
                self.buffer = ctypes.create_string_buffer(length.value)
        if code == _lib.EDONE:
            raise EOFError
        _lib.check(code, "fl_pipe_recv")
        return ctypes.string_at(buffer, length.value)

    def poll(self, timeout):
        with self.handle as handle:
            code = _wait(lambda step: _lib_c.fl_pipe_poll(handle, step), timeout, self.handle)
        if code == _lib.ETIMEDOUT:
            return False
        _lib.check(code, "fl_pipe_poll")
        return True

    def close(self):
        self.handle.close()


class _SocketEnd:
    """A pipe end adopted from a file descriptor (in a child process), speaking the same
    wire format as ``fl_pipe`` in Python."""

    def __init__(self, fd):
        self.sock = socket.socket(fileno=fd)
        self.sock.settimeout(None)  # waits are done with poll(); calls use MSG_DONTWAIT

    def fileno(self):
        return self.sock.fileno()

    def _ready(self, events, timeout):
        poller = select.poll()
        poller.register(self.sock.fileno(), events)
        deadline = _deadline(timeout)
        while True:
            left = _remaining(deadline)
            step = _SLICE if left is None else min(_SLICE, left)
            if poller.poll(int(step * 1000 + 0.999)):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def send(self, data, timeout):
        data = memoryview(data).cast("B")
        length = data.nbytes
        fds = []
        try:
            if length > _INLINE:
                fd = os.memfd_create("forklift-pipe", os.MFD_CLOEXEC)
                fds.append(fd)
                os.ftruncate(fd, length)
                with mmap.mmap(fd, length) as region:
                    region[:] = data
                packet = [_HEADER.pack(_MAGIC, _KIND_MEMFD, length)]
            else:
                packet = [_HEADER.pack(_MAGIC, _KIND_INLINE, length), data]
            ancillary = ([(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fds[0]))]
                         if fds else [])
            deadline = _deadline(timeout)
            while True:
                try:
                    self.sock.sendmsg(packet, ancillary, socket.MSG_DONTWAIT)
                    return
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError as error:
                    if error.errno in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                        raise BrokenPipeError("the other end of the pipe is closed") from None
                    if error.errno != errno.ENOBUFS:
                        raise
                if not self._ready(select.POLLOUT, _remaining(deadline)):
                    raise _lib.TimeoutError("pipe still full at the deadline", _lib.ETIMEDOUT)
        finally:
            for fd in fds:
                os.close(fd)

    def recv(self, maxlength):
        while True:
            try:
                head = self.sock.recv(_HEADER.size, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                self._ready(select.POLLIN, None)
                continue
            except ConnectionResetError:
                raise EOFError from None
            if not head:
                raise EOFError
            break
        magic, kind, length = _HEADER.unpack(head)
        if magic != _MAGIC:
            raise OSError("not a Forklift pipe message")
        if maxlength is not None and length > maxlength:
            raise OSError(f"message of {length} bytes exceeds maxlength {maxlength}")
        size = _HEADER.size + (length if kind == _KIND_INLINE else 0)
        message, fds, _flags, _address = socket.recv_fds(self.sock, size, 1, socket.MSG_DONTWAIT)
        try:
            if kind == _KIND_INLINE:
                return message[_HEADER.size:]
            if not fds:
                raise OSError("a large pipe message arrived without its memory")
            with mmap.mmap(fds[0], length, prot=mmap.PROT_READ) as region:
                return region[:]
        finally:
            for fd in fds:
                os.close(fd)

    def poll(self, timeout):
        return self._ready(select.POLLIN, timeout)

    def close(self):
        self.sock.close()


def _rebuild_connection(dup, readable, writable):
    return Connection(_SocketEnd(dup.detach()), readable, writable)


class Connection:
    """One end of a :func:`Pipe` (``multiprocessing.connection.Connection``).

    A connection passed to a child process (or pickled to another process) travels as a
    duplicated file descriptor (``multiprocessing.reduction.DupFd``); the child speaks the
    pipe's wire format on it directly. Each process should close the ends it does not use,
    so that the peer sees the end of the stream (``EOFError``).
    """

    def __init__(self, end, readable, writable):
        self._end = end
        self._readable = readable
        self._writable = writable
        self._recv_lock = threading.Lock()
        self._finalizer = weakref.finalize(self, end.close)

    @property
    def closed(self):
        """True after :meth:`close`."""
        return not self._finalizer.alive

    @property
    def readable(self):
        """True if this end receives."""
        return self._readable

    @property
    def writable(self):
        """True if this end sends."""
        return self._writable

    def _check(self, readable=False, writable=False):
        if self.closed:
            raise OSError("handle is closed")
        if readable and not self._readable:
            raise OSError("connection is write-only")
        if writable and not self._writable:
            raise OSError("connection is read-only")

    def fileno(self):
        """The end's file descriptor (readable when a message or the end of stream is there)."""
        self._check()
        return self._end.fileno()

    def send_bytes(self, buf, offset=0, size=None):
        """Sends bytes of a bytes-like object as one message."""
        self._check(writable=True)
        view = memoryview(buf).cast("B")
        if offset < 0 or offset > view.nbytes:
            raise ValueError("offset is out of range")
        if size is None:
            size = view.nbytes - offset
        if size < 0 or offset + size > view.nbytes:
            raise ValueError("size is out of range")
        self._end.send(view[offset:offset + size], None)

    def send(self, obj):
        """Sends a picklable object."""
        self._check(writable=True)
        self._end.send(_dumps(obj), None)

    def recv_bytes(self, maxlength=None):
        """Receives one message as bytes; ``EOFError`` once the peer is closed and nothing is
        left; ``OSError`` if it is longer than ``maxlength``."""
        self._check(readable=True)
        if maxlength is not None and maxlength < 0:
            raise ValueError("negative maxlength")
        with self._recv_lock:
            return self._end.recv(maxlength)

    def recv_bytes_into(self, buf, offset=0):
        """Receives one message into ``buf`` at ``offset``; returns its length. Raises
        ``multiprocessing.BufferTooShort`` (holding the message) if it does not fit."""
        self._check(readable=True)
        view = memoryview(buf).cast("B")
        if offset < 0 or offset > view.nbytes:
            raise ValueError("offset is out of range")
        message = self.recv_bytes()
        if len(message) > view.nbytes - offset:
            raise multiprocessing.BufferTooShort(message)
        view[offset:offset + len(message)] = message
        return len(message)

    def recv(self):
        """Receives one object; ``EOFError`` once the peer is closed and nothing is left."""
        return pickle.loads(self.recv_bytes())

    def poll(self, timeout=0.0):
        """True if a message (or the end of stream) is ready within ``timeout`` seconds
        (``None``: wait without limit)."""
        self._check(readable=True)
        return self._end.poll(_timeout(True, timeout))

    def close(self):
        """Closes this process's copy of the end."""
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __reduce__(self):
        self._check()
        return _rebuild_connection, (_reduction.DupFd(self._end.fileno()),
                                     self._readable, self._writable)

    def __repr__(self):
        state = "closed" if self.closed else ("duplex" if self._readable and self._writable else
                                              "read-only" if self._readable else "write-only")
        return f"<forklift.Connection {state}>"


def Pipe(duplex=True):
    """Returns two connected :class:`Connection` objects (``multiprocessing.Pipe``); with
    ``duplex=False`` the first only receives and the second only sends."""
    first, second = _new_handle(), _new_handle()
    _lib.check(_lib_c.fl_pipe_create(1 if duplex else 0, ctypes.byref(first), ctypes.byref(second)),
               "fl_pipe_create")
    return (Connection(_NativeEnd(first.value), True, bool(duplex)),
            Connection(_NativeEnd(second.value), bool(duplex), True))


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------

_START_METHODS = ("forkserver", "spawn", "fork")


class Process(BaseProcess):
    """A Python callable run in a new process (``multiprocessing.Process``).

    ``start_method`` is ``"forkserver"`` (default), ``"spawn"`` or ``"fork"``. Forking a
    process that runs Forklift's native threads and then running Python in the child is
    unsafe, hence the default. With forkserver and spawn, the target, its arguments and a
    subclass instance are pickled: targets must be importable, shared objects are reopened
    by name and connections travel as file descriptors.
    """

    def __init__(self, group=None, target=None, name=None, args=(), kwargs=None, *,
                 daemon=None, start_method=None):
        method = start_method or "forkserver"
        if method not in _START_METHODS:
            raise ValueError(f"unknown start method {method!r}; use one of {_START_METHODS}")
        self._start_method = method
        super().__init__(group, target, name, args, {} if kwargs is None else kwargs,
                         daemon=daemon)

    def _Popen(self, process_obj):
        return multiprocessing.get_context(self._start_method).Process._Popen(process_obj)

    @property
    def start_method(self):
        """The start method: ``"forkserver"``, ``"spawn"`` or ``"fork"``."""
        return self._start_method
