#!/usr/bin/env python3
"""The benchmark suite: Forklift against its peers, on the same machine, in the same run.

Builds the native programs in bench/native, runs each (workload, peer) several times in turns
(Forklift, each peer, again), keeps the medians and the ratio of each round's pair, and writes bench/results/latest.json,
bench/results/latest.md (the table) and bench/results/ratios.svg (the plot); then replaces the
figures section of README.md.

Every ratio reads "how many times better Forklift is": throughput ratios are
forklift / peer, time ratios peer / forklift, speed-up ratios forklift / peer. Above 1 means
Forklift wins.

usage: run.py [--quick] [--skip-ray] [--no-readme]
"""
import argparse
import datetime
import json
import math
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
OUT = BENCH / "results"
BIN = ROOT / "build" / "bench"
LIB = ROOT / "build" / "lib"
SWIFT_LIB = pathlib.Path("/opt/swift/usr/lib/swift")
VENV_PY = BENCH / ".venv" / "bin" / "python"

PEER_NAMES = {
    "tbb": "oneTBB",
    "dispatch": "libdispatch",
    "glib": "GLib GThreadPool",
    "mp": "multiprocessing.Pool",
    "cf": "ProcessPoolExecutor",
    "ray": "Ray",
    "rayref": "Ray, the array put before the clock",
    "blob": "Forklift, blob convention",
    "floor": "a forked child summing its inherited mapping (the floor)",
    "mpqueue": "multiprocessing.Queue",
    "mppipe": "multiprocessing.Pipe",
}


def log(message):
    print(message, file=sys.stderr, flush=True)


def build():
    BIN.mkdir(parents=True, exist_ok=True)
    native = BENCH / "native"
    clang = shutil.which("clang") or "/opt/swift/usr/bin/clang"
    if not (SWIFT_LIB / "dispatch").exists():
        clang_dispatch = None
    else:
        clang_dispatch = "/opt/swift/usr/bin/clang"
    commands = {
        "forklift": ["gcc", "-O2", "-std=c99", f"-I{ROOT / 'include'}", str(native / "bench_forklift.c"),
                     f"-L{LIB}", f"-Wl,-rpath,{LIB}", "-lforklift", "-lpthread", "-o", str(BIN / "forklift")],
        "tbb": ["g++", "-O2", "-std=c++17", str(native / "bench_tbb.cpp"), "-ltbb", "-o", str(BIN / "tbb")],
        "probe": ["gcc", "-O2", "-std=gnu99", str(native / "probe.c"), "-lpthread", "-o", str(BIN / "probe")],
        "glib": ["gcc", "-O2", "-std=gnu99", str(native / "bench_glib.c")]
        + subprocess.run(["pkg-config", "--cflags", "--libs", "glib-2.0"], capture_output=True, text=True).stdout.split()
        + ["-o", str(BIN / "glib")],
    }
    if clang_dispatch:
        commands["dispatch"] = [clang_dispatch, "-O2", "-fblocks", f"-I{SWIFT_LIB}", str(native / "bench_dispatch.c"),
                                f"-L{SWIFT_LIB / 'linux'}", f"-Wl,-rpath,{SWIFT_LIB / 'linux'}", "-ldispatch",
                                "-lBlocksRuntime", "-o", str(BIN / "dispatch")]
    built = {}
    for name, command in commands.items():
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode == 0:
            built[name] = BIN / name
        else:
            log(f"bench: could not build the {name} benchmark: {result.stderr.strip()[:400]}")
    return built


