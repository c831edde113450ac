"""The Python binding (bindings/python) on the benchmark workloads, as a Python user runs it.

usage: bench_forklift.py W1|W2|W4|N1|R1|R2 N   prints one number in the workload's unit.
  W1  no-op Python callables: apply_async N times on a process-backed Pool, wait (tasks/s)
  W2  apply of a no-op Python callable, repeated (µs per round trip)
  W4  ~1 ms pure-Python function mapped over N items: speed-up over serial
  N1  crc32 (zlib's C function, through ctypes) over N pieces of 1 MiB on the thread backend,
      no GIL held: speed-up over calling it serially
  R1  no-op @forklift.remote tasks, N of them, then get (tasks/s)
  R2  get(f.remote()) repeated (µs)
"""
import ctypes
import ctypes.util
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bindings", "python"))
import forklift  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_mp import measure_pool, noop  # noqa: E402


def main():
    workload, n = sys.argv[1], int(sys.argv[2])
    workers = os.cpu_count()
    if workload in ("W1", "W2", "W4"):
        pool = forklift.Pool(workers)
        pool.map(noop, range(workers * 4))  # every worker started
        value = measure_pool(pool, workload, n)
        pool.close()
        pool.join()
    elif workload == "N1":
        zlib = ctypes.CDLL(ctypes.util.find_library("z"))
        zlib.crc32.argtypes = [ctypes.c_ulong, ctypes.c_void_p, ctypes.c_uint]
        zlib.crc32.restype = ctypes.c_ulong
        piece = 1 << 20
        data = bytearray(os.urandom(piece)) * n
        base = ctypes.addressof((ctypes.c_char * len(data)).from_buffer(data))
        calls = [(0, base + i * piece, piece) for i in range(n)]
        t0 = time.perf_counter()
        serial = [zlib.crc32(*args) for args in calls]
        t_serial = time.perf_counter() - t0
        with forklift.Pool(workers, backend="thread") as pool:
            pool.starmap(zlib.crc32, calls[:workers])
            t0 = time.perf_counter()
            parallel = pool.starmap(zlib.crc32, calls, chunksize=1)
            value = t_serial / (time.perf_counter() - t0)
        assert parallel == serial
    elif workload in ("R1", "R2"):
        forklift.init(num_workers=workers)

        @forklift.remote
        def f():
            return None
        forklift.get([f.remote() for _ in range(100)])
        if workload == "R1":
            t0 = time.perf_counter()
            forklift.get([f.remote() for _ in range(n)])
            value = n / (time.perf_counter() - t0)
        else:
            t0 = time.perf_counter()
            for _ in range(n):
                forklift.get(f.remote())
            value = (time.perf_counter() - t0) / n * 1e6
        forklift.shutdown()
    else:
        raise SystemExit(f"unknown workload {workload}")
    print(f"{value:.6g}")


if __name__ == "__main__":
    main()
