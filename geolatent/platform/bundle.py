"""The fine-tuned model folder: everything ``predict`` needs, and nothing else.

Layout::

    <folder>/
      bundle.json          format, task, class table, encoder config, head spec, input contract
                           (modalities, bands, patch / crop size, resolution, timesteps),
                           normalization statistics, default imagery sources, training metrics
      weights.safetensors  encoder.* (the whole encoder) and head.* tensors

The folder is written into a temporary sibling and renamed into place, so a reader never sees a
half-written model and a crash leaves the previous one intact. Loading is strict: missing or
unexpected weights, a newer format, or normalization statistics that differ from this
installation's are a :class:`BundleError` naming the problem.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from geolatent.data.run import WORK_SUFFIX, work_dir_for
from geolatent.model.config import ModelConfig
from geolatent.model.encoder import Encoder
from geolatent.normalize import band_affine
from geolatent.platform.classes import ClassTable
from geolatent.platform.heads import HeadSpec, TaskModel, build_head

BUNDLE_FORMAT = "geolatent-finetuned"
BUNDLE_VERSION = 1
BUNDLE_FILE = "bundle.json"
WEIGHTS_FILE = "weights.safetensors"


class BundleError(ValueError):
    """A model folder that cannot be used as given; the message names the problem."""


@dataclass
class InputSpec:
    """The input contract of a fine-tuned model.

    Attributes:
        modalities: encoder input modalities used in training (registry names).
        bands: per modality the bands that held data in training (registry names).
        patch_size: encoder patch size p.
        crop_size: model input side in pixels (training crops; prediction crops).
        window_size: training window side in pixels.
        resolution_m: pixel size in metres.
        timesteps: monthly timesteps of the training windows.
    """

    modalities: list[str]
    bands: dict[str, list[str]]
    patch_size: int
    crop_size: int
    window_size: int
    resolution_m: float = 10.0
    timesteps: int = 12


@dataclass
class TaskSpec:
    """The task: its type and, for regression, the target standardization (value units)."""

    type: str
    target_mean: float = 0.0
    target_std: float = 1.0
    value_name: str = "value"


@dataclass
class FinetunedModel:
    """A loaded (or freshly trained) fine-tuned model and its metadata."""

    model: TaskModel
    task: TaskSpec
    inputs: InputSpec
    model_config: ModelConfig
    classes: ClassTable | None = None
    sources: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def head_spec(self) -> HeadSpec:
        return self.model.spec


def build_encoder(config: ModelConfig) -> Encoder:
    """A randomly initialized encoder of ``config`` (weights are loaded afterwards)."""
    return Encoder.from_config(config)


def normalization_snapshot(modalities: list[str]) -> dict[str, dict[str, list[float]]]:
    """``{modality: {"lo": [C], "hi": [C]}}``: the affine normalization in use (raw units)."""
    out = {}
    for m in modalities:
        lo, hi = band_affine(m)
        out[m] = {"lo": lo.tolist(), "hi": hi.tolist()}
    return out


def _check_normalization(saved: dict, where: Path) -> None:
    for m, st in saved.items():
        lo, hi = band_affine(m)
        if not (np.allclose(lo, st["lo"]) and np.allclose(hi, st["hi"])):
            raise BundleError(
                f"{where}: {m} was fine-tuned with normalization statistics that differ from "
                "this geolatent installation's; predictions would be wrong. Use the geolatent "
                "version the model was trained with."
            )


def _replace_dir(tmp: Path, dest: Path) -> None:
    """Move the finished ``tmp`` folder onto ``dest`` (keeping the old one until it is done)."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
    try:
        os.replace(tmp, dest)
    except BaseException:
        if old is not None:
            os.replace(old, dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_model_output(path: str | os.PathLike, option: str = "output") -> Path:
    """``path`` if a fine-tuned model may be written there: a new or empty folder, or a folder
    holding a previous fine-tuned model (its ``bundle.json``). A file or a folder of other
    things (the user's data) is a :class:`BundleError` naming the path: never replaced."""
    dest = Path(path)
    if dest.exists() and not dest.is_dir():
        raise BundleError(f"{option} {dest} is an existing file; choose a new folder for the "
                          "model (the file is left as it is)")
    if dest.is_dir() and not _is_bundle_dir(dest):
        other = sorted(c.name for c in dest.iterdir() if c.name != WORK_SUFFIX)
        if other:
            raise BundleError(
                f"{option} {dest} is a folder that holds other files ({', '.join(other[:3])}"
                f"{', ...' if len(other) > 3 else ''}) and no fine-tuned model; choose a new "
                "folder (nothing in it is changed)")
    return dest


def _is_bundle_dir(path: Path) -> bool:
    try:
        return json.loads((path / BUNDLE_FILE).read_text()).get("format") == BUNDLE_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def unfinished_model_dir(path: str | os.PathLike) -> Path:
    """Where :func:`save_bundle` with ``complete=False`` writes: the output's ``.work`` area,
    never the final path (``predict`` cannot pick up an unfinished model by accident)."""
    return work_dir_for(path) / "unfinished-model"


def save_bundle(fm: FinetunedModel, path: str | os.PathLike, *, complete: bool = True) -> Path:
    """Write ``fm`` as a model folder at ``path``, atomically.

    Args:
        fm: the model.
        path: the model folder: new, empty, or a previous fine-tuned model (replaced only once
            the new one is complete); anything else is refused (:func:`check_model_output`).
        complete: ``False`` for an intermediate model (e.g. the best epoch so far of a running
            fine-tuning): it goes to :func:`unfinished_model_dir` instead, and ``path`` keeps
            the previous finished model until the run saves with ``complete=True``.
    """
    dest = check_model_output(path)
    if not complete:
        dest = unfinished_model_dir(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    state = {f"encoder.{k}": v for k, v in fm.model.encoder.state_dict().items()}
    state |= {f"head.{k}": v for k, v in fm.model.head.state_dict().items()}
    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    meta = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION,
        "task": asdict(fm.task),
        "classes": fm.classes.to_dict() if fm.classes is not None else None,
        "model": fm.model_config.model_dump(),
        "head": fm.head_spec.to_dict(),
        "inputs": asdict(fm.inputs),
        "normalization": normalization_snapshot(fm.inputs.modalities),
        "sources": fm.sources,
        "metrics": fm.metrics,
        "extra": fm.extra,
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        save_file(state, str(tmp / WEIGHTS_FILE))
        (tmp / BUNDLE_FILE).write_text(json.dumps(meta, indent=1, default=str))
        _replace_dir(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if complete:
        shutil.rmtree(unfinished_model_dir(dest), ignore_errors=True)
    fm.path = dest
    return dest


def bundle_modalities(path: str | os.PathLike) -> list[str]:
    """The input modalities a fine-tuned model folder was trained on (``bundle.json``), read
    without loading its weights (``predict --imagery`` picks the imagery to search by them)."""
    path = Path(path)
    try:
        return list(json.loads((path / BUNDLE_FILE).read_text())["inputs"]["modalities"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"--model {path}: cannot read the model's input modalities from "
                         f"{BUNDLE_FILE} ({e}); give a fine-tuned model folder") from None


def load_bundle(path: str | os.PathLike, device: str | torch.device = "cpu") -> FinetunedModel:
    """Load a model folder written by :func:`save_bundle` (model in eval mode on ``device``)."""
    p = Path(path)
    meta_path, w_path = p / BUNDLE_FILE, p / WEIGHTS_FILE
    if not meta_path.exists():
        hint = " (a pretrained checkpoint? fine-tune it first)" if (p / "config.json").exists() \
            else ""
        if unfinished_model_dir(p).exists():  # what a killed (or running) fine-tuning leaves
            hint = (f": a fine-tuning into it did not finish (its best model so far is in "
                    f"{unfinished_model_dir(p)}); rerun the same finetune to finish it")
        raise FileNotFoundError(f"{meta_path} not found: not a fine-tuned model folder{hint}")
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as e:
        raise BundleError(f"{meta_path}: invalid JSON ({e})") from e
    if meta.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{meta_path}: not a {BUNDLE_FORMAT} folder")
    if int(meta.get("format_version", 0)) > BUNDLE_VERSION:
        raise BundleError(f"{meta_path}: format version {meta['format_version']} is newer than "
                          f"this geolatent ({BUNDLE_VERSION}); upgrade geolatent")
    _check_normalization(meta.get("normalization", {}), p)
    config = ModelConfig(**meta["model"])
    spec = HeadSpec.from_dict(meta["head"])
    model = TaskModel(build_encoder(config), build_head(spec), spec)
    try:
        state = load_file(str(w_path))
    except Exception as e:
        raise BundleError(f"{w_path}: cannot read weights ({type(e).__name__}: {e})") from e
    for prefix, module in (("encoder.", model.encoder), ("head.", model.head)):
        part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        expected = module.state_dict()
        missing = sorted(set(expected) - set(part))
        unexpected = sorted(set(part) - set(expected))
        bad = [k for k in set(expected) & set(part) if expected[k].shape != part[k].shape]
        if missing or unexpected or bad:
            raise BundleError(f"{w_path}: {prefix[:-1]} weights do not match its config "
                              f"(missing {missing[:5]}, unexpected {unexpected[:5]}, "
                              f"wrong shape {bad[:5]})")
        module.load_state_dict(part, strict=True)
    model.to(device).eval()
    classes = ClassTable.from_dict(meta["classes"]) if meta.get("classes") else None
    return FinetunedModel(
        model=model,
        task=TaskSpec(**meta["task"]),
        inputs=InputSpec(**meta["inputs"]),
        model_config=config,
        classes=classes,
        sources=list(meta.get("sources") or []),
        metrics=dict(meta.get("metrics") or {}),
        extra=dict(meta.get("extra") or {}),
        path=p,
    )
