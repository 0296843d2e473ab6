"""Shared fixtures for the evaluation tests: a small random Nano encoder, the shared real data
and v1-Nano fixture checkpoint (tests that need them skip when ``../shared`` is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from shared_data import FIXTURE_DIR as FIXTURE
from shared_data import REAL_DATA as REAL

import geolatent


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not available (set GEOLATENT_SHARED to the shared/ folder)")
    return path


@pytest.fixture
def real_data() -> Path:
    """``../shared/data/real`` (skips when absent, e.g. in a user's clone)."""
    return require(REAL)


@pytest.fixture
def v1_nano_checkpoint() -> Path:
    """The v1-Nano-layout fixture checkpoint (random weights)."""
    return require(FIXTURE)


@pytest.fixture(scope="session")
def nano():
    torch.manual_seed(0)
    return geolatent.build_model("nano").eval()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    # Never touch the user's embedding cache from tests.
    monkeypatch.setenv("GEOLATENT_CACHE_DIR", str(tmp_path / "cache"))
