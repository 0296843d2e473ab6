"""run_eval / run_suite / the CLI on a tiny in-memory benchmark, and on the shared real data."""

import datetime as dt
import json

import numpy as np
import pytest
import typer
import yaml
from typer.testing import CliRunner

from geolatent.evals import EmbeddingCache, ModelSpec, run_eval, run_suite
from geolatent.evals.datasets.base import EvalDataset, array_split, constant_timestamps
from geolatent.evals.runner import label_subset
from geolatent.evals.tasks import TASKS, EvalTask

BANDS = ["B02", "B03", "B04", "B08"]


class Tiny(EvalDataset):
    """Two classes of 8 x 8 px S2 chips that differ in brightness (and a segmentation twin)."""

    name = "tiny"
    split_names = ("train", "test")

    def __init__(self, root=None, kind="classification"):
        super().__init__(root)
        self.task_type = kind
        self.num_classes = 2

    def fingerprint_files(self):
        return []  # generated in memory: the adapter class and options identify the content

    def split(self, name):
        rng = np.random.default_rng({"train": 0, "test": 1}[name])
        n = 16 if name == "train" else 8
        y = np.arange(n) % 2
        x = rng.uniform(500, 900, size=(n, 8, 8, 1, 4)).astype(np.float32)
        x += (y * 2000)[:, None, None, None, None]
        labels = y
        if self.task_type == "segmentation":
            labels = np.broadcast_to(y[:, None, None], (n, 8, 8)).copy()
            labels[:, :, :4] = 1 - labels[:, :, :4]
            x[:, :, :4] = 3400 - x[:, :, :4]
        ts = constant_timestamps(n, [dt.date(2021, 6, 1)])
        return array_split({"sentinel2_l2a": x}, {"sentinel2_l2a": BANDS}, ts, labels)


FAST = {"linear": {"epochs": 10, "lr": 0.05, "batch_size": 8},
        "finetune": {"epochs": 1, "lrs": [1e-3], "batch_size": 8}, "n_boot": 100}  # fmt: skip


@pytest.fixture
def tiny_task(tmp_path, monkeypatch):
    task = EvalTask("tiny", Tiny, patch_size=4)
    monkeypatch.setitem(TASKS, "tiny", task)
    monkeypatch.setitem(TASKS, "tiny-seg", EvalTask("tiny-seg", Tiny, {"kind": "segmentation"}))
    return tmp_path


