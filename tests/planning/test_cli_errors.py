"""`corral plan`, `report`, `host-kinds` (and the collect CSV's `--cpu-mhz`) on hostile options and
files (issue 9, items 5 and 13): one `corral: error:` line and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from click.testing import Result
from typer.testing import CliRunner

from corral.cli.plan import register

CORRAL = str(Path(sys.executable).with_name("corral"))
VALID_KIND = (
    "cores = 2\ncore_mhz = 2000\nmem_gb = 4\ndisk_mb_s = 100\nnet_mb_s = 100\n"
    "power_w = [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]\n"
)


@pytest.fixture
def app() -> typer.Typer:
    a = typer.Typer()

    @a.callback()
    def main() -> None:
        """test app"""

    register(a)
    return a


@pytest.fixture
def traces(tmp_path: Path) -> Path:
    rows = ["server,timestamp,cpu,mem"] + [f"s{i},{300 * t},{300 + 50 * i},1e9" for i in range(4) for t in range(6)]
    f = tmp_path / "t.csv"
    f.write_text("\n".join(rows) + "\n")
    return f


def _one_error_line(r: Result, needle: str) -> str:
    """The command failed cleanly: exit 1, no exception escaped, one error line naming the problem."""
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code == 1, (r.exit_code, r.output)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("corral: error: "), r.stderr
    assert needle in lines[0], lines[0]
    assert "Traceback" not in r.output
    return lines[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["--time-budget", "-1"], "time budget -1.0 s"),
     (["--time-budget", "nan"], "time budget nan s"),
     (["--time-budget", "1e9"], "from 0 to 86400 seconds"),
     (["--cap", "1e-300"], "impossible cap"),
     (["--cap", "nan"], "impossible cap"),
     (["--cap", "-0.5"], "impossible cap"),
     (["--percentile", "nan"], "percentile nan"),
     (["--percentile", "0"], "percentile 0.0"),
     (["--percentile", "101"], "percentile 101.0"),
     (["--resources", "cpu,\x1b[2J"], "unknown resource(s) '\\x1b[2J'"),
     (["--host-kind", "\x1b]0;x\x07"], "unknown host kind '\\x1b]0;x\\x07'"),
     (["--format", "xml"], "unknown format 'xml'"),
     (["--save", "../etc/x"], "invalid plan name")],
)  # fmt: skip
def test_plan_options_are_bounded(app: typer.Typer, traces: Path, tmp_path: Path, args: list[str], needle: str) -> None:
    out = tmp_path / "plan.json"
    r = CliRunner().invoke(app, ["plan", str(traces), "--out", str(out), "-q", *args])
    _one_error_line(r, needle)
    assert not out.exists()  # refused before anything was planned or written


def test_output_to_a_folder_a_missing_folder_or_a_full_disk(app: typer.Typer, traces: Path, tmp_path: Path) -> None:
    good = tmp_path / "plan.json"
    for args, needle in [
        (["--out", str(tmp_path)], "cannot write: it is a folder"),
        (["--out", str(tmp_path / "missing" / "plan.json")], "does not exist"),
        (["--out", "/dev/full"], "plan /dev/full: cannot write: No space left on device"),
        (["--out", str(good), "--html", str(tmp_path)], "report " + str(tmp_path) + ": cannot write: it is a folder"),
        (["--out", str(good), "--html", str(tmp_path / "missing" / "r.html")], "does not exist"),
        (["--out", str(good), "--html", "/dev/full"], "report /dev/full: cannot write: No space left"),
    ]:
        _one_error_line(CliRunner().invoke(app, ["plan", str(traces), "-q", *args]), needle)
    r = CliRunner().invoke(app, ["report", str(good), "--html", "/dev/full"])
    _one_error_line(r, "cannot write: No space left on device")
    assert not list(tmp_path.glob(".*.tmp"))  # no half-written temporary file left behind


def test_plan_json_is_replaced_whole_keeping_its_mode(app: typer.Typer, traces: Path, tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    assert CliRunner().invoke(app, ["plan", str(traces), "--out", str(out), "-q"]).exit_code == 0
    before = out.read_bytes()
    json.loads(before)
    out.chmod(0o640)
    assert CliRunner().invoke(app, ["plan", str(traces), "--out", str(out), "-q", "--cap", "0.5"]).exit_code == 0
    assert out.read_bytes() != before and out.stat().st_mode & 0o777 == 0o640  # replaced whole, mode kept


@pytest.mark.parametrize("content", [bytes(range(256)) * 4, b"\xff\xfe[costs]\n", b"[costs]\x00\n"])
def test_binary_settings_and_plan_files(app: typer.Typer, traces: Path, tmp_path: Path, content: bytes) -> None:
    f = tmp_path / "binary.toml"
    f.write_bytes(content)
    _one_error_line(CliRunner().invoke(app, ["plan", str(traces), "--costs", str(f), "-q"]), "costs file")
    _one_error_line(CliRunner().invoke(app, ["plan", str(traces), "--catalog", str(f), "-q"]), "catalog")
    _one_error_line(CliRunner().invoke(app, ["host-kinds", "--catalog", str(f)]), "catalog")
    _one_error_line(CliRunner().invoke(app, ["report", str(f)]), "plan")


def test_devices_folders_and_huge_settings_files(app: typer.Typer, traces: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * 2_000_000 + "\n")
    for opt in ("--costs", "--catalog"):
        for path, needle in [("/dev/zero", "not a regular file"), (str(tmp_path), "a folder"),
                             (str(big), "larger than 1 MiB"), (str(tmp_path / "none"), "No such file")]:  # fmt: skip
            _one_error_line(CliRunner().invoke(app, ["plan", str(traces), opt, path, "-q"]), needle)
    _one_error_line(CliRunner().invoke(app, ["report", "/dev/zero"]), "not a regular file")
    _one_error_line(CliRunner().invoke(app, ["plan", "/dev/zero", "-q"]), "not a regular file or folder")


@pytest.mark.parametrize(
    ("table", "needle"),
    [("energy_price_per_kwh = -1", "energy_price_per_kwh must be a number from 0"),
     ("energy_price_per_kwh = nan", "energy_price_per_kwh must be a number from 0 to 1000, got nan"),
     ("pue = inf", "pue must be a number from 1 to 10, got inf"),
     ("amortization_years = 1e308", "amortization_years must be"),
     ("admin_per_machine_year = true", "admin_per_machine_year must be"),
     ("currency = '<img src=x onerror=alert(1)>'", "currency must be 1 to 16 printable characters"),
     ('currency = "EUR\\u001b[2J"', "currency must be 1 to 16 printable characters"),
     ("currency = ''", "currency must be"),
     ("[costs.x]\ny = [[[[[[1]]]]]]", "unknown cost setting(s): 'x'")],
)  # fmt: skip
def test_cost_file_values_are_refused_naming_the_field(
    app: typer.Typer, traces: Path, tmp_path: Path, table: str, needle: str
) -> None:
    costs = tmp_path / "costs.toml"
    costs.write_text(f"[costs]\n{table}\n")
    _one_error_line(CliRunner().invoke(app, ["plan", str(traces), "--costs", str(costs), "-q"]), needle)


@pytest.mark.parametrize(
    ("change", "needle"),
    [(("cores = 2", "cores = 0"), "cores must be from 1 to 100000, got 0"),
     (("cores = 2", "cores = 0.5"), "cores must be from 1"),
     (("cores = 2", "cores = 2.5"), "cores must be a whole number"),
     (("core_mhz = 2000", "core_mhz = 0"), "core_mhz must be from 1"),
     (("core_mhz = 2000", "core_mhz = nan"), "core_mhz must be from 1 to 1e+06, got nan"),
     (("mem_gb = 4", "mem_gb = -4"), "mem_gb must be"),
     (("mem_gb = 4", "mem_gb = 1e-300"), "mem_gb must be"),
     (("disk_mb_s = 100", "disk_mb_s = inf"), "disk_mb_s must be"),
     (("power_w = [10,", "power_w = [-10,"), "power_w must be finite watts"),
     (("power_w = [10,", "power_w = [nan,"), "power_w must be finite watts"),
     (("cores = 2", "cores = 2\ncorse = 3"), "unknown setting(s) 'corse'"),
     (("cores = 2", "cores = 2\ndescription = \"a\\u001bb\""), "description must be at most 1000 printable")],
)  # fmt: skip
def test_catalog_values_are_refused_naming_the_field(
    app: typer.Typer, traces: Path, tmp_path: Path, change: tuple[str, str], needle: str
) -> None:
    cat = tmp_path / "hosts.toml"
    cat.write_text("[kinds.mine]\n" + VALID_KIND.replace(*change))
    line = _one_error_line(CliRunner().invoke(app, ["host-kinds", "--catalog", str(cat)]), needle)
    assert "kind 'mine'" in line
    r = CliRunner().invoke(app, ["plan", str(traces), "--catalog", str(cat), "--host-kind", "mine", "-q"])
    _one_error_line(r, needle)


def test_catalog_kind_names_cannot_carry_markup(app: typer.Typer, tmp_path: Path) -> None:
    cat = tmp_path / "hosts.toml"
    for name in ('"[/bold]"', '"a b"', '"\\u001b[31m"', '""'):
        cat.write_text(f"[kinds.{name}]\n{VALID_KIND}")
        _one_error_line(CliRunner().invoke(app, ["host-kinds", "--catalog", str(cat)]), "invalid kind name")
    cat.write_text(f"[kinds.mine]\n{VALID_KIND}")
    r = CliRunner().invoke(app, ["host-kinds", "--catalog", str(cat)])
    assert r.exit_code == 0 and "mine" in r.stdout


def test_idle_servers_still_need_one_host(app: typer.Typer, tmp_path: Path) -> None:
    """Servers that never used anything gave "lower bound 0 hosts" (and a gap of n/a)."""
    f = tmp_path / "idle.csv"
    f.write_text("server,timestamp,cpu\n" + "".join(f"s{i},{300 * t},0\n" for i in range(3) for t in range(4)))
    r = CliRunner().invoke(app, ["plan", str(f), "--out", str(tmp_path / "p.json"), "-q"])
    assert r.exit_code == 0, r.output
    assert "lower bound 1 host, gap 0.0 %" in r.stdout


def test_terminal_output_to_a_full_disk_is_one_error_line(tmp_path: Path, traces: Path) -> None:
    out = tmp_path / "plan.json"
    for args in (["plan", str(traces), "--out", str(out), "-q"], ["report", str(out)], ["report", str(out), "--json"],
                 ["host-kinds"], ["host-kinds", "--json"]):  # fmt: skip
        with open("/dev/full", "w") as full:
            r = subprocess.run([CORRAL, *args], stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
        assert r.returncode == 1, (args, r.stderr)
        assert r.stderr.count("\n") == 1 and "cannot write to standard output" in r.stderr, r.stderr


def test_collect_cpu_mhz_is_bounded(tmp_path: Path) -> None:
    """`--cpu-mhz inf` ended in a ValueError traceback from the row writer."""
    from corral.cli.collect import register as register_collect
    from corral.core.errors import InvalidInput

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    register_collect(app)
    for value in ("inf", "nan", "1e300", "0", "-5"):
        r = CliRunner().invoke(app, ["collect", "--out", str(tmp_path / "c.csv"), "--cpu-mhz", value,
                                     "--interval", "1", "--duration", "1"])  # fmt: skip
        assert isinstance(r.exception, InvalidInput) and "--cpu-mhz" in str(r.exception), repr(r.exception)
    assert not (tmp_path / "c.csv").exists()


def test_save_into_a_library_that_cannot_be_made(
    app: typer.Typer, traces: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a file where the data folder should be\n")
    monkeypatch.setenv("CORRAL_DATA_DIR", str(blocker))
    r = CliRunner().invoke(app, ["plan", str(traces), "--out", str(tmp_path / "p.json"), "--save", "q3", "-q"])
    _one_error_line(r, f"plan library {blocker}/plans: cannot create it")
