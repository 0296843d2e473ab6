"""What every benchmark adapter hands the evaluation: splits of raw, correctly named bands.

An adapter reads a benchmark in the format it is distributed in and returns, per split, a
:class:`SplitData`: the labels (loaded eagerly, they are small) and a loader that reads any
subset of samples as a :class:`Batch` of raw arrays in the units the model expects
(Sentinel-2 L2A-scale DN, Sentinel-1 dB, Landsat L1 DN), with the band names of the last axis.
Bands the model takes but the dataset lacks are simply not given: ``embed`` then masks the
bandsets they belong to. Nothing is zero-filled.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, TypeVar

import numpy as np

from geolatent.modalities import MISSING_VALUE, get_modality
from geolatent.normalize import band_affine

DATA_DIR_ENV = "GEOLATENT_DATA_DIR"
K = TypeVar("K")  # what names a scene of a tiled split (a file name, a patch record)


class DatasetNotFoundError(FileNotFoundError):
    """The benchmark files are not where the adapter was told to look."""


@dataclass
class Batch:
    """Raw inputs of some samples.

    Attributes:
        inputs: per modality ``[B, H, W, T, C]`` float32 in the model's raw units; -99999 (or
            NaN) marks missing pixels / timesteps.
        bands: per modality the band names of the ``C`` axis (registry names).
        timestamps: ``[B, T, 3]`` int64 (day 1-31, month 0-11, year).
    """

    inputs: dict[str, np.ndarray]
    bands: dict[str, list[str]]
    timestamps: np.ndarray

    def __len__(self) -> int:
        return int(self.timestamps.shape[0])


@dataclass
class SplitData:
    """One split of a benchmark.

    Attributes:
        labels: ``[N]`` int class ids (classification), ``[N, K]`` 0/1 (multilabel), ``[N]``
            float (regression) or ``[N, H, W]`` int (segmentation, ``ignore_index`` = unlabeled).
        loader: reads the samples with the given indices (sorted or not) as one :class:`Batch`.
        sample_ids: stable names of the samples (for fingerprints and debugging).
    """

    labels: np.ndarray
    loader: Callable[[np.ndarray], Batch]
    sample_ids: list[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def load(self, idx: np.ndarray | Sequence[int]) -> Batch:
        return self.loader(np.asarray(idx, dtype=np.int64))

    def subset(self, idx: np.ndarray) -> SplitData:
        """The samples ``idx`` of this split, as a split of its own."""
        idx = np.asarray(idx, dtype=np.int64)
        parent = self.loader
        ids = [self.sample_ids[i] for i in idx]
        return SplitData(self.labels[idx], lambda i: parent(idx[i]), ids)


def array_split(
    inputs: dict[str, np.ndarray],
    bands: dict[str, list[str]],
    timestamps: np.ndarray,
    labels: np.ndarray,
    sample_ids: list[str] | None = None,
) -> SplitData:
    """A split held in memory (small benchmarks, or ones stored as single arrays)."""
    n = labels.shape[0]
    ids = sample_ids or [str(i) for i in range(n)]

    def load(idx: np.ndarray) -> Batch:
        return Batch({m: x[idx] for m, x in inputs.items()}, bands, timestamps[idx])

    return SplitData(labels, load, ids)


class EvalDataset:
    """Base class of the benchmark adapters (TorchGeo style: one small class per benchmark).

    Subclasses set the class attributes, document their band contract and units, and implement
    :meth:`split`. ``root`` is the folder of the downloaded benchmark; when omitted the adapter
    looks in ``$GEOLATENT_DATA_DIR/<dirname>`` (``dirname`` defaults to ``name``).
    ``num_classes`` defaults to the length of a class-level ``class_names``.
    """

    name: ClassVar[str] = ""
    dirname: ClassVar[str] = ""
    task_type: ClassVar[str] = "classification"
    version: ClassVar[str] = "1"  # bump when the adapter's output for the same files changes

    num_classes: int = 0
    class_names: tuple[str, ...] = ()
    ignore_index: int = -1
    split_names: tuple[str, ...] = ("train", "val", "test")

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # A fixed class list states the class count: num_classes follows it unless set.
        if "class_names" in vars(cls) and "num_classes" not in vars(cls):
            cls.num_classes = len(cls.class_names)

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = resolve_root(root, self.dirname or self.name)

    def split(self, name: str) -> SplitData:
        raise NotImplementedError

    def has_split(self, name: str) -> bool:
        return name in self.split_names

    def options(self) -> dict:
        """Adapter options that change its output (part of the cache key)."""
        return {}

    def fingerprint(self) -> str:
        """Hash of what identifies this dataset's content: adapter, options, files (names,
        sizes, modification times). Cheap: no pixel is read."""
        h = hashlib.sha256()
        head = [type(self).__name__, self.version, self.options()]
        h.update(json.dumps(head, default=str).encode())
        for p in sorted(self.fingerprint_files()):
            st = p.stat()
            h.update(f"{p.relative_to(self.root)}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()

    def fingerprint_files(self) -> list[Path]:
        """The files whose names, sizes and dates identify the content (default: all)."""
        return [p for p in self.root.rglob("*") if p.is_file()]

    def describe(self) -> dict:
        return {
            "dataset": self.name, "task_type": self.task_type, "num_classes": self.num_classes,
            "root": str(self.root), "options": self.options(),
        }  # fmt: skip


def resolve_root(root: str | os.PathLike | None, dirname: str) -> Path:
    """The benchmark folder: ``root`` if given, else ``$GEOLATENT_DATA_DIR/<dirname>``."""
    if root is None:
        base = os.environ.get(DATA_DIR_ENV)
        if not base:
            raise DatasetNotFoundError(
                f"no path given for dataset {dirname!r}: pass root=... (CLI: --data-root) or set "
                f"{DATA_DIR_ENV} so that ${DATA_DIR_ENV}/{dirname} holds the downloaded files"
            )
        root = Path(base) / dirname
    p = Path(root).expanduser()
    if not p.exists():
        raise DatasetNotFoundError(f"dataset folder {p} does not exist")
    return p


# ---------------------------------------------------------------------------------------------
# Small shared helpers (vectorized; used by several adapters).


def date_to_timestamp(d: dt.date) -> tuple[int, int, int]:
    """(day, month 0-11, year), the model's timestamp convention."""
    return d.day, d.month - 1, d.year


