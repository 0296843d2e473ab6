"""Embedding archives and similar-place search.

::

    import geolatent.archive

    geolatent.archive.build("models/nano", "area.geojson", "2024-01-01", "2024-12-31",
                            "region.zarr", config="data.yaml", dims=128, dtype="int8")
    matches = geolatent.archive.open("region.zarr").search("positives.geojson", top=50)
    matches.write_geojson("matches.geojson")

See :mod:`.build` (pipeline), :mod:`.vectors` (what is stored: patch vectors, or per-pixel
location embeddings of v1.3 models), :mod:`.store` (Zarr v3 layout and ``geoemb:`` attributes),
:mod:`.quantize` (int8 rule), :mod:`.search` (query, exact and index search),
:mod:`.index` (FAISS), :mod:`.alphaearth` (Satellite Embedding COGs read in place) and
``docs/archive.md``.
"""

from geolatent.archive.build import BuildResult, build
from geolatent.archive.search import Archive, Match, SearchResult, open
from geolatent.archive.store import ArchiveError

__all__ = ["Archive", "ArchiveError", "BuildResult", "Match", "SearchResult", "build", "open"]
