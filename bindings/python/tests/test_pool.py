import ctypes
import ctypes.util
import os
import signal
import threading
import time

import pytest

import forklift
from tasks import (TwoArgError, add, big, die, fail, pid, raise_two_arg, recall, remember, returns_stranger, sleep_pair,
                   sleep_then, square, unpicklable_result)

BACKENDS = ["process", "thread"]


@pytest.fixture(params=BACKENDS)
def pool(request):
    with forklift.Pool(2, backend=request.param) as p:
        yield p


def test_apply_map_starmap(pool):
    assert pool.apply(square, (7,)) == 49
    assert pool.apply(add, (1, 2), {"c": 3}) == 6
    assert pool.map(square, range(100)) == [x * x for x in range(100)]
    assert pool.map(square, range(100), chunksize=7) == [x * x for x in range(100)]
    assert pool.starmap(add, [(1, x, 2) for x in range(10)]) == [x + 3 for x in range(10)]
    assert pool.map(square, []) == []


def test_async_with_callbacks_in_completion_order(pool):
    results, errors, threads = [], [], set()

    def log(value):
        threads.add(threading.current_thread().name)
        results.append(value)
    handles = [pool.apply_async(square, (i,), callback=log, error_callback=errors.append) for i in range(20)]
    handles.append(pool.apply_async(fail, ("boom",), callback=log, error_callback=errors.append))
    pool.close()
    pool.join()
    assert sorted(results) == [i * i for i in range(20)]
    assert len(errors) == 1 and isinstance(errors[0], ValueError) and str(errors[0]) == "boom"
    assert len(threads) == 1 and threading.current_thread().name not in threads
    assert all(h.ready() for h in handles)
    assert handles[0].successful() and not handles[-1].successful()


def test_map_async_callback_gets_the_list(pool):
    got = []
    result = pool.map_async(square, range(10), callback=got.append)
    assert result.get(timeout=30) == [x * x for x in range(10)]
    pool.close()
    pool.join()
    assert got == [[x * x for x in range(10)]]


def test_exception_reraised_with_traceback(pool):
    with pytest.raises(ValueError, match="bad input") as info:
        pool.apply(fail, ("bad input",))
    if pool._backend == "process":
        assert isinstance(info.value.__cause__, forklift.RemoteTraceback)
        assert "raise ValueError(message)" in str(info.value.__cause__)
    with pytest.raises(ValueError):
        pool.map(fail, ["x"])


def test_callback_that_raises_does_not_break_the_pool(pool, capfd):
    def bad_callback(value):
        raise RuntimeError("callback failure")
    result = pool.apply_async(square, (3,), callback=bad_callback)
    result.wait(30)
    assert result.ready()
    assert pool.apply(square, (4,)) == 16
    assert pool.map(square, range(5)) == [0, 1, 4, 9, 16]


def test_get_timeout_then_value(pool):
    result = pool.apply_async(sleep_then, ("late", 0.5))
    with pytest.raises(forklift.TimeoutError):
        result.get(timeout=0.01)
    assert not result.ready()
    with pytest.raises(ValueError):
        result.successful()
    assert result.get(timeout=30) == "late"


def test_imap_and_unordered(pool):
    assert list(pool.imap(square, range(50))) == [x * x for x in range(50)]
    assert list(pool.imap(square, range(50), chunksize=8)) == [x * x for x in range(50)]
    assert sorted(pool.imap_unordered(square, range(50), chunksize=3)) == sorted(x * x for x in range(50))
    it = pool.imap(sleep_then, [])
    with pytest.raises(StopIteration):
        next(it)
    # An endless input is pulled as results are consumed (bounded read-ahead).
    import itertools
    endless = pool.imap(square, itertools.count())
    assert [next(endless) for _ in range(30)] == [x * x for x in range(30)]


def test_imap_next_timeout(pool):
    it = pool.imap(sleep_pair, [("x", 0.5)])
    with pytest.raises(forklift.TimeoutError):
        it.next(timeout=0.01)
    assert it.next(timeout=30) == "x"


def test_close_join_terminate_states():
    pool = forklift.Pool(2)
    with pytest.raises(ValueError):
        pool.join()  # still running
    pool.close()
    with pytest.raises(ValueError):
        pool.apply(square, (1,))
    pool.join()
    pool = forklift.Pool(2)
    slow = [pool.apply_async(sleep_then, (i, 0.2)) for i in range(20)]
    pool.terminate()
    pool.join()
    outcomes = []
    for r in slow:
        try:
            outcomes.append(r.get(timeout=5))
        except forklift.CancelledError:
            outcomes.append("cancelled")
    assert "cancelled" in outcomes  # 20 x 0.2 s on 2 workers cannot all have finished


