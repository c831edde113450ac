"""The main loop of a Python worker process of a process-backed Pool.

Requests arrive on this worker's own queue as a task id and a pickled ``(function, args, kwds)``;
answers go to the pool's shared result queue as ``(worker, task_id, ok, value, traceback)``.
The worker exits when its queue is closed, after ``maxtasks`` tasks, or when the pool's
process is gone.
"""

from __future__ import annotations

import os
import pickle
import struct
import traceback

from . import _lib
from ._channel import Channel

POLL_SECONDS = 1.0
#: Every request starts with the task's id, so a request that cannot be unpickled still
#: gets an answer (its error) instead of killing the worker.
TASK_ID = struct.Struct("q")


class _Unpicklable(Exception):
    """A result or exception that could not be pickled, described as text."""


def _owner_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def serve(request_name: str, result_name: str, worker: int, owner_pid: int, initializer, initargs, maxtasks):
    requests = Channel.open(request_name)
    results = Channel.open(result_name)
    if initializer is not None:
        initializer(*initargs)
    done = 0
    while maxtasks is None or done < maxtasks:
        code, data = requests.recv_bytes(POLL_SECONDS)
        if code == _lib.ETIMEDOUT:
            if not _owner_alive(owner_pid):
                return
            continue
        if code != _lib.OK:
            return
        task_id = TASK_ID.unpack_from(data)[0]
        try:
            function, args, kwds = pickle.loads(memoryview(data)[TASK_ID.size:])
            answer = (worker, task_id, True, function(*args, **kwds), None)
        except BaseException as error:
            answer = (worker, task_id, False, error, traceback.format_exc())
        try:
            payload = pickle.dumps(answer, pickle.HIGHEST_PROTOCOL)
        except Exception as error:
            text = f"{type(answer[3]).__name__} result could not be pickled: {error}"
            payload = pickle.dumps((worker, task_id, False, _Unpicklable(text), answer[4]))
        results.send_bytes(payload)
        done += 1
