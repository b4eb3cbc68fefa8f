"""Shared fixtures: real traces unpacked once per session into temporary folders (never committed)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from tests.conftest import require

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"  # ../shared/data beside the project
PLANETLAB = DATA / "planetlab"
BITBRAINS = DATA / "bitbrains-rnd" / "2013-7-week1-100vms.tar.gz"


def _unpack(archive: Path, dest: Path) -> Path:
    if not archive.exists():
        require(False, f"the traces at {archive}")
    with tarfile.open(archive, "r:gz") as tf:
        tf.extractall(dest)  # trusted, read-only project data
    (sub,) = [p for p in dest.iterdir() if p.is_dir()]
    return sub


@pytest.fixture(scope="session")
def planetlab_day(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _unpack(PLANETLAB / "20110303.tar.gz", tmp_path_factory.mktemp("pl"))


@pytest.fixture(scope="session")
def bitbrains_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _unpack(BITBRAINS, tmp_path_factory.mktemp("bb"))
