"""Unit tests of the ml_stack_python package, without a database: the package is imported from python/."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
