import os

from tests import conftest as _root

# Benchmarks time what a user runs: on CPU that is each method's PyTorch path, not Triton's interpreter.
if _root.INTERPRET_SET_HERE:
    os.environ.pop("TRITON_INTERPRET", None)