def test_model_spec_never_silently_random(tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        ModelSpec("x", checkpoint="a", random_init="nano")
    with pytest.raises(FileNotFoundError):
        ModelSpec.from_any(str(tmp_path / "missing")).load()
    spec = ModelSpec.from_any("random-init:nano:3")
    assert spec.random_init == "nano" and spec.seed == 3
    assert ModelSpec.from_any("baseline:band-stats").baseline == "band-stats"


def test_label_subset_stratified_keeps_every_class():
    y = np.array([0] * 50 + [1] * 5)
    idx = label_subset(y, 0.05, seed=0, task_type="classification")
    assert set(y[idx]) == {0, 1} and len(idx) <= 5
    assert (label_subset(y, 0.05, 0, "classification") == idx).all()
    assert len(label_subset(y, 1.0, 0, "classification")) == 55


def test_run_eval_protocols_and_cache(tiny_task, nano):
    cache = EmbeddingCache(tiny_task / "cache")
    knn = run_eval("tiny", nano, "knn", seeds=2, data_root=tiny_task, cache=cache, progress=False,
                   settings=FAST)[0]  # fmt: skip
    assert knn.primary_metric == "accuracy" and knn.n_test == 8 and cache.misses == 2
    m = knn.primary
    assert 0 <= m.ci_low <= m.mean <= m.ci_high <= 1 and len(m.per_seed) == 2
    lin = run_eval("tiny", nano, "linear", seeds=2, label_fractions=[0.5, 1.0], data_root=tiny_task,
                   cache=cache, progress=False, settings=FAST)  # fmt: skip
    assert cache.misses == 2 and cache.hits >= 2  # embeddings reused, not recomputed
    assert [r.label_fraction for r in lin] == [0.5, 1.0]
    assert lin[0].info[0]["n_train"] == 8 and lin[1].info[0]["n_train"] == 16
    assert lin[1].primary.mean > 0.9
    base = run_eval("tiny", "baseline:band-stats", "linear", seeds=1, data_root=tiny_task,
                    progress=False, settings=FAST)[0]  # fmt: skip
    assert base.primary.mean > 0.9 and base.model["baseline"] == "band-stats"
    ft = run_eval("tiny", nano, "finetune", seeds=1, data_root=tiny_task, progress=False,
                  settings=FAST)[0]  # fmt: skip
    assert ft.n_val > 0 and ft.info[0]["lr"] == 1e-3  # validation held out of train
    assert ft.n_train + ft.n_val == 16
    with pytest.raises(ValueError, match="baselines"):
        run_eval("tiny", "baseline:band-stats", "finetune", data_root=tiny_task, progress=False)
    bknn = run_eval("tiny", "baseline:band-stats", "knn", seeds=1, data_root=tiny_task,
                    progress=False, settings=FAST)[0]  # fmt: skip
    assert bknn.primary.mean > 0.9


def test_run_eval_segmentation(tiny_task, nano):
    seg = run_eval("tiny-seg", nano, "linear", seeds=1, data_root=tiny_task, progress=False,
                   settings=FAST)[0]  # fmt: skip
    assert seg.primary_metric == "miou" and 0 <= seg.primary.mean <= 1
    base = run_eval("tiny-seg", "baseline:band-stats", "linear", seeds=1, data_root=tiny_task,
                    progress=False, settings=FAST)[0]  # fmt: skip
    assert base.primary.mean > 0.9  # per-pixel brightness separates the classes
    with pytest.raises(ValueError, match="kNN"):
        run_eval("tiny-seg", nano, "knn", data_root=tiny_task, progress=False)


def test_run_suite_writes_json_markdown_png(tiny_task):
    suite = {
        "name": "tiny-suite", "seeds": 1, "settings": FAST,
        "models": {"rand": {"random_init": "nano", "seed": 1},
                   "stats": {"baseline": "band-stats"}},
        "tasks": [{"name": "tiny", "root": str(tiny_task)},
                  {"name": "tiny-seg", "root": str(tiny_task)}],
        "protocols": ["knn", "linear"],
    }  # fmt: skip
    res = run_suite(suite, out_dir=tiny_task / "out", cache=str(tiny_task / "c"), progress=False)
    assert len(res.results) == 6  # knn: tiny x 2 models; linear: 2 tasks x 2 models
    reasons = {s["reason"] for s in res.skipped}
    assert all("kNN" in r for r in reasons) and len(res.skipped) == 2
    data = json.loads(res.files["json"].read_text())
    assert data["suite"] == "tiny-suite" and len(data["results"]) == 6
    assert "| tiny | rand | knn |" in res.files["markdown"].read_text()
    assert res.files["plot"].read_bytes()[:4] == b"\x89PNG"


def test_cli(tiny_task):
    from geolatent.evals.cli import register

    app = typer.Typer()
    register(app)

    @app.command("noop")
    def noop():  # a second command keeps typer in multi-command mode, as in geolatent's CLI
        pass

    runner = CliRunner()
    r = runner.invoke(app, ["eval", "--list"])
    assert r.exit_code == 0 and "m-eurosat" in r.output and "eolearn-lulc-seg" in r.output
    r = runner.invoke(app, ["eval", "--task", "tiny"])
    assert r.exit_code != 0  # no model: refused, never a silent random encoder
    r = runner.invoke(app, ["eval", "--task", "tiny", "--random-init", "nano", "--protocol", "knn",
                            "--seeds", "1", "--data-root", str(tiny_task), "--no-progress",
                            "--set", "n_boot=50", "--cache-dir", str(tiny_task / "c"),
                            "--out", str(tiny_task / "cli")])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "| tiny | random-nano | knn |" in r.output
    assert (tiny_task / "cli" / "results.json").exists()
    suite = tiny_task / "suite.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "s", "seeds": 1, "settings": {"n_boot": 50},
        "models": {"stats": {"baseline": "band-stats"}},
        "tasks": [{"name": "tiny", "root": str(tiny_task)}], "protocols": ["linear"],
        "out_dir": str(tiny_task / "suite_out")}))  # fmt: skip
    r = runner.invoke(app, ["eval", "--suite", str(suite), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert (tiny_task / "suite_out" / "results.png").exists()
