"""Shared fixtures for the evaluation tests: a small random Nano encoder, the shared real data
and v1-Nano fixture checkpoint (tests that need them skip when ``../shared`` is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import geolatent

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
REAL = SHARED / "data" / "real"
FIXTURE = SHARED / "fixtures" / "olmoearth_v1_nano"


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not available (the shared real data / fixtures live in ../shared)")
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
