"""Shared test helpers: where the shared fixtures and real data live, and skips when absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GEOLATENT_SHARED", REPO_ROOT.parent / "shared"))
FIXTURE_DIR = SHARED / "fixtures" / "olmoearth_v1_nano"
REAL_DATA = SHARED / "data" / "real"

# Two cores on CI: keep torch from oversubscribing them.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    if not (FIXTURE_DIR / "weights.pth").exists():
        pytest.skip(f"reference fixtures not found at {FIXTURE_DIR} (set GEOLATENT_SHARED)")
    return FIXTURE_DIR


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not REAL_DATA.exists():
        pytest.skip(f"real data not found at {REAL_DATA} (set GEOLATENT_SHARED)")
    return REAL_DATA


@pytest.fixture(scope="session")
def nano_fixture_model(fixture_dir):
    import geolatent

    return geolatent.load_model(fixture_dir)
