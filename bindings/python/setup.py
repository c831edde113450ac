"""Bundles libforklift.so into the package when it is built from the source tree.

The library is taken from $FORKLIFT_LIBRARY, or from ../../build/lib (built by `make lib`
first if it is missing and the Swift toolchain is at hand). Without either, the package
installs without it and looks for the library at import time (see forklift/_lib.py).
"""

import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def find_library():
    explicit = os.environ.get("FORKLIFT_LIBRARY")
    if explicit:
        return explicit
    built = os.path.join(ROOT, "build", "lib", "libforklift.so")
    if not os.path.exists(built) and os.path.exists(os.path.join(ROOT, "Makefile")):
        subprocess.call(["make", "-C", ROOT, "lib"])
    return built if os.path.exists(built) else None


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        library = find_library()
        if library:
            target = os.path.join(self.build_lib, "forklift", "libforklift.so")
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(library, target)


setup(cmdclass={"build_py": BuildWithLibrary})
