import ctypes
import ctypes.util
import sys
import threading
import time

import pytest

import forklift


@pytest.fixture(autouse=True)
def runtime():
    forklift.init(num_workers=2)
    yield
    forklift.shutdown()


@forklift.remote
def identity(x):
    return x


@forklift.remote
def add(a, b):
    return a + b


@forklift.remote
def slow(x, seconds=0.2):
    time.sleep(seconds)
    return x


@forklift.remote
def broken(message):
    raise KeyError(message)


@forklift.remote
class Counter:
    def __init__(self, start=0):
        self.value = start

    def add(self, by=1):
        seen = self.value
        time.sleep(0)  # invite a race if calls were not serialized
        self.value = seen + by
        return self.value

    def get(self):
        return self.value


def test_seed_example_results():
    @forklift.remote
    def f(x):
        time.sleep(1)
        return x
    result_ids = [f.remote(i) for i in range(4)]
    assert forklift.get(result_ids) == [0, 1, 2, 3]


def test_refs_flow_into_tasks():
    total = add.remote(forklift.put(2), add.remote(3, 4))
    assert forklift.get(total) == 9
    assert forklift.get(add.remote(a=forklift.put("x"), b="y")) == "xy"
    chain = forklift.put(0)
    for _ in range(100):
        chain = add.remote(chain, 1)
    assert forklift.get(chain) == 100
    # Only top-level arguments are resolved: a ref inside a value comes back as a ref.
    [inner] = forklift.get(identity.remote([forklift.put(5)]))
    assert isinstance(inner, forklift.ObjectRef)
    assert forklift.get(inner) == 5


@forklift.remote
def squares(n):
    return [add.remote(i * i, 0) for i in range(n)]


@forklift.remote
def total_of(box):
    return sum(forklift.get(box["refs"]))


@forklift.remote
class Keeper:
    def __init__(self, box):
        self.refs = box

    def total(self, more):
        return sum(forklift.get(self.refs + more))


@forklift.remote
def failing_pair(refs):
    raise ValueError("holds a ref", refs[0])


def test_refs_inside_values():
    import gc
    import pickle
    # put: the value's object keeps the refs' objects alive after their own refs went.
    a, b = forklift.put(1), add.remote(2, 0)
    box = forklift.put({"refs": [a, b], "name": "pair"})
    before = forklift.stats()["objects"]
    del a, b
    gc.collect()
    assert forklift.stats()["objects"] == before
    value = forklift.get(box)
    assert value["name"] == "pair" and forklift.get(value["refs"]) == [1, 2]
    # A task's argument: the task gets the refs and reads their values.
    assert forklift.get(total_of.remote(box)) == 3
    # A task returning refs of tasks it submitted (a dynamic graph, as in Ray).
    refs = forklift.get(squares.remote(5))
    assert all(isinstance(ref, forklift.ObjectRef) for ref in refs)
    assert forklift.get(refs) == [0, 1, 4, 9, 16]
    # num_returns: each result contains its own refs.
    first, second = forklift.get(identity.options(num_returns=2).remote((forklift.put("x"), [forklift.put("y")])))
    assert forklift.get(first) == "x" and forklift.get(second[0]) == "y"
    # An actor's constructor and method.
    keeper = Keeper.remote(forklift.put([forklift.put(10), forklift.put(20)]))
    assert forklift.get(keeper.total.remote(forklift.put([forklift.put(3)]))) == 33
    # Nested values and a get in a future.
    outer = forklift.put([forklift.put([forklift.put("deep")])])
    [[deep]] = [forklift.get(ref) for ref in forklift.get(outer)]
    assert forklift.get(deep) == "deep"
    assert forklift.get(outer.future().result(timeout=30)[0].future().result(timeout=30)[0]) == "deep"
    # A native task's ref inside a value still gives its C value; a failure that holds a ref
    # reaches every result of a task with several.
    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    libm.pow.argtypes, libm.pow.restype = [ctypes.c_double] * 2, ctypes.c_double
    [power] = forklift.get(forklift.put([forklift.remote(libm.pow).remote(2.0, 5.0)]))
    assert forklift.get(power) == 32.0
    results = failing_pair.options(num_returns=2).remote([forklift.put(1)])
    for result in results:
        with pytest.raises(ValueError, match="holds a ref") as info:
            forklift.get(result)
        assert forklift.get(info.value.args[1]) == 1
    del power, results, result, info
    # Outside the store a ref still does not pickle.
    with pytest.raises(TypeError, match="can be pickled only inside a value"):
        pickle.dumps(box)
    # Once the containers go, so does everything they held.
    del box, value, refs, first, second, keeper, outer, deep
    gc.collect()
    for _ in range(3000):
        if forklift.stats()["objects"] == 0:
            break
        time.sleep(0.01)
    assert forklift.stats()["objects"] == 0


