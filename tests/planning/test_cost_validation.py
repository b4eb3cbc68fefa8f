from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from corral.planning import CatalogError, CostParams, compare_costs, load_catalog, make_traceset, replay
from corral.planning.cost import power_at


def test_builtin_catalog_has_cloudsim_hosts() -> None:
    kinds = load_catalog()
    g4, g5 = kinds["ml110-g4"], kinds["ml110-g5"]
    assert g4.cpu_mhz == 2 * 1860 and g5.cpu_mhz == 2 * 2660 and g5.mem_bytes == 4 * 1024**3
    assert g5.power_w == (93.7, 97, 101, 105, 110, 116, 121, 125, 129, 133, 135)
    assert g4.power_w == (86, 89.4, 92.6, 96, 99.5, 102, 106, 108, 112, 114, 117)


def test_catalog_file_overrides_and_errors(tmp_path: Path) -> None:
    f = tmp_path / "hosts.toml"
    f.write_text(
        "[kinds.tiny]\ncores = 1\ncore_mhz = 1000\nmem_gb = 1\ndisk_mb_s = 10\nnet_mb_s = 10\n"
        "power_w = [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]\nprice = 100\n"
    )
    kinds = load_catalog(f)
    assert kinds["tiny"].cpu_mhz == 1000 and "ml110-g5" in kinds
    f.write_text(
        "[kinds.bad]\ncores = 1\ncore_mhz = 1000\nmem_gb = 1\ndisk_mb_s = 10\nnet_mb_s = 10\npower_w = [1, 2]\n"
    )
    with pytest.raises(CatalogError, match="power_w must be 11 numbers"):
        load_catalog(f)
    f.write_text("[kinds.bad\n")
    with pytest.raises(CatalogError, match="invalid TOML"):
        load_catalog(f)


def test_power_curve_interpolation() -> None:
    g5 = load_catalog()["ml110-g5"]
    assert power_at(g5, [0.0, 0.05, 1.0, 1.5]).tolist() == pytest.approx([93.7, 95.35, 135, 135])


def test_cost_comparison_by_hand() -> None:
    g5 = load_catalog()["ml110-g5"]
    params = CostParams(energy_price_per_kwh=0.1, pue=2.0, amortization_years=5, admin_per_machine_year=100,
                        rack_unit_per_year=10)  # fmt: skip
    before = np.full((5, 4), 0.1)  # five machines at 10 %: 97 W each
    after = np.full((1, 4), 0.5)  # one host at 50 %: 116 W
    c = compare_costs(g5, before, g5, after, params)
    assert c.before.mean_power_w == pytest.approx(5 * 97)
    assert c.before.energy_kwh_year == pytest.approx(5 * 97 * 8.76 * 2)
    assert c.after.energy == pytest.approx(116 * 8.76 * 2 * 0.1)
    assert c.after.amortization == pytest.approx(1200 / 5) and c.after.admin == 100 and c.after.rack == 10
    assert c.savings_per_year == pytest.approx(c.before.total - c.after.total)
    saved = c.before.operating - c.after.operating
    assert c.payback_years == pytest.approx(1200 / saved)


def test_replay_counts_overloads() -> None:
    g5 = load_catalog()["ml110-g5"]  # 5320 MHz
    cpu = np.array([[2000.0, 2000.0, 3000.0, 100.0], [2000.0, 2600.0, 3000.0, 100.0], [5.0, 5.0, 5.0, 5.0]])
    other = make_traceset(["a", "b", "new"], {"cpu": cpu})
    v = replay([["a", "b"], ["gone"]], g5, 0.85, ["cpu"], other, "day 2")
    # host 0: 4000 (75 %), 4600 (86 % > cap), 6000 (113 % > 100 %), 200
    assert v.over_cap_host_steps == 2 and v.over_100_host_steps == 1
    assert v.hosts_ever_over_cap == 1 and v.hosts_ever_over_100 == 1
    assert v.servers_missing == ("gone",) and v.servers_new == ("new",) and v.servers_matched == 2
    assert v.max_utilization == pytest.approx(6000 / 5320)
    assert v.over_cap_fraction == pytest.approx(2 / 8)


def test_catalog_toml_roundtrip(tmp_path: Path) -> None:
    from corral.planning.catalog import catalog_to_toml, parse_catalog

    kinds = load_catalog()
    again = parse_catalog(catalog_to_toml(kinds))
    assert again == kinds
