"""Cases from CPython's own multiprocessing Pool tests (Lib/test/_test_multiprocessing.py,
class _TestPool), rewritten for forklift.Pool: the same behaviours, checked the same way."""
import time

import pytest

import forklift
from tasks import (CustomError, SayWhenError, exception_throwing_generator, identity, raise_custom,
                   sleep_then, square)


@pytest.fixture(scope="module")
def pool():
    p = forklift.Pool(4)
    yield p
    p.terminate()
    p.join()


def test_apply(pool):
    assert pool.apply(square, (5,)) == square(5)
    assert pool.apply(square, (), {"x": 3}) == square(3)


def test_map(pool):
    assert pool.map(square, list(range(10))) == list(map(square, list(range(10))))
    assert pool.map(square, list(range(100)), chunksize=20) == list(map(square, list(range(100))))


def test_starmap(pool):
    pairs = list(zip(range(10), range(9, -1, -1)))
    assert pool.starmap(pow, pairs) == [pow(*p) for p in pairs]
    assert pool.starmap_async(pow, pairs, chunksize=3).get() == [pow(*p) for p in pairs]


def test_map_async(pool):
    assert pool.map_async(square, list(range(10))).get() == list(map(square, list(range(10))))


def test_map_async_callbacks(pool):
    called = []
    pool.map_async(int, ["1"], callback=called.append, error_callback=called.append).wait()
    # wait() returns once the value is delivered, which is after the callback ran
    assert called == [[1]]
    called.clear()
    result = pool.map_async(int, ["a"], callback=called.append, error_callback=called.append)
    result.wait()
    assert len(called) == 1 and isinstance(called[0], ValueError)


def test_map_chunksize(pool):
    try:
        pool.map_async(int, ["1"], callback=lambda value: None, chunksize=1).get(timeout=10)
    except forklift.TimeoutError:
        pytest.fail("map_async with chunksize stuck")


def test_map_unpicklable(pool):
    with pytest.raises(Exception):
        pool.map(square, [lambda: 1] * 10)


def test_async_and_timeout(pool):
    result = pool.apply_async(sleep_then, (49, 0.2))
    assert result.get() == 49
    slow = pool.apply_async(sleep_then, (64, 0.5))
    start = time.monotonic()
    with pytest.raises(forklift.TimeoutError):
        slow.get(timeout=0.1)
    assert time.monotonic() - start < 0.5 + 0.4  # returned at its timeout, not at the result
    assert slow.get() == 64


def test_imap(pool):
    it = pool.imap(square, list(range(10)))
    assert list(it) == list(map(square, list(range(10))))
    it = pool.imap(square, list(range(10)))
    for i in range(10):
        assert next(it) == i * i
    with pytest.raises(StopIteration):
        next(it)
    it = pool.imap(square, list(range(1000)), chunksize=100)
    for i in range(1000):
        assert next(it) == i * i
    with pytest.raises(StopIteration):
        next(it)


def test_imap_handle_iterable_exception(pool):
    it = pool.imap(square, exception_throwing_generator(10, 3), 1)
    for i in range(3):
        assert next(it) == i * i
    with pytest.raises(SayWhenError):
        next(it)
    it = pool.imap(square, exception_throwing_generator(20, 7), 2)
    for i in range(6):
        assert next(it) == i * i
    with pytest.raises(SayWhenError):
        for _ in range(3):
            next(it)


def test_imap_unordered(pool):
    it = pool.imap_unordered(square, list(range(10)))
    assert sorted(it) == list(map(square, list(range(10))))
    it = pool.imap_unordered(square, list(range(1000)), chunksize=100)
    assert sorted(it) == list(map(square, list(range(1000))))


def test_imap_unordered_handle_iterable_exception(pool):
    it = pool.imap_unordered(square, exception_throwing_generator(10, 3), 1)
    expected = {i * i for i in range(3)}
    with pytest.raises(SayWhenError):
        for _ in range(10):
            value = next(it)
            assert value in expected
            expected.discard(value)


def test_make_pool():
    with pytest.raises(ValueError):
        forklift.Pool(-1)
    with pytest.raises(ValueError):
        forklift.Pool(0)
    p = forklift.Pool(3)
    try:
        assert p._processes == 3
    finally:
        p.close()
        p.join()


def test_terminate():
    p = forklift.Pool(4)
    result = p.map_async(time.sleep, [0.1] * 100, chunksize=1)  # noqa: F841  (not waited for)
    p.terminate()
    start = time.monotonic()
    p.join()
    assert time.monotonic() - start < 2.0


def test_empty_iterable(pool):
    assert pool.map(square, []) == list(map(square, []))
    assert list(pool.imap(square, [])) == list(map(square, []))
    assert list(pool.imap_unordered(square, [])) == list(map(square, []))
    assert pool.map_async(square, []).get() == []


def test_context():
    with forklift.Pool(2) as p:
        result = p.map_async(square, range(10))
        assert result.get() == list(map(square, range(10)))
    with pytest.raises(ValueError):
        p.map_async(square, range(10))
    with pytest.raises(ValueError):
        with p:
            pass


def test_traceback():
    with forklift.Pool(1) as p:
        with pytest.raises(CustomError) as info:
            p.apply(raise_custom, (123,))
        assert info.value.code == 123
        cause = info.value.__cause__
        assert isinstance(cause, forklift.RemoteTraceback)
        assert "raise CustomError(code)" in cause.text


def test_wrapped_exception():
    with forklift.Pool(1) as p:
        with pytest.raises(CustomError):
            p.apply(raise_custom, (1,))


def test_map_no_failfast():
    # A failing task does not stop the pool from finishing the others and being joined.
    p = forklift.Pool(2)
    with pytest.raises(CustomError):
        p.map(raise_custom, [1] * 4 + [0], chunksize=1)
    assert p.map(identity, range(5)) == list(range(5))
    p.close()
    start = time.monotonic()
    p.join()
    assert time.monotonic() - start < 10


def test_enter_after_close():
    p = forklift.Pool(1)
    p.close()
    with pytest.raises(ValueError):
        with p:
            pass
    p.join()
