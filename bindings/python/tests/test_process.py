"""Tests of forklift.process: processes, queues, pipes, shared memory, locks, events and
semaphores, across real child processes (forkserver unless a test says otherwise)."""

import os
import pickle
import queue
import signal
import struct
import sys
import time

import pytest

from forklift import process as fp

TIMEOUT = 20  # generous upper bound for waits that should end much sooner


# ---- child targets (module level: forkserver and spawn import them by name) ----

def _return_nothing():
    pass


def _exit_with(code):
    sys.exit(code)


def _raise():
    raise RuntimeError("raised on purpose in a child")


def _sleep(seconds):
    time.sleep(seconds)


def _square_into(q, shm, index, value):
    # The seed example: a result through the queue and one through shared memory.
    q.put((index, value * value))
    struct.pack_into("q", shm.buf, 8 * index, value * value * value)


def _every_kind(q, shm, conn, lock, semaphore):
    with lock:
        q.put(("queue", os.getpid()))
        struct.pack_into("q", shm.buf, 0, 77)
    conn.send(("pipe", conn.recv()))
    semaphore.release()


def _join_worker(q, go, count):
    go.wait(TIMEOUT)
    for _ in range(count):
        q.get(timeout=TIMEOUT)
        time.sleep(0.01)
        q.task_done()


def _produce(q, producer, count):
    for i in range(count):
        q.put((producer, i, "x" * (i % 50)))


def _consume(q, out, count):
    total = 0
    seen = set()
    for _ in range(count):
        producer, i, pad = q.get(timeout=TIMEOUT)
        seen.add((producer, i))
        total += i + len(pad)
    out.put((len(seen), total))


def _echo_large(inbox, outbox, ready):
    ready.set()
    data = inbox.get(timeout=TIMEOUT)
    outbox.put(data[::-1])
    outbox.put(os.urandom(16) + bytes(5 * 1024 * 1024))


def _slow_consumer(q, out, count):
    got = []
    for _ in range(count):
        time.sleep(0.02)
        got.append(q.get(timeout=TIMEOUT))
    out.put(got)


def _pipe_echo(conn):
    while True:
        try:
            message = conn.recv()
        except EOFError:
            break
        if message is None:
            break
        if message == "bytes follow":
            conn.send_bytes(conn.recv_bytes()[::-1])
        else:
            conn.send(("echo", message))
    conn.send("bye")
    conn.close()


def _pipe_send_then_exit(conn):
    conn.send("last words")
    conn.close()


def _pipe_poll_child(conn, go):
    go.wait(TIMEOUT)
    conn.send("ready")


def _shm_fill(name, size):
    shm = fp.SharedMemory(name)
    assert shm.size >= size
    shm.buf[:size] = bytes(range(size))
    shm.close()


def _shm_numpy_double(name, count):
    import numpy as np

    shm = fp.SharedMemory(name)
    array = np.ndarray((count,), dtype=np.float64, buffer=shm.buf)
    array *= 2.0
    del array
    shm.close()


def _locked_increments(lock, shm, count):
    for _ in range(count):
        with lock:
            value = struct.unpack_from("q", shm.buf, 0)[0]
            # widen the window between read and write
            if value % 7 == 0:
                time.sleep(0)
            struct.pack_into("q", shm.buf, 0, value + 1)


def _try_lock(lock, out):
    out.put(("first", lock.acquire(timeout=0.2)))
    got = lock.acquire(timeout=TIMEOUT)
    out.put(("second", got))
    if got:
        lock.release()


def _wait_event(started, event, out):
    started.set()
    out.put(event.wait(TIMEOUT))


def _release_semaphore(semaphore, times):
    for _ in range(times):
        semaphore.release()


def _bounded_worker(semaphore, lock, shm, out):
    with semaphore:
        with lock:
            inside = struct.unpack_from("q", shm.buf, 0)[0] + 1
            struct.pack_into("q", shm.buf, 0, inside)
            peak = max(inside, struct.unpack_from("q", shm.buf, 8)[0])
            struct.pack_into("q", shm.buf, 8, peak)
        time.sleep(0.05)
        with lock:
            struct.pack_into("q", shm.buf, 0, struct.unpack_from("q", shm.buf, 0)[0] - 1)
    out.put("done")


