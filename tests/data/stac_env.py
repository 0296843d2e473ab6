"""The loopback STAC setup shared by the data and inference tests: ``rustac serve`` (a real
STAC API, Earth Search and Planetary Computer item layouts) and the range file server
(``stac_servers``) serving real Sentinel-2 / Sentinel-1 scenes as COGs (``stac_fixtures``).

Import ``stac_env`` into a test module (or a conftest) to use the fixture; it skips cleanly
when the shared real data or the ``rustac`` binary is absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .helpers import REAL
from .stac_fixtures import PC_ACCOUNT, S1_ACCOUNT, build_s1, build_s2, write_items
from .stac_servers import AssetServer, StacApi, rustac_binary

# AOI inside the real patch (lon/lat), within one 256 px tile.
AOI_ONE_TILE = {"type": "Polygon", "coordinates": [[[14.5540, 45.8665], [14.5595, 45.8665],
                                                    [14.5595, 45.8720], [14.5540, 45.8720],
                                                    [14.5540, 45.8665]]]}


def write_aoi(folder: Path, geom: dict = AOI_ONE_TILE) -> Path:
    """``geom`` as ``folder/aoi.geojson`` (a FeatureCollection)."""
    p = folder / "aoi.geojson"
    p.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": geom, "properties": {}}]}))
    return p


@pytest.fixture(scope="module")
def stac_env(tmp_path_factory):
    """``{"root", "server", "es", "pc", "s2"}``: the asset server, the STAC API URLs of the
    Earth Search layout (``es``: real S2 at baseline 02.01) and of the Planetary Computer layout
    (``pc``: S2 at baseline 05.00, signed, and S1 RTC), and the S2 items. Planetary Computer
    signing goes to the server's loopback token endpoint while the fixture lives."""
    if not (REAL / "eolearn").exists():
        pytest.skip(f"real test data not found at {REAL} (needs ../shared/data/real)")
    if rustac_binary() is None:
        pytest.skip("rustac is not installed (pip install rustac)")
    root = tmp_path_factory.mktemp("stac")
    assets = root / "assets"
    server = AssetServer(assets, signed_prefixes=(PC_ACCOUNT + "/", S1_ACCOUNT + "/"))
    s2 = build_s2(REAL, assets, server.url)
    s1 = build_s1(REAL, assets, server.url)
    es_api = StacApi([write_items(s2["earth-search"], root / "es.json")], root)
    pc_api = StacApi([write_items(s2["pc"] + s1, root / "pc.json")], root)
    old = os.environ.get("PC_SDK_SAS_URL")
    os.environ["PC_SDK_SAS_URL"] = f"{server.url}/sas/v1/token"
    from planetary_computer.settings import Settings

    Settings.get.cache_clear()
    try:
        with server:
            yield {"root": root, "server": server, "es": es_api.url, "pc": pc_api.url, "s2": s2}
    finally:
        es_api.stop()
        pc_api.stop()
        if old is None:
            os.environ.pop("PC_SDK_SAS_URL", None)
        else:
            os.environ["PC_SDK_SAS_URL"] = old
        Settings.get.cache_clear()
