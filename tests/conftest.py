"""Shared test helpers: where the shared fixtures and real data live, and skips when absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from shared_data import FIXTURE_DIR, REAL_DATA, REPO_ROOT, SHARED  # noqa: F401 (re-exported)

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