class _SquareProcess(fp.Process):
    def __init__(self, q, value):
        super().__init__()
        self.q = q
        self.value = value

    def run(self):
        self.q.put(("run", self.value * self.value))


def _started(target, *args, **options):
    process = fp.Process(target=target, args=args, **options)
    process.start()
    return process


def _joined(process):
    process.join(TIMEOUT)
    assert not process.is_alive(), "child did not end in time"
    return process.exitcode


# ---- processes ----

def test_exitcode_zero_and_identity():
    process = fp.Process(target=_return_nothing, name="quiet")
    assert process.name == "quiet"
    assert process.exitcode is None
    assert process.start_method == "forkserver"
    process.start()
    assert isinstance(process.pid, int) and process.pid != os.getpid()
    assert isinstance(process.sentinel, int)
    assert _joined(process) == 0
    process.close()


def test_exitcode_from_sys_exit():
    assert _joined(_started(_exit_with, 3)) == 3


def test_target_that_raises_exits_with_1():
    assert _joined(_started(_raise)) == 1


def test_kill_gives_negative_signal():
    process = _started(_sleep, 60)
    assert process.is_alive()
    process.kill()
    assert _joined(process) == -signal.SIGKILL


def test_terminate_and_is_alive():
    process = _started(_sleep, 60)
    process.join(0.1)
    assert process.is_alive()
    assert process.exitcode is None
    process.terminate()
    assert _joined(process) == -signal.SIGTERM
    assert not process.is_alive()


def test_run_override_in_subclass():
    q = fp.Queue()
    process = _SquareProcess(q, 12)
    process.start()
    assert q.get(timeout=TIMEOUT) == ("run", 144)
    assert _joined(process) == 0


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_other_start_methods(method):
    q, lock, semaphore = fp.Queue(), fp.Lock(), fp.Semaphore(0)
    shm = fp.SharedMemory(create=True, size=8)
    parent, child_end = fp.Pipe()
    process = _started(_every_kind, q, shm, child_end, lock, semaphore, start_method=method)
    assert process.start_method == method
    child_end.close()
    parent.send("ping")
    assert parent.recv() == ("pipe", "ping")
    assert q.get(timeout=TIMEOUT) == ("queue", process.pid)
    assert semaphore.acquire(timeout=TIMEOUT)
    assert _joined(process) == 0
    assert struct.unpack_from("q", shm.buf, 0)[0] == 77
    with pytest.raises(EOFError):
        parent.recv()


def test_unknown_start_method():
    with pytest.raises(ValueError):
        fp.Process(target=_return_nothing, start_method="thread")


def test_seed_example_results_through_queue_and_shared_memory():
    count = 4
    q = fp.Queue()
    shm = fp.SharedMemory(create=True, size=8 * count)
    processes = [_started(_square_into, q, shm, i, i + 2) for i in range(count)]
    results = dict(q.get(timeout=TIMEOUT) for _ in range(count))
    assert [_joined(p) for p in processes] == [0] * count
    assert results == {i: (i + 2) ** 2 for i in range(count)}
    cubes = [struct.unpack_from("q", shm.buf, 8 * i)[0] for i in range(count)]
    assert cubes == [(i + 2) ** 3 for i in range(count)]
    assert q.empty()


# ---- queues ----

def test_queue_many_producers_one_consumer():
    producers, each = 4, 300
    q = fp.Queue(capacity=16 * 1024)  # small ring: producers block and wake
    out = fp.Queue()
    consumer = _started(_consume, q, out, producers * each)
    workers = [_started(_produce, q, p, each) for p in range(producers)]
    distinct, total = out.get(timeout=TIMEOUT)
    assert [_joined(w) for w in workers] == [0] * producers
    assert _joined(consumer) == 0
    assert distinct == producers * each
    assert total == producers * sum(i + i % 50 for i in range(each))
    assert q.qsize() == 0


