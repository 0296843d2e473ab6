"""The Latent MIM Lite objective: augmentation, two masked views, and the v1 total loss.

Per micro-batch: one of the 8 dihedral transforms is applied to the whole batch, the batch is
masked twice (``modality_cross_random``), both views run through the encoder and decoder, and
``loss = (L_patch(a) + L_patch(b)) / 2 + 0.1 * InfoNCE(a, b)`` against the frozen target
projection of the unmasked (augmented) input.

:class:`PretrainObjective` is the ``nn.Module`` that DDP / FSDP wrap, so one ``forward`` holds
every use of the parameters. It runs the two views as one batch of ``2B`` sample-views; with
``chunk_size`` set it sorts the sample-views by attention cost and runs them in chunks of similar
token counts, which removes most of the padding of the packed attention (each sample is encoded
on its own, so the results are the same up to float rounding).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from geolatent.modalities import Modality
from geolatent.model.latent_mim import LatentMIM
from geolatent.model.tokens import MaskValue
from geolatent.pretrain.losses import (
    INFONCE_TAU,
    INFONCE_WEIGHT,
    PATCH_DISC_TAU,
    infonce_loss,
    patch_discrimination_loss,
    total_loss,
)
from geolatent.pretrain.masking import MaskedView, missing_tokens, modality_cross_random


class StepTimer:
    """Accumulates wall time per named section; synchronizes the device when ``sync``."""

    def __init__(self, device: torch.device | str = "cpu", sync: bool = True):
        self.device = torch.device(device)
        self.sync = sync
        self.seconds: dict[str, float] = {}

    def _barrier(self) -> None:
        if self.sync and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        self._barrier()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._barrier()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


@contextmanager
def _maybe(timer: StepTimer | None, name: str) -> Iterator[None]:
    if timer is None:
        yield
    else:
        with timer.section(name):
            yield


def make_views(
    inputs: dict[str, torch.Tensor],
    patch_size: int,
    generator_a: torch.Generator | None = None,
    generator_b: torch.Generator | None = None,
    encode_ratio: float = 0.5,
    decode_ratio: float = 0.5,
    modalities: dict[str, Modality] | None = None,
) -> tuple[MaskedView, MaskedView]:
    """Two independent ``modality_cross_random`` views of normalized inputs ``[B, H, W, T, C]``.

    ``modalities``: the model's view of each modality (its bandsets; default the registry's)."""
    mods = modalities or {}
    missing = {m: missing_tokens(m, x, patch_size, mods.get(m)) for m, x in inputs.items()}
    a = modality_cross_random(missing, encode_ratio, decode_ratio, generator_a)
    b = modality_cross_random(missing, encode_ratio, decode_ratio, generator_b)
    return a, b


class PretrainObjective(nn.Module):
    """Wraps a :class:`LatentMIM` and computes the v1 loss of two masked views.

    Args:
        model: the model (its ``target_projection`` is frozen).
        patch_disc_tau, infonce_tau, infonce_weight: loss settings (v1: 0.1, 0.1, 0.1).
        chunk_size: sample-views per model call (None: all ``2B`` in one call).
    """

    def __init__(
        self,
        model: LatentMIM,
        patch_disc_tau: float = PATCH_DISC_TAU,
        infonce_tau: float = INFONCE_TAU,
        infonce_weight: float = INFONCE_WEIGHT,
        chunk_size: int | None = None,
    ):
        super().__init__()
        self.model = model
        self.patch_disc_tau = patch_disc_tau
        self.infonce_tau = infonce_tau
        self.infonce_weight = infonce_weight
        self.chunk_size = chunk_size

    def _run(
        self,
        inputs: dict[str, torch.Tensor],
        timestamps: torch.Tensor,
        patch_size: int,
        masks: dict[str, torch.Tensor],
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Model on ``2B`` sample-views; returns decoded per modality and ``project_aggregated``."""
        n = timestamps.shape[0]
        if self.chunk_size is None or self.chunk_size >= n:
            enc, dec = self.model(inputs, timestamps, patch_size, masks)
            return dec, enc.project_aggregated
        # Attention cost of a sample-view grows like e^2 (encoder) + e*d (decoder).
        e = sum((t == MaskValue.ONLINE_ENCODER).flatten(1).sum(1) for t in masks.values())
        d = sum((t == MaskValue.DECODER).flatten(1).sum(1) for t in masks.values())
        order = torch.argsort(e * e + e * d, stable=True)
        decs, projs = [], []
        for idx in order.split(self.chunk_size):
            enc, dec = self.model(
                {m: x[idx] for m, x in inputs.items()},
                timestamps[idx],
                patch_size,
                {m: t[idx] for m, t in masks.items()},
            )
            decs.append(dec)
            projs.append(enc.project_aggregated)
        inverse = torch.argsort(order)
        decoded = {m: torch.cat([dc[m] for dc in decs])[inverse] for m in decs[0]}
        return decoded, torch.cat(projs)[inverse]

    def forward(
        self,
        inputs: dict[str, torch.Tensor],
        timestamps: torch.Tensor,
        patch_size: int,
        mask_a: dict[str, torch.Tensor],
        mask_b: dict[str, torch.Tensor],
        timer: StepTimer | None = None,
    ) -> dict[str, torch.Tensor]:
        """Loss of two views of one micro-batch.

        Args:
            inputs: per modality normalized ``[B, H, W, T, C]`` (already augmented).
            timestamps: int ``[B, T, 3]``.
            patch_size: p.
            mask_a, mask_b: per modality token roles ``[B, H/p, W/p, T, S]``.
            timer: optional; records ``forward`` and ``loss`` time.

        Returns:
            0-d float32 tensors ``loss`` (with grad), ``patch_disc_a``, ``patch_disc_b``,
            ``infonce``.
        """
        b = timestamps.shape[0]
        with _maybe(timer, "forward"):
            targets = self.model.targets(inputs, patch_size)
            both = {m: torch.cat([x, x]) for m, x in inputs.items()}
            masks = {m: torch.cat([mask_a[m], mask_b[m]]) for m in inputs}
            decoded, proj = self._run(both, torch.cat([timestamps, timestamps]), patch_size, masks)
        with _maybe(timer, "loss"), torch.autocast(proj.device.type, enabled=False):
            # Losses in float32 whatever the autocast dtype of the model.
            targets = {m: t.float() for m, t in targets.items()}
            dec_a = {m: x[:b].float() for m, x in decoded.items()}
            dec_b = {m: x[b:].float() for m, x in decoded.items()}
            la = patch_discrimination_loss(dec_a, targets, mask_a, self.patch_disc_tau)
            lb = patch_discrimination_loss(dec_b, targets, mask_b, self.patch_disc_tau)
            proj = proj.float()
            nce = infonce_loss(proj[:b], proj[b:], self.infonce_tau)
            loss = total_loss(la, lb, nce, self.infonce_weight)
        return {"loss": loss, "patch_disc_a": la, "patch_disc_b": lb, "infonce": nce}
