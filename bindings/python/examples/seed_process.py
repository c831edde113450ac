"""The seed's Process example: several processes started, all joined, results through a Queue.

Run with `python3 seed_process.py` (forklift) or `python3 seed_process.py multiprocessing`.
"""
import sys

if len(sys.argv) > 1 and sys.argv[1] == "multiprocessing":
    import multiprocessing as mp
else:
    import forklift as mp


def function_name(x, results):
    results.put((x, x * x))


if __name__ == '__main__':
    results = mp.Queue()
    process_li = []
    for x in range(4):
        process = mp.Process(target=function_name, args=(x, results))  # (x,) is a one-element tuple
        process.start()
        process_li.append(process)
    [process.join() for process in process_li]
    print(sorted(results.get() for _ in process_li), [process.exitcode for process in process_li])