def constant_timestamps(n: int, dates: Sequence[dt.date]) -> np.ndarray:
    """``[n, T, 3]`` timestamps, the same T dates for every sample."""
    ts = np.array([date_to_timestamp(d) for d in dates], dtype=np.int64)
    return np.broadcast_to(ts, (n, *ts.shape)).copy()


def single_modality_batch(modality: str, x: np.ndarray, names: list[str],
                          dates: Sequence[dt.date]) -> Batch:
    """A batch of one modality: ``x`` ``[N, H, W, T, C]`` with band ``names``, bandsets kept only
    where whole (:func:`complete_bandsets`), every sample at the same T ``dates``."""
    x, names = complete_bandsets(modality, x, names)
    return Batch({modality: x}, {modality: names}, constant_timestamps(len(x), dates))


def to_missing(x: np.ndarray, invalid: np.ndarray | None = None) -> np.ndarray:
    """float32 copy with NaN / inf (and ``invalid`` entries) set to the missing value."""
    out = np.asarray(x, dtype=np.float32).copy()
    bad = ~np.isfinite(out)
    if invalid is not None:
        bad |= invalid
    out[bad] = MISSING_VALUE
    return out


def monthly_composite(
    values: np.ndarray, dates: Sequence[dt.date], months: Sequence[tuple[int, int]]
) -> np.ndarray:
    """Per-calendar-month median of an irregular time series.

    Args:
        values: ``[..., T, C]`` raw values, missing as -99999 or NaN.
        dates: the T acquisition dates.
        months: the (year, month 1-12) of each output step.

    Returns:
        ``[..., len(months), C]`` float32; a month without any valid acquisition is -99999.
    """
    v = np.asarray(values, dtype=np.float32)
    v = np.where((v == MISSING_VALUE) | ~np.isfinite(v), np.nan, v)
    keys = np.array([d.year * 12 + d.month - 1 for d in dates])
    out = np.full((*v.shape[:-2], len(months), v.shape[-1]), np.nan, dtype=np.float32)
    for i, (year, month) in enumerate(months):
        sel = np.flatnonzero(keys == year * 12 + month - 1)
        if sel.size:
            chunk = v[..., sel, :]
            has = ~np.isnan(chunk).all(axis=-2)
            # nanmedian warns on all-NaN slices; those stay NaN and become missing below.
            med = np.nanmedian(np.where(has[..., None, :], chunk, 0.0), axis=-2)
            out[..., i, :] = np.where(has, med, np.nan)
    return to_missing(out)


