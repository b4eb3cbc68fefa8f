"""The host registry on disk: states and sizes survive a reopen; a registry from before sizes were kept
opens and gains the column."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from corral.adapters.hoststore import HostStore
from corral.core.hosts import HostSize, HostSpec


def test_a_hosts_size_is_kept_for_when_it_is_in_standby(tmp_path: Path) -> None:
    store = HostStore(tmp_path / "hosts.sqlite")
    spec = HostSpec("h2", "qemu+tcp://127.0.0.2/system", storage="shared")
    store.add(spec)
    assert store.records()[0].size is None
    store.set_state(spec, standby=True, size=HostSize(8, 2600.0, 32768))
    [record] = HostStore(tmp_path / "hosts.sqlite").records()
    assert record.standby and record.size == HostSize(8, 2600.0, 32768)


def test_a_registry_from_before_sizes_opens(tmp_path: Path) -> None:
    path = tmp_path / "hosts.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE hosts (name TEXT PRIMARY KEY, uri TEXT NOT NULL, storage TEXT NOT NULL, "
               "accelerator TEXT NOT NULL, network TEXT, power TEXT NOT NULL, maintenance INTEGER NOT NULL DEFAULT 0, "
               "standby INTEGER NOT NULL DEFAULT 0, position INTEGER NOT NULL)")
    db.execute("INSERT INTO hosts VALUES ('old', 'qemu+tcp://10.0.0.9/system', 'copy', 'auto', NULL, "
               "'{\"driver\": \"none\"}', 0, 1, 1)")
    db.commit()
    db.close()
    [record] = HostStore(path).records()
    assert record.spec.name == "old" and record.standby and record.size is None
    HostStore(path).set_state(record.spec, size=HostSize(4, 2400.0, 16384))
    assert HostStore(path).records()[0].size == HostSize(4, 2400.0, 16384)