def test_invalid_arguments():
    with pytest.raises(ValueError):
        forklift.Pool(0)
    with pytest.raises(ValueError):
        forklift.Pool(2, maxtasksperchild=0)
    with pytest.raises(ValueError):
        forklift.Pool(2, backend="gpu")
    with pytest.raises(TypeError):
        forklift.Pool(2, initializer=3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_initializer_runs_in_every_worker(backend):
    with forklift.Pool(2, initializer=remember, initargs=("greeting", "hello"), backend=backend) as pool:
        assert pool.map(recall, ["greeting"] * 20) == ["hello"] * 20


def test_maxtasksperchild_replaces_workers():
    with forklift.Pool(2, maxtasksperchild=3) as pool:
        pids = pool.map(pid, range(30), chunksize=1)
    counts = {p: pids.count(p) for p in set(pids)}
    assert len(counts) >= 10 and max(counts.values()) <= 3


def test_large_arguments_and_results_through_shared_memory():
    with forklift.Pool(2) as pool:
        data = pool.apply(big, (8 << 20,))
        assert len(data) == 8 << 20 and data[:3] == b"\x00\x01\x02"
        assert pool.apply(len, (data,)) == 8 << 20


def test_unpicklable_result_and_function_fail_cleanly():
    with forklift.Pool(2) as pool:
        with pytest.raises(Exception, match="pickled"):
            pool.apply(unpicklable_result)
        with pytest.raises(Exception):
            pool.apply(lambda: 1)
        assert pool.apply(square, (5,)) == 25


@pytest.mark.parametrize("how,expected", [("kill", "SIGKILL"), ("exit", "status 7"), ("abort", "SIGABRT")])
def test_dying_worker_fails_its_task_and_is_replaced(how, expected):
    with forklift.Pool(2) as pool:
        others = [pool.apply_async(sleep_then, (i, 0.01)) for i in range(10)]
        with pytest.raises(forklift.WorkerLostError, match=expected):
            pool.apply(die, (how,))
        assert [r.get(timeout=30) for r in others] == list(range(10))
        assert pool.map(square, range(10)) == [x * x for x in range(10)]


def test_workers_killed_from_outside_lose_nothing():
    with forklift.Pool(2) as pool:
        results = [pool.apply_async(sleep_then, (i, 0.002)) for i in range(600)]
        killed = 0
        while killed < 5 and not all(r.ready() for r in results):
            time.sleep(0.05)
            victims = [w.process.pid for w in list(pool._engine._workers)]
            try:
                os.kill(victims[killed % len(victims)], signal.SIGKILL)
                killed += 1
            except ProcessLookupError:  # a worker already replaced
                pass
        done = lost = 0
        for i, r in enumerate(results):
            try:
                assert r.get(timeout=60) == i
                done += 1
            except forklift.WorkerLostError as error:
                assert "SIGKILL" in str(error)
                lost += 1
        assert done + lost == 600
        assert lost <= killed
        assert pool.map(square, range(5)) == [0, 1, 4, 9, 16]


# ---- native functions through the typed-call path ----

libm = ctypes.CDLL(ctypes.util.find_library("m"))
libm.pow.argtypes = [ctypes.c_double, ctypes.c_double]
libm.pow.restype = ctypes.c_double
libc = ctypes.CDLL(None)
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
libc.memset.restype = ctypes.c_void_p
libc.labs.argtypes = [ctypes.c_long]
libc.labs.restype = ctypes.c_long


@pytest.mark.parametrize("backend", BACKENDS)
def test_native_functions(backend):
    with forklift.Pool(2, backend=backend) as pool:
        assert pool.apply(libm.pow, (2.0, 10.0)) == 1024.0
        assert pool.starmap(libm.pow, [(2.0, float(i)) for i in range(20)]) == [2.0 ** i for i in range(20)]
        assert pool.map(libc.labs, range(-5, 5)) == [abs(i) for i in range(-5, 5)]
        assert pool.apply_async(libm.pow, (3.0, 2.0)).get(30) == 9.0
        assert list(pool.imap(libc.labs, [-1, -2, -3])) == [1, 2, 3]
        with pytest.raises(TypeError):
            pool.apply(libm.pow, (1.0,))


def test_native_pointer_arguments_are_zero_copy():
    buffer = bytearray(64)
    with forklift.Pool(2, backend="thread") as pool:
        pool.apply(libc.memset, (buffer, 7, 64))
        assert buffer == bytearray([7]) * 64
        np = pytest.importorskip("numpy")
        array = np.zeros(1000, dtype=np.uint8)
        pool.starmap(libc.memset, [(array.ctypes.data + i * 100, i, 100) for i in range(10)])
        assert all((array[i * 100:(i + 1) * 100] == i).all() for i in range(10))
        pool.apply(libc.memset, (array, 9, 1000))
        assert (array == 9).all()


def test_native_calls_run_in_parallel_without_the_gil():
    """A native call blocks a worker in sem_wait; a second call on the other worker posts the
    semaphore. Only if the first call does not hold the GIL can the second ever run."""
    libc.sem_init.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint]
    libc.sem_wait.argtypes = [ctypes.c_void_p]
    libc.sem_post.argtypes = [ctypes.c_void_p]
    for function in (libc.sem_init, libc.sem_wait, libc.sem_post):
        function.restype = ctypes.c_int
    semaphore = ctypes.create_string_buffer(64)
    assert libc.sem_init(semaphore, 0, 0) == 0
    with forklift.Pool(2, backend="thread") as pool:
        waiting = pool.apply_async(libc.sem_wait, (semaphore,))
        time.sleep(0.05)
        assert not waiting.ready()
        assert pool.apply(libc.sem_post, (semaphore,)) == 0
        assert waiting.get(timeout=30) == 0


