"""Named evaluation tasks: a benchmark adapter with its options and the evaluation patch size."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from geolatent.evals.datasets import (
    MADOS,
    PASTIS,
    AlgaeBlooms,
    BreizhCrops,
    CropHarvest,
    EOLearnLULC,
    EuroSATMS,
    EvalDataset,
    GeoBench,
    Sen1Floods11,
)
from geolatent.evals.datasets.geobench import SPECS


@dataclass(frozen=True)
class EvalTask:
    """A benchmark as evaluated: adapter + options + patch size.

    ``build(root, **overrides)`` returns the adapter; ``root`` defaults to the adapter's
    ``$GEOLATENT_DATA_DIR/<dirname>``.
    """

    name: str
    factory: Callable[..., EvalDataset]
    kwargs: dict = field(default_factory=dict)
    patch_size: int = 4
    description: str = ""

    def build(self, root=None, **overrides) -> EvalDataset:
        return self.factory(root=root, **{**self.kwargs, **overrides})


def _geobench(name: str) -> EvalTask:
    spec = SPECS[name]
    return EvalTask(name, GeoBench, {"name": name},
                    description=f"GEO-Bench {name}: {spec.task_type}, {spec.num_classes} classes "
                                f"({spec.units_note})")  # fmt: skip


TASKS: dict[str, EvalTask] = {
    t.name: t
    for t in (
        *(_geobench(n) for n in SPECS),
        EvalTask("mados", MADOS, description="MADOS marine pollution, S2, seg 15, 80 px"),
        EvalTask("sen1floods11", Sen1Floods11,
                 description="Sen1Floods11 hand-labeled, S1, seg 2, 64 px"),
        EvalTask("pastis-s2", PASTIS, {"modalities": ("sentinel2_l2a",)},
                 description="PASTIS S2 monthly series, seg 19, 64 px"),
        EvalTask("pastis-s1", PASTIS, {"modalities": ("sentinel1",)},
                 description="PASTIS-R S1 (ascending) monthly series, seg 19, 64 px"),
        EvalTask("pastis-s1s2", PASTIS, {"modalities": ("sentinel2_l2a", "sentinel1")},
                 description="PASTIS-R S1 + S2 monthly series, seg 19, 64 px"),
        EvalTask("breizhcrops", BreizhCrops, patch_size=1,
                 description="BreizhCrops S2 parcel time series, cls 9, 1 x 1 px"),
        EvalTask("cropharvest", CropHarvest, patch_size=1,
                 description="CropHarvest S1 + S2 pixel time series, crop / non-crop"),
        EvalTask("eurosat-ms", EuroSATMS, description="EuroSAT-MS GeoTIFFs, S2 L1C, cls 10"),
        EvalTask("eolearn-lulc-cls", EOLearnLULC, {"kind": "classification"},
                 description="eo-learn Slovenia patch, 8 px chip land use, S2 L1C x5 dates"),
        EvalTask("eolearn-lulc-seg", EOLearnLULC, {"kind": "segmentation"},
                 description="eo-learn Slovenia patch, per-pixel land use, 16 px windows"),
        EvalTask("algae-blooms", AlgaeBlooms, {"target": "regression"}, patch_size=1,
                 description="Presto algae blooms, severity regression, S1 + S2 monthly 1 x 1 px"),
        EvalTask("algae-blooms-cls", AlgaeBlooms, {"target": "classification"}, patch_size=1,
                 description="Presto algae blooms, severity as 5 classes"),
    )
}


def get_task(name: str) -> EvalTask:
    """A named benchmark task, or the user's own dataset from a dataset YAML file path
    (:func:`~geolatent.evals.datasets.custom.load_custom_task`)."""
    if name.lower().endswith((".yaml", ".yml")):
        from geolatent.evals.datasets.custom import load_custom_task

        if not Path(name).is_file():
            raise FileNotFoundError(f"dataset file {name} does not exist")
        return load_custom_task(name)
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown eval task {name!r}; known: {sorted(TASKS)}, or the path of "
                       "your own dataset file (.yaml, see docs/evals.md)") from None
