"""The Hosts page in headless Chromium, against a `corral serve` over the lab cluster's data folder (three lab
hosts beside the local one): the hosts with their states, meters and guests; the domain list with a Domain-0
per host; the maintenance switch moving a guest away; a migration from the page, aborted once, then followed
to its end on the other host. Screenshots go to artifacts/screenshots/.

Here rather than in tests/web so that it shares the session's one lab cluster with the other cluster tests;
Chromium and the page come from tests/web/conftest.py, as for the other browser tests."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import tests.web.conftest as web
from corral.core.spec import GuestSpec, LoadSpec
from corral.services.users import UserStore, users_path
from tests.cluster.conftest import Cluster
from tests.web.conftest import PASSWORD, USER, shot, wait_js

pytestmark = [pytest.mark.libvirt, pytest.mark.cluster, pytest.mark.guest]
NO_SIDEWAYS_SCROLL = "() => document.documentElement.scrollWidth <= window.innerWidth + 1"
browser, page, login = web.browser, web.page, web.login  # the browser tests' fixtures, over this module's server


@pytest.fixture(scope="module")
def web_user(cluster: Cluster) -> tuple[str, str]:
    """The web user, in the cluster's users file."""
    store = UserStore(users_path(cluster.corral.settings.data_dir))
    if not store.exists(USER):
        store.add(USER, PASSWORD)
    return USER, PASSWORD


@pytest.fixture(scope="module")
def server(cluster: Cluster, web_user: tuple[str, str],
           running_serve: Callable[..., contextlib.AbstractContextManager[str]]) -> Iterator[str]:
    """`corral serve` over the cluster's data folder and configuration (the hosts it registered)."""
    with running_serve(Path(cluster.env["CORRAL_DATA_DIR"]), Path(cluster.env["CORRAL_CONFIG"])) as base:
        yield base


@pytest.fixture(scope="module")
def guest(cluster: Cluster) -> Iterator[str]:
    """A tiny guest on lab2, burning 20 % of its vCPU."""
    name = cluster.name("webmig")
    cluster.corral.guests.create(GuestSpec(name, "tiny", memory_mib=128, load=LoadSpec(cpu_pct=20)), host="lab2",
                                 start=True, wait=True)
    yield name
    if cluster.corral.hosts.owner(name) is not None:
        cluster.corral.guests.delete(name)


def card(host: str) -> str:
    return f"#hosts .host-card[data-host='{host}']"


def open_hosts(page: Any, login: Callable[[Any], None]) -> None:
    login(page)
    page.click("nav a[data-nav=hosts]")
    page.wait_for_selector(f"{card('lab3')} .meter[data-meter=memory]")


def test_the_hosts_with_their_states(page: Any, login: Callable[[Any], None], cluster: Cluster,
                                     browser: Any, server: str) -> None:
    c = cluster.corral
    login(page)
    names = ["local", *(h.name for h in cluster.hosts)]
    hosts = page.eval_on_selector_all("#domains tr[data-name='Domain-0']", "rows => rows.map(r => r.dataset.host)")
    assert hosts == names  # a Domain-0 per host, told apart by its host
    page.wait_for_selector("tr[data-name='Domain-0'][data-host='lab1'] svg.spark polyline", timeout=40_000)
    shot(page, "domains-cluster")
    page.click("tr[data-name='Domain-0'][data-host='lab2'] a")
    page.wait_for_selector("h1:has-text('Domain-0 of lab2')")
    page.wait_for_selector("#facts dd")
    assert f"{c.hosts.get('lab2').libvirt.node_info().cores} cores" in page.inner_text("#facts")

    page.click("nav a[data-nav=hosts]")
    page.wait_for_selector(f"{card('lab3')} .meter[data-meter=memory]")
    states = page.eval_on_selector_all("#hosts .host-card",
                                       "cards => cards.map(c => [c.dataset.host, c.dataset.state])")
    assert states == [[name, "up"] for name in names]
    assert page.is_visible(f"{card('lab1')} .meter[data-meter=cpu] .cap")  # CPU against the cap
    assert page.is_visible(f"{card('lab1')} button[data-action=standby]")  # a power driver: standby
    assert not page.is_visible(f"{card('local')} button[data-action=standby]")  # none
    c.hosts.set_state("lab2", maintenance=True)
    c.hosts.set_state("lab3", standby=True)  # the state only: the page shows what the registry says
    try:
        page.wait_for_selector(f"{card('lab2')}[data-state=maintenance] input[name=maintenance]:checked",
                               timeout=15_000)
        page.wait_for_selector(f"{card('lab3')}[data-state=standby] button[data-action=wake]", timeout=15_000)
        shot(page, "hosts-states", full_page=True)
    finally:
        c.hosts.set_state("lab2", maintenance=False)
        c.hosts.set_state("lab3", standby=False)
    page.wait_for_selector(f"{card('lab3')}[data-state=up]", timeout=15_000)

    for name, size in (("hosts-laptop", {"width": 1366, "height": 768}),
                       ("hosts-phone", {"width": 390, "height": 844})):
        context = browser.new_context(viewport=size, base_url=server, is_mobile=size["width"] < 500,
                                      device_scale_factor=2 if size["width"] < 500 else 1)
        try:
            other = context.new_page()
            open_hosts(other, login)
            assert other.evaluate(NO_SIDEWAYS_SCROLL), name
            shot(other, name, full_page=True)
        finally:
            context.close()


