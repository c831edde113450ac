"""Forklift for Python: multiprocessing, concurrent.futures and Ray-style APIs on a native
parallel-execution engine.

- ``forklift.Pool`` — multiprocessing.Pool (process or thread workers; native functions
  through typed calls, without the GIL).
- ``forklift.futures.Executor`` — a concurrent.futures.Executor.
- ``forklift.Process``, ``Queue``, ``Pipe``, ``SharedMemory``, ``Lock``, ``Event``,
  ``Semaphore`` — multiprocessing's, on shared memory.
- ``forklift.remote``, ``get``, ``wait``, ``put``, ``init``, ``shutdown`` — Ray's API.
"""

from ._lib import (ForkliftError, TimeoutError, CancelledError, WorkerLostError, TaskError,
                   InvalidArgumentError, version, cpu_count, LIBRARY_PATH)
from ._results import AsyncResult, RemoteError, RemoteTraceback
from .pool import Pool
from . import futures
from .remote import (init, shutdown, is_initialized, remote, get, wait, put, cancel, kill, stats,
                     timeline, start_timeline, stop_timeline, ObjectRef, ActorHandle, GetTimeoutError)

__version__ = version()

__all__ = ["Pool", "AsyncResult", "futures", "init", "shutdown", "is_initialized", "remote", "get", "wait",
           "put", "cancel", "kill", "stats", "timeline", "start_timeline", "stop_timeline", "ObjectRef", "ActorHandle", "ForkliftError", "TimeoutError",
           "CancelledError", "WorkerLostError", "TaskError", "InvalidArgumentError", "GetTimeoutError",
           "RemoteError", "RemoteTraceback", "version", "cpu_count"]

from .process import *  # noqa: F401,F403,E402  (Process, Queue, Pipe, SharedMemory, locks)
from .process import __all__ as _process_names  # noqa: E402
__all__ += list(_process_names)
