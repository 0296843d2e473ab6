"""The pretraining dataset and loader: crop, normalize on load, batch, shard across ranks.

:class:`PretrainDataset` is indexed by :class:`~geolatent.pretrain.sampler.SampleRequest` (the
batch sampler decides sample, patch size, crop size and T for every step); it reads the file
with :func:`geolatent.data.h5samples.read_sample`, draws the crop offset and a start timestep
from the request's seed, normalizes with the v1 statistics (missing stays -99999) and returns
numpy arrays. A file that cannot be used is reported with its name and replaced by another
sample drawn from the same seed, so a long run never stops on one bad file; the failures travel
with the batch and are counted by the trainer.

Each file's values are checked once (the first time a worker reads it) against the registry's
unit plausibility (:func:`geolatent.units.check_values`, the check ``embed`` and ``data build``
use): a sample written by an older build or by hand in other units (reflectance 0-1, linear
backscatter, DN x 100) is refused naming the file, modality and bands; +-inf is missing data
(the one missing-data rule), counted in a warning.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from geolatent.data.h5samples import SampleFileError, read_sample
from geolatent.modalities import MISSING_VALUE, MODALITIES
from geolatent.model import missing as missing_rule
from geolatent.model.config import model_modalities
from geolatent.normalize import normalize
from geolatent.pretrain.sampler import PretrainBatchSampler, SampleRequest
from geolatent.pretrain.samples import Manifest
from geolatent.units import Fix, UnitError, check_values, infinite_note

log = logging.getLogger(__name__)


class SampleUnusable(ValueError):
    """A sample that cannot serve a request (too small, no imagery in the crop, values in other
    units); names the file. Also raised when every replacement failed too."""

    def __init__(self, message: str) -> None:
        # Re-raised from a DataLoader worker, torch builds it from "Caught SampleUnusable in
        # DataLoader worker ... Original Traceback ... <class>: <message>": keep the message,
        # so the user reads one error saying what to do, not a worker's traceback.
        marker = f"{__name__}.SampleUnusable: "
        if message.startswith("Caught SampleUnusable") and marker in message:
            message = message.rsplit(marker, 1)[1].strip()
        super().__init__(message)


@dataclass
class LoadedSample:
    """One cropped, normalized sample.

    Attributes:
        index: manifest index actually used (differs from the request after a replacement).
        arrays: modality -> float32 ``[c, c, T, C]`` normalized (static maps ``T = 1``), with
            ``c`` the crop side in pixels; missing = -99999.
        timestamps: int64 ``[T, 3]`` (day, month 0-11, year).
        request: the request served.
        errors: messages of the files that failed before this one (each names its file).
    """

    index: int
    arrays: dict[str, np.ndarray]
    timestamps: np.ndarray
    request: SampleRequest
    errors: list[str] = field(default_factory=list)


@dataclass
class PretrainBatch:
    """A micro-batch.

    Attributes:
        inputs: modality -> float32 ``[B, H, W, T, C]`` normalized, -99999 where missing (also for
            samples that lack the modality). Only modalities present in some sample appear.
        timestamps: int64 ``[B, T, 3]``.
        patch_size: p of this step.
        step, micro_index: where the batch sits in training (keys of its random draws).
        indices: int64 ``[B]`` manifest indices.
        errors: bad-sample messages met while loading it.
    """

    inputs: dict[str, torch.Tensor]
    timestamps: torch.Tensor
    patch_size: int
    step: int
    micro_index: int
    indices: torch.Tensor
    errors: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return int(self.indices.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PretrainBatch:
        return PretrainBatch(
            {m: x.to(device, non_blocking=non_blocking) for m, x in self.inputs.items()},
            self.timestamps.to(device, non_blocking=non_blocking),
            self.patch_size, self.step, self.micro_index, self.indices, self.errors,
        )  # fmt: skip

    def pin_memory(self) -> PretrainBatch:
        """Called by the DataLoader when ``pin_memory=True``."""
        return PretrainBatch(
            {m: x.pin_memory() for m, x in self.inputs.items()}, self.timestamps.pin_memory(),
            self.patch_size, self.step, self.micro_index, self.indices, self.errors,
        )  # fmt: skip


class PretrainDataset(Dataset):
    """Samples of a :class:`Manifest`, cropped and normalized per :class:`SampleRequest`.

    Args:
        manifest: the sample files.
        modalities: only load these (default: every modality found in the files).
        max_retries: replacement samples tried before giving up on a request.
        model_config: the model trained (its version decides how a band missing inside a present
            bandset is filled, :mod:`geolatent.model.missing`; default: v1 with the registry's
            bandsets).
        check_units: check each file's raw values once against the registry's unit
            plausibility (``False``: trust the files, e.g. for data in units of your own).
    """

    def __init__(
        self,
        manifest: Manifest,
        modalities: list[str] | None = None,
        max_retries: int = 8,
        model_config=None,
        check_units: bool = True,
    ):
        if len(manifest) == 0:
            raise ValueError(f"manifest of {manifest.root} holds no usable samples")
        unknown = [m for m in modalities or [] if m not in MODALITIES]
        if unknown:
            raise ValueError(f"unknown modalities {unknown}; known: {list(MODALITIES)}")
        self.manifest = manifest
        self.modalities = modalities
        self.max_retries = max_retries
        self.version = model_config.version if model_config is not None else "v1"
        self.model_modalities = (
            {m.name: m for m in model_modalities(model_config)} if model_config is not None else {}
        )
        self.check_units = check_units
        self._units_checked: set[int] = set()  # per process: each DataLoader worker has its own

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, request: SampleRequest) -> LoadedSample:
        errors: list[str] = []
        rng = np.random.default_rng(request.seed)
        index = request.index
        for _ in range(self.max_retries + 1):
            try:
                arrays, ts = self.load_crop(index, request, rng)
                return LoadedSample(index, arrays, ts, request, errors)
            except (SampleFileError, SampleUnusable) as e:
                errors.append(str(e))
            except Exception as e:  # never let one odd file kill a long run
                errors.append(f"{self.manifest.path(index)}: {type(e).__name__}: {e}")
            log.warning("bad sample: %s", errors[-1])
            index = int((index + 1 + rng.integers(max(1, len(self) - 1))) % len(self))
        last = list(dict.fromkeys(errors))[-3:]  # distinct, in order
        raise SampleUnusable(
            f"{self.max_retries + 1} samples in a row could not be used; check data.root. The "
            f"last: {' | '.join(last)}"
        )

    def fill(self, modality: str, raw: np.ndarray) -> np.ndarray:
        """Normalize ``raw`` ``[..., C]`` and apply the missing-data rule (as ``embed`` does):
        bands missing inside a present bandset are filled, whole missing bandsets stay -99999."""
        mod = self.model_modalities.get(modality) or MODALITIES[modality]
        if mod.decode_only:  # map targets: no band fill (no wavelengths; never encoder inputs)
            return normalize(modality, raw)
        filled, _ = missing_rule.normalize_and_fill(modality, torch.from_numpy(raw), mod,
                                                    self.version)  # fmt: skip
        return filled.numpy()

    def load_crop(
        self, index: int, request: SampleRequest, rng: np.random.Generator
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Read sample ``index`` and cut the request's crop (see :class:`LoadedSample`)."""
        path = self.manifest.path(index)
        s = read_sample(path, self.modalities)
        arrays, missing, ts = s["arrays"], s["missing_timesteps"], s["timestamps"]
        if not arrays:
            raise SampleUnusable(f"{path}: none of the modalities {self.modalities} is present")
        if self.check_units and index not in self._units_checked:
            for note in check_sample_units(path, arrays, missing):
                log.warning("%s", note)
            self._units_checked.add(index)
        h, w = next(iter(arrays.values())).shape[:2]
        c = request.crop_px
        if h < c or w < c:
            raise SampleUnusable(f"{path}: {h}x{w} px is smaller than the {c} px crop")
        n_t = ts.shape[0]
        if n_t == 0:
            raise SampleUnusable(f"{path}: no timesteps")
        t_len = min(request.timesteps, n_t)
        # Start timestep: uniform among windows holding some imagery (an encoder needs input).
        imagery = np.zeros(n_t, dtype=bool)
        for m, miss in missing.items():
            if MODALITIES[m].encoder_input and MODALITIES[m].multitemporal:
                imagery |= ~miss
        window_has = np.convolve(imagery.astype(np.int64), np.ones(t_len, np.int64), "valid") > 0
        starts = np.flatnonzero(window_has)
        if len(starts) == 0:
            raise SampleUnusable(f"{path}: no timestep holds encoder-input imagery")
        t0 = int(starts[rng.integers(len(starts))])
        row = int(rng.integers(h - c + 1))
        col = int(rng.integers(w - c + 1))
        out = {}
        for m, arr in arrays.items():
            if MODALITIES[m].multitemporal:
                crop = arr[row : row + c, col : col + c, t0 : t0 + t_len]
                gone = missing[m][t0 : t0 + t_len]
            else:
                crop, gone = arr[row : row + c, col : col + c, :1], missing[m][:1]
            crop = np.array(crop, dtype=np.float32)
            crop[:, :, gone] = MISSING_VALUE  # trust the file's masks over fill values
            out[m] = self.fill(m, crop)
        if not any(
            MODALITIES[m].encoder_input and bool((x != MISSING_VALUE).any()) for m, x in out.items()
        ):
            raise SampleUnusable(f"{path}: the crop holds no encoder-input data")
        return out, np.asarray(ts[t0 : t0 + t_len], dtype=np.int64)


