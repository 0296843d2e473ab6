"""`geolatent demo` and `geolatent embed` end to end through the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from typer.testing import CliRunner

from geolatent.cli import app
from geolatent.data.io.cog import is_cloud_optimized
from geolatent.inference.embed_rasters import embed_geotiffs
from geolatent.inference.preview import read_png
from geolatent.modalities import MODALITIES

from .conftest import S1, S2, embed_args, flat, read_embedding, write_tif

runner = CliRunner()


def test_demo_end_to_end(tmp_path) -> None:
    # A smaller scene than the default 64 x 64 x 12 keeps the test fast; same code path.
    result = runner.invoke(
        app, ["demo", "--out", str(tmp_path), "--size", "32", "--timesteps", "4"]
    )
    assert result.exit_code == 0, result.output
    assert "random weights (no checkpoint given)" in flat(result.output)
    assert "8 x 8 px x 128 bands at 40 m" in flat(result.output)
    scene = sorted(p.name for p in (tmp_path / "scene").iterdir())
    assert len(scene) == 2 * 4 + 1 and "labels.tif" in scene
    emb_path = tmp_path / "embedding.tif"
    assert is_cloud_optimized(emb_path)[0]
    with rasterio.open(emb_path) as src:
        assert (src.height, src.width, src.count) == (8, 8, 128)
        assert src.tags()["weights"] == "random weights (no checkpoint given)"
    emb = read_embedding(emb_path)
    assert np.isfinite(emb).all()
    pca = read_png(tmp_path / "embedding_pca.png")
    assert pca.shape == (256, 256, 3) and pca.std() > 10
    assert read_png(tmp_path / "labels.png").shape == (256, 256, 3)


def test_embed_files_matches_library(nano, small_scene_files, tmp_path) -> None:
    out = tmp_path / "cli.tif"
    result = runner.invoke(app, [*embed_args(small_scene_files, out), "--random-weights", "nano"])
    assert result.exit_code == 0, result.output
    assert "random weights (no checkpoint given)" in flat(result.output)
    lib = embed_geotiffs(nano, small_scene_files, tmp_path / "lib.tif")
    np.testing.assert_array_equal(read_embedding(out), read_embedding(lib.path))


def test_embed_stack_and_dates_from_names(nano, small_scene, small_scene_files, tmp_path) -> None:
    bands = list(MODALITIES[S2].bands)
    s2 = np.concatenate([np.moveaxis(small_scene.sentinel2_l2a[:, :, t], -1, 0) for t in (0, 1)])
    stack = write_tif(
        tmp_path / "stack.tif",
        s2.astype(np.uint16),
        transform=small_scene.transform,
        descriptions=bands * 2,
        nodata=0,
    )
    dates = ",".join(d.isoformat() for d in small_scene.dates)
    out = tmp_path / "stack_emb.tif"
    args = ["embed", "--out", str(out), "--random-weights", "nano", "--s2", str(stack),
            "--s2-dates", dates]  # fmt: skip
    for ri in small_scene_files[S1]:  # file names hold the dates
        args += ["--s1", str(ri.path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "(from the file name)" in flat(result.output)
    lib = embed_geotiffs(nano, small_scene_files, tmp_path / "lib.tif")
    np.testing.assert_array_equal(read_embedding(out), read_embedding(lib.path))


def test_embed_with_checkpoint_folder(fixture_dir, small_scene_files, tmp_path) -> None:
    out = tmp_path / "fx.tif"
    result = runner.invoke(app, [*embed_args(small_scene_files, out), "--model", str(fixture_dir)])
    assert result.exit_code == 0, result.output
    assert "random weights" not in result.output
    assert f"checkpoint {fixture_dir}" in flat(result.output)
    assert np.isfinite(read_embedding(out)).all()


def test_embed_requires_a_model(small_scene_files, tmp_path) -> None:
    result = runner.invoke(app, embed_args(small_scene_files, tmp_path / "x.tif"))
    assert result.exit_code != 0
    assert "--model" in flat(result.output) and "--random-weights" in flat(result.output)
    bad = runner.invoke(
        app,
        [*embed_args(small_scene_files, tmp_path / "x.tif"), "--model", str(tmp_path / "missing")],
    )
    assert bad.exit_code == 2 and "cannot load --model" in flat(bad.output)
    assert not (tmp_path / "x.tif").exists()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda a: (
                a[: a.index("--s2-dates") + 1] + ["2024-01-15"] + a[a.index("--s2-dates") + 2 :]
            ),
            "1 dates for 2 files",
        ),
        (lambda a: [*a, "--s2-bands", "B02,B03"], "2 band names given"),
        (lambda a: [*a, "--patch-size", "9"], "less than or equal to 8"),
    ],
)
def test_embed_bad_arguments(small_scene_files, tmp_path, mutate, message) -> None:
    args = mutate([*embed_args(small_scene_files, tmp_path / "x.tif"), "--random-weights", "nano"])
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in flat(result.output)


def test_embed_rejects_reflectance_and_inputs_of_two_places(small_scene, tmp_path) -> None:
    bands = list(MODALITIES[S2].bands)
    refl = (np.moveaxis(small_scene.sentinel2_l2a[:, :, 0], -1, 0) / 10_000).astype(np.float32)
    f = write_tif(
        tmp_path / "refl_2024-01-15.tif", refl, transform=small_scene.transform, descriptions=bands
    )
    base = ["embed", "--out", str(tmp_path / "o.tif"), "--random-weights", "nano"]
    result = runner.invoke(app, [*base, "--s2", str(f)])
    assert result.exit_code == 2 and "reflectance" in flat(result.output)
    # the hint names what a CLI user can change (the file given to --s2), not a Python argument
    assert "--s2" in flat(result.output) and "check_units" not in flat(result.output)
    s1 = write_tif(
        tmp_path / "s1_2024-01-15.tif",
        small_scene.sentinel1[:, :, 0].transpose(2, 0, 1),
        crs="EPSG:32632",
        transform=small_scene.transform,
        descriptions=["vv", "vh"],
    )
    # the same coordinates in another UTM zone: 600 km away, not one area to embed
    result = runner.invoke(app, [*base, "--s2", str(f), "--s1", str(s1)])
    assert result.exit_code == 2
    assert f"{s1} (EPSG:32632) does not overlap {f} (EPSG:32633)" in flat(result.output)
    assert not (tmp_path / "o.tif").exists()


def test_cli_errors_not_wrapped_when_not_a_terminal(small_scene_files, tmp_path) -> None:
    # A long path used to make rich split the message at 80 columns in logs and pipes.
    long_dir = tmp_path / ("a-very-long-folder-name-" * 6)
    long_dir.mkdir()
    out = long_dir / "x.tif"
    args = [*embed_args(small_scene_files, out), "--random-weights", "nano", "--s2-bands", "B02"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    line = next(ln for ln in result.output.splitlines() if "band names given" in ln)
    assert str(small_scene_files[S2][0].path) in line and "per timestep" in line
    usage = runner.invoke(app, ["embed", "--out", str(out), "--patch-size", "9"])
    assert usage.exit_code == 2
    assert any("less than or equal to 8" in ln and "--patch-size" in ln
               for ln in usage.output.splitlines()), usage.output
