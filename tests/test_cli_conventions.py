"""The command line's conventions: --version, completion, help texts, one error form, several names per
life-cycle command, `list --state`, `info Domain-0`, `top --batch` through a pipe.

Most run the real `corral` over libvirt's test driver (no daemon); the life-cycle ones need the real daemon."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import click
import pytest

from corral.core.spec import GuestSpec
from corral.services.context import Corral
from tests.conftest import OFFLINE_URI

CORRAL_BIN = str(Path(sys.executable).with_name("corral"))


@pytest.fixture
def offline_env(tmp_path: Path) -> dict[str, str]:
    """`corral` on libvirt's test driver (its own host: 4 cores, 16 GiB, no guests) with a data folder of its own."""
    return {**os.environ, "CORRAL_DATA_DIR": str(tmp_path / "data"), "CORRAL_CONFIG": str(tmp_path / "none.toml"),
            "CORRAL_LIBVIRT_URI": OFFLINE_URI, "COLUMNS": "100"}


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CORRAL_BIN, *args], capture_output=True, text=True, env=env, check=False, timeout=120)


def one_error_line(result: subprocess.CompletedProcess[str], *, code: int) -> str:
    """The run failed with `code` and said so in the one form: a single `corral: error: …` line on stderr."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, (result.returncode, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("corral: error: "), result.stderr
    return lines[0]


def test_version(offline_env: dict[str, str]) -> None:
    result = run(offline_env, "--version")
    assert result.returncode == 0 and result.stdout == f"corral {version('corral')}\n"


def test_help_texts_show_no_printf_escapes_nor_none_defaults() -> None:
    from click.testing import CliRunner

    from corral.cli.main import command

    root = command()
    paths: list[list[str]] = []

    def walk(cmd: click.Command, path: list[str]) -> None:
        paths.append(path)
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])

    walk(root, [])
    assert len(paths) > 40
    runner = CliRunner(env={"TERMINAL_WIDTH": "400", "COLUMNS": "400"})
    for path in paths:
        result = runner.invoke(root, [*path, "--help"], prog_name="corral")
        assert result.exit_code == 0, (path, result.output)
        text = "".join(result.output.split())
        assert "%%" not in text and "[default:None]" not in text, (path, result.output)
    assert "(100-P)%ofsteps" in "".join(runner.invoke(root, ["plan", "--help"]).output.split())


def test_shell_completion(offline_env: dict[str, str]) -> None:
    script = run(offline_env, "--show-completion", "bash")
    assert script.returncode == 0 and "_CORRAL_COMPLETE=complete_bash" in script.stdout
    env = {**offline_env, "_CORRAL_COMPLETE": "complete_bash", "COMP_WORDS": "corral sta", "COMP_CWORD": "1"}
    assert run(env).stdout.split() == ["start", "stats"]
    env.update(COMP_WORDS="corral list --state shut-", COMP_CWORD="3")
    assert run(env).stdout.split() == ["shut-off"]
    assert "--install-completion" in run(offline_env, "--help").stdout


@pytest.mark.parametrize(("args", "says", "hint"), [
    (["bogus"], "No such command 'bogus'", "Try 'corral --help'."),
    (["list", "--bogus"], "No such option", "Try 'corral list --help'."),
    (["clone", "web"], "Missing argument 'NEW'", "Try 'corral clone --help'."),
    (["create", "x", "--vcpus", "abc"], "'abc' is not a valid integer", "Try 'corral create --help'."),
    (["snapshot", "list"], "Missing argument 'NAME'", "Try 'corral snapshot list --help'."),
    (["collect"], "Missing option '--out'.", "Try 'corral collect --help'."),  # never run with None for it
])
def test_command_line_mistakes_are_one_error_line(offline_env: dict[str, str], args: list[str], says: str,
                                                  hint: str) -> None:
    line = one_error_line(run(offline_env, *args), code=2)
    assert says in line and line.endswith(hint)


def test_errors_of_list_top_and_stats_are_one_error_line(offline_env: dict[str, str]) -> None:
    assert "--state 'on'" in one_error_line(run(offline_env, "list", "--state", "on"), code=2)
    assert "--interval" in one_error_line(run(offline_env, "top", "--batch", "--interval", "0"), code=2)
    line = one_error_line(run(offline_env, "stats", "Domain-0"), code=1)
    assert "no samples of Domain-0" in line
    assert run(offline_env, "stats", "Domain-0", "--json").stdout.strip() == "[]"  # machine output: empty, not an error


def test_several_names_each_get_their_line(offline_env: dict[str, str]) -> None:
    result = run(offline_env, "pause", "ghost-a", "ghost-b")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and result.stdout == ""
    assert lines == ["corral: error: no domain named 'ghost-a'", "corral: error: no domain named 'ghost-b'"]
    assert one_error_line(run(offline_env, "start", "bad name!"), code=2)  # only bad input: 2
    assert one_error_line(run(offline_env, "start"), code=2)  # no name at all


def test_list_by_state(offline_env: dict[str, str]) -> None:
    running = json.loads(run(offline_env, "list", "--state", "running", "--json").stdout)
    assert [r["name"] for r in running] == ["Domain-0"]
    assert json.loads(run(offline_env, "list", "--state", "shut-off", "--json").stdout) == []
    table = run(offline_env, "list", "--state", "shut-off", "--state", "paused")
    assert table.returncode == 0 and "Domain-0" not in table.stdout


def test_info_domain0_is_the_host_report(offline_env: dict[str, str]) -> None:
    info = json.loads(run(offline_env, "info", "Domain-0", "--json").stdout)
    host = json.loads(run(offline_env, "host", "--json").stdout)
    assert info.keys() == host.keys() and info["cores"] == host["cores"] == 4
    assert info["memory_mib"] == 16384 and info["libvirt_uri"] == OFFLINE_URI
    shown = run(offline_env, "info", "Domain-0")
    assert shown.returncode == 0 and "engine" in shown.stdout and "Capacity" in shown.stdout
    assert "goes with Domain-0" in one_error_line(run(offline_env, "info", "web", "--host", "local"), code=2)
    assert "no host" in one_error_line(run(offline_env, "info", "Domain-0", "--host", "nowhere"), code=1).lower()


def test_top_batch_prints_through_a_pipe(offline_env: dict[str, str]) -> None:
    for extra in ([], ["--batch"]):  # stdout is a pipe here: batch either way
        result = run(offline_env, "top", *extra, "--interval", "0.2", "--iterations", "2", "--sort", "name")
        assert result.returncode == 0, result.stderr
        assert result.stdout.count("corral top — ") == 2 and result.stdout.count("Domain-0") == 2
        assert "\x1b" not in result.stdout  # no screen control, no colour: text for a pipe or a log
    proc = subprocess.Popen([CORRAL_BIN, "top", "--batch", "--interval", "0.1"], env=offline_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith("corral top — ")
    proc.stdout.close()  # the reader goes away, as `| head` does: it stops, quietly
    assert proc.wait(timeout=30) in (0, 1) and proc.stderr.read() == ""


# --- on the real daemon --------------------------------------------------------------------------
def guest_name(label: str) -> str:
    return f"ct-{label}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def two_guests(corral: Corral) -> Iterator[tuple[str, str]]:
    """Two tiny guests, defined and shut off (the `corral` fixture deletes them afterwards)."""
    names = guest_name("one"), guest_name("two")
    for name in names:
        corral.guests.create(GuestSpec(name, "tiny", memory_mib=128), start=False)
    yield names


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run(os.environ.copy(), *args)


def errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The error lines on stderr (progress lines, `… name: starting`, are the others)."""
    return [line for line in result.stderr.splitlines() if not line.startswith("… ")]


