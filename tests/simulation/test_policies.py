"""Policy names, the CloudSim round and Corral's policy on hand-made clusters with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from corral.consolidation.corral import CorralPolicy, forecast
from corral.consolidation.errors import PolicyError
from corral.consolidation.policies import decide, make_policy, parse_policy
from corral.consolidation.state import Histories, Migrate, SwitchOff, SwitchOn

from .conftest import no_history, tiny_state


# ---------------------------------------------------------------- names
@pytest.mark.parametrize(
    ("text", "name"),
    [("thr-mmt-0.8", "THR-MMT-0.8"), ("LR-MMT-1.2", "LR-MMT-1.2"), (" mad-mc-2.5 ", "MAD-MC-2.5"),
     ("iqr-rs-1.5", "IQR-RS-1.5"), ("lrr-mu-1.2", "LRR-MU-1.2"), ("corral", "corral")],
)
def test_policy_names(text: str, name: str) -> None:
    assert parse_policy(text).name == name


@pytest.mark.parametrize(
    ("text", "words"),
    [("thr-xyz-2", "unknown VM selection 'xyz'"), ("lr-mmt-0", "must be > 0"), ("thr-mmt-1.5", "(0, 1]"),
     ("foo", "unknown policy"), ("abc-mmt-1", "unknown detector"), ("mad-mmt-x", "not a number"),
     ("iqr-mmt--1", "must be >= 0"), ("corral:q=1", "bad option"), ("corral:z=-1", ">= 0"),
     ("thr-mmt-nan", "finite")],
)
def test_bad_policy_names(text: str, words: str) -> None:
    with pytest.raises(PolicyError, match=None) as err:
        parse_policy(text)
    assert words in err.value.message and "\n" not in err.value.message


def test_corral_options() -> None:
    spec = parse_policy("corral:z=1.5,dwell=3")
    assert spec.options == {"z": 1.5, "dwell": 3.0}
    assert isinstance(make_policy(spec), CorralPolicy)


# ---------------------------------------------------------------- the CloudSim round
G5 = 5320.0


def test_overload_moves_the_mmt_guest_to_the_host_adding_least_power() -> None:
    # host 0: 4500 of 5320 MIPS (0.85 > 0.8); MMT takes guest 1 (613 MB); then 3000 / 5320 < 0.8.
    # Host 2 is empty: CloudSim reads its power now as idle (93.7 W), so it adds 10.6 W against
    # 14.5 W on host 1, and wins. Host 1 is then evacuated? No: its guest fits nowhere (host 0
    # is overloaded, host 2 was off at the update) and the evacuation is cancelled.
    st = tiny_state([G5, G5, G5], [[0, 1, 2], [3], []], [2000.0, 1500.0, 1000.0, 2000.0],
                    ram=[870.0, 613.0, 1740.0, 870.0])
    out = decide(st, no_history(4), "thr-mmt-0.8")
    assert [(d.vm, d.source, d.target, d.kind) for d in out if isinstance(d, Migrate)] == [(1, 0, 2, "overload")]
    assert "overloaded" in out[0].reason and "MMT" in out[0].reason


def test_underload_evacuates_the_least_utilized_host_and_cancels_what_does_not_fit() -> None:
    # host 1 (500 MIPS) is the least utilized: its guest goes where power grows least (host 2:
    # 4.1 W, host 0: 5.4 W). Host 0 is next, but its 2000 MIPS fit nowhere: cancelled.
    st = tiny_state([G5, G5, G5], [[0], [1], [2]], [2000.0, 500.0, 3000.0])
    out = decide(st, no_history(3), "thr-mmt-0.8")
    moves = [(d.vm, d.source, d.target, d.kind) for d in out if isinstance(d, Migrate)]
    assert moves == [(1, 1, 2, "underload")]
    assert [d.host for d in out if isinstance(d, SwitchOff)] == [1]


def test_a_guest_can_be_planned_twice_in_one_round_as_in_cloudsim() -> None:
    # host 0 overloaded (4800 > 0.8 x 5320): MMT takes guest 1 to host 1, which adds least power
    # (19.5 W against 21.1 W on host 2). Host 1 (20 MIPS at the update) is then the least utilized
    # host and is evacuated, guest 1 included: CloudSim builds the set of hosts to skip from an
    # empty list, so the targets of the overload migrations are not protected. Guest 1 moves twice.
    st = tiny_state([G5, G5, G5], [[0, 1], [2], [3]], [2400.0, 2400.0, 20.0, 400.0],
                    ram=[870.0, 613.0, 870.0, 870.0])
    out = [d for d in decide(st, no_history(4), "thr-mmt-0.8") if isinstance(d, Migrate)]
    assert [(d.vm, d.source, d.target, d.kind) for d in out] == [
        (1, 0, 1, "overload"), (1, 1, 2, "underload"), (2, 1, 2, "underload")]


def test_decide_is_pure() -> None:
    st = tiny_state([G5, G5, G5], [[0, 1, 2], [3], []], [2000.0, 1500.0, 1000.0, 2000.0])
    before = {k: np.array(getattr(st, k)).copy() for k in ("count", "members", "vm_demand", "vm_host", "utilization")}
    for p in ("thr-mmt-0.8", "iqr-mc-1.5", "lr-rs-1.2", "mad-mu-2.5", "corral"):
        decide(st, no_history(4), p)
        for k, v in before.items():
            assert np.array_equal(getattr(st, k), v), (p, k)


# ---------------------------------------------------------------- Corral's policy
def _hist(rows: list[list[float]]) -> Histories:
    n = len(rows)
    k = max(len(r) for r in rows)
    full = np.zeros((n, k))
    for i, r in enumerate(rows):
        full[i, : len(r)] = r
    lens = np.array([len(r) for r in rows], dtype=np.int64)
    recent = np.zeros((n, 30))
    for i, r in enumerate(rows):
        rr = r[::-1][:30]
        recent[i, : len(rr)] = rr
    return Histories(recent, np.minimum(lens, 30), full, lens)


def test_forecast_uses_each_guests_own_spread_shrunk_to_the_pool() -> None:
    st = tiny_state([G5], [[0, 1, 2]], [500.0, 500.0, 500.0], mips=[1000.0] * 3)
    steady = [0.5] * 24
    jumpy = [0.2, 0.8] * 12
    mean, var = forecast(st, _hist([steady, jumpy, [0.5]]))
    assert mean.tolist() == [500.0, 500.0, 500.0]
    assert var[0] < var[2] < var[1]  # no history: the pooled spread; steady: less; jumpy: more
    mean0, _ = forecast(st, no_history(3))
    assert mean0.tolist() == [250.0] * 3  # no history at all: the 25 % prior


def test_corral_relieves_an_overload_with_the_cheapest_fix_and_says_why() -> None:
    # host 0 holds 5200 of 5320 MIPS with noisy guests: its upper forecast exceeds capacity.
    rows = [[0.9, 1.0] * 6, [0.8, 0.9] * 6, [0.5, 0.6] * 6, [0.2] * 12]
    st = tiny_state([G5, G5, 3720.0], [[0, 1, 2], [3], []], [2400.0, 2000.0, 800.0, 500.0],
                    mips=[2500.0, 2500.0, 1500.0, 2500.0], ram=[870.0, 1740.0, 613.0, 870.0],
                    curve=None)
    out = CorralPolicy(parse_policy("corral")).decide(st, _hist(rows))
    moves = [d for d in out if isinstance(d, Migrate) and d.kind == "overload"]
    assert moves and moves[0].source == 0
    # the cheapest guest that fixes it alone: guest 2 (613 MB, lowest demand)
    assert moves[0].vm == 2 and moves[0].target == 1
    assert "forecast over capacity" in moves[0].reason
    assert not any(isinstance(d, SwitchOn) for d in out)


def test_corral_consolidates_only_when_it_pays_and_respects_dwell() -> None:
    rows = [[0.1] * 24, [0.1] * 24, [0.3] * 24]
    st = tiny_state([G5, G5], [[0, 1], [2]], [250.0, 250.0, 750.0], mips=[2500.0] * 3)
    out = CorralPolicy(parse_policy("corral")).decide(st, _hist(rows))
    assert [(d.vm, d.source, d.target) for d in out if isinstance(d, Migrate)] in (
        [(0, 0, 1), (1, 0, 1)], [(2, 1, 0)])
    assert any(isinstance(d, SwitchOff) for d in out)
    # a migration priced above what the host saves in an hour: nothing moves
    assert not CorralPolicy(parse_policy("corral:migration_wh=500")).decide(st, _hist(rows))
    # guests moved moments ago stay put (dwell)
    moved = tiny_state([G5, G5], [[0, 1], [2]], [250.0, 250.0, 750.0], mips=[2500.0] * 3)
    object.__setattr__(moved, "vm_last_move_s", np.array([250.0, 250.0, 250.0]))
    assert not CorralPolicy(parse_policy("corral")).decide(moved, _hist(rows))


def test_corral_keeps_disk_and_network_under_their_throughput_when_known() -> None:
    # host 0 is overloaded; host 1 has CPU room but its network would overflow with guest 2
    rows = [[0.9, 1.0] * 6, [0.8, 0.9] * 6, [0.5, 0.6] * 6, [0.2] * 12]
    st = tiny_state([G5, G5, G5], [[0, 1, 2], [3], []], [2400.0, 2000.0, 800.0, 500.0],
                    mips=[2500.0, 2500.0, 1500.0, 2500.0], ram=[870.0, 1740.0, 613.0, 870.0])
    object.__setattr__(st, "other_names", ("net",))
    object.__setattr__(st, "vm_other", np.array([[1e6], [1e6], [60e6], [80e6]]))
    object.__setattr__(st, "host_other", np.full((3, 1), 125e6))
    out = [d for d in CorralPolicy(parse_policy("corral")).decide(st, _hist(rows)) if isinstance(d, Migrate)]
    assert out and out[0].vm == 2 and out[0].target == 2  # woken: host 1 would carry 140 MB/s