def test_queue_large_messages_across_processes():
    inbox, outbox, ready = fp.Queue(), fp.Queue(), fp.Event()
    child = _started(_echo_large, inbox, outbox, ready)
    # Wait until the child has opened the queues: see test_queue_open_after_large_message.
    assert ready.wait(TIMEOUT)
    data = os.urandom(5 * 1024 * 1024)
    inbox.put(data)
    assert outbox.get(timeout=TIMEOUT) == data[::-1]
    other = outbox.get(timeout=TIMEOUT)
    assert len(other) == 16 + 5 * 1024 * 1024 and other[16:] == bytes(5 * 1024 * 1024)
    assert _joined(child) == 0


def test_queue_full_empty_timeouts_and_maxsize():
    q = fp.Queue(maxsize=2)
    assert q.empty() and not q.full()
    q.put("a")
    q.put_nowait("b")
    assert q.full() and q.qsize() == 2
    with pytest.raises(queue.Full):
        q.put_nowait("c")
    with pytest.raises(queue.Full):
        q.put("c", block=False)
    start = time.monotonic()
    with pytest.raises(queue.Full):
        q.put("c", timeout=0.3)
    assert 0.25 <= time.monotonic() - start < 5
    assert q.get() == "a" and q.get_nowait() == "b"
    with pytest.raises(queue.Empty):
        q.get_nowait()
    start = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.3)
    assert 0.25 <= time.monotonic() - start < 5
    q.join_thread()
    q.cancel_join_thread()
    q.close()
    with pytest.raises(ValueError):
        q.put(1)


def test_queue_maxsize_blocks_producer_until_child_consumes():
    q, out = fp.Queue(maxsize=1), fp.Queue()
    child = _started(_slow_consumer, q, out, 10)
    for i in range(10):
        q.put(i, timeout=TIMEOUT)
        assert q.qsize() <= 1
    assert out.get(timeout=TIMEOUT) == list(range(10))
    assert _joined(child) == 0


def test_queue_objects_and_buffer_growth():
    q = fp.Queue()
    values = [None, 1, "text", b"\x00" * 70000, {"k": [1, 2.5, ("t",)]}, bytearray(200000)]
    for value in values:
        q.put(value)
    assert [q.get(timeout=1) for _ in values] == values


def test_queue_shutdown():
    q = fp.Queue()
    q.put(1)
    q.shutdown()
    with pytest.raises(fp.ShutDown):
        q.put(2)
    assert q.get(timeout=1) == 1
    with pytest.raises(fp.ShutDown):
        q.get(timeout=1)


def test_simple_and_joinable_queue():
    simple = fp.SimpleQueue()
    assert simple.empty()
    simple.put([1, 2])
    assert not simple.empty() and simple.get() == [1, 2]
    simple = pickle.loads(pickle.dumps(simple))
    simple.close()

    joinable = fp.JoinableQueue()
    joinable.put("job")
    assert joinable.get() == "job"
    joinable.task_done()
    joinable.join()
    with pytest.raises(ValueError):
        joinable.task_done()


def test_joinable_queue_across_processes():
    joinable, go = fp.JoinableQueue(), fp.Event()
    child = _started(_join_worker, joinable, go, 5)
    for i in range(5):
        joinable.put(i)
    assert not joinable._tasks[2].is_set()  # unfinished tasks
    go.set()
    joinable.join()
    assert joinable.qsize() == 0
    assert _joined(child) == 0


def test_queue_open_after_large_message():
    q = fp.Queue()
    q.put(bytes(2 * 1024 * 1024))
    q.get()
    copy = pickle.loads(pickle.dumps(q))
    copy.put("seen")
    assert q.get(timeout=1) == "seen"


# ---- pipes ----