class RaySession:
    """One Ray process (`bench_ray.py serve`) that serves every Ray run of a quick bench:
    starting Ray takes about 5 s, and a quick bench has some twenty Ray runs. A full bench
    starts Ray afresh for each run instead."""

    def __init__(self, python, script):
        self.script = script
        self.process = subprocess.Popen([python, script, "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True)

    def handles(self, command):
        return len(command) == 4 and command[1] == self.script

    def measure(self, command):
        self.process.stdin.write(f"{command[2]} {command[3]}\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline().strip()
        if not answer or answer.startswith("error"):
            raise RuntimeError(f"Ray {command[2]} {command[3]} failed: {answer or 'the Ray process ended'}")
        return float(answer)

    def close(self):
        self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()


ray_session = None


def run_once(command, timeout):
    if ray_session is not None and ray_session.handles(command):
        return ray_session.measure(command)
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed: {result.stderr.strip()[-400:]}")
    return float(result.stdout.strip().splitlines()[-1])


def measure_interleaved(contenders, timeout=600):
    """Runs each (name, command, runs) round-robin — Forklift, then each peer, then again —
    so a change in the machine's state during a workload (this shared machine's cores trade
    cache lines at about 100 ns or at about 500 ns from one minute to the next) reaches every
    contender alike instead of one contender's whole series. Returns name -> {median, runs},
    or {skipped} for a peer whose run failed. Forklift failing is fatal."""
    values = {name: [] for name, _, _ in contenders}
    failed = {}
    for round_index in range(max(runs for _, _, runs in contenders)):
        for name, command, runs in contenders:
            if round_index >= runs or name in failed:
                continue
            try:
                values[name].append(run_once([str(part) for part in command], timeout))
            except (RuntimeError, subprocess.TimeoutExpired) as error:
                if name == "forklift":
                    raise
                failed[name] = f"failed: {str(error)[:300]}"
    return {name: {"skipped": failed[name]} if name in failed else {"median": statistics.median(v), "runs": v}
            for name, v in values.items()}


def paired_ratio(forklift_runs, peer_runs, higher):
    """The median over rounds of Forklift's run against the peer's run of the same round (the
    two ran back to back, so in the same state of the machine); rounds in which the peer did
    not run (Ray runs fewer) are left out. The ratio of the two medians is reported beside it:
    it pairs runs made minutes apart, and on this machine it moves with the machine's state."""
    pairs = zip(forklift_runs, peer_runs)
    return statistics.median(a / b if higher else b / a for a, b in pairs)


def cache_line_round_trip(built):
    """The probe's nanoseconds per cache-line round trip between CPUs 0 and 1 (median of 3),
    or None on one CPU or without the probe."""
    if "probe" not in built or (os.cpu_count() or 1) < 2:
        return None
    return statistics.median(run_once([str(built["probe"])], 60) for _ in range(3))


def calibrate_rounds(forklift):
    """Rounds of the native work unit that take about 1 ms."""
    rounds = 100_000
    seconds = run_once([forklift, "calibrate", str(rounds)], 60)
    return max(1, int(rounds * 0.001 / seconds))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller inputs, fewer runs, one Ray session (under 2 minutes)")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated workload ids: run only these and print "
                        "their table (bench/results and README.md are left alone)")
    args = parser.parse_args()
    quick = args.quick
    runs = 3 if quick else 5
    ray_runs = 1 if quick else 3

    built = build()
    if "forklift" not in built:
        raise SystemExit("bench: the Forklift benchmark did not build (run `make lib` first)")
    fl = built["forklift"]
    python = str(VENV_PY if VENV_PY.exists() else sys.executable)
    has_ray = not args.skip_ray and VENV_PY.exists() and subprocess.run(
        [python, "-c", "import ray"], capture_output=True).returncode == 0
    skipped = {}
    if not has_ray:
        skipped["ray"] = "skipped (--skip-ray)" if args.skip_ray else "Ray could not be installed into bench/.venv"
        skipped["rayref"] = skipped["ray"]
    for peer in ("tbb", "dispatch", "glib"):
        if peer not in built:
            skipped[peer] = "its benchmark did not build (see the log)"
    mp_script = str(BENCH / "python" / "bench_mp.py")
    ray_script = str(BENCH / "python" / "bench_ray.py")
    global ray_session
    if quick and has_ray:
        ray_session = RaySession(python, ray_script)

    n_w1 = 200_000 if quick else 1_000_000
    n_w1_py = 5_000 if quick else 20_000
    n_w2 = 20_000 if quick else 100_000
    n_w2_py = 1_000 if quick else 5_000
    n_w2_ray = 200 if quick else 1_000
    n_w3 = 2_000_000 if quick else 10_000_000
    n_w4 = 200 if quick else 1000
    rounds = calibrate_rounds(fl)
    round_trip_start = cache_line_round_trip(built)
    log(f"bench: {'quick' if quick else 'full'} mode, {runs} runs, W4 work unit {rounds} rounds (~1 ms)")

    workloads = []

    only = {w for w in args.only.split(",") if w}

    def workload(wid, title, unit, higher, forklift_cmd, n, peers, note=""):
        if only and wid not in only:
            return
        log(f"bench: {wid}: forklift, {', '.join(p for p, *_ in peers if p not in skipped) or 'no peer'}, interleaved")
        entry = {"id": wid, "title": title, "unit": unit, "higher_is_better": higher, "n": n, "note": note,
                 "peers": {}, "ratios": {}, "ratios_of_medians": {}}
        for peer, *_ in peers:
            if peer in skipped:
                entry["peers"][peer] = {"skipped": skipped[peer]}
        contenders = [("forklift", forklift_cmd, runs)] + [(p, c, r) for p, c, r, _ in peers if p not in skipped]
        values = measure_interleaved(contenders)
        entry["forklift"] = values["forklift"]
        for peer, command, peer_runs, peer_n in peers:
            if peer in skipped:
                continue
            entry["peers"][peer] = values[peer] | ({"n": peer_n} if peer_n != n and "median" in values[peer] else {})
            if "median" not in values[peer]:
                continue
            entry["ratios"][peer] = paired_ratio(entry["forklift"]["runs"], values[peer]["runs"], higher)
            a, b = entry["forklift"]["median"], entry["peers"][peer]["median"]
            entry["ratios_of_medians"][peer] = a / b if higher else b / a
        workloads.append(entry)

    native = lambda peer, *a: [str(built.get(peer, peer)), *map(str, a)]
    workload("W1", "no-op tasks, one submitter, wait for all", "tasks/s", True, native("forklift", "W1", n_w1), n_w1,
             [(p, native(p, "W1", n_w1), runs, n_w1) for p in ("tbb", "dispatch", "glib")],
             "Forklift: fl_group_submit + fl_group_wait; TBB task_group; dispatch_group_async_f; GThreadPool")
    workload("W1cb", "W1 with a completion callback per task", "tasks/s", True, native("forklift", "W1cb", n_w1), n_w1,
             [(p, native(p, "W1", n_w1), runs, n_w1) for p in ("tbb", "dispatch", "glib")],
             "Forklift: fl_pool_apply_async with a callback per task; peers as in W1 (no callbacks)")
    workload("W1py", "W1 against the Python peers", "tasks/s", True, native("forklift", "W1", n_w1_py), n_w1_py,
             [("mp", [python, mp_script, "mp", "W1", n_w1_py], runs, n_w1_py),
              ("cf", [python, mp_script, "cf", "W1", n_w1_py], runs, n_w1_py),
              ("ray", [python, ray_script, "W1", n_w1_py], ray_runs, n_w1_py)],
             "the same N for everyone; smaller than W1 because the Python peers run at thousands of tasks/s")
    workload("W2", "submit one no-op task, wait for its result, repeat", "µs", False,
             native("forklift", "W2", n_w2), n_w2,
             [("dispatch", native("dispatch", "W2", n_w2), runs, n_w2),
              ("glib", native("glib", "W2", n_w2), runs, n_w2),
              ("tbb", native("tbb", "W2", n_w2), runs, n_w2),
              ("mp", [python, mp_script, "mp", "W2", n_w2_py], runs, n_w2_py),
              ("cf", [python, mp_script, "cf", "W2", n_w2_py], runs, n_w2_py),
              ("ray", [python, ray_script, "W2", n_w2_ray], ray_runs, n_w2_ray)],
             "mean time per round trip; TBB's task_group::wait runs the task on the waiting thread itself, "
             "so its figure is not a cross-thread round trip")
    workload("W3", "map x*x over int64, results in order", "elements/s", True, native("forklift", "W3", n_w3), n_w3,
             [("tbb", native("tbb", "W3", n_w3), runs, n_w3),
              ("dispatch", native("dispatch", "W3", n_w3), runs, n_w3),
              ("mp", [python, mp_script, "mp", "W3", n_w3], runs, n_w3)],
             "Forklift: fl_pool_map_strided; TBB parallel_for; dispatch_apply_f over 64 chunks; Pool.map over a list; "
             "each native run times 5 maps after a warm-up and reports their median (one map takes about 10 ms)")
    workload("W4", "~1 ms CPU-bound function over N items: speed-up over serial", "× serial", True,
             native("forklift", "W4", n_w4, rounds), n_w4,
             [("tbb", native("tbb", "W4", n_w4, rounds), runs, n_w4),
              ("dispatch", native("dispatch", "W4", n_w4, rounds), runs, n_w4),
              ("mp", [python, mp_script, "mp", "W4", n_w4], runs, n_w4),
              ("ray", [python, ray_script, "W4", n_w4], ray_runs, n_w4)],
             f"each peer against its own serial loop; {os.cpu_count()} CPUs bound the speed-up")

    n_w5 = (64 if quick else 256) << 20
    workload("W5", "a buffer into a task in another process, a checksum back", "GiB/s", True,
             native("forklift", "W5shm", n_w5), n_w5,
             [("mp", [python, mp_script, "mp", "W5", n_w5], runs, n_w5),
              ("ray", [python, ray_script, "W5", n_w5], ray_runs, n_w5)],
             "Forklift: the buffer lives in an fl_shm segment, the task (process pool) maps it by name, "
             "no copy; multiprocessing: Pool.apply with bytes (pickled through a pipe); Ray: a numpy "
             "array argument (put into the object store, mapped by the worker)")
    workload("W5copy", "W5 with the buffer passed as the task's argument blob", "GiB/s", True,
             native("forklift", "W5copy", n_w5), n_w5,
             [("mp", [python, mp_script, "mp", "W5", n_w5], runs, n_w5),
              ("ray", [python, ray_script, "W5", n_w5], ray_runs, n_w5)],
             "Forklift: fl_pool_apply with the whole buffer as its argument: one copy into a memfd "
             "that the worker maps")

    n_w5s = (16 if quick else 64) << 20
    workload("W5copys", "W5copy in steady state: a new buffer per transfer in one pool", "GiB/s", True,
             native("forklift", "W5copysteady", n_w5s), n_w5s,
             [("mp", [python, mp_script, "mp", "W5s", n_w5s], runs, n_w5s),
              ("ray", [python, ray_script, "W5s", n_w5s], ray_runs, n_w5s)],
             "each run makes 8 transfers of a new 64 MiB buffer (filled before its clock) in one pool (one "
             "Ray session) and reports the median of the last 5: Forklift: fl_pool_apply with the buffer as "
             "its argument (a worker's memfd of up to 64 MiB is written again for the next argument, and the "
             "worker keeps it mapped); multiprocessing: Pool.apply with bytes; Ray: a numpy array argument, "
             "put inside the clock")

    workload("W5r", "W5 through the remote object store into an isolated task", "GiB/s", True,
             native("forklift", "W5store", n_w5), n_w5,
             [("ray", [python, ray_script, "W5", n_w5], ray_runs, n_w5),
              ("mp", [python, mp_script, "mp", "W5", n_w5], runs, n_w5),
              ("floor", native("forklift", "W5floor", n_w5), runs, n_w5)],
             "Forklift: the first transfer of a fresh runtime: the buffer is made in place in the store (fl_create, sealed) before the clock starts, a "
             "remote task with isolate (a worker process) maps it without a copy and returns the checksum; Ray: "
             "its W5 (the first transfer of a fresh session), whose clock includes putting the numpy array into "
             "its store; the floor: a child forked after the buffer was filled sums the shared mapping it "
             "inherited (no handoff, no IPC): the first read of fresh pages in another process costs their "
             "page-table set-up (16-25 ms for 256 MiB here) however they were handed over")
    workload("W5rs", "W5r in steady state: a new object per transfer in one runtime", "GiB/s", True,
             native("forklift", "W5steady", n_w5), n_w5,
             [("ray", [python, ray_script, "W5s", n_w5], ray_runs, n_w5),
              ("rayref", [python, ray_script, "W5sref", n_w5], ray_runs, n_w5)],
             "each run makes 8 transfers in one runtime (one Ray session), each of a new object, and reports the "
             "median of the last 5: Forklift makes each object in place (fl_create, sealed) before its clock "
             "starts; Ray: a new numpy array per transfer, put inside the clock as in its W5, or put before the "
             "clock (rayref: the same work as Forklift's). A freed object's pages serve the next one, and a "
             "worker process maps the store's shared memory once, so neither side pays page faults here")
    workload("W5rsput", "W5rs with each buffer copied into the store (fl_put) inside the timing", "GiB/s", True,
             native("forklift", "W5steadyput", n_w5), n_w5,
             [("ray", [python, ray_script, "W5s", n_w5], ray_runs, n_w5)],
             "the same work on both sides: in one runtime (one Ray session), 8 transfers of a new 256 MiB buffer, "
             "each copied into the store and read by a task in a worker process inside its clock; the median of "
             "the last 5")
    workload("W5rput", "W5r with the buffer copied into the store (fl_put) inside the timing", "GiB/s", True,
             native("forklift", "W5put", n_w5), n_w5,
             [("ray", [python, ray_script, "W5", n_w5], ray_runs, n_w5)],
             "the same work as Ray's W5: one copy into shared memory, then the isolated task maps it")

    n_w7 = 5_000 if quick else 20_000
    workload("W7rt", "process backend: submit one no-op task, wait for its result, repeat", "µs", False,
             native("forklift", "W7rt", n_w7), n_w7,
             [("mp", [python, mp_script, "mp", "W2", n_w2_py], runs, n_w2_py),
              ("cf", [python, mp_script, "cf", "W2", n_w2_py], runs, n_w2_py)],
             "Forklift: fl_pool_apply on a FL_BACKEND_PROCESS pool (the task runs in a worker process; the calling "
             "thread borrows an idle one and does the round trip itself); the peers' workers are processes too")
    workload("W7tp", "process backend: no-op tasks submitted one by one, wait for all", "tasks/s", True,
             native("forklift", "W7tp", n_w7 * 5), n_w7 * 5,
             [("mp", [python, mp_script, "mp", "W1", n_w1_py], runs, n_w1_py),
              ("cf", [python, mp_script, "cf", "W1", n_w1_py], runs, n_w1_py)],
             "Forklift: fl_group_submit on a FL_BACKEND_PROCESS pool; each task runs in a worker process, "
             "up to 32 requests in flight per worker process (pipelined); "
             "peers: apply_async / submit per task")

    n_q1 = 5_000 if quick else 20_000
    n_q1_py = 2_000 if quick else 5_000
    workload("Q1", "a message to a child process through a queue and back, repeated", "µs", False,
             native("forklift", "Q1", n_q1), n_q1,
             [("mpqueue", [python, mp_script, "mp", "Q1", n_q1_py], runs, n_q1_py),
              ("mppipe", [python, mp_script, "pipe", "Q1", n_q1_py], runs, n_q1_py)],
             "Forklift: two fl_queue (shared memory) between the caller and an fl_process child that echoes "
             "each 8-byte message; a consumer finding its queue empty watches it for up to 50 µs before it "
             "sleeps; multiprocessing: two Queue, or one Pipe, to a forked child that echoes each message")

    n_r = 20_000 if quick else 100_000
    n_w8_ray = 1_000 if quick else 5_000
    workload("R1", "remote engine: no-op remote tasks, then get each", "tasks/s", True,
             native("forklift", "R1", n_r), n_r,
             [("ray", [python, ray_script, "W1", n_w1_py], ray_runs, n_w1_py)],
             "Forklift: fl_remote N times, then fl_get and fl_ref_release each; Ray: f.remote() N times, ray.get")
    workload("R2", "remote engine: one remote task, get its result, repeat", "µs", False,
             native("forklift", "R2", n_r), n_r,
             [("ray", [python, ray_script, "W2", n_w2_ray], ray_runs, n_w2_ray)],
             "Forklift: fl_remote + fl_get + fl_ref_release per task; Ray: ray.get(f.remote())")
    n_w6_ray = 1_000 if quick else 5_000
    workload("W6s", "actor calls, one at a time (call, get)", "calls/s", True,
             native("forklift", "W6s", n_r), n_r,
             [("ray", [python, ray_script, "W6s", n_w6_ray], ray_runs, n_w6_ray)],
             "Forklift: fl_actor_call + fl_get + fl_ref_release on a counter actor; Ray: ray.get(c.increment.remote())")
    workload("W6p", "actor calls, pipelined (all calls, then get each)", "calls/s", True,
             native("forklift", "W6p", n_r), n_r,
             [("ray", [python, ray_script, "W6p", n_w6_ray], ray_runs, n_w6_ray)],
             "Forklift: N fl_actor_call, then fl_get each; Ray: ray.get([c.increment.remote() for _ in range(N)])")
    workload("W8", "put then get of a small object", "µs", False,
             native("forklift", "W8", n_r * 10), n_r * 10,
             [("ray", [python, ray_script, "W8", n_w8_ray], ray_runs, n_w8_ray)],
             "Forklift: fl_put of 8 bytes, fl_get (a view), fl_ref_release; Ray: ray.get(ray.put(i))")

    # The Python binding, as a Python program uses it (bench/python/bench_forklift.py).
    fl_py = lambda *a: [python, str(BENCH / "python" / "bench_forklift.py"), *map(str, a)]
    workload("PY1", "Python: no-op Python callables, apply_async N times, wait", "tasks/s", True,
             fl_py("W1", n_w1_py), n_w1_py,
             [("mp", [python, mp_script, "mp", "W1", n_w1_py], runs, n_w1_py),
              ("cf", [python, mp_script, "cf", "W1", n_w1_py], runs, n_w1_py),
              ("ray", [python, ray_script, "W1", n_w1_py], ray_runs, n_w1_py)],
             "forklift.Pool (worker processes fed through shared-memory queues) vs the same script "
             "on multiprocessing.Pool, ProcessPoolExecutor and Ray")
    workload("PY2", "Python: apply of a no-op Python callable, repeated", "µs", False,
             fl_py("W2", n_w2_py), n_w2_py,
             [("mp", [python, mp_script, "mp", "W2", n_w2_py], runs, n_w2_py),
              ("cf", [python, mp_script, "cf", "W2", n_w2_py], runs, n_w2_py),
              ("ray", [python, ray_script, "W2", n_w2_ray], ray_runs, n_w2_ray)],
             "forklift.Pool.apply vs Pool.apply / submit().result() / ray.get(f.remote())")
    workload("PY4", "Python: ~1 ms pure-Python function over N items: speed-up over serial", "× serial", True,
             fl_py("W4", n_w4), n_w4,
             [("mp", [python, mp_script, "mp", "W4", n_w4], runs, n_w4),
              ("ray", [python, ray_script, "W4", n_w4], ray_runs, n_w4)],
             "forklift.Pool.map on worker processes")
    n_n1 = 64 if quick else 256
    workload("PYN", "Python: a native C function (zlib crc32 via ctypes) over N MiB: speed-up over serial",
             "× serial", True, fl_py("N1", n_n1), n_n1,
             [("mp", [python, mp_script, "mp", "N1", n_n1], runs, n_n1)],
             "forklift: Pool(backend='thread').starmap of the ctypes function, called through libffi "
             "without the GIL, pointers into one buffer (no copy); multiprocessing: Pool.map(zlib.crc32) "
             "over 1 MiB bytes pieces (pickled)")
    workload("PYR1", "Python: no-op @remote tasks, then get all", "tasks/s", True,
             fl_py("R1", n_w1_py), n_w1_py,
             [("ray", [python, ray_script, "W1", n_w1_py], ray_runs, n_w1_py)],
             "forklift.remote (runtime threads) vs ray.remote")
    workload("PYR2", "Python: get(f.remote()) repeated", "µs", False,
             fl_py("R2", n_w2_py), n_w2_py,
             [("ray", [python, ray_script, "W2", n_w2_ray], ray_runs, n_w2_ray)],
             "forklift.remote vs ray.remote")

    n_t1 = 200_000 if quick else 1_000_000
    workload("T1", "typed starmap (libffi) vs blob starmap, same work", "ns/call", False,
             native("forklift", "T1typed", n_t1), n_t1,
             [("blob", native("forklift", "T1blob", n_t1), runs, n_t1)],
             "int64 add(int64, int64) over N tuples: Forklift's figure is the typed call (no wrapper "
             "function); the peer is the blob map with a wrapper task; per call, best of 3 in a process")

    if ray_session is not None:
        ray_session.close()
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick" if quick else "full",
        "ray_runs": "one Ray session for every run (quick mode)" if quick else "a fresh Ray process per run",
        "runs": runs,
        "machine": {"cpus": os.cpu_count(), "system": platform.platform(), "python": platform.python_version(),
                    "cache_line_round_trip_ns": {"start": round_trip_start, "end": cache_line_round_trip(built)}},
        "workloads": workloads,
    }
    if only:
        print(markdown(report))
        return
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (OUT / "latest.md").write_text(table)
    (OUT / "ratios.svg").write_text(svg(report))
    print(table)
    if not args.no_readme:
        update_readme(table)


def fmt(value, unit):
    if unit in ("tasks/s", "elements/s", "calls/s"):
        for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if value >= scale:
                return f"{value / scale:.3g} {suffix}{unit}"
        return f"{value:.3g} {unit}"
    if unit == "GiB/s":
        return f"{value:.3g} GiB/s"
    if unit == "µs":
        return f"{value:.3g} µs"
    if unit == "ns/call":
        return f"{value:.3g} ns/call"
    return f"{value:.3g}{unit.replace('× serial', '×')}"


def markdown(report):
    trip = report["machine"].get("cache_line_round_trip_ns") or {}
    state = ""
    if trip.get("start") and trip.get("end"):
        state = (f" A cache line went between the two CPUs and back in {trip['start']:.0f} ns at the start and "
                 f"{trip['end']:.0f} ns at the end (this shared machine swings between about 60 and 500 ns; "
                 "every figure of tasks crossing threads follows it, so Forklift and its peers run in turns).")
    lines = [
        f"Measured {report['date']} ({report['mode']} mode, median of {report['runs']} runs; Ray: fewer), "
        f"{report['machine']['cpus']} CPUs. Ratio = how many times better Forklift is (above 1: Forklift wins): "
        "the median over rounds of Forklift's run against the peer's run in the same round (they run back to "
        "back); the ratio of the two medians is beside it."
        + state,
        "",
        "| workload | N | Forklift | peer | peer's figure | ratio | ratio of medians |",
        "|---|---|---|---|---|---|---|",
    ]
    for w in report["workloads"]:
        first = True
        for peer, figure in w["peers"].items():
            name = PEER_NAMES[peer]
            if "skipped" in figure:
                cells = [name, figure["skipped"], "—", "—"]
            else:
                n_note = f" (N={figure['n']:,})" if "n" in figure else ""
                cells = [name + n_note, fmt(figure["median"], w["unit"]), f"**{w['ratios'][peer]:.2f}×**",
                         f"{w['ratios_of_medians'][peer]:.2f}×"]
            lead = [f"{w['id']} {w['title']}", f"{w['n']:,}", fmt(w["forklift"]["median"], w["unit"])] if first \
                else ["", "", ""]
            lines.append("| " + " | ".join(lead + cells) + " |")
            first = False
    lines.append("")
    for w in report["workloads"]:
        if w["note"]:
            lines.append(f"- {w['id']}: {w['note']}.")
    return "\n".join(lines) + "\n"


def svg(report):
    bars = []
    for w in report["workloads"]:
        for peer, ratio in w["ratios"].items():
            bars.append((f"{w['id']} vs {PEER_NAMES[peer]}", ratio))
    width, row, left = 820, 22, 260
    height = 60 + row * len(bars)
    top = max(max((math.log10(r) for _, r in bars), default=1), 1)
    bottom = min(min((math.log10(r) for _, r in bars), default=-1), -1)
    scale = (width - left - 90) / (top - bottom)
    zero = left + (-bottom) * scale
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
             f'<text x="10" y="20" font-size="14">Forklift vs peers: times better (log scale; right of the line: Forklift wins)</text>',
             f'<line x1="{zero:.1f}" y1="30" x2="{zero:.1f}" y2="{height - 10}" stroke="#333"/>']
    for i, (label, ratio) in enumerate(bars):
        y = 40 + i * row
        x1, x2 = sorted((zero, zero + math.log10(ratio) * scale))
        color = "#2a7" if ratio >= 1 else "#c43"
        parts.append(f'<text x="{left - 8}" y="{y + 13}" text-anchor="end">{label}</text>')
        parts.append(f'<rect x="{x1:.1f}" y="{y}" width="{max(x2 - x1, 1):.1f}" height="{row - 6}" fill="{color}"/>')
        parts.append(f'<text x="{x2 + 4:.1f}" y="{y + 13}">{ratio:.3g}×</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def update_readme(table):
    readme = ROOT / "README.md"
    text = readme.read_text()
    begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
    if begin not in text or end not in text:
        log("bench: README.md has no bench markers; not updated")
        return
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    section = f"{begin}\n{table}\n![ratios](bench/results/ratios.svg)\n{end}"
    readme.write_text(head + section + tail)
    log("bench: README.md figures updated")


if __name__ == "__main__":
    main()
