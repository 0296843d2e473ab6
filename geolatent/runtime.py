"""Where code runs and what a run costs: device resolution, ranks, CPU features, compute report.

One module for the questions every command asks:

- :func:`resolve_device` turns ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` into a ``torch.device``
  and raises :class:`DeviceError` naming the flag or config key when CUDA is asked for and
  missing (never a traceback from deep inside torch).
- :func:`rank_info` reads the torchrun environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``).
- :func:`cpu_info` / :func:`cpu_has` report the CPU model and the instruction-set features the
  fast paths dispatch on (AVX2, AVX-512, AVX512_BF16, VNNI, AMX).
- :class:`ComputeMeter` is the compute and environmental cost of a run, as the OlmoEarth paper
  reports it: wall time, CPU time, device, precision, throughput and an energy and CO2e estimate.

Energy: this code reads no power counters. Where a machine exposes them (Intel RAPL, NVML) a
maintained meter such as codecarbon measures better; here (containers, AMD without RAPL access)
the energy is an **estimate from rated power**: CPU core-seconds used x the rated watts per core
of the CPU family, plus resident memory at 0.3725 W/GB (Green Algorithms, Lannelongue et al.
2021), plus GPU busy time x the GPU's board power. Emissions use a grid factor in g CO2e/kWh:
``GEOLATENT_CARBON_INTENSITY`` when set, else the world average 475 g/kWh (IEA 2019, the
default of Green Algorithms). The report always says both figures are estimates and which
factors were used.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import tempfile
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import torch

# Instruction-set features the CPU fast paths care about (names as in /proc/cpuinfo).
CPU_FEATURES = (
    "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni",
    "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8",
)  # fmt: skip

# Rated watts per core (TDP / cores of a representative part of each family); the first
# substring found in the CPU model name wins. Used only for the labelled energy estimate.
WATTS_PER_CORE = (
    ("epyc", 3.6),  # e.g. EPYC 9654: 360 W / 96 cores; EPYC 7763: 280 W / 64 cores = 4.4
    ("xeon", 5.0),  # e.g. Xeon Platinum 8480+: 350 W / 56 cores = 6.3; 8375C: 300 W / 32 = 9.4
    ("ryzen", 8.0),  # desktop parts: 105-170 W / 16 cores
    ("apple", 3.0),
    ("core(tm)", 10.0),  # laptop/desktop Intel Core: 45-125 W / 8-24 cores
)
DEFAULT_WATTS_PER_CORE = 10.0
MEMORY_WATTS_PER_GB = 0.3725
# Board power of common GPUs (W); others fall back to DEFAULT_GPU_WATTS.
GPU_WATTS = (("h200", 700.0), ("h100", 700.0), ("a100", 400.0), ("l4", 72.0), ("t4", 70.0),
             ("a10", 150.0), ("v100", 300.0), ("4090", 450.0), ("3090", 350.0))  # fmt: skip
DEFAULT_GPU_WATTS = 300.0
WORLD_CARBON_INTENSITY = 475.0  # g CO2e per kWh, IEA 2019 world average


class DeviceError(ValueError):
    """A requested device does not exist here; the message names the flag or key to change."""


@dataclass(frozen=True)
class CpuInfo:
    """The CPU this process runs on.

    Attributes:
        model: marketing name from ``/proc/cpuinfo`` (or ``platform.processor()``).
        arch: ``x86_64``, ``aarch64``, ...
        logical_cores: CPUs this process may run on (affinity), not the whole machine.
        features: the :data:`CPU_FEATURES` this CPU has, in that order.
        torch_capability: what PyTorch's own dispatch detected (``AVX2``, ``AVX512``, ...).
    """

    model: str
    arch: str
    logical_cores: int
    features: tuple[str, ...]
    torch_capability: str


@lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """Detect the CPU once per process (see :class:`CpuInfo`)."""
    model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and model in ("unknown", "", platform.processor()):
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return CpuInfo(
        model=model,
        arch=platform.machine().lower(),
        logical_cores=cores,
        features=tuple(f for f in CPU_FEATURES if f in flags),
        torch_capability=torch.backends.cpu.get_cpu_capability(),
    )


def cpu_has(*features: str) -> bool:
    """Whether the CPU has every one of ``features`` (``/proc/cpuinfo`` names, e.g. ``avx512f``)."""
    unknown = [f for f in features if f not in CPU_FEATURES]
    if unknown:
        raise ValueError(f"unknown CPU feature(s) {unknown}; known: {', '.join(CPU_FEATURES)}")
    have = set(cpu_info().features)
    return all(f in have for f in features)


def resolve_device(
    name: str | torch.device | None = "auto", option: str = "device"
) -> torch.device:
    """``auto`` (a GPU when one is visible, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    Args:
        name: the requested device; None means ``auto``.
        option: how the user spelled the setting where they are (``--device`` on the command
            line, ``train.device`` in a config, ``device`` in Python): error messages name it.

    Raises:
        DeviceError: CUDA requested without a usable CUDA device, an index past the last GPU, or
            an unknown device name.
    """
    if isinstance(name, torch.device):
        name = str(name)
    text = (name or "auto").strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(text)
    except RuntimeError as exc:
        raise DeviceError(
            f"{option} {name!r} is not a device: use auto, cpu, cuda or cuda:N"
        ) from exc
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise DeviceError(f"{option} {name!r}: only auto, cpu, cuda and cuda:N are supported")
    if not torch.cuda.is_available():
        why = ("this PyTorch build has no CUDA support" if torch.version.cuda is None
               else "no GPU is visible (check CUDA_VISIBLE_DEVICES and the driver)")  # fmt: skip
        raise DeviceError(f"{option} {name!r} asks for CUDA, but {why}: use {option} cpu (or auto)")
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise DeviceError(
            f"{option} {name!r}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}"
        )
    return dev


@dataclass(frozen=True)
class RankInfo:
    """This process's place in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def rank_info() -> RankInfo:
    """Read ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` as torchrun sets them."""
    try:
        rank = int(os.environ.get("RANK", 0))
        world = int(os.environ.get("WORLD_SIZE", 1))
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError as exc:
        raise DeviceError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers: {exc}") from exc
    if world < 1 or not 0 <= rank < world:
        raise DeviceError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return RankInfo(rank, world, local)


def rank_device(name: str | None = "auto", option: str = "device") -> torch.device:
    """:func:`resolve_device`, with ``auto`` / ``cuda`` pinned to this rank's local GPU."""
    dev = resolve_device(name, option)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", rank_info().local_rank % torch.cuda.device_count())
    return dev


def carbon_intensity() -> tuple[float, str]:
    """Grid emissions factor in g CO2e/kWh and where it came from."""
    raw = os.environ.get("GEOLATENT_CARBON_INTENSITY")
    if raw:
        try:
            value = float(raw)
        except ValueError as exc:
            raise ValueError(
                f"GEOLATENT_CARBON_INTENSITY={raw!r}: give grams CO2e per kWh, e.g. 350"
            ) from exc
        if value < 0:
            raise ValueError(f"GEOLATENT_CARBON_INTENSITY={raw!r} must be >= 0 g CO2e/kWh")
        return value, "GEOLATENT_CARBON_INTENSITY"
    return WORLD_CARBON_INTENSITY, "world average, IEA 2019 (set GEOLATENT_CARBON_INTENSITY)"


def watts_per_core(model: str) -> float:
    """Rated watts per CPU core for the estimate (see :data:`WATTS_PER_CORE`)."""
    low = model.lower()
    return next((w for key, w in WATTS_PER_CORE if key in low), DEFAULT_WATTS_PER_CORE)


def gpu_watts(name: str) -> float:
    low = name.lower()
    return next((w for key, w in GPU_WATTS if key in low), DEFAULT_GPU_WATTS)


def _peak_rss_gb() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1 << 30) if platform.system() == "Darwin" else rss / (1 << 20)


