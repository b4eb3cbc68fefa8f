"""The plan report in headless Chromium on the real traces (issue 15, item 1): PlanetLab 20110303 and the
Bitbrains week planned with the defaults, kept in the plan library, shown on the Plans page: the headline
names the resource that binds, the host-kind comparison is visible with its cheapest kind marked, and the
server -> host table downloads as CSV. Screenshots go to the test's temporary folder."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from corral.services.context import Corral
from tests.planning.conftest import BITBRAINS, PLANETLAB
from tests.planning.pngcheck import decode_png

from .conftest import need, unique

pytestmark = pytest.mark.libvirt

CASES = {
    "planetlab": (PLANETLAB / "20110303.tar.gz", "1052 servers -> ", "memory (assumed: CloudSim VM sizes) binds"),
    "bitbrains": (BITBRAINS, "40 of 100 servers -> 7 x ml110-g5 hosts", "memory binds; 60 fit no ml110-g5 host"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_report_shows_what_binds_and_which_hosts_to_buy(
    case: str, page: Any, login: Callable[[Any], None], corral_session: Corral, tmp_path: Path
) -> None:
    from corral.services.plans import PlanRequest

    traces, start, binds = CASES[case]
    need(traces.exists(), f"the traces at {traces}")
    name = unique(case)
    outcome = corral_session.plans.make(PlanRequest(traces=[traces], time_budget_s=0.5))  # default kind and resources
    data = outcome.data
    corral_session.plans.save(name, data)
    try:
        login(page)
        page.click("nav a[data-nav=plans]")
        page.click(f"#plan-list a[data-plan='{name}']")
        summary = page.locator("#plan-summary p").first
        summary.wait_for()
        assert summary.inner_text().startswith(start) and binds in summary.inner_text()

        frame = page.frame_locator("#plan-report")
        headline = frame.locator("h1#headline")
        headline.wait_for()
        assert "binds" in headline.inner_text() and "memory" in headline.inner_text()
        for r in data["resources"]:  # every planned resource's utilization, before -> after
            assert "→" in frame.locator(f"#cards .card[data-resource='{r}']").inner_text()

        table = frame.locator("table#host-kinds")
        table.scroll_into_view_if_needed()
        assert table.is_visible()
        rows = frame.locator("table#host-kinds tr[data-kind]")
        assert rows.count() == len(data["kinds"]["options"]) >= 5
        cheapest = frame.locator("table#host-kinds tr.cheapest")
        assert cheapest.count() == 1 and cheapest.locator(".mark").is_visible()
        assert "★ cheapest" in cheapest.inner_text()
        best = next(o["kind"] for o in data["kinds"]["options"] if o["cheapest"])
        assert cheapest.get_attribute("data-kind") == best
        assert frame.locator(f"table#host-kinds tr[data-kind='{data['host_kind']['name']}']").inner_text().count(
            "planned") == 1

        shot_page, shot_table = tmp_path / f"plan-{case}.png", tmp_path / f"host-kinds-{case}.png"
        page.screenshot(path=str(shot_page))
        table.screenshot(path=str(shot_table))
        px = decode_png(shot_table).astype(np.int64)
        green = int((np.abs(px[:, :, :3] - np.array([0xE8, 0xF5, 0xE9])).max(axis=2) <= 6).sum())
        assert green > 2_000, green  # the cheapest row's highlight is on screen
        assert decode_png(shot_page).shape[:2] == (800, 1280)

        # the server -> host table, downloaded from the link beside the summary
        with page.expect_download() as download:
            page.click("#plan-csv")
        text = Path(download.value.path()).read_text()
        assert download.value.suggested_filename == f"{name}-servers.csv"
        placed: dict[int, list[str]] = {}
        for row in csv.DictReader(io.StringIO(text)):
            if row["host"]:
                placed.setdefault(int(row["host"]), []).append(row["server"])
        assert [placed[h] for h in sorted(placed)] == [h["servers"] for h in data["hosts"]]
    finally:
        (corral_session.plans.folder / f"{name}.json").unlink(missing_ok=True)
