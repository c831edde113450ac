import asyncio
import concurrent.futures as cf
import ctypes
import ctypes.util

import pytest

import forklift
from tasks import fail, sleep_then, square


@pytest.mark.parametrize("backend", ["process", "thread"])
def test_executor_is_a_concurrent_futures_executor(backend):
    with forklift.futures.Executor(2, backend=backend) as executor:
        assert isinstance(executor, cf.Executor)
        futures = [executor.submit(square, i) for i in range(20)]
        assert sorted(f.result() for f in cf.as_completed(futures, timeout=30)) == [i * i for i in range(20)]
        done, not_done = cf.wait(futures, timeout=30)
        assert len(done) == 20 and not not_done
        assert list(executor.map(square, range(10))) == [i * i for i in range(10)]
        assert list(executor.map(square, range(10), chunksize=3)) == [i * i for i in range(10)]
        with pytest.raises(ValueError, match="oops"):
            executor.submit(fail, "oops").result(timeout=30)

        async def main():
            return await asyncio.wrap_future(executor.submit(square, 12))
        assert asyncio.run(main()) == 144
    with pytest.raises(RuntimeError):
        executor.submit(square, 1)


def test_executor_native_and_first_completed():
    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    libm.pow.argtypes = [ctypes.c_double, ctypes.c_double]
    libm.pow.restype = ctypes.c_double
    with forklift.futures.Executor(2) as executor:
        assert executor.submit(libm.pow, 2.0, 8.0).result(timeout=30) == 256.0
        slow = executor.submit(sleep_then, "slow", 0.5)
        fast = executor.submit(square, 3)
        done, _ = cf.wait([slow, fast], return_when=cf.FIRST_COMPLETED, timeout=30)
        assert fast in done
        assert slow.result(timeout=30) == "slow"


def test_shutdown_cancel_futures():
    executor = forklift.futures.Executor(1)
    futures = [executor.submit(sleep_then, i, 0.1) for i in range(10)]
    executor.shutdown(cancel_futures=True)
    outcomes = []
    for f in futures:
        try:
            outcomes.append(f.result(timeout=10))
        except (forklift.CancelledError, cf.CancelledError):
            outcomes.append("cancelled")
    assert "cancelled" in outcomes


def touch_after(path, seconds):
    import time
    time.sleep(seconds)
    with open(path, "w") as file:
        file.write("ran")
    return path


@pytest.mark.parametrize("backend", ["process", "thread"])
def test_running_calls_cannot_be_cancelled_and_cancelled_ones_never_run(backend, tmp_path):
    import os
    import time
    with forklift.futures.Executor(1, backend=backend) as executor:
        running = executor.submit(touch_after, str(tmp_path / "running"), 0.4)
        # Behind it, beyond what the engine hands to its one worker at once.
        queued = [executor.submit(touch_after, str(tmp_path / f"queued{i}"), 0) for i in range(4)]
        deadline = time.monotonic() + 10
        while not running.running() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert running.running()
        assert not running.cancel()
        assert queued[-1].cancel() and queued[-1].cancelled()
        assert running.result(30) == str(tmp_path / "running")
        for future in queued[:-1]:
            future.result(30)
    assert not os.path.exists(tmp_path / "queued3")
    assert os.path.exists(tmp_path / "queued0")


@pytest.mark.parametrize("backend", ["process", "thread"])
def test_shutdown_cancels_futures_not_started(backend, tmp_path):
    import os
    executor = forklift.futures.Executor(1, backend=backend)
    futures = [executor.submit(touch_after, str(tmp_path / str(i)), 0.2) for i in range(8)]
    import time
    time.sleep(0.05)
    executor.shutdown(wait=True, cancel_futures=True)
    ran = {int(name) for name in os.listdir(tmp_path)}
    cancelled = {i for i, future in enumerate(futures) if future.cancelled()}
    assert ran and cancelled and ran | cancelled == set(range(8)) and not ran & cancelled
    for i in ran:
        assert futures[i].result(0) == str(tmp_path / str(i))


def test_a_dying_worker_does_not_stall_the_executor():
    """The calls queued at a worker that dies go to another, asked to start once only."""
    from tasks import die
    with forklift.futures.Executor(2, backend="process") as executor:
        for _ in range(3):
            dying = executor.submit(die, "kill")
            others = [executor.submit(square, i) for i in range(40)]
            with pytest.raises(forklift.WorkerLostError):
                dying.result(30)
            assert [future.result(30) for future in others] == [i * i for i in range(40)]
