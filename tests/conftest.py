"""Shared by every test directory: helpers in tests/support are importable as plain modules."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "support"))
