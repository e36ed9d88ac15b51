import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The worker package is installed editable in .venv; this keeps tests working with any interpreter.
sys.path.insert(0, str(ROOT / "py_runtime"))
