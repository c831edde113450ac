"""The seed's Pool example (synchronous apply, map, starmap).

Run with `python3 seed_pool.py` (forklift) or `python3 seed_pool.py multiprocessing`.
"""
import sys

if len(sys.argv) > 1 and sys.argv[1] == "multiprocessing":
    import multiprocessing as mp
else:
    import forklift as mp


def function_name(x, y=0, z=0):
    return x * 100 + y * 10 + z


if __name__ == '__main__':
    with mp.Pool(mp.cpu_count()) as pool:  # mp.cpu_count() returns the logical CPU count
        results = [pool.apply(function_name, args=(x, 1, 2)) for x in range(4)]
        mapped = pool.map(function_name, [1, 2, 3])
        starred = pool.starmap(function_name, [(1, 2, 3), (2, 3, 4)])
        pool.close()
        pool.join()
    print(results, mapped, starred)
