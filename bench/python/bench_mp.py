"""multiprocessing.Pool and concurrent.futures.ProcessPoolExecutor on the benchmark workloads.

usage: bench_mp.py {mp,cf} W1|W2|W3|W4|W5|W5s|N1 N [ROUNDS]   prints one number in the workload's unit.
       bench_mp.py {mp,pipe} Q1 N   a queue (pipe) round trip to a child process, µs.
N1: zlib.crc32 over N pieces of 1 MiB with Pool.map (pieces pickled): speed-up over serial.
"""
import concurrent.futures as cf
import multiprocessing as mp
import os
import sys
import time


# W5s: transfers before the timed ones, and timed ones.
W5_WARMUPS = 3
W5_TIMED = 5


def noop(_=None):
    return None


def square(x):
    return x * x


def checksum(data):
    import numpy
    return int(numpy.frombuffer(data, dtype="uint64").sum(dtype="uint64"))


def spin(args):
    seed, rounds = args
    x = seed | 1
    for _ in range(rounds):
        x = (x * 6364136223846793005 + 1442695040888963407 + (x >> 17)) & 0xFFFFFFFFFFFFFFFF
    return x


def calibrate_rounds():
    """Rounds of `spin` that take about 1 ms in this interpreter."""
    rounds = 1000
    while True:
        t0 = time.perf_counter()
        spin((1, rounds))
        t = time.perf_counter() - t0
        if t > 0.01:
            return max(1, int(rounds * 0.001 / t))
        rounds *= 2


def measure_pool(pool, workload, n):
    """W1, W2 or W4 on a started pool with multiprocessing.Pool's API (also forklift.Pool)."""
    if workload == "W1":
        t0 = time.perf_counter()
        results = [pool.apply_async(noop) for _ in range(n)]
        for r in results:
            r.wait()
        return n / (time.perf_counter() - t0)
    if workload == "W2":
        t0 = time.perf_counter()
        for _ in range(n):
            pool.apply(noop)
        return (time.perf_counter() - t0) / n * 1e6
    rounds = calibrate_rounds()
    items = [(i, rounds) for i in range(n)]
    t0 = time.perf_counter()
    serial = [spin(a) for a in items]
    t_serial = time.perf_counter() - t0
    t0 = time.perf_counter()
    parallel = pool.map(spin, items)
    t_parallel = time.perf_counter() - t0
    assert parallel == serial
    return t_serial / t_parallel


def echo_queue(requests, answers):
    while True:
        message = requests.get()
        if message is None:
            return
        answers.put(message)


def echo_pipe(end):
    while True:
        message = end.recv()
        if message is None:
            return
        end.send(message)


def round_trips(kind, n):
    """Q1: a message to a child process and its echo back, repeated (µs per round trip):
    through two multiprocessing.Queue (kind "mp") or one multiprocessing.Pipe ("pipe")."""
    context = mp.get_context("fork")
    if kind == "mp":
        requests, answers = context.Queue(), context.Queue()
        child = context.Process(target=echo_queue, args=(requests, answers))
        send, receive = requests.put, answers.get
    else:
        here, there = context.Pipe()
        child = context.Process(target=echo_pipe, args=(there,))
        send, receive = here.send, here.recv
    child.start()
    for i in range(100):
        send(i)
        receive()
    t0 = time.perf_counter()
    for i in range(n):
        send(i)
        assert receive() == i
    value = (time.perf_counter() - t0) / n * 1e6
    send(None)
    child.join()
    return value


def main():
    kind, workload, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    workers = os.cpu_count()
    if workload == "Q1":
        print(f"{round_trips(kind, n):.6g}")
        return
    if kind == "mp":
        pool = mp.Pool(workers)
        pool.map(noop, range(workers * 4))  # start every worker
        if workload in ("W1", "W2", "W4"):
            value = measure_pool(pool, workload, n)
        elif workload == "W3":
            data = list(range(n))
            t0 = time.perf_counter()
            out = pool.map(square, data)
            value = n / (time.perf_counter() - t0)
            assert out[-1] == (n - 1) ** 2
        elif workload == "N1":
            import zlib
            piece = 1 << 20
            pieces = [os.urandom(piece) for _ in range(n)]
            t0 = time.perf_counter()
            serial = [zlib.crc32(p) for p in pieces]
            t_serial = time.perf_counter() - t0
            t0 = time.perf_counter()
            parallel = pool.map(zlib.crc32, pieces, chunksize=1)
            value = t_serial / (time.perf_counter() - t0)
            assert parallel == serial
        elif workload == "W5":
            import numpy
            data = numpy.arange(n // 8, dtype="uint64").tobytes()
            expected = checksum(data)
            t0 = time.perf_counter()
            got = pool.apply(checksum, (data,))  # pickled through the worker's pipe
            value = n / (time.perf_counter() - t0) / 2**30
            assert got == expected
        elif workload == "W5s":
            # Steady state: in this one pool, a new buffer per transfer, W5_WARMUPS transfers
            # first, then the median of W5_TIMED (as Forklift's W5copysteady and Ray's W5s).
            import numpy
            import statistics
            times = []
            for i in range(W5_WARMUPS + W5_TIMED):
                data = (numpy.arange(n // 8, dtype="uint64") + numpy.uint64(i)).tobytes()
                expected = checksum(data)
                t0 = time.perf_counter()
                got = pool.apply(checksum, (data,))
                times.append(time.perf_counter() - t0)
                assert got == expected
            value = n / statistics.median(times[W5_WARMUPS:]) / 2**30
        pool.close()
        pool.join()
    else:
        with cf.ProcessPoolExecutor(workers) as pool:
            list(pool.map(noop, range(workers * 4)))
            if workload == "W1":
                t0 = time.perf_counter()
                futures = [pool.submit(noop) for _ in range(n)]
                cf.wait(futures)
                value = n / (time.perf_counter() - t0)
            elif workload == "W2":
                t0 = time.perf_counter()
                for _ in range(n):
                    pool.submit(noop).result()
                value = (time.perf_counter() - t0) / n * 1e6
            else:
                raise SystemExit(f"{workload} is not measured for concurrent.futures")
    print(f"{value:.6g}")


if __name__ == "__main__":
    main()