def test_the_maintenance_switch_moves_a_guest_away(page: Any, login: Callable[[Any], None], cluster: Cluster,
                                                   guest: str) -> None:
    c = cluster.corral
    others = [h.name for h in cluster.hosts if c.hosts.get(h.name).spec.storage != "shared"]
    for name in others:  # the guest goes to a host that shares storage
        c.hosts.set_state(name, maintenance=True)
    open_hosts(page, login)
    page.wait_for_selector(f"{card('lab2')} li.guest[data-name='{guest}'][data-state=running]")
    page.click(f"{card('lab2')} input[name=maintenance]")
    page.wait_for_selector("#confirm[open]")
    assert "lab2" in page.inner_text("#confirm-text") and "1 guest(s)" in page.inner_text("#confirm-text")
    page.click("#confirm-ok")
    try:
        page.wait_for_selector(f"{card('lab2')} .state.busy:has-text('evacuating')")
        page.wait_for_selector(f"{card('lab2')} .outcome.ok", timeout=180_000)
        assert f"1 guest(s) moved away: {guest} → " in page.inner_text(f"{card('lab2')} .outcome")
        page.wait_for_selector(f"{card('lab2')}[data-state=maintenance]")
        where = c.guests.info(guest).host
        assert where != "lab2" and c.guests.info(guest).state == "running"
        page.wait_for_selector(f"{card(where)} li.guest[data-name='{guest}']")
        assert not page.is_visible(f"{card('lab2')} li.guest[data-name='{guest}']")
        shot(page, "hosts-maintenance", full_page=True)
        page.click(f"{card('lab2')} input[name=maintenance]")  # off: no question asked
        page.wait_for_selector(f"{card('lab2')}[data-state=up] .outcome.ok:has-text('maintenance off')")
    finally:
        for name in ["lab2", *others]:
            c.hosts.set_state(name, maintenance=False)


def test_a_migration_from_the_page_aborted_then_completed(page: Any, login: Callable[[Any], None],
                                                          cluster: Cluster, guest: str) -> None:
    c = cluster.corral
    source = c.guests.info(guest).host
    dest = next(h for h in ("lab1", "lab2", "lab3") if h != source)
    open_hosts(page, login)
    row = f"{card(source)} li.guest[data-name='{guest}']"
    migration = f"#migrations .migration[data-guest='{guest}']"

    def start(bandwidth: int) -> None:
        page.click(f"{row} button[data-action=migrate]")
        page.wait_for_selector("#migrate-dialog[open]")
        page.select_option("#migrate-dialog select[name=dest]", dest)
        page.fill("#migrate-dialog input[name=bandwidth]", str(bandwidth))
        assert f"moves from {source} to {dest}: live" in page.inner_text("#migrate-summary")
        page.click("#migrate-submit")
        page.wait_for_selector(f"{migration}[data-state=running]")

    # Slowly (1 MiB/s), then aborted from the page: it stays where it was.
    start(1)
    page.wait_for_selector(f"{migration}[data-state=running] .detail:has-text('left')", timeout=60_000)
    page.wait_for_selector(f"{row} .state.busy:has-text('migrating → {dest}')")
    shot(page, "migration-progress")
    page.click(f"{migration} button[data-action=abort]")
    page.wait_for_selector(f"{migration}[data-state=aborted] .result.bad", timeout=60_000)
    assert f"runs on {source}" in page.inner_text(f"{migration}[data-state=aborted] .result")
    assert c.guests.info(guest).host == source and not c.hosts.get(dest).libvirt.exists(guest)

    # Then for real: progress over the WebSocket, then the result line, and the guest on the other host.
    page.wait_for_selector(f"{row} button[data-action=migrate]:not([disabled])", timeout=15_000)
    start(4)
    seen = wait_js(page, f"""() => {{ const m = document.querySelector("{migration}[data-state=running] .detail");
        return m && m.textContent.includes("left") ? m.textContent : null; }}""", 60, "the migration's progress")
    assert "pass" in seen and "/s" in seen
    page.wait_for_selector(f"{migration}[data-state=succeeded] .result.ok", timeout=180_000)
    result = page.inner_text(f"{migration}[data-state=succeeded] .result")
    assert f"{guest} moved from {source} to {dest} in " in result and "downtime" in result
    assert c.guests.info(guest).host == dest and c.guests.info(guest).state == "running"
    page.wait_for_selector(f"{card(dest)} li.guest[data-name='{guest}']", timeout=15_000)
    shot(page, "migration-done", full_page=True)


