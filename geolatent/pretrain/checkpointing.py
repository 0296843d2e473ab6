"""Training checkpoints: written atomically, the model part loadable by ``geolatent.load_model``.

Layout of ``<run_dir>/checkpoints/step_00001000/``:

- ``model/``: a geolatent model folder (:func:`geolatent.save_model`), usable for embedding;
- ``train_state.pt``: optimizer and scheduler state, the step, RNG states of every rank and the
  data position.

A checkpoint is assembled in a hidden temporary folder and renamed into place, then the
``latest`` pointer file is replaced; a run killed at any moment leaves either the previous or
the new checkpoint, never a partial one.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from geolatent.model.checkpoint import load_model, save_model
from geolatent.model.config import ModelConfig
from geolatent.model.latent_mim import LatentMIM

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest"
STATE_FILE = "train_state.pt"
MODEL_DIR = "model"


def rng_state() -> dict:
    """This process's RNG states (torch CPU / CUDA, numpy, Python) as plain Python values, so
    they pickle through ``all_gather_object`` and load with ``weights_only=True``."""
    np_state = np.random.get_state()
    cuda = [s.tolist() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []
    return {
        "torch": torch.get_rng_state().tolist(),
        "cuda": cuda,
        "numpy": [np_state[0], np_state[1].tolist(), *(float(x) for x in np_state[2:])],
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), cached))
    random.setstate(state["python"])


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def model_from_state(config: ModelConfig, state: dict[str, torch.Tensor]) -> LatentMIM:
    """A :class:`LatentMIM` holding ``state`` (built on the meta device: no initialization cost)."""
    with torch.device("meta"):
        model = LatentMIM(config)
    model.load_state_dict(state, strict=True, assign=True)
    return model


def save_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    model: LatentMIM,
    train_state: dict,
    keep_last: int = 2,
) -> Path:
    """Write checkpoint ``step`` atomically and keep only the newest ``keep_last``.

    Args:
        run_dir: the run directory.
        step: completed optimizer steps.
        model: the model to export (CPU tensors are fine).
        train_state: everything else needed to resume (saved with ``torch.save``).
    """
    root = Path(run_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:08d}"
    tmp = root / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model(model, tmp / MODEL_DIR)
    with open(tmp / STATE_FILE, "wb") as f:
        torch.save(train_state, f)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(tmp)
    final = root / name
    if final.exists():  # re-saving the same step (e.g. after a resume): replace it
        shutil.rmtree(final)
    os.rename(tmp, final)
    pointer = root / f".{LATEST}.tmp-{os.getpid()}"
    pointer.write_text(name + "\n")
    os.replace(pointer, root / LATEST)
    _fsync_dir(root)
    for old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def clean_temporaries(run_dir: str | os.PathLike) -> int:
    """Remove what a run killed mid-save left: ``.tmp-step_*`` folders and ``latest`` pointer
    temporaries (a checkpoint is complete only once renamed). Returns how many were removed.
    Call it before a (resumed) run starts writing, on one process."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return 0
    stale = [*root.glob(".tmp-step_*"), *root.glob(f".{LATEST}.tmp-*")]
    for p in stale:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return len(stale)


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [
        p for p in root.glob("step_*") if (p / STATE_FILE).exists() and (p / MODEL_DIR).is_dir()
    ]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint named by ``latest`` (or the newest complete one), None if there is none."""
    root = Path(run_dir) / CHECKPOINT_DIR
    pointer = root / LATEST
    if pointer.exists():
        cand = root / pointer.read_text().strip()
        if (cand / STATE_FILE).exists():
            return cand
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_checkpoint(path: str | os.PathLike) -> tuple[LatentMIM, dict]:
    """``(model, train_state)`` of a checkpoint folder (model on CPU, eval mode)."""
    path = Path(path)
    model = load_model(path / MODEL_DIR)
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    return model, state
