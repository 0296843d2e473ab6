"""Running evaluations: one task x model x protocol over seeds and label fractions
(:func:`run_eval`), and sweeps described in a YAML / dict suite (:func:`run_suite`).

Selection hygiene: anything that is chosen (fine-tuning learning rate, several linear-probe
learning rates, the ridge penalty) is chosen on a validation split: the benchmark's own when it
has one, else a fixed, seeded 20% held out from train (the same for every seed). The test split
is only ever predicted once per seed, by the selected configuration.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from geolatent.evals.baselines import (
    BASELINES,
    logistic_regression,
    ridge_regression,
    split_features,
    standardizer,
)
from geolatent.evals.cache import EmbeddingCache, cache_key, model_fingerprint
from geolatent.evals.datasets.base import EvalDataset, SplitData, stratified_split
from geolatent.evals.encode import embed_split
from geolatent.evals.metrics import (
    PRIMARY_METRIC,
    bootstrap_ci,
    sample_stats,
    scores_from_stats,
)
from geolatent.evals.protocols.finetune import finetune
from geolatent.evals.protocols.knn import knn_predict
from geolatent.evals.protocols.linear import linear_probe
from geolatent.evals.report import write_report
from geolatent.evals.results import EvalResult, MetricSummary
from geolatent.evals.settings import EvalSettings, load_suite
from geolatent.evals.tasks import EvalTask, get_task

PROTOCOLS = ("knn", "linear", "finetune")


# ------------------------------------------------------------------------------------ models


@dataclass
class ModelSpec:
    """What is evaluated: a checkpoint, an explicitly random-initialized encoder, or a
    baseline. Exactly one of ``checkpoint``, ``random_init``, ``baseline`` is set (never a
    silent fallback to random weights)."""

    label: str
    checkpoint: str | None = None
    random_init: str | None = None  # model size, e.g. "nano"
    baseline: str | None = None  # "band-stats"
    seed: int = 0  # random-init seed
    model: Any = field(default=None, repr=False)  # an already loaded LatentMIM

    def __post_init__(self):
        given = [v for v in (self.checkpoint, self.random_init, self.baseline, self.model)
                 if v is not None]  # fmt: skip
        if len(given) != 1:
            raise ValueError(
                f"model {self.label!r}: give exactly one of checkpoint, random_init, baseline"
            )
        if self.baseline is not None and self.baseline not in BASELINES:
            raise ValueError(f"unknown baseline {self.baseline!r}; known: {BASELINES}")

    @classmethod
    def from_any(cls, value, label: str | None = None) -> ModelSpec:
        """A path (checkpoint), ``"random-init:<size>[:seed]"``, ``"baseline:band-stats"``, a
        dict of the fields, a loaded model, or a ModelSpec."""
        if isinstance(value, ModelSpec):
            return value
        if isinstance(value, torch.nn.Module):
            return cls(label or "model", model=value)
        if isinstance(value, Mapping):
            return cls(label=label or value.get("label") or "model",
                       **{k: v for k, v in value.items() if k != "label"})  # fmt: skip
        text = str(value)
        if text.startswith("random-init:"):
            parts = text.split(":")
            seed = int(parts[2]) if len(parts) > 2 else 0
            return cls(label or f"random-{parts[1]}", random_init=parts[1], seed=seed)
        if text.startswith("baseline:"):
            return cls(label or text.split(":", 1)[1], baseline=text.split(":", 1)[1])
        return cls(label or Path(text).name, checkpoint=text)

    def load(self, device: str = "cpu"):
        """The LatentMIM to evaluate (None for a baseline)."""
        import geolatent

        if self.model is not None:
            return self.model.to(device).eval()
        if self.checkpoint is not None:
            return geolatent.load_model(self.checkpoint, device=device)
        if self.random_init is not None:
            torch.manual_seed(self.seed)
            return geolatent.build_model(self.random_init).to(device).eval()
        return None

    def describe(self) -> dict:
        return {"label": self.label, "checkpoint": self.checkpoint,
                "random_init": self.random_init, "baseline": self.baseline,
                "seed": self.seed if self.random_init else None}  # fmt: skip


# ---------------------------------------------------------------------------------- helpers


def _progress(enabled: bool) -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), disable=not enabled, transient=True,
    )  # fmt: skip


def label_subset(labels: np.ndarray, fraction: float, seed: int, task_type: str) -> np.ndarray:
    """Indices of a ``fraction`` of the training samples (stratified for classification,
    at least one sample per class)."""
    n = len(labels)
    if fraction >= 1.0:
        return np.arange(n)
    if task_type == "classification":
        part = stratified_split(labels, [fraction, 1 - fraction], seed)[0]
        rng = np.random.default_rng(seed)
        # Guarantee every class at least one example (tiny fractions of rare classes round to 0).
        extra = [rng.choice(np.flatnonzero(labels == c)) for c in np.unique(labels)
                 if not np.isin(np.flatnonzero(labels == c), part).any()]  # fmt: skip
        return np.sort(np.concatenate([part, np.array(extra, np.int64)]))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, max(1, int(round(fraction * n))), replace=False))


def _holdout(train: SplitData, task_type: str, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(fit indices, validation indices) of a fixed seeded hold-out of train."""
    y = train.labels if task_type == "classification" else np.zeros(len(train), np.int64)
    fit, val = stratified_split(y, [1 - fraction, fraction], seed=12345)
    return fit, val