_UNIT_VALUES = 8192  # values per band the unit check of a sample file looks at
_SAMPLE_FIX = Fix("config")  # samples come from a data build config: its sources' options
_REBUILD = ("; rebuild the sample with `geolatent data build` (it checks units on the way) or "
            "remove it from data.root, or set check_units=False if these units are intended")


def check_sample_units(path, arrays: dict[str, np.ndarray],
                       missing: dict[str, np.ndarray]) -> list[str]:
    """Unit plausibility of one sample file's raw values (vectorized, on the whole file).

    Args:
        path: the file (named in messages).
        arrays: modality -> raw ``[H, W, T, C]`` (registry band order), as read.
        missing: modality -> bool ``[T]``: timesteps the file marks missing (their fill values
            are not data, so they are left out).

    Returns:
        Warnings (infinite values counted as missing data; a bandset with no valid value).

    Raises:
        SampleUnusable: naming the file, modality and bands whose values are in other units,
            and what to do.
    """
    notes: list[str] = []
    for m, arr in arrays.items():
        keep = ~np.asarray(missing[m], dtype=bool)
        what = f"{path} ({m})"
        # +-inf counted over the whole file (one pass; the timesteps copied only when there is
        # one); the units judged on a strided subsample of about _UNIT_VALUES values per band
        # (medians and ranges; the whole file cost ~40x more).
        if np.isinf(arr).any() and (note := infinite_note(arr[:, :, keep], MODALITIES[m].bands,
                                                          what)):
            notes.append(note)
        step = max(1, math.ceil(math.sqrt(arr[..., 0].size / _UNIT_VALUES)))
        sub = arr[::step, ::step][:, :, keep]
        sub = np.where(np.isinf(sub), np.nan, sub)  # missing; already counted above
        try:
            notes += check_values(m, sub, what=what, fix=_SAMPLE_FIX)
        except UnitError as e:
            bands = _implausible_bands(m, sub)
            named = f" (bands {', '.join(bands)})" if bands else ""
            raise SampleUnusable(f"{e}{named}{_REBUILD}") from None
    return notes


