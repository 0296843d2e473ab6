"""Inference on rasters: GeoTIFFs in, embedding COGs out.

* :mod:`geolatent.inference.raster_io` — reading inputs (band names, grid checks, dates, windows).
* :mod:`geolatent.inference.embed_rasters` — ``embed_geotiffs``: tiled, streaming embedding.
* :mod:`geolatent.inference.preview` — PCA quick-looks and a dependency-free PNG writer.
* :mod:`geolatent.inference.demo` — the built-in end-to-end demo.

The COG writer lives with the data IO (:mod:`geolatent.data.io.cog`).

Submodules are imported explicitly (nothing here) so ``geolatent --help`` stays fast.
"""
