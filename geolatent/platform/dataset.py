"""Training data: labels -> checked windows -> materialized inputs and targets on disk.

:func:`prepare_training_data` runs the whole chain (read and check labels, class table,
windows, imagery check, spatial split, materialization through the data layer's executor) and
writes one sample per window into ``<work_dir>/windows/``::

    <stem>.target.npy   the window's target (see :func:`geolatent.platform.windows.build_target`)
    <stem>.h5           inputs in the sample-file layout (:mod:`geolatent.data.h5samples`)
    <stem>.json         the completion marker, written last (resume: the run driver's work
                        store, :mod:`geolatent.data.run`)
    index.json          windows, splits, class table and every reported problem

Every file is written atomically; one preparation per work folder at a time (a lock), and a
rerun removes the temp files of a killed one.

``<stem>`` is the window name plus a hash of its target and sources, so changed labels or
imagery never reuse a stale sample. :class:`WindowSamples` serves one split to training.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import shapely
import torch

from geolatent.data.executor import make_executor
from geolatent.data.h5samples import read_sample, write_sample
from geolatent.data.materialize import materialize_window
from geolatent.data.run import OutputLock, WorkStore, write_atomic
from geolatent.data.sources import Source, open_sources
from geolatent.data.window import Window
from geolatent.modalities import MISSING_VALUE, MODALITIES
from geolatent.platform.classes import IGNORE_INDEX, ClassTable, canonical_value
from geolatent.platform.config import FinetuneConfig
from geolatent.platform.labels import (
    LabelProblem,
    LabelSet,
    check_labels,
    empty_class_problems,
    read_labels,
)
from geolatent.platform.split import SPLITS, assign_splits, cross_split_overlaps
from geolatent.platform.windows import (
    CLASS_TASKS,
    LabelWindow,
    TargetSpec,
    build_target,
    check_imagery,
    make_label_windows,
)

INDEX_FILE = "index.json"


@dataclass
class WindowRecord:
    """One materialized training window.

    Attributes:
        stem: file stem under ``windows/``.
        split: ``train`` / ``val`` / ``test``.
        window: the window as :meth:`Window.to_dict`.
        labeled: labelled target pixels (1 for window tasks).
        bands: per modality the bands holding any valid value.
        timesteps: T of the window's inputs.
    """

    stem: str
    split: str
    window: dict
    labeled: int
    bands: dict[str, list[str]]
    timesteps: int


@dataclass
class PreparedData:
    """The result of :func:`prepare_training_data` (also stored as ``index.json``)."""

    root: Path
    task: str
    records: list[WindowRecord]
    classes: ClassTable | None
    problems: list[LabelProblem] = field(default_factory=list)
    target_mean: float = 0.0
    target_std: float = 1.0

    def split(self, name: str) -> list[WindowRecord]:
        return [r for r in self.records if r.split == name]

    def counts(self) -> dict[str, int]:
        return {s: len(self.split(s)) for s in SPLITS}

    def report(self) -> str:
        """Human-readable summary: windows per split and the problems, grouped by kind."""
        lines = [f"{len(self.records)} windows: " +
                 ", ".join(f"{k} {v}" for k, v in self.counts().items())]
        kinds: dict[str, list[LabelProblem]] = {}
        for p in self.problems:
            kinds.setdefault(p.kind, []).append(p)
        for kind, ps in kinds.items():
            lines.append(f"{kind}: {len(ps)}")
            lines += [f"  {p}" for p in ps[:5]]
            if len(ps) > 5:
                lines.append(f"  ... and {len(ps) - 5} more")
        return "\n".join(lines)


# -- one window (runs in an executor worker) ----------------------------------------------------
@dataclass
class WindowJob:
    """Everything a worker needs to materialize one training window (small, picklable)."""

    window: Window
    sources: list[Source]
    target: TargetSpec
    out_dir: str
    stem: str
    gdal_cache_mb: int = 64


#: The work store of the materialized windows: ``<stem>.json`` marks a window complete.
WINDOW_STORE = "training-windows-v1"


def materialize_job(job: WindowJob) -> dict:
    """Materialize one window and write its target and inputs; skip it when already done.

    Returns ``{"status": "built" | "done" | "no_input" | "no_label", ...summary}``.
    """
    out = Path(job.out_dir)
    h5_path, target_path = out / f"{job.stem}.h5", out / f"{job.stem}.target.npy"
    store = WorkStore(out, WINDOW_STORE, create=False)  # prepared by prepare_training_data
    if store.done(job.stem):
        return {"status": "done", **store.get_record(job.stem)}
    # The target first: it is cheap, and a window whose labels only graze it (no labelled
    # pixel) is not worth reading imagery for.
    target = build_target(job.window, job.target)
    labeled = int((target != IGNORE_INDEX).sum()) if target.dtype.kind in "iu" \
        else int(np.isfinite(target).sum())
    if labeled == 0:
        return {"status": "no_label"}
    mw = materialize_window(job.window, job.sources, gdal_cache_mb=job.gdal_cache_mb)
    arrays = {m: a for m, a in mw.arrays.items() if MODALITIES[m].encoder_input}
    if not any((a != MISSING_VALUE).any() for a in arrays.values()):
        return {"status": "no_input", "warnings": mw.warnings}
    bands = {m: [b for b, ok in zip(MODALITIES[m].bands, (a != MISSING_VALUE).any(axis=(0, 1, 2)),
                                    strict=True) if ok] for m, a in arrays.items()}
    summary = {"labeled": labeled, "bands": bands,
               "timesteps": int(mw.timestamps.shape[0])}
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(target_path, lambda p: _save_npy(p, target))
    write_sample(h5_path, arrays, mw.timestamps, mw.latlon,
                 {m: mw.missing_timesteps[m] for m in arrays},
                 attrs={"summary": json.dumps(summary), "window": json.dumps(mw.window.to_dict())})
    store.put(job.stem, None, summary)  # the marker last: the window is complete
    return {"status": "built", **summary}


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array)


# -- preparing the whole set --------------------------------------------------------------------
def load_label_set(cfg: FinetuneConfig) -> tuple[LabelSet, list[LabelProblem]]:
    """Read and check the configured labels."""
    lc = cfg.labels
    if lc is None:
        raise ValueError(f"task {cfg.task!r} needs labels")
    kind = "class" if cfg.task in CLASS_TASKS else "value"
    labels = read_labels(lc.path, kind=kind, format=lc.format, field=lc.field,  # type: ignore[arg-type]
                         time_column=lc.time_column, end_time_column=lc.end_time_column,
                         split_field=lc.split_field, layer=lc.layer, lat_field=lc.lat_field,
                         lon_field=lc.lon_field, csv_crs=lc.csv_crs)
    return check_labels(labels, ignore_values=lc.ignore_values, repair_invalid=lc.repair_invalid)


def class_table_for(cfg: FinetuneConfig, labels: LabelSet) -> ClassTable:
    """The class table: declared order or the values present; names from the file then config."""
    lc = cfg.labels
    assert lc is not None
    names = dict(labels.class_names)
    names |= {canonical_value(k): v for k, v in (lc.class_names or {}).items()}
    values = list(labels.values)
    if lc.background is not None:
        values.append(lc.background)
    return ClassTable.from_values(values, order=lc.classes, names=names, colors=lc.colors)


def _target_specs(cfg: FinetuneConfig, labels: LabelSet, windows: list[LabelWindow],
                  classes: ClassTable | None) -> list[TargetSpec]:
    if classes is not None:
        targets = classes.indices(labels.values).astype(np.float64)
    else:
        targets = labels.values.astype(np.float64)
    background = None
    if classes is not None and cfg.labels.background is not None:
        background = int(classes.indices([cfg.labels.background])[0])
    specs = []
    for lw in windows:
        geoms = labels.geometries[lw.labels]
        specs.append(TargetSpec(
            task=cfg.task,
            shapes_wkb=tuple(shapely.to_wkb(geoms)),
            values=tuple(float(v) for v in targets[lw.labels]),
            extent_wkb=None if lw.extent is None else shapely.to_wkb(lw.extent),
            background=background,
        ))
    return specs


def _stem(lw: LabelWindow, spec: TargetSpec, sources_key: str) -> str:
    h = hashlib.sha256(repr((spec, sources_key)).encode()).hexdigest()[:10]
    return f"{lw.window.name}-{h}"


def _explicit_splits(labels: LabelSet, windows: list[LabelWindow]) -> np.ndarray:
    """Split of each window from the labels' split column (the first labelled split)."""
    out = np.empty(len(windows), dtype=object)
    for k, lw in enumerate(windows):
        names = [s for s in labels.splits[lw.labels] if s in SPLITS]  # type: ignore[index]
        out[k] = names[0] if names else "train"
    return out