def _implausible_bands(modality: str, x: np.ndarray) -> list[str]:
    """The bands of ``x`` ``[..., C]`` that fail the unit check on their own."""
    bad = []
    for i, band in enumerate(MODALITIES[modality].bands):
        try:
            check_values(modality, x[..., i : i + 1], bands=[band])
        except UnitError:
            bad.append(band)
    return bad


def _pad_timestamps(ts: np.ndarray, t: int) -> np.ndarray:
    """Extend ``[T0, 3]`` timestamps to ``[t, 3]`` with the next months (padding is missing)."""
    if ts.shape[0] >= t:
        return ts[:t]
    last = ts[-1] if len(ts) else np.array([1, 0, 2020])
    k = np.arange(1, t - ts.shape[0] + 1)
    month = last[1] + k
    extra = np.stack([np.ones_like(k), month % 12, last[2] + month // 12], axis=1)
    return np.concatenate([ts, extra.astype(np.int64)])


def collate_samples(samples: list[LoadedSample]) -> PretrainBatch:
    """Stack samples into a :class:`PretrainBatch`; absent modalities / timesteps are -99999."""
    req = samples[0].request
    names = [m for m in MODALITIES if any(m in s.arrays for s in samples)]
    t = max(s.timestamps.shape[0] for s in samples)
    c = req.crop_px
    inputs = {}
    for m in names:
        mod = MODALITIES[m]
        tm = t if mod.multitemporal else 1
        out = np.full((len(samples), c, c, tm, mod.num_bands), MISSING_VALUE, dtype=np.float32)
        for i, s in enumerate(samples):
            if m in s.arrays:
                a = s.arrays[m]
                out[i, :, :, : a.shape[2]] = a
        inputs[m] = torch.from_numpy(out)
    ts = np.stack([_pad_timestamps(s.timestamps, t) for s in samples])
    return PretrainBatch(
        inputs,
        torch.from_numpy(ts),
        req.patch_size,
        req.step,
        req.micro_index,
        torch.tensor([s.index for s in samples], dtype=torch.long),
        [e for s in samples for e in s.errors],
    )


def _worker_init(_: int) -> None:
    # Workers only read and normalize (numpy); one thread each leaves the cores to training.
    torch.set_num_threads(1)


def make_loader(
    dataset: PretrainDataset,
    batch_sampler: PretrainBatchSampler,
    num_workers: int = 2,
    prefetch_factor: int = 2,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader yielding :class:`PretrainBatch` es of this rank, in step order.

    Worker processes read and crop files in parallel; the order of batches does not depend on
    the number of workers.
    """
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        collate_fn=collate_samples,
        num_workers=num_workers,
        prefetch_factor=prefetch_factor if num_workers > 0 else None,
        pin_memory=pin_memory,
        worker_init_fn=_worker_init if num_workers > 0 else None,
    )