def test_errors_travel_as_objects():
    failed = broken.remote("lost key")
    with pytest.raises(KeyError, match="lost key") as info:
        forklift.get(failed)
    assert "raise KeyError(message)" in str(info.value.__cause__)
    with pytest.raises(KeyError):
        forklift.get(add.remote(failed, 1))  # a task whose argument failed fails with that cause


def test_retry_exceptions():
    attempts = []

    @forklift.remote(max_retries=3, retry_exceptions=True)
    def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("not yet")
        return "ok"
    assert forklift.get(flaky.remote()) == "ok" and len(attempts) == 3
    attempts.clear()
    with pytest.raises(RuntimeError):
        forklift.get(flaky.options(max_retries=1).remote())
    assert len(attempts) == 2


def test_get_timeout_and_wait():
    late = slow.remote("late", 0.5)
    with pytest.raises(forklift.GetTimeoutError):
        forklift.get(late, timeout=0.01)
    ready_now = forklift.put(1)
    ready, not_ready = forklift.wait([late, ready_now], num_returns=1, timeout=10)
    assert ready == [ready_now] and not_ready == [late]
    ready, not_ready = forklift.wait([late, ready_now], num_returns=2)
    assert ready == [late, ready_now] and not_ready == []
    assert forklift.get(late) == "late"
    with pytest.raises(ValueError):
        forklift.wait([late], num_returns=2)


def test_put_get_and_no_leak():
    value = {"a": [1, 2, 3], "b": b"bytes"}
    assert forklift.get(forklift.put(value)) == value
    before = forklift.stats()["objects"]
    for i in range(20000):
        ref = forklift.put(i)
        assert forklift.get(ref) == i
        del ref
    assert forklift.stats()["objects"] == before


def test_objects_beyond_the_store_spill_to_files(tmp_path):
    forklift.shutdown()
    forklift.init(num_workers=2, object_store_memory=64 << 10)
    small = forklift.put(b"x" * (40 << 10))
    with pytest.raises(forklift.ForkliftError, match="object store full"):
        forklift.put(b"y" * (40 << 10))
    del small
    forklift.shutdown()
    with pytest.raises(forklift.InvalidArgumentError, match="spill directory"):
        forklift.init(object_store_memory=64 << 10, object_spilling_directory=tmp_path / "missing")
    forklift.init(num_workers=2, object_store_memory=64 << 10, object_spilling_directory=tmp_path)
    values = [bytes([i]) * (40 << 10) for i in range(5)]
    refs = [forklift.put(v) for v in values]  # one fits, four go to files
    assert forklift.get(refs) == values
    assert forklift.stats()["object_bytes"] <= 64 << 10
    del refs
    assert list(tmp_path.iterdir()) == []  # unnamed files, gone with their objects


def test_cancel():
    blockers = [slow.remote(i, 0.3) for i in range(2)]
    victim = slow.remote("never", 0)
    forklift.cancel(victim)
    with pytest.raises(forklift.CancelledError):
        forklift.get(victim)
    assert forklift.get(blockers) == [0, 1]


_children: list = []
_ran: list = []


@forklift.remote
def record(x, seconds=0.0):
    time.sleep(seconds)
    _ran.append(x)
    return x


