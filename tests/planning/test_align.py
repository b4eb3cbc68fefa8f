from __future__ import annotations

import numpy as np
import pytest

from corral.planning import EmptyInputError, PlanningError, ServerTrace, align


def _t(name: str, ts: list[float], cpu: list[float]) -> ServerTrace:
    return ServerTrace(name, np.array(ts), {"cpu": np.array(cpu)}, {"cpu": 100.0})


def test_align_drift_gaps_and_edges() -> None:
    a = _t("a", [0, 301, 598, 900, 1200], [1, 2, 3, 4, 5])
    b = _t("b", [2, 300, 1201], [10, 20, 50])  # gap at 600 and 900: filled by the larger neighbour
    c = _t("c", [600, 900], [7, 9])  # starts late: before its first sample, its peak
    ts = align([a, b, c])
    assert ts.step_s == 300 and ts.n_steps == 5
    assert ts.demand["cpu"][0].tolist() == [1, 2, 3, 4, 5]
    assert ts.demand["cpu"][1].tolist() == [10, 20, 50, 50, 50]
    assert ts.demand["cpu"][2].tolist() == [9, 9, 7, 9, 9]
    assert ts.filled.tolist() == [0, 2, 3]
    assert any("filled" in n for n in ts.notes)


def test_align_reanchors_a_server_from_another_period() -> None:
    traces = [_t(f"s{i}", [0, 300, 600, 900], [1, 1, 1, 1]) for i in range(3)]
    traces.append(_t("late", [10**6, 10**6 + 300, 10**6 + 600, 10**6 + 900], [5, 6, 7, 8]))
    ts = align(traces)
    assert ts.demand["cpu"][3].tolist() == [5, 6, 7, 8]
    assert any("re-anchored" in n and "late" in n for n in ts.notes)


def test_align_errors() -> None:
    with pytest.raises(EmptyInputError):
        align([])
    with pytest.raises(PlanningError, match="duplicate"):
        align([_t("a", [0], [1]), _t("a", [0], [1])])
