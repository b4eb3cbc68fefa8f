"""The balancer's audit log: `<data_dir>/balancer.sqlite`. Every round (when, in which mode, what it
concluded) and every decision (what, why, what was expected, what happened, how long it took)."""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.core.errors import BackendError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rounds (
    id INTEGER PRIMARY KEY, time REAL NOT NULL, mode TEXT NOT NULL, summary TEXT NOT NULL,
    duration_s REAL
);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY, round INTEGER NOT NULL, time REAL NOT NULL, kind TEXT NOT NULL,
    guest TEXT, source TEXT, dest TEXT, reason TEXT NOT NULL, expected TEXT NOT NULL DEFAULT '',
    outcome TEXT NOT NULL, duration_s REAL
);
CREATE INDEX IF NOT EXISTS decisions_by_guest ON decisions (guest, time);
"""


@dataclass(frozen=True)
class Entry:
    round: int
    time: float
    kind: str  # wake | move | standby | refused | round
    guest: str | None
    source: str | None
    dest: str | None
    reason: str
    expected: str
    outcome: str  # recommended | done | failed: … | refused | …
    duration_s: float | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _db(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
            db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise BackendError(f"cannot open the balancer's audit log {self.path}: {exc}") from None
        return db

    def _write(self, sql: str, args: tuple[Any, ...]) -> int:
        with self._lock:
            db = self._db()
            try:
                return int(db.execute(sql, args).lastrowid or 0)
            except sqlite3.Error as exc:
                raise BackendError(f"cannot write the balancer's audit log {self.path}: {exc}") from None
            finally:
                db.close()

    def start_round(self, mode: str) -> int:
        return self._write("INSERT INTO rounds (time, mode, summary) VALUES (?, ?, '')", (time.time(), mode))

    def finish_round(self, round_id: int, summary: str, duration_s: float) -> None:
        self._write("UPDATE rounds SET summary = ?, duration_s = ? WHERE id = ?", (summary, duration_s, round_id))

    def record(self, round_id: int, kind: str, reason: str, outcome: str, *, guest: str | None = None,
               source: str | None = None, dest: str | None = None, expected: str = "",
               duration_s: float | None = None) -> int:
        return self._write(
            "INSERT INTO decisions (round, time, kind, guest, source, dest, reason, expected, outcome, duration_s) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (round_id, time.time(), kind, guest, source, dest, reason, expected, outcome, duration_s))

    def settle(self, decision_id: int, outcome: str, duration_s: float) -> None:
        self._write("UPDATE decisions SET outcome = ?, duration_s = ? WHERE id = ?", (outcome, duration_s, decision_id))

    def timeline(self, limit: int = 200) -> list[Entry]:
        """Rounds and decisions, newest first."""
        if not self.path.exists():
            return []
        with self._lock:
            db = self._db()
            try:
                rows = db.execute(
                    "SELECT round, time, kind, guest, source, dest, reason, expected, outcome, duration_s FROM ("
                    " SELECT round, time, kind, guest, source, dest, reason, expected, outcome, duration_s, id "
                    " FROM decisions UNION ALL"
                    " SELECT id, time, 'round', NULL, NULL, NULL, summary, mode, 'round', duration_s, 0 FROM rounds"
                    ") ORDER BY time DESC, id DESC LIMIT ?", (limit,)).fetchall()
            finally:
                db.close()
        return [Entry(*row) for row in rows]

    def last_moves(self) -> dict[str, float]:
        """When the balancer last moved each guest, or tried to (a failed attempt is not retried on the next
        round either: the guest's cool-down counts from it)."""
        if not self.path.exists():
            return {}
        with self._lock:
            db = self._db()
            try:
                rows = db.execute("SELECT guest, max(time) FROM decisions WHERE kind = 'move' "
                                  "AND (outcome LIKE 'done%' OR outcome LIKE 'failed%') GROUP BY guest").fetchall()
            finally:
                db.close()
        return {str(guest): float(when) for guest, when in rows if guest}

    def counts(self) -> dict[tuple[str, str], int]:
        """Decisions by kind and outcome, for Prometheus."""
        if not self.path.exists():
            return {}
        with self._lock:
            db = self._db()
            try:
                # Outcomes carry details ("done in 2.1 s, downtime 80 ms"): counted by what happened, so
                # that Prometheus sees a handful of label values, not one per decision.
                rows = db.execute("SELECT kind, CASE WHEN outcome LIKE 'done%' THEN 'done' "
                                  "WHEN outcome LIKE 'failed%' THEN 'failed' "
                                  "WHEN outcome LIKE 'not %' THEN 'skipped' ELSE outcome END, "
                                  "count(*) FROM decisions GROUP BY 1, 2").fetchall()
            finally:
                db.close()
        return {(str(kind), str(outcome)): int(n) for kind, outcome, n in rows}
