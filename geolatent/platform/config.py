"""Fine-tuning configuration (YAML), validated with pydantic.

Relative paths are relative to the config file. Imagery sources use the data layer's own source
declarations (:mod:`geolatent.data.config`), inline under ``sources:`` or taken from a data
config with ``data_config:``. See ``configs/finetune/example.yaml`` for an annotated example.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from geolatent.config import StrictModel, load_config
from geolatent.data.config import SourceConfig, load_data_config, resolve_source
from geolatent.model.config import SIZES
from geolatent.platform.labels import LabelFormat
from geolatent.platform.windows import TaskType


class LabelsConfig(StrictModel):
    """Where the labels are and how to read them (see :func:`.labels.read_labels`).

    ``classes`` fixes the class order (and reports declared classes without labels);
    ``class_names`` / ``colors`` map label values to display names / RGB; ``ignore_values``
    are label values meaning "no label"; ``background`` is the class of unlabelled pixels inside
    segmentation windows (default: unlabelled pixels are ignored). ``time_column`` is the column
    holding each label's time (with ``end_time_column``: a range); default none: every label
    takes ``windows.start`` / ``windows.end`` (a date-like column is never used unasked).
    """

    path: str
    format: LabelFormat = "auto"
    field: str | None = None
    layer: str | int | None = None
    time_column: str | None = None
    end_time_column: str | None = None
    split_field: str | None = None
    lat_field: str | None = None
    lon_field: str | None = None
    csv_crs: str = "EPSG:4326"
    classes: list[str | int] | None = None
    class_names: dict[str, str] | None = None
    colors: dict[str, list[int]] | None = None
    ignore_values: list[str | int] = Field(default_factory=list)
    background: str | int | None = None
    repair_invalid: bool = False


class WindowsConfig(StrictModel):
    """Training windows: side in pixels, grid, and the default time range of labels without one.

    ``min_imagery_fraction``: windows whose share of pixels with any valid input is below this
    are listed in the report and skipped (labelled pixels without input never count anyway).
    """

    size_px: int = Field(32, ge=1)
    resolution_m: float = Field(10.0, gt=0)
    min_imagery_fraction: float = Field(0.25, ge=0, le=1)
    crs: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    instant_months: int = Field(12, ge=1, le=12)

    @model_validator(mode="after")
    def _ordered(self) -> WindowsConfig:
        if (self.start is None) != (self.end is None):
            raise ValueError("give both windows.start and windows.end (or neither)")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"windows.end {self.end:%Y-%m-%d} is not after windows.start "
                             f"{self.start:%Y-%m-%d}")
        return self

    @property
    def time_range(self) -> tuple[datetime, datetime] | None:
        if self.start is None or self.end is None:
            return None
        return self.start, self.end


class SplitConfig(StrictModel):
    """Spatial split: cells of ``cell_size_m`` hashed into train / val / test shares."""

    cell_size_m: float = Field(2560.0, gt=0)
    train: float = Field(0.8, ge=0, le=1)
    val: float = Field(0.1, ge=0, le=1)
    test: float = Field(0.1, ge=0, le=1)
    seed: int = 0

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split.train + split.val + split.test must add up to 1 (got "
                             f"{self.train} + {self.val} + {self.test} = {total:g})")
        if self.train == 0:
            raise ValueError("split.train is 0: training needs a training share")
        return self

    @property
    def fractions(self) -> dict[str, float]:
        return {"train": self.train, "val": self.val, "test": self.test}


class TrainConfig(StrictModel):
    """Optimization. The encoder is frozen for ``freeze_epochs`` (default 20% of the epochs,
    at least 1 when there are 2 or more), then trained at ``lr * encoder_lr_scale``.

    ``class_weighting``: ``balanced`` (inverse frequency), ``sqrt`` (inverse square root,
    gentler) or ``none``. ``select_metric``: validation metric for the best checkpoint
    (default: accuracy / mIoU / RMSE by task).
    """

    epochs: int = Field(10, ge=1)
    freeze_epochs: int | None = None
    lr: float = Field(1e-3, gt=0)
    encoder_lr_scale: float = Field(0.1, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    batch_size: int = Field(16, ge=1)
    patch_size: int = Field(4, ge=1, le=8)
    crop_size: int | None = None
    class_weighting: Literal["balanced", "sqrt", "none"] = "sqrt"
    head_hidden: int | None = None
    dropout: float = Field(0.1, ge=0, lt=1)
    augment: bool = True
    grad_clip: float = Field(1.0, gt=0)
    plateau_factor: float = Field(0.2, gt=0, lt=1)
    plateau_patience: int = Field(2, ge=0)
    select_metric: str | None = None
    device: str = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    seed: int = 0

    def frozen_epochs(self) -> int:
        if self.freeze_epochs is not None:
            return min(self.freeze_epochs, self.epochs)
        return min(self.epochs - 1, max(1, round(0.2 * self.epochs))) if self.epochs > 1 else 0


class ExecutorConfig(StrictModel):
    """How windows are materialized: ``serial``, ``process`` (local pool) or ``dask``."""

    kind: Literal["serial", "process", "dask"] = "serial"
    workers: int | None = None
    address: str | None = None


class FinetuneConfig(StrictModel):
    """``geolatent finetune --config ft.yaml``.

    Attributes:
        task: classification | regression | segmentation | pixel_regression.
        encoder: a checkpoint folder :func:`geolatent.load_model` accepts (v1 release or
            geolatent), or a size name (``nano`` ...) for a random encoder (tests only).
        labels, windows, split, train, executor: see their classes.
        sources / data_config: imagery (data-layer source declarations, or a data YAML whose
            ``sources`` are used).
        output: the fine-tuned model folder.
        work_dir: materialized training windows (resumable); default ``<output>.work``.
    """

    task: TaskType
    encoder: str
    labels: LabelsConfig | None = None
    sources: list[SourceConfig] = Field(default_factory=list)
    data_config: str | None = None
    windows: WindowsConfig = Field(default_factory=WindowsConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    output: str
    work_dir: str | None = None

    @model_validator(mode="after")
    def _check(self) -> FinetuneConfig:
        if self.labels is None:
            raise ValueError(f"task {self.task!r} needs `labels:`")
        if not self.sources and not self.data_config:
            raise ValueError("give imagery `sources:` or a `data_config:` whose sources to use")
        crop = self.train.crop_size or self.windows.size_px
        if crop % self.train.patch_size:
            raise ValueError(f"crop size {crop} must be a multiple of patch_size "
                             f"{self.train.patch_size}")
        return self

    @property
    def crop_size(self) -> int:
        return self.train.crop_size or self.windows.size_px

    @property
    def encoder_is_size(self) -> bool:
        return self.encoder in SIZES

    def resolved_work_dir(self) -> Path:
        return Path(self.work_dir) if self.work_dir else Path(self.output + ".work")

    def all_sources(self) -> list[SourceConfig]:
        """Inline sources plus those of ``data_config``."""
        extra = load_data_config(self.data_config).sources if self.data_config else []
        return list(self.sources) + list(extra)


class SourcesFile(StrictModel):
    """The ``sources:`` list of a YAML given to ``predict --sources`` (at least one source)."""

    # A data or fine-tuning config may be given whole: only its `sources:` list is read.
    model_config = ConfigDict(extra="ignore")

    sources: list[SourceConfig] = Field(min_length=1)


def resolve_source_paths(sources: list[SourceConfig], base_dir: Path) -> list[SourceConfig]:
    """Make the sources' relative paths absolute against ``base_dir`` (the data layer's
    :func:`geolatent.data.config.resolve_source`, so source paths are resolved one way)."""
    return [resolve_source(src, base_dir) for src in sources]


def _abs(base: Path, p: str | None) -> str | None:
    if p is None or "://" in p or Path(p).is_absolute():
        return p
    return str((base / p).resolve())


def load_finetune_config(path: str | Path, overrides: Sequence[str] | None = None,
                         flag: str = "key=value") -> FinetuneConfig:  # fmt: skip
    """Load and validate a fine-tuning YAML; relative paths are relative to the file.

    ``overrides``: ``a.b=value`` strings applied over the file (``["train.epochs=5"]``);
    ``flag`` names where they came from in errors (``--set``).
    """
    path = Path(path)
    cfg = load_config(path, FinetuneConfig, overrides, what="fine-tuning", flag=flag)
    return resolve_config_paths(cfg, path.resolve().parent)


def resolve_config_paths(cfg: FinetuneConfig, base: Path) -> FinetuneConfig:
    """A copy of ``cfg`` with every relative path made absolute against ``base``."""
    out = cfg.model_copy(deep=True)
    if out.labels is not None:
        out.labels.path = _abs(base, out.labels.path)  # type: ignore[assignment]
    if not out.encoder_is_size:
        out.encoder = _abs(base, out.encoder)  # type: ignore[assignment]
    out.output = _abs(base, out.output)  # type: ignore[assignment]
    out.work_dir = _abs(base, out.work_dir)
    out.data_config = _abs(base, out.data_config)
    out.sources = resolve_source_paths(out.sources, base)
    return out
