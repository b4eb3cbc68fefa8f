"""MetricStore: raw history, exact rollups, retention, bounded size, crash safety."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from corral.core.errors import InvalidInput
from corral.monitoring.metrics import METRICS, Sample
from corral.monitoring.store import SCHEMA_VERSION, MetricStore

T0 = 1_800_000_000.0  # bucket-aligned for 60 s and 300 s buckets


def sample(t: float, domain: str = "Domain-0", **values: float | None) -> Sample:
    return Sample(time=t, domain=domain, values=values)


def test_write_query_raw_and_schema(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    with MetricStore(path) as st:
        st.write([sample(T0 + 1, cpu_pct=10.0, mem_used_bytes=5e8), sample(T0 + 1, "web", cpu_pct=50.0)])
        st.write([sample(T0 + 2, cpu_pct=20.0, net_rx_bps=None), sample(T0 + 2, "web", cpu_pct=float("nan"))])
        rows = st.query("Domain-0", T0, resolution="raw")
        assert [r["time"] for r in rows] == [T0 + 1, T0 + 2]
        assert rows[0]["cpu_pct"] == 10.0 and rows[0]["mem_used_bytes"] == 5e8 and rows[0]["net_rx_bps"] is None
        assert set(rows[0]) == {"time", *METRICS}
        assert st.query("web", T0, metrics=["cpu_pct"], resolution="raw") == [
            {"time": T0 + 1, "cpu_pct": 50.0},
            {"time": T0 + 2, "cpu_pct": None},  # NaN is stored as "not measurable"
        ]
        assert st.query("Domain-0", T0 + 1.5, T0 + 1.9) == []
        assert st.query("nobody", 0) == []
        assert st.domains() == ["Domain-0", "web"]
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    db.close()
    with MetricStore(path, readonly=True) as ro:  # reopening keeps the data; a reader cannot write
        assert len(ro.query("web", 0, resolution="raw")) == 2
        with pytest.raises(InvalidInput):
            ro.write([sample(T0 + 3)])


def test_bad_input(tmp_path: Path) -> None:
    with MetricStore(tmp_path / "m.db") as st:
        with pytest.raises(InvalidInput, match="unknown metric"):
            st.query("x", 0, metrics=["cpu"])
        with pytest.raises(InvalidInput, match="resolution"):
            st.query("x", 0, resolution="hourly")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="unknown metric"):
            st.write([Sample(T0, "x", {"cpu": 1.0})])
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(InvalidInput, match="not a usable metric store"):
        MetricStore(tmp_path / "junk.db")
    with pytest.raises(InvalidInput, match="no metric store"):
        MetricStore(tmp_path / "missing.db", readonly=True)


def test_latest(tmp_path: Path) -> None:
    with MetricStore(tmp_path / "m.db") as st:
        assert st.latest() == {}
        for k in range(5):
            st.write([sample(T0 + k, cpu_pct=float(k))] + ([sample(T0 + k, "db", cpu_pct=100.0 + k)] if k < 3 else []))
        latest = st.latest()
        assert set(latest) == {"Domain-0", "db"}
        assert latest["Domain-0"]["time"] == T0 + 4 and latest["Domain-0"]["cpu_pct"] == 4.0
        assert latest["db"]["time"] == T0 + 2 and latest["db"]["cpu_pct"] == 102.0
        assert latest["db"]["disk_read_bps"] is None


def test_rollup_min_avg_max_exact_and_none(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    n = 3 * 60  # three 60 s buckets of 1 s samples
    cpu = rng.uniform(0, 100, n)
    disk = rng.uniform(0, 1e9, n)
    net_none = rng.random(n) < 0.3  # some intervals without a NIC counter
    with MetricStore(tmp_path / "m.db", raw_retention_s=3600, bucket_s=60, auto_maintain=False) as st:
        for i in range(n):
            st.write(
                [
                    sample(
                        T0 + i,
                        cpu_pct=float(cpu[i]),
                        disk_read_bps=float(disk[i]),
                        net_rx_bps=None if net_none[i] else float(disk[i] / 3),
                        mem_used_bytes=None,  # never measurable: the bucket stores NULL
                    )
                ]
            )
        st.maintain(T0 + n)  # all three buckets complete
        rows = st.query("Domain-0", T0, resolution="rollup")
    assert [r["time"] for r in rows] == [T0, T0 + 60, T0 + 120]
    for b, row in enumerate(rows):
        sl = slice(60 * b, 60 * (b + 1))
        assert row["samples"] == 60
        for name, values in (("cpu_pct", cpu[sl]), ("disk_read_bps", disk[sl])):
            assert row[f"{name}_min"] == values.min() and row[f"{name}_max"] == values.max()
            assert row[name] == pytest.approx(values.mean(), rel=1e-12)
        present = (disk[sl] / 3)[~net_none[sl]]
        assert row["net_rx_bps_min"] == present.min() and row["net_rx_bps_max"] == present.max()
        assert row["net_rx_bps"] == pytest.approx(present.mean(), rel=1e-12)  # None values ignored
        assert row["mem_used_bytes"] is None and row["mem_used_bytes_min"] is None and row["mem_used_bytes_max"] is None


def test_rollup_is_incremental_and_includes_the_current_bucket(tmp_path: Path) -> None:
    with MetricStore(tmp_path / "m.db", raw_retention_s=3600, bucket_s=60) as st:
        for i in range(150):  # auto-maintain rolls up buckets 0 and 1 when samples cross into them
            st.write([sample(T0 + i, cpu_pct=float(i))])
        stored = sqlite3.connect(st.path).execute("SELECT bucket, samples FROM rollup ORDER BY bucket").fetchall()
        assert stored == [(T0, 60), (T0 + 60, 60)]  # bucket 2 is not complete: not stored yet
        rows = st.query("Domain-0", T0 + 61, resolution="rollup")
        assert [(r["time"], r["samples"]) for r in rows] == [(T0 + 60, 60), (T0 + 120, 30)]  # live bucket
        assert rows[1]["cpu_pct_min"] == 120 and rows[1]["cpu_pct_max"] == 149
        # a late sample for a rolled-up bucket: the bucket is rolled again
        st.write([sample(T0 + 30.5, cpu_pct=1000.0)])
        st.maintain(T0 + 150)
        first = st.query("Domain-0", T0, T0 + 59, resolution="rollup")[0]
        assert first["samples"] == 61 and first["cpu_pct_max"] == 1000.0
        # maintain twice at the same time changes nothing
        before = st.query("Domain-0", T0, resolution="rollup")
        st.maintain(T0 + 150)
        assert st.query("Domain-0", T0, resolution="rollup") == before


def test_retention_prunes_and_auto_resolution(tmp_path: Path) -> None:
    with MetricStore(
        tmp_path / "m.db", raw_retention_s=600, rollup_retention_s=1800, bucket_s=60, auto_raw_max_span_s=300
    ) as st:
        for i in range(0, 3600, 5):  # one hour at a 5 s interval; a guest that stops after 10 minutes
            st.write([sample(T0 + i, cpu_pct=1.0)] + ([sample(T0 + i, "gone", cpu_pct=2.0)] if i < 600 else []))
        now = T0 + 3600
        st.maintain(now)
        raw = st.query("Domain-0", 0, resolution="raw")
        assert raw[0]["time"] >= now - 600 - 60 and raw[-1]["time"] == T0 + 3595
        roll = st.query("Domain-0", 0, resolution="rollup")
        assert roll[0]["time"] >= now - 1800 and roll[-1]["time"] == T0 + 3540
        assert all(r["samples"] == 12 for r in roll)
        # "gone" lost its raw rows and its rollups (older than 30 min): the domain is forgotten
        assert st.domains() == ["Domain-0"] and st.query("gone", 0) == []
        # auto: raw for a short recent range, rollups for a long or old one
        assert "cpu_pct_min" not in st.query("Domain-0", now - 120)[0]
        assert "cpu_pct_min" in st.query("Domain-0", now - 1200)[0]
        assert "cpu_pct_min" in st.query("Domain-0", now - 900, now - 800)[0]  # raw rows are pruned there


def test_size_stays_bounded(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    domains = [f"g{k}" for k in range(8)]
    sizes = []
    with MetricStore(path, raw_retention_s=300, rollup_retention_s=900, bucket_s=60) as st:
        t = T0
        for _ in range(4):
            for _ in range(1500):
                t += 1
                st.write([sample(t, d, cpu_pct=50.0, disk_read_bps=1e6, net_tx_bps=2e5) for d in domains])
            sqlite3.connect(path).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
            s = st.stats()
            sizes.append(s["db_bytes"])
            assert s["raw_rows"] <= 8 * (300 + 60 + 60)
            assert s["rollup_rows"] <= 8 * (900 // 60 + 2)
    assert max(sizes[1:]) <= sizes[0] * 1.2, sizes  # the file stops growing once the retention is full
    assert os.path.getsize(path) < 1_000_000


def test_incremental_vacuum_gives_space_back(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    with MetricStore(path, raw_retention_s=60, rollup_retention_s=60, bucket_s=60, auto_maintain=False) as st:
        for i in range(400):
            st.write([sample(T0 + i, f"g{k}", cpu_pct=1.0) for k in range(50)])
        big = st.stats()["db_bytes"]
        st.maintain(T0 + 10_000)  # everything is past its retention
        s = st.stats()
        assert s["raw_rows"] == 0 and s["rollup_rows"] == 0 and st.domains() == []
        assert s["db_bytes"] < big / 4, (big, s)


def test_threads_share_one_store(tmp_path: Path) -> None:
    st = MetricStore(tmp_path / "m.db")
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(200):
                st.latest()
                st.query("Domain-0", 0)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for th in threads:
        th.start()
    for i in range(200):
        st.write([sample(T0 + i, cpu_pct=1.0)])
    for th in threads:
        th.join()
    st.close()
    assert not errors


WRITER = textwrap.dedent(
    """
    import sys, time
    from corral.monitoring.metrics import Sample
    from corral.monitoring.store import MetricStore
    st = MetricStore(sys.argv[1], raw_retention_s=120, rollup_retention_s=600, bucket_s=10)
    t = 1_800_000_000.0
    while True:
        t += 1
        st.write([Sample(t, f"g{k}", {"cpu_pct": float(k), "mem_used_bytes": t}) for k in range(20)])
        if t == 1_800_000_050.0:
            print("ready", flush=True)
    """
)


def test_sigkilled_writer_leaves_a_readable_store(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(0.7)  # mid-run: writing and maintaining continuously
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # every interval is whole: each stored time has all 20 domains
    counts = db.execute("SELECT time, count(*) FROM raw GROUP BY time").fetchall()
    assert counts and all(c == 20 for _, c in counts)
    db.close()
    with MetricStore(path, raw_retention_s=120, rollup_retention_s=600, bucket_s=10) as st:
        latest = st.latest()
        assert len(latest) == 20 and len({v["time"] for v in latest.values()}) == 1
        newest = latest["g3"]["time"]
        rows = st.query("g3", newest - 60, resolution="raw")
        assert rows[-1]["time"] == newest and all(r["cpu_pct"] == 3.0 for r in rows)
        assert np.all(np.diff([r["time"] for r in rows]) == 1.0)  # no interval missing before the kill
        st.write([Sample(newest + 1, "g3", {"cpu_pct": 3.0})])  # and writable again


def test_domains_are_keyed_by_host_and_a_guest_history_follows_it(tmp_path: Path) -> None:
    with MetricStore(tmp_path / "m.db", bucket_s=60, raw_retention_s=600, rollup_retention_s=3600) as st:
        st.write([Sample(T0 + 10, "Domain-0", {"cpu_pct": 10.0}, host="local"),
                  Sample(T0 + 10, "Domain-0", {"cpu_pct": 90.0}, host="h2"),
                  Sample(T0 + 10, "web", {"cpu_pct": 20.0}, host="local")])
        # web migrates to h2 within the same bucket
        st.write([Sample(T0 + 40, "web", {"cpu_pct": 40.0}, host="h2")])
        assert [r["cpu_pct"] for r in st.query("Domain-0", T0, resolution="raw")] == [10.0]
        assert [r["cpu_pct"] for r in st.query("Domain-0", T0, resolution="raw", host="h2")] == [90.0]
        assert [r["cpu_pct"] for r in st.query("web", T0, resolution="raw")] == [20.0, 40.0]
        assert [r["cpu_pct"] for r in st.query("web", T0, resolution="raw", host="h2")] == [40.0]
        st.write([Sample(T0 + 130, "web", {"cpu_pct": 0.0}, host="h2")])  # completes the first bucket
        bucket = st.query("web", T0, T0 + 59, resolution="rollup")[0]
        assert bucket["samples"] == 2 and bucket["cpu_pct"] == pytest.approx(30.0)
        assert (bucket["cpu_pct_min"], bucket["cpu_pct_max"]) == (20.0, 40.0)
        assert st.domains() == ["Domain-0", "web"]
        assert st.latest()["web"]["host"] == "h2" and st.latest()["Domain-0"]["cpu_pct"] == 10.0


def test_a_version_1_store_is_migrated_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    cols = ", ".join(f"{m} REAL" for m in METRICS)
    db.executescript(f"""
        CREATE TABLE domains (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
        CREATE TABLE raw (domain_id INTEGER NOT NULL, time REAL NOT NULL, {cols},
                          PRIMARY KEY (domain_id, time)) WITHOUT ROWID;
        CREATE TABLE rollup (domain_id INTEGER NOT NULL, bucket REAL NOT NULL, samples INTEGER NOT NULL,
                             {", ".join(f"{m}_min REAL, {m}_avg REAL, {m}_max REAL" for m in METRICS)},
                             PRIMARY KEY (domain_id, bucket)) WITHOUT ROWID;
        CREATE TABLE meta (key TEXT PRIMARY KEY, value REAL NOT NULL);
        INSERT INTO domains VALUES (1, 'web');
        INSERT INTO raw (domain_id, time, cpu_pct) VALUES (1, {T0 + 1}, 33.0);
        PRAGMA user_version = 1;
    """)
    db.close()
    with MetricStore(path, readonly=True) as ro:  # a reader of an old store still reads it
        assert [r["cpu_pct"] for r in ro.query("web", T0, resolution="raw")] == [33.0]
    with MetricStore(path) as st:
        assert st.stats()["schema_version"] == SCHEMA_VERSION == 2
        assert [r["cpu_pct"] for r in st.query("web", T0, resolution="raw", host="local")] == [33.0]
        st.write([Sample(T0 + 2, "web", {"cpu_pct": 44.0})])
        assert [r["cpu_pct"] for r in st.query("web", T0, resolution="raw")] == [33.0, 44.0]
