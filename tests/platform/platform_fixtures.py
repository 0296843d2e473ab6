"""Helpers of the platform tests: generated scenes written as GeoTIFFs, sources, model folders.

(A helper module, not a conftest: ``tests/platform`` cannot be a package named ``platform``.)

Everything is real files (GeoTIFFs with CRS and transform, vector label files) built in the
test's ``tmp_path``; the model is a real random-weight Nano encoder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sample_scene import S2, s2_source, scene_box  # noqa: F401 (re-exported to the platform tests)

from geolatent.data.synthetic import SampleScene, make_sample_scene, write_scene_geotiffs
from geolatent.modalities import MODALITIES
from geolatent.model import build_model
from geolatent.platform.bundle import FinetunedModel, InputSpec, TaskSpec, save_bundle
from geolatent.platform.classes import ClassTable
from geolatent.platform.finetune import head_spec_for
from geolatent.platform.heads import TaskModel, build_head

S2_BANDS = list(MODALITIES[S2].bands)


def write_scene(folder: Path, *, height: int = 64, width: int = 64, timesteps: int = 2,
                seed: int = 0, epsg: int = 32633,
                origin: tuple[float, float] = (400_000.0, 5_100_000.0)) -> SampleScene:
    """A generated scene (monthly S2 / S1 from January 2024) written as GeoTIFFs."""
    scene = make_sample_scene(height, width, timesteps=timesteps, seed=seed, epsg=epsg,
                              origin=origin)
    write_scene_geotiffs(scene, folder)
    return scene


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
def single_torch_thread(one_torch_thread):
    """One torch thread for these small models (see ``one_torch_thread`` in tests/conftest.py).
    Imported by each test module."""
