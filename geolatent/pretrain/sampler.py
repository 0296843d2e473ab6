"""The v1 batch sampler: which samples, which patch size, crop and time window, per step.

Everything is a pure function of ``(seed, step)``: the order of samples (one permutation per
epoch), the per-step draw of patch size ``p ~ U{min..max}`` and crop width in tokens
``h ~ U{1..12}``, the number of timesteps ``T`` under the token budget, and a seed per sample
for its random crop / start timestep and one per micro-batch for augmentation and masking. So a
resumed run replays exactly the batches of an uninterrupted one, and N ranks see the same
global batches as one process (each rank takes its share of the micro-batches).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from torch.utils.data import Sampler

from geolatent.modalities import MAX_TIMESTEPS, MODALITIES

TOKEN_BUDGET = 2250
"""v1 maximum tokens per sample (all 9 modalities counted, present or not)."""


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that depends on every key (stable across processes and platforms)."""
    state = np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFF_FFFF_FFFF_FFFF


# Purposes of derived seeds, so different draws never share a stream.
PLAN, ORDER, SAMPLE, AUGMENT, MASK_A, MASK_B, DROP_PATH = range(7)


def max_timesteps(
    grid: int,
    token_budget: int = TOKEN_BUDGET,
    modalities: list[str] | None = None,
    cap: int = MAX_TIMESTEPS,
) -> int:
    """Largest ``T`` with ``sum_spatiotemporal h^2*S*T + sum_static h^2*S <= budget``.

    Args:
        grid: crop width ``h`` in tokens.
        token_budget: tokens per sample.
        modalities: counted modalities; all 9 v1 modalities (present or not) by default.
        cap: at most this many timesteps.

    Returns:
        ``T`` in ``0..cap`` (0 when even one timestep does not fit).
    """
    mods = [MODALITIES[m] for m in (modalities or list(MODALITIES))]
    per_t = sum(grid * grid * m.num_bandsets for m in mods if m.multitemporal)
    static = sum(grid * grid * m.num_bandsets for m in mods if not m.multitemporal)
    if per_t == 0:
        return cap if static <= token_budget else 0
    return int(max(0, min(cap, (token_budget - static) // per_t)))


@dataclass(frozen=True)
class SampleRequest:
    """What the dataset must produce for one sample of one step.

    Attributes:
        index: position of the sample in the manifest.
        patch_size: p (pixels per token side).
        crop_px: crop side in 10 m pixels (``grid * p``).
        timesteps: number of timesteps T of the crop.
        seed: seed of this sample's random crop offset and start timestep.
        step: optimizer step this sample belongs to.
        micro_index: index of its micro-batch in the global batch.
    """

    index: int
    patch_size: int
    crop_px: int
    timesteps: int
    seed: int
    step: int
    micro_index: int


@dataclass(frozen=True)
class StepPlan:
    """Per-step draw shared by every sample of the global batch."""

    step: int
    patch_size: int
    grid: int
    timesteps: int


class PretrainBatchSampler(Sampler[list[SampleRequest]]):
    """Yields this rank's micro-batches of :class:`SampleRequest`, step after step.

    Global batch ``global_batch`` is split into ``global_batch / micro_batch`` micro-batches in
    order; rank ``r`` of ``world_size`` takes micro-batches ``r, r + world_size, ...``. Use as the
    ``batch_sampler`` of a :class:`~torch.utils.data.DataLoader`.

    Args:
        num_samples: manifest length.
        global_batch, micro_batch: samples per optimizer step / per forward pass.
        seed: run seed.
        start_step, end_step: steps ``[start_step, end_step)`` are produced.
        rank, world_size: this process's share.
        min_patch_size, max_patch_size: range of p.
        min_grid, max_grid: range of the crop width in tokens (1..12 in v1).
        token_budget: tokens per sample (2250 in v1).
        min_sample_px: smallest sample side in the manifest; crops never exceed it.
    """

    def __init__(
        self,
        num_samples: int,
        global_batch: int,
        micro_batch: int,
        seed: int = 0,
        start_step: int = 0,
        end_step: int = 1,
        rank: int = 0,
        world_size: int = 1,
        min_patch_size: int = 1,
        max_patch_size: int = 8,
        min_grid: int = 1,
        max_grid: int = 12,
        token_budget: int = TOKEN_BUDGET,
        min_sample_px: int = 128,
    ):
        if num_samples < 1:
            raise ValueError("the manifest holds no samples")
        if global_batch % (micro_batch * world_size):
            raise ValueError(
                f"global batch {global_batch} is not a multiple of micro-batch {micro_batch} x "
                f"{world_size} ranks"
            )
        if not 1 <= min_patch_size <= max_patch_size <= 8:
            raise ValueError(
                f"patch sizes must satisfy 1 <= {min_patch_size} <= {max_patch_size} <= 8"
            )
        if min_sample_px < min_patch_size:
            raise ValueError(
                f"samples of {min_sample_px} px are smaller than patch size {min_patch_size}"
            )
        self.num_samples = num_samples
        self.global_batch = global_batch
        self.micro_batch = micro_batch
        self.seed = seed
        self.start_step = start_step
        self.end_step = end_step
        self.rank = rank
        self.world_size = world_size
        self.min_patch_size = min_patch_size
        self.max_patch_size = max_patch_size
        self.min_grid = min_grid
        self.max_grid = max_grid
        self.token_budget = token_budget
        self.min_sample_px = min_sample_px
        self._perm_cache: tuple[int, np.ndarray] | None = None

    @property
    def micro_batches_per_rank(self) -> int:
        """Gradient-accumulation steps per optimizer step on each rank."""
        return self.global_batch // (self.micro_batch * self.world_size)

    def plan(self, step: int) -> StepPlan:
        """Patch size, crop width and T of ``step`` (identical on every rank)."""
        rng = np.random.default_rng(derive_seed(self.seed, PLAN, step))
        p = int(rng.integers(self.min_patch_size, self.max_patch_size + 1))
        max_h = max(1, min(self.max_grid, self.min_sample_px // p))
        h = int(rng.integers(min(self.min_grid, max_h), max_h + 1))
        t = max_timesteps(h, self.token_budget)
        if t < 1:
            raise ValueError(f"token budget {self.token_budget} cannot hold a {h}x{h} crop")
        return StepPlan(step, p, h, t)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            rng = np.random.default_rng(derive_seed(self.seed, ORDER, epoch))
            self._perm_cache = (epoch, rng.permutation(self.num_samples))
        return self._perm_cache[1]

    def global_indices(self, step: int) -> np.ndarray:
        """Manifest indices of the global batch of ``step`` ``[global_batch]``.

        Epochs are concatenated permutations, so a batch may straddle two epochs.
        """
        start = step * self.global_batch
        pos = np.arange(start, start + self.global_batch)
        epochs = pos // self.num_samples
        out = np.empty(self.global_batch, dtype=np.int64)
        for e in np.unique(epochs):  # at most a few epochs per batch
            sel = epochs == e
            out[sel] = self._epoch_order(int(e))[pos[sel] % self.num_samples]
        return out

    def micro_batch_requests(self, step: int, micro_index: int) -> list[SampleRequest]:
        """The requests of one micro-batch (``micro_index`` counts over all ranks)."""
        plan = self.plan(step)
        idx = self.global_indices(step)
        lo = micro_index * self.micro_batch
        return [
            SampleRequest(
                index=int(idx[lo + j]),
                patch_size=plan.patch_size,
                crop_px=plan.grid * plan.patch_size,
                timesteps=plan.timesteps,
                seed=derive_seed(self.seed, SAMPLE, step, lo + j),
                step=step,
                micro_index=micro_index,
            )
            for j in range(self.micro_batch)
        ]

    def __iter__(self) -> Iterator[list[SampleRequest]]:
        n_micro = self.global_batch // self.micro_batch
        for step in range(self.start_step, self.end_step):
            for j in range(self.rank, n_micro, self.world_size):
                yield self.micro_batch_requests(step, j)

    def __len__(self) -> int:
        return (self.end_step - self.start_step) * self.micro_batches_per_rank
