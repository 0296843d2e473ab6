"""Eval settings and suite files: the pydantic models that ``--set``, a suite's ``settings:`` and
the suite YAML itself are validated against (through :func:`geolatent.config.load_config`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from geolatent.config import StrictModel, load_config
from geolatent.evals.protocols.finetune import FinetuneProbeConfig
from geolatent.evals.protocols.knn import KNNConfig
from geolatent.evals.protocols.linear import LinearProbeConfig


class EvalSettings(StrictModel):
    """Everything a run can override (spec defaults otherwise)."""

    seeds: int = Field(3, ge=1)
    label_fractions: tuple[float, ...] = (1.0,)
    knn: KNNConfig = Field(default_factory=KNNConfig)
    linear: LinearProbeConfig = Field(default_factory=LinearProbeConfig)
    finetune: FinetuneProbeConfig = Field(default_factory=FinetuneProbeConfig)
    val_fraction: float = 0.2
    embed_batch_size: int = 64
    n_boot: int = 1000
    device: str = "cpu"
    precision: str = "fp32"  # fp32 | bf16 | int8 | auto (geolatent.model.precision)

    @classmethod
    def from_dict(cls, d: Mapping | None, overrides: Sequence[str] | None = None,
                  flag: str = "--set") -> EvalSettings:  # fmt: skip
        """Validate a settings mapping (``{"linear": {"epochs": 5}}``) plus ``a.b=v`` overrides.

        Raises:
            geolatent.config.ConfigError: an unknown setting or a bad value (the key path named).
        """
        return load_config(d or {}, cls, overrides, what="eval settings", flag=flag)


class SuiteTask(StrictModel):
    """One task of a suite: a registered name or a dataset file, with where its data is."""

    name: str
    root: str | None = None
    options: dict[str, Any] | None = None
    patch_size: int | None = None


class SuiteModel(StrictModel):
    """One model of a suite: exactly one of a checkpoint, a random-init size or a baseline."""

    label: str | None = None
    checkpoint: str | None = None
    random_init: str | None = None
    baseline: str | None = None
    seed: int | None = None


class SuiteConfig(StrictModel):
    """A suite YAML (``geolatent eval --suite FILE``); see :func:`geolatent.evals.run_suite`."""

    name: str = "suite"
    tasks: list[str | SuiteTask] = []
    models: dict[str, SuiteModel] = {}
    protocols: list[str] = ["linear"]
    seeds: int | None = Field(None, ge=1)
    label_fractions: list[float] | None = None
    settings: EvalSettings = Field(default_factory=EvalSettings)
    data_root: str | None = None
    out_dir: str | None = None
    cache_dir: str | None = None

    def task_entries(self) -> list[SuiteTask]:
        """Every task as a :class:`SuiteTask` (a bare name becomes ``{name: ...}``)."""
        return [SuiteTask(name=t) if isinstance(t, str) else t for t in self.tasks]

    def effective_settings(self) -> EvalSettings:
        """``settings`` with the top-level ``seeds`` / ``label_fractions`` applied."""
        s = self.settings.model_copy(deep=True)
        if self.seeds is not None:
            s.seeds = self.seeds
        if self.label_fractions is not None:
            s.label_fractions = tuple(self.label_fractions)
        return s


def load_suite(path_or_dict: str | os.PathLike | Mapping) -> tuple[SuiteConfig, Path]:
    """The validated suite and the folder relative paths are resolved against."""
    if isinstance(path_or_dict, Mapping):
        return load_config(path_or_dict, SuiteConfig, what="eval suite"), Path.cwd()
    p = Path(path_or_dict)
    return load_config(p, SuiteConfig, what="eval suite"), p.parent