@pytest.mark.libvirt
def test_start_several_guests_a_line_each_and_failures_do_not_stop_the_rest(
        corral: Corral, two_guests: tuple[str, str]) -> None:
    a, b = two_guests
    missing = guest_name("missing")
    result = cli("start", a, missing, b)
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [f"{a}: running", f"{b}: running"]
    assert errors(result) == [f"corral: error: no domain named {missing!r}"]
    assert f"… {a}: starting" in result.stderr  # progress is named when there are several
    assert corral.libvirt.state(a) == corral.libvirt.state(b) == "running"

    top = cli("top", "--batch", "--interval", "0.5", "--iterations", "2")
    assert top.returncode == 0 and top.stdout.count("corral top — ") == 2 and "\x1b" not in top.stdout
    assert top.stdout.count(a) == 2 and top.stdout.count(b) == 2
    listed = json.loads(cli("list", "--state", "running", "--json").stdout)
    assert {a, b, "Domain-0"} <= {r["name"] for r in listed}

    again = cli("start", a, b)  # both already running: an error line each, exit 1
    assert again.returncode == 1 and again.stdout == ""
    assert errors(again) == [f"corral: error: {a} is already running", f"corral: error: {b} is already running"]
    off = cli("poweroff", a, b)
    assert off.returncode == 0 and off.stdout.splitlines() == [f"{a}: shut-off", f"{b}: shut-off"]
    assert {r["name"] for r in json.loads(cli("list", "--state", "shut-off", "--json").stdout)} >= {a, b}
    gone = cli("delete", a, b)
    assert gone.returncode == 0 and gone.stdout.splitlines() == [f"deleted {a}", f"deleted {b}"]
