"""Uploads: size limits, safe names, zip archives and area-of-interest files.

Nothing an upload names reaches outside the project folder: file names are reduced to a safe
basename (a name with a path part, ``..`` or a control character is refused), archive members
are checked one by one before anything is extracted (no absolute paths, no ``..``, no links, a
bounded total size), and every path is resolved and checked to lie under its parent folder.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath

import shapely
from fastapi import HTTPException, UploadFile
from shapely.geometry import mapping, shape

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,127}$")
AOI_SUFFIXES = (".geojson", ".json", ".gpkg", ".zip", ".kml")
LABEL_SUFFIXES = (".geojson", ".json", ".gpkg", ".zip", ".csv")
MAX_ARCHIVE_RATIO = 100  # zip bombs: refuse archives that expand more than this


class UploadError(HTTPException):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)


def safe_filename(name: str | None, allowed: tuple[str, ...]) -> str:
    """The upload's own name if it is a plain, safe file name with an allowed suffix."""
    if not name:
        raise UploadError(400, "the upload has no file name")
    if (PurePosixPath(name).name != name or PureWindowsPath(name).name != name
            or ".." in name or not _SAFE_NAME.match(name)):
        raise UploadError(400, f"unsafe upload file name {name!r}: use a plain name of letters, "
                               "digits, '.', '_', '-' and spaces, without folders")
    if not name.lower().endswith(allowed):
        raise UploadError(415, f"unsupported file type {name!r}; upload one of {allowed}")
    return name


def inside(base: Path, candidate: Path) -> Path:
    """``candidate`` resolved, if it lies under ``base``; else a 400 error."""
    base, resolved = base.resolve(), candidate.resolve()
    if resolved != base and base not in resolved.parents:
        raise UploadError(400, f"path {candidate} reaches outside the project folder")
    return resolved


async def save_upload(upload: UploadFile, folder: Path, allowed: tuple[str, ...],
                      max_bytes: int) -> Path:
    """Stream an upload into ``folder`` (under a unique temp name, then renamed), refusing it
    with 413 as soon as it exceeds ``max_bytes``."""
    name = safe_filename(upload.filename, allowed)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".upload-")
    tmp = Path(tmp_name)
    size = 0
    try:
        with open(fd, "wb") as out:
            while chunk := await upload.read(1 << 20):
                size += len(chunk)
                if size > max_bytes:
                    raise UploadError(413, f"upload larger than the limit of {max_bytes} bytes "
                                           "(start the server with a larger --max-upload-mb)")
                out.write(chunk)
        dest = inside(folder, folder / name)
        if dest.exists():  # never overwrite an earlier upload: keep both
            stem, suffix = dest.stem, dest.suffix
            i = 1
            while (folder / f"{stem}-{i}{suffix}").exists():
                i += 1
            dest = folder / f"{stem}-{i}{suffix}"
        tmp.replace(dest)
        return dest
    finally:
        tmp.unlink(missing_ok=True)


def extract_zip(archive: Path, dest: Path, max_bytes: int) -> Path:
    """Extract a zip after checking every member: no absolute or parent paths, no links,
    total size within ``max_bytes`` and the compression ratio within bounds."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise UploadError(400, f"{archive.name} is not a valid zip file") from exc
    with zf:
        total = 0
        for info in zf.infolist():
            member = info.filename
            if (member.startswith(("/", "\\")) or ".." in PurePosixPath(member).parts
                    or ".." in PureWindowsPath(member).parts or ":" in member):
                raise UploadError(400, f"archive member {member!r} points outside the archive")
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise UploadError(400, f"archive member {member!r} is a symbolic link")
            total += info.file_size
            if total > max_bytes or (info.compress_size and
                                     info.file_size > MAX_ARCHIVE_RATIO * info.compress_size
                                     and info.file_size > 1 << 20):
                raise UploadError(413, f"{archive.name} expands beyond the upload limit")
        dest.mkdir(parents=True, exist_ok=True)
        for info in zf.infolist():
            inside(dest, dest / info.filename)
        zf.extractall(dest)
    return dest


def read_aoi(path: Path, max_bytes: int) -> dict:
    """The union of all polygons in an AOI file (GeoJSON, GeoPackage, zipped Shapefile, KML) as
    a GeoJSON geometry in lon/lat (EPSG:4326)."""
    import pyogrio
    from pyproj import CRS

    source = path
    if path.suffix.lower() == ".zip":
        folder = extract_zip(path, path.with_suffix(""), max_bytes)
        shps = sorted(folder.rglob("*.shp"))
        if not shps:
            raise UploadError(400, f"{path.name} holds no .shp file: zip a Shapefile with its "
                                   ".shp, .shx, .dbf and .prj")
        source = shps[0]
    try:
        table = pyogrio.raw.read(source)
    except Exception as exc:  # noqa: BLE001 - GDAL raises many kinds
        raise UploadError(400, f"cannot read {path.name} as GeoJSON, GeoPackage, Shapefile or "
                               f"KML: {exc}") from exc
    meta, wkb = table[0], table[2]
    if wkb is None or len(wkb) == 0:
        raise UploadError(400, f"{path.name} holds no features")
    geometries = shapely.from_wkb(wkb)
    crs = meta.get("crs")
    if crs and not CRS.from_user_input(crs).equals(CRS.from_epsg(4326)):
        from pyproj import Transformer

        tr = Transformer.from_crs(crs, 4326, always_xy=True)
        geometries = shapely.transform(geometries, lambda xy: _tx(tr, xy))
    polys = [g for g in geometries if g is not None and g.geom_type in ("Polygon", "MultiPolygon")]
    if not polys:
        raise UploadError(400, f"{path.name} holds no polygons: an area of interest is a polygon")
    area = shapely.make_valid(shapely.union_all(polys))
    return geometry_checked(mapping(area))


def _tx(tr, xy):  # noqa: ANN001, ANN202
    import numpy as np

    x, y = tr.transform(xy[:, 0], xy[:, 1])
    return np.column_stack([x, y])


def geometry_checked(geojson: dict, kinds: tuple[str, ...] = ("Polygon", "MultiPolygon")) -> dict:
    """A GeoJSON geometry (lon/lat) that parses, is valid, lies within lon/lat bounds and has
    an allowed type; else a 422 error saying what is wrong."""
    try:
        geom = shape(geojson)
    except Exception as exc:  # noqa: BLE001 - shapely raises several kinds on bad input
        raise UploadError(422, f"malformed GeoJSON geometry: {exc}") from exc
    if geom.is_empty:
        raise UploadError(422, "the geometry is empty")
    if geom.geom_type not in kinds:
        raise UploadError(422, f"geometry type {geom.geom_type} is not allowed here; use {kinds}")
    minx, miny, maxx, maxy = geom.bounds
    if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
        raise UploadError(422, "coordinates are not lon/lat degrees (EPSG:4326): reproject the "
                               "geometry first")
    if not geom.is_valid:
        raise UploadError(422, f"invalid geometry: {shapely.is_valid_reason(geom)}")
    return mapping(geom)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
