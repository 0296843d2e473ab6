"""Fine-tuning never destroys the user's files and never leaves an unfinished model at the final
path: ``output:`` on a user folder or a file is refused; a kill -9 mid-training keeps the
previous finished model and puts the best-so-far in ``output/.work``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.features
import shapely
import yaml
from platform_fixtures import s2_source, single_torch_thread, write_scene  # noqa: F401
from pyogrio import raw
from shapely.geometry import shape
from typer.testing import CliRunner

from geolatent.cli import app
from geolatent.data.run import OutputLock
from geolatent.platform.bundle import load_bundle, unfinished_model_dir

runner = CliRunner()


def _config(tmp_path: Path, output: str, epochs: int = 1) -> Path:
    scene = write_scene(tmp_path / "scene", height=48, width=48, timesteps=2, seed=5)
    shapes = [(shape(g), int(v)) for g, v in
              rasterio.features.shapes(scene.labels, transform=scene.transform)]
    raw.write(tmp_path / "labels.gpkg", np.array(shapely.to_wkb([g for g, _ in shapes]),
                                                 dtype=object),
              [np.array([v for _, v in shapes])], ["lc"], driver="GPKG",
              geometry_type="Polygon", crs=scene.crs.to_string())
    cfg = {
        "task": "segmentation",
        "encoder": "nano",
        "labels": {"path": "labels.gpkg", "field": "lc"},
        "sources": [dict(s2_source(Path("scene")))],
        "windows": {"size_px": 16, "start": "2024-01-01", "end": "2024-03-01"},
        "split": {"cell_size_m": 160, "train": 0.6, "val": 0.4, "test": 0.0},
        "train": dict(epochs=epochs, batch_size=8, patch_size=8, lr=2e-3, head_hidden=16),
        "output": output,
    }
    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_output_on_a_user_folder_or_file_is_refused(tmp_path: Path) -> None:
    user = tmp_path / "my_fields"
    user.mkdir()
    (user / "field.tif").write_bytes(b"user data")
    (user / "notes.txt").write_text("keep me")
    res = runner.invoke(app, ["finetune", "--config", str(_config(tmp_path, "my_fields"))])
    assert res.exit_code != 0
    out = " ".join(res.output.split())
    assert f"{user} is a folder that holds other files" in out and "choose a new folder" in out
    assert sorted(p.name for p in user.iterdir()) == ["field.tif", "notes.txt"]
    assert (user / "field.tif").read_bytes() == b"user data"

    a_file = tmp_path / "model.bin"
    a_file.write_bytes(b"not a model")
    res = runner.invoke(app, ["finetune", "--config", str(_config(tmp_path, "model.bin"))])
    assert res.exit_code != 0 and "model.bin is an existing file" in " ".join(res.output.split())
    assert a_file.read_bytes() == b"not a model"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_second_finetune_on_one_output_is_refused(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "model")
    with OutputLock(tmp_path / "model", "finetune"):
        res = runner.invoke(app, ["finetune", "--config", str(cfg)])
    assert res.exit_code == 1
    assert f"finetune on {tmp_path / 'model'} is already running (pid {os.getpid()})" in " ".join(
        res.output.split())
    assert not (tmp_path / "model" / "bundle.json").exists()


KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    from geolatent.platform.config import load_finetune_config
    from geolatent.platform.finetune import finetune

    torch.set_num_threads(1)

    def log(line):
        print(line.replace("\\n", " "), flush=True)

    finetune(load_finetune_config(sys.argv[1]), log=log)
    """
)


@pytest.mark.slow
def test_killed_finetune_keeps_the_finished_model(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "model", epochs=1)
    res = runner.invoke(app, ["finetune", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    model = tmp_path / "model"
    finished = {p.name: p.read_bytes() for p in model.iterdir() if p.is_file()}
    assert load_bundle(model).metrics["best_epoch"] == 0

    cfg.write_text(cfg.read_text().replace("epochs: 1", "epochs: 200"))  # never ends in time
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, str(script), str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    best = unfinished_model_dir(tmp_path / "model") / "bundle.json"
    try:
        deadline = time.monotonic() + 120
        while not best.exists():  # killed once a best epoch is saved, mid-run
            assert proc.poll() is None, proc.stdout.read()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no best epoch saved within 120 s"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    # the final path still holds the earlier finished model, byte for byte
    assert {p.name: p.read_bytes() for p in model.iterdir() if p.is_file()} == finished
    unfinished = load_bundle(unfinished_model_dir(model))  # the best so far, kept for the user
    assert unfinished.metrics["best_epoch"] == 0 and len(unfinished.metrics["history"]) >= 1
    assert load_bundle(model).metrics["best_epoch"] == 0 and len(
        load_bundle(model).metrics["history"]) == 1  # predict reads the finished 1-epoch model


PREP_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from geolatent.platform.config import load_finetune_config
    from geolatent.platform.dataset import prepare_training_data

    def slow(done, total):
        print(done, flush=True)
        time.sleep(0.3)

    prepare_training_data(load_finetune_config(sys.argv[1]), progress=slow)
    """
)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".work" not in p.parts}


@pytest.mark.slow
def test_window_preparation_kill9_then_rerun_is_byte_identical(tmp_path: Path) -> None:
    from geolatent.platform.config import load_finetune_config
    from geolatent.platform.dataset import prepare_training_data

    cfg_path = _config(tmp_path, "model")
    cfg_path.write_text(cfg_path.read_text() + "work_dir: fresh_work\n")
    fresh = prepare_training_data(load_finetune_config(cfg_path))
    assert len(fresh.records) >= 4
    cfg_path.write_text(cfg_path.read_text().replace("fresh_work", "killed_work"))
    script = tmp_path / "prep.py"
    script.write_text(PREP_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, str(script), str(cfg_path)], stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            if int(line) >= 2:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    killed_root = tmp_path / "killed_work"
    assert not (killed_root / "index.json").exists()
    assert list((killed_root / "windows").glob("*.h5"))  # some windows were finished
    again = prepare_training_data(load_finetune_config(cfg_path))
    assert [r.stem for r in again.records] == [r.stem for r in fresh.records]
    assert _tree(killed_root) == _tree(tmp_path / "fresh_work")