@dataclass
class ComputeReport:
    """What a run cost. Units in the field names; energy and CO2e are estimates (see module)."""

    wall_s: float
    cpu_s: float
    device: str
    cpu_model: str
    cpu_features: list[str]
    threads: int
    gpu: str | None
    precision: str
    work: float | None
    work_unit: str | None
    throughput_per_s: float | None
    energy_kwh: float
    energy_method: str
    watts_per_core: float
    gpu_watts: float | None
    peak_rss_gb: float
    carbon_intensity_g_per_kwh: float
    carbon_intensity_source: str
    co2e_g: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class ComputeMeter:
    """Measure a run: a context manager; read :attr:`report` or call :meth:`report_dict`.

    Example::

        with ComputeMeter(device, precision="bf16", work_unit="tokens") as meter:
            ...
            meter.add(tokens_done)
        report["compute"] = meter.report_dict()

    Args:
        device: the ``torch.device`` (or name) the work ran on.
        precision: the precision actually used (``fp32`` / ``bf16`` / ``int8``; ``auto`` resolved).
        work_unit: what :meth:`add` counts (``tokens``, ``samples``, ``km2``, ``windows``, ...);
            throughput is work per wall second.
    """

    def __init__(self, device: str | torch.device = "cpu", precision: str = "fp32",
                 work_unit: str | None = None):  # fmt: skip
        self.device = torch.device(device)
        self.precision = precision
        self.work_unit = work_unit
        self.work = 0.0
        self.notes: list[str] = []
        self.report: ComputeReport | None = None
        self._t0 = self._c0 = 0.0
        self._running = False

    def add(self, amount: float) -> None:
        """Count ``amount`` units of work done (for the throughput)."""
        self.work += float(amount)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def __enter__(self) -> ComputeMeter:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t = os.times()
        self._c0 = t.user + t.system + t.children_user + t.children_system
        self._t0 = time.perf_counter()
        self._running = True

    def stop(self) -> ComputeReport:
        """End the measurement and build :attr:`report`."""
        if not self._running:
            raise RuntimeError("ComputeMeter.stop() without start()")
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        wall = time.perf_counter() - self._t0
        t = os.times()
        cpu = t.user + t.system + t.children_user + t.children_system - self._c0
        self._running = False
        info = cpu_info()
        wpc = watts_per_core(info.model)
        rss = _peak_rss_gb()
        joules = cpu * wpc + rss * MEMORY_WATTS_PER_GB * wall
        gpu_name, gw = None, None
        if self.device.type == "cuda":
            gpu_name = torch.cuda.get_device_name(self.device)
            gw = gpu_watts(gpu_name)
            joules += gw * wall  # rated board power for the whole wall time: an upper estimate
        intensity, source = carbon_intensity()
        kwh = joules / 3.6e6
        work = self.work if self.work_unit else None
        self.report = ComputeReport(
            wall_s=wall,  # unrounded: throughput and energy below are computed from these
            cpu_s=cpu,
            device=str(self.device),
            cpu_model=info.model,
            cpu_features=list(info.features),
            threads=torch.get_num_threads(),
            gpu=gpu_name,
            precision=self.precision,
            work=work,
            work_unit=self.work_unit,
            throughput_per_s=(work / wall if work is not None and wall > 0 else None),
            energy_kwh=kwh,
            energy_method=(
                "estimate from rated power (no power counters read): CPU core-seconds x "
                f"{wpc} W/core + peak RSS x {MEMORY_WATTS_PER_GB} W/GB"
                + (f" + GPU wall time x {gw} W rated" if gw else "")
            ),
            watts_per_core=wpc,
            gpu_watts=gw,
            peak_rss_gb=round(rss, 3),
            carbon_intensity_g_per_kwh=intensity,
            carbon_intensity_source=source,
            co2e_g=kwh * intensity,
            notes=list(self.notes),
        )
        return self.report

    def write(self, path: str | os.PathLike) -> Path:
        """Write :meth:`report_dict` as JSON at ``path`` atomically (a reader never sees half)."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.report_dict(), f, indent=2)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    def report_dict(self) -> dict:
        """:attr:`report` as a JSON-ready dict (stops the meter first if it is running)."""
        if self._running:
            self.stop()
        if self.report is None:
            raise RuntimeError("ComputeMeter was never started")
        return self.report.to_dict()
