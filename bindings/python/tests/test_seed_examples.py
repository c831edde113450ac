"""The seed's examples, rewritten to `import forklift`, print what multiprocessing prints."""
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(os.path.dirname(HERE), "examples")


def run(script, *args):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE))
    done = subprocess.run([sys.executable, os.path.join(EXAMPLES, script), *args], capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("script", ["seed_process.py", "seed_pool.py", "seed_pool_async.py"])
def test_same_output_as_multiprocessing(script):
    ours = run(script)
    theirs = run(script, "multiprocessing")
    assert ours == theirs and ours.strip()


def test_ray_example_prints_the_seed_result():
    assert run("seed_ray.py").strip() == "[0, 1, 2, 3]"


def test_readme_python_quick_start(tmp_path):
    """The README's Python quick start runs and prints what its comments say."""
    import re
    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(HERE))), "README.md")).read()
    block = re.search(r"## Python quick start.*?```python\n(.*?)```", readme, re.S).group(1)
    script = tmp_path / "quickstart.py"
    script.write_text(block)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    expected = [re.search(r"# (\[.*?\])", line).group(1) for line in block.splitlines()
                if "print(" in line and re.search(r"# \[", line)]
    assert done.stdout.splitlines() == expected
