"""Fine-tuning: a pretrained encoder plus a task head, trained on materialized label windows.

Recipe: the encoder is frozen for the first ``freeze_epochs`` (only the head learns, on stable
features), then unfrozen at ``lr * encoder_lr_scale`` while the head keeps ``lr``. AdamW,
ReduceLROnPlateau on the validation loss, gradient clipping, class-weighted losses against
imbalance, random crops and dihedral flips. Every epoch is validated; the best epoch (by the
selection metric) is saved in ``output``'s ``.work`` area as soon as it is reached, so an
interrupted run still leaves its best model there, never an unfinished one at ``output``
(:mod:`geolatent.platform.bundle`). The test split, when there
is one, is scored once with the best weights.

Resume: at the end of every epoch the whole training state (model, optimizer, schedule, RNG
states, best so far) is checkpointed in the same ``.work`` area
(:mod:`geolatent.platform.training_state`); a rerun with the same config continues from the
last finished epoch and ends with the same weights and metrics as an uninterrupted run. A rerun
with another config is an error naming what changed; ``restart=True`` (``--restart``) starts
over.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from geolatent import runtime
from geolatent.augment import dihedral
from geolatent.data.run import clean_temporaries, work_dir_for
from geolatent.data.sources import open_sources
from geolatent.modalities import MISSING_VALUE, get_modality
from geolatent.model import build_model, load_model
from geolatent.model.config import SIZES, ModelConfig
from geolatent.model.encoder import Encoder
from geolatent.platform.bundle import (
    FinetunedModel,
    InputSpec,
    TaskSpec,
    check_model_output,
    save_bundle,
    unfinished_model_dir,
)
from geolatent.platform.classes import IGNORE_INDEX, ClassTable
from geolatent.platform.config import FinetuneConfig
from geolatent.platform.dataset import (
    PreparedData,
    WindowSamples,
    load_target,
    prepare_training_data,
)
from geolatent.platform.encoder_inputs import EncoderBatch, prepare_batch
from geolatent.platform.heads import HeadSpec, TaskModel, build_head
from geolatent.platform.metrics import (
    HIGHER_IS_BETTER,
    RegressionSums,
    confusion_matrix,
    metrics_from_confusion,
)
from geolatent.platform.training_state import (
    Progress,
    checkpoint_path,
    resume_training,
    save_checkpoint,
    training_fingerprint,
)
from geolatent.platform.windows import CLASS_TASKS, PIXEL_TASKS
from geolatent.runtime import resolve_device
from geolatent.supervised import task_loss
from geolatent.units import Fix, check_bandsets, check_source_files, check_values

Log = Callable[[str], None]
DEFAULT_METRIC = {"classification": "accuracy", "segmentation": "miou", "regression": "rmse",
                  "pixel_regression": "rmse"}
PRELOAD_BYTES = 512 * 2**20
"""Training sets below this size are read into memory once; larger ones are read per batch."""


def load_encoder(spec: str) -> tuple[Encoder, ModelConfig]:
    """The encoder of a checkpoint folder (anything :func:`geolatent.load_model` accepts), or a
    random one of a size name (``nano`` ...: for tests and smoke runs)."""
    model = build_model(spec) if spec in SIZES else load_model(spec)
    return model.encoder, model.config


def head_spec_for(task: str, dim: int, num_classes: int, modalities: Sequence[str],
                  hidden: int | None, dropout: float) -> HeadSpec:
    out = num_classes if task in CLASS_TASKS else 1
    if task in PIXEL_TASKS:
        return HeadSpec("pixel", dim, out, hidden or 64, list(modalities), dropout)
    return HeadSpec("pooled", dim, out, hidden or 0, [], dropout)


# -- batches ------------------------------------------------------------------------------------
def fit_array(a: np.ndarray, size: tuple[int, int], offset: tuple[int, int], fill) -> np.ndarray:
    """Crop / pad ``a`` ``[H, W, ...]`` to ``size`` starting at ``offset`` (negative = pad)."""
    out = np.full((*size, *a.shape[2:]), fill, dtype=a.dtype)
    r0, c0 = offset
    sr0, sc0 = max(r0, 0), max(c0, 0)
    sr1, sc1 = min(r0 + size[0], a.shape[0]), min(c0 + size[1], a.shape[1])
    if sr1 > sr0 and sc1 > sc0:
        out[sr0 - r0 : sr1 - r0, sc0 - c0 : sc1 - c0] = a[sr0:sr1, sc0:sc1]
    return out


def collate(
    items: Sequence[tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]],
    *,
    task: str,
    crop: int,
    patch_size: int,
    train: bool,
    rng: np.random.Generator,
    modalities: Sequence[str],
    config=None,
) -> tuple[EncoderBatch, torch.Tensor]:
    """Stack windows into a normalized batch and targets.

    Training takes a random ``crop`` (padded with missing values when the window is smaller)
    and a random flip / rotation; evaluation takes the centre crop for window tasks and the
    whole window (padded to a multiple of p) for pixel tasks. Timesteps are padded to the
    batch's longest with missing values.
    """
    pixel = task in PIXEL_TASKS
    t_max = max(ts.shape[0] for _, ts, _ in items)
    arrays: dict[str, list[np.ndarray]] = {m: [] for m in modalities}
    stamps, targets = [], []
    for inputs, ts, target in items:
        h, w = next(iter(inputs.values())).shape[:2]
        if train or not pixel:
            size = (crop, crop)
            if train:
                off = tuple(int(rng.integers(0, n - crop + 1)) if n > crop else -((crop - n) // 2)
                            for n in (h, w))
            else:
                off = ((h - crop) // 2, (w - crop) // 2)
        else:
            size = (math.ceil(h / patch_size) * patch_size, math.ceil(w / patch_size) * patch_size)
            off = (0, 0)
        k = int(rng.integers(0, 8)) if train else 0
        for m in modalities:
            a = inputs.get(m)
            if a is None:
                c = get_modality(m).num_bands
                a = np.full((h, w, ts.shape[0], c), MISSING_VALUE, np.float32)
            a = fit_array(a, size, off, MISSING_VALUE)  # type: ignore[arg-type]
            if a.shape[2] < t_max:
                pad = np.full((*a.shape[:2], t_max - a.shape[2], a.shape[3]), MISSING_VALUE,
                              np.float32)
                a = np.concatenate([a, pad], axis=2)
            arrays[m].append(dihedral(a, k, axes=(0, 1)))
        ts = np.concatenate([ts, np.repeat(ts[-1:], t_max - ts.shape[0], axis=0)]) \
            if ts.shape[0] < t_max else ts
        stamps.append(ts)
        if pixel:
            fill = IGNORE_INDEX if target.dtype.kind in "iu" else np.nan
            # A label where no input has a value teaches "no data -> this class": never used.
            target = np.where(imagery_mask(inputs, target.shape), target, fill)
            targets.append(dihedral(fit_array(target, size, off, fill), k, axes=(0, 1)))  # type: ignore[arg-type]
        else:
            targets.append(target.reshape(-1)[:1])
    batch = prepare_batch({m: np.stack(v) for m, v in arrays.items()}, np.stack(stamps),
                          patch_size, modalities, config=config)
    y = torch.as_tensor(np.stack(targets))
    return batch, (y if pixel else y[:, 0])


def imagery_mask(inputs: dict[str, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """bool ``[H, W]``: pixels where some modality, timestep and band holds a valid value
    (not -99999, finite). ``inputs``: ``{modality: [H, W, T, C]}``; ``shape`` is ``(H, W)``."""
    out = np.zeros(shape[:2], dtype=bool)
    for a in inputs.values():
        out |= ((a != MISSING_VALUE) & np.isfinite(a)).any(axis=(2, 3))
    return out


# -- coverage: what the labels really train and score on ----------------------------------------
@dataclass
class Coverage:
    """Per split, labelled pixels used and dropped; windows skipped for too little imagery.

    ``splits[name]`` holds ``windows`` (used), ``labelled_pixels`` (labelled pixels with
    imagery: the only ones reaching a loss or a metric), ``dropped_no_imagery`` (labelled pixels
    without any valid input, in used windows) and ``skipped_windows`` (windows below
    ``windows.min_imagery_fraction``, whose labelled pixels are not counted above). For window
    tasks a window is one labelled sample, dropped when its centre pixel has no imagery.
    """

    splits: dict[str, dict[str, int]]
    skipped: list[dict]
    warnings: list[str]
    kept: list[str]

    def summary(self) -> str:
        lines = ["labelled pixels used (dropped: no imagery) per split: " + ", ".join(
            f"{k} {v['labelled_pixels']} ({v['dropped_no_imagery']})"
            for k, v in self.splits.items())]
        if self.skipped:
            lines.append(f"{len(self.skipped)} windows skipped (imagery below the minimum "
                         "share, windows.min_imagery_fraction):")
            lines += [f"  {w['window']} ({w['split']}): {w['imagery_fraction']:.0%} imagery, "
                      f"{w['labelled_pixels']} labelled pixels" for w in self.skipped[:10]]
            if len(self.skipped) > 10:
                lines.append(f"  ... and {len(self.skipped) - 10} more (see report.json)")
        lines += [f"warning: {w}" for w in self.warnings[:5]]
        return "\n".join(lines)


def inspect_windows(data: PreparedData, modalities: Sequence[str], *, task: str,
                    min_imagery_fraction: float, check_units: bool = True,
                    source_names: dict[str, str] | None = None) -> Coverage:
    """Read every materialized window once: check its units (:mod:`geolatent.units`, before
    any training) and count what the labels will really train and score on.
    ``source_names``: modality -> the config source(s) feeding it (named in unit hints).

    Raises:
        UnitError: a window's values are in the wrong units (the message names the window).
    """
    from geolatent.data.h5samples import read_sample

    splits = {s: {"windows": 0, "labelled_pixels": 0, "dropped_no_imagery": 0,
                  "skipped_windows": 0} for s in ("train", "val", "test")}
    skipped, warnings, kept = [], [], []
    seen: dict[tuple[str, int], bool] = {}  # (modality, bandset) -> valid somewhere
    n_inf: dict[str, int] = {}  # modality -> infinite values (missing data, counted)
    pixel = task in PIXEL_TASKS
    for rec in data.records:
        sample = read_sample(data.root / "windows" / f"{rec.stem}.h5", list(modalities))
        arrays = sample["arrays"]
        target = load_target(data, rec)
        if check_units:
            for m, a in arrays.items():
                fix = Fix("config", source=(source_names or {}).get(m, m))
                check_values(m, a, fix=fix, what=f"window {rec.window.get('name', rec.stem)} ({m})")
                n_inf[m] = n_inf.get(m, 0) + int(np.isinf(a).sum())
                for k, sl in enumerate(get_modality(m).bandset_slices()):
                    seen[(m, k)] = seen.get((m, k), False) or bool(
                        ((a[..., sl] != MISSING_VALUE) & np.isfinite(a[..., sl])).any())
        hw = next(iter(arrays.values())).shape[:2] if arrays else target.shape[:2]
        mask = imagery_mask(arrays, hw)
        if pixel:
            labelled = target != IGNORE_INDEX if target.dtype.kind in "iu" else np.isfinite(target)
            n_lab, n_ok = int(labelled.sum()), int((labelled & mask).sum())
        else:
            n_lab, n_ok = 1, int(mask[hw[0] // 2, hw[1] // 2])
        row = splits[rec.split]
        fraction = float(mask.mean()) if mask.size else 0.0
        if fraction < min_imagery_fraction or n_ok == 0:
            row["skipped_windows"] += 1
            skipped.append({"window": rec.window.get("name", rec.stem), "split": rec.split,
                            "imagery_fraction": round(fraction, 4), "labelled_pixels": n_lab})
            continue
        row["windows"] += 1
        row["labelled_pixels"] += n_ok
        row["dropped_no_imagery"] += n_lab - n_ok
        kept.append(rec.stem)
    for (m, k), ok in seen.items():  # one line per bandset, not one per window
        if not ok:
            warnings.append(f"{m} bandset {list(get_modality(m).bandsets[k])} has no valid "
                            "value in any window: its tokens are masked everywhere")
    warnings += [f"{m}: {n} infinite values in the windows are treated as missing data"
                 for m, n in n_inf.items() if n]
    return Coverage(splits, skipped, warnings, kept)


def prepare_checked(cfg: FinetuneConfig, *,
                    progress: Callable[[int, int], None] | None = None,
                    log: Callable[[str], None] | None = None) -> PreparedData:
    """:func:`prepare_training_data` after checking the source files' metadata (product level,
    band descriptions against ``bands:``; :func:`geolatent.units.check_source_files`)."""
    from geolatent.data.stac_api import StacApiSource

    sources = open_sources(cfg.all_sources())
    # STAC API sources find their scenes (and bands) per window, later: checked as they read.
    indexed = [s for s in sources if not isinstance(s, StacApiSource)]
    for src in indexed:
        if not src.scenes and not src.problems:  # would only give "no window overlaps"
            where = getattr(src.config, "paths", None) or getattr(src.config, "catalog", "")
            raise ValueError(f"source {src.name!r} has no scene: nothing matches {where}; "
                             "check the paths in `sources:`")
    for note in check_bandsets(indexed):
        (log or print)(f"note: {note}")
    check_source_files(indexed)
    return prepare_training_data(cfg, sources=sources, progress=progress)


def config_source_names(cfg: FinetuneConfig) -> dict[str, str]:
    """modality -> the names of the config's sources feeding it (for hints)."""
    names: dict[str, list[str]] = {}
    for s in cfg.all_sources():
        names.setdefault(s.modality, []).append(s.name)
    return {m: " / ".join(v) for m, v in names.items()}


