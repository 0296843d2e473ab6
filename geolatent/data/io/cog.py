"""A streaming cloud-optimized GeoTIFF (COG) writer.

Tiles are written, in any order and of any size, into an uncompressed tiled GeoTIFF next to the
destination (uncompressed so a window can be rewritten in place and unaligned writes never grow
the file). :meth:`COGWriter.close` then converts it with GDAL's COG driver (compression, internal
overviews, the COG layout with its header ghost area) into a second temporary file and atomically
renames that onto the destination, so readers never see a half-written output and a failure
leaves no partial file behind. Memory stays bounded by GDAL's block cache: no step holds the whole
raster.

Disk: the temporary file needs the raw size (``height * width * count * itemsize``) next to the
destination while writing.

Reused by every raster output of geolatent (embeddings, class maps, predictions).
"""

from __future__ import annotations

import os
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window


class COGWriter:
    """Write a raster tile by tile, producing a valid COG on :meth:`close`.

    Args:
        path: destination ``.tif``; replaced atomically on success.
        width, height: raster size in pixels.
        count: number of bands.
        dtype: numpy/rasterio dtype name (``"float32"``, ``"uint8"``, ...).
        crs, transform: georeferencing of the raster.
        nodata: nodata value (``float("nan")`` is fine for floats); None for none.
        band_descriptions: one description per band (e.g. band or class names).
        colormap: optional ``{value: (r, g, b[, a])}`` for a single-band uint8 raster.
        tags: dataset-level metadata tags.
        blocksize: COG tile size in pixels (a multiple of 16).
        compress: COG compression (``"deflate"``, ``"lzw"``, ``"zstd"``, ...).
        overview_resampling: ``"average"`` (of the valid pixels of each 2x2 cell; the default for
            float data) or ``"nearest"`` (the default for integer data: class ids must not be
            averaged).
        overview_count: number of overview levels; None lets GDAL add levels until the
            smallest fits in one block (none for rasters smaller than ``blocksize``).
        temp_blocksize: block size of the temporary file; writes aligned to it are the
            fastest (default: see :func:`temp_block_size`).
        temp_dir: where the temporary files go (default: beside ``path``); a run's ``.work``
            area (:mod:`geolatent.data.run`), so a killed run leaves nothing beside the output
            and a resume removes what it left. Must be on the same file system as ``path``.

    Pixels that are never written read back as ``nodata`` (0 when there is none), so callers
    can skip empty areas. Use as a context manager; an exception inside the block removes the
    temporary files and leaves any existing destination untouched.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        width: int,
        height: int,
        count: int,
        dtype: str,
        crs: CRS | str | None,
        transform: Affine,
        nodata: float | None = None,
        band_descriptions: Sequence[str] | None = None,
        colormap: Mapping[int, Sequence[int]] | None = None,
        tags: Mapping[str, object] | None = None,
        blocksize: int = 512,
        compress: str = "deflate",
        overview_resampling: str | None = None,
        overview_count: int | None = None,
        temp_blocksize: int | None = None,
        temp_dir: str | os.PathLike | None = None,
    ) -> None:
        if width < 1 or height < 1 or count < 1:
            raise ValueError(f"invalid raster size {width}x{height}x{count}")
        if blocksize % 16:
            raise ValueError(f"blocksize must be a multiple of 16, got {blocksize}")
        if band_descriptions is not None and len(band_descriptions) != count:
            raise ValueError(f"{len(band_descriptions)} band descriptions for {count} bands")
        if colormap is not None and (count != 1 or np.dtype(dtype) != np.uint8):
            raise ValueError("a colour table needs a single-band uint8 raster")
        self.path = Path(path)
        self.width, self.height, self.count = int(width), int(height), int(count)
        self.dtype = np.dtype(dtype)
        self.blocksize = blocksize
        self.compress = compress
        self.overview_count = overview_count
        is_float = np.issubdtype(self.dtype, np.floating)
        default_resampling = "average" if is_float else "nearest"
        self.overview_resampling = (overview_resampling or default_resampling).lower()
        if self.overview_resampling not in ("average", "nearest"):
            raise ValueError(
                f"overview_resampling must be 'average' or 'nearest', got {overview_resampling!r}"
            )
        self.nodata = nodata
        self._closed = False

        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp_dir = Path(temp_dir) if temp_dir is not None else self.path.parent
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=".part.tif", dir=tmp_dir)
        os.close(fd)
        self._tmp = Path(tmp)
        # Uncompressed tiles can be rewritten in place. Pixel-interleaved blocks hold all bands,
        # so keep one block near 1 MiB: a partial write then touches few, small blocks and
        # GDAL's block cache is not thrashed (a 256 px block of 128 float32 bands is 32 MiB).
        tmp_block = temp_block_size(self.count, self.dtype.itemsize, temp_blocksize)
        self._block = tmp_block
        # The temporary file carries no nodata value: GDAL's initialization of new blocks from
        # the nodata value is unreliable for many-band pixel-interleaved files (bands after the
        # first came back as 0), and it may skip writing all-nodata blocks. Instead every block
        # is filled with the nodata value here, explicitly, the first time it is touched (or at
        # close); the value is declared on the final COG.
        self._touched = np.zeros((-(-height // tmp_block), -(-width // tmp_block)), dtype=bool)
        self._fill = np.array(0 if nodata is None else nodata).astype(self.dtype)
        self._fill_is_zero = not self._fill.tobytes().strip(b"\0")
        profile = dict(
            driver="GTiff",
            width=self.width,
            height=self.height,
            count=self.count,
            dtype=self.dtype.name,
            crs=crs,
            transform=transform,
            nodata=None,
            tiled=True,
            blockxsize=tmp_block,
            blockysize=tmp_block,
            interleave="pixel" if count > 1 else "band",
            BIGTIFF="IF_SAFER",
            SPARSE_OK="FALSE",  # never-written blocks are written as 0 at close
        )
        try:
            self._dst = rasterio.open(self._tmp, "w", **profile)
            if band_descriptions is not None:
                for i, d in enumerate(band_descriptions, start=1):
                    self._dst.set_band_description(i, str(d))
            if colormap is not None:
                self._dst.write_colormap(1, {int(k): tuple(v) for k, v in colormap.items()})
            if tags:
                self._dst.update_tags(**{k: str(v) for k, v in tags.items()})
        except Exception:
            self._cleanup()
            raise

    def write(self, data: np.ndarray, row_off: int, col_off: int) -> None:
        """Write ``data`` ``[count, h, w]`` (or ``[h, w]`` for one band) at pixel offset.

        Rows/columns falling outside the raster are an error (crop before writing).
        """
        if self._closed:
            raise RuntimeError(f"{self.path}: writer is closed")
        arr = np.asarray(data)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3 or arr.shape[0] != self.count:
            raise ValueError(f"expected [{self.count}, h, w] data, got shape {arr.shape}")
        _, h, w = arr.shape
        if row_off < 0 or col_off < 0 or row_off + h > self.height or col_off + w > self.width:
            raise ValueError(
                f"window rows {row_off}:{row_off + h}, cols {col_off}:{col_off + w} is outside "
                f"the {self.height}x{self.width} raster"
            )
        self._init_blocks(row_off, col_off, h, w)
        self._dst.write(arr.astype(self.dtype, copy=False), window=Window(col_off, row_off, w, h))

    def _init_blocks(self, row_off: int, col_off: int, h: int, w: int) -> None:
        """Fill each block this write only partly covers with nodata the first time it is
        touched, so the rest of the block reads back as nodata (GDAL would give 0)."""
        b = self._block
        for by in range(row_off // b, (row_off + h - 1) // b + 1):
            for bx in range(col_off // b, (col_off + w - 1) // b + 1):
                if self._touched[by, bx]:
                    continue
                self._touched[by, bx] = True
                r0, c0 = by * b, bx * b
                r1, c1 = min(r0 + b, self.height), min(c0 + b, self.width)
                covered = (
                    row_off <= r0 and col_off <= c0 and row_off + h >= r1 and col_off + w >= c1
                )
                if not covered:
                    self._fill_block(r0, c0, r1, c1)

    def _fill_block(self, r0: int, c0: int, r1: int, c1: int) -> None:
        if self._fill_is_zero:
            return  # GDAL initializes blocks of a file without nodata value with 0
        fill = np.full((self.count, r1 - r0, c1 - c0), self._fill, dtype=self.dtype)
        self._dst.write(fill, window=Window(c0, r0, c1 - c0, r1 - r0))

    def _fill_untouched(self) -> None:
        """Write nodata into every block that was never written (streaming, one at a time)."""
        b = self._block
        for by, bx in zip(*np.nonzero(~self._touched), strict=True):
            r0, c0 = int(by) * b, int(bx) * b
            self._fill_block(r0, c0, min(r0 + b, self.height), min(c0 + b, self.width))
        self._touched[:] = True

    def close(self) -> Path:
        """Finish: build overviews, convert to a COG and atomically move it onto ``path``."""
        if self._closed:
            return self.path
        self._closed = True
        final_tmp = self._tmp.with_name(self._tmp.name.replace(".part.tif", ".cog.tif"))
        vrt = self._tmp.with_name(self._tmp.name.replace(".part.tif", ".vrt"))
        levels: list[Path] = []
        try:
            self._fill_untouched()
            self._dst.close()
            levels = self._build_overviews()
            # A VRT of the full-resolution file that declares our levels as its overviews (and
            # the nodata value); the COG driver then copies them instead of computing its own
            # (GDAL's overview builder is very slow and memory-hungry on many-band
            # pixel-interleaved rasters).
            rasterio.shutil.copy(self._tmp, vrt, driver="VRT")
            _add_vrt_overviews(vrt, levels, self.nodata)
            options = dict(
                COMPRESS=self.compress.upper(),
                BLOCKSIZE=self.blocksize,
                BIGTIFF="IF_SAFER",
                NUM_THREADS="ALL_CPUS",  # compression dominates the conversion time
                OVERVIEWS="FORCE_USE_EXISTING" if levels else "NONE",
            )
            if self.compress.lower() in ("deflate", "lzw", "zstd"):
                options["PREDICTOR"] = "YES"  # 2 for integers, 3 (floating point) for floats
            rasterio.shutil.copy(vrt, final_tmp, driver="COG", **options)
            os.replace(final_tmp, self.path)
            # GDAL's sidecar of the replaced raster (statistics, category names) would be
            # applied to the new one: it goes with the raster it described.
            self.path.with_name(self.path.name + ".aux.xml").unlink(missing_ok=True)
        finally:
            for p in (self._tmp, final_tmp, vrt, *levels):
                p.unlink(missing_ok=True)
        return self.path

    def _overview_sizes(self) -> list[tuple[int, int]]:
        """``(height, width)`` of each overview level (each halves the previous one)."""
        sizes, h, w = [], self.height, self.width
        while (
            len(sizes) < self.overview_count
            if self.overview_count is not None
            else max(h, w) > self.blocksize
        ):
            h, w = -(-h // 2), -(-w // 2)
            sizes.append((h, w))
            if h == 1 and w == 1:
                break
        return sizes

    def _build_overviews(self) -> list[Path]:
        """Write each overview level as a temporary GeoTIFF, from the previous level, chunk by
        chunk (a chunk reads at most ~16 MiB)."""
        levels: list[Path] = []
        src_path = self._tmp
        per_px = self.count * 4  # reduced in float32
        step = max(16, int(np.sqrt(2**24 / (4 * per_px))) // 16 * 16)  # output px per chunk side
        for k, (oh, ow) in enumerate(self._overview_sizes(), start=1):
            path = self._tmp.with_name(self._tmp.name.replace(".part.tif", f".ovr{k}.tif"))
            levels.append(path)
            with rasterio.open(src_path) as src:
                profile = dict(src.profile, width=ow, height=oh, transform=src.transform)
                profile["transform"] = src.transform @ Affine.scale(src.width / ow, src.height / oh)
                with rasterio.open(path, "w", **profile) as dst:
                    for r in range(0, oh, step):
                        for c in range(0, ow, step):
                            rh, cw = min(step, oh - r), min(step, ow - c)
                            win = Window(2 * c, 2 * r, min(2 * cw, src.width - 2 * c),
                                         min(2 * rh, src.height - 2 * r))  # fmt: skip
                            out = self._reduce(src.read(window=win), rh, cw)
                            dst.write(out, window=Window(c, r, cw, rh))
            src_path = path
        return levels

    def _reduce(self, data: np.ndarray, rh: int, cw: int) -> np.ndarray:
        """Halve ``[count, <=2*rh, <=2*cw]`` to ``[count, rh, cw]``."""
        nodata = self.nodata
        if self.overview_resampling == "nearest":
            return data[:, ::2, ::2]
        x = data.astype(np.float32)
        valid = ~np.isnan(x)
        if nodata is not None and not np.isnan(nodata):
            valid &= x != np.float32(nodata)
        if not valid.any():
            return np.full((self.count, rh, cw), self._fill, dtype=self.dtype)
        # Average of the valid pixels of each 2x2 cell (edge cells may be 2x1 / 1x1); summing
        # the four strided quarters is much faster than a reshape-and-reduce.
        pad = ((0, 0), (0, 2 * rh - x.shape[1]), (0, 2 * cw - x.shape[2]))
        x = np.pad(np.where(valid, x, np.float32(0)), pad)
        v = np.pad(valid, pad).astype(np.float32)
        total = x[:, 0::2, 0::2] + x[:, 1::2, 0::2] + x[:, 0::2, 1::2] + x[:, 1::2, 1::2]
        n = v[:, 0::2, 0::2] + v[:, 1::2, 0::2] + v[:, 0::2, 1::2] + v[:, 1::2, 1::2]
        fill = np.float32(np.nan if nodata is None else nodata)
        out = np.where(n > 0, total / np.maximum(n, 1), fill)
        if np.issubdtype(self.dtype, np.integer):
            out = np.rint(out)
        return out.astype(self.dtype)

    def abort(self) -> None:
        """Discard everything written; the destination is left untouched."""
        if not self._closed:
            self._closed = True
            self._cleanup()

    def _cleanup(self) -> None:
        dst = getattr(self, "_dst", None)
        if dst is not None and not dst.closed:
            dst.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> COGWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _add_vrt_overviews(vrt: Path, levels: list[Path], nodata: float | None) -> None:
    """Declare ``levels`` (GeoTIFFs with the same bands) as the overviews of every VRT band,
    and ``nodata`` as its nodata value."""
    tree = ET.parse(vrt)
    for band in tree.getroot().iter("VRTRasterBand"):
        if nodata is not None:
            # GDAL expects NoDataValue before the sources.
            nd = ET.Element("NoDataValue")
            nd.text = "nan" if np.isnan(nodata) else repr(float(nodata))
            band.insert(0, nd)
        for level in levels:
            ovr = ET.SubElement(band, "Overview")
            ET.SubElement(ovr, "SourceFilename", relativeToVRT="0").text = str(level)
            ET.SubElement(ovr, "SourceBand").text = band.get("band")
    tree.write(vrt)


def temp_block_size(count: int, itemsize: int, preferred: int | None = None) -> int:
    """Block side for the temporary file: ``preferred`` if given, else the largest of
    256/128/64/32/16 px whose pixel-interleaved block stays within 1 MiB."""
    if preferred is not None:
        if preferred % 16 or preferred < 16:
            raise ValueError(f"temp_blocksize must be a positive multiple of 16, got {preferred}")
        return preferred
    for side in (256, 128, 64, 32):
        if side * side * count * itemsize <= 2**20:
            return side
    return 16


def is_cloud_optimized(path: str | os.PathLike) -> tuple[bool, list[str]]:
    """Check the main properties of a COG; returns ``(ok, problems)``.

    Checks: GDAL reports ``LAYOUT=COG`` (the COG driver's header ghost area), the image is
    tiled, and rasters larger than one block carry internal overviews that are tiled too.
    """
    problems: list[str] = []
    with rasterio.open(path) as src:
        if src.driver != "GTiff":
            problems.append(f"driver is {src.driver}, not GTiff")
        if src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") != "COG":
            problems.append("no LAYOUT=COG in the image structure metadata")
        if not src.profile.get("tiled", False):
            problems.append("not tiled")
        bh, bw = src.block_shapes[0]
        if (src.height > bh or src.width > bw) and not src.overviews(1):
            problems.append("larger than one block but has no overviews")
        ovr_files = [f for f in src.files if f.lower().endswith(".ovr")]
        if ovr_files:
            problems.append(f"external overview file {ovr_files}")
    return not problems, problems
