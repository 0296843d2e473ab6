"""Presets: public STAC APIs and collections a user names instead of writing a ``stac_api`` source.

``{preset: earth-search, collection: sentinel-2-l2a, max_cloud: 30}`` in a config's ``sources:``
(or ``--imagery earth-search`` on the command line) expands to the full ``stac_api`` source
below: URL, asset -> registry band mapping, cloud mask, units, signing and harmonization. Any
``stac_api`` field given beside ``preset`` overrides the preset's value (``url`` for a mirror).
"""

from __future__ import annotations

from typing import Any

EARTH_SEARCH_URL = "https://earth-search.aws.element84.com/v1"
PLANETARY_COMPUTER_URL = "https://planetarycomputer.microsoft.com/api/stac/v1"

_S2_EARTH_SEARCH_ASSETS = {
    "B02": "blue", "B03": "green", "B04": "red", "B08": "nir", "B05": "rededge1",
    "B06": "rededge2", "B07": "rededge3", "B8A": "nir08", "B11": "swir16", "B12": "swir22",
    "B01": "coastal", "B09": "nir09", "scl": "scl",
}
_S2_PC_ASSETS = {
    "B02": "B02", "B03": "B03", "B04": "B04", "B08": "B08", "B05": "B05", "B06": "B06",
    "B07": "B07", "B8A": "B8A", "B11": "B11", "B12": "B12", "B01": "B01", "B09": "B09",
    "scl": "SCL",
}
_S2_COMMON = {
    "modality": "sentinel2_l2a",
    "nodata": 0,
    "cloud_mask": {"band": "scl", "kind": "scl"},
    "harmonize": True,
    "sort_by": "eo:cloud_cover",
}

_LANDSAT_WHY = (
    "collection {collection!r} of preset {preset!r} holds Landsat Collection 2 Level-2 surface "
    "reflectance (7 bands, scaled reflectance), but the model's 'landsat' input is Level-1 DN "
    "with 11 bands (B1-B11, as in the reference's training data); feeding Level-2 values would "
    "be silently wrong units. Give a 'stac_api' or 'files' source with Landsat 8/9 Level-1 "
    "(L1TP/L1GT) assets for all 11 bands, or leave Landsat out of the sources"
)

PRESETS: dict[str, dict[str, Any]] = {
    "earth-search": {
        "url": EARTH_SEARCH_URL,
        "default": "sentinel-2-l2a",
        "collections": {
            "sentinel-2-l2a": {**_S2_COMMON, "assets": _S2_EARTH_SEARCH_ASSETS},
            "landsat-c2-l2": {"error": _LANDSAT_WHY},
        },
    },
    "planetary-computer": {
        "url": PLANETARY_COMPUTER_URL,
        "default": "sentinel-2-l2a",
        "signing": "planetary-computer",
        "collections": {
            "sentinel-2-l2a": {**_S2_COMMON, "assets": _S2_PC_ASSETS},
            "sentinel-1-rtc": {
                "modality": "sentinel1",
                # RTC assets are linear power (gamma0); the model takes dB.
                "units": "linear",
                "assets": {"vv": "vv", "vh": "vh"},
                "query": {"sar:instrument_mode": {"eq": "IW"}},
            },
            "landsat-c2-l2": {"error": _LANDSAT_WHY},
            "esa-worldcover": {"modality": "worldcover", "assets": {"B1": "map"}, "nodata": 0},
            "cop-dem-glo-30": {"modality": "srtm", "assets": {"srtm": "data"}},
        },
    },
}

# Keys a preset entry may carry beside the stac_api fields it fills in.
_PRESET_ONLY = {"preset", "collection"}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def preset_source(spec: dict[str, Any]) -> dict[str, Any]:
    """The ``stac_api`` source dict a ``preset:`` entry stands for.

    Args:
        spec: ``preset`` (a name of :data:`PRESETS`), optional ``collection`` (default: the
            preset's Sentinel-2 L2A collection), optional ``name``, and any ``stac_api`` field
            to override.

    Raises:
        ValueError: an unknown preset or collection (listing the known ones), or a collection
            that cannot feed the model (Landsat Level-2; the message says why and what to do).
    """
    name = spec["preset"]
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {preset_names()}")
    preset = PRESETS[name]
    collection = spec.get("collection") or preset["default"]
    if collection not in preset["collections"]:
        raise ValueError(
            f"preset {name!r} has no collection {collection!r}; its collections: "
            f"{sorted(preset['collections'])} (or use a 'stac_api' source for others)"
        )
    entry = dict(preset["collections"][collection])
    if "error" in entry:
        raise ValueError(entry["error"].format(collection=collection, preset=name))
    out: dict[str, Any] = {
        "type": "stac_api",
        "name": f"{name}/{collection}",
        "url": preset["url"],
        "collections": [collection],
        **({"signing": preset["signing"]} if "signing" in preset else {}),
        **entry,
    }
    out.update({k: v for k, v in spec.items() if k not in _PRESET_ONLY})
    return out
