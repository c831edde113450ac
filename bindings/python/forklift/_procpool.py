"""The process engine of a Pool: Python worker processes fed through shared-memory queues.

Each worker has its own request queue, so every task is held by exactly one worker at a
time; answers come back on one shared result queue, read by a collector thread. When a
worker dies, the answers it sent are taken first, then the task it was running fails with
WorkerLostError naming the signal or exit status, the tasks queued behind it go to the
other workers, and a fresh worker replaces it. Nothing hangs and nothing is lost.
"""

from __future__ import annotations

import collections
import itertools
import multiprocessing
import os
import pickle
import signal
import threading
import time

from . import _lib
from ._channel import Channel
from ._results import attach_traceback
from ._worker import TASK_ID, decode_answer, serve

#: Requests queued at one worker: at least 2 (one running, the next one ready), and as many
#: of its recent tasks as fit in DEPTH_BUDGET seconds, up to MAX_DEPTH, so that short tasks
#: stream without a round trip each while long ones are not hoarded by one worker.
MIN_DEPTH = 2
MAX_DEPTH = 64
DEPTH_BUDGET = 0.002
#: Answers the collector settles per lock section when several have arrived.
ANSWER_BATCH = 64
#: How often the collector checks that every worker is still alive.
LIVENESS_SECONDS = 0.05


def describe_exit(code) -> str:
    if code is None:
        return "is running"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class _Worker:
    def __init__(self, index: int, process, requests: Channel):
        self.index = index
        self.process = process
        self.requests = requests
        self.inflight: collections.deque = collections.deque()
        self.assigned = 0
        self.last_answer = 0.0
        self.average = None  # seconds per task, measured while the worker was kept busy
        self.depth = MIN_DEPTH  # requests it may hold: see `measured`

    def measured(self, seconds_per_task: float):
        """Folds a new sample into the average and the depth it allows."""
        self.average = seconds_per_task if self.average is None else 0.8 * self.average + 0.2 * seconds_per_task
        self.depth = max(MIN_DEPTH, min(MAX_DEPTH, int(DEPTH_BUDGET / max(self.average, 1e-6))))