def _needs_val(protocol: str, spec: ModelSpec, task_type: str, s: EvalSettings) -> bool:
    if protocol == "finetune":
        return True
    if protocol == "linear" and spec.baseline:
        return True  # ridge / logistic penalty selection
    return protocol == "linear" and isinstance(s.linear.lr, list | tuple) and len(s.linear.lr) > 1


# ------------------------------------------------------------------------------------ run_eval


def _at_precision(net, precision: str, shared: bool):
    """``net`` with its encoder at ``precision``; the embedding cache key names the precision.

    A model object the caller passed in (``shared``) is copied, never converted in place.
    """
    if net is None or precision == "fp32":
        return net
    import copy

    from geolatent.evals.cache import model_fingerprint
    from geolatent.model.precision import set_precision

    fp = model_fingerprint(net)  # of the fp32 weights: int8 state dicts hold packed params
    if shared:
        net = copy.deepcopy(net)
    resolved = set_precision(net, precision, "precision")
    net._geolatent_fingerprint = f"{fp}:{resolved.name}"
    return net


def run_eval(
    task: str | EvalTask,
    model,
    protocol: str = "linear",
    seeds: int | None = None,
    label_fractions: Sequence[float] | None = None,
    data_root=None,
    dataset_options: Mapping | None = None,
    settings: EvalSettings | Mapping | None = None,
    cache: EmbeddingCache | str | None = None,
    patch_size: int | None = None,
    progress: bool | Progress = True,
    _loaded: dict | None = None,
) -> list[EvalResult]:
    """Evaluate ``model`` on ``task`` with ``protocol``; one result per label fraction.

    Args:
        task: a task name from :data:`~geolatent.evals.tasks.TASKS` or an :class:`EvalTask`.
        model: checkpoint path, ``"random-init:nano"``, ``"baseline:band-stats"``, a loaded
            model or a :class:`ModelSpec`.
        protocol: ``knn``, ``linear`` or ``finetune``.
        seeds: number of seeds (0, 1, ..., n-1); default from ``settings`` (3).
        label_fractions: fractions of the training labels to use (e.g. 0.01, 0.05, 0.2, 1.0).
        data_root: the benchmark folder (default ``$GEOLATENT_DATA_DIR/<dataset>``).
        dataset_options: adapter options overriding the task's.
        settings: :class:`EvalSettings` or a dict of overrides (``{"linear": {"epochs": 5}}``).
        cache: embedding cache (folder or :class:`EmbeddingCache`); default the user cache.
        patch_size: override the task's evaluation patch size (default 4; 1 for pixel series).
        progress: show rich progress bars (or pass a running ``Progress``).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    t = get_task(task) if isinstance(task, str) else task
    s = settings if isinstance(settings, EvalSettings) else EvalSettings.from_dict(settings)
    spec = ModelSpec.from_any(model)
    cache = cache if isinstance(cache, EmbeddingCache) else EmbeddingCache(cache)
    n_seeds = seeds if seeds is not None else s.seeds
    fractions = tuple(label_fractions) if label_fractions is not None else s.label_fractions
    p = patch_size or t.patch_size
    loaded = _loaded if _loaded is not None else {}

    dataset: EvalDataset = t.build(data_root, **(dataset_options or {}))
    tt = dataset.task_type
    check_class_labels(t.name, dataset)
    if protocol == "knn" and tt == "segmentation":
        raise ValueError("kNN is not defined for segmentation; use linear or finetune")
    if spec.baseline and protocol == "finetune":
        raise ValueError("baselines have no encoder to fine-tune; use knn or linear")
    net = None
    if not spec.baseline:
        key = (spec.label, spec.checkpoint, spec.random_init, spec.seed, id(spec.model))
        if key not in loaded:
            loaded[key] = _at_precision(spec.load(s.device), s.precision, spec.model is not None)
        net = loaded[key]

    timings: dict[str, float] = {}
    bar = progress if isinstance(progress, Progress) else _progress(bool(progress))
    own_bar = not isinstance(progress, Progress)
    if own_bar:
        bar.start()
    try:
        t0 = time.perf_counter()
        train, test = dataset.split("train"), dataset.split("test")
        val_split: SplitData | None = None
        fit_idx = np.arange(len(train))
        if _needs_val(protocol, spec, tt, s):
            if dataset.has_split("val"):
                val_split = dataset.split("val")
            else:
                fit_idx, val_idx = _holdout(train, tt, s.val_fraction)
                val_split = train.subset(val_idx)
        timings["read_labels_s"] = time.perf_counter() - t0

        features: dict[str, np.ndarray] = {}
        if protocol != "finetune":
            t0 = time.perf_counter()
            dfp = dataset.fingerprint()
            named = [("train", train), ("test", test)]
            if val_split is not None and dataset.has_split("val"):
                named.append(("val", val_split))
            for name, split in named:
                features[name] = _features(net, spec, dataset, dfp, name, split, p, s, cache, bar)
            if val_split is not None and not dataset.has_split("val"):
                features["val"] = features["train"][val_idx]
            timings["features_s"] = time.perf_counter() - t0

        pool_labels = train.labels[fit_idx]
        results = []
        for fraction in fractions:
            per_seed_stats, per_seed_info = [], []
            t0 = time.perf_counter()
            job = bar.add_task(f"{t.name} {spec.label} {protocol} f={fraction:g}", total=n_seeds)
            for seed in range(n_seeds):
                sub = fit_idx[label_subset(pool_labels, fraction, seed, tt)]
                pred, info = _run_protocol(protocol, spec, net, dataset, train, sub, val_split,
                                           test, features, p, s, seed)  # fmt: skip
                per_seed_stats.append(sample_stats(tt, test.labels, pred, dataset.num_classes,
                                                   dataset.ignore_index))  # fmt: skip
                per_seed_info.append({"seed": seed, "n_train": int(len(sub)), **info})
                bar.advance(job)
            bar.remove_task(job)
            n_val = 0 if val_split is None else len(val_split)
            times = {**timings, "protocol_s": time.perf_counter() - t0}
            results.append(_summarize(t, spec, protocol, fraction, n_seeds, p, dataset,
                                      per_seed_stats, per_seed_info, len(fit_idx), n_val,
                                      len(test), s, times))  # fmt: skip
        return results
    finally:
        if own_bar:
            bar.stop()


def check_class_labels(name: str, dataset: EvalDataset) -> None:
    """Class ids of a class task must lie in ``0..num_classes-1`` (besides ``ignore_index``):
    anything else (often regression targets given to a class adapter) is named here instead of
    failing deep inside a loss."""
    if dataset.task_type not in ("classification", "segmentation"):
        return
    for split in ("train", "test"):
        y = np.asarray(dataset.split(split).labels)
        y = y[y != dataset.ignore_index]
        if y.size and (y.min() < 0 or y.max() >= dataset.num_classes or
                       not np.allclose(y, np.round(y))):
            raise ValueError(
                f"task {name!r}: {split} labels range {y.min():g}..{y.max():g} but the task has "
                f"{dataset.num_classes} classes (ids 0..{dataset.num_classes - 1}); these look "
                "like values, not class ids: evaluate them as a regression task")


def _features(net, spec: ModelSpec, dataset: EvalDataset, dfp: str, name: str,
              split: SplitData, p: int, s: EvalSettings, cache: EmbeddingCache,
              bar: Progress) -> np.ndarray:  # fmt: skip
    pooled = dataset.task_type != "segmentation"
    if spec.baseline:
        return split_features(split, per_pixel=not pooled)
    key = cache_key(model_fingerprint(net), dfp, name, p, "pooled" if pooled else "map")
    hit = cache.get(key)
    if hit is not None:
        return hit
    job = bar.add_task(f"embedding {dataset.name} {name}", total=len(split))
    chunks = embed_split(net, split, p, pooled, s.embed_batch_size,
                         on_chunk=lambda k: bar.advance(job, k))  # fmt: skip
    meta = {"model": spec.describe(), "dataset": dataset.describe(), "split": name,
            "patch_size": p, "pooled": pooled}  # fmt: skip
    out = cache.get_or_compute(key, len(split), chunks, meta)
    bar.remove_task(job)
    return out


def _run_protocol(protocol, spec, net, dataset, train, sub, val_split, test, features, p, s, seed):
    tt, c, ign = dataset.task_type, dataset.num_classes, dataset.ignore_index
    if protocol == "knn":
        x_train, x_test = features["train"][sub], features["test"]
        if spec.baseline:  # raw statistics have unequal scales: standardize before cosine
            z = standardizer(x_train)
            x_train, x_test = z(x_train), z(x_test)
        pred = knn_predict(x_train, train.labels[sub], x_test, tt, c, s.knn)
        return pred, {}
    if protocol == "linear":
        if spec.baseline and tt == "regression":
            return ridge_regression(features["train"][sub], train.labels[sub], features["test"],
                                    features["val"], val_split.labels)  # fmt: skip
        if spec.baseline:
            return logistic_regression(features["train"][sub], train.labels[sub],
                                       features["test"], features["val"], val_split.labels, tt, c,
                                       ignore_index=ign, seed=seed)  # fmt: skip
        xv = features.get("val")
        yv = None if val_split is None else val_split.labels
        return linear_probe(features["train"][sub], train.labels[sub], features["test"], tt, c,
                            s.linear, seed, xv, yv, ign)  # fmt: skip
    return finetune(net, train.subset(sub), val_split, test, tt, c, p, s.finetune, seed, ign)


def _summarize(t, spec, protocol, fraction, n_seeds, p, dataset, per_seed_stats, per_seed_info,
               n_train, n_val, n_test, s: EvalSettings, timings) -> EvalResult:  # fmt: skip
    tt, c = dataset.task_type, dataset.num_classes
    per_seed = [scores_from_stats(tt, st.sum(0), c) for st in per_seed_stats]
    ci = bootstrap_ci(tt, per_seed_stats, c, n_boot=s.n_boot)
    metrics = {}
    for k in per_seed[0]:
        vals = np.array([float(d[k]) for d in per_seed])
        lo, hi = ci.get(k, (float("nan"), float("nan")))
        metrics[k] = MetricSummary(float(np.nanmean(vals)), float(np.nanstd(vals)), lo, hi,
                                   vals.tolist())  # fmt: skip
    config = {"knn": s.knn, "linear": s.linear, "finetune": s.finetune}.get(protocol)
    return EvalResult(
        task=t.name, task_type=tt, model=spec.describe(), protocol=protocol,
        label_fraction=float(fraction), seeds=list(range(n_seeds)), patch_size=p,
        primary_metric=PRIMARY_METRIC[tt], metrics=metrics, n_train=n_train, n_val=n_val,
        n_test=n_test, dataset=dataset.describe(),
        config=config.model_dump(mode="json") if config else {}, info=per_seed_info,
        timings=timings,
    )  # fmt: skip


# ----------------------------------------------------------------------------------- run_suite


@dataclass
class SuiteResult:
    name: str
    results: list[EvalResult]
    skipped: list[dict]
    files: dict[str, Path]


def _resolve(path: str | None, base: Path) -> str | None:
    if path is None:
        return None
    q = Path(path).expanduser()
    if q.is_absolute() or q.exists():
        return str(q)
    return str(base / q) if (base / q).exists() else str(q)


def run_suite(suite, out_dir=None, cache: EmbeddingCache | str | None = None,
              progress: bool = True) -> SuiteResult:  # fmt: skip
    """Run a sweep and write ``results.json``, ``results.md`` and ``results.png``.

    Suite keys: ``name``; ``tasks`` (names, or dicts with ``name``, ``root``, ``options``,
    ``patch_size``); ``models`` (label -> ``{checkpoint | random_init | baseline, seed}``);
    ``protocols``; ``seeds``; ``label_fractions``; ``settings`` (:class:`EvalSettings`
    overrides); ``data_root`` (default root for every task); ``out_dir``; ``cache_dir``.
    Relative paths resolve against the working directory, then the suite file's folder.
    Combinations that are not defined (kNN on segmentation, baselines beyond the linear
    protocol) are skipped and listed.
    """
    cfg, base = load_suite(suite)
    name = cfg.name
    settings = cfg.effective_settings()
    out = Path(out_dir or _resolve(cfg.out_dir, base) or f"eval_results/{name}")
    cache = cache if isinstance(cache, EmbeddingCache) else EmbeddingCache(
        cache or _resolve(cfg.cache_dir, base))  # fmt: skip
    models = [ModelSpec.from_any({k: (_resolve(v, base) if k == "checkpoint" else v)
                                  for k, v in m.model_dump(exclude_none=True).items()}, label)
              for label, m in cfg.models.items()]  # fmt: skip
    protocols = cfg.protocols
    results, skipped = [], []
    loaded: dict = {}
    with _progress(progress) as bar:
        for task_entry in cfg.task_entries():
            entry = task_entry.model_dump(exclude_none=True)
            task = get_task(entry["name"])
            root = _resolve(entry.get("root", cfg.data_root), base)
            for spec in models:
                for protocol in protocols:
                    why = _undefined(task, entry, spec, protocol, root)
                    if why:
                        skipped.append({"task": task.name, "model": spec.label,
                                        "protocol": protocol, "reason": why})  # fmt: skip
                        continue
                    results += run_eval(task, spec, protocol, data_root=root,
                                        dataset_options=entry.get("options"), settings=settings,
                                        cache=cache, patch_size=entry.get("patch_size"),
                                        progress=bar, _loaded=loaded)  # fmt: skip
    files = write_report(name, results, skipped, out)
    return SuiteResult(name, results, skipped, files)


def _undefined(task: EvalTask, entry: dict, spec: ModelSpec, protocol: str, root) -> str | None:
    kind = task.build(root, **(entry.get("options") or {})).task_type
    if protocol == "knn" and kind == "segmentation":
        return "kNN is not defined for segmentation"
    if spec.baseline and protocol == "finetune":
        return "baselines have no encoder to fine-tune"
    return None
