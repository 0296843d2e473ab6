"""The user's own data as an evaluation task: arrays or GeoTIFF chips plus labels.

Two ways in, one result: an :class:`~geolatent.evals.tasks.EvalTask` named as the user names
it, which :func:`~geolatent.evals.runner.run_eval` (and ``geolatent eval --task FILE.yaml``)
runs like any benchmark.

- Python, in memory: :func:`custom_task` with ``train=(x, y)``, ``test=(x, y)`` and optionally
  ``val=(x, y)``. ``x`` is ``[N, H, W, T, C]`` chips, ``[N, H, W, C]`` (one date) or
  ``[N, T, C]`` pixel time series, in the modality's raw units (Sentinel-2 L2A DN, S1 dB,
  Landsat L1 DN; -99999 or NaN = missing).
- A dataset file (YAML), see :func:`load_custom_task` and ``docs/evals.md``: ``arrays:`` an
  ``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test`` (``x_val`` / ``y_val``
  optional), or ``chips:`` per split a CSV of ``file,label`` rows (GeoTIFF chips; for
  segmentation the label is a GeoTIFF of class ids on the chip's grid).

Labels: classification ``[N]`` int class ids ``0..num_classes-1``; regression ``[N]`` floats;
segmentation ``[N, H, W]`` int class ids, ``ignore_index`` for unlabelled pixels.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import field_validator, model_validator

from geolatent.config import StrictModel, load_config
from geolatent.evals.datasets.base import (
    EvalDataset,
    SplitData,
    array_split,
    constant_timestamps,
)
from geolatent.modalities import get_modality

CUSTOM_TASK_TYPES = ("classification", "regression", "segmentation")
Pair = tuple[np.ndarray, np.ndarray]


class CustomDataset(EvalDataset):
    """In-memory splits of the user's data (built by :func:`custom_task`)."""

    name = "custom"
    version = "1"

    def __init__(self, root=None, *, title: str, task_type: str, modality: str,
                 bands: Sequence[str], dates: Sequence[dt.date], splits: dict[str, Pair],
                 num_classes: int, class_names: Sequence[str], ignore_index: int,
                 fingerprint: str):
        self.root = Path(root) if root else Path(".")
        self.name = title  # type: ignore[misc]
        self.task_type = task_type  # type: ignore[misc]
        self.num_classes = num_classes
        self.class_names = tuple(class_names)
        self.ignore_index = ignore_index
        self.split_names = tuple(splits)
        self._modality, self._bands, self._dates = modality, list(bands), list(dates)
        self._splits = splits
        self._fingerprint = fingerprint

    def split(self, name: str) -> SplitData:
        if name not in self._splits:
            raise KeyError(f"dataset {self.name!r} has no {name!r} split; it has "
                           f"{list(self._splits)}")
        x, y = self._splits[name]
        ts = constant_timestamps(len(y), self._dates)
        return array_split({self._modality: x}, {self._modality: self._bands}, ts, y,
                           [f"{name}-{i}" for i in range(len(y))])

    def options(self) -> dict:
        return {"modality": self._modality, "bands": self._bands,
                "dates": [d.isoformat() for d in self._dates]}

    def fingerprint(self) -> str:
        return self._fingerprint

    def fingerprint_files(self) -> list[Path]:
        return []


