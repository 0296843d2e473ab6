"""Test data for the STAC API tests: real Sentinel-2 / Sentinel-1 scenes as per-band COGs, and
STAC items in the Earth Search and Planetary Computer layouts pointing at them.

Sentinel-2: the five real L1C scenes of ``eolearn/REFERENCE_SCENES.npy`` (Slovenia, EPSG:32633,
100 x 101 px at 10 m) written as uint16 DN COGs, one per band, with an SCL COG made from the
patch's real cloud mask (``CLM``: cloud -> SCL 9, clear -> 4). The grid origin is moved by
< 10 m onto the 10 m global grid so that a window reads the pixels unresampled and the composite
can be compared with the arrays directly. Planetary Computer items carry processing baseline
05.00, so their COGs hold DN + 1000 (as the real archive does from 04.00 on).

Sentinel-1: the real VV backscatter (dB) of ``s1_spatialist`` written as linear power COGs, as
Planetary Computer's ``sentinel-1-rtc`` serves it.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.warp import transform_bounds

S2_DATES = ["2015-08-20T10:07:28Z", "2015-07-31T10:00:09Z", "2015-09-09T10:00:17Z",
            "2015-08-30T10:05:47Z", "2015-07-11T10:00:08Z"]
CLM_INDEX = [2, 1, 4, 3, 0]  # index of each scene's date in TestEOPatch/timestamps.json
L1C_ORDER = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10",
             "B11", "B12"]
ES_KEYS = {"B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1",
           "B06": "rededge2", "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "nir09",
           "B11": "swir16", "B12": "swir22"}
COMMON = {"B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B08": "nir",
          "B8A": "nir08", "B09": "nir09", "B11": "swir16", "B12": "swir22"}
S2_CRS = "EPSG:32633"
S2_ORIGIN = (465180.0, 5080260.0)  # the real patch starts at 465181.05, 5080254.63
PC_ACCOUNT, PC_CONTAINER = "sentinel2l2a01", "sentinel2-l2"
S1_ACCOUNT, S1_CONTAINER = "sentinel1euwestrtc", "sentinel1-grd-rtc"


def write_cog(path: Path, data: np.ndarray, crs: str, transform: Affine, nodata=None,
              blocksize: int = 128) -> None:
    """A real COG (GDAL's COG driver: tiled, with overviews when large enough)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".src.tif")
    with rasterio.open(tmp, "w", driver="GTiff", width=data.shape[-1], height=data.shape[-2],
                       count=1, dtype=data.dtype, crs=crs, transform=transform,
                       nodata=nodata) as dst:
        dst.write(data.reshape(1, *data.shape[-2:]))
    with rasterio.open(tmp) as src:
        rasterio.shutil.copy(src, path, driver="COG", blocksize=blocksize, compress="deflate")
    tmp.unlink()


def s2_arrays(real: Path) -> tuple[np.ndarray, np.ndarray]:
    """(DN uint16 [5, 13, H, W] in L1C band order, cloud bool [5, H, W])."""
    scenes = np.load(real / "eolearn" / "REFERENCE_SCENES.npy")  # (5, H, W, 13) 0-1
    dn = np.clip(np.round(scenes * 10000), 1, 65535).astype(np.uint16).transpose(0, 3, 1, 2)
    clm = np.load(real / "eolearn" / "TestEOPatch" / "mask" / "CLM.npy")[..., 0]
    return dn, clm[CLM_INDEX].astype(bool)


def _polygon(bounds: tuple[float, float, float, float]) -> dict:
    x0, y0, x1, y1 = bounds
    return {"type": "Polygon",
            "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def _item(item_id: str, collection: str, when: str, bbox, props: dict, assets: dict) -> dict:
    return {
        "type": "Feature", "stac_version": "1.0.0",
        "stac_extensions": [
            "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
            "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
        ],
        "id": item_id, "collection": collection, "geometry": _polygon(bbox),
        "bbox": list(bbox), "properties": {"datetime": when, **props}, "links": [],
        "assets": assets,
    }


def build_s2(real: Path, root: Path, base_url: str) -> dict[str, list[dict]]:
    """Write the S2 COGs under ``root`` and return items: ``earth-search`` and ``pc``."""
    dn, cloud = s2_arrays(real)
    _, _, h, w = dn.shape
    transform = Affine(10.0, 0, S2_ORIGIN[0], 0, -10.0, S2_ORIGIN[1])
    bounds = (S2_ORIGIN[0], S2_ORIGIN[1] - 10 * h, S2_ORIGIN[0] + 10 * w, S2_ORIGIN[1])
    bbox = tuple(round(v, 7) for v in transform_bounds(S2_CRS, "EPSG:4326", *bounds))
    es, pc = [], []
    for k, when in enumerate(S2_DATES):
        day = datetime.fromisoformat(when.replace("Z", ""))
        scl = np.where(cloud[k], 9, 4).astype(np.uint8)
        cloud_pct = round(float(cloud[k].mean() * 100), 2)
        es_id = f"S2A_33TVL_{day:%Y%m%d}_0_L2A"
        pc_id = f"S2A_MSIL2A_{day:%Y%m%dT%H%M%S}_R122_T33TVL_20230101T000000"
        es_assets, pc_assets = {}, {}
        for band in ES_KEYS:
            data = dn[k, L1C_ORDER.index(band)]
            rel = f"sentinel-s2-l2a-cogs/33/T/VL/{day:%Y/%-m}/{es_id}/{band}.tif"
            write_cog(root / rel, data, S2_CRS, transform, nodata=0)
            eo = {"name": band, **({"common_name": COMMON[band]} if band in COMMON else {})}
            es_assets[ES_KEYS[band]] = {
                "href": f"{base_url}/{rel}", "type": "image/tiff; application=geotiff; "
                "profile=cloud-optimized", "roles": ["data"], "eo:bands": [eo],
                "proj:shape": [h, w], "proj:transform": list(transform)[:6],
                "raster:bands": [{"nodata": 0, "data_type": "uint16", "scale": 0.0001,
                                  "offset": 0}],
            }
            pc_rel = (f"{PC_ACCOUNT}/{PC_CONTAINER}/33/T/VL/{day:%Y/%m/%d}/{pc_id}.SAFE/"
                      f"IMG_DATA/T33TVL_{day:%Y%m%dT%H%M%S}_{band}_10m.tif")
            write_cog(root / pc_rel, (data.astype(np.uint32) + 1000).astype(np.uint16), S2_CRS,
                      transform, nodata=0)
            pc_assets[band] = {"href": f"{base_url}/{pc_rel}", "type": "image/tiff; "
                               "application=geotiff; profile=cloud-optimized", "roles": ["data"],
                               "eo:bands": [eo], "gsd": 10.0}
        rel = f"sentinel-s2-l2a-cogs/33/T/VL/{day:%Y/%-m}/{es_id}/SCL.tif"
        write_cog(root / rel, scl, S2_CRS, transform)
        es_assets["scl"] = {"href": f"{base_url}/{rel}", "roles": ["data"],
                            "type": "image/tiff; application=geotiff; profile=cloud-optimized"}
        pc_rel = f"{PC_ACCOUNT}/{PC_CONTAINER}/33/T/VL/{day:%Y/%m/%d}/{pc_id}.SAFE/SCL_20m.tif"
        write_cog(root / pc_rel, scl, S2_CRS, transform)
        pc_assets["SCL"] = {"href": f"{base_url}/{pc_rel}", "roles": ["data"]}
        common = {"platform": "sentinel-2a", "constellation": "sentinel-2",
                  "instruments": ["msi"], "eo:cloud_cover": cloud_pct, "proj:epsg": 32633,
                  "mgrs:utm_zone": 33, "mgrs:latitude_band": "T", "mgrs:grid_square": "VL"}
        es.append(_item(es_id, "sentinel-2-l2a", when, bbox,
                        {**common, "s2:processing_baseline": "02.01",
                         "earthsearch:boa_offset_applied": False}, es_assets))
        pc.append(_item(pc_id, "sentinel-2-l2a", when, bbox,
                        {**common, "s2:processing_baseline": "05.00",
                         "s2:mgrs_tile": "33TVL"}, pc_assets))
    return {"earth-search": es, "pc": pc}


def build_s1(real: Path, root: Path, base_url: str) -> list[dict]:
    """Write the S1 VV scenes as linear-power COGs; items in the PC ``sentinel-1-rtc`` layout."""
    items = []
    for path in sorted((real / "s1_spatialist").glob("*.tif")):
        with rasterio.open(path) as src:
            db, crs, transform, nodata = src.read(1), src.crs, src.transform, src.nodata
            bounds = src.bounds
        linear = np.where(db == nodata, -32768, 10 ** (db / 10)).astype(np.float32)
        stamp = re.search(r"_(\d{8}T\d{6})_", path.name).group(1)  # 20150309T173017
        day = datetime.strptime(stamp, "%Y%m%dT%H%M%S")
        item_id = f"S1A_IW_GRDH_1SDV_{stamp}_RTC"
        rel = f"{S1_ACCOUNT}/{S1_CONTAINER}/GRD/{day:%Y/%-m/%-d}/IW/DV/{item_id}/measurement/vv.tif"
        write_cog(root / rel, linear, str(crs), transform, nodata=-32768)
        bbox = tuple(round(v, 7) for v in transform_bounds(crs, "EPSG:4326", *bounds))
        items.append(_item(item_id, "sentinel-1-rtc", f"{day:%Y-%m-%dT%H:%M:%S}Z", bbox, {
            "platform": "SENTINEL-1A", "constellation": "Sentinel-1", "sar:instrument_mode": "IW",
            "sar:polarizations": ["VV"], "sar:product_type": "GRD",
            "proj:epsg": crs.to_epsg(), "s1:orbit_source": "RESORB"},
            {"vv": {"href": f"{base_url}/{rel}", "roles": ["data"],
                    "type": "image/tiff; application=geotiff; profile=cloud-optimized"}}))
    return items


def write_items(items: list[dict], path: Path) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    return path