@forklift.remote
def spawner(n):
    _children.extend(record.remote(i, 0.3) for i in range(n))  # one runs, the others wait
    time.sleep(0.8)  # still running when cancelled
    _children.append(record.remote("late"))
    return "done"


def _family(recursive):
    _children.clear()
    _ran.clear()
    parent = spawner.remote(4)
    deadline = time.monotonic() + 30
    while len(_children) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    forklift.cancel(parent, recursive=recursive)
    with pytest.raises(forklift.CancelledError):
        forklift.get(parent)
    while len(_children) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(_children) == 5
    return parent


def test_cancel_is_recursive_by_default():
    calls = sys.modules["forklift.remote"]._calls
    before = len(calls)
    _family(recursive=True)
    for child in _children:  # the running one too: its result was cancelled at once
        with pytest.raises(forklift.CancelledError):
            forklift.get(child)
    assert _ran in ([], [0])  # only the first child may have started
    del child
    _children.clear()  # the calls that never ran let go of what they would have run
    assert len(calls) == before


def test_cancel_not_recursive():
    _family(recursive=False)
    assert forklift.get(_children) == [0, 1, 2, 3, "late"]
    _children.clear()


_worker_started = threading.Event()


@forklift.remote
def uses_an_actor():
    counter = Counter.remote(1)
    forklift.get(counter.add.remote())
    _worker_started.set()
    time.sleep(0.5)  # cancelled meanwhile; the actor's last handle goes when this returns
    return "done"


def test_an_actor_made_by_a_cancelled_task_still_ends():
    module = sys.modules["forklift.remote"]
    actors = module._current().actors
    before = len(actors)
    _worker_started.clear()
    ref = uses_an_actor.remote()
    assert _worker_started.wait(30)
    forklift.cancel(ref)
    deadline = time.monotonic() + 30
    while len(actors) > before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(actors) == before  # its actor calls are not the task's, so the actor retired


