"""plan.json read back (`corral report`, the plan library behind `GET /api/plans/{name}`) and the HTML
report (issue 9, item 13): a malformed plan is one clear error naming the field, never a KeyError
or TypeError from deep in the renderer; every string of a plan is escaped in the report."""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from corral.config import load_settings
from corral.core.errors import CorralError, NotFound
from corral.planning import (
    PlanFormatError,
    load_catalog,
    make_traceset,
    plan_consolidation,
    plan_to_json,
    read_plan_json,
    render_html,
    summary_lines,
    validate_plan,
    write_plan_json,
)
from corral.planning.serialize import check_plan_json
from corral.services.plans import PlanService

PAYLOAD = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def plan_json() -> dict[str, Any]:
    """A plan with every section filled: unplaceable servers, validation, notes, gaps."""
    rng = np.random.default_rng(5)
    kind = load_catalog()["legacy-1u"]
    n, T = 14, 48
    cpu = rng.uniform(0.05, 0.4, (n, T)) * kind.cpu_mhz
    cpu[0] *= 4  # above a host: unplaceable
    names = [f"srv-{i}" for i in range(n)]
    ts = make_traceset(names, {"cpu": cpu, "mem": rng.uniform(1e8, 2e9, (n, T))}, assumed={"mem": "assumed: a guess"})
    plan = plan_consolidation(ts, kind, 0.8, time_budget_s=0.2)
    data = plan_to_json(validate_plan(plan, ts, "same day"))
    data["notes"] = ["a note"]
    data["gaps_filled"] = {"servers": 1, "points": 3}
    assert data["unplaceable"] and data["validation"] and data["kinds"] and data["assumed"]
    return data


def _paths(node: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield at
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*at, k))
    elif isinstance(node, list):
        for i, v in enumerate(node[:3]):  # the first few of each list are enough
            yield from _paths(v, (*at, i))


def _get(node: Any, at: tuple[Any, ...]) -> Any:
    for k in at:
        node = node[k]
    return node


def _renders_or_refuses(data: Any) -> str | None:
    """The property: a plan is refused with a PlanFormatError, or summary and report both render."""
    try:
        checked = check_plan_json(data)
    except PlanFormatError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("plan.json: ")
        return None
    summary_lines(checked)
    return render_html(checked)


# ---------------------------------------------------------------- escaping
def test_currency_from_the_costs_file_is_escaped(tmp_path: Path) -> None:
    """A currency of <img onerror=...> ran when the report was opened from disk."""
    import typer

    from corral.cli.plan import register

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    register(app)
    traces = tmp_path / "t.csv"
    traces.write_text("server,timestamp,cpu\n" + "".join(f"s{i},{300 * t},500\n" for i in range(3) for t in range(4)))
    costs = tmp_path / "costs.toml"
    costs.write_text("[costs]\ncurrency = '<b onclick=x>'\n")
    html = tmp_path / "r.html"
    r = CliRunner().invoke(app, ["plan", str(traces), "--costs", str(costs), "--out", str(tmp_path / "p.json"),
                                 "--html", str(html), "-q"])  # fmt: skip
    assert r.exit_code == 0, r.output
    text = html.read_text()
    assert "<b onclick" not in text and "&lt;b onclick=x&gt;" in text


def test_every_string_of_a_plan_is_escaped_in_the_report(plan_json: dict[str, Any]) -> None:
    """Each string of plan.json (server names, kinds, method, reasons, labels, notes, currency,
    resources, chart labels), replaced in turn by markup: refused, or shown as text only."""
    strings = [at for at in _paths(plan_json) if isinstance(_get(plan_json, at), str)]
    keys = [at for at in _paths(plan_json) if at and isinstance(_get(plan_json, at[:-1]), dict)]
    assert len(strings) >= 30
    shown = 0
    for at in strings:
        data = copy.deepcopy(plan_json)
        _get(data, at[:-1])[at[-1]] = PAYLOAD
        html = _renders_or_refuses(data)
        if html is not None:
            assert "<img" not in html, at
            shown += "&lt;img src=x onerror=alert(1)&gt;" in html
    for at in keys:  # keys shown in the report (e.g. the bounds' names) are escaped too
        data = copy.deepcopy(plan_json)
        parent = _get(data, at[:-1])
        parent[PAYLOAD] = parent.pop(at[-1])
        html = _renders_or_refuses(data)
        assert html is None or "<img" not in html, at
    assert shown >= 15  # most strings reach the page, as text


