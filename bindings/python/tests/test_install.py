"""`pip install ./bindings/python`, then the README's Python quick start, from outside the
source tree: the installed package finds the library it bundled."""
import os
import re
import subprocess
import sys
import venv

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = os.path.dirname(HERE)
README = os.path.join(os.path.dirname(os.path.dirname(PACKAGE)), "README.md")


def test_pip_install_then_quick_start(tmp_path):
    try:  # with setuptools and wheel at hand, build offline; else pip fetches them (PyPI)
        import setuptools  # noqa: F401
        import wheel  # noqa: F401
        isolation = ["--no-build-isolation", "--no-index"]
    except ImportError:
        isolation = []
    env_dir = tmp_path / "env"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = str(env_dir / "bin" / "python")
    environment = {k: v for k, v in os.environ.items() if k not in ("FORKLIFT_LIBRARY", "PYTHONPATH")}
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", *isolation, "--no-deps", "--target", str(tmp_path / "site"),
         PACKAGE],
        capture_output=True, text=True, timeout=300, env=environment)
    assert install.returncode == 0, install.stdout + install.stderr
    installed = tmp_path / "site" / "forklift"
    assert (installed / "libforklift.so").exists()  # bundled
    block = re.search(r"## Python quick start.*?```python\n(.*?)```", open(README).read(), re.S).group(1)
    script = tmp_path / "quickstart.py"
    script.write_text(block)
    environment["PYTHONPATH"] = str(tmp_path / "site")
    run = subprocess.run([python, str(script)], capture_output=True, text=True, timeout=120,
                         env=environment, cwd=str(tmp_path))
    assert run.returncode == 0, run.stderr
    expected = [re.search(r"# (\[.*?\])", line).group(1) for line in block.splitlines()
                if "print(" in line and re.search(r"# \[", line)]
    assert run.stdout.splitlines() == expected
    check = subprocess.run([python, "-c", "import forklift; print(forklift.LIBRARY_PATH)"], capture_output=True,
                           text=True, env=environment, cwd=str(tmp_path))
    assert check.stdout.strip().startswith(str(installed))