def test_actor_state_and_order_under_many_callers():
    counter = Counter.remote(10)
    assert forklift.get([counter.add.remote() for _ in range(5)]) == [11, 12, 13, 14, 15]
    assert forklift.get(counter.add.remote(by=forklift.put(100))) == 115
    results = {}

    def caller(name):
        results[name] = forklift.get([counter.add.remote() for _ in range(200)])
    threads = [threading.Thread(target=caller, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert forklift.get(counter.get.remote()) == 115 + 800
    for values in results.values():
        assert values == sorted(values)  # each caller's calls ran in its submission order
    with pytest.raises(AttributeError):
        counter.missing
    forklift.kill(counter)
    with pytest.raises(forklift.ForkliftError):
        counter.add.remote()


def test_actor_constructor_failure_and_max_concurrency():
    @forklift.remote
    class Broken:
        def __init__(self):
            raise OSError("no state")

        def ping(self):
            return "pong"
    with pytest.raises(OSError, match="no state"):
        forklift.get(Broken.remote().ping.remote())

    @forklift.remote
    class Gate:
        def __init__(self):
            self.event = threading.Event()
            self.inside = 0

        def wait(self):
            self.inside += 1
            return self.event.wait(10)

        def open(self):
            self.event.set()
            return True
    gate = Gate.options(max_concurrency=2).remote()
    waiting = gate.wait.remote()
    assert forklift.get(gate.open.remote(), timeout=10)  # ran beside the waiting call
    assert forklift.get(waiting) is True


def test_misuse_is_reported():
    with pytest.raises(TypeError):
        identity(1)
    with pytest.raises(TypeError):
        forklift.get(3)
    with pytest.raises(ValueError):
        forklift.remote(num_gpus=1)(lambda: 0)
    with pytest.raises(RuntimeError):
        forklift.init()


def test_shutdown_with_work_in_flight():
    started = [slow.remote(i, 0.2) for i in range(6)]
    forklift.shutdown()
    outcomes = []
    for ref in started:
        try:
            outcomes.append(forklift.get(ref, timeout=10))
        except forklift.CancelledError:
            outcomes.append("cancelled")
    assert "cancelled" in outcomes and len(outcomes) == 6
    forklift.init(num_workers=2)  # the fixture shuts this one down


def test_timeline_names_python_functions(tmp_path):
    forklift.start_timeline()
    forklift.get([add.remote(i, 1) for i in range(5)])
    counter = Counter.remote()
    forklift.get(counter.add.remote())
    forklift.stop_timeline()
    forklift.get(add.remote(0, 0))  # not recorded
    events = [e for e in forklift.timeline() if e["ph"] == "X"]
    names = [e["name"] for e in events]
    assert names.count("test_remote.add") == 5
    assert names.count("actor constructor") == 1
    assert len(events) == 7 and all(e["dur"] >= 0 for e in events)
    path = tmp_path / "trace.json"
    forklift.timeline(str(path))
    import json
    assert len([e for e in json.loads(path.read_text())["traceEvents"] if e["ph"] == "X"]) == 7


def test_num_returns():
    @forklift.remote(num_returns=3)
    def split(x):
        return x, x * x, str(x)
    first, second, third = split.remote(4)
    assert forklift.get([first, second, third]) == [4, 16, "4"]
    assert forklift.get(add.remote(first, second)) == 20  # each result flows on by itself
    wrong = split.options(num_returns=2).remote(1)
    with pytest.raises(ValueError, match="num_returns=2"):
        forklift.get(wrong[1])

    @forklift.remote(num_returns=2)
    def fails():
        raise LookupError("both refs see it")
    for ref in fails.remote():
        with pytest.raises(LookupError):
            forklift.get(ref)
    with pytest.raises(ValueError):
        split.options(num_returns=0)


def test_num_cpus_limits_what_runs_at_once():
    running = []
    most = []
    lock = threading.Lock()

    @forklift.remote(num_cpus=2)
    def heavy(i):
        with lock:
            running.append(i)
            most.append(len(running))
        time.sleep(0.02)
        with lock:
            running.remove(i)
        return i
    assert forklift.get([heavy.remote(i) for i in range(5)]) == list(range(5))
    assert max(most) == 1  # two CPUs each on two workers: one at a time
    with pytest.raises(ValueError):
        forklift.get(heavy.options(num_cpus=3).remote(0))


# ---- native functions as typed remote tasks ----

import ctypes
import ctypes.util
import math
import os

_libm = ctypes.CDLL(ctypes.util.find_library("m"))
_libm.pow.argtypes = [ctypes.c_double, ctypes.c_double]
_libm.pow.restype = ctypes.c_double
_libm.sqrt.argtypes = [ctypes.c_double]
_libm.sqrt.restype = ctypes.c_double
_libc = ctypes.CDLL(None)
_libc.getpid.argtypes = []
_libc.getpid.restype = ctypes.c_int
_libc.labs.argtypes = [ctypes.c_long]
_libc.labs.restype = ctypes.c_long
_libc.srand.argtypes = [ctypes.c_uint]
_libc.srand.restype = None
_libc.raise_ = _libc["raise"]
_libc.raise_.argtypes = [ctypes.c_int]
_libc.raise_.restype = ctypes.c_int

native_pow = forklift.remote(_libm.pow)
native_sqrt = forklift.remote(_libm.sqrt)


def test_native_remote_values_and_graph():
    power = native_pow.remote(2.0, 10.0)
    root = native_sqrt.remote(power)
    assert forklift.get(power) == 1024.0
    assert forklift.get(root) == 32.0
    # A native result feeds a Python task, and back.
    assert forklift.get(add.remote(power, 1)) == 1025.0
    assert forklift.get(forklift.remote(_libc.labs).remote(-42)) == 42
    assert forklift.get(forklift.remote(_libc.srand).remote(7)) is None
    ready, not_ready = forklift.wait([root, power], num_returns=2, timeout=30)
    assert ready == [root, power] and not_ready == []


def test_native_remote_runs_many_without_the_gil():
    refs = [native_pow.remote(float(i), 0.5) for i in range(2000)]
    values = forklift.get(refs)
    assert values == [math.sqrt(i) for i in range(2000)]


def test_native_remote_bad_input():
    with pytest.raises(TypeError, match="takes 2 arguments"):
        native_pow.remote(1.0)
    with pytest.raises(TypeError, match="native function's result"):
        native_sqrt.remote(forklift.put(4.0))
    with pytest.raises(TypeError, match="native function's result"):
        native_sqrt.remote(identity.remote(4.0))
    with pytest.raises(ValueError, match="unsupported options"):
        forklift.remote(num_returns=2)(_libm.pow)
    with pytest.raises(ValueError, match="native functions"):
        forklift.remote(isolate=True)(lambda x: x)
    with pytest.raises(forklift.ForkliftError, match="process workers"):
        native_pow.options(isolate=True).remote(1.0, 2.0)


def test_native_remote_isolated_in_worker_processes():
    forklift.shutdown()
    forklift.init(num_workers=2, num_process_workers=2)
    isolated_pid = forklift.remote(isolate=True)(_libc.getpid)
    pids = set(forklift.get([isolated_pid.remote() for _ in range(20)]))
    assert os.getpid() not in pids and all(pid > 0 for pid in pids)
    assert forklift.get(native_pow.options(isolate=True).remote(3.0, 4.0)) == 81.0
    # A crash in a worker process fails that task alone.
    crash = forklift.remote(isolate=True)(_libc.raise_)
    with pytest.raises(forklift.ForkliftError, match="SIGSEGV"):
        forklift.get(crash.remote(11))
    assert forklift.get(native_sqrt.options(isolate=True).remote(native_pow.remote(2.0, 6.0))) == 8.0


@forklift.remote
def mutate_and_measure(items, box):
    box["touched"] = True
    items.append("task")
    return len(items)


@forklift.remote
def first_value(refs):
    return forklift.get(refs[0]) + 1 if isinstance(refs[0], forklift.ObjectRef) else None


@forklift.remote
def call_it(function):
    return function()


@forklift.remote
def add_through(actor, actors):
    forklift.get(actor.add.remote(1))
    return forklift.get(actors[0].add.remote(1))


def test_arguments_travel_by_value():
    """As in Ray: a task sees its arguments as they were at .remote(); neither side's later
    changes reach the other. A ref inside an argument travels as a ref."""
    items, box = [1, 2, 3], {}
    blockers = [slow.remote(i, 0.2) for i in range(2)]
    ref = mutate_and_measure.remote(items, box)
    items.extend(range(100))
    assert forklift.get(ref) == 4
    assert box == {} and len(items) == 103
    forklift.get(blockers)
    inner = forklift.put(41)
    assert forklift.get(first_value.remote([inner])) == 42
    # What does not pickle (a lambda, a lock) is passed as itself; an actor handle is the same actor.
    assert forklift.get(call_it.remote(lambda: 5)) == 5
    counter = Counter.remote(10)
    assert forklift.get(add_through.remote(counter, [counter])) == 12
    assert forklift.get(counter.get.remote()) == 12


def test_cancelled_calls_let_go_of_their_arguments():
    module = sys.modules["forklift.remote"]
    blockers = [slow.remote(i, 0.3) for i in range(2)]
    held = len(module._calls)
    victims = [identity.remote(bytes(100_000)) for _ in range(50)]
    for victim in victims:
        forklift.cancel(victim)
    assert len(module._calls) <= held
    for victim in victims:
        with pytest.raises(forklift.CancelledError):
            forklift.get(victim)
    assert forklift.get(blockers) == [0, 1]


def test_shutdown_ends_the_actors_still_alive():
    import gc
    import weakref
    instances = []

    @forklift.remote
    class Holder:
        def __init__(self):
            instances.append(weakref.ref(self))

        def ping(self):
            return 1

    kept = Holder.remote()
    assert forklift.get(kept.ping.remote()) == 1
    forklift.shutdown()
    gc.collect()
    assert len(instances) == 1 and instances[0]() is None  # the shutdown let go of it
    with pytest.raises(forklift.ForkliftError, match="shut down"):
        kept.ping.remote()
    del kept  # frees the handle
    gc.collect()
    forklift.init(num_workers=2)  # the fixture shuts this one down


def test_an_actor_without_handles_ends_after_its_calls():
    import gc
    module = sys.modules["forklift.remote"]

    @forklift.remote
    class Holder:
        def __init__(self):
            self.data = bytearray(1 << 20)

        def size(self):
            time.sleep(0.05)
            return len(self.data)

    before = len(module._current().actors)
    refs = []
    for _ in range(20):
        actor = Holder.remote()
        refs.append(actor.size.remote())  # made before the last handle goes: it still runs
        del actor
    gc.collect()
    assert forklift.get(refs, timeout=30) == [1 << 20] * 20
    deadline = time.monotonic() + 10
    while len(module._current().actors) > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(module._current().actors) == before
    kept = Holder.remote()
    forklift.kill(kept)
    del kept  # killed already: nothing more to do
    gc.collect()


class TwoArgError(Exception):
    def __init__(self, a, b):
        super().__init__(a)
        self.b = b


class HoldsALock(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()  # does not pickle


@forklift.remote
def raise_two_arg():
    raise TwoArgError("a", "b")


@forklift.remote
def raise_holding_a_lock():
    raise HoldsALock("locked out")


@forklift.remote
class Raiser:
    def two_arg(self):
        raise TwoArgError("from an actor", 2)


def test_exceptions_that_do_not_pickle_arrive_named():
    for ref, text in ((raise_two_arg.remote(), "TwoArgError: a"), (raise_holding_a_lock.remote(), "HoldsALock: locked out"),
                      (identity.remote(raise_two_arg.remote()), "TwoArgError: a"),
                      (Raiser.remote().two_arg.remote(), "TwoArgError: from an actor")):
        with pytest.raises(forklift.RemoteError, match=text) as caught:
            forklift.get(ref)
        assert "Traceback" in str(caught.value.__cause__)
    with pytest.raises(KeyError, match="plain"):  # one that pickles keeps its type
        forklift.get(broken.remote("plain"))


def test_wait_refuses_duplicates():
    ref = identity.remote(1)
    with pytest.raises(ValueError, match="unique"):
        forklift.wait([ref, ref])
    assert forklift.wait([ref], timeout=30) == ([ref], [])


@forklift.remote
def fails_after(seconds):
    time.sleep(seconds)
    raise ValueError("no good")


@forklift.remote
def takes_two(a, b):
    return len(b)


def _wait_for(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_dropped_refs_of_calls_that_never_run_let_go_of_their_arguments():
    calls = sys.modules["forklift.remote"]._calls
    before = len(calls)
    cause = slow.remote(0, 0.3)
    for _ in range(20):
        takes_two.remote(cause, bytes(100_000))  # the ref goes at once
    assert len(calls) >= before + 20
    forklift.cancel(cause)  # so they never run: their argument is cancelled
    with pytest.raises(forklift.CancelledError):
        forklift.get(cause)
    del cause
    assert _wait_for(lambda: len(calls) == before)


def test_future():
    assert slow.remote(3, 0.1).future().result(timeout=10) == 3
    assert forklift.put([1, 2]).future().result(timeout=10) == [1, 2]  # resolved already
    error = fails_after.remote(0).future().exception(timeout=10)
    assert isinstance(error, ValueError) and "no good" in str(error)
    futures = [slow.remote(i, 0.05).future() for i in range(6)]
    assert [future.result(timeout=10) for future in futures] == list(range(6))
    cancelled = slow.remote(0, 1)
    future = cancelled.future()
    forklift.cancel(cancelled)
    assert isinstance(future.exception(timeout=10), forklift.CancelledError)


def test_await():
    import asyncio

    async def main():
        one = await slow.remote(1, 0.1)
        many = await asyncio.gather(*[slow.remote(i, 0.05) for i in range(4)])
        with pytest.raises(ValueError, match="no good"):
            await fails_after.remote(0)
        return one, many
    assert asyncio.run(main()) == (1, [0, 1, 2, 3])
