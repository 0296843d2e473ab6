"""Process-group setup and model wrapping for data-parallel pretraining.

Single process (no ``torchrun``) is the default and needs nothing. Under ``torchrun`` the ranks
form a process group (NCCL on GPU, gloo on CPU) and the objective is wrapped with DDP or FSDP2
(``torch.distributed.fsdp.fully_shard``: per transformer block, the frozen target projection,
then the root; bf16 parameters with fp32 gradient reduction on GPU).
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistInfo:
    """Where this process sits."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False
    """True when :func:`setup` created the process group (and :func:`teardown` destroys it)."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> DistInfo:
    """Read the ``torchrun`` environment, pick the device and join the process group.

    Args:
        device: ``auto`` (GPU when available), ``cpu`` or ``cuda``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    from geolatent.runtime import resolve_device

    use_cuda = resolve_device(device, "train.device").type == "cuda"  # DeviceError names the key
    dev = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", device_id=dev if use_cuda else None)
        owns = True
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank, world, local, dev, owns)


def teardown(info: DistInfo) -> None:
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_reduce_(t: torch.Tensor, info: DistInfo, op: str = "mean") -> torch.Tensor:
    """In-place sum or mean over ranks (no-op in a single process)."""
    if info.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        if op == "mean":
            t /= info.world_size
    return t


def broadcast_object(obj, info: DistInfo):
    """Rank 0's ``obj`` on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap(
    objective: nn.Module, info: DistInfo, parallel: str = "ddp", bf16: bool = False
) -> nn.Module:
    """Wrap the objective for data parallelism (returned unchanged in a single process).

    Args:
        objective: a :class:`~geolatent.pretrain.objective.PretrainObjective` on ``info.device``.
        parallel: ``ddp`` or ``fsdp``.
        bf16: FSDP keeps bf16 parameter copies for compute and reduces gradients in fp32.
    """
    if not info.distributed:
        return objective
    if parallel == "ddp":
        # Decode-only modalities' encoder embeddings, and bandsets with no encoded token in a
        # batch, get no gradient: DDP must look for unused parameters.
        ids = [info.device.index] if info.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(
            objective, device_ids=ids, find_unused_parameters=True
        )
    if parallel == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        # Inputs stay float32: the -99999 missing value must survive exactly until the patch
        # embedding has masked it (bf16 would round it); autocast does the compute casts.
        mp = MixedPrecisionPolicy(
            param_dtype=torch.bfloat16 if bf16 else None,
            reduce_dtype=torch.float32 if bf16 else None,
            cast_forward_inputs=False,
        )
        model = objective.model
        for blk in [*model.encoder.blocks, *model.decoder.blocks]:
            fully_shard(blk, mp_policy=mp)
        # The target projection is called on its own (outside the encoder), so it is its own unit.
        fully_shard(model.target_projection, mp_policy=mp)
        fully_shard(objective, mp_policy=mp)
        return objective
    raise ValueError(f"unknown parallel mode {parallel!r}; use 'ddp' or 'fsdp'")


def gradient_sync(module: nn.Module, enabled: bool) -> AbstractContextManager:
    """Context in which backward does (or skips, for accumulation) the gradient reduction."""
    if isinstance(module, nn.parallel.DistributedDataParallel):
        return nullcontext() if enabled else module.no_sync()
    if hasattr(module, "set_requires_gradient_sync"):  # FSDP2
        module.set_requires_gradient_sync(enabled)
    return nullcontext()


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module
