"""Inference on rasters: GeoTIFFs in, embedding COGs out.

* :mod:`geolatent.inference.file_inputs` — input files as data-layer sources (band names, grid,
  time axis).
* :mod:`geolatent.inference.embed_rasters` — ``embed_geotiffs``: area prediction with a plain
  model (:mod:`geolatent.platform.predict`) over those sources.
* :mod:`geolatent.inference.preview` — PCA quick-looks and a dependency-free PNG writer.
* :mod:`geolatent.inference.demo` — the built-in end-to-end demo.

The COG writer lives with the data IO (:mod:`geolatent.data.io.cog`).

Submodules are imported explicitly (nothing here) so ``geolatent --help`` stays fast.
"""