def test_pipe_both_ways_with_child():
    parent, child_end = fp.Pipe()
    child = _started(_pipe_echo, child_end)
    child_end.close()
    parent.send({"n": 1})
    assert parent.recv() == ("echo", {"n": 1})
    big = os.urandom(3 * 1024 * 1024)  # above the inline limit: travels as a memfd
    parent.send("bytes follow")
    parent.send_bytes(big)
    assert parent.recv_bytes() == big[::-1]
    parent.send("bytes follow")
    parent.send_bytes(b"abcdef", 1, 3)
    assert parent.recv_bytes() == b"dcb"
    parent.send(("large object", big))
    assert parent.recv() == ("echo", ("large object", big))
    parent.send(None)
    assert parent.recv() == "bye"
    assert _joined(child) == 0
    with pytest.raises(EOFError):
        parent.recv()
    parent.close()
    assert parent.closed


def test_pipe_eof_after_child_exits():
    parent, child_end = fp.Pipe(duplex=False)
    assert parent.readable and not parent.writable
    assert child_end.writable and not child_end.readable
    child = _started(_pipe_send_then_exit, child_end)
    child_end.close()
    assert _joined(child) == 0
    assert parent.poll(TIMEOUT)
    assert parent.recv() == "last words"
    assert parent.poll(0)  # the end of stream is ready too
    with pytest.raises(EOFError):
        parent.recv()


def test_pipe_poll_waits_for_child():
    parent, child_end = fp.Pipe()
    go = fp.Event()
    child = _started(_pipe_poll_child, child_end, go)
    assert not parent.poll(0)
    assert not parent.poll(0.2)
    go.set()
    assert parent.poll(TIMEOUT)
    assert parent.recv() == "ready"
    assert _joined(child) == 0


def test_pipe_in_process():
    a, b = fp.Pipe()
    assert a.fileno() >= 0
    a.send_bytes(b"")
    assert b.recv_bytes() == b""
    b.send(list(range(5)))
    buffer = bytearray(100)
    size = a.recv_bytes_into(buffer, 10)
    assert pickle.loads(bytes(buffer[10:10 + size])) == list(range(5))
    a.send_bytes(b"x" * 100)
    with pytest.raises(OSError):
        b.recv_bytes(maxlength=10)
    assert b.recv_bytes() == b"x" * 100  # the message stayed
    reader, writer = fp.Pipe(duplex=False)
    with pytest.raises(OSError):
        reader.send(1)
    with pytest.raises(OSError):
        writer.recv()
    b.close()
    with pytest.raises(EOFError):
        a.recv()
    with pytest.raises(OSError):
        b.send(1)
    with pytest.raises(BrokenPipeError):
        a.send(1)


# ---- shared memory ----

def test_shared_memory_opened_by_name_in_child():
    shm = fp.SharedMemory(create=True, size=256)
    assert shm.name.startswith("memfd:") and shm.size == 256
    assert bytes(shm.buf) == bytes(256)
    assert _joined(_started(_shm_fill, shm.name, 256)) == 0
    assert bytes(shm.buf) == bytes(range(256))
    shm.close()
    assert shm.buf is None


def test_named_shared_memory():
    name = f"forklift-test-{os.getpid()}"
    shm = fp.SharedMemory(name=name, create=True, size=100)
    try:
        assert shm.name == name
        with pytest.raises(FileExistsError):
            fp.SharedMemory(name=name, create=True, size=100)
        assert _joined(_started(_shm_fill, name, 100)) == 0
        other = fp.SharedMemory(name)
        assert bytes(other.buf[:100]) == bytes(range(100))
        other.close()
    finally:
        shm.close()
        shm.unlink()
    with pytest.raises(FileNotFoundError):
        fp.SharedMemory(name)


def test_shared_memory_numpy_round_trip():
    np = pytest.importorskip("numpy")
    count = 1000
    shm = fp.SharedMemory(create=True, size=8 * count)
    array = np.ndarray((count,), dtype=np.float64, buffer=shm.buf)
    array[:] = np.arange(count)
    assert _joined(_started(_shm_numpy_double, shm.name, count)) == 0
    assert np.array_equal(array, 2.0 * np.arange(count))
    with pytest.raises(BufferError):
        shm.close()  # the array still uses the mapping
    assert array[3] == 6.0 and shm.buf[0] == 0
    del array
    shm.close()


