"""Similar-place search by example over an archive (the Earth Index loop).

Query, from the vectors at the example points (dequantized unit vectors ``v``):

* positives only: ``q = normalize(mean(v_pos))``; score = cosine similarity ``v . q`` in
  [-1, 1];
* positives and negatives: a logistic regression (scikit-learn, balanced class weights) on the
  examples; score = ``sigmoid(v . w + b)``, the probability of "like the positives" in [0, 1].

Both rank by an inner product, so one search serves both: **exact** (every vector decoded strip
by strip, bounded memory, always used when a heatmap is asked) or through the archive's
**FAISS index** (:mod:`.index`, IVF with 8-bit scalar quantization, built once and stored
beside the archive) when the archive holds more vectors than fit the exact-search budget.
The example pixels themselves are left out of the results.

Results: GeoJSON points (pixel centres, lon/lat) or polygons (pixel footprints) with ``score``,
``rank``, ``crs``, ``row``, ``col``; the collection carries ``geoemb:model`` so results can be
fed back as examples only into an archive of the same model. Heatmap: a float32 COG of the score
per pixel (NaN nodata) in the zone's CRS and grid; one file per zone, suffixed with the EPSG
code (geolatent archives) or the file name (COG layouts) when the archive has several zones.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely
from pyproj import Transformer
from shapely.geometry import mapping

from geolatent.archive.quantize import decode
from geolatent.archive.reader import ArchiveInfo, open_zarr
from geolatent.archive.store import ArchiveError

EXACT_MAX_BYTES = 1 << 30
"""Exact search while the decoded float32 vectors (N x dims x 4 bytes) stay under 1 GiB."""

PointsLike = str | os.PathLike | dict | Sequence[tuple[float, float]]


def _read_points(points: PointsLike, what: str) -> tuple[np.ndarray, dict | None]:
    """lon/lat ``[N, 2]`` and the collection's ``geoemb:model`` (if any)."""
    if isinstance(points, str | os.PathLike):
        p = Path(points)
        if not p.exists():
            raise FileNotFoundError(f"{what} {p} does not exist")
        points = json.loads(p.read_text())
    model = None
    if isinstance(points, dict):
        model = points.get("geoemb:model")
        feats = points.get("features") if points.get("type") == "FeatureCollection" else [points]
        out = []
        for i, f in enumerate(feats or []):
            g = f.get("geometry") if f.get("type") == "Feature" else f
            if g is None:
                continue
            geom = shapely.geometry.shape(g)
            if geom.geom_type == "Point":
                out.append((geom.x, geom.y))
            elif geom.geom_type == "MultiPoint":
                out += [(q.x, q.y) for q in geom.geoms]
            elif geom.geom_type in ("Polygon", "MultiPolygon"):  # a result footprint
                c = geom.centroid
                out.append((c.x, c.y))
            else:
                raise ValueError(f"{what}: feature {i} is a {geom.geom_type}; give points "
                                 f"(lon/lat) of example places")  # fmt: skip
        arr = np.asarray(out, dtype=np.float64).reshape(-1, 2)
    else:
        arr = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(arr) == 0:
        raise ValueError(f"{what}: no points given")
    return arr, model


@dataclass
class Match:
    zone: int
    row: int
    col: int
    score: float


@dataclass
class SearchResult:
    """Matches best first, and the archive they come from."""

    matches: list[Match]
    archive: Archive
    method: str
    query: dict = field(default_factory=dict)
    heatmaps: list[Path] = field(default_factory=list)

    def to_geojson(self, geometry: str = "point") -> dict:
        """A FeatureCollection (lon/lat) of the matches; ``geometry``: ``point`` or ``polygon``."""
        if geometry not in ("point", "polygon"):
            raise ValueError(f"geometry must be 'point' or 'polygon', got {geometry!r}")
        feats = []
        for rank, m in enumerate(self.matches, start=1):
            z = self.archive.zones[m.zone]
            to_ll = Transformer.from_crs(z.crs, "OGC:CRS84", always_xy=True)
            if geometry == "point":
                x, y = z.transform @ (m.col + 0.5, m.row + 0.5)
                geom = shapely.Point(*to_ll.transform(x, y))
            else:
                x0, y0 = z.transform @ (m.col, m.row)
                x1, y1 = z.transform @ (m.col + 1, m.row + 1)
                ring = shapely.segmentize(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1),
                                                      max(y0, y1)), abs(x1 - x0) / 4)
                geom = shapely.transform(ring, lambda c, t=to_ll: np.column_stack(
                    t.transform(c[:, 0], c[:, 1])))
            feats.append({"type": "Feature", "geometry": mapping(geom),
                          "properties": {"rank": rank, "score": round(float(m.score), 6),
                                         "crs": z.crs, "row": int(m.row), "col": int(m.col)}})
        return {"type": "FeatureCollection", "geoemb:model": self.archive.model,
                "geolatent:search": dict(self.query, method=self.method), "features": feats}

    def write_geojson(self, path: str | os.PathLike, geometry: str = "point") -> Path:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.part")
        tmp.write_text(json.dumps(self.to_geojson(geometry)))
        os.replace(tmp, path)
        return path


