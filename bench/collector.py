"""Benchmark of the collector's own cost: CPU % of one core at a 1 s interval (goal: under 1 %).

    .venv/bin/python bench/collector.py [--seconds 20] [--interval 1] [--warmup 3]

Starts, in the same run, the collector (``python -m corral.monitoring.collector``, writing and
fsyncing a row each interval into a temporary file) and a baseline Python process that only sleeps
in a 1 s loop. After a warm-up (Python start-up, imports and the first reading excluded), measures
the user + system CPU time of both over the window with psutil and prints CPU % of one core.
Exits 1 when the collector is at or above 1 %.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

SRC = Path(__file__).resolve().parents[1] / "src"
BASELINE = "import time\nwhile True:\n    time.sleep(1)\n"
GOAL_PCT = 1.0


def cpu_s(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="measured window (default 20)")
    ap.add_argument("--interval", type=float, default=1.0, help="collector interval in seconds (default 1)")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring (default 3)")
    a = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        out = Path(tmp) / "collect.csv"
        collector = subprocess.Popen(
            [sys.executable, "-m", "corral.monitoring.collector", "--out", str(out), "--interval", str(a.interval)],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        baseline = subprocess.Popen([sys.executable, "-c", BASELINE])
        try:
            procs = {
                "collector": psutil.Process(collector.pid),
                "baseline (sleep 1 s loop)": psutil.Process(baseline.pid),
            }
            time.sleep(a.warmup)
            if collector.poll() is not None:
                print(f"the collector exited early with status {collector.returncode}", file=sys.stderr)
                return 2
            rows0 = out.read_text().count("\n") - 1 if out.exists() else 0
            start = {k: cpu_s(p) for k, p in procs.items()}
            t0 = time.monotonic()
            time.sleep(a.seconds)
            end = {k: cpu_s(p) for k, p in procs.items()}
            elapsed = time.monotonic() - t0
            rows = out.read_text().count("\n") - 1 - rows0
        finally:
            collector.send_signal(signal.SIGTERM)
            baseline.kill()
            collector.wait(timeout=10)
            baseline.wait(timeout=10)
        whole = out.read_text().endswith("\n")
    pct = {k: 100.0 * (end[k] - start[k]) / elapsed for k in procs}
    print(f"window {elapsed:.1f} s after a {a.warmup:g} s warm-up; collector interval {a.interval:g} s; "
          f"{rows} rows written (fsync each); host {psutil.cpu_count()} logical cores")  # fmt: skip
    for k, v in pct.items():
        print(f"  {k:28s} {v:6.3f} % of one core  ({1000 * (end[k] - start[k]):.0f} ms CPU, 10 ms ticks)")
    print(f"  collector minus baseline     {pct['collector'] - pct['baseline (sleep 1 s loop)']:6.3f} %")
    print(f"  file whole after SIGTERM: {whole}; exit status {collector.returncode}")
    ok = pct["collector"] < GOAL_PCT
    print(f"goal: collector under {GOAL_PCT:g} % of one core -> {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