def test_shared_memory_close_with_views_and_arguments():
    with pytest.raises(ValueError):
        fp.SharedMemory(create=True, size=0)
    with pytest.raises(ValueError):
        fp.SharedMemory()
    shm = fp.SharedMemory(create=True, size=16)
    view = shm.buf[2:4]
    with pytest.raises(BufferError):
        shm.close()
    view[0] = 9
    assert shm.buf[2] == 9
    view.release()
    shm.close()
    shm.close()  # idempotent
    original = fp.SharedMemory(create=True, size=32)
    copy = pickle.loads(pickle.dumps(original))
    copy.buf[5] = 42
    assert copy.size == 32 and original.buf[5] == 42
    assert copy.name.startswith("memfd:") and copy.name != original.name  # names are per process
    copy.close()
    name = original.name
    original.close()
    with pytest.raises(FileNotFoundError):
        fp.SharedMemory(name)  # an anonymous block's name dies with its creator's handle


# ---- locks, events, semaphores ----

def test_lock_protects_counter_across_processes():
    lock = fp.Lock()
    shm = fp.SharedMemory(create=True, size=8)
    workers, each = 4, 500
    processes = [_started(_locked_increments, lock, shm, each) for _ in range(workers)]
    assert [_joined(p) for p in processes] == [0] * workers
    assert struct.unpack_from("q", shm.buf, 0)[0] == workers * each


def test_lock_held_by_parent_blocks_child():
    lock, out = fp.Lock(), fp.Queue()
    assert lock.acquire()
    child = _started(_try_lock, lock, out)
    assert out.get(timeout=TIMEOUT) == ("first", False)
    lock.release()
    assert out.get(timeout=TIMEOUT) == ("second", True)
    assert _joined(child) == 0
    assert lock.acquire(timeout=1)
    lock.release()


def test_lock_and_rlock_in_process():
    lock = fp.Lock()
    with lock:
        assert not lock.acquire(False)
        start = time.monotonic()
        assert not lock.acquire(timeout=0.2)
        assert time.monotonic() - start >= 0.15
    with pytest.raises(ValueError):
        lock.release()
    rlock = fp.RLock()
    assert rlock.acquire() and rlock.acquire(False)
    rlock.release()
    rlock.release()
    with pytest.raises(AssertionError):
        rlock.release()


def test_event_across_processes():
    started, event, out = fp.Event(), fp.Event(), fp.Queue()
    child = _started(_wait_event, started, event, out)
    assert started.wait(TIMEOUT)
    assert out.empty()
    event.set()
    assert out.get(timeout=TIMEOUT) is True
    assert _joined(child) == 0
    assert event.is_set()
    event.clear()
    assert not event.is_set()
    assert event.wait(0.05) is False


def test_semaphore_across_processes():
    semaphore = fp.Semaphore(0)
    assert not semaphore.acquire(timeout=0.05)
    child = _started(_release_semaphore, semaphore, 3)
    for _ in range(3):
        assert semaphore.acquire(timeout=TIMEOUT)
    assert _joined(child) == 0
    assert semaphore.get_value() == 0
    assert not semaphore.acquire(False)


def test_semaphore_limits_concurrency():
    semaphore, lock, out = fp.BoundedSemaphore(2), fp.Lock(), fp.Queue()
    shm = fp.SharedMemory(create=True, size=16)
    processes = [_started(_bounded_worker, semaphore, lock, shm, out) for _ in range(5)]
    assert [out.get(timeout=TIMEOUT) for _ in processes] == ["done"] * 5
    assert [_joined(p) for p in processes] == [0] * 5
    inside, peak = struct.unpack_from("qq", shm.buf, 0)
    assert inside == 0 and 1 <= peak <= 2
    assert semaphore.get_value() == 2
    with pytest.raises(ValueError):
        semaphore.release()


def test_closed_objects_refuse_use():
    for obj in (fp.Lock(), fp.Event(), fp.Semaphore(1), fp.Queue()):
        obj.close()
        with pytest.raises(ValueError):
            pickle.dumps(obj)
