"""The seed's asynchronous Pool example with callback and error_callback.

Run with `python3 seed_pool_async.py` (forklift) or `python3 seed_pool_async.py multiprocessing`.
"""
import sys

if len(sys.argv) > 1 and sys.argv[1] == "multiprocessing":
    import multiprocessing as mp
else:
    import forklift as mp


def function_name(i):
    if i % 5 == 4:
        raise ValueError(f"item {i} is refused")
    return i * i


def log_result(result):
    global results
    results.append(result)


def log_error(error):
    global errors
    errors.append(error)


if __name__ == '__main__':
    results = []
    errors = []
    pool = mp.Pool()
    for i in range(20):
        pool.apply_async(function_name, args=(i, ), callback=log_result, error_callback=log_error)
    pool.close()
    pool.join()
    # Callbacks run in completion order: sort for a stable printout.
    print(sorted(results), sorted(str(e) for e in errors))
