"""Benchmark adapters: each reads one benchmark in its distributed format (see each module's
docstring for the file layout, the band contract and the unit conversions)."""

from geolatent.evals.datasets.algae_blooms import AlgaeBlooms
from geolatent.evals.datasets.base import (
    Batch,
    DatasetNotFoundError,
    EvalDataset,
    SplitData,
    array_split,
)
from geolatent.evals.datasets.breizhcrops import BreizhCrops
from geolatent.evals.datasets.cropharvest import CropHarvest
from geolatent.evals.datasets.eolearn import EOLearnLULC
from geolatent.evals.datasets.eurosat import EuroSATMS
from geolatent.evals.datasets.geobench import SPECS as GEOBENCH_SPECS
from geolatent.evals.datasets.geobench import GeoBench
from geolatent.evals.datasets.mados import MADOS
from geolatent.evals.datasets.pastis import PASTIS
from geolatent.evals.datasets.sen1floods11 import Sen1Floods11

__all__ = [
    "MADOS", "PASTIS", "AlgaeBlooms", "Batch", "BreizhCrops", "CropHarvest",
    "DatasetNotFoundError", "EOLearnLULC", "EuroSATMS", "EvalDataset", "GEOBENCH_SPECS",
    "GeoBench", "Sen1Floods11", "SplitData", "array_split",
]  # fmt: skip