class ProcessEngine:
    """Runs Python callables in ``processes`` worker interpreters."""

    def __init__(self, processes: int, initializer=None, initargs=(), maxtasksperchild=None,
                 start_method: str = "forkserver"):
        self.workers = processes
        self._context = multiprocessing.get_context(start_method)
        self._initializer = initializer
        self._initargs = initargs
        self._maxtasks = maxtasksperchild
        self._results = Channel.create(4 << 20)
        self._result_name = self._results.name
        self._lock = threading.Lock()
        self._tasks: dict = {}
        self._backlog: collections.deque = collections.deque()
        self._dropped: list = []  # finish of calls whose start() said no (guarded by _lock)
        self._ids = itertools.count(1)
        self._indices = itertools.count()
        self._running = True
        self._workers: list[_Worker] = []
        for _ in range(processes):
            self._workers.append(self._start_worker())
        self._collector = threading.Thread(target=self._collect, name="forklift-collector", daemon=True)
        self._collector.start()

    def _start_worker(self) -> _Worker:
        requests = Channel.create(1 << 20)
        index = next(self._indices)
        process = self._context.Process(
            target=serve, name=f"ForkliftPoolWorker-{index}", daemon=True,
            args=(requests.name, self._result_name, index, os.getpid(), self._initializer, self._initargs,
                  self._maxtasks))
        process.start()
        return _Worker(index, process, requests)

    # ---- submission ----

    def submit(self, function, args, kwds, finish, start=None):
        """Runs ``function(*args, **kwds)`` in a worker process; ``finish(success, value)`` once.
        ``start()``, if given, is asked as the call is handed to a worker: False drops the call
        (it was cancelled), and ``finish`` then gets a CancelledError."""
        # Pickled here, in the caller, so a call that cannot travel fails at once.
        payload = pickle.dumps((function, args, kwds), pickle.HIGHEST_PROTOCOL)
        with self._lock:
            if not self._running:
                raise _lib.ForkliftError("the pool is not running", _lib.ESTATE)
            task_id = next(self._ids)
            self._tasks[task_id] = (payload, finish, start)
            self._backlog.append(task_id)
            self._dispatch()
        self._tell_dropped()

    def _tell_dropped(self):
        """Finishes the calls `_dispatch` dropped (cancelled before they ran)."""
        with self._lock:
            dropped, self._dropped = self._dropped, []
        for finish in dropped:
            finish(False, _lib.CancelledError("the call was cancelled before it ran", _lib.ECANCELED))

    def _dispatch(self):
        """Hands backlog tasks to workers with room. Call with the lock held."""
        while self._backlog:
            worker, load = None, MAX_DEPTH + 1
            for candidate in self._workers:
                held = len(candidate.inflight)
                if held < load and self._has_room(candidate):
                    worker, load = candidate, held
            if worker is None:
                return
            task_id = self._backlog.popleft()
            entry = self._tasks.get(task_id)
            if entry is None:
                continue
            if entry[2] is not None and not self._may_start(entry[2]):
                del self._tasks[task_id]
                # Told on the collector's next pass, outside this lock.
                self._dropped.append(entry[1])
                continue
            data = TASK_ID.pack(task_id) + entry[0]
            code = worker.requests.send_bytes(data, 0)
            if code != _lib.OK:
                self._backlog.appendleft(task_id)
                return
            worker.inflight.append(task_id)
            worker.assigned += 1

    @staticmethod
    def _may_start(start) -> bool:
        """A task's start() hook's answer; a hook that raises counts as no (it must not stop
        the thread dispatching, often the collector)."""
        try:
            return bool(start())
        except Exception:
            return False

    def _has_room(self, worker: _Worker) -> bool:
        if self._maxtasks is not None and worker.assigned >= self._maxtasks:
            return False
        return len(worker.inflight) < worker.depth

    # ---- results and deaths ----

    def _collect(self):
        last_check = time.monotonic()
        while True:
            code, data = self._results.recv_bytes(LIVENESS_SECONDS)
            if code == _lib.OK:
                # Take what else has arrived too, and settle it all under one lock.
                answers = [decode_answer(data)]
                while len(answers) < ANSWER_BATCH:
                    more, data = self._results.recv_bytes(0)
                    if more != _lib.OK:
                        break
                    answers.append(decode_answer(data))
                self._answer(answers)
            elif code != _lib.ETIMEDOUT:
                return
            now = time.monotonic()
            if code == _lib.ETIMEDOUT or now - last_check >= LIVENESS_SECONDS:
                last_check = now
                if not self._check_workers():
                    return

    def _answer(self, answers):
        """Settles answers (in arrival order) and hands the freed room to the backlog."""
        finished = []
        now = time.monotonic()
        with self._lock:
            by_index = {worker.index: worker for worker in self._workers}
            counts = collections.Counter(answer[0] for answer in answers)
            for index, count in counts.items():
                worker = by_index.get(index)
                if worker is not None and len(worker.inflight) > count and worker.last_answer:
                    # The worker was kept busy since its previous answer: `count` tasks ran since.
                    worker.measured((now - worker.last_answer) / count)
            for worker_index, task_id, success, value, text in answers:
                entry = self._tasks.pop(task_id, None)
                worker = by_index.get(worker_index)
                if worker is not None:
                    worker.last_answer = now
                    if worker.inflight and worker.inflight[0] == task_id:
                        worker.inflight.popleft()
                    elif task_id in worker.inflight:
                        worker.inflight.remove(task_id)
                if entry is not None:
                    finished.append((entry[1], success, value if success else attach_traceback(value, text)))
            self._dispatch()
        for finish, success, value in finished:
            finish(success, value)
        self._tell_dropped()

    def _check_workers(self) -> bool:
        """Replaces dead workers; returns False once the engine has stopped and all are gone."""
        with self._lock:
            dead = [w for w in self._workers if w.process.exitcode is not None]
            if not dead:
                return True
        # Answers a dead worker sent before it died are taken first.
        while True:
            code, data = self._results.recv_bytes(0)
            if code != _lib.OK:
                break
            self._answer([decode_answer(data)])
        failed = []
        with self._lock:
            for worker in dead:
                self._workers.remove(worker)
                worker.requests.destroy()
                if worker.inflight:
                    lost = worker.inflight.popleft()
                    entry = self._tasks.pop(lost, None)
                    if entry is not None:
                        failed.append((entry[1], worker))
                    self._backlog.extendleft(reversed(worker.inflight))
                worker.process.join(0)
                if self._running:
                    self._workers.append(self._start_worker())
            self._dispatch()
            stopped = not self._running and not self._workers
        for finish, worker in failed:
            message = (f"worker process {worker.process.pid} {describe_exit(worker.process.exitcode)} "
                       "while running the task")
            finish(False, _lib.WorkerLostError(message, _lib.EWORKER))
        self._tell_dropped()
        return not stopped

    # ---- life cycle ----

    def wait_idle(self):
        """Nothing to do: Pool tracks completion itself."""

    def close(self):
        pass

    def terminate(self):
        with self._lock:
            self._running = False
            pending = list(self._tasks.values())
            self._tasks.clear()
            self._backlog.clear()
            workers = list(self._workers)
        for worker in workers:
            if worker.process.exitcode is None:
                worker.process.kill()
        for _, finish, _ in pending:
            finish(False, _lib.CancelledError("the pool was terminated before the task finished", _lib.ECANCELED))
        self._shutdown(workers)

    def join(self):
        # Tasks submitted before close (an imap's rest, drained at close) run to the end first:
        # the workers' queues close only once every task has settled.
        while self._collector.is_alive():
            with self._lock:
                if not self._tasks:
                    break
            time.sleep(0.002)
        with self._lock:
            self._running = False
            workers = list(self._workers)
        for worker in workers:
            worker.requests.close()
        self._shutdown(workers)

    def _shutdown(self, workers):
        for worker in workers:
            worker.process.join()
        self._results.close()
        if self._collector is not threading.current_thread():
            self._collector.join()
        for worker in workers:
            worker.requests.destroy()
        self._results.destroy()