class Archive:
    """An opened archive (geolatent Zarr or Satellite Embedding COGs). Use :func:`open`."""

    def __init__(self, info: ArchiveInfo):
        self.info = info
        self.path = info.path
        self.model = info.model
        self.dims = info.dims
        self.zones = info.zones

    def __repr__(self) -> str:
        return (f"Archive({str(self.path)!r}, layout={self.info.layout}, model="
                f"{self.model.get('id')}, dims={self.dims}, zones={[z.crs for z in self.zones]})")

    @property
    def num_pixels(self) -> int:
        return sum(z.shape[0] * z.shape[1] for z in self.zones)

    # -- lookups ------------------------------------------------------------------------------
    def locate(self, lonlat: np.ndarray, what: str = "point") -> list[tuple[int, int, int]]:
        """``(zone, row, col)`` of each lon/lat point; errors name the point outside."""
        out: list[tuple[int, int, int] | None] = [None] * len(lonlat)
        for zi, z in enumerate(self.zones):
            tr = Transformer.from_crs("OGC:CRS84", z.crs, always_xy=True)
            x, y = tr.transform(lonlat[:, 0], lonlat[:, 1])
            c, r = ~z.transform @ (np.asarray(x), np.asarray(y))
            r, c = np.floor(r).astype(int), np.floor(c).astype(int)
            inside = (r >= 0) & (r < z.shape[0]) & (c >= 0) & (c < z.shape[1])
            idx = [i for i in np.nonzero(inside)[0] if out[i] is None]
            if not idx:
                continue
            _, ok = decode(z.read_pixels(r[idx], c[idx]))
            for i, good in zip(idx, ok, strict=True):
                if good:
                    out[i] = (zi, int(r[i]), int(c[i]))
        missing = [i for i, o in enumerate(out) if o is None]
        if missing:
            i = missing[0]
            raise ArchiveError(
                f"{what} {i} at lon {lonlat[i, 0]:.6f}, lat {lonlat[i, 1]:.6f} is outside the "
                f"archive {self.path} or on a pixel without data ({len(missing)} of "
                f"{len(lonlat)} such); the archive covers {self.bounds_text()}. Pick examples "
                f"inside it (GeoJSON coordinates are lon, lat)"
            )
        return out  # type: ignore[return-value]

    def bounds_text(self) -> str:
        parts = []
        for z in self.zones:
            tr = Transformer.from_crs(z.crs, "OGC:CRS84", always_xy=True)
            h, w = z.shape
            xs, ys = z.transform @ (np.array([0, w, 0, w]), np.array([0, 0, h, h]))
            lon, lat = tr.transform(xs, ys)
            parts.append(f"lon {min(lon):.5f}..{max(lon):.5f}, lat {min(lat):.5f}..{max(lat):.5f}"
                         f" ({z.crs})")
        return "; ".join(parts) or "nothing"

    def vectors_at(self, lonlat: np.ndarray, what: str = "point") -> tuple[np.ndarray, list]:
        """Dequantized unit vectors ``[N, dims]`` at lon/lat points, and their locations."""
        loc = self.locate(np.asarray(lonlat, dtype=np.float64).reshape(-1, 2), what)
        vecs = np.empty((len(loc), self.dims), np.float32)
        for i, (zi, r, c) in enumerate(loc):
            vecs[i] = decode(self.zones[zi].read_pixels(np.array([r]), np.array([c])))[0][0]
        return vecs, loc

    def iter_vectors(self):
        """``(zone index, row offset, vectors [h, cols, dims], valid [h, cols])`` strip by strip."""
        for zi, z in enumerate(self.zones):
            for r0 in range(0, z.shape[0], z.strip_rows):
                v, ok = decode(z.read_rows(r0, min(r0 + z.strip_rows, z.shape[0])))
                yield zi, r0, v, ok

    # -- search -------------------------------------------------------------------------------
    def query(self, positive: PointsLike, negative: PointsLike | None = None
              ) -> tuple[np.ndarray, float, str, list]:
        """``(w [dims], bias, kind, example locations)``: score = ``v . w`` (cosine) or
        ``sigmoid(v . w + bias)`` (classifier)."""
        pos, pos_model = _read_points(positive, "positive")
        self._check_model(pos_model, "positive")
        vp, lp = self.vectors_at(pos, "positive point")
        if negative is None:
            q = vp.mean(0)
            n = np.linalg.norm(q)
            if n == 0:
                raise ValueError("the positives' vectors cancel out; give more positives")
            return (q / n).astype(np.float32), 0.0, "cosine", lp
        neg, neg_model = _read_points(negative, "negative")
        self._check_model(neg_model, "negative")
        vn, ln = self.vectors_at(neg, "negative point")
        from sklearn.linear_model import LogisticRegression

        x = np.concatenate([vp, vn])
        y = np.r_[np.ones(len(vp)), np.zeros(len(vn))]
        clf = LogisticRegression(C=10.0, class_weight="balanced", max_iter=1000).fit(x, y)
        return (clf.coef_[0].astype(np.float32), float(clf.intercept_[0]), "classifier",
                lp + ln)  # fmt: skip

    def _check_model(self, model: dict | None, what: str) -> None:
        if not model:
            return
        if (model.get("id"), model.get("revision")) != (self.model.get("id"),
                                                        self.model.get("revision")):
            raise ArchiveError(
                f"the {what} examples come from an archive of model {model.get('id')} "
                f"({model.get('revision')}) but {self.path} holds model {self.model.get('id')} "
                f"({self.model.get('revision')}); vectors of different models are not comparable."
                f" Pick the examples on this archive (plain points carry no model)"
            )

    def search(
        self,
        positive: PointsLike,
        negative: PointsLike | None = None,
        top: int = 200,
        heatmap: str | os.PathLike | None = None,
        method: str = "auto",
        nprobe: int | None = None,
    ) -> SearchResult:
        """Places most like the positives (and unlike the negatives).

        Args:
            positive: example points: a GeoJSON path or mapping (lon/lat), or ``[(lon, lat)]``.
            negative: counter-examples; with them the score is a linear classifier's probability.
            top: number of matches.
            heatmap: also write the score of every pixel as a float32 COG here.
            method: ``auto`` (index when the archive exceeds the exact budget and no heatmap is
                asked), ``exact`` or ``index``.
            nprobe: IVF lists probed by an index search (default: the index's own).
        """
        if top < 1:
            raise ValueError(f"top must be >= 1, got {top}")
        if method not in ("auto", "exact", "index"):
            raise ValueError(f"method must be auto, exact or index, got {method!r}")
        w, b, kind, examples = self.query(positive, negative)
        if method == "auto":
            big = self.num_pixels * self.dims * 4 > EXACT_MAX_BYTES
            method = "index" if big and heatmap is None else "exact"
        if method == "index" and heatmap is not None:
            raise ValueError("a heatmap needs every pixel's score: use exact search with it")
        skip = {(zi, r, c) for zi, r, c in examples}
        if method == "exact":
            matches, paths = self._exact(w, b, kind, top, skip, heatmap)
        else:
            from geolatent.archive.index import open_or_build_index

            idx = open_or_build_index(self)
            matches = idx.search(w, b, kind, top, skip, nprobe)
            paths = []
        return SearchResult(matches, self, method, {"score": kind, "top": top,
                                                     "examples": len(examples)}, paths)

    def _exact(self, w, b, kind, top, skip, heatmap):
        best_s = np.empty(0, np.float32)
        best_loc = np.empty((0, 3), np.int64)
        writers = self._heatmap_writers(heatmap, kind) if heatmap is not None else None
        try:
            for zi, r0, v, ok in self.iter_vectors():
                s = v @ w + b
                if kind == "classifier":
                    s = 1.0 / (1.0 + np.exp(-s))
                s = np.where(ok, s, np.nan).astype(np.float32)
                if writers is not None:
                    writers[zi].write(s[None], r0, 0)
                for zz, rr, cc in skip:
                    if zz == zi and r0 <= rr < r0 + s.shape[0]:
                        s[rr - r0, cc] = np.nan
                flat = np.where(np.isnan(s), -np.inf, s).ravel()
                k = min(top, int(np.isfinite(flat).sum()))
                if k == 0:
                    continue
                part = np.argpartition(-flat, k - 1)[:k]
                rows, cols = np.divmod(part, s.shape[1])
                best_s = np.r_[best_s, flat[part]]
                best_loc = np.r_[best_loc, np.c_[np.full(k, zi), rows + r0, cols]]
                if len(best_s) > top:
                    keep = np.argpartition(-best_s, top - 1)[:top]
                    best_s, best_loc = best_s[keep], best_loc[keep]
            paths = [wr.close() for wr in writers] if writers is not None else []
        except BaseException:
            for wr in writers or []:
                wr.abort()
            raise
        order = np.lexsort((best_loc[:, 2], best_loc[:, 1], best_loc[:, 0], -best_s))
        return [Match(int(best_loc[i, 0]), int(best_loc[i, 1]), int(best_loc[i, 2]),
                      float(best_s[i])) for i in order], paths

    def _heatmap_writers(self, heatmap, kind):
        from geolatent.data.io.cog import COGWriter

        heatmap = Path(heatmap)
        out = []
        for z in self.zones:
            p = heatmap if len(self.zones) == 1 else heatmap.with_name(
                f"{heatmap.stem}_{z.name}{heatmap.suffix}")
            out.append(COGWriter(p, width=z.shape[1], height=z.shape[0], count=1,
                                 dtype="float32", crs=z.crs, transform=z.transform,
                                 nodata=float("nan"), band_descriptions=[f"similarity_{kind}"],
                                 tags={"score": kind, "model": json.dumps(self.model)},
                                 blocksize=256))  # fmt: skip
        return out


def open(path: str | os.PathLike) -> Archive:  # noqa: A001 - the issue names it archive.open
    """Open an archive: a geolatent Zarr store, or a file / folder of Satellite Embedding COGs."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no archive at {p}")
    if (p / "zarr.json").is_file():
        return Archive(open_zarr(p))
    from geolatent.archive.alphaearth import open_alphaearth

    return Archive(open_alphaearth(p))
