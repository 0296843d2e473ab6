"""Run safety of ``predict``: outputs never destroy inputs, one run per output, size sanity
before long runs, class names QGIS shows, kill -9 then a rerun gives the same bytes."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
import shapely
from kill_points import kill_after, start_child
from platform_fixtures import (  # noqa: F401
    make_bundle,
    s2_source,
    scene_box,
    single_torch_thread,
    write_scene,
)
from typer.testing import CliRunner

from geolatent.cli import app
from geolatent.data.run import (
    DiskFullError,
    OutputConflictError,
    OutputLock,
    RunLockedError,
    work_dir_for,
)
from geolatent.platform.predict import predict_area

START, END = "2024-01-01", "2024-02-29"
runner = CliRunner()


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory) -> tuple[Path, object]:
    folder = tmp_path_factory.mktemp("scene")
    return folder, write_scene(folder, height=48, width=48, timesteps=2, seed=5)


def test_predict_refuses_to_write_onto_a_source_scene(tmp_path: Path, scene_dir) -> None:
    folder, scene = scene_dir
    make_bundle(tmp_path / "m", "segmentation", [s2_source(folder)])
    target = sorted(folder.glob("sentinel2_l2a_*.tif"))[0]
    before = target.read_bytes()
    with pytest.raises(OutputConflictError, match="is also an input"):
        predict_area(tmp_path / "m", scene_box(scene, 2), START, END, target, tile=16)
    area = tmp_path / "area.geojson"
    area.write_text(shapely.to_geojson(scene_box(scene, 2)))
    result = runner.invoke(app, ["predict", "--model", str(tmp_path / "m"), "--aoi", str(area),
                                 "--start", START, "--end", END, "-o", str(target)])
    assert result.exit_code == 1 and "is also an input" in " ".join(result.output.split())
    assert target.read_bytes() == before


def test_second_predict_on_one_output_is_refused(tmp_path: Path, scene_dir) -> None:
    folder, scene = scene_dir
    make_bundle(tmp_path / "m", "segmentation", [s2_source(folder)])
    out = tmp_path / "map.tif"
    with OutputLock(out, "predict"):
        with pytest.raises(RunLockedError, match=rf"already running \(pid {os.getpid()}\)"):
            predict_area(tmp_path / "m", scene_box(scene, 2), START, END, out, tile=16)
    assert not out.exists()


def test_large_area_needs_confirmation_and_the_plan_is_reported(tmp_path: Path,
                                                                 scene_dir) -> None:
    folder, scene = scene_dir
    make_bundle(tmp_path / "m", "segmentation", [s2_source(folder)])
    out = tmp_path / "map.tif"
    lines: list[str] = []
    with pytest.raises(ValueError, match=r"limit 0.01 km².*CLI --yes, Python confirm=True"):
        predict_area(tmp_path / "m", scene_box(scene, 2), START, END, out, tile=16,
                     max_area_km2=0.01, report=lines.append)
    assert not out.exists() and not work_dir_for(out).exists()
    assert len(lines) == 1 and "km²" in lines[0] and "tiles" in lines[0] and "GiB" in lines[0]
    res = predict_area(tmp_path / "m", scene_box(scene, 2), START, END, out, tile=16,
                       max_area_km2=0.01, confirm=True)
    assert res.path.exists()


@pytest.mark.skipif(shutil.which("gdalinfo") is None, reason="needs gdalinfo (apt gdal-bin)")
def test_class_names_are_gdal_category_names(tmp_path: Path, scene_dir) -> None:
    folder, scene = scene_dir
    fm = make_bundle(tmp_path / "m", "segmentation", [s2_source(folder)], num_classes=3)
    res = predict_area(tmp_path / "m", scene_box(scene, 2), START, END, tmp_path / "map.tif",
                       tile=32)
    info = subprocess.run(["gdalinfo", str(res.path)], capture_output=True, text=True,
                          check=True).stdout
    cats = info[info.index("Categories:"):].splitlines()[1:4]
    assert [c.split(":", 1)[1].strip() for c in cats] == list(fm.classes.names)
    assert "Color Table" in info  # the colour table stays


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time, json
    import shapely, torch
    from geolatent.platform.predict import predict_area

    torch.set_num_threads(1)
    model, area, out = sys.argv[1:4]

    def slow(done, total):
        print(done, flush=True)
        time.sleep(0.2)

    predict_area(model, shapely.from_geojson(open(area).read()), "2024-01-01", "2024-02-29",
                 out, tile=16, progress=slow)
    """
)


@pytest.mark.slow
def test_predict_kill9_then_rerun_is_byte_identical(tmp_path: Path, scene_dir) -> None:
    folder, scene = scene_dir
    make_bundle(tmp_path / "m", "segmentation", [s2_source(folder)])
    box = scene_box(scene, 2)
    fresh = predict_area(tmp_path / "m", box, START, END, tmp_path / "fresh.tif", tile=16)
    assert fresh.tiles_total >= 6
    area = tmp_path / "area.geojson"
    area.write_text(shapely.to_geojson(box))
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    out = tmp_path / "killed.tif"
    proc = start_child([str(script), str(tmp_path / "m"), str(area), str(out)])
    kill_after(proc, random.Random(0).randint(2, fresh.tiles_total - 2), 0.2)
    assert not out.exists()
    resumed = predict_area(tmp_path / "m", box, START, END, out, tile=16)
    assert 0 < resumed.tiles_resumed < resumed.tiles_total
    assert out.read_bytes() == fresh.path.read_bytes()
    assert not work_dir_for(out).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_full_disk_mid_run_is_one_line_and_resumable(tmp_path: Path, scene_dir,
                                                     small_disk: Path) -> None:
    folder, scene = scene_dir
    make_bundle(tmp_path / "m", "segmentation", [s2_source(folder)])
    box = scene_box(scene, 2)
    out = small_disk / "map.tif"
    filler = small_disk / "filler.bin"

    def fill_after_two(done: int, total: int) -> None:
        if done == 2 and not filler.exists():  # another program fills the disk mid-run
            with open(filler, "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * 2**20)
                        f.flush()
                except OSError:
                    pass

    with pytest.raises(DiskFullError) as info:
        predict_area(tmp_path / "m", box, START, END, out, tile=16, progress=fill_after_two)
    msg = str(info.value)
    assert "\n" not in msg and "disk full while writing" in msg and str(small_disk) in msg
    assert "MiB free" in msg and not out.exists()
    filler.unlink()  # the user frees space and reruns: the finished tiles are kept
    resumed = predict_area(tmp_path / "m", box, START, END, out, tile=16)
    assert resumed.tiles_resumed >= 2
    fresh = predict_area(tmp_path / "m", box, START, END, tmp_path / "fresh.tif", tile=16)
    assert out.read_bytes() == fresh.path.read_bytes()
