"""The main loop of a Python worker process of a process-backed Pool.

Requests arrive on this worker's own queue as a task id and a pickled ``(function, args, kwds)``;
answers go to the pool's shared result queue as an ``ANSWER`` header (worker, task id, ok, the
traceback's length), the traceback's text and the pickled value, so that a value the pool's
process cannot unpickle still settles its task (``decode_answer``).
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
from ._results import RemoteError, portable, qualified_name

POLL_SECONDS = 1.0
#: Every request starts with the task's id, so a request that cannot be unpickled still
#: gets an answer (its error) instead of killing the worker.
TASK_ID = struct.Struct("q")


ANSWER = struct.Struct("<iqBI")


def encode_answer(worker: int, task_id: int, success: bool, value, text: str | None) -> bytes:
    try:
        data = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    except Exception as error:
        what = "result" if success else "exception"
        value = RemoteError(qualified_name(value), f"the task's {what} could not be pickled: {error}")
        success, data = False, pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    trace = (text or "").encode("utf-8", "replace")
    return b"".join((ANSWER.pack(worker, task_id, success, len(trace)), trace, data))


def decode_answer(data: bytes):
    """``(worker, task_id, ok, value, traceback)``; a value that does not unpickle here
    becomes a failure (RemoteError) of its task."""
    worker, task_id, success, length = ANSWER.unpack_from(data)
    start = ANSWER.size + length
    text = bytes(data[ANSWER.size:start]).decode("utf-8", "replace") or None
    try:
        value = pickle.loads(memoryview(data)[start:])
    except Exception as error:
        what = "result" if success else "exception"
        value, success = RemoteError("pickle", f"the task's {what} could not be unpickled here: {error!r}"), False
    return worker, task_id, bool(success), value, text


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
            payload = encode_answer(worker, task_id, True, function(*args, **kwds), None)
        except BaseException as error:
            payload = encode_answer(worker, task_id, False, portable(error), traceback.format_exc())
        results.send_bytes(payload)
        done += 1
