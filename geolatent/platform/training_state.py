"""Fine-tuning resume: the state of a run at the end of an epoch, saved so that a rerun after a
kill (or a server restart) continues from the last finished epoch and ends with the same
weights and metrics as an uninterrupted run.

One file, ``<output>/.work/finetune-checkpoint.pt`` (the run driver's ``.work`` area of the model
folder, written atomically with :func:`geolatent.data.run.write_atomic`), holding:

* ``model`` / ``optimizer`` / ``scheduler``: the state dicts after epoch ``epoch``;
* ``best_state``: the best epoch's weights (``None`` when it is the last finished epoch, whose
  weights are ``model``: a checkpoint is never two models large without need);
* ``rng``: torch (and CUDA), the training's numpy ``Generator``, numpy's global and Python's
  ``random`` states, so crops, flips, shuffles and dropout continue the same sequence;
* ``progress``: finished epochs, best metric and epoch, validation metrics, history;
* ``fingerprint``: everything that shapes the result (the config except where it is written
  and how windows are materialized, the resolved device, the training windows and their
  splits, the encoder's provenance), flat ``{key path: value}`` so a mismatch names the keys.

The checkpoint is removed once the finished model is published; a kill between the two only
repeats the publication.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geolatent.data.run import write_atomic

CHECKPOINT_FILE = "finetune-checkpoint.pt"
CHECKPOINT_FORMAT = 1
#: Config keys that do not change the trained model (where it goes, how windows are read).
NOT_FINGERPRINTED = {"output", "work_dir", "executor"}


class ResumeError(ValueError):
    """An interrupted run's checkpoint does not belong to this config.

    Attributes:
        changes: ``"key: old -> new"`` lines naming what differs.
        epoch: epochs the interrupted run had finished.
    """

    def __init__(self, path: Path, changes: list[str], epoch: int, option: str = "restart=True"):
        self.path, self.changes, self.epoch = path, changes, epoch
        super().__init__(self.describe(option))

    def describe(self, option: str) -> str:
        """The message, naming how to start over as the user can where they are (``--restart``
        in the CLI, ``restart=True`` in Python)."""
        listed = "; ".join(self.changes[:8]) + (" ..." if len(self.changes) > 8 else "")
        return (f"{self.path} holds an interrupted fine-tuning ({self.epoch} epoch(s) done) of "
                f"another config: {listed}. Rerun with the same config to resume it, or start "
                f"over with {option} (the interrupted run's progress is then discarded)")


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out |= _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return {prefix: value}


def training_fingerprint(config: Mapping, *, device: str, windows: list[tuple[str, str]],
                         encoder_provenance: Any) -> dict[str, Any]:
    """Flat ``{key path: JSON value}`` of everything that shapes a fine-tuning's result.

    Args:
        config: the fine-tuning config as JSON (``cfg.model_dump(mode="json")``).
        device: the resolved device (``train.device: auto`` may resolve differently later).
        windows: ``(stem, split)`` of every training window used (stems hash their targets and
            sources, so changed labels or imagery change them).
        encoder_provenance: where the encoder's weights came from (sha256 for a checkpoint).
    """
    flat = _flatten({k: v for k, v in config.items() if k not in NOT_FINGERPRINTED})
    flat["train.device"] = device
    digest = hashlib.sha256(json.dumps(sorted(windows)).encode()).hexdigest()[:16]
    flat["training windows"] = f"{len(windows)} windows, {digest}"
    flat["encoder weights"] = json.dumps(encoder_provenance, sort_keys=True, default=str)
    return json.loads(json.dumps(flat, default=str))  # JSON values: compared as saved


def fingerprint_changes(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """``"key: saved -> now"`` for every key that differs (absent keys shown as ``(unset)``)."""
    unset = "(unset)"
    return [f"{k}: {saved.get(k, unset)!s} -> {now.get(k, unset)!s}"
            for k in sorted(set(saved) | set(now)) if saved.get(k, unset) != now.get(k, unset)]


# -- random number generators -------------------------------------------------------------------
def rng_states(generator: np.random.Generator) -> dict:
    """Every generator a fine-tuning epoch draws from (plain values and tensors only, so the
    checkpoint loads with ``weights_only=True``)."""
    legacy = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": generator.bit_generator.state,
        "numpy_global": {"key": legacy["state"]["key"].tolist(), "pos": legacy["state"]["pos"],
                         "has_gauss": legacy["has_gauss"], "gauss": legacy["gauss"]},
        "python": random.getstate(),
    }


def restore_rng(generator: np.random.Generator, states: Mapping) -> None:
    """Put back what :func:`rng_states` saved (``generator`` in place)."""
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    generator.bit_generator.state = states["numpy"]
    g = states["numpy_global"]
    np.random.set_state(("MT19937", np.asarray(g["key"], dtype=np.uint32), g["pos"],
                         g["has_gauss"], g["gauss"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


# -- the checkpoint ----------------------------------------------------------------------------
@dataclass
class Progress:
    """Where a fine-tuning stands after ``epochs_done`` epochs."""

    epochs_done: int = 0
    best: float | None = None
    best_epoch: int = -1
    best_val: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)


def checkpoint_path(work_dir: Path) -> Path:
    return Path(work_dir) / CHECKPOINT_FILE


def save_checkpoint(path: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, best_state: dict[str, torch.Tensor] | None,
                    progress: Progress, generator: np.random.Generator,
                    fingerprint: Mapping[str, Any]) -> Path:
    """Write the checkpoint atomically (a kill leaves the previous epoch's or this one's).

    ``best_state``: the best epoch's weights, or None when the best epoch is the last one.
    """
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "best_state": best_state,
        "rng": rng_states(generator),
        "progress": json.dumps(progress.__dict__, default=str),
        "fingerprint": json.dumps(dict(fingerprint)),
    }
    return write_atomic(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: Path, fingerprint: Mapping[str, Any]) -> dict | None:
    """The checkpoint at ``path`` if there is one for this ``fingerprint``, else None.

    Raises:
        ResumeError: it belongs to another config (the message names what changed).
        ValueError: it cannot be read (named, with how to start over).
    """
    if not path.exists():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        saved = json.loads(ckpt["fingerprint"])
        progress = Progress(**json.loads(ckpt["progress"]))
    except Exception as e:  # noqa: BLE001 - any unreadable checkpoint gets the same advice
        # torch's own text (about weights_only) would only mislead here: a damaged file
        raise ValueError(f"{path}: cannot read the interrupted fine-tuning's checkpoint "
                         f"(damaged or not one: {type(e).__name__}); start over with "
                         "restart=True (--restart in the CLI)") from e
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: checkpoint format {ckpt.get('format')} is not "
                         f"{CHECKPOINT_FORMAT}; start over with restart=True (--restart)")
    changes = fingerprint_changes(saved, fingerprint)
    if changes:
        raise ResumeError(path, changes, progress.epochs_done)
    ckpt["progress"] = progress
    return ckpt


def resume_training(path: Path, fingerprint: Mapping[str, Any], *, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler: Any,
                    generator: np.random.Generator,
                    ) -> tuple[Progress, dict[str, torch.Tensor] | None]:
    """Put an interrupted run's state back into ``model``, ``optimizer``, ``scheduler`` and the
    generators (:func:`load_checkpoint`; its errors). Returns its progress and the best
    epoch's weights; ``(Progress(), None)`` when there is nothing to resume."""
    ckpt = load_checkpoint(path, fingerprint)
    if ckpt is None:
        return Progress(), None
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    restore_rng(generator, ckpt["rng"])
    progress: Progress = ckpt["progress"]
    best_state = ckpt["best_state"]
    if best_state is None and progress.best_epoch >= 0:  # the best is the last finished epoch
        best_state = ckpt["model"]
    return progress, best_state
