"""The host registry on disk: `<data_dir>/hosts.sqlite`, one row per host Corral manages.

The local host is not stored (its URI comes from the configuration); its row, when present, only
keeps the states an administrator set on it (maintenance, standby).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from corral.core.errors import BackendError, Conflict, NotFound
from corral.core.hosts import HostRecord, HostSize, HostSpec, PowerSpec

_SCHEMA = """
CREATE TABLE IF NOT EXISTS hosts (
    name TEXT PRIMARY KEY,
    uri TEXT NOT NULL,
    storage TEXT NOT NULL,
    accelerator TEXT NOT NULL,
    network TEXT,
    power TEXT NOT NULL,
    maintenance INTEGER NOT NULL DEFAULT 0,
    standby INTEGER NOT NULL DEFAULT 0,
    position INTEGER NOT NULL,
    size TEXT
)
"""


class HostStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
            db.execute(_SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(hosts)")}
            if "size" not in columns:  # a registry from before hosts' sizes were kept
                db.execute("ALTER TABLE hosts ADD COLUMN size TEXT")
        except (sqlite3.Error, OSError) as exc:
            raise BackendError(f"cannot open the host registry {self.path}: {exc}") from None
        return db

    def stamp(self) -> tuple[int, int] | None:
        """Changes when the registry on disk changes (its modification time and size)."""
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def records(self) -> list[HostRecord]:
        if not self.path.exists():
            return []
        with self._lock:
            db = self._connect()
            try:
                rows = db.execute("SELECT name, uri, storage, accelerator, network, power, maintenance, standby, "
                                  "size FROM hosts ORDER BY position").fetchall()
            except sqlite3.Error as exc:
                raise BackendError(f"cannot read the host registry {self.path}: {exc}") from None
            finally:
                db.close()
        records = []
        for name, uri, storage, accel, network, power, maintenance, standby, size in rows:
            try:
                data = json.loads(power)
                spec = HostSpec(name, uri, storage, accel,
                                PowerSpec(data.get("driver", "none"), tuple(sorted(data.get("settings", {}).items()))),
                                network)
            except (ValueError, TypeError, AttributeError) as exc:
                raise BackendError(f"the host registry {self.path} has a damaged row for {name!r}: {exc}") from None
            records.append(HostRecord(spec, bool(maintenance), bool(standby), _size(size)))
        return records

    def add(self, spec: HostSpec) -> None:
        power = json.dumps({"driver": spec.power.driver, "settings": dict(spec.power.settings)})
        with self._lock:
            db = self._connect()
            try:
                position = db.execute("SELECT coalesce(max(position), 0) + 1 FROM hosts").fetchone()[0]
                db.execute("INSERT INTO hosts (name, uri, storage, accelerator, network, power, position) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (spec.name, spec.uri, spec.storage, spec.accelerator, spec.network, power, position))
            except sqlite3.IntegrityError:
                raise Conflict(f"a host named {spec.name!r} is already registered") from None
            except sqlite3.Error as exc:
                raise BackendError(f"cannot write the host registry {self.path}: {exc}") from None
            finally:
                db.close()

    def remove(self, name: str) -> None:
        with self._lock:
            db = self._connect()
            try:
                if db.execute("DELETE FROM hosts WHERE name = ?", (name,)).rowcount == 0:
                    raise NotFound(f"no host named {name!r} is registered")
            except sqlite3.Error as exc:
                raise BackendError(f"cannot write the host registry {self.path}: {exc}") from None
            finally:
                db.close()

    def set_state(self, spec: HostSpec, *, maintenance: bool | None = None, standby: bool | None = None,
                  size: HostSize | None = None) -> None:
        """Record a host's maintenance or standby state, or its size as last seen (adding a state-only row
        for the local host)."""
        with self._lock:
            db = self._connect()
            try:
                if db.execute("SELECT 1 FROM hosts WHERE name = ?", (spec.name,)).fetchone() is None:
                    position = db.execute("SELECT coalesce(min(position), 1) - 1 FROM hosts").fetchone()[0]
                    db.execute("INSERT INTO hosts (name, uri, storage, accelerator, network, power, position) "
                               "VALUES (?, ?, ?, ?, ?, ?, ?)",
                               (spec.name, spec.uri, spec.storage, spec.accelerator, spec.network,
                                json.dumps({"driver": "none", "settings": {}}), position))
                if maintenance is not None:
                    db.execute("UPDATE hosts SET maintenance = ? WHERE name = ?", (int(maintenance), spec.name))
                if standby is not None:
                    db.execute("UPDATE hosts SET standby = ? WHERE name = ?", (int(standby), spec.name))
                if size is not None:
                    db.execute("UPDATE hosts SET size = ? WHERE name = ?",
                               (json.dumps({"cores": size.cores, "mhz": size.mhz, "memory_mib": size.memory_mib}),
                                spec.name))
            except sqlite3.Error as exc:
                raise BackendError(f"cannot write the host registry {self.path}: {exc}") from None
            finally:
                db.close()


def _size(text: str | None) -> HostSize | None:
    """A stored size; None when there is none or it cannot be read (it is asked again when the host is up)."""
    if not text:
        return None
    try:
        data = json.loads(text)
        return HostSize(int(data["cores"]), float(data["mhz"]), int(data["memory_mib"]))
    except (ValueError, TypeError, KeyError):
        return None
