import os
import sys

# The package under test is the one of this source tree (its library: ../../build/lib).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