def prepare_training_data(
    cfg: FinetuneConfig,
    *,
    sources: Sequence[Source] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PreparedData:
    """Labels -> materialized training windows under ``cfg.resolved_work_dir()``.

    Every dropped label or window is reported in ``PreparedData.problems`` (and in
    ``index.json``). Windows already materialized by an earlier run are reused.

    Raises:
        LabelError: no usable label at all.
        ValueError: no window survives (all outside the imagery, ...), with the reasons.
    """
    root = cfg.resolved_work_dir()
    labels, problems = load_label_set(cfg)
    classes = None
    if cfg.task in CLASS_TASKS:
        classes = class_table_for(cfg, labels)
        idx = classes.indices(labels.values)
        for i in np.flatnonzero(idx == IGNORE_INDEX):
            problems.append(LabelProblem("unknown_class", int(labels.rows[i]),
                                         f"class {labels.values[i]!r} is not among the declared "
                                         f"classes {list(classes.values)}"))
        labels = labels.subset(idx != IGNORE_INDEX)
        declared = [v for v in classes.values if v != cfg.labels.background]
        problems += empty_class_problems(labels.values, declared)

    windows, wproblems = make_label_windows(
        labels, cfg.task, size_px=cfg.windows.size_px,  # type: ignore[arg-type]
        default_time_range=cfg.windows.time_range, instant_months=cfg.windows.instant_months,
        crs=cfg.windows.crs, resolution=cfg.windows.resolution_m,
        keep_unlabelled_task_tiles=cfg.labels.background is not None,  # type: ignore[union-attr]
    )
    problems += wproblems
    srcs = list(sources) if sources is not None else open_sources(cfg.all_sources())
    for s in srcs:
        problems += [LabelProblem("scene_problem", -1, str(p), "warning") for p in s.problems]
    keep, iproblems = check_imagery(windows, srcs)
    problems += iproblems
    windows = [w for w, k in zip(windows, keep, strict=True) if k]
    if not windows:
        raise ValueError("no training window overlaps the imagery:\n" +
                         "\n".join(str(p) for p in problems[-10:]))

    if labels.splits is not None:
        splits = _explicit_splits(labels, windows)
    else:
        splits = assign_splits([w.window for w in windows], cell_size_m=cfg.split.cell_size_m,
                               fractions=cfg.split.fractions, seed=cfg.split.seed)
    keep, oproblems = cross_split_overlaps([w.window for w in windows], splits)
    problems += oproblems
    windows = [w for w, k in zip(windows, keep, strict=True) if k]
    for w, s in zip(windows, splits[keep], strict=True):
        w.split = str(s)

    specs = _target_specs(cfg, labels, windows, classes)
    sources_key = json.dumps([s.config.model_dump(mode="json") for s in srcs], sort_keys=True)
    out_dir = root / "windows"
    jobs = []
    for lw, spec in zip(windows, specs, strict=True):
        scenes = {s.name: s.scenes_for(lw.window) for s in srcs}
        jobs.append(WindowJob(lw.window, [s.with_scenes(scenes[s.name]) for s in srcs], spec,
                              str(out_dir), _stem(lw, spec, sources_key)))
    by_stem = {j.stem: lw for j, lw in zip(jobs, windows, strict=True)}
    records: list[WindowRecord] = []
    held = contextlib.ExitStack()  # one preparation per work folder; released in the finally
    held.enter_context(OutputLock(root, "fine-tuning window preparation"))
    WorkStore(out_dir, WINDOW_STORE)  # creates it, removes a killed run's temp files
    try:
        ex = make_executor(cfg.executor.kind, cfg.executor.workers, cfg.executor.address)
    except BaseException:
        held.close()
        raise
    try:
        for n, outcome in enumerate(ex.map_unordered(materialize_job, jobs), start=1):
            job: WindowJob = outcome.item
            lw = by_stem[job.stem]
            res = outcome.value or {}
            if outcome.error is not None:
                problems.append(LabelProblem("window_failed", -1,
                                             f"window {job.window.name}: {outcome.error}"))
            elif res["status"] == "no_input":
                problems.append(LabelProblem(
                    "no_valid_input", -1, f"window {job.window.name} ({len(lw.labels)} labels): "
                    "the imagery has no valid pixel there (outside scenes, nodata or clouds)"))
            elif res["status"] == "no_label":
                problems.append(LabelProblem("no_label", -1, f"window {job.window.name}: no "
                                             "labelled pixel after rasterizing", "warning"))
            else:
                records.append(WindowRecord(job.stem, lw.split, job.window.to_dict(),
                                            res["labeled"], res["bands"], res["timesteps"]))
            if progress is not None:
                progress(n, len(jobs))
    finally:
        ex.close()
        held.close()
    records.sort(key=lambda r: r.stem)
    if not records:
        raise ValueError("no training window could be materialized:\n" +
                         "\n".join(str(p) for p in problems[-10:]))

    data = PreparedData(root, cfg.task, records, classes, problems)
    if classes is not None:
        train_idx = [int(v) for r in data.split("train") for v in _window_classes(data, r)]
        present = {classes.values[i] for i in set(train_idx)}
        for v in classes.values:
            if v not in present:
                problems.append(LabelProblem("empty_class", -1, f"class {v!r} "
                                             f"({classes.names[classes.values.index(v)]}) has no "
                                             "label in the training split", "warning"))
    else:
        vals = np.concatenate([_valid_values(load_target(data, r)) for r in data.split("train")]
                              or [np.zeros(1)])
        data.target_mean = float(vals.mean())
        data.target_std = float(vals.std()) or 1.0
    write_index(data)
    return data


def load_target(data: PreparedData, rec: WindowRecord) -> np.ndarray:
    return np.load(data.root / "windows" / f"{rec.stem}.target.npy")


def _valid_values(t: np.ndarray) -> np.ndarray:
    t = t.astype(np.float64).ravel()
    return t[np.isfinite(t)]


def _window_classes(data: PreparedData, rec: WindowRecord) -> np.ndarray:
    t = load_target(data, rec).ravel()
    return np.unique(t[t != IGNORE_INDEX])


def write_index(data: PreparedData) -> Path:
    """Write ``index.json`` atomically."""
    payload = {
        "task": data.task,
        "records": [asdict(r) for r in data.records],
        "classes": data.classes.to_dict() if data.classes else None,
        "problems": [asdict(p) for p in data.problems],
        "target_mean": data.target_mean,
        "target_std": data.target_std,
    }
    text = json.dumps(payload, indent=1, default=str)
    return write_atomic(data.root / INDEX_FILE, lambda p: p.write_text(text))


# -- serving a split to training ----------------------------------------------------------------
class WindowSamples(torch.utils.data.Dataset):
    """The windows of one split: ``(arrays {m: [H, W, T, C]}, timestamps [T, 3], target)``.

    Windows are read from disk on access (memory stays bounded by the batch), or all at once
    with ``preload`` (small sets: faster epochs).
    """

    def __init__(self, data: PreparedData, split: str, modalities: Sequence[str],
                 preload: bool = False):
        self.data = data
        self.records = data.split(split)
        self.modalities = list(modalities)
        self._cache = [self._read(i) for i in range(len(self.records))] if preload else None

    def __len__(self) -> int:
        return len(self.records)

    def _read(self, i: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        rec = self.records[i]
        s = read_sample(self.data.root / "windows" / f"{rec.stem}.h5", self.modalities)
        return s["arrays"], s["timestamps"], load_target(self.data, rec)

    def __getitem__(self, i: int):
        return self._cache[i] if self._cache is not None else self._read(i)
