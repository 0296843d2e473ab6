"""GEO-Bench (v1.0) adapters: m-eurosat, m-bigearthnet, m-so2sat, m-brick-kiln, m-forestnet,
m-sa-crop-type, m-cashew-plant.

On-disk format (as distributed by ``geobench-download``): one folder per dataset, e.g.
``classification_v1.0/m-eurosat/``, holding one HDF5 file per sample (``<sample>.hdf5``), the
partitions ``<name>_partition.json`` (``default_partition.json`` = ``{"train": [...],
"valid": [...], "test": [...]}`` of sample names), ``band_stats.json`` and ``task_specs.pkl``.
Each HDF5 holds one 2-D dataset per band, named ``<band name>`` or ``<band name>_<date>``
(time series), plus ``label`` for segmentation; the file attribute ``pickle`` is
``str(pickle.dumps(attrs))``: per band its ``band_info`` / ``date``, the ``bands_order`` and, for
classification, the ``label`` (an int, or a 0/1 vector for multilabel).

The pickle references geobench classes; it is read with a restricted unpickler that builds inert
stand-ins for every class outside a small allow-list (no geobench install needed, and no code
from the file is run).

The band-name trap: in m-eurosat and m-brick-kiln the stored band names do not match the pixel
data (geo-bench issues #28 and #29). The converters wrote the sources' channels in the order of
GEO-Bench's 13-band Sentinel-2 list, but the sources have another order:

* m-eurosat holds EuroSAT's order B01..B08, B09, B10, B11, B12, B8A: key "08A" holds B09, "09"
  holds B10, "10" holds B11, "11" holds B12 and "12" holds B8A;
* m-brick-kiln holds the kiln-scaling export order B1, B2, B3, B4, B5, B7, B8A, B8, B11, B12,
  TCI_R, TCI_G, TCI_B: key "06" holds B07, "07" B8A, "08" B08, "08A" B11, "09" B12 and "10"-"12"
  the 8-bit true-colour image (dropped). It has no B06 and no B09, so the model's 20 m and 60 m
  bandsets are incomplete: only [B02, B03, B04, B08] is given, unless ``impute_missing`` is set.

Units handed to the model (Sentinel-2 L2A-scale DN; the model was pretrained on L2A):

* m-eurosat, m-brick-kiln: Sentinel-2 L1C DN (top of atmosphere), as is; B10 dropped.
* m-bigearthnet: Sentinel-2 L2A DN, as is.
* m-so2sat: So2Sat LCZ42 stores reflectance (DN / 10000): multiplied by 10000. Its Sentinel-1
  channels are complex / Lee-filtered linear values; with ``modalities`` including
  ``sentinel1`` the Lee-filtered VV / VH intensities become dB (10 log10).
* m-sa-crop-type, m-cashew-plant: Sentinel-2 DN as distributed (12 bands, no B10); the cloud
  probability band is dropped.
* m-forestnet: Landsat-8 red, green, blue, NIR, SWIR1, SWIR2 as 8-bit display values (0-255, the
  ForestNet PNG / npy composites, not DN). They are mapped linearly onto each band's pretraining
  range (value / 255 = normalized value) and the Landsat bands it lacks (B1, B9, B10, B11) are
  imputed at the pretraining mean: both are approximations, recorded in the results.
"""

from __future__ import annotations

import ast
import datetime as dt
import functools
import io
import json
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the compression filters some files use)
import numpy as np

from geolatent.evals.datasets.base import (
    Batch,
    DatasetNotFoundError,
    EvalDataset,
    SplitData,
    complete_bandsets,
    date_to_timestamp,
    impute_pretraining_mean,
    to_missing,
)
from geolatent.modalities import get_modality
from geolatent.normalize import band_affine

# ---------------------------------------------------------------------------------------------
# Restricted unpickling of the ``pickle`` attribute.


