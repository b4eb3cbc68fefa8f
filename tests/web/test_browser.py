"""The web UI end to end in headless Chromium against a real `corral serve`: log in, the domain list, the
create form and its admission guard, a guest's life (one boot): start, details and graphs, the serial console
(xterm.js), the display (noVNC), shut down, delete. Screenshots go to artifacts/screenshots/."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from corral.services.context import Corral

from .conftest import shot, unique, wait_js

pytestmark = pytest.mark.libvirt

TERMINAL_TEXT = """() => { const c = window.corralConsole; if (!c) return null; const b = c.term.buffer.active;
  const lines = []; for (let i = 0; i < b.length; i++) lines.push(b.getLine(i).translateToString(true));
  return lines.join("\\n"); }"""


def test_login_refuses_a_wrong_password_then_lets_the_user_in(page: Any, web_user: tuple[str, str]) -> None:
    page.goto("/")
    page.wait_for_selector("#login-form")
    shot(page, "login")
    page.fill("input[name=user]", web_user[0])
    page.fill("input[name=password]", "not the password")
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#login-form .error-text:has-text('wrong user name or password')")
    page.fill("input[name=password]", web_user[1])
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#domains tbody tr[data-name='Domain-0']")
    assert page.inner_text("#who") == f"({web_user[0]})"
    # A reload keeps the session (cookie) and the CSRF token (sessionStorage); logging out ends both.
    page.reload()
    page.wait_for_selector("#domains tbody tr[data-name='Domain-0']")
    page.click("#logout")
    page.wait_for_selector("#login-form")
    page.goto("/#/create")
    page.wait_for_selector("#login-form")


def test_domain_list_and_the_admission_guard_in_the_create_form(page: Any, login: Callable[[Any], None]) -> None:
    login(page)
    names = page.eval_on_selector_all("#domains tbody tr", "rows => rows.map(r => r.dataset.name)")
    assert names[0] == "Domain-0"
    page.wait_for_selector("tr[data-name='Domain-0'] svg.spark polyline", timeout=30_000)  # live CPU from the WebSocket
    shot(page, "domains")
    page.click("#new-guest")
    page.wait_for_selector("#create-form select[name=image] option[value=tiny]", state="attached")
    assert page.input_value("select[name=image]") == "tiny"  # the built-in image first, when there are several
    page.fill("input[name=name]", unique("big"))
    page.fill("input[name=memory]", str(64 * 1024 * 1024))  # 64 TiB: more than any test host
    page.wait_for_selector("#guard.refused")
    assert "memory" in page.inner_text("#guard")
    assert page.is_disabled("#create-submit")
    shot(page, "create-refused")
    page.fill("input[name=memory]", "160")
    page.wait_for_selector("#guard.fits")
    assert page.is_enabled("#create-submit")


def test_phone_layout(browser: Any, server: str, login: Callable[[Any], None]) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, base_url=server, is_mobile=True,
                                  has_touch=True, device_scale_factor=2)
    try:
        page = context.new_page()
        login(page)
        assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1")
        assert page.evaluate("() => getComputedStyle(document.querySelector('#domains thead')).display") == "none"
        page.wait_for_selector("tr[data-name='Domain-0'] svg.spark polyline", timeout=30_000)
        shot(page, "domains-phone", full_page=True)
        page.goto("/#/domain/Domain-0")
        page.wait_for_selector("#facts dt")
        page.wait_for_selector(".chart[data-chart=cpu] polyline.series", timeout=30_000)
        assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1")
        shot(page, "host-phone", full_page=True)
    finally:
        context.close()


@pytest.mark.guest
def test_a_guest_life_in_the_browser(page: Any, login: Callable[[Any], None], corral_session: Corral) -> None:
    guest = unique("life")
    row = f"#domains tr[data-name='{guest}']"
    login(page)

    # Create (without starting) through the form: the guard answers first.
    page.click("#new-guest")
    page.wait_for_selector("#create-form select[name=image] option[value=tiny]", state="attached")
    page.fill("input[name=name]", guest)
    page.select_option("select[name=image]", "tiny")
    page.fill("input[name=memory]", "160")
    page.fill("input[name=load_cpu]", "5")
    page.uncheck("input[name=start]")
    page.wait_for_selector("#guard.fits:has-text('on this host')")
    page.click("#create-submit")
    page.wait_for_selector("#detail-state[data-state='shut-off']")
    assert corral_session.guests.info(guest).load == "cpu=5,disk=0,net=0"

    # Start it from the list, like virt-manager's main window.
    page.click("nav a[data-nav=domains]")
    page.click(f"{row} button[data-action=start]")
    page.wait_for_selector(f"{row}[data-state=running]", timeout=60_000)
    page.wait_for_selector(f"{row} svg.spark polyline", timeout=30_000)
    shot(page, "domains-running")

    # Details: facts and graphs, live from the WebSocket on top of the history.
    page.click(f"{row} a")
    page.wait_for_selector("#facts dd")
    page.wait_for_selector(".chart[data-chart=cpu] polyline.series", timeout=30_000)
    assert "VNC on 127.0.0.1:" in page.inner_text("#facts")
    shot(page, "details", full_page=True)
    page.click("#range button[data-range='1h']")
    page.wait_for_selector("#range button.active[data-range='1h']")

    # The serial console in xterm.js: wait for the shell, then run a command.
    page.click(".tabs a[data-tab=console]")
    wait_js(page, "() => document.querySelector('#console-status')?.textContent.startsWith('Serial console')",
            what="the console WebSocket")
    deadline = time.monotonic() + 120
    while not any(line.rstrip().endswith("#") for line in (page.evaluate(TERMINAL_TEXT) or "").splitlines()):
        assert time.monotonic() < deadline, f"no shell prompt on the console: {page.evaluate(TERMINAL_TEXT)!r}"
        page.click("#terminal")
        page.keyboard.press("Enter")
        time.sleep(1)
    page.keyboard.type("echo hi-$((6*7))")
    page.keyboard.press("Enter")
    wait_js(page, TERMINAL_TEXT.replace('return lines.join("\\n");',
                                        'return lines.some((l) => l.trim() === "hi-42");'), what="hi-42")
    shot(page, "console")

    # The display in noVNC: a canvas that shows something (the BIOS text), not one flat colour.
    page.click(".tabs a[data-tab=display]")
    wait_js(page, "() => document.querySelector('#vnc-status')?.textContent.startsWith('Display of')",
            what="the VNC connection")
    wait_js(page, """() => { const c = document.querySelector('#vnc canvas');
      if (!c || !c.width || !c.height) return false;
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; const seen = new Set();
      for (let i = 0; i < d.length && seen.size < 2; i += 4 * 97) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
      return seen.size > 1; }""", what="a non-blank VNC canvas")
    shot(page, "display")

    # Shut down (asks first), then delete (asks first).
    page.click("nav a[data-nav=domains]")
    page.click(f"{row} button[data-action=shutdown]")
    page.wait_for_selector("#confirm[open]")
    assert "Shut down" in page.inner_text("#confirm-text")
    shot(page, "confirm-shutdown")
    page.click("#confirm-ok")
    page.wait_for_selector(f"{row}[data-state=shut-off]", timeout=120_000)
    page.click(f"{row} button[data-action=delete]")
    page.wait_for_selector("#confirm[open]")
    page.click("#confirm .secondary")  # cancel: nothing happens
    time.sleep(0.5)
    assert corral_session.libvirt.exists(guest)
    page.click(f"{row} button[data-action=delete]")
    page.click("#confirm-ok")
    page.wait_for_selector(row, state="detached", timeout=60_000)
    assert not corral_session.libvirt.exists(guest)


def test_a_plan_and_its_report_in_the_browser(page: Any, login: Callable[[Any], None],
                                              corral_session: Corral) -> None:
    from corral.planning import demo_traceset
    from corral.services.plans import PlanRequest

    name = unique("plan")
    outcome = corral_session.plans.plan(demo_traceset(), PlanRequest(host_kind="legacy-1u", time_budget_s=0.5))
    corral_session.plans.save(name, outcome.data)
    try:
        login(page)
        page.click("nav a[data-nav=plans]")
        page.click(f"#plan-list a[data-plan='{name}']")
        page.wait_for_selector("#plan-summary:has-text('5 servers -> 1 x legacy-1u host')")
        frame = page.frame_locator("#plan-report")
        frame.locator("svg").first.wait_for()  # the report's charts, drawn inside the console's page
        assert frame.locator("h2:has-text('Cost')").count() == 1
        shot(page, "plan", full_page=False)
    finally:
        (corral_session.plans.folder / f"{name}.json").unlink(missing_ok=True)


def test_snapshots_and_clone_in_the_browser(page: Any, login: Callable[[Any], None],
                                            corral_session: Corral) -> None:
    from corral.core.spec import GuestSpec

    guest, copy = unique("snap"), unique("copy")
    corral_session.guests.create(GuestSpec(guest, "tiny", memory_mib=128))  # shut off: no boot needed
    try:
        login(page)
        page.goto(f"/#/domain/{guest}/snapshots")
        page.wait_for_selector("#snapshots:has-text('No snapshots')")
        page.fill("input[name=snapshot]", "before-upgrade")
        page.click("#snapshot-form button[type=submit]")
        page.wait_for_selector("#snapshots tr[data-snapshot='before-upgrade']")
        assert [s.name for s in corral_session.guests.snapshot_list(guest)] == ["before-upgrade"]
        shot(page, "snapshots")
        page.click("#snapshots tr[data-snapshot='before-upgrade'] button[data-action=delete-snapshot]")
        page.click("#confirm-ok")
        page.wait_for_selector("#snapshots:has-text('No snapshots')")
        assert corral_session.guests.snapshot_list(guest) == []
        page.fill("input[name=clone]", copy)
        page.click("#clone-form button[type=submit]")
        page.wait_for_selector(f"h1:has-text('{copy}')")
        assert corral_session.libvirt.exists(copy)
    finally:
        for name in (copy, guest):
            if corral_session.libvirt.exists(name):
                corral_session.guests.delete(name)
