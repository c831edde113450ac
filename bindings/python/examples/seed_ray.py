"""The seed's Ray example: four tasks sleeping 1 s each, on 2 workers, in about 2 s.

Run with `python3 seed_ray.py` (forklift) or `python3 seed_ray.py ray` (if Ray is installed).
"""
import sys
import time

if len(sys.argv) > 1 and sys.argv[1] == "ray":
    import ray
    ray.init(num_cpus=2)
else:
    import forklift as ray
    ray.init(num_workers=2)  # initiate the runtime


@ray.remote  # declares a remote function (executed asynchronously)
def f(x):
    time.sleep(1)
    return x


start = time.time()
# execute the remote function with 4 tasks
result_ids = []
for i in range(4):
    result_ids.append(f.remote(i))  # .remote() runs the function asynchronously

# retrieve results
results = ray.get(result_ids)
print(results)  # [0, 1, 2, 3]
print(f"took {time.time() - start:.1f} s", file=sys.stderr)
