"""Prediction over an area, written as a cloud-optimized GeoTIFF: a fine-tuned model's class or
value map, or a plain model's embedding map (``geolatent embed`` runs this over its files).

Pipeline (see :mod:`geolatent.platform.area` for the grid, tiles and crops)::

    area + dates -> plan (plan.py: tiles on the global grid, size and disk estimate)
      -> per tile (run.py, driven by geolatent.data.run): materialize its window through the
         data layer (serial, process pool or Dask) -> run the model on the tile's overlapping
         crops and blend them (tile.py) -> the tile core into the run's work store
      -> (rank 0) stream every core into the COG writer (write.py) -> optional GeoJSON

Memory is bounded by one tile per in-flight work item, whatever the area: cores go to the
``OUT.work`` store on disk and the COG is assembled core by core. A run is resumable: finished
tiles carry a completion marker and a rerun skips them (cores of a different plan or model are
discarded); one run per output at a time (a lock in ``OUT.work``). Work can be spread over
ranks (``torchrun``: each rank takes every ``world_size``-th tile, rank 0 writes).

Outputs: classification -> uint8 class indices with a colour table, class names as GDAL
category names (``OUT.aux.xml``, which QGIS shows) and tags, nodata 255; regression -> float32
values, nodata NaN; a plain model (release or checkpoint) -> its embedding map, float32 ``D``
bands at ``10 * p`` m, nodata NaN, seeing only the imagery inside the map's bounds. Pixels
outside the area, or where no input was valid, are nodata.
"""

from geolatent.platform.predict.plan import EncoderModel
from geolatent.platform.predict.run import PredictResult, predict_area

__all__ = ["EncoderModel", "PredictResult", "predict_area"]
