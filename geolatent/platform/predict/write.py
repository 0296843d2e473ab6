"""The last step of a prediction: every tile core from the work store into one COG."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from xml.sax.saxutils import escape

from geolatent.data.io.cog import COGWriter
from geolatent.data.run import WorkStore, write_atomic
from geolatent.platform.area import PredictionPlan
from geolatent.platform.classes import NODATA_CLASS
from geolatent.platform.predict.plan import PredictionModel


def tile_key(index: int) -> str:
    """The work-store key of tile ``index``."""
    return f"tile_{index:07d}"


def write_prediction_cog(plan: PredictionPlan, fm: PredictionModel, store: WorkStore,
                         out_path: Path, kind: str, fingerprint: str, bands: int,
                         extra_tags: Mapping[str, object] | None = None,
                         blocksize: int = 256) -> Path:
    """Stream every tile core of ``store`` into a COG at ``out_path`` (one core in memory at a
    time; the COG writer's temporary files live in the store's folder). Class maps also get
    their class names as GDAL category names (:func:`write_category_names`); embedding maps
    the model's provenance (which release, revision and weights made them)."""
    tags: dict[str, object] = {
        "geolatent_product": "embedding" if kind == "embedding" else "prediction",
        "geolatent_plan": fingerprint,
        "task": "embedding" if kind == "embedding" else fm.task.type,  # type: ignore[union-attr]
        "model": str(fm.path or ""),
        "time_range": "/".join(plan.time_range),
        "crop": plan.crop,
        "stride": plan.stride,
    }
    if kind == "embedding":
        tags["patch_size"] = fm.inputs.patch_size
        tags["pixel_size_m"] = f"{plan.resolution * plan.out_scale:g}"
        provenance = getattr(fm.model, "provenance", None)
        if provenance:
            tags["model_provenance"] = json.dumps(provenance, sort_keys=True, default=str)
    tags.update(extra_tags or {})
    colormap, descriptions, nodata, dtype = None, None, float("nan"), "float32"
    if kind == "class":
        classes = fm.classes
        assert classes is not None
        colormap, descriptions, nodata, dtype = classes.colormap(), ["class"], NODATA_CLASS, "uint8"
        tags["class_names"] = json.dumps(list(classes.names))
        tags["class_values"] = json.dumps(list(classes.values))
        tags |= {f"class_{i}": n for i, n in enumerate(classes.names)}
    elif kind == "value":
        descriptions = [fm.task.value_name]
    else:
        descriptions = [f"embedding_{i:03d}" for i in range(bands)]
    q = plan.out_scale
    c0, r0 = plan.bounds[:2]
    with COGWriter(out_path, width=plan.width, height=plan.height, count=bands, dtype=dtype,
                   crs=plan.crs, transform=plan.transform, nodata=nodata,
                   band_descriptions=descriptions, colormap=colormap, tags=tags,
                   blocksize=blocksize, temp_dir=store.root) as writer:
        for t in plan.tiles:
            data = store.get_array(tile_key(t.index))
            writer.write(data, (t.core[1] - r0) // q, (t.core[0] - c0) // q)
    if kind == "class":
        write_category_names(out_path, list(fm.classes.names))  # type: ignore[union-attr]
    return out_path


def write_category_names(raster: Path, names: list[str], band: int = 1) -> Path:
    """Write ``names`` (class index -> name) as GDAL category names of ``band`` in the raster's
    PAM sidecar ``<raster>.aux.xml``: GDAL, and so QGIS ("Paletted/Unique values" shows them
    as the legend), reads it beside the colour table, which stays in the COG."""
    cats = "".join(f"      <Category>{escape(n)}</Category>\n" for n in names)
    xml = (f"<PAMDataset>\n  <PAMRasterBand band=\"{band}\">\n    <CategoryNames>\n{cats}"
           "    </CategoryNames>\n  </PAMRasterBand>\n</PAMDataset>\n")
    return write_atomic(raster.with_name(raster.name + ".aux.xml"), lambda p: p.write_text(xml))
