"""Pretraining sample files: the manifest, and the built-in sample written as sample files.

Sample files use the v1 HDF5 layout and are read and written by :mod:`geolatent.data.h5samples`
(one reader for the whole project). A *manifest* lists the usable files of a folder with their
size and, per modality, how many timesteps hold data; it is a JSON-lines file (a header line,
then one record per sample) so it streams for a million samples. Files that cannot be read are
reported with their name and left out.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from geolatent.data.h5samples import SampleFileError, read_sample, write_sample
from geolatent.modalities import MODALITIES

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "geolatent-pretrain-manifest"
MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.jsonl"


@dataclass(frozen=True)
class SampleRecord:
    """One sample file.

    Attributes:
        path: file path relative to the manifest's root.
        height, width: size in 10 m pixels.
        timesteps: T of the file's multitemporal arrays.
        present: modality -> number of timesteps with data (static maps: 0 or 1). Modalities
            absent from the file are not listed.
    """

    path: str
    height: int
    width: int
    timesteps: int
    present: dict[str, int] = field(default_factory=dict)

    @property
    def has_encoder_input(self) -> bool:
        """True when some encoder-input modality (imagery) has data."""
        return any(n > 0 and MODALITIES[m].encoder_input for m, n in self.present.items())


@dataclass
class Manifest:
    """The samples of one folder (``root``), in a fixed order."""

    root: Path
    records: list[SampleRecord]

    def __len__(self) -> int:
        return len(self.records)

    def path(self, i: int) -> Path:
        return self.root / self.records[i].path

    def modality_counts(self) -> dict[str, int]:
        """Number of samples in which each modality has data."""
        out = {m: 0 for m in MODALITIES}
        for r in self.records:
            for m, n in r.present.items():
                out[m] += n > 0
        return {m: n for m, n in out.items() if n}

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write ``root/manifest.jsonl`` (or ``path``) atomically; paths stay relative."""
        out = Path(path) if path is not None else self.root / MANIFEST_NAME
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        with open(tmp, "w") as f:
            header = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "count": len(self)}
            f.write(json.dumps(header) + "\n")
            for r in self.records:
                f.write(json.dumps(asdict(r)) + "\n")
        os.replace(tmp, out)
        return out

    @classmethod
    def load(cls, path: str | os.PathLike, root: str | os.PathLike | None = None) -> Manifest:
        """Read a manifest; sample paths are relative to ``root`` (default: its folder)."""
        path = Path(path)
        try:
            lines = path.read_text().splitlines()
            header = json.loads(lines[0]) if lines else {}
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: cannot read manifest ({e})") from e
        if header.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"{path}: not a geolatent pretraining manifest")
        if header.get("version", 0) > MANIFEST_VERSION:
            raise ValueError(
                f"{path}: manifest version {header['version']} is newer than supported"
            )
        records = []
        for n, line in enumerate(lines[1:], start=2):
            try:
                records.append(SampleRecord(**json.loads(line)))
            except (json.JSONDecodeError, TypeError) as e:
                raise ValueError(f"{path}:{n}: bad manifest record ({e})") from e
        return cls(Path(root) if root is not None else path.parent, records)


def describe_sample(path: str | os.PathLike, root: str | os.PathLike | None = None) -> SampleRecord:
    """Read one file and summarize it; raises :class:`SampleFileError` naming the file."""
    path = Path(path)
    s = read_sample(path)
    arrays, missing = s["arrays"], s["missing_timesteps"]
    h, w = next(iter(arrays.values())).shape[:2]
    present = {m: int((~missing[m]).sum()) for m in MODALITIES if m in arrays}
    rel = os.path.relpath(path, root) if root is not None else str(path)
    return SampleRecord(rel, int(h), int(w), int(s["timestamps"].shape[0]), present)


def _describe(args: tuple[str, str]) -> SampleRecord | str:
    try:
        return describe_sample(args[0], args[1])
    except SampleFileError as e:
        return str(e)
    except Exception as e:  # anything else unexpected is still one bad file, not a dead scan
        return f"{args[0]}: {type(e).__name__}: {e}"


def build_manifest(
    root: str | os.PathLike,
    files: Iterable[str | os.PathLike] | None = None,
    workers: int = 0,
) -> tuple[Manifest, list[str]]:
    """Scan sample files into a manifest.

    Args:
        root: folder of ``*.h5`` / ``*.hdf5`` files (searched recursively when ``files`` is None).
        files: explicit files instead of a scan.
        workers: processes used to read files (0 reads in this process).

    Returns:
        ``(manifest, errors)``: files that fail to read, or hold no encoder-input modality, are
        left out and described in ``errors`` (one message each, naming the file).
    """
    root = Path(root)
    if files is None:
        files = sorted(p for ext in ("*.h5", "*.hdf5") for p in root.rglob(ext))
    jobs = [(str(f), str(root)) for f in files]
    if workers > 0 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_describe, jobs, chunksize=16))
    else:
        results = [_describe(j) for j in jobs]
    records, errors = [], []
    for r in results:
        if isinstance(r, str):
            errors.append(r)
        elif not r.has_encoder_input:
            errors.append(f"{root / r.path}: no encoder-input modality has data; sample skipped")
        else:
            records.append(r)
    for e in errors:
        log.warning("skipping sample: %s", e)
    return Manifest(root, records), errors


def write_builtin_samples(
    out_dir: str | os.PathLike,
    num_samples: int = 16,
    size_px: int = 64,
    timesteps: int = 12,
    seed: int = 0,
) -> list[Path]:
    """Write the built-in sample scene as pretraining sample files.

    Each file is an independent scene (``make_sample_scene`` with seed ``seed + i`` and year
    ``2018 + i % 6``) with Sentinel-2 L2A (DN) and Sentinel-1 (dB); other modalities are absent.

    Returns:
        The written paths, ``out_dir/builtin_{i:05d}.h5``; existing files are kept as they are.
    """
    from geolatent.data.synthetic import make_sample_scene

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(num_samples):
        path = out / f"builtin_{i:05d}.h5"
        paths.append(path)
        if path.exists():
            continue
        scene = make_sample_scene(size_px, size_px, timesteps, seed=seed + i, year=2018 + i % 6)
        arrays = scene.modalities
        write_sample(
            path,
            arrays,
            scene.timestamps,
            _scene_latlon(scene),
            {m: np.zeros(a.shape[2], dtype=bool) for m, a in arrays.items()},
            attrs={"source": "geolatent built-in sample", "seed": seed + i},
        )
    return paths


def _scene_latlon(scene) -> tuple[float, float]:
    """(lat, lon) in degrees of the scene centre."""
    from pyproj import Transformer

    x, y = scene.transform @ (scene.width / 2, scene.height / 2)
    lon, lat = Transformer.from_crs(scene.crs.to_wkt(), "EPSG:4326", always_xy=True).transform(x, y)
    return float(lat), float(lon)
