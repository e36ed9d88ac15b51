"""Opacus is optional for users but required where the project's wheels folder is present (the
test environment then installs it, scripts/ensure-python-env.mjs): there a missing Opacus fails
the tests instead of skipping them."""
from __future__ import annotations

import glob
import importlib
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
WHEELS = os.path.join(os.path.dirname(ROOT), "shared", "wheels")


def wheels_present() -> bool:
    return bool(glob.glob(os.path.join(WHEELS, "opacus-*.whl")))


def require_opacus_module():
    try:
        return importlib.import_module("opacus")
    except ImportError:
        if wheels_present() or os.environ.get("DPALIGN_REQUIRE_OPACUS") == "1":
            pytest.fail(f"opacus is not installed although {WHEELS} holds its wheel: run `npm run setup:python`",
                        pytrace=False)
        pytest.skip("opacus is not installed (optional: pip install opacus)", allow_module_level=True)