class _Opaque:
    """Inert stand-in for a class the file names but we do not trust or need (band_info,
    affine transforms, CRS objects): it only stores what it is given."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state

    def __repr__(self) -> str:
        return f"<{self._origin}>"  # type: ignore[attr-defined]


@functools.cache
def _opaque_class(module: str, name: str) -> type:
    return type(name, (_Opaque,), {"_origin": f"{module}.{name}"})


_ALLOWED = {
    ("datetime", "date"), ("datetime", "datetime"), ("datetime", "timedelta"),
    ("collections", "OrderedDict"), ("numpy", "dtype"), ("numpy", "ndarray"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("copyreg", "_reconstructor"), ("builtins", "object"), ("builtins", "set"),
    ("builtins", "frozenset"), ("builtins", "complex"),
}  # fmt: skip


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            if module.startswith("numpy.core."):  # numpy >= 2 renamed numpy.core
                module = module.replace("numpy.core.", "numpy._core.", 1)
            return super().find_class(module, name)
        return _opaque_class(module, name)


def read_attrs(h5: h5py.File) -> dict:
    """The sample attributes GEO-Bench stores as ``attrs["pickle"] = str(pickle.dumps(d))``."""
    raw = h5.attrs.get("pickle")
    if raw is None:
        return {}
    if isinstance(raw, bytes):
        raw = raw.decode()
    data = ast.literal_eval(raw) if isinstance(raw, str) else bytes(raw)
    return _SafeUnpickler(io.BytesIO(data)).load()


# ---------------------------------------------------------------------------------------------
# Per-dataset band contracts.

_S2_KEYS = (
    "01 - Coastal aerosol", "02 - Blue", "03 - Green", "04 - Red", "05 - Vegetation Red Edge",
    "06 - Vegetation Red Edge", "07 - Vegetation Red Edge", "08 - NIR",
    "08A - Vegetation Red Edge", "09 - Water vapour", "10 - SWIR - Cirrus", "11 - SWIR",
    "12 - SWIR",
)  # fmt: skip
_S2_TRUE = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
            "B12")  # fmt: skip
_S2_STANDARD = dict(zip(_S2_KEYS, _S2_TRUE, strict=True))

# Keys as stored -> the band the data really is (see the module docstring); None = drop.
_EUROSAT = {**_S2_STANDARD, "08A - Vegetation Red Edge": "B09", "09 - Water vapour": "B10",
            "10 - SWIR - Cirrus": "B11", "11 - SWIR": "B12", "12 - SWIR": "B8A"}  # fmt: skip
_BRICK_KILN = dict(zip(_S2_KEYS, ("B01", "B02", "B03", "B04", "B05", "B07", "B8A", "B08", "B11",
                                  "B12", None, None, None), strict=True))  # fmt: skip

_LANDSAT = {"02 - Blue": "B2", "03 - Green": "B3", "04 - Red": "B4", "05 - NIR": "B5",
            "06 - SWIR1": "B6", "07 - SWIR2": "B7"}  # fmt: skip
_S1_SO2SAT = {"05 - VH.LEE Filtered": "vh", "06 - VV.LEE Filtered": "vv"}


@dataclass(frozen=True)
class GeoBenchSpec:
    """What one GEO-Bench dataset is and how its bands map to the model's."""

    name: str
    task_type: str
    num_classes: int
    band_map: dict[str, dict[str, str | None]]  # modality -> stored key -> registry band
    scale: dict[str, float] = field(default_factory=dict)  # modality -> factor to model units
    default_date: dt.date = dt.date(2018, 7, 15)  # used when the files store no date
    modalities: tuple[str, ...] = ("sentinel2_l2a",)
    impute_missing: bool = False
    units_note: str = ""


SPECS: dict[str, GeoBenchSpec] = {
    s.name: s
    for s in (
        GeoBenchSpec("m-eurosat", "classification", 10, {"sentinel2_l2a": _EUROSAT},
                     units_note="S2 L1C DN; EuroSAT channel order (band-name trap fixed)"),
        GeoBenchSpec("m-bigearthnet", "multilabel", 43, {"sentinel2_l2a": _S2_STANDARD},
                     units_note="S2 L2A DN"),
        GeoBenchSpec("m-so2sat", "classification", 17,
                     {"sentinel2_l2a": _S2_STANDARD, "sentinel1": _S1_SO2SAT},
                     scale={"sentinel2_l2a": 10000.0},
                     units_note="S2 reflectance x 10000 -> DN; S1 Lee-filtered intensity -> dB"),
        GeoBenchSpec("m-brick-kiln", "classification", 2, {"sentinel2_l2a": _BRICK_KILN},
                     units_note="S2 L1C DN; kiln-scaling channel order (band-name trap fixed)"),
        GeoBenchSpec("m-forestnet", "classification", 12, {"landsat": _LANDSAT},
                     modalities=("landsat",), impute_missing=True,
                     units_note="Landsat-8 8-bit display values mapped to the pretraining range; "
                                "B1, B9, B10, B11 imputed at the pretraining mean"),
        GeoBenchSpec("m-sa-crop-type", "segmentation", 10, {"sentinel2_l2a": _S2_STANDARD},
                     units_note="S2 DN"),
        GeoBenchSpec("m-cashew-plant", "segmentation", 7, {"sentinel2_l2a": _S2_STANDARD},
                     units_note="S2 DN"),
    )
}


