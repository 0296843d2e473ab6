"""``geolatent data build``: windows over an area and a year -> pretraining sample files.

Output folder layout::

    samples/<sample window name>.h5   one file per 128 px sample (h5samples layout)
    windows/                          the run driver's work store (:class:`WorkStore`):
      store.json                        the store's format (``BUILD_STORE``)
      <window name>.json                the window's completion marker, written last, with its
                                        status, samples, warnings and the config fingerprint
    manifest.jsonl                    one line per sample file: path, latlon, per-modality presence
    build_summary.json                built / skipped / empty / failed windows with reasons
    .work/lock                        held while a build runs (one build per folder)

Resume is the run driver's one scheme (:mod:`geolatent.data.run`): a window is done when its
marker is in the store and names this config's fingerprint; a window of another fingerprint is
rebuilt (its old samples removed first). Files are written atomically (temp name, then rename)
and a build removes the temp files a killed one left. A folder of the earlier layout (markers in
``windows/`` without ``store.json``) is migrated in place: its markers already hold what the
store keeps, so the store adopts them (see :func:`open_build_store`). A scene that cannot be
read stops the build before any window is recorded when its source says ``on_bad_scene: fail``
(the default).

Each 256 px tile is materialized once and split into four 128 px samples. A sample is written
when it has valid data (in every ``required_modalities`` entry, or in any modality when none are
required); a window without any such sample is *empty* (done, nothing written). A window that
fails is reported with its reason and retried on the next run; the rest of the build goes on.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from geolatent.data.config import DataConfig
from geolatent.data.executor import ExecutorKind, WindowExecutor, make_executor
from geolatent.data.h5samples import write_sample
from geolatent.data.materialize import MaterializedWindow, WindowError, materialize_window
from geolatent.data.run import (
    STORE_FILE,
    OutputLock,
    WorkStore,
    check_writable,
    clean_temporaries,
    write_atomic,
    write_json_atomic,
)
from geolatent.data.sources import Scene, SceneProblem, Source, open_sources
from geolatent.data.window import Window, windows_from_bbox, windows_from_geojson
from geolatent.modalities import MAX_TIMESTEPS, MISSING_VALUE
from geolatent.units import Fix, check_values

WindowStatus = Literal["built", "empty", "failed", "skipped"]


# -- planning -----------------------------------------------------------------------------------
@dataclass
class WindowPlan:
    """One window of a build: the scenes each source will use, and whether it is already done."""

    window: Window
    scenes: dict[str, list[Scene]]
    done: bool = False

    def scene_ids(self) -> dict[str, list[str]]:
        """Source name -> ids (file names / STAC item ids) of the scenes the window will use."""
        return {name: [s.id for s in scenes] for name, scenes in self.scenes.items()}


@dataclass
class BuildPlan:
    """Everything a build will do, computed without reading pixels (what ``--dry-run`` shows)."""

    config: DataConfig
    sources: list[Source]
    windows: list[WindowPlan]
    problems: list[SceneProblem]

    def task(self, wp: WindowPlan) -> WindowTask:
        """The self-contained work item of one window (only its own scenes travel with it)."""
        restricted = [s.with_scenes(wp.scenes[s.name]) for s in self.sources]
        c = self.config
        return WindowTask(
            wp.window,
            restricted,
            c.output_dir,
            c.sample_size,
            list(c.required_modalities),
            c.fingerprint(),
            c.gdal_cache_mb,
        )


def config_windows(config: DataConfig) -> list[Window]:
    """The tiles of the configured area and time range."""
    kw: dict[str, Any] = dict(
        time_range=config.time_range,
        crs=config.area.crs,
        tile_size=config.tile_size,
        resolution=config.resolution_m,
    )
    if config.area.bbox is not None:
        return windows_from_bbox(config.area.bbox, **kw)
    assert config.area.geojson is not None
    return windows_from_geojson(config.area.geojson, **kw)


#: The build's work store format: windows/<name>.json markers holding the window's record.
BUILD_STORE = "data-build-v2"
STORE_DIR = "windows"


def build_store(output_dir: str | Path, *, create: bool = False) -> WorkStore:
    """The work store of a build's window markers, ``<output_dir>/windows``. Workers open it
    with ``create=False`` (the build prepared it: :func:`open_build_store`)."""
    return WorkStore(Path(output_dir) / STORE_DIR, BUILD_STORE, create=create)


def open_build_store(output_dir: str | Path) -> tuple[WorkStore, int]:
    """Prepare the store (the build holds the folder's lock) and migrate the earlier layout.

    Builds before the store kept the same ``windows/<name>.json`` markers without a
    ``store.json``; opening the store as is would discard them (another format) and leave
    their samples unlisted. Their markers are adopted instead: written by a finished window
    only, atomically, and holding the record the store keeps. Returns the store and how many
    markers were migrated (0 for a new or current folder).
    """
    root = Path(output_dir) / STORE_DIR
    migrated = 0
    if root.is_dir() and not (root / STORE_FILE).exists():
        clean_temporaries(root)
        for marker in root.glob("*.json"):
            try:
                ok = isinstance(json.loads(marker.read_text()).get("fingerprint"), str)
            except (OSError, ValueError, AttributeError):
                ok = False
            if not ok:
                raise ValueError(
                    f"{marker} is not a window record of a geolatent data build; output_dir "
                    f"{output_dir} holds other files there: choose another output_dir")
            migrated += 1
        write_json_atomic(root / STORE_FILE, {"fingerprint": BUILD_STORE})
    return build_store(output_dir, create=True), migrated


def _read_marker(store: WorkStore, name: str) -> dict | None:
    try:
        return store.get_record(name) if store.done(name) else None
    except (OSError, ValueError):
        return None


def _is_done(store: WorkStore, config: DataConfig, name: str) -> bool:
    marker = _read_marker(store, name)
    return (
        bool(marker)
        and marker.get("fingerprint") == config.fingerprint()
        and (marker.get("status") in ("built", "empty"))
    )


def plan_build(config: DataConfig, sources: list[Source] | None = None) -> BuildPlan:
    """Tile the area, index the sources and match scenes to windows (no pixel reads).

    Args:
        config: a validated :class:`~geolatent.data.config.DataConfig`.
        sources: already indexed sources (indexed from ``config.sources`` when None).
    """
    n_months = len(Window("EPSG:4326", (0, 0, 1, 1), config.time_range).months)
    if n_months > MAX_TIMESTEPS:
        raise ValueError(
            f"time range covers {n_months} months; pretraining samples hold at most "
            f"{MAX_TIMESTEPS} monthly timesteps"
        )
    sources = sources if sources is not None else open_sources(config.sources)
    store = build_store(config.output_dir)  # read only: a dry run writes nothing
    plans = []
    for w in config_windows(config):
        bbox = w.bounds_wgs84
        scenes = {s.name: s.scenes_for(w, bbox) for s in sources}
        plans.append(WindowPlan(w, scenes, _is_done(store, config, w.name)))
    problems = [p for s in sources for p in s.problems]
    return BuildPlan(config, sources, plans, problems)


# -- one window (runs in a worker) --------------------------------------------------------------
@dataclass
class WindowTask:
    """Everything a worker needs to build one window; small and picklable."""

    window: Window
    sources: list[Source]
    output_dir: str
    sample_size: int
    required_modalities: list[str]
    fingerprint: str
    gdal_cache_mb: int = 64


@dataclass
class WindowResult:
    """What happened to one window."""

    window: str
    status: WindowStatus
    reason: str = ""
    samples: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


def modality_presence(mw: MaterializedWindow) -> dict[str, dict[str, Any]]:
    """Per modality: any valid data, valid fraction, timesteps with data, bandsets with data."""
    out = {}
    for name, arr in mw.arrays.items():
        frac = mw.valid_fraction(name)
        out[name] = {
            "present": frac > 0,
            "valid_fraction": round(frac, 4),
            "present_timesteps": int((~mw.missing_timesteps[name]).sum()),
            "bandsets_present": mw.bandset_present(name).any(axis=0).tolist() if arr.size else [],
        }
    return out


def _usable(mw: MaterializedWindow, required: list[str]) -> bool:
    if required:
        return all(
            name in mw.arrays and (mw.arrays[name] != MISSING_VALUE).any() for name in required
        )
    return any((arr != MISSING_VALUE).any() for arr in mw.arrays.values())


def build_window(task: WindowTask) -> WindowResult:
    """Materialize one window, write its samples and its done-marker. Never raises: a failure
    becomes a ``failed`` result with the reason (naming the file when a scene is at fault)."""
    t0 = time.perf_counter()
    w = task.window
    out = Path(task.output_dir)
    try:
        store = build_store(out)
        stale = _read_marker(store, w.name)
        if stale:  # a rebuild (config changed or --overwrite): drop the old samples first
            store.forget(w.name)  # the marker first: the window is never half-present
            for rec in stale.get("samples", []):
                (out / rec["file"]).unlink(missing_ok=True)
        mw = materialize_window(w, task.sources, gdal_cache_mb=task.gdal_cache_mb)
        for m, arr in mw.arrays.items():  # units from the registry, before anything is written
            names = " / ".join(s.name for s in task.sources if s.modality == m)
            check_values(m, arr, what=f"window {w.name} ({m})", fix=Fix("config", source=names))
        records = []
        for r, c, sub in w.split(task.sample_size):
            crop = mw.crop(r, c, task.sample_size, task.sample_size)
            if not _usable(crop, task.required_modalities):
                continue
            rel = f"samples/{sub.name}.h5"
            write_sample(
                out / rel,
                crop.arrays,
                crop.timestamps,
                crop.latlon,
                crop.missing_timesteps,
                attrs={
                    "crs": sub.crs,
                    "pixel_bounds": list(sub.pixel_bounds),
                    "resolution": sub.resolution,
                    "window": w.name,
                },
            )
            records.append(
                {
                    "file": rel,
                    "window": w.name,
                    "crs": sub.crs,
                    "pixel_bounds": list(sub.pixel_bounds),
                    "latlon": [round(v, 6) for v in crop.latlon.tolist()],
                    "modalities": modality_presence(crop),
                }
            )
        status: WindowStatus = "built" if records else "empty"
        reason = ""
        if not records:
            used = {s.name: len(s.scenes) for s in task.sources}
            need = task.required_modalities or "any modality"
            reason = f"no sample has valid data in {need}; overlapping scenes per source: {used}"
        store.put(
            w.name,
            record={
                "window": w.to_dict(),
                "status": status,
                "reason": reason,
                "fingerprint": task.fingerprint,
                "samples": records,
                "scenes_used": mw.scenes_used,
                "warnings": mw.warnings,
            },
        )
        return WindowResult(w.name, status, reason, records, mw.warnings, time.perf_counter() - t0)
    except WindowError as e:
        return WindowResult(w.name, "failed", str(e), seconds=time.perf_counter() - t0)
    except Exception as e:  # anything else: report it, the build goes on
        reason = f"{type(e).__name__}: {e}"
        return WindowResult(w.name, "failed", reason, seconds=time.perf_counter() - t0)


# -- the whole build ----------------------------------------------------------------------------
@dataclass
class BuildSummary:
    """The outcome of a build: window names by status, failure reasons, counts."""

    output_dir: str
    built: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    samples_written: int = 0
    manifest: str = ""
    scene_problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _write_manifest(plan: BuildPlan, store: WorkStore) -> Path:
    """``manifest.jsonl`` over every done window of the plan (this run's and earlier ones')."""
    out = Path(plan.config.output_dir)
    lines = []
    for wp in plan.windows:
        marker = _read_marker(store, wp.window.name)
        if marker and marker.get("status") == "built":
            lines.extend(json.dumps(rec) for rec in marker.get("samples", []))
    text = "".join(line + "\n" for line in lines)
    return write_atomic(out / "manifest.jsonl", lambda p: p.write_text(text))


def _cleanup_temporaries(output_dir: Path) -> None:
    """Remove temporary files left by a killed earlier run (the build holds the folder's lock,
    so no other build is writing them)."""
    for sub in (".", "samples"):  # the store cleans its own folder when opened
        clean_temporaries(output_dir / sub)


def check_bad_scenes(plan: BuildPlan) -> None:
    """Refuse to build when a source with ``on_bad_scene: fail`` has a scene that could not be
    read (a zero-byte or truncated file): the windows it covers would be recorded as empty and
    done, and a rerun after repairing the file would skip them."""
    policy = {s.name: s.config.on_bad_scene for s in plan.sources}
    fatal = [p for p in plan.problems if policy.get(p.source, "fail") == "fail"]
    if fatal:
        listed = "\n".join(f"  {p}" for p in fatal[:10])
        more = f"\n  ... and {len(fatal) - 10} more" if len(fatal) > 10 else ""
        raise BadSceneError(
            f"{len(fatal)} scene(s) cannot be read and their source has on_bad_scene: fail; "
            f"repair or remove the file(s), or set on_bad_scene: skip:\n{listed}{more}"
        )


class BadSceneError(ValueError):
    """A scene could not be read and its source's policy is ``on_bad_scene: fail``."""


def build_dataset(
    config: DataConfig,
    *,
    executor: ExecutorKind | WindowExecutor = "process",
    workers: int | None = None,
    dask_address: str | None = None,
    dask_processes: bool = True,
    overwrite: bool = False,
    show_progress: bool = False,
    plan: BuildPlan | None = None,
) -> BuildSummary:
    """Build pretraining samples for every window of the configured area and time range.

    Args:
        config: validated data config (:func:`~geolatent.data.config.load_data_config`).
        executor: ``"process"`` (default), ``"dask"``, ``"serial"``, or any object with
            ``map_unordered(fn, items)`` / ``close()`` (see :mod:`geolatent.data.executor`).
        workers: number of worker processes / LocalCluster workers.
        dask_address: scheduler address for ``executor="dask"`` (a LocalCluster otherwise).
        dask_processes: LocalCluster workers as processes (True) or threads.
        overwrite: rebuild windows that are already done.
        show_progress: draw a rich progress bar.
        plan: a plan from :func:`plan_build` (computed when None).

    Returns:
        A :class:`BuildSummary`, also written to ``build_summary.json``; ``manifest.jsonl``
        lists every sample file of the done windows.
    """
    t0 = time.perf_counter()
    plan = plan or plan_build(config)
    check_bad_scenes(plan)
    out = Path(config.output_dir)
    check_writable(out, "output_dir")  # one line before the folder is made, not EROFS
    out.mkdir(parents=True, exist_ok=True)
    with OutputLock(out, "data build", option="output_dir"):
        _cleanup_temporaries(out)
        store, migrated = open_build_store(out)
        return _build_locked(plan, store, migrated, out, t0, executor, workers, dask_address,
                             dask_processes, overwrite, show_progress)


def _build_locked(plan: BuildPlan, store: WorkStore, migrated: int, out: Path, t0: float,
                  executor: ExecutorKind | WindowExecutor, workers: int | None,
                  dask_address: str | None, dask_processes: bool, overwrite: bool,
                  show_progress: bool) -> BuildSummary:
    """The part of :func:`build_dataset` that runs while holding the output folder's lock."""
    summary = BuildSummary(str(out), scene_problems=[str(p) for p in plan.problems])
    if migrated:
        summary.warnings.append(f"{migrated} window records of the earlier layout in "
                                f"{store.root} were adopted by the work store (migrated)")
    todo = [wp for wp in plan.windows if overwrite or not wp.done]
    summary.skipped = [wp.window.name for wp in plan.windows if wp.done and not overwrite]

    def record(result: WindowResult) -> None:
        if result.status == "built":
            summary.built.append(result.window)
            summary.samples_written += len(result.samples)
        elif result.status == "empty":
            summary.empty.append(result.window)
        else:
            summary.failed[result.window] = result.reason
        summary.warnings.extend(f"{result.window}: {w}" for w in result.warnings)

    own_executor = isinstance(executor, str)
    if todo:
        ex = (
            make_executor(executor, workers, dask_address, dask_processes)  # type: ignore[arg-type]
            if own_executor
            else executor
        )
        progress = _progress(show_progress, len(todo))
        try:
            tasks = (plan.task(wp) for wp in todo)
            for outcome in ex.map_unordered(build_window, tasks):
                if outcome.error is not None:
                    name = outcome.item.window.name
                    record(WindowResult(name, "failed", f"worker error: {outcome.error}"))
                else:
                    record(outcome.value)
                if progress is not None:
                    progress.update(
                        progress.task_ids[0],
                        advance=1,
                        description=f"built {len(summary.built)} · empty {len(summary.empty)}"
                        f" · failed {len(summary.failed)}",
                    )
        finally:
            if progress is not None:
                progress.stop()
            if own_executor:
                ex.close()  # type: ignore[union-attr]
    summary.manifest = str(_write_manifest(plan, store))
    summary.elapsed_s = round(time.perf_counter() - t0, 3)
    write_json_atomic(out / "build_summary.json", summary.to_dict())
    return summary


def _progress(enabled: bool, total: int) -> Any:
    if not enabled:
        return None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("[bold]windows[/bold] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    progress.add_task("", total=total)
    progress.start()
    return progress