REPORT_FILE = "report.json"


def write_finetune_report(path: Path, payload: dict) -> Path:
    """Write ``payload`` as JSON atomically (a reader never sees half a report)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str))
    os.replace(tmp, path)
    return path


class TrainingError(ValueError):
    """Training cannot go on (a non-finite loss); the message names the cause."""


def _nan_loss_cause(items, stems: Sequence[str], loss: float, epoch: int, lr: float) -> str:
    bad = []
    for (inputs, _, target), stem in zip(items, stems, strict=True):
        for m, a in inputs.items():
            n = int((~np.isfinite(a)).sum())
            if n:
                bad.append(f"window {stem}: {n} non-finite {m} values")
        if target.dtype.kind == "f" and np.isinf(target).any():
            bad.append(f"window {stem}: infinite target values")
    where = f"training loss is {loss} at epoch {epoch + 1} (windows {', '.join(stems)})"
    if bad:
        return f"{where}: " + "; ".join(bad) + ": mask them as nodata (`nodata:` on the source)"
    return (f"{where}: the inputs and targets are finite, so the optimization diverged; lower "
            f"train.lr (now {lr:g}) or train.grad_clip")


# -- losses and weights -------------------------------------------------------------------------
def class_weights(data: PreparedData, classes: ClassTable, mode: str) -> torch.Tensor | None:
    """Per-class loss weights from training-label frequencies (mean 1 over present classes)."""
    if mode == "none":
        return None
    counts = np.zeros(classes.num_classes, dtype=np.float64)
    for rec in data.split("train"):
        t = load_target(data, rec).ravel()
        t = t[t != IGNORE_INDEX].astype(np.int64)
        counts += np.bincount(t, minlength=classes.num_classes)[: classes.num_classes]
    present = counts > 0
    w = np.zeros_like(counts)
    w[present] = 1.0 / counts[present] if mode == "balanced" else 1.0 / np.sqrt(counts[present])
    w[present] /= w[present].mean()
    return torch.as_tensor(w, dtype=torch.float32)


# -- evaluation ---------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: TaskModel, samples: WindowSamples, *, task: str, crop: int, patch_size: int,
             batch_size: int, device: torch.device, classes: ClassTable | None, mean: float,
             std: float, weight: torch.Tensor | None = None) -> dict:
    """Loss and task metrics of ``model`` on a split (running sums; bounded memory)."""
    model.eval()
    rng = np.random.default_rng(0)
    k = classes.num_classes if classes else 0
    cm = np.zeros((k, k), dtype=np.int64)
    reg = RegressionSums()
    loss_sum, loss_n = 0.0, 0
    for s in range(0, len(samples), batch_size):
        items = [samples[i] for i in range(s, min(s + batch_size, len(samples)))]
        batch, y = collate(items, task=task, crop=crop, patch_size=patch_size, train=False,
                           rng=rng, modalities=samples.modalities,
                           config=model.encoder.model_config)
        out = model(batch.to(device)).float().cpu()
        loss = task_loss(task, out, y, ignore_index=IGNORE_INDEX, class_weight=weight,
                         target_mean=mean, target_std=std)
        if loss is not None:
            loss_sum += float(loss) * len(items)
            loss_n += len(items)
        if task in CLASS_TASKS:
            cm += confusion_matrix(y.numpy(), out.argmax(1).numpy(), k)
        else:
            pred = (out[:, 0] if out.ndim == 4 else out.reshape(-1)).numpy() * std + mean
            reg.add(y.numpy(), pred)
    metrics = metrics_from_confusion(cm, classes.names) if classes else reg.metrics()
    metrics["loss"] = loss_sum / loss_n if loss_n else float("nan")
    return metrics


# -- training -----------------------------------------------------------------------------------
@dataclass
class FinetuneResult:
    """What :func:`finetune` produced."""

    bundle_path: str
    best_epoch: int
    best_metric: float
    metric: str
    history: list[dict] = field(default_factory=list)
    val: dict = field(default_factory=dict)
    test: dict = field(default_factory=dict)
    data: PreparedData | None = None
    seconds: float = 0.0


def _modalities_with_data(data: PreparedData, supported: Sequence[str]) -> tuple[list[str], dict]:
    bands: dict[str, set[str]] = {}
    for r in data.records:
        for m, bs in r.bands.items():
            bands.setdefault(m, set()).update(bs)
    mods = [m for m in supported if bands.get(m)]
    if not mods:
        raise ValueError(f"the training windows hold no input the encoder supports "
                         f"({list(supported)}); got {sorted(bands)}")
    order = {m: list(get_modality(m).bands) for m in mods}
    return mods, {m: [b for b in order[m] if b in bands[m]] for m in mods}


def _is_better(metric: str, new: float, best: float | None) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(new)
    return new > best if HIGHER_IS_BETTER.get(metric, True) else new < best


def finetune(
    cfg: FinetuneConfig,
    *,
    log: Log | None = None,
    data: PreparedData | None = None,
    progress: Callable[[int, int], None] | None = None,
    restart: bool = False,
) -> FinetuneResult:
    """Prepare the data (unless given), fine-tune, and write the model folder ``cfg.output``.

    A run interrupted earlier (its checkpoint in ``cfg.output``'s ``.work`` area) is resumed
    from its last finished epoch when the config is the same (the log says "resumed at epoch
    k"), and gives the weights and metrics an uninterrupted run gives.

    Args:
        cfg: a validated :class:`~geolatent.platform.config.FinetuneConfig`.
        log: receives one line per epoch and the data report.
        data: already prepared training data (skips :func:`prepare_training_data`).
        progress: ``(windows_done, windows_total)`` while materializing.
        restart: discard an interrupted run's checkpoint and start from epoch 1.

    Raises:
        ResumeError: an interrupted run of another config is in ``cfg.output``; the message
            names what changed (rerun with the same config, or ``restart=True``).
    """
    t_start = time.perf_counter()
    say = log or (lambda _msg: None)
    check_model_output(cfg.output, "output:")  # before any work: never over the user's files
    tc = cfg.train
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    data = data or prepare_checked(cfg, progress=progress)
    say(data.report())
    device = resolve_device(tc.device, "train.device")
    encoder, model_cfg = load_encoder(cfg.encoder)
    mods, bands = _modalities_with_data(data, [m for m in model_cfg.modalities
                                               if get_modality(m).encoder_input])
    coverage = inspect_windows(data, mods, task=cfg.task,
                               min_imagery_fraction=cfg.windows.min_imagery_fraction,
                               source_names=config_source_names(cfg))
    say(coverage.summary())
    kept = set(coverage.kept)
    data = dataclasses.replace(data, records=[r for r in data.records if r.stem in kept])
    classes = data.classes
    spec = head_spec_for(cfg.task, model_cfg.embedding_size, classes.num_classes if classes else 1,
                         mods, tc.head_hidden, tc.dropout)
    model = TaskModel(encoder, build_head(spec), spec).to(device)
    p, crop = tc.patch_size, cfg.crop_size
    timesteps = max((r.timesteps for r in data.records), default=1)
    fm = FinetunedModel(
        model=model,
        task=TaskSpec(cfg.task, data.target_mean, data.target_std, cfg.labels.field or "value"),
        inputs=InputSpec(mods, bands, p, crop, cfg.windows.size_px, cfg.windows.resolution_m,
                         timesteps),
        model_config=model_cfg,
        classes=classes,
        sources=[s.model_dump(mode="json") for s in cfg.all_sources()],
        extra={"encoder": cfg.encoder, "encoder_provenance": getattr(encoder, "provenance", None),
               "windows": data.counts()},
    )
    metric = tc.select_metric or DEFAULT_METRIC.get(cfg.task, "loss")
    window_bytes = sum(float(np.prod([crop, crop, timesteps, get_modality(m).num_bands]) * 4)
                       for m in mods)
    preload = window_bytes * len(data.records) < PRELOAD_BYTES
    train_set = WindowSamples(data, "train", mods, preload)
    if not len(train_set):
        raise ValueError("the training split is empty: " + data.report())
    val_split = "val" if data.split("val") else "train"
    if val_split == "train":
        say("warning: no validation window (few grid cells?); selecting on the training split. "
            "Use a smaller split.cell_size_m for an honest validation.")
    val_set = WindowSamples(data, val_split, mods, preload)
    weight = class_weights(data, classes, tc.class_weighting) if classes else None
    head_params = list(model.head.parameters())
    opt = torch.optim.AdamW([
        {"params": head_params, "lr": tc.lr},
        {"params": list(model.encoder.parameters()), "lr": 0.0},
    ], weight_decay=tc.weight_decay)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, factor=tc.plateau_factor, patience=tc.plateau_patience)
    frozen_epochs = tc.frozen_epochs()
    autocast = device.type == "cuda" and tc.precision == "bf16"
    eval_kw = dict(task=cfg.task, crop=crop, patch_size=p, batch_size=tc.batch_size,
                   device=device, classes=classes, mean=data.target_mean, std=data.target_std,
                   weight=weight)
    meter = runtime.ComputeMeter(device, "bf16" if autocast else "fp32", "training samples")
    work = work_dir_for(cfg.output)
    ckpt_file = checkpoint_path(work)
    clean_temporaries(work)  # a checkpoint or best-model write a kill cut short
    if restart:
        ckpt_file.unlink(missing_ok=True)
        shutil.rmtree(unfinished_model_dir(cfg.output), ignore_errors=True)
    fingerprint = training_fingerprint(
        cfg.model_dump(mode="json"), device=str(device),
        windows=[(r.stem, r.split) for r in data.records],
        encoder_provenance=getattr(encoder, "provenance", None))
    state, best_state = resume_training(ckpt_file, fingerprint, model=model, optimizer=opt,
                                        scheduler=plateau, generator=rng)
    if state.epochs_done:
        at = (f"resumed at epoch {state.epochs_done + 1}/{tc.epochs}"
              if state.epochs_done < tc.epochs else "resumed after the last epoch")
        say(f"{at}: epochs 1-{state.epochs_done} were finished by an interrupted run "
            f"({ckpt_file})")
    history = state.history
    best, best_epoch, best_val = state.best, state.best_epoch, state.best_val
    meter.start()
    for epoch in range(state.epochs_done, tc.epochs):
        frozen = epoch < frozen_epochs
        model.set_encoder_trainable(not frozen)
        if epoch == frozen_epochs:
            # Unfreeze at a lower rate than the head, as the plateau schedule has left it.
            opt.param_groups[1]["lr"] = opt.param_groups[0]["lr"] * tc.encoder_lr_scale
        model.train()
        order = rng.permutation(len(train_set))
        t0, total, count = time.perf_counter(), 0.0, 0
        for s in range(0, len(order), tc.batch_size):
            items = [train_set[int(i)] for i in order[s : s + tc.batch_size]]
            batch, y = collate(items, task=cfg.task, crop=crop, patch_size=p, train=True,
                               rng=rng, modalities=mods, config=model.encoder.model_config)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                out = model(batch.to(device))
            loss = task_loss(cfg.task, out.float(), y.to(device), ignore_index=IGNORE_INDEX,
                             class_weight=weight, target_mean=data.target_mean,
                             target_std=data.target_std)
            if loss is None:
                continue
            if not bool(torch.isfinite(loss)):
                stems = [train_set.records[int(i)].stem for i in order[s : s + tc.batch_size]]
                raise TrainingError(_nan_loss_cause(items, stems, float(loss.detach()), epoch,
                                                    opt.param_groups[0]["lr"]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            opt.step()
            total += float(loss.detach()) * len(items)
            count += len(items)
            meter.add(len(items))
        val = evaluate(model, val_set, **eval_kw)
        plateau.step(val["loss"])
        if not frozen:  # the plateau schedule scales the head group; keep the encoder's ratio
            opt.param_groups[1]["lr"] = opt.param_groups[0]["lr"] * tc.encoder_lr_scale
        score = float(val.get(metric, float("nan")))
        row = {"epoch": epoch, "frozen": frozen, "train_loss": total / max(count, 1),
               "val_loss": val["loss"], metric: score, "lr": opt.param_groups[0]["lr"],
               "seconds": round(time.perf_counter() - t0, 2)}
        history.append(row)
        improved = _is_better(metric, score, best)
        say(f"epoch {epoch + 1}/{tc.epochs} {'(encoder frozen) ' if frozen else ''}"
            f"train loss {row['train_loss']:.4f}  val loss {val['loss']:.4f}  "
            f"val {metric} {score:.4f}{'  *best' if improved else ''}")
        if improved:
            best, best_epoch, best_val = score, epoch, val
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
            fm.metrics = {"select_metric": metric, "best_epoch": epoch, "val": _brief(val),
                          "history": history}
            save_bundle(fm, cfg.output, complete=False)  # the best so far, in OUT/.work
        save_checkpoint(ckpt_file, model=model, optimizer=opt, scheduler=plateau,
                        best_state=None if best_epoch == epoch else best_state,
                        progress=Progress(epoch + 1, best, best_epoch, best_val, history),
                        generator=rng, fingerprint=fingerprint)
    if best_state is not None:
        model.load_state_dict(best_state)
    test = {}
    if data.split("test"):
        test = evaluate(model, WindowSamples(data, "test", mods, preload), **eval_kw)
        say(f"test {metric} {test.get(metric, float('nan')):.4f} (best epoch {best_epoch + 1})")
    fm.metrics = {"select_metric": metric, "best_epoch": best_epoch, "val": _brief(best_val),
                  "test": _brief(test), "history": history, "compute": meter.report_dict()}
    save_bundle(fm, cfg.output)
    write_finetune_report(Path(cfg.output) / REPORT_FILE, {
        "task": cfg.task, "select_metric": metric, "best_epoch": best_epoch,
        "splits": coverage.splits, "skipped_windows": coverage.skipped,
        "val": best_val, "test": test,
        "problems": {k: sum(p.kind == k for p in data.problems)
                     for k in sorted({p.kind for p in data.problems})},
    })
    ckpt_file.unlink(missing_ok=True)  # published: nothing left to resume
    say(f"report: {Path(cfg.output) / REPORT_FILE}")
    return FinetuneResult(cfg.output, best_epoch, float(best if best is not None else "nan"),
                          metric, history, best_val, test, data,
                          time.perf_counter() - t_start)


def _brief(metrics: dict) -> dict:
    """Metrics without the bulky confusion matrix (kept in the report, not the model)."""
    return {k: v for k, v in metrics.items() if k != "confusion"}