def _as_5d(x: np.ndarray, arg: str, n_dates: int, n_bands: int) -> np.ndarray:
    """``[N, H, W, T, C]`` float32 from the accepted shapes; errors name the argument."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 3:  # [N, T, C] pixel time series
        x = x[:, None, None]
    elif x.ndim == 4:  # [N, H, W, C], one date
        x = x[:, :, :, None]
    if x.ndim != 5:
        raise ValueError(f"{arg} must be [N, H, W, T, C], [N, H, W, C] or [N, T, C]; got "
                         f"shape {x.shape}")
    if x.shape[4] != n_bands:
        raise ValueError(f"{arg} has {x.shape[4]} bands (last axis) but `bands` names "
                         f"{n_bands}")
    if x.shape[3] != n_dates:
        raise ValueError(f"{arg} has {x.shape[3]} timesteps but `dates` gives {n_dates}")
    return x


def _labels(y: np.ndarray, arg: str, x: np.ndarray, task_type: str) -> np.ndarray:
    y = np.asarray(y)
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"{arg} has {y.shape[0]} labels for {x.shape[0]} samples")
    if task_type == "regression":
        if y.ndim != 1 or y.dtype.kind not in "iuf":
            raise ValueError(f"{arg}: regression labels must be [N] numbers, got {y.dtype} "
                             f"{y.shape}")
        return y.astype(np.float64)
    want = 3 if task_type == "segmentation" else 1
    if y.ndim != want or y.dtype.kind not in "iu" and not np.allclose(y, np.round(y)):
        shape = "[N, H, W]" if want == 3 else "[N]"
        raise ValueError(f"{arg}: {task_type} labels must be {shape} integer class ids, got "
                         f"{y.dtype} {y.shape}")
    if want == 3 and y.shape[1:] != x.shape[1:3]:
        raise ValueError(f"{arg}: masks of {y.shape[1:]} px for chips of {x.shape[1:3]} px")
    return y.astype(np.int64)


def custom_task(
    name: str,
    task_type: str,
    *,
    train: Pair,
    test: Pair,
    val: Pair | None = None,
    modality: str = "sentinel2_l2a",
    bands: Sequence[str] | None = None,
    dates: Sequence[str | dt.date] = ("2024-06-01",),
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    ignore_index: int = -1,
    patch_size: int | None = None,
):
    """An evaluation task on the user's arrays, named ``name`` in every result.

    Args:
        name: the task's name in results and reports.
        task_type: ``classification``, ``regression`` or ``segmentation``.
        train, test, val: ``(x, y)`` per split (see the module docstring for shapes).
        modality: the registry modality of ``x`` (raw units, checked by ``embed``).
        bands: band names of ``x``'s last axis (default: all of the modality's, in order).
        dates: one date per timestep.
        num_classes: class tasks (default: the largest train / test label + 1).
        class_names: names of the classes (default ``"0"``, ``"1"``...).
        ignore_index: segmentation label of unlabelled pixels.
        patch_size: evaluation patch size (default 4; 1 for pixel time series).

    Raises:
        ValueError: naming the argument (``train``, ``bands``, ``num_classes`` ...) at fault.
    """
    import hashlib

    from geolatent.evals.tasks import EvalTask

    if task_type not in CUSTOM_TASK_TYPES:
        raise ValueError(f"task_type must be one of {CUSTOM_TASK_TYPES}, got {task_type!r}")
    mod = get_modality(modality)
    band_list = list(bands) if bands is not None else list(mod.bands)
    for b in band_list:
        mod.band_index(b)  # raises, naming the modality's bands
    day_list = [d if isinstance(d, dt.date) else dt.date.fromisoformat(str(d)) for d in dates]
    splits: dict[str, Pair] = {}
    pixel_series = False
    for split, pair in (("train", train), ("val", val), ("test", test)):
        if pair is None:
            continue
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise ValueError(f"{split} must be a pair (x, y)")
        x = _as_5d(pair[0], f"{split}[0] (x_{split})", len(day_list), len(band_list))
        pixel_series |= np.asarray(pair[0]).ndim == 3
        splits[split] = (x, _labels(pair[1], f"{split}[1] (y_{split})", x, task_type))
    classes = 0
    if task_type != "regression":
        seen = np.concatenate([y[y != ignore_index].ravel() for _, y in splits.values()])
        classes = int(num_classes) if num_classes is not None else int(seen.max()) + 1
        if seen.size and (seen.min() < 0 or seen.max() >= classes):
            raise ValueError(f"labels hold class ids {seen.min()}..{seen.max()} but "
                             f"num_classes is {classes}: give num_classes, or use "
                             "task_type='regression' for values")
    names = list(class_names) if class_names is not None else [str(i) for i in range(classes)]
    if task_type != "regression" and len(names) != classes:
        raise ValueError(f"class_names has {len(names)} names for {classes} classes")
    h = hashlib.sha256(repr((name, task_type, modality, band_list, day_list, classes)).encode())
    for split, (x, y) in splits.items():
        h.update(split.encode() + x.tobytes() + np.ascontiguousarray(y).tobytes())
    kwargs = dict(title=name, task_type=task_type, modality=modality, bands=band_list,
                  dates=day_list, splits=splits, num_classes=classes, class_names=names,
                  ignore_index=ignore_index, fingerprint=h.hexdigest())
    p = patch_size or (1 if pixel_series else 4)
    return EvalTask(name, lambda root=None, **kw: CustomDataset(root, **{**kwargs, **kw}), {},
                    p, f"{name}: the user's {task_type} data ({modality})")


class CustomTaskConfig(StrictModel):
    """The keys of a custom eval task YAML (see :func:`load_custom_task`)."""

    name: str
    task_type: str
    """classification | regression | segmentation (checked by :func:`custom_task`)."""
    modality: str = "sentinel2_l2a"
    bands: list[str] | None = None
    dates: list[str] | None = None
    num_classes: int | None = None
    class_names: list[str] | None = None
    ignore_index: int = -1
    patch_size: int | None = None
    arrays: str | None = None
    chips: dict[str, str] | None = None

    @field_validator("dates", mode="before")
    @classmethod
    def _dates_as_text(cls, v):
        # YAML reads 2024-05-01 as a date; the task takes ISO day strings.
        return None if v is None else [str(d) for d in v]

    @model_validator(mode="after")
    def _one_source(self) -> CustomTaskConfig:
        if (self.arrays is None) == (self.chips is None):
            raise ValueError("give exactly one of `arrays:` or `chips:`")
        return self


def load_custom_task(path: str | Path):
    """An evaluation task from a dataset file (YAML; recipe in ``docs/evals.md``)::

        name: my-crops              # results are labelled with this name
        task_type: classification   # classification | regression | segmentation
        modality: sentinel2_l2a
        bands: [B02, B03, B04, B08]
        dates: [2024-05-01, 2024-06-01]
        num_classes: 3              # optional; class_names: [...] optional
        arrays: data.npz            # x_train, y_train, x_test, y_test (x_val, y_val optional)
        # or, GeoTIFF chips (bands of each date follow each other in the file):
        # chips: {train: train.csv, test: test.csv}   # rows: file,label

    Relative paths are relative to the YAML file.
    """
    path = Path(path)
    spec = load_config(path, CustomTaskConfig, what="custom eval task")
    base = path.resolve().parent
    dates = [str(d) for d in spec.dates or ["2024-06-01"]]
    if spec.arrays is not None:
        npz = base / spec.arrays
        if not npz.exists():
            raise FileNotFoundError(f"{path}: `arrays:` file {npz} does not exist")
        with np.load(npz) as f:
            data = {k: f[k] for k in f.files}
        pairs = {}
        for split in ("train", "val", "test"):
            if f"x_{split}" in data or f"y_{split}" in data:
                if f"x_{split}" not in data or f"y_{split}" not in data:
                    raise ValueError(f"{npz}: give both x_{split} and y_{split}")
                pairs[split] = (data[f"x_{split}"], data[f"y_{split}"])
    else:
        pairs = {split: _read_chips(base / csv_path, spec.task_type, len(dates))
                 for split, csv_path in (spec.chips or {}).items()}
    for split in ("train", "test"):
        if split not in pairs:
            raise ValueError(f"{path}: the data has no {split} split (x_{split} / y_{split}, "
                             f"or chips: {split}:)")
    return custom_task(
        spec.name, spec.task_type, train=pairs["train"], test=pairs["test"],
        val=pairs.get("val"), modality=spec.modality, bands=spec.bands, dates=dates,
        num_classes=spec.num_classes, class_names=spec.class_names,
        ignore_index=spec.ignore_index, patch_size=spec.patch_size)


def _read_chips(table: Path, task_type: str, n_dates: int) -> Pair:
    """``(x [N, H, W, T, C], y)`` from a CSV of ``file,label`` rows (paths relative to it)."""
    import rasterio

    if not table.exists():
        raise FileNotFoundError(f"chips table {table} does not exist")
    with table.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"file", "label"} <= set(rows[0]):
        raise ValueError(f"{table}: expected a header `file,label` and one row per chip")
    xs, ys = [], []
    for i, row in enumerate(rows, start=2):
        chip = table.parent / row["file"]
        try:
            with rasterio.open(chip) as src:
                a = src.read().astype(np.float32)
                if src.nodata is not None:
                    a[a == src.nodata] = np.nan
        except rasterio.errors.RasterioIOError as e:
            raise ValueError(f"{table} line {i}: cannot read chip {chip} ({e})") from e
        if a.shape[0] % n_dates:
            raise ValueError(f"{chip}: {a.shape[0]} bands is not a multiple of the "
                             f"{n_dates} dates")
        c = a.shape[0] // n_dates
        xs.append(np.moveaxis(a.reshape(n_dates, c, *a.shape[1:]), (0, 1), (2, 3)))
        if task_type == "segmentation":
            with rasterio.open(table.parent / row["label"]) as src:
                ys.append(src.read(1).astype(np.int64))
        else:
            ys.append(float(row["label"]) if task_type == "regression" else int(row["label"]))
    shapes = {x.shape for x in xs}
    if len(shapes) != 1:
        raise ValueError(f"{table}: chips differ in shape {sorted(shapes)}; all must match")
    return np.stack(xs), np.asarray(ys)