# ---------------------------------------------------------------- malformed plans
_JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**18), 10**18), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5), st.just([]), st.just({}), st.just([1, "a", None]), st.just({"a": 1}), st.just(-1),
    st.just(0), st.just(1e308), st.just([[]]),
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_malformed_plans_are_refused_or_render(plan_json: dict[str, Any], data: st.DataObject) -> None:
    paths = [at for at in _paths(plan_json) if at]
    plan = copy.deepcopy(plan_json)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.sampled_from(paths))
        try:
            parent = _get(plan, at[:-1])
            if data.draw(st.booleans()) and isinstance(parent, dict):
                parent.pop(at[-1], None)
            else:
                parent[at[-1]] = data.draw(_JUNK)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed or replaced this part
    _renders_or_refuses(plan)


def test_malformed_plan_examples(plan_json: dict[str, Any]) -> None:
    for change, field in [
        (lambda d: d["costs"]["params"].pop("currency"), "costs.params.currency"),
        (lambda d: d["costs"].__setitem__("savings_per_year", "lots"), "costs.savings_per_year"),
        (lambda d: d["chart"]["heatmaps"][0]["rows"].__setitem__(0, []), "chart.heatmaps[0].rows[0]"),
        (lambda d: d["kinds"]["options"][0].__setitem__("cheapest", "yes"), "kinds.options[0].cheapest"),
        (lambda d: d["servers"]["host"].pop(), "servers.host"),
        (lambda d: d["assumed"].__setitem__("mem", 3), "assumed.mem"),
        (lambda d: d["chart"]["hosts"][0]["layers"][0]["values"].pop(), "chart.hosts[0].layers[0].values"),
        (lambda d: d.__setitem__("cap", 0), "cap"),
        (lambda d: d["hosts"][0]["servers"].__setitem__(0, None), "hosts[0].servers[0]"),
        (lambda d: d["unplaceable"][0].__setitem__("reason", "\x1b[2J"), "unplaceable[0].reason"),
        (lambda d: d["before"].__setitem__("servers", 10**20), "before.servers"),
        (lambda d: d["validation"].pop("label"), "validation.label"),
    ]:
        d = copy.deepcopy(plan_json)
        change(d)
        with pytest.raises(PlanFormatError, match=re.escape(field)):
            check_plan_json(d)


@pytest.mark.parametrize(
    ("text", "problem"),
    [("[" * 100_000, "invalid JSON"), ('{"schema": "corral.plan/1", "x": ' + "[" * 50 + "]" * 50 + "}", "missing key"),
     ("1" * 5000, "invalid JSON"), ("NaN", "not a JSON object")],
)  # fmt: skip
def test_hostile_json(tmp_path: Path, text: str, problem: str) -> None:
    f = tmp_path / "p.json"
    f.write_text(text)
    with pytest.raises(PlanFormatError, match=problem):
        read_plan_json(f)


def test_deep_nesting_and_non_finite_numbers(plan_json: dict[str, Any], tmp_path: Path) -> None:
    f = tmp_path / "p.json"
    d = copy.deepcopy(plan_json)
    d["extra"] = json.loads("[" * 60 + "]" * 60)
    f.write_text(json.dumps(d))
    with pytest.raises(PlanFormatError, match="nested more than 32 levels"):
        read_plan_json(f)
    d = copy.deepcopy(plan_json)
    d["grid"]["start_s"] = float("nan")
    f.write_text(json.dumps(d))  # NaN: not JSON, but Python writes and reads it
    with pytest.raises(PlanFormatError, match=r"grid\.start_s: not a finite number"):
        read_plan_json(f)


# ---------------------------------------------------------------- the plan library
@pytest.fixture
def library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PlanService:
    monkeypatch.setenv("CORRAL_DATA_DIR", str(tmp_path / "data"))
    service = PlanService(load_settings(tmp_path / "no-config.toml"))
    service.folder.mkdir(parents=True)
    return service


def test_malformed_plan_in_the_library_is_a_clear_error(library: PlanService, plan_json: dict[str, Any]) -> None:
    """`GET /api/plans/{name}` and its report answered 500 with a KeyError traceback."""
    write_plan_json(plan_json, library.folder / "good.json")
    assert library.read("good")["schema"] == "corral.plan/1" and "<svg" in library.report_html("good")
    broken = copy.deepcopy(plan_json)
    del broken["costs"]["params"]
    broken["chart"]["heatmaps"][0]["rows"] = [[]]
    write_plan_json(broken, library.folder / "broken.json")
    for call in (library.read, library.report_html):
        with pytest.raises(CorralError, match=r"plan 'broken' cannot be read: .*: missing key 'costs\.params'"):
            call("broken")
    (library.folder / "binary.json").write_bytes(bytes(range(256)))
    with pytest.raises(CorralError, match=r"plan 'binary' cannot be read: .*not UTF-8"):
        library.read("binary")
    os.symlink("/dev/zero", library.folder / "zero.json")
    with pytest.raises(NotFound):
        library.read("zero")
    os.symlink(library.folder / "gone", library.folder / "dangling.json")
    assert {p["name"] for p in library.names()} == {"good", "broken", "binary"}
