"""What one evaluation yields: a metric summarized over seeds and one task x model x protocol
x label-fraction result. Its own module so the runner (which makes results) and the report
(which renders them) both import it and not each other."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class MetricSummary:
    mean: float
    std: float
    ci_low: float
    ci_high: float
    per_seed: list[float]


@dataclass
class EvalResult:
    """One task x model x protocol x label fraction, summarized over seeds."""

    task: str
    task_type: str
    model: dict
    protocol: str
    label_fraction: float
    seeds: list[int]
    patch_size: int
    primary_metric: str
    metrics: dict[str, MetricSummary]
    n_train: int
    n_val: int
    n_test: int
    dataset: dict
    config: dict
    info: list[dict]
    timings: dict[str, float]

    @property
    def primary(self) -> MetricSummary:
        return self.metrics[self.primary_metric]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
