"""Shared pytest fixtures: the project's shared data folder and an unpacked CIFAR-10."""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

import pytest

CIFAR10_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                 "test_batch", "batches.meta")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` next to the repository (real data sets and teachers; may be absent)."""
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def cifar10_dir(shared_data: Path) -> Path:
    """``~/.cache/lit_kd/cifar10`` holding ``cifar-10-batches-py/``, unpacked once from the shared tarball.

    Skips when the tarball is absent. Unpacks into a temporary folder and renames
    it into place, so concurrent sessions never see a half-written folder.
    """
    root = Path.home() / ".cache" / "lit_kd" / "cifar10"
    folder = root / "cifar-10-batches-py"
    if all((folder / name).is_file() for name in CIFAR10_FILES):
        return root
    tarball = shared_data / "cifar-10-batches-py.tar.xz"
    if not tarball.is_file():
        pytest.skip(f"{tarball} not available")
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".unpack-{os.getpid()}"
    try:
        with tarfile.open(tarball) as tar:
            tar.extractall(tmp, filter="data")
        if folder.exists():  # incomplete leftover
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(tmp / "cifar-10-batches-py", folder)
        except OSError:
            if not all((folder / name).is_file() for name in CIFAR10_FILES):  # not a concurrent unpack
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tests use tiny networks, where intra-op threads cost more than they save, and a second thread
    slows everything badly when other processes share the cores (measured 5 s vs 0.07 s per step)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
