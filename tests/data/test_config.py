"""Data config: the shipped example validates, paths resolve, errors are clear."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from geolatent.data.config import DataConfig, load_data_config

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "data" / "example.yaml"


def test_example_config_loads_with_resolved_paths():
    cfg = load_data_config(EXAMPLE)
    assert Path(cfg.output_dir).is_absolute()
    assert cfg.time_range == (datetime(2017, 1, 1), datetime(2018, 1, 1))
    src = cfg.sources[0]
    assert src.modality == "sentinel1" and Path(src.paths[0]).is_absolute()
    assert src.paths[0].endswith("shared/data/real/s1_spatialist/*_VV_*.tif")


def test_time_range_and_validation(tmp_path):
    base = {"output_dir": "o", "area": {"bbox": [0, 0, 1, 1]}, "sources": []}
    cfg = DataConfig.model_validate(base | {"start": "2020-03-01", "end": "2020-09-01"})
    assert cfg.time_range == (datetime(2020, 3, 1), datetime(2020, 9, 1))
    with pytest.raises(ValidationError, match="either 'year' or both"):
        DataConfig.model_validate(base)
    with pytest.raises(ValidationError, match="exactly one of 'bbox' or 'geojson'"):
        DataConfig.model_validate(base | {"year": 2020, "area": {}})
    with pytest.raises(ValidationError, match="multiple of sample_size"):
        DataConfig.model_validate(base | {"year": 2020, "sample_size": 100})
    with pytest.raises(ValidationError, match="Extra inputs"):
        DataConfig.model_validate(base | {"year": 2020, "tile_sise": 256})
    bad = tmp_path / "bad.yaml"
    bad.write_text("output_dir: [unclosed")
    with pytest.raises(ValueError, match="bad.yaml: invalid YAML"):
        load_data_config(bad)


def test_pretraining_build_allows_at_most_12_months():
    from geolatent.data.build import plan_build

    cfg = DataConfig.model_validate(
        {
            "output_dir": "o",
            "area": {"bbox": [0, 0, 1, 1]},
            "start": "2020-01-01",
            "end": "2021-02-01",
            "sources": [],
        }
    )
    with pytest.raises(ValueError, match="13 months"):
        plan_build(cfg)
