"""The one shared-data locator of the test suite.

The reference fixtures and the small real data set live outside the repository, in ``shared/``
next to the clone (``../shared``) unless the environment variable ``GEOLATENT_SHARED`` names
another folder. Every test folder takes its paths from here (``tests/`` is on ``sys.path``
because the root ``conftest.py`` lives there), so one variable moves them all.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GEOLATENT_SHARED") or REPO_ROOT.parent / "shared")
FIXTURE_DIR = SHARED / "fixtures" / "olmoearth_v1_nano"
REAL_DATA = SHARED / "data" / "real"


def require(path: Path) -> Path:
    """``path`` when it exists; otherwise skip the test with a message saying how to find it."""
    if not path.exists():
        pytest.skip(
            f"shared test data not found at {path} (set GEOLATENT_SHARED to the shared/ folder)"
        )
    return path
