"""The demo shows its input beside the embedding and says what random weights give."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geolatent.inference.demo import run_demo
from geolatent.inference.preview import position_variance_share, true_colour


@pytest.mark.slow
def test_demo_overview_shows_the_input_and_names_position_dominated_embeddings(tmp_path: Path):
    res = run_demo(tmp_path, size=32, timesteps=2)
    assert "random weights give position-dominated embeddings" in res.note
    with Image.open(res.overview_path) as img:
        assert "position-dominated" in img.info["Title"]
        assert img.size[0] > 2 * img.size[1]  # three panels side by side
    # The random-weight embedding is mostly a function of position, as the note says.
    assert "explains" in res.note


def test_true_colour_and_position_share_measure_what_they_say():
    s2 = np.full((4, 4, 3, 3), -99999.0)  # B04, B03, B02 order below
    s2[:2, :, :, 0] = 3000.0  # red top half, valid
    s2[:2, :, :, 1:] = 0.0  # 0 = missing, not black
    rgb = true_colour(s2, ["B04", "B03", "B02"])
    assert rgb[0, 0].tolist() == [255, 0, 0] and rgb[3, 3].tolist() == [0, 0, 0]
    rows = np.broadcast_to(np.arange(8.0)[:, None, None], (8, 8, 4))
    assert position_variance_share(rows) > 0.999
    noise = np.random.default_rng(0).normal(size=(8, 8, 4))
    assert position_variance_share(noise) < 0.5
