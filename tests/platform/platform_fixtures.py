"""Helpers of the platform tests: generated scenes written as GeoTIFFs, sources, model folders.

(A helper module, not a conftest: ``tests/platform`` cannot be a package named ``platform``.)

Everything is real files (GeoTIFFs with CRS and transform, vector label files) built in the
test's ``tmp_path``; the model is a real random-weight Nano encoder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import shapely
import torch

from geolatent.data.synthetic import SampleScene, make_sample_scene, write_scene_geotiffs
from geolatent.data.window import WGS84, reproject_geometry
from geolatent.modalities import MODALITIES
from geolatent.model import build_model
from geolatent.platform.bundle import FinetunedModel, InputSpec, TaskSpec, save_bundle
from geolatent.platform.classes import ClassTable
from geolatent.platform.finetune import head_spec_for
from geolatent.platform.heads import TaskModel, build_head

S2 = "sentinel2_l2a"
S2_BANDS = list(MODALITIES[S2].bands)


def write_scene(folder: Path, *, height: int = 64, width: int = 64, timesteps: int = 2,
                seed: int = 0, epsg: int = 32633,
                origin: tuple[float, float] = (400_000.0, 5_100_000.0)) -> SampleScene:
    """A generated scene (monthly S2 / S1 from January 2024) written as GeoTIFFs."""
    scene = make_sample_scene(height, width, timesteps=timesteps, seed=seed, epsg=epsg,
                              origin=origin)
    write_scene_geotiffs(scene, folder)
    return scene


def s2_source(folder: Path, name: str = "s2", pattern: str = "sentinel2_l2a_*.tif") -> dict:
    """A data-layer file source for the scene's Sentinel-2 files."""
    return dict(name=name, type="files", modality=S2, paths=[str(folder / pattern)],
                bands=S2_BANDS, date_pattern=r"_(\d{4}-\d{2}-\d{2})\.tif", date_format="%Y-%m-%d")


def scene_box(scene: SampleScene, inset_px: float = 0.0) -> shapely.Polygon:
    """The scene footprint in lon/lat, shrunk by ``inset_px`` pixels on each side."""
    t = scene.transform
    x0, y0 = t @ (inset_px, inset_px)
    x1, y1 = t @ (scene.width - inset_px, scene.height - inset_px)
    poly = shapely.segmentize(shapely.box(x0, y1, x1, y0), 50.0)
    return reproject_geometry(poly, scene.crs.to_string(), WGS84)


def make_bundle(path: Path, task: str, sources: list[dict], *, num_classes: int = 3,
                patch_size: int = 8, crop: int = 16, seed: int = 0) -> FinetunedModel:
    """A model folder with a random Nano encoder and a fresh head (no training)."""
    torch.manual_seed(seed)
    model = build_model("nano")
    classes = ClassTable.from_values(range(num_classes)) if task in (
        "classification", "segmentation") else None
    spec = head_spec_for(task, model.config.embedding_size, num_classes, [S2], 16, 0.0)
    fm = FinetunedModel(
        model=TaskModel(model.encoder, build_head(spec), spec).eval(),
        task=TaskSpec(task, 0.0, 1.0),
        inputs=InputSpec([S2], {S2: S2_BANDS}, patch_size, crop, crop),
        model_config=model.config,
        classes=classes,
        sources=sources,
    )
    save_bundle(fm, path)
    return fm


@pytest.fixture(autouse=True)
def single_torch_thread():
    """One torch thread for these small models: on a shared 2-core machine, two threads wait on
    each other more than they compute (measured 10x slower). Imported by each test module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