def _split_key(key: str) -> tuple[str, str | None]:
    """``"02 - Blue_2019-11-10"`` -> ``("02 - Blue", "2019-11-10")``."""
    m = re.fullmatch(r"(.*)_(\d{4}-?\d{2}-?\d{2}.*)", key)
    return (m.group(1), m.group(2)) if m else (key, None)


def _parse_date(text: str | None) -> dt.date | None:
    if not text:
        return None
    digits = re.sub(r"\D", "", text)[:8]
    try:
        return dt.datetime.strptime(digits, "%Y%m%d").date()
    except ValueError:
        return None


class GeoBench(EvalDataset):
    """One GEO-Bench dataset (``name`` one of :data:`SPECS`).

    Band contract: see the module docstring; ``modalities`` restricts / extends the inputs
    (m-so2sat: ``("sentinel2_l2a", "sentinel1")`` adds S1), ``impute_missing`` completes
    partly present bandsets at the pretraining mean (off unless the dataset needs it).

    Args:
        name: e.g. ``"m-eurosat"``.
        root: the dataset folder (holding the ``*.hdf5`` files), or any parent of it (e.g. the
            GEO-Bench root); default ``$GEOLATENT_DATA_DIR/geobench``.
        partition: partition file to use (``"default"`` -> ``default_partition.json``).
        default_date: acquisition date for datasets that store none.
    """

    dirname = "geobench"

    def __init__(
        self,
        name: str,
        root=None,
        partition: str = "default",
        modalities: tuple[str, ...] | None = None,
        impute_missing: bool | None = None,
        default_date: dt.date | str | None = None,
    ):
        super().__init__(root)
        if name not in SPECS:
            raise KeyError(f"unknown GEO-Bench dataset {name!r}; known: {sorted(SPECS)}")
        self.spec = SPECS[name]
        self.name = name
        self.task_type = self.spec.task_type
        self.num_classes = self.spec.num_classes
        self.folder = self._find_folder(self.root, name)
        self.partition = partition
        self.modalities = tuple(modalities or self.spec.modalities)
        unknown = set(self.modalities) - set(self.spec.band_map)
        if unknown:
            raise ValueError(f"{name} has no {sorted(unknown)} input")
        self.impute = self.spec.impute_missing if impute_missing is None else impute_missing
        if isinstance(default_date, str):
            default_date = dt.date.fromisoformat(default_date)
        self.default_date = default_date or self.spec.default_date
        part_file = self.folder / f"{partition}_partition.json"
        if not part_file.exists():
            raise DatasetNotFoundError(f"{part_file} not found (GEO-Bench partition file)")
        parts = json.loads(part_file.read_text())
        self._parts = {"val" if k == "valid" else k: list(v) for k, v in parts.items()}
        self.split_names = tuple(k for k in ("train", "val", "test") if self._parts.get(k))

    @staticmethod
    def _find_folder(root: Path, name: str) -> Path:
        if root.name == name or any(root.glob("*_partition.json")):
            return root
        for cand in (root / name, *root.glob(f"*/{name}")):
            if cand.is_dir():
                return cand
        raise DatasetNotFoundError(f"no GEO-Bench folder {name!r} under {root}")

    def options(self) -> dict:
        return {"name": self.name, "partition": self.partition, "modalities": self.modalities,
                "impute": self.impute, "default_date": str(self.default_date)}  # fmt: skip

    def fingerprint_files(self) -> list[Path]:
        return [p for p in self.folder.iterdir() if p.is_file()]

    def split(self, name: str) -> SplitData:
        names = self._parts.get(name)
        if not names:
            raise KeyError(f"{self.name}: no split {name!r} in partition {self.partition!r}")
        paths = [self.folder / f"{n}.hdf5" for n in names]
        labels = np.stack([self._read_label(p) for p in paths])
        return SplitData(labels, lambda idx: self._load([paths[i] for i in idx]), names)

    def _read_label(self, path: Path) -> np.ndarray:
        with h5py.File(path, "r") as f:
            if self.task_type == "segmentation":
                key = next(k for k in f.keys() if k.startswith("label"))
                return np.asarray(f[key], dtype=np.int64)
            label = read_attrs(f)["label"]
        if self.task_type == "multilabel":
            return np.asarray(label, dtype=np.int64).reshape(-1)
        return np.asarray(int(np.asarray(label).reshape(())), dtype=np.int64)

    def _read_sample(self, path: Path) -> tuple[dict[str, np.ndarray], list[dt.date]]:
        """Per modality ``[H, W, T, C]`` (bands in the order of :meth:`bands`), and the dates."""
        with h5py.File(path, "r") as f:
            attrs = read_attrs(f)
            by_date: dict[dt.date | None, dict[str, np.ndarray]] = {}
            for key in f.keys():
                if key.startswith("label"):
                    continue
                band, suffix = _split_key(key)
                info = attrs.get(key, {}) if isinstance(attrs.get(key), dict) else {}
                date = info.get("date") if isinstance(info.get("date"), dt.date) else None
                date = date or _parse_date(suffix)
                if isinstance(date, dt.datetime):
                    date = date.date()
                by_date.setdefault(date, {})[band] = np.asarray(f[key])
        dates = sorted(by_date, key=lambda d: d or dt.date.min)
        if len(dates) > 12:
            raise ValueError(f"{path}: {len(dates)} dates; the model takes at most 12")
        out = {}
        for mod in self.modalities:
            planes = []
            for key, band in self.spec.band_map[mod].items():
                if band is None or band == "B10":
                    continue
                steps = [by_date[d].get(key) for d in dates]
                if all(s is None for s in steps):
                    continue
                shape = next(s.shape for s in steps if s is not None)
                planes.append(np.stack([np.full(shape, np.nan, np.float32) if s is None else
                                        s.astype(np.float32) for s in steps], axis=-1))  # fmt: skip
            out[mod] = np.stack(planes, axis=-1)  # [H, W, T, C]
        return out, [d or self.default_date for d in dates]

    def bands(self, mod: str, have: set[str] | None = None) -> list[str]:
        """Registry names of the stored channels handed over for ``mod`` (before imputation)."""
        return [b for k, b in self.spec.band_map[mod].items()
                if b is not None and b != "B10" and (have is None or k in have)]  # fmt: skip

    def _load(self, paths: list[Path]) -> Batch:
        samples = [self._read_sample(p) for p in paths]
        ts = np.stack([np.array([date_to_timestamp(d) for d in dates]) for _, dates in samples])
        inputs: dict[str, np.ndarray] = {}
        bands: dict[str, list[str]] = {}
        with h5py.File(paths[0], "r") as f:
            keys = {_split_key(k)[0] for k in f.keys()}
        for mod in self.modalities:
            x = np.stack([s[mod] for s, _ in samples])  # [B, H, W, T, C]
            names = self.bands(mod, keys)
            x, names = self._to_model_units(mod, x, names)
            inputs[mod], bands[mod] = x, names
        return Batch(inputs, bands, ts.astype(np.int64))

    def _to_model_units(self, mod: str, x: np.ndarray, names: list[str]):
        if self.name == "m-forestnet":
            # 8-bit display values: v / 255 is taken as the normalized value.
            lo, hi = band_affine("landsat")
            idx = [get_modality("landsat").band_index(b) for b in names]
            x = (lo[idx] + x / 255.0 * (hi - lo)[idx]).astype(np.float32)
        elif mod == "sentinel1":
            with np.errstate(divide="ignore", invalid="ignore"):
                x = (10.0 * np.log10(np.where(x > 0, x, np.nan))).astype(np.float32)
        x = to_missing(x * self.spec.scale.get(mod, 1.0))
        # Only complete bandsets are given (embed masks the others): drop partial ones unless
        # this task imputes them.
        if self.impute:
            x, names, _ = impute_pretraining_mean(mod, x, names)
        else:
            x, names = complete_bandsets(mod, x, names)
        return x, names

    def describe(self) -> dict:
        d = super().describe()
        d["units"] = self.spec.units_note
        return d

