"""Pretraining configuration: a validated YAML file, ``key=value`` overrides, saved with the run.

Defaults are the v1 recipe (spec section 3); the files in ``configs/pretrain/`` set the
per-size learning rate, weight decay and length. Unknown keys and invalid values are errors that
name the offending key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, model_validator

from geolatent.config import ConfigError, StrictModel, known_name
from geolatent.config import load_config as _load
from geolatent.modalities import MODALITIES
from geolatent.model.versions import SIZE_TABLE

CONFIG_NAME = "config.yaml"


__all__ = ["CONFIG_NAME", "ConfigError", "PretrainConfig", "config_from_dict", "load_config"]


class _Section(StrictModel):
    """A pretraining config section (the project's strict base)."""


class ModelSection(_Section):
    """Which model to train."""

    size: Annotated[str, known_name(SIZE_TABLE, "model size")] = "nano"
    """A name from the one size table, :data:`geolatent.model.versions.SIZE_TABLE`."""
    version: Literal["v1", "v1.1", "v1.2"] = "v1"
    """Architecture to build (see geolatent.model.versions). The v1.1+ training recipes (band
    dropout, v1.3's distillation heads) are not part of geolatent's trainer: it trains the
    architecture with the v1 objective."""
    drop_path: float = Field(0.1, ge=0.0, lt=1.0)
    init_from: str | None = None
    """Optional model folder or release id (any version) to start from instead of random
    weights."""


class BuiltinData(_Section):
    """The built-in sample scene, written as sample files into ``<run_dir>/data``."""

    num_samples: int = Field(16, ge=1)
    size_px: int = Field(64, ge=8)
    timesteps: int = Field(12, ge=1, le=12)
    seed: int = 0


class DataSection(_Section):
    """Sample files: a folder (``root``) or the built-in sample (``builtin``)."""

    root: str | None = None
    manifest: str | None = None
    """Manifest file; default ``<root>/manifest.jsonl``, built when absent."""
    builtin: BuiltinData | None = None
    modalities: list[str] | None = None
    """Load only these modalities (default: all found in the files)."""
    num_workers: int = Field(2, ge=0)
    prefetch_factor: int = Field(2, ge=1)
    max_retries: int = Field(8, ge=0)

    @model_validator(mode="after")
    def _source(self) -> DataSection:
        if (self.root is None) == (self.builtin is None):
            raise ValueError("set exactly one of data.root (sample folder) or data.builtin")
        unknown = [m for m in self.modalities or [] if m not in MODALITIES]
        if unknown:
            raise ValueError(f"unknown modalities {unknown}; known: {list(MODALITIES)}")
        return self


class SamplerSection(_Section):
    """Per-step patch size, crop width and token budget (v1: p in 1..8, h in 1..12, 2250)."""

    min_patch_size: int = Field(1, ge=1, le=8)
    max_patch_size: int = Field(8, ge=1, le=8)
    min_grid: int = Field(1, ge=1)
    max_grid: int = Field(12, ge=1)
    token_budget: int = Field(2250, ge=1)

    @model_validator(mode="after")
    def _range(self) -> SamplerSection:
        if self.min_patch_size > self.max_patch_size:
            raise ValueError(
                f"min_patch_size {self.min_patch_size} > max_patch_size {self.max_patch_size}"
            )
        if self.min_grid > self.max_grid:
            raise ValueError(f"min_grid {self.min_grid} > max_grid {self.max_grid}")
        from geolatent.pretrain.sampler import max_timesteps

        if max_timesteps(self.max_grid, self.token_budget) < 1:
            raise ValueError(
                f"token_budget {self.token_budget} cannot hold a {self.max_grid}x{self.max_grid} "
                "crop of all modalities"
            )
        return self


class MaskingSection(_Section):
    strategy: Literal["modality_cross_random"] = "modality_cross_random"
    encode_ratio: float = Field(0.5, gt=0.0, le=1.0)
    decode_ratio: float = Field(0.5, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _sum(self) -> MaskingSection:
        if self.encode_ratio + self.decode_ratio > 1.0:
            raise ValueError("encode_ratio + decode_ratio must be at most 1")
        return self


class LossSection(_Section):
    patch_disc_tau: float = Field(0.1, gt=0.0)
    infonce_tau: float = Field(0.1, gt=0.0)
    infonce_weight: float = Field(0.1, ge=0.0)


class OptimizerSection(_Section):
    """AdamW with gradient clipping."""

    lr: float = Field(1e-3, gt=0.0)
    """Peak learning rate."""
    weight_decay: float = Field(0.002, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0.0)
    grad_clip: float | None = Field(1.0, gt=0.0)


class ScheduleSection(_Section):
    """Linear warm-up to the peak, then cosine decay to ``final_lr_ratio`` x peak."""

    max_steps: int = Field(370_000, ge=1)
    warmup_steps: int = Field(8000, ge=0)
    final_lr_ratio: float = Field(0.1, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _warmup(self) -> ScheduleSection:
        if self.warmup_steps > self.max_steps:
            raise ValueError(f"warmup_steps {self.warmup_steps} > max_steps {self.max_steps}")
        return self


class TrainSection(_Section):
    """Batching, device and parallelism."""

    global_batch_size: int = Field(512, ge=1)
    micro_batch_size: int = Field(32, ge=1)
    """Samples per forward pass on one rank; accumulation covers the rest of the global batch."""
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: bf16 autocast on GPU, fp32 on CPU."""
    parallel: Literal["ddp", "fsdp"] = "ddp"
    """Under torchrun: DistributedDataParallel or FSDP2 (``fully_shard``)."""
    chunk_size: int | Literal["auto"] | None = "auto"
    """Sample-views per model call, sorted by token count (auto: 2 on CPU, all on GPU)."""
    num_threads: int | None = None
    """torch intra-op threads per process (default: torch's choice)."""

    @model_validator(mode="after")
    def _batch(self) -> TrainSection:
        if self.global_batch_size % self.micro_batch_size:
            raise ValueError(
                f"global_batch_size {self.global_batch_size} is not a multiple of "
                f"micro_batch_size {self.micro_batch_size}"
            )
        if isinstance(self.chunk_size, int) and self.chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        return self


class CheckpointSection(_Section):
    every_steps: int = Field(1000, ge=1)
    keep_last: int = Field(2, ge=1)


class LoggingSection(_Section):
    every_steps: int = Field(1, ge=1)
    """How often the progress line and TensorBoard are updated (metrics.jsonl gets every step)."""
    progress: bool = True
    tensorboard: bool = True
    """Write TensorBoard events when the ``tensorboard`` package is installed."""


class PretrainConfig(_Section):
    """A whole pretraining run."""

    name: str = "pretrain"
    model: ModelSection = ModelSection()
    data: DataSection
    sampler: SamplerSection = SamplerSection()
    masking: MaskingSection = MaskingSection()
    loss: LossSection = LossSection()
    optimizer: OptimizerSection = OptimizerSection()
    schedule: ScheduleSection = ScheduleSection()
    train: TrainSection = TrainSection()
    checkpoint: CheckpointSection = CheckpointSection()
    logging: LoggingSection = LoggingSection()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def save(self, run_dir: str | os.PathLike) -> Path:
        """Write ``<run_dir>/config.yaml`` (atomically)."""
        path = Path(run_dir) / CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(self.to_yaml())
        os.replace(tmp, path)
        return path


def config_from_dict(data: dict[str, Any], source: str = "") -> PretrainConfig:
    """Validate a config mapping; raises :class:`ConfigError` listing every bad key."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"pretraining config {source} must be a mapping, got {type(data).__name__}"
        )
    return _load(data, PretrainConfig, what="pretraining", source_name=source)


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> PretrainConfig:
    """Read a YAML config and apply ``key=value`` overrides (the one loader,
    :func:`geolatent.config.load_config`)."""
    return _load(Path(path), PretrainConfig, overrides, what="pretraining")


# Keys that may change when resuming a run; anything else must match the saved config.
RESUMABLE_KEYS = (
    "schedule.max_steps", "data.num_workers", "data.prefetch_factor", "data.max_retries",
    "checkpoint", "logging", "train.num_threads",
)  # fmt: skip


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def resume_differences(saved: PretrainConfig, new: PretrainConfig) -> list[str]:
    """Keys whose change would make a resumed run differ from the interrupted one."""
    a = _flatten(saved.model_dump(mode="json"))
    b = _flatten(new.model_dump(mode="json"))
    diffs = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return [k for k in diffs if not any(k == r or k.startswith(r + ".") for r in RESUMABLE_KEYS)]