def test_progress_bar(capsys):
    with forklift.Pool(2) as pool:
        assert pool.map(square, range(40), progress=True) == [x * x for x in range(40)]
    err = capsys.readouterr().err
    assert "40/40" in err


def test_cffi_functions_run_natively():
    cffi = pytest.importorskip("cffi")
    ffi = cffi.FFI()
    ffi.cdef("double pow(double, double); long labs(long); void *memset(void *, int, size_t);")
    m = ffi.dlopen(ctypes.util.find_library("m"))
    c = ffi.dlopen(None)
    with forklift.Pool(2, backend="thread") as pool:
        assert pool.apply(m.pow, (2.0, 5.0)) == 32.0
        assert pool.map(c.labs, [-3, 4, -5]) == [3, 4, 5]
        buffer = bytearray(16)
        pool.apply(c.memset, (buffer, 1, 16))
        assert buffer == b"\x01" * 16


def test_what_does_not_unpickle_fails_its_task_only():
    """An exception or a result that pickles in the worker but does not unpickle in the pool's
    process fails its own task (RemoteError naming it); the pool goes on."""
    with forklift.Pool(2) as pool:
        with pytest.raises(forklift.RemoteError, match="TwoArgError: a") as caught:
            pool.apply_async(raise_two_arg, ("a", "b")).get(30)
        assert caught.value.type_name.endswith("TwoArgError")
        assert isinstance(caught.value.__cause__, forklift.RemoteTraceback)
        with pytest.raises(forklift.RemoteError, match="could not be unpickled"):
            pool.apply_async(returns_stranger).get(30)
        assert pool.apply_async(square, (7,)).get(30) == 49
    with forklift.Pool(2, backend="thread") as pool:  # no pickling: the exception itself
        with pytest.raises(TwoArgError):
            pool.apply(raise_two_arg, ("a", "b"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_imap_made_before_close_finishes(backend):
    """As multiprocessing: close() refuses new calls, an imap made before it still yields all."""
    for join_first in (False, True):
        pool = forklift.Pool(2, backend=backend)
        iterator = pool.imap(square, range(100))
        unordered = pool.imap_unordered(square, range(50), chunksize=3)
        pool.close()
        if join_first:
            pool.join()
        assert list(iterator) == [x * x for x in range(100)]
        assert sorted(unordered) == [x * x for x in range(50)]
        if not join_first:
            pool.join()


def test_timeouts_are_multiprocessing_timeouts():
    import multiprocessing
    with forklift.Pool(1, backend="thread") as pool:
        result = pool.apply_async(sleep_then, (1, 0.5))
        with pytest.raises(multiprocessing.TimeoutError):
            result.get(0.01)
        with pytest.raises(TimeoutError):  # the builtin one too
            result.get(0.01)
        assert result.get(30) == 1
        iterator = pool.imap(sleep_pair, [(2, 0.5)])
        with pytest.raises(multiprocessing.TimeoutError):
            iterator.next(0.01)
        assert list(iterator) == [2]


def test_thread_pool_tasks_may_wait_for_their_own_pool():
    """A task that submits to its own (thread-backend) pool and waits runs queued tasks
    meanwhile, so every worker waiting at once does not deadlock (the C API's rule too)."""
    with forklift.Pool(2, backend="thread") as pool:
        def outer(x):
            inner = pool.apply_async(square, (x,))
            return pool.apply(add, (inner.get(30), 1))
        assert pool.map(outer, range(10)) == [x * x + 1 for x in range(10)]
        assert pool.map(lambda x: sum(pool.map(square, range(x))), range(6)) == [sum(i * i for i in range(x)) for x in range(6)]


def test_a_waiting_task_runs_only_what_it_waits_for():
    """The worker waiting for its own result runs that result's task, not another queued one
    that could block it on something it has yet to do."""
    event = threading.Event()
    with forklift.Pool(4, backend="thread") as pool:
        def waiter():
            return event.wait(30)

        def outer():
            blocked = pool.apply_async(waiter)
            quick = pool.apply_async(square, (3,))
            value = quick.get(30)
            event.set()
            return value, blocked.get(30)
        assert pool.apply(outer) == (9, True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_close_returns_with_an_endless_imap(backend):
    import itertools
    pool = forklift.Pool(2, backend=backend)
    iterator = pool.imap(square, itertools.count())
    assert [next(iterator) for _ in range(5)] == [0, 1, 4, 9, 16]
    started = time.monotonic()
    pool.close()  # the input goes on being fed in the background, as in multiprocessing
    assert time.monotonic() - started < 5
    assert [next(iterator) for _ in range(5)] == [25, 36, 49, 64, 81]
    pool.terminate()
    pool._feeder.join(10)
    assert not pool._feeder.is_alive()
