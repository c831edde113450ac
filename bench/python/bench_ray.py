"""Ray on the benchmark workloads.

usage: bench_ray.py W1|W2|W4|W5|W5s|W5sref|W6s|W6p|W8 N   starts Ray, prints one number, stops Ray
       bench_ray.py serve                      starts Ray once, then reads "WORKLOAD N" lines
                                               and answers each with one number (or "error ...")
"""
import os
import statistics
import sys
import time

import ray


# W5s/W5sref (and Forklift's W5steady): transfers before the timed ones, and timed ones.
W5_WARMUPS = 3
W5_TIMED = 5


@ray.remote
def checksum(array):
    return int(array.sum(dtype="uint64"))


@ray.remote
class Counter:
    def __init__(self):
        self.count = 0

    def increment(self):
        self.count += 1
        return self.count


@ray.remote
def noop():
    return None


@ray.remote
def spin(seed, rounds):
    x = seed | 1
    for _ in range(rounds):
        x = (x * 6364136223846793005 + 1442695040888963407 + (x >> 17)) & 0xFFFFFFFFFFFFFFFF
    return x


def spin_local(seed, rounds):
    x = seed | 1
    for _ in range(rounds):
        x = (x * 6364136223846793005 + 1442695040888963407 + (x >> 17)) & 0xFFFFFFFFFFFFFFFF
    return x


def start():
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    ray.get([noop.remote() for _ in range(os.cpu_count() * 4)])  # start workers


def measure(workload, n):
    """One run of `workload` with N items on the running Ray; returns its figure."""
    if workload == "W1":
        t0 = time.perf_counter()
        ray.get([noop.remote() for _ in range(n)])
        value = n / (time.perf_counter() - t0)
    elif workload == "W2":
        t0 = time.perf_counter()
        for _ in range(n):
            ray.get(noop.remote())
        value = (time.perf_counter() - t0) / n * 1e6
    elif workload == "W4":
        rounds = 1000
        while True:
            t0 = time.perf_counter()
            spin_local(1, rounds)
            t = time.perf_counter() - t0
            if t > 0.01:
                rounds = max(1, int(rounds * 0.001 / t))
                break
            rounds *= 2
        t0 = time.perf_counter()
        serial = [spin_local(i, rounds) for i in range(n)]
        t_serial = time.perf_counter() - t0
        t0 = time.perf_counter()
        parallel = ray.get([spin.remote(i, rounds) for i in range(n)])
        t_parallel = time.perf_counter() - t0
        assert parallel == serial
        value = t_serial / t_parallel
    elif workload == "W5":
        import numpy
        data = numpy.arange(n // 8, dtype="uint64")
        expected = int(data.sum(dtype="uint64"))
        t0 = time.perf_counter()
        got = ray.get(checksum.remote(data))  # put into the object store, mapped by the worker
        value = n / (time.perf_counter() - t0) / 2**30
        assert got == expected
    elif workload in ("W5s", "W5sref"):
        # Steady state: in this one session, a new array per transfer, WARMUPS transfers first,
        # then the median of TIMED. W5s: the clock includes the put (as in W5); W5sref: the
        # array is put before the clock, so only the task reading it is timed.
        import numpy
        times = []
        for i in range(W5_WARMUPS + W5_TIMED):
            data = numpy.arange(n // 8, dtype="uint64") + numpy.uint64(i)
            expected = int(data.sum(dtype="uint64"))
            if workload == "W5sref":
                arg = ray.put(data)
                del data
            else:
                arg = data
            t0 = time.perf_counter()
            got = ray.get(checksum.remote(arg))
            times.append(time.perf_counter() - t0)
            assert got == expected
            del arg
        value = n / statistics.median(times[W5_WARMUPS:]) / 2**30
    elif workload in ("W6s", "W6p"):
        counter = Counter.remote()
        ray.get(counter.increment.remote())
        t0 = time.perf_counter()
        if workload == "W6s":
            for _ in range(n):
                ray.get(counter.increment.remote())
        else:
            ray.get([counter.increment.remote() for _ in range(n)])
        value = n / (time.perf_counter() - t0)
        ray.kill(counter)  # a served session goes on: the actor's worker and CPU come back
    elif workload == "W8":
        t0 = time.perf_counter()
        for i in range(n):
            assert ray.get(ray.put(i)) == i
        value = (time.perf_counter() - t0) / n * 1e6
    else:
        raise ValueError(f"{workload} is not measured for Ray")
    return value


def main():
    if sys.argv[1] == "serve":
        start()
        for line in sys.stdin:
            workload, n = line.split()
            try:
                print(f"{measure(workload, int(n)):.6g}", flush=True)
            except Exception as error:  # reported to the caller, which marks Ray failed
                print(f"error {type(error).__name__}: {error}".replace("\n", " "), flush=True)
        ray.shutdown()
        return
    start()
    value = measure(sys.argv[1], int(sys.argv[2]))
    ray.shutdown()
    print(f"{value:.6g}")


if __name__ == "__main__":
    main()
