"""Pretraining sample files: one HDF5 file per sample, in the OlmoEarth v1 layout.

Layout (spec section 3), all datasets zstd level 3 (``hdf5plugin``):

- ``latlon``: float64 ``[2]``, (lat, lon) of the sample centre in degrees;
- ``timestamps``: int64 ``[T, 3]``, (day 1-31, month 0-11, year) of each timestep;
- ``<modality>``: float32 ``[H, W, T, C]`` for multitemporal modalities, ``[H, W, 1, C]`` for
  static maps, ``C`` in registry band order (``MODALITIES[name].bands``), missing = -99999;
- ``missing_timesteps_masks/<modality>``: bool ``[T]`` (static: ``[1]``), True where the
  modality has no valid value at that timestep.

File attributes (``attrs``) hold optional provenance (CRS, window name); they are not part of
the data layout. :func:`read_sample` returns exactly the arguments of :func:`write_sample`, so
``write_sample(path, **read_sample(other))`` copies a sample.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np

from geolatent.modalities import MISSING_VALUE, MODALITIES

MISSING_GROUP = "missing_timesteps_masks"
_RESERVED = {"latlon", "timestamps", MISSING_GROUP}


class SampleFileError(ValueError):
    """A sample file (or the arrays meant for one) does not follow the layout; names the file."""


def _check_sample(
    path: Path,
    arrays: dict[str, np.ndarray],
    timestamps: np.ndarray,
    latlon: np.ndarray,
    missing_timesteps: dict[str, np.ndarray],
) -> None:
    if latlon.shape != (2,):
        raise SampleFileError(f"{path}: latlon must have shape [2], got {list(latlon.shape)}")
    if timestamps.ndim != 2 or timestamps.shape[1] != 3:
        raise SampleFileError(f"{path}: timestamps must be [T, 3], got {list(timestamps.shape)}")
    n_t = timestamps.shape[0]
    if n_t and ((timestamps[:, 1] < 0) | (timestamps[:, 1] > 11)).any():
        raise SampleFileError(f"{path}: timestamps month must be 0-11")
    if not arrays:
        raise SampleFileError(f"{path}: a sample needs at least one modality")
    hw = None
    for name, arr in arrays.items():
        if name not in MODALITIES:
            raise SampleFileError(f"{path}: unknown modality {name!r}; known: {list(MODALITIES)}")
        mod = MODALITIES[name]
        want_t = n_t if mod.multitemporal else 1
        if arr.ndim != 4 or arr.shape[2] != want_t or arr.shape[3] != mod.num_bands:
            raise SampleFileError(
                f"{path}: {name} must be [H, W, {want_t}, {mod.num_bands}], got {list(arr.shape)}"
            )
        if hw is None:
            hw = arr.shape[:2]
        elif arr.shape[:2] != hw:
            raise SampleFileError(f"{path}: {name} is {arr.shape[:2]} px but others are {hw}")
        if np.isnan(arr).any():
            raise SampleFileError(f"{path}: {name} contains NaN; use -99999 for missing values")
        mask = missing_timesteps.get(name)
        if mask is None or mask.shape != (want_t,):
            got = None if mask is None else list(mask.shape)
            raise SampleFileError(
                f"{path}: missing_timesteps[{name!r}] must be bool [{want_t}], got {got}"
            )
    extra = set(missing_timesteps) - set(arrays)
    if extra:
        raise SampleFileError(f"{path}: missing_timesteps for modalities without arrays: {extra}")


def write_sample(
    path: str | Path,
    arrays: dict[str, np.ndarray],
    timestamps: np.ndarray,
    latlon: np.ndarray | tuple[float, float],
    missing_timesteps: dict[str, np.ndarray],
    attrs: dict[str, Any] | None = None,
) -> Path:
    """Write one sample file atomically (temporary name, then ``os.replace``).

    Args:
        path: destination ``.h5`` file.
        arrays: modality -> float32 ``[H, W, T, C]`` (static ``[H, W, 1, C]``), registry band
            order, missing = -99999 (NaN is rejected).
        timestamps: int ``[T, 3]`` (day 1-31, month 0-11, year).
        latlon: ``(lat, lon)`` in degrees.
        missing_timesteps: modality -> bool ``[T]`` (static ``[1]``), one per modality in arrays.
        attrs: optional file attributes (str / number / list values), e.g. CRS, window name.

    Returns:
        The written path. Raises :class:`SampleFileError` naming ``path`` on invalid input.
    """
    path = Path(path)
    arrays = {k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()}
    timestamps = np.asarray(timestamps, dtype=np.int64)
    if timestamps.size == 0:
        timestamps = np.zeros((0, 3), np.int64)
    latlon = np.asarray(latlon, dtype=np.float64)
    missing = {k: np.asarray(v, dtype=bool) for k, v in missing_timesteps.items()}
    _check_sample(path, arrays, timestamps, latlon, missing)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    zstd = hdf5plugin.Zstd(clevel=3)
    try:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("latlon", data=latlon)
            f.create_dataset("timestamps", data=timestamps)
            for name in MODALITIES:  # canonical order, for reproducible files
                if name not in arrays:
                    continue
                arr = arrays[name]
                h, w, t, c = arr.shape
                # One chunk per timestep: a loader reading a few timesteps decodes only those.
                f.create_dataset(name, data=arr, chunks=(h, w, 1, c) if t else None, **zstd)
            grp = f.create_group(MISSING_GROUP)
            for name, mask in missing.items():
                grp.create_dataset(name, data=mask)
            for k, v in (attrs or {}).items():
                f.attrs[k] = v
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_sample(path: str | Path, modalities: list[str] | None = None) -> dict[str, Any]:
    """Read a sample file written by :func:`write_sample` (or by the reference pipeline).

    Args:
        path: the ``.h5`` file.
        modalities: only read these modalities (all present ones when None).

    Returns:
        ``{"arrays": {modality: float32 [H, W, T, C]}, "timestamps": int64 [T, 3],
        "latlon": float64 [2], "missing_timesteps": {modality: bool [T]}, "attrs": dict}``.
        A modality without a mask in the file gets one computed from its values.

    Raises:
        SampleFileError: naming the file, when it is not readable HDF5 (corrupt, truncated),
            misses ``latlon`` / ``timestamps``, holds an unknown modality or wrong shapes.
    """
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise SampleFileError(f"{path}: not a readable HDF5 sample file ({e})") from e
    try:
        with f:
            for key in ("latlon", "timestamps"):
                if key not in f:
                    raise SampleFileError(f"{path}: missing dataset {key!r}")
            names = [k for k in f.keys() if k not in _RESERVED]
            unknown = [k for k in names if k not in MODALITIES]
            if unknown:
                raise SampleFileError(f"{path}: unknown modalities {unknown}")
            if modalities is not None:
                names = [k for k in names if k in modalities]
            latlon = np.asarray(f["latlon"][()], dtype=np.float64)
            timestamps = np.asarray(f["timestamps"][()], dtype=np.int64)
            arrays = {k: np.asarray(f[k][()], dtype=np.float32) for k in names}
            masks = f.get(MISSING_GROUP)
            missing = {}
            for k in names:
                if masks is not None and k in masks:
                    missing[k] = np.asarray(masks[k][()], dtype=bool)
                else:
                    missing[k] = (arrays[k] == MISSING_VALUE).all(axis=(0, 1, 3))
            attrs = {
                k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in f.attrs.items()
            }
    except SampleFileError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise SampleFileError(f"{path}: corrupt or truncated sample file ({e})") from e
    if not arrays and modalities is None:
        raise SampleFileError(f"{path}: no modality datasets")
    if arrays:
        _check_sample(path, arrays, timestamps, latlon, missing)
    return {
        "arrays": arrays,
        "timestamps": timestamps,
        "latlon": latlon,
        "missing_timesteps": missing,
        "attrs": attrs,
    }
