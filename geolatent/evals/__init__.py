"""Evaluation: benchmark adapters, kNN / linear-probe / fine-tuning protocols, metrics with
bootstrap intervals, an embedding cache and suite reports.

    from geolatent.evals import run_eval, run_suite
    results = run_eval("m-eurosat", "path/to/OlmoEarth-v1-Nano", protocol="knn", seeds=3)
"""

from geolatent.evals.cache import EmbeddingCache
from geolatent.evals.datasets.custom import custom_task, load_custom_task
from geolatent.evals.metrics import bootstrap_ci, compute_metrics
from geolatent.evals.protocols.finetune import FinetuneProbeConfig, finetune
from geolatent.evals.protocols.knn import KNNConfig, knn_predict
from geolatent.evals.protocols.linear import LinearProbeConfig, fit_linear_probe, linear_probe
from geolatent.evals.results import EvalResult, MetricSummary
from geolatent.evals.runner import (
    ModelSpec,
    SuiteResult,
    run_eval,
    run_suite,
)
from geolatent.evals.settings import EvalSettings, SuiteConfig
from geolatent.evals.tasks import TASKS, EvalTask, get_task

__all__ = [
    "TASKS", "EmbeddingCache", "EvalResult", "EvalSettings", "EvalTask", "FinetuneProbeConfig",
    "KNNConfig", "LinearProbeConfig", "MetricSummary", "ModelSpec", "SuiteConfig", "SuiteResult",
    "bootstrap_ci",
    "compute_metrics", "custom_task", "finetune", "fit_linear_probe", "get_task", "knn_predict",
    "linear_probe", "load_custom_task", "run_eval", "run_suite",
]  # fmt: skip