def test_the_balancer_panel_switches_mode_and_applies_its_recommendations(
        page: Any, login: Callable[[Any], None], cluster: Cluster, guest: str) -> None:
    """The balancer's mode switched from the page, its recommendations (two guests on two hosts: one moves,
    the emptied hosts go to standby) applied by a click, the timeline, and the destination's load chart
    against its cap with the migration marked. Hosts put in standby are woken at the end."""
    c = cluster.corral
    where = c.guests.info(guest).host
    other = next(h for h in ("lab1", "lab3", "lab2") if h != where)
    second = cluster.name("webbal")
    c.guests.create(GuestSpec(second, "tiny", memory_mib=128, load=LoadSpec(cpu_pct=10)), host=other, start=True,
                    wait=True)
    try:
        open_hosts(page, login)
        page.wait_for_selector("#balancer-mode button[data-mode=recommend].active")
        page.click("#balancer-mode button[data-mode=off]")
        page.wait_for_selector("#balancer-mode button[data-mode=off].active")
        assert c.balancer.mode == "off"  # kept in the data folder: every process sees it
        page.click("#balancer-mode button[data-mode=recommend]")
        page.wait_for_selector("#balancer-mode button[data-mode=recommend].active")
        assert c.balancer.mode == "recommend"
        page.wait_for_selector("#recommendations h3:has-text('Recommended now')", timeout=90_000)
        assert page.is_visible("#recommendations li[data-kind=move]")
        shot(page, "balancer-recommendations", full_page=True)
        standbys = page.locator("#recommendations li[data-kind=standby]").count()
        applied_at = time.time()
        page.click("#balancer-apply")
        page.wait_for_selector("#confirm[open]")
        page.click("#confirm-ok")
        page.wait_for_selector("#timeline li.entry[data-kind=move] .result.ok", timeout=240_000)
        moved = [e for e in c.balancer.timeline(50) if e.kind == "move" and e.outcome.startswith("done")]
        assert moved and moved[0].dest is not None
        dest = moved[0].dest
        assert {c.guests.info(guest).host, c.guests.info(second).host} == {dest}  # packed on one host
        assert any(t.standby for t in c.hosts)
        chart = f"{card(dest)} .host-load"
        # (a line has no area: Playwright calls it hidden, so it is waited for as attached)
        page.wait_for_selector(f"{chart} svg line.cap-line", state="attached", timeout=30_000)
        page.wait_for_selector(f"{chart} svg line.mark", state="attached", timeout=30_000)
        assert moved[0].guest in page.eval_on_selector(f"{chart} svg line.mark title", "t => t.textContent")
        shot(page, "balancer-applied", full_page=True)
        # The apply goes on after the moves: its standbys are done before the hosts are woken below.
        deadline = time.time() + 120
        while time.time() < deadline and sum(1 for e in c.balancer.timeline(50)
                                              if e.kind == "standby" and e.time >= applied_at) < standbys:
            time.sleep(1)
    finally:
        for target in list(c.hosts):
            if target.standby:
                c.host.wake(target.name)
        c.guests.delete(second)
