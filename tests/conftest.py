"""Shared test helpers: where the shared fixtures and real data live, and skips when absent."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from shared_data import FIXTURE_DIR, REAL_DATA, REPO_ROOT, SHARED  # noqa: F401 (re-exported)

# Two cores on CI: keep torch from oversubscribing them.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def one_torch_thread():
    """One torch thread for a test of small models or tensors: on a shared 2-core machine two
    threads wait on each other more than they compute (measured 10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    if not (FIXTURE_DIR / "weights.pth").exists():
        pytest.skip(f"reference fixtures not found at {FIXTURE_DIR} (set GEOLATENT_SHARED)")
    return FIXTURE_DIR


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not REAL_DATA.exists():
        pytest.skip(f"real data not found at {REAL_DATA} (set GEOLATENT_SHARED)")
    return REAL_DATA


@pytest.fixture(scope="session")
def nano_fixture_model(fixture_dir):
    import geolatent

    return geolatent.load_model(fixture_dir)


@contextlib.contextmanager
def _tmpfs(mnt: Path, options: str, why: str):
    """A real tmpfs mounted at ``mnt`` with ``options`` for the block; skips with ``why`` where
    mounting is not permitted."""
    mnt.mkdir()
    if shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)],
            capture_output=True).returncode != 0:
        pytest.skip(why)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 16 MiB file system (tmpfs; needs root, as on the project's CI machines)."""
    with _tmpfs(tmp_path / "small_disk", "size=16m",
                "cannot mount a small tmpfs here (needs root)") as mnt:
        yield mnt


@pytest.fixture
def full_disk(small_disk: Path) -> Path:
    """:func:`small_disk` filled up by another program's file (``filler.bin``): no byte free."""
    with open(small_disk / "filler.bin", "wb") as f:  # every free block, allocated at once
        os.posix_fallocate(f.fileno(), 0, shutil.disk_usage(small_disk).free)
    assert shutil.disk_usage(small_disk).free == 0
    return small_disk


@pytest.fixture
def read_only_dir(tmp_path: Path):
    """A real read-only file system (an empty tmpfs mounted ``-o ro``): writing fails with
    EROFS even as root, where ``chmod`` would not bite. Needs permission to mount."""
    with _tmpfs(tmp_path / "read_only", "ro,size=1m",
                "cannot mount a read-only tmpfs here (needs root or CAP_SYS_ADMIN)") as mnt:
        yield mnt
