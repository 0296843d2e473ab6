"""Data layer: sources (files, STAC) -> windows -> materialized arrays -> pretraining samples.

One mechanism serves pretraining builds, embedding and prediction::

    from geolatent.data import Window, load_data_config, open_sources, materialize_window

    cfg = load_data_config("configs/data/example.yaml")
    sources = open_sources(cfg.sources)
    window = Window.from_bounds((4.50, 43.58, 4.53, 43.60), time_range=("2017-01-01", "2018-01-01"))
    mw = materialize_window(window, sources)  # arrays [H, W, T, C], timestamps [T, 3], masks

See :mod:`geolatent.data.materialize` for the exact array contract and
:mod:`geolatent.data.h5samples` for the sample-file layout.
"""

from geolatent.data.build import (
    BuildPlan,
    BuildSummary,
    WindowPlan,
    WindowResult,
    build_dataset,
    build_window,
    plan_build,
)
from geolatent.data.config import (
    CloudMaskConfig,
    DataConfig,
    FileSourceConfig,
    StacSourceConfig,
    load_data_config,
)
from geolatent.data.executor import (
    DaskExecutor,
    ProcessExecutor,
    SerialExecutor,
    WindowExecutor,
    make_executor,
)
from geolatent.data.h5samples import SampleFileError, read_sample, write_sample
from geolatent.data.materialize import (
    MaterializedWindow,
    SceneReadError,
    WindowError,
    materialize_window,
    read_scene,
)
from geolatent.data.sources import (
    BandAsset,
    Scene,
    SceneProblem,
    Source,
    open_source,
    open_sources,
    scenes_by_source,
)
from geolatent.data.window import (
    Window,
    tile_windows,
    utm_crs_for,
    windows_from_bbox,
    windows_from_geojson,
    windows_from_labels,
    year_range,
)

__all__ = [
    "BandAsset", "BuildPlan", "BuildSummary", "CloudMaskConfig", "DaskExecutor", "DataConfig",
    "FileSourceConfig", "MaterializedWindow", "ProcessExecutor", "SampleFileError", "Scene",
    "SceneProblem", "SceneReadError", "SerialExecutor", "Source", "StacSourceConfig", "Window",
    "WindowError", "WindowExecutor", "WindowPlan", "WindowResult", "build_dataset",
    "build_window", "load_data_config", "make_executor", "materialize_window", "open_source",
    "open_sources", "plan_build", "read_sample", "read_scene", "scenes_by_source",
    "tile_windows", "utm_crs_for", "windows_from_bbox", "windows_from_geojson",
    "windows_from_labels", "write_sample", "year_range",
]  # fmt: skip
