"""``corral simulate`` through the real command (subprocess): results, reports and bad input."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from .conftest import CORRAL_BIN, day_archive


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    if not CORRAL_BIN.exists():
        pytest.skip(f"{CORRAL_BIN} not installed")
    return subprocess.run([str(CORRAL_BIN), "simulate", *map(str, args)], capture_output=True, text=True,
                          timeout=300, check=False)


def planetlab_folder(tmp: Path, n: int = 8, steps: int = 12, short: int | None = None) -> Path:
    d = tmp / "day"
    d.mkdir()
    for i in range(n):
        k = short if (short is not None and i == n - 1) else steps
        (d / f"vm{i:02d}").write_text("\n".join(str((7 * i + 13 * t) % 60) for t in range(k)) + "\n")
    return d


def test_side_by_side_json_and_html(tmp_path: Path) -> None:
    folder = planetlab_folder(tmp_path)
    html = tmp_path / "report.html"
    r = run(folder, "--policy", "corral", "-p", "thr-mmt-0.8", "--hosts", "6", "--json", "--html", html, "-q")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert [x["policy"] for x in data["results"]] == ["corral", "THR-MMT-0.8"]
    for x in data["results"]:
        for key in ("energy_kwh", "slatah", "pdm", "slav", "esv", "migrations", "host_shutdowns",
                    "mean_active_hosts", "run_time_s"):
            assert key in x
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == 4 and "<script" not in page
    assert "THR-MMT-0.8" in page and "http" not in page.replace("http://www.w3.org/2000/svg", "")


def test_table_and_both_models(tmp_path: Path) -> None:
    r = run(planetlab_folder(tmp_path), "--hosts", "6", "--model", "both")
    assert r.returncode == 0, r.stderr
    assert "corral (cloudsim)" in r.stdout and "corral (realistic)" in r.stdout
    assert "energy (kWh)" in r.stdout and "migrations" in r.stdout


def test_real_day_matches_cloudsim() -> None:
    r = run(day_archive("20110306"), "-p", "thr-mmt-0.8", "--json", "-q")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)["results"][0]
    assert round(res["energy_kwh"], 2) == 150.70 and res["migrations"] == 21575


@pytest.mark.parametrize(
    ("policy", "words"),
    [("thr-xyz-2", "unknown VM selection 'xyz'"), ("lr-mmt-0", "bad parameter in 'lr-mmt-0'"),
     ("nonsense", "unknown policy 'nonsense'")],
)
def test_bad_policy(tmp_path: Path, policy: str, words: str) -> None:
    r = run(planetlab_folder(tmp_path), "--policy", policy)
    assert r.returncode == 1
    assert words in r.stderr and r.stderr.count("\n") == 1 and r.stderr.startswith("corral: error:")


def test_unequal_trace_lengths(tmp_path: Path) -> None:
    r = run(planetlab_folder(tmp_path, short=7))
    assert r.returncode == 1
    assert "vm07" in r.stderr and "7 samples while the other files have 12" in r.stderr
    assert r.stderr.count("\n") == 1


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    r = run(tmp_path / "empty")
    assert r.returncode == 1 and "empty folder" in r.stderr and r.stderr.count("\n") == 1


def test_missing_path_and_bad_options(tmp_path: Path) -> None:
    r = run(tmp_path / "nowhere")
    assert r.returncode == 1 and "no such file or folder" in r.stderr
    folder = planetlab_folder(tmp_path)
    for args, words in ((["--model", "magic"], "unknown model"), (["--hosts", "0"], "--hosts must be positive"),
                        (["--host-kinds", "cray-1"], "unknown host kind")):
        r = run(folder, *args)
        assert r.returncode == 1 and words in r.stderr, (args, r.stderr)


def test_more_guests_than_the_hosts_can_hold_are_reported(tmp_path: Path) -> None:
    # 8 guests, one ML110 G5: CloudSim's creation needs each guest's full MIPS free
    r = run(planetlab_folder(tmp_path), "--hosts", "1", "--host-kinds", "ml110-g5", "-p", "lr-mmt-1.2", "-q")
    assert r.returncode == 3
    # the folder's listing order decides the sizes (as CloudSim's File.listFiles): the names vary
    assert re.search(r"6 of 8 guest\(s\) fit on no host at the start: (vm0\d, ){4}vm0\d and 1 more", r.stderr)
    assert "not dropped" in r.stderr
    assert r.stderr.count("\n") == 1
