"""MetricStore: the embedded SQLite history of samples (raw, then 5-minute min/avg/max rollups).

One writer (the sampler), many readers (``corral stats``, the web UI), each in its own process or
thread. The database runs in WAL mode, so readers never block the writer nor see half an interval:
every ``write()`` is one transaction. A writer killed with SIGKILL loses at most the interval it was
writing; the file stays consistent (SQLite's journal).

Threads: a MetricStore holds one connection guarded by a lock (``check_same_thread=False``), so one
instance may be shared by threads -- its calls are then serialized. For parallel readers open one
MetricStore per thread or process; that is cheap.

Layout and retention: docs/monitoring.md.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from corral.core.errors import InvalidInput
from corral.monitoring.metrics import HOST_DOMAIN, LOCAL_HOST, METRICS, Sample

SCHEMA_VERSION = 2  # 2: domains are keyed by (host, name); version 1 stores are migrated on open
Resolution = Literal["raw", "rollup", "auto"]
RESOLUTIONS: tuple[str, ...] = ("raw", "rollup", "auto")

_RAW_COLS = ", ".join(f"{m} REAL" for m in METRICS)
_ROLLUP_COLS = ", ".join(f"{m}_min REAL, {m}_avg REAL, {m}_max REAL" for m in METRICS)
_SCHEMA = f"""
CREATE TABLE domains (id INTEGER PRIMARY KEY, host TEXT NOT NULL, name TEXT NOT NULL, UNIQUE (host, name));
CREATE TABLE raw (
    domain_id INTEGER NOT NULL, time REAL NOT NULL, {_RAW_COLS},
    PRIMARY KEY (domain_id, time)
) WITHOUT ROWID;
CREATE INDEX raw_by_time ON raw (time);
CREATE TABLE rollup (
    domain_id INTEGER NOT NULL, bucket REAL NOT NULL, samples INTEGER NOT NULL, {_ROLLUP_COLS},
    PRIMARY KEY (domain_id, bucket)
) WITHOUT ROWID;
CREATE INDEX rollup_by_bucket ON rollup (bucket);
CREATE TABLE meta (key TEXT PRIMARY KEY, value REAL NOT NULL);
"""
# meta keys: "rolled_until" -- every bucket starting before it is rolled up (bucket-aligned);
#            "raw_kept_from" -- raw rows before it have been pruned (bucket-aligned).

_MIGRATE_V1 = f"""
CREATE TABLE domains_v2 (id INTEGER PRIMARY KEY, host TEXT NOT NULL, name TEXT NOT NULL, UNIQUE (host, name));
INSERT INTO domains_v2 (id, host, name) SELECT id, '{LOCAL_HOST}', name FROM domains;
DROP TABLE domains;
ALTER TABLE domains_v2 RENAME TO domains
"""
_VACUUM_MIN_FREE_PAGES = 128
_WAL_SIZE_LIMIT = 4 * 1024 * 1024


class MetricStore:
    """The sample history in one SQLite file. Times are unix seconds (float)."""

    def __init__(
        self,
        path: str | Path,
        raw_retention_s: float = 86400.0,
        rollup_retention_s: float = 30 * 86400.0,
        bucket_s: float = 300.0,
        *,
        readonly: bool = False,
        auto_maintain: bool = True,
        auto_raw_max_span_s: float = 6 * 3600.0,
        busy_timeout_s: float = 5.0,
    ) -> None:
        """Open (and on first open create) the store at ``path``.

        ``auto_maintain``: the writer rolls up and prunes by itself each time a bucket completes
        (the newest written sample crosses a bucket boundary); otherwise call ``maintain(now)``.
        ``auto_raw_max_span_s``: ``query(resolution="auto")`` answers raw rows for ranges up to this
        long that the raw table still covers, rollups otherwise. ``readonly`` opens for reading only.
        """
        if not bucket_s > 0 or not raw_retention_s >= bucket_s or not rollup_retention_s >= bucket_s:
            raise InvalidInput("metric store: need bucket_s > 0 and both retentions at least one bucket long")
        self.path = Path(path)
        self.raw_retention_s = float(raw_retention_s)
        self.rollup_retention_s = float(rollup_retention_s)
        self.bucket_s = float(bucket_s)
        self.readonly = readonly
        self.auto_maintain = auto_maintain
        self.auto_raw_max_span_s = float(auto_raw_max_span_s)
        self._lock = threading.RLock()
        self._ids: dict[tuple[str, str], int] = {}
        self._keyed_by_host = True  # False only for a version 1 store opened read-only
        if readonly:
            if not self.path.exists():
                raise InvalidInput(f"{self.path}: no metric store there")
            uri = self.path.resolve().as_uri() + "?mode=ro"
            self._db = sqlite3.connect(
                uri, uri=True, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
        try:
            self._setup()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise InvalidInput(f"{self.path}: not a usable metric store: {exc}") from None

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        db = self._db
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if self.readonly:
            if version not in (1, SCHEMA_VERSION):
                raise sqlite3.DatabaseError(f"schema version {version}, expected {SCHEMA_VERSION}")
            self._keyed_by_host = version == SCHEMA_VERSION
            return
        if version == 0:  # must precede the first page write (journal_mode=WAL writes the header)
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: consistent after any crash
        db.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT}")
        if version == 0:
            db.execute("BEGIN IMMEDIATE")
            try:
                if int(db.execute("PRAGMA user_version").fetchone()[0]) == 0:  # not created meanwhile
                    has_tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
                    if has_tables:
                        raise sqlite3.DatabaseError("the file holds other tables")
                    for stmt in _SCHEMA.split(";"):
                        if stmt.strip():
                            db.execute(stmt)
                    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        elif version == 1:  # before hosts: every domain was the local host's
            db.execute("BEGIN IMMEDIATE")
            try:
                for stmt in _MIGRATE_V1.split(";"):
                    if stmt.strip():
                        db.execute(stmt)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        elif version != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"schema version {version}, this Corral knows {SCHEMA_VERSION}")

    # ------------------------------------------------------------------ context / close
    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ writing
    def write(self, samples: Sequence[Sample]) -> None:
        """Store one interval's samples in one transaction (a sample with the same domain and time
        replaces the stored one). Rolls up and prunes when a bucket completes (``auto_maintain``)."""
        if self.readonly:
            raise InvalidInput(f"{self.path}: the metric store is open read-only")
        if not samples:
            return
        rows: list[tuple[tuple[str, str], float, list[float | None]]] = []
        for s in samples:
            unknown = set(s.values) - set(METRICS)
            if unknown:
                raise ValueError(f"unknown metric(s) {', '.join(sorted(unknown))} in a sample of {s.domain}")
            if not math.isfinite(s.time):
                raise ValueError(f"sample time of {s.domain} is not finite: {s.time}")
            rows.append(((s.host, s.domain), float(s.time), [_clean(s.values.get(m)) for m in METRICS]))
        newest = max(r[1] for r in rows)
        oldest = min(r[1] for r in rows)
        placeholders = ", ".join("?" * (len(METRICS) + 2))
        sql = f"INSERT OR REPLACE INTO raw (domain_id, time, {', '.join(METRICS)}) VALUES ({placeholders})"
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                ids = self._domain_ids({r[0] for r in rows})
                db.executemany(sql, [(ids[d], t, *v) for d, t, v in rows])
                rolled = self._get_rolled_until()
                if rolled is None:
                    self._set_meta("rolled_until", self._floor(oldest))
                elif oldest < rolled:  # a late sample: roll its bucket again (if its raw rows are all kept)
                    kept_from = self._meta("raw_kept_from")
                    again = self._floor(oldest)
                    if kept_from is not None:
                        again = max(again, kept_from)
                    if again < rolled:
                        self._set_meta("rolled_until", again)
                db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            rolled = self._get_rolled_until()
            if self.auto_maintain and rolled is not None and newest >= rolled + self.bucket_s:
                self.maintain(newest)

    def _domain_ids(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
        missing = [k for k in keys if k not in self._ids]
        for host, name in missing:
            self._db.execute("INSERT OR IGNORE INTO domains (host, name) VALUES (?, ?)", (host, name))
            self._ids[(host, name)] = int(self._db.execute(
                "SELECT id FROM domains WHERE host = ? AND name = ?", (host, name)).fetchone()[0])
        return self._ids

    def maintain(self, now: float) -> None:
        """Roll up every complete bucket (ending at or before ``now``) not rolled up yet, prune raw rows
        older than the raw retention (only once rolled up) and rollups older than the rollup retention,
        forget domains without data, and give free pages back to the file system when many are free."""
        if self.readonly:
            raise InvalidInput(f"{self.path}: the metric store is open read-only")
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                complete_until = self._floor(now)
                rolled = self._get_rolled_until()
                if rolled is None:
                    first = db.execute("SELECT min(time) FROM raw").fetchone()[0]
                    rolled = self._floor(first) if first is not None else complete_until
                if rolled < complete_until:
                    db.execute(
                        f"INSERT OR REPLACE INTO rollup {self._aggregate_sql('time >= ? AND time < ?')}",
                        (rolled, complete_until),
                    )
                    rolled = complete_until
                self._set_meta("rolled_until", rolled)
                raw_cut = min(self._floor(now - self.raw_retention_s), rolled)
                db.execute("DELETE FROM raw WHERE time < ?", (raw_cut,))
                kept_from = self._meta("raw_kept_from")
                self._set_meta("raw_kept_from", max(raw_cut, kept_from if kept_from is not None else raw_cut))
                db.execute("DELETE FROM rollup WHERE bucket < ?", (now - self.rollup_retention_s,))
                gone = db.execute(
                    "DELETE FROM domains WHERE id NOT IN (SELECT domain_id FROM raw)"
                    " AND id NOT IN (SELECT domain_id FROM rollup)"
                ).rowcount
                db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            if gone:
                self._ids.clear()
            free = int(db.execute("PRAGMA freelist_count").fetchone()[0])
            pages = int(db.execute("PRAGMA page_count").fetchone()[0])
            if free >= _VACUUM_MIN_FREE_PAGES and free * 4 >= pages:
                db.executescript("PRAGMA incremental_vacuum;")  # executescript steps it to the end

    def _aggregate_sql(self, where: str) -> str:
        b = repr(self.bucket_s)
        aggs = ", ".join(f"min({m}), avg({m}), max({m})" for m in METRICS)
        return (
            f"SELECT domain_id, CAST(time / {b} AS INTEGER) * {b} AS bk, count(*), {aggs} "
            f"FROM raw WHERE {where} GROUP BY domain_id, bk"
        )

    def _floor(self, t: float) -> float:
        return math.floor(t / self.bucket_s) * self.bucket_s

    def _meta(self, key: str) -> float | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return float(row[0]) if row else None

    def _set_meta(self, key: str, value: float) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def _get_rolled_until(self) -> float | None:
        return self._meta("rolled_until")

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    # ------------------------------------------------------------------ reading
    def domains(self) -> list[str]:
        """Names of the domains with stored data, sorted (each once, whatever hosts it ran on)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT name FROM domains WHERE id IN (SELECT domain_id FROM raw)"
                " OR id IN (SELECT domain_id FROM rollup) ORDER BY name"
            ).fetchall()
        return [str(r[0]) for r in rows]

    def latest(self) -> dict[str, dict[str, Any]]:
        """The newest raw sample of every domain: ``{domain: {"time": t, "host": h, metric: value, ...}}``
        (Domain-0 of the local host; a guest wherever it ran last)."""
        cols = ", ".join(f"r.{m}" for m in METRICS)
        host = "d.host" if self._keyed_by_host else f"'{LOCAL_HOST}'"
        with self._lock:
            rows = self._db.execute(
                f"SELECT d.name, {host}, r.time, {cols}"
                " FROM (SELECT domain_id, max(time) AS t FROM raw GROUP BY domain_id) AS m"
                " JOIN raw AS r ON r.domain_id = m.domain_id AND r.time = m.t"
                " JOIN domains AS d ON d.id = m.domain_id ORDER BY r.time"
            ).fetchall()
        out: dict[str, dict[str, Any]] = {}
        for r in rows:  # oldest first: a guest's newest host wins
            if r[0] == HOST_DOMAIN and r[1] != LOCAL_HOST:
                continue
            out[str(r[0])] = {"time": r[2], "host": r[1], **dict(zip(METRICS, r[3:], strict=True))}
        return dict(sorted(out.items()))

    def query(
        self,
        domain: str,
        since: float,
        until: float | None = None,
        metrics: Sequence[str] | None = None,
        resolution: Resolution = "auto",
        host: str | None = None,
    ) -> list[dict[str, Any]]:
        """Rows of one domain between ``since`` and ``until`` (inclusive; None: up to the newest), oldest first.

        ``host`` None: a guest's rows on every host it ran on (its history follows it when it
        migrates), and the local host's Domain-0. A host name: only what ran there.

        Raw rows: ``{"time": t, metric: value, ...}``. Rollup rows (buckets overlapping the range; the
        buckets not rolled up yet are computed from the raw rows on the fly):
        ``{"time": bucket_start, "samples": n, metric: avg, metric_min: min, metric_max: max, ...}``.
        ``auto``: raw when the raw rows still cover ``since`` and the range spans at most
        ``auto_raw_max_span_s``, rollups otherwise. Unknown domain: ``[]``.
        """
        wanted = list(METRICS) if metrics is None else list(metrics)
        bad = [m for m in wanted if m not in METRICS]
        if bad or not wanted:
            raise InvalidInput(f"unknown metric(s) {', '.join(bad) or '(none)'}; known: {', '.join(METRICS)}")
        if resolution not in RESOLUTIONS:
            raise InvalidInput(f"unknown resolution {resolution!r}; use raw, rollup or auto")
        hi = math.inf if until is None else float(until)
        if host is None and domain == HOST_DOMAIN:
            host = LOCAL_HOST
        with self._lock:
            if not self._keyed_by_host:
                found = self._db.execute("SELECT id FROM domains WHERE name = ?", (domain,)).fetchall() \
                    if host in (None, LOCAL_HOST) else []
            elif host is None:
                found = self._db.execute("SELECT id FROM domains WHERE name = ?", (domain,)).fetchall()
            else:
                found = self._db.execute("SELECT id FROM domains WHERE host = ? AND name = ?",
                                         (host, domain)).fetchall()
            ids = [int(r[0]) for r in found]
            if not ids:
                return []
            if resolution == "auto":
                resolution = self._pick_resolution(ids, float(since), hi)
            if resolution == "raw":
                rows = [row for did in ids for row in self._query_raw(did, float(since), hi, wanted)]
                return sorted(rows, key=lambda r: r["time"])
            return _merge_buckets([self._query_rollup(did, float(since), hi, wanted) for did in ids], wanted)

    def host_guest_load(self, host: str, since: float) -> list[tuple[float, float]]:
        """The sum of the guests' `cpu_host_pct` on `host` at each of its sampler's readings since `since`
        (raw rows, oldest first): what the guests running there took of the host, wherever they are now."""
        if not self._keyed_by_host:
            return []
        with self._lock:
            rows = self._db.execute(
                "SELECT r.time, sum(r.cpu_host_pct) FROM raw AS r JOIN domains AS d ON d.id = r.domain_id"
                " WHERE d.host = ? AND d.name != ? AND r.time >= ? AND r.cpu_host_pct IS NOT NULL"
                " GROUP BY r.time ORDER BY r.time", (host, HOST_DOMAIN, float(since))).fetchall()
        return [(float(t), float(v)) for t, v in rows]

    def _pick_resolution(self, ids: list[int], since: float, until: float) -> Resolution:
        if until == math.inf:
            marks = ", ".join("?" * len(ids))
            newest = self._db.execute(f"SELECT max(time) FROM raw WHERE domain_id IN ({marks})", ids).fetchone()[0]
            until = float(newest) if newest is not None else since
        kept_from = self._meta("raw_kept_from")
        if (kept_from is None or since >= kept_from) and until - since <= self.auto_raw_max_span_s:
            return "raw"
        return "rollup"

    def _query_raw(self, did: int, since: float, until: float, wanted: list[str]) -> list[dict[str, Any]]:
        cur = self._db.execute(
            f"SELECT time, {', '.join(wanted)} FROM raw WHERE domain_id = ? AND time >= ? AND time <= ? ORDER BY time",
            (did, since, until if until != math.inf else 1e300),
        )
        return [{"time": r[0], **dict(zip(wanted, r[1:], strict=True))} for r in cur]

    def _query_rollup(self, did: int, since: float, until: float, wanted: list[str]) -> list[dict[str, Any]]:
        lo = since - self.bucket_s  # buckets that overlap [since, until]: bucket > since - bucket_s
        hi = until if until != math.inf else 1e300
        cols = ", ".join(f"{m}_avg, {m}_min, {m}_max" for m in wanted)
        rolled = self._get_rolled_until()
        stored = self._db.execute(
            f"SELECT bucket, samples, {cols} FROM rollup WHERE domain_id = ? AND bucket > ? AND bucket <= ?"
            " ORDER BY bucket",
            (did, lo, hi),
        ).fetchall()
        if rolled is not None:
            stored = [r for r in stored if r[0] < rolled]
            fresh_lo = max(rolled, self._floor(since))
            if fresh_lo <= hi:
                live = self._db.execute(
                    f"SELECT bk, samples, {cols} FROM ({self._live_sql()}) WHERE bk <= ? ORDER BY bk",
                    (did, fresh_lo, hi),
                ).fetchall()
                stored += live
        out: list[dict[str, Any]] = []
        for r in stored:
            d: dict[str, Any] = {"time": r[0], "samples": r[1]}
            for k, m in enumerate(wanted):
                d[m], d[f"{m}_min"], d[f"{m}_max"] = r[2 + 3 * k : 5 + 3 * k]
            out.append(d)
        return out

    def _live_sql(self) -> str:
        b = repr(self.bucket_s)
        aggs = ", ".join(f"min({m}) AS {m}_min, avg({m}) AS {m}_avg, max({m}) AS {m}_max" for m in METRICS)
        return (
            f"SELECT CAST(time / {b} AS INTEGER) * {b} AS bk, count(*) AS samples, {aggs} "
            "FROM raw WHERE domain_id = ? AND time >= ? GROUP BY bk"
        )

    # ------------------------------------------------------------------ introspection
    def stats(self) -> dict[str, Any]:
        """Row counts, file sizes and the schema version (for diagnostics and tests)."""
        with self._lock:
            db = self._db
            raw = int(db.execute("SELECT count(*) FROM raw").fetchone()[0])
            rollup = int(db.execute("SELECT count(*) FROM rollup").fetchone()[0])
            page = int(db.execute("PRAGMA page_size").fetchone()[0])
            pages = int(db.execute("PRAGMA page_count").fetchone()[0])
            free = int(db.execute("PRAGMA freelist_count").fetchone()[0])
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
        wal = self.path.with_name(self.path.name + "-wal")
        return {
            "schema_version": version,
            "raw_rows": raw,
            "rollup_rows": rollup,
            "db_bytes": page * pages,
            "free_bytes": page * free,
            "wal_bytes": wal.stat().st_size if wal.exists() else 0,
        }


def _merge_buckets(per_host: list[list[dict[str, Any]]], wanted: list[str]) -> list[dict[str, Any]]:
    """Rollup rows of one guest on several hosts (it migrated): one row per bucket, the samples of a
    bucket it spent on two hosts combined (weighted mean, overall min and max)."""
    if len(per_host) == 1:
        return per_host[0]
    merged: dict[float, dict[str, Any]] = {}
    for rows in per_host:
        for row in rows:
            have = merged.get(row["time"])
            if have is None:
                merged[row["time"]] = dict(row)
                continue
            n1, n2 = have["samples"], row["samples"]
            for m in wanted:
                a, b = have[m], row[m]
                have[m] = b if a is None else a if b is None else (a * n1 + b * n2) / (n1 + n2)
                lows = [v for v in (have[f"{m}_min"], row[f"{m}_min"]) if v is not None]
                highs = [v for v in (have[f"{m}_max"], row[f"{m}_max"]) if v is not None]
                have[f"{m}_min"], have[f"{m}_max"] = (min(lows) if lows else None), (max(highs) if highs else None)
            have["samples"] = n1 + n2
    return [merged[t] for t in sorted(merged)]


def _clean(v: float | None) -> float | None:
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None
