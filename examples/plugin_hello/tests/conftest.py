"""Let the tests import shim_hello from src/ when the package is not installed."""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("shim_hello") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