def month_sequence(start: dt.date, n: int = 12) -> list[tuple[int, int]]:
    """``n`` consecutive (year, month) pairs starting at ``start``'s month."""
    k = start.year * 12 + start.month - 1
    return [((k + i) // 12, (k + i) % 12 + 1) for i in range(n)]


def mid_month_dates(months: Sequence[tuple[int, int]]) -> list[dt.date]:
    return [dt.date(y, m, 15) for y, m in months]


def tile_grid(height: int, width: int, tile: int) -> list[tuple[int, int]]:
    """Top-left corners of the non-overlapping ``tile`` x ``tile`` tiles that fit."""
    rows, cols = range(0, height - tile + 1, tile), range(0, width - tile + 1, tile)
    return [(r, c) for r in rows for c in cols]


def tiled_split(label_maps: Iterable[tuple[K, np.ndarray]], tile: int,
                load: Callable[[list[tuple[K, int, int]]], Batch],
                key_id: Callable[[K], object] = str) -> SplitData:
    """A segmentation split of the non-overlapping ``tile`` x ``tile`` tiles of label maps.

    Args:
        label_maps: ``(key, labels)`` per scene, ``labels`` ``[H, W]`` int class ids.
        tile: tile side in pixels.
        load: reads the samples ``(key, row, col)`` (top-left corner of a tile) as a batch.
        key_id: the key's name in the sample ids ``"<name>@<row>,<col>"``.

    Returns:
        the split with ``[N, tile, tile]`` int64 labels (``[0, tile, tile]`` when empty).
    """
    samples, labels = [], []
    for key, lab in label_maps:
        for r, c in tile_grid(*lab.shape, tile):
            samples.append((key, r, c))
            labels.append(lab[r : r + tile, c : c + tile])
    stacked = np.stack(labels).astype(np.int64) if labels else np.zeros((0, tile, tile), np.int64)
    ids = [f"{key_id(k)}@{r},{c}" for k, r, c in samples]
    return SplitData(stacked, lambda idx: load([samples[i] for i in idx]), ids)


def impute_pretraining_mean(
    modality: str, x: np.ndarray, bands: list[str]
) -> tuple[np.ndarray, list[str], list[str]]:
    """Complete every bandset that is partly present by adding its absent bands at the
    pretraining mean (normalized value 0.5). Opt-in only (a task must ask for it, and results
    record it): used for benchmarks whose sensor lacks one band of a bandset (e.g. GEO-Bench
    m-forestnet's 6 Landsat bands). Returns the new array, its band names and the imputed
    bands."""
    mod = get_modality(modality)
    lo, hi = band_affine(modality)
    have = {mod.band_index(b) for b in bands}
    add: list[int] = []
    for sl in mod.bandset_slices():
        chans = set(range(sl.start, sl.stop))
        if chans & have and not chans <= have:
            add.extend(sorted(chans - have))
    if not add:
        return x, list(bands), []
    fill = ((lo + hi) / 2)[add].astype(np.float32)
    valid = ~((x == MISSING_VALUE) | ~np.isfinite(x)).all(axis=-1, keepdims=True)
    extra = np.where(valid, fill, np.float32(MISSING_VALUE)).astype(np.float32)
    names = [mod.bands[i] for i in add]
    return np.concatenate([x, extra], axis=-1), list(bands) + names, names


def complete_bandsets(mod: str, x: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str]]:
    """Keep only the channels whose whole bandset is present.

    A bandset is tokenized as a whole, so a bandset with a band the dataset lacks cannot be
    given; dropping its other bands lets ``embed`` mask it (instead of zero-filling the gap).
    ``x`` is ``[..., C]`` with band names ``names``.
    """
    m = get_modality(mod)
    have = {m.band_index(b) for b in names}
    keep_chans: set[int] = set()
    for sl in m.bandset_slices():
        chans = set(range(sl.start, sl.stop))
        if chans <= have:
            keep_chans |= chans
    keep = [i for i, b in enumerate(names) if m.band_index(b) in keep_chans]
    if not keep:
        raise ValueError(f"{mod}: no complete bandset among {names}")
    return x[..., keep], [names[i] for i in keep]


def stratified_split(
    labels: np.ndarray, fractions: Sequence[float], seed: int
) -> list[np.ndarray]:
    """Split indices into parts with the given fractions, per class (labels ``[N]`` int;
    for other label kinds pass any ``[N]`` grouping). Each part is sorted."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    cum = np.cumsum(fractions)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = np.round(cum * idx.size).astype(int)
        start = 0
        for j, stop in enumerate(cuts):
            parts[j].append(idx[start:stop])
            start = stop
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts]

