"""The platform: labels -> training windows -> fine-tuning -> prediction maps.

::

    from geolatent.platform import load_finetune_config, finetune, predict_area

    result = finetune(load_finetune_config("configs/finetune/example.yaml"), log=print)
    predict_area(result.bundle_path, "area.geojson", "2024-01-01", "2024-12-31", "map.tif")

Modules: :mod:`.labels` (reading and checking labels), :mod:`.classes` (class table),
:mod:`.windows` (labels -> data-layer windows and targets), :mod:`.split` (spatial splits),
:mod:`.dataset` (materialized training windows), :mod:`.heads` (task heads),
:mod:`.finetune`, :mod:`.bundle` (the fine-tuned model folder), :mod:`.area` (prediction grid,
tiles, crops, blending), :mod:`.predict`, :mod:`.vectorize`, :mod:`.config`, :mod:`.cli`.
"""

from geolatent.platform.area import plan_prediction, read_area
from geolatent.platform.bundle import BundleError, FinetunedModel, load_bundle, save_bundle
from geolatent.platform.classes import ClassTable
from geolatent.platform.config import FinetuneConfig, load_finetune_config
from geolatent.platform.dataset import PreparedData, prepare_training_data
from geolatent.platform.finetune import FinetuneResult, finetune
from geolatent.platform.heads import HeadSpec, TaskModel, build_head
from geolatent.platform.labels import (
    LabelError,
    LabelProblem,
    LabelSet,
    check_labels,
    read_labels,
)
from geolatent.platform.predict import PredictResult, predict_area
from geolatent.platform.split import assign_splits
from geolatent.platform.vectorize import write_class_polygons
from geolatent.platform.windows import make_label_windows

__all__ = [
    "BundleError", "ClassTable", "FinetuneConfig", "FinetuneResult", "FinetunedModel",
    "HeadSpec", "LabelError", "LabelProblem", "LabelSet", "PredictResult", "PreparedData",
    "TaskModel", "assign_splits", "build_head", "check_labels", "finetune", "load_bundle",
    "load_finetune_config", "make_label_windows", "plan_prediction", "predict_area",
    "prepare_training_data", "read_area", "read_labels", "save_bundle", "write_class_polygons",
]  # fmt: skip
