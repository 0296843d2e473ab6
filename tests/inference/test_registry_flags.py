"""The registry drives `geolatent embed`'s file options and the unit checks: registering one
more modality gives it --FLAG / --FLAG-dates / --FLAG-bands and a plausibility check."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from geolatent.inference.cli import register
from geolatent.modalities import (
    MODALITIES,
    Modality,
    UnitSpec,
    register_modality,
    unregister_modality,
)
from geolatent.units import UnitError, check_values

PLANET = Modality(
    "planet_sr", (("blue", "green", "red", "nir"),), (3.0,), multitemporal=True,
    encoder_input=True, units="PlanetScope surface reflectance x 10000",
    unit_spec=UnitSpec((0.0, 15000.0), (50.0, 8000.0)), cli_flag="planet",
    cli_help="PlanetScope SR GeoTIFF(s).",
)


@pytest.fixture
def planet():
    register_modality(PLANET)
    try:
        yield PLANET
    finally:
        unregister_modality(PLANET.name)


def _app() -> typer.Typer:
    app = typer.Typer(rich_markup_mode=None, add_completion=False)  # as geolatent.cli, no tty
    register(app)  # options are read from the registry when the command is registered
    return app


# A plugin registers its modality before the CLI is built: the real `geolatent embed --help`.
_PLUGIN = """
import sys
from geolatent.modalities import Modality, UnitSpec, register_modality
register_modality(Modality("planet_sr", (("blue", "green", "red", "nir"),), (3.0,), True, True,
    "PlanetScope SR", unit_spec=UnitSpec((0.0, 15000.0), (50.0, 8000.0)), cli_flag="planet",
    cli_help="PlanetScope SR GeoTIFF(s)."))
from geolatent.cli import app
sys.argv = ["geolatent", "embed", "--help"]
app()
"""


@pytest.mark.slow
def test_registered_modality_in_geolatent_embed_help():
    res = subprocess.run([sys.executable, "-c", _PLUGIN], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 0, res.stderr
    out = res.stdout
    for flag in ("--planet ", "--planet-dates", "--planet-bands", "PlanetScope SR GeoTIFF(s)."):
        assert flag in out
    assert "--planet = planet_sr" in " ".join(out.split())
    # today's options are kept, in their place (after the model options)
    for flag in ("--s2 ", "--s2-dates", "--s2-bands", "--s1 ", "--s1-dates", "--s1-bands",
                 "--landsat ", "--landsat-dates", "--landsat-bands"):
        assert flag in out
    opts = out.split("Options:")[1]
    assert opts.index("--random-weights") < opts.index("--s2 ") < opts.index("--planet ") \
        < opts.index("--patch-size")


def test_embed_without_inputs_names_registered_options(planet):
    res = CliRunner().invoke(_app(), ["embed", "--out", "x.tif", "--random-weights", "nano"],
                             terminal_width=200)
    assert res.exit_code == 2
    assert "--landsat, --planet, --stack" in " ".join(res.output.split())


def test_registry_options_disappear_with_the_modality(planet):
    unregister_modality(PLANET.name)
    try:
        res = CliRunner().invoke(_app(), ["embed", "--help"], terminal_width=200)
        assert "--planet" not in res.output and "--s2-dates" in res.output
    finally:
        register_modality(PLANET)


def test_registered_modality_gets_unit_checks(planet):
    dn = np.full((8, 8, 4), 1200.0)
    assert check_values("planet_sr", dn) == []
    with pytest.raises(UnitError, match="reflectance in 0-1"):
        check_values("planet_sr", dn / 10000.0, what="planet.tif")
    with pytest.raises(UnitError, match="outside 0..15000"):
        check_values("planet_sr", dn * 40)


def test_register_modality_errors():
    with pytest.raises(ValueError, match="already registered"):
        register_modality(MODALITIES["sentinel1"])
    clash = Modality("other", (("a",),), (10.0,), True, True, "x", cli_flag="s2")
    with pytest.raises(ValueError, match="cli_flag 's2' .* is taken"):
        register_modality(clash)
    with pytest.raises(ValueError, match="lower-case letters"):
        register_modality(Modality("other", (("a",),), (10.0,), True, True, "x", cli_flag="S 2"))
    with pytest.raises(ValueError, match="built in"):
        unregister_modality("sentinel2_l2a")
    assert "other" not in MODALITIES
