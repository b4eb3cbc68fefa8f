"""The web console's rough edges (issue 15, item 7), in headless Chromium against a real `corral serve`: every page
at a laptop's 1366x768 and a phone's 390x844 with its tabs reachable, the host's name in the top bar, charts whose
axes have round ticks and whose two lines both show, the display's full screen, clipboard and special keys (on a
real guest: Ctrl+Alt+Del reboots it), the plan report framed at its own height, and the create form's disk size,
ISO and image import against the API. A guest's addresses (item 3) on its details page. Screenshots go to
artifacts/screenshots/."""

from __future__ import annotations

import itertools
import json
import math
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.core.spec import GuestSpec
from corral.services.context import Corral

from .conftest import shot, unique, wait_js

pytestmark = pytest.mark.libvirt

SIZES = {"laptop": (1366, 768), "phone": (390, 844)}
GIB = 1024**3

# Is the element really on screen: inside the viewport, not hidden or covered (what is at its centre is it)?
ON_SCREEN = """(el) => { const r = el.getBoundingClientRect(); if (!r.width || !r.height) return false;
  if (r.left < -0.5 || r.right > window.innerWidth + 0.5 || r.top < 0 || r.bottom > window.innerHeight) return false;
  const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
  return !!hit && (hit === el || el.contains(hit) || hit.contains(el)); }"""


@pytest.fixture
def sized(browser: Any, server: str, login: Callable[[Any], None]) -> Iterator[Callable[[str], Any]]:
    """`sized("phone")`: a logged-in page at that size (a phone's is a touch screen); page errors fail the test."""
    contexts: list[Any] = []
    errors: list[str] = []

    def make(size: str) -> Any:
        width, height = SIZES[size]
        phone = size == "phone"
        context = browser.new_context(viewport={"width": width, "height": height}, base_url=server,
                                      is_mobile=phone, has_touch=phone, device_scale_factor=2 if phone else 1)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.set_default_timeout(20_000)
        login(page)
        return page

    try:
        yield make
    finally:
        for context in contexts:
            context.close()
    assert not errors, f"errors in the page: {errors}"


def reachable(page: Any, selector: str) -> list[str]:
    """Scroll each element matching `selector` into view (its row scrolls sideways if it must); the texts of
    those that then are not fully on screen."""
    missing = []
    for handle in page.query_selector_all(selector):
        handle.evaluate("(el) => el.scrollIntoView({ block: 'nearest', inline: 'nearest' })")
        time.sleep(0.05)
        if not handle.evaluate(ON_SCREEN):
            missing.append(handle.inner_text())
    return missing


def no_sideways_scroll(page: Any) -> bool:
    return bool(page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1"))


@pytest.fixture(scope="module")
def parked(corral_session: Corral) -> Iterator[str]:
    """A shut-off guest: its details page has every tab (nothing boots)."""
    guest = unique("tabs")
    corral_session.guests.create(GuestSpec(guest, "tiny", memory_mib=128))
    yield guest
    if corral_session.libvirt.exists(guest):
        corral_session.guests.delete(guest)


@pytest.fixture(scope="module")
def booted(corral_session: Corral) -> Iterator[str]:
    """A running tiny guest on the corral network (its display, its lease)."""
    guest = unique("vnc")
    corral_session.guests.create(GuestSpec(guest, "tiny", memory_mib=128), start=True, wait=True)
    yield guest
    if corral_session.libvirt.exists(guest):
        corral_session.guests.delete(guest)


# --- every page, both sizes -------------------------------------------------------------------------------
@pytest.mark.parametrize("size", SIZES)
def test_every_page_fits_and_its_tabs_are_reachable(sized: Callable[[str], Any], corral_session: Corral,
                                                     parked: str, size: str) -> None:
    page = sized(size)
    hostname = corral_session.libvirt.node_info().hostname
    pages = {"domains": ("/#/", "#domains tbody tr"), "hosts": ("/#/hosts", ".host-card"),
             "create": ("/#/create", "#create-form"), "plans": ("/#/plans", "#plan-list li"),
             "host": ("/#/domain/Domain-0", "#facts dt"), "guest": (f"/#/domain/{parked}", "#facts dt"),
             "guest-snapshots": (f"/#/domain/{parked}/snapshots", "#snapshots")}
    for label, (path, ready) in pages.items():
        page.goto(path)
        page.wait_for_selector(ready)
        # The host's name is in the top bar, on screen, at both sizes.
        page.wait_for_selector(f"#host-name:has-text('{hostname}')")
        page.evaluate("() => window.scrollTo(0, 0)")
        assert page.eval_on_selector("#host-name", ON_SCREEN), f"{label}: the host's name is not on screen"
        assert no_sideways_scroll(page), f"{label} at {size} scrolls sideways"
        # Every link of the top bar can be reached (on a phone its row scrolls sideways).
        assert reachable(page, "#nav a, #logout") == [], f"{label}: top-bar links cut at {size}"
        if label.startswith("guest"):
            tabs = page.eval_on_selector_all(".tabs a", "els => els.map(e => e.dataset.tab)")
            assert tabs == ["overview", "console", "display", "snapshots"]
            assert reachable(page, ".tabs a") == [], f"{label}: tabs cut at {size}"
            assert no_sideways_scroll(page)
        page.evaluate("() => { window.scrollTo(0, 0); document.querySelector('#nav').scrollLeft = 0; }")
        shot(page, f"edges-{label}-{size}", full_page=True)
    # On the phone, the last tab is reached by scrolling the tab row (not cut off, not wrapped away), and works.
    page.goto(f"/#/domain/{parked}")
    page.wait_for_selector("#facts dt")
    last = page.query_selector(".tabs a[data-tab=snapshots]")
    last.scroll_into_view_if_needed()
    last.click()
    page.wait_for_selector(".tabs a.active[data-tab=snapshots]")
    page.wait_for_selector("#snapshots")
    assert page.eval_on_selector(".tabs a.active", ON_SCREEN)  # the active tab is brought into view
    if size == "phone":
        assert page.eval_on_selector(".tabs", "el => getComputedStyle(el).overflowX") == "auto"
        assert page.eval_on_selector(".tabs", "el => el.scrollWidth > el.clientWidth"), "the tabs fit: nothing to test"


# --- charts -----------------------------------------------------------------------------------------------
AXIS_CASES = """async () => {
  const { valueAxis, timeTicks, niceStep } = await import("/ui/js/charts.js");
  const out = {};
  for (const [key, max, opts] of [["zero", 0, { kind: "bytes", suffix: "/s" }], ["bytes84", 84, { kind: "bytes" }],
      ["kib", 1500, { kind: "bytes", suffix: "/s" }], ["mib", 24.3 * 1048576, { kind: "bytes" }],
      ["mem", 80 * 1048576, { kind: "bytes" }], ["pct", 3.2, { kind: "pct", fixedMax: 100 }],
      ["num", 0.37, {}], ["big", 987654321, { kind: "bytes", suffix: "/s" }]]) {
    const axis = valueAxis(max, opts);
    out[key] = { top: axis.top, step: axis.step, unit: axis.unit, labels: axis.ticks.map((t) => t.label),
                 values: axis.ticks.map((t) => t.value) };
  }
  out.steps = [0.3, 7, 21, 260, 0.0004].map(niceStep);
  const t0 = Date.UTC(2024, 0, 1, 12, 3, 17) / 1000;
  for (const [key, span] of [["live", 300], ["hour", 3600], ["day", 86400], ["week", 7 * 86400]]) {
    out[key] = timeTicks(t0, t0 + span, 6);
  }
  out.offset = new Date(t0 * 1000).getTimezoneOffset() * 60;
  return out;
}"""


def round_step(step: float) -> bool:
    """1, 2, 2.5 or 5 times a power of ten."""
    mantissa = step / 10 ** math.floor(math.log10(step))
    return any(abs(mantissa - nice) < 1e-9 for nice in (1, 2, 2.5, 5))


def test_chart_axes_have_round_ticks(page: Any, login: Callable[[Any], None]) -> None:
    login(page)
    axes = page.evaluate(AXIS_CASES)
    assert axes["steps"] == [0.5, 10, 25, 500, 0.0005]
    assert axes["zero"]["labels"] == ["0 KiB/s", "0.25 KiB/s", "0.5 KiB/s", "0.75 KiB/s", "1 KiB/s"]
    assert axes["bytes84"]["labels"] == ["0 B", "25 B", "50 B", "75 B", "100 B"]
    assert axes["kib"]["labels"] == ["0 KiB/s", "0.5 KiB/s", "1 KiB/s", "1.5 KiB/s"]
    assert axes["mib"]["labels"] == ["0 MiB", "10 MiB", "20 MiB", "30 MiB"]
    assert axes["mem"]["labels"] == ["0 MiB", "20 MiB", "40 MiB", "60 MiB", "80 MiB"]
    assert axes["pct"]["labels"] == ["0 %", "25 %", "50 %", "75 %", "100 %"]
    assert axes["num"]["labels"] == ["0", "0.1", "0.2", "0.3", "0.4"]
    assert axes["big"]["labels"] == ["0 MiB/s", "250 MiB/s", "500 MiB/s", "750 MiB/s", "1000 MiB/s"]
    for key in ("zero", "bytes84", "kib", "mib", "mem", "pct", "num", "big"):
        axis = axes[key]
        assert round_step(axis["step"]), (key, axis)
        assert axis["values"][0] == 0 and axis["values"][-1] == pytest.approx(axis["top"])
    # Time ticks fall on round times of the local clock: every minute (live), 15 min, 6 h, 1 day.
    for key, step in (("live", 60), ("hour", 900), ("day", 6 * 3600), ("week", 2 * 86400)):
        ticks = axes[key]
        assert ticks["step"] == step and 2 <= len(ticks["ticks"]) <= 6, (key, ticks)
        for tick in ticks["ticks"]:
            assert (tick["time"] - axes["offset"]) % step == 0, (key, tick)
    assert re.fullmatch(r"\d\d:\d\d( [AP]M)?", axes["hour"]["ticks"][0]["label"])

    # The details page's charts use them: every value axis starts at 0 in round, even steps, above the data.
    page.goto("/#/domain/Domain-0")
    # (attached: a line along zero has an empty bounding box, which Playwright calls invisible)
    page.wait_for_selector(".chart[data-chart=net] polyline.series", state="attached", timeout=30_000)
    charts = page.eval_on_selector_all(".chart > svg", """svgs => svgs.map((svg) => ({
      step: Number(svg.dataset.step), unit: Number(svg.dataset.unit), timeStep: Number(svg.dataset.timeStep),
      values: [...svg.querySelectorAll("text[data-axis=y]")].map((t) => Number(t.dataset.value)),
      labels: [...svg.querySelectorAll("text[data-axis=y]")].map((t) => t.textContent),
      times: [...svg.querySelectorAll("text[data-axis=x]")].map((t) => Number(t.dataset.time)) }))""")
    assert len(charts) == 4
    for chart in charts:
        values, step, unit = chart["values"], chart["step"], chart["unit"]
        assert values[0] == 0 and len(values) >= 3 and round_step(step / unit), chart
        for previous, value in itertools.pairwise(values):
            assert value - previous == pytest.approx(step), chart
        for label, value in zip(chart["labels"], values, strict=True):  # "20 MiB": the value in its unit
            assert float(label.split()[0]) == pytest.approx(value / unit), chart
        assert chart["times"], chart
        for time_ in chart["times"]:
            assert (time_ - axes["offset"]) % chart["timeStep"] == 0, chart
    shot(page, "edges-charts")


def test_both_lines_of_a_two_line_chart_show(page: Any, login: Callable[[Any], None]) -> None:
    login(page)
    page.goto("/#/domain/Domain-0")
    page.wait_for_selector(".chart[data-chart=disk] polyline.series[data-series='1']", state="attached",
                           timeout=30_000)
    for chart in ("mem", "disk", "net"):
        lines = page.eval_on_selector_all(f".chart[data-chart={chart}] polyline.series", """els => els.map((e) => ({
          series: e.dataset.series, stroke: e.getAttribute("stroke"),
          dash: getComputedStyle(e).strokeDasharray, width: getComputedStyle(e).strokeWidth }))""")
        first = [line for line in lines if line["series"] == "0"]
        second = [line for line in lines if line["series"] == "1"]
        assert first and second, (chart, lines)
        # Different colours, and the second dashed over the solid first: equal values (read = write) both show.
        assert first[0]["stroke"] != second[0]["stroke"]
        assert first[0]["dash"] == "none" and second[0]["dash"] not in ("none", "")
        order = [line["series"] for line in lines]  # in drawing order: the dashed one over the solid one
        assert order.index("1") > order.index("0")
        legend = page.eval_on_selector_all(f".chart[data-chart={chart}] .legend svg.swatch line",
                                           "els => els.map(e => e.getAttribute('stroke-dasharray'))")
        assert legend[0] == "none" and legend[1] not in ("none", None)
    page.eval_on_selector(".chart[data-chart=disk]", "el => el.scrollIntoView()")
    shot(page, "edges-two-lines")


# --- the display: full screen, clipboard, special keys -------------------------------------------------------
SPY = """() => { const d = window.corralDisplay; window.vncCalls = [];
  for (const method of ["sendKey", "sendCtrlAltDel", "clipboardPasteFrom"]) {
    const original = d.rfb[method].bind(d.rfb);
    d.rfb[method] = (...args) => { window.vncCalls.push([method, ...args]); return original(...args); };
  }
  return true; }"""


def console_says(corral: Corral, guest: str, command: str, marker: str) -> str:
    with corral.guests.open_console(guest) as console:
        console.send(b"\n")
        time.sleep(0.3)
        console.send(command.encode() + b"\n")
        return console.expect(marker.encode(), 20).decode(errors="replace")


def keyboard_interrupts(corral: Corral, guest: str) -> int:
    """How many interrupts the guest's keyboard controller (i8042, IRQ 1) has taken."""
    # The markers are sums, so that the echo of the typed command does not match them.
    out = console_says(corral, guest, "echo $((6*7))KBD-$(awk '$1 == \"1:\" {print $2}' /proc/interrupts)-$((5*5))END",
                       "25END")
    found = re.findall(r"42KBD-(\d+)-25END", out)
    assert found, out
    return int(found[-1])


@pytest.mark.guest
def test_the_display_has_full_screen_clipboard_and_special_keys(page: Any, login: Callable[[Any], None],
                                                                corral_session: Corral, booted: str) -> None:
    guest = booted
    login(page)
    page.goto(f"/#/domain/{guest}/display")
    wait_js(page, "() => document.querySelector('#vnc-status')?.textContent.startsWith('Display of')",
            what="the VNC connection")
    assert page.evaluate(SPY)

    # Special keys reach the guest: Ctrl+Alt+F2 is three key presses on its keyboard controller ...
    before = keyboard_interrupts(corral_session, guest)
    page.click("#vnc-keys summary")
    page.wait_for_selector("#vnc-keys[open] button[data-keys=ctrl-alt-f2]")
    shot(page, "edges-display-keys")
    page.click("#vnc-keys button[data-keys=ctrl-alt-f2]")
    calls = page.evaluate("() => window.vncCalls")
    assert [(c[1], c[2], c[3]) for c in calls] == [
        (0xFFE3, "ControlLeft", True), (0xFFE9, "AltLeft", True), (0xFFBF, "F2", True),
        (0xFFBF, "F2", False), (0xFFE9, "AltLeft", False), (0xFFE3, "ControlLeft", False)]
    assert not page.is_visible("#vnc-keys .menu-items")  # the menu closes
    deadline = time.monotonic() + 20
    while keyboard_interrupts(corral_session, guest) < before + 6:  # a make and a break code per key
        assert time.monotonic() < deadline, "the keys did not reach the guest's keyboard"
        time.sleep(0.5)

    # The clipboard: text goes to the guest through noVNC; what the guest sends shows in the box.
    page.evaluate("() => { window.vncCalls = []; }")
    page.click("#vnc-clipboard-toggle")
    page.fill("#vnc-clipboard-text", "pasted from the browser")
    page.click("#vnc-clipboard-send")
    assert page.evaluate("() => window.vncCalls") == [["clipboardPasteFrom", "pasted from the browser"]]
    page.evaluate("""() => window.corralDisplay.rfb.dispatchEvent(
      new CustomEvent("clipboard", { detail: { text: "copied in the guest" } }))""")
    assert page.input_value("#vnc-clipboard-text") == "copied in the guest"
    shot(page, "edges-display-clipboard")

    # Full screen: the display with its toolbar fills the screen; the same button leaves it.
    page.click("#vnc-fullscreen")
    wait_js(page, "() => document.fullscreenElement?.id === 'display'", what="full screen")
    wait_js(page, "() => document.querySelector('#vnc-fullscreen').textContent === 'Leave full screen'")
    assert page.evaluate("""() => { const r = document.querySelector('#vnc').getBoundingClientRect();
      return r.height > window.innerHeight * 0.7 && r.width > window.innerWidth * 0.9; }""")
    shot(page, "edges-display-fullscreen")
    page.click("#vnc-fullscreen")
    wait_js(page, "() => !document.fullscreenElement", what="leaving full screen")
    wait_js(page, "() => document.querySelector('#vnc-fullscreen').textContent === 'Full screen'")

    # Ctrl+Alt+Del through noVNC's sendCtrlAltDel(): the tiny guest's kernel reboots at once (kernel.ctrl-alt-del).
    log = Path(corral_session.guests.info(guest).console_log or "")
    boots = log.read_bytes().count(b"CORRAL-READY")
    page.evaluate("() => { window.vncCalls = []; }")
    page.click("#vnc-keys summary")
    page.click("#vnc-keys button[data-keys=ctrl-alt-del]")
    assert page.evaluate("() => window.vncCalls")[0] == ["sendCtrlAltDel"]
    deadline = time.monotonic() + 90
    while log.read_bytes().count(b"CORRAL-READY") <= boots:
        assert time.monotonic() < deadline, "Ctrl+Alt+Del did not reboot the guest"
        time.sleep(0.5)


@pytest.mark.guest
def test_a_running_guest_shows_its_addresses(page: Any, login: Callable[[Any], None], corral_session: Corral,
                                             booted: str) -> None:
    guest = booted
    deadline = time.monotonic() + 60
    while not (nics := corral_session.guests.info(guest).nics)[0].addresses:
        assert time.monotonic() < deadline, "no DHCP lease"
        time.sleep(1)
    address = nics[0].addresses[0].address
    login(page)
    page.goto(f"/#/domain/{guest}")
    page.wait_for_selector(f"#addresses:has-text('{address}/24')")
    nic = page.wait_for_selector(f"#nics li[data-mac='{nics[0].mac}']")
    assert "network corral" in nic.inner_text() and address in nic.inner_text()
    shot(page, "edges-addresses")


# --- the plan report --------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", SIZES)
def test_the_plan_report_is_framed_at_its_own_height(sized: Callable[[str], Any], corral_session: Corral,
                                                     size: str) -> None:
    from corral.planning import demo_traceset
    from corral.services.plans import PlanRequest

    name = unique("plan")
    outcome = corral_session.plans.plan(demo_traceset(), PlanRequest(host_kind="legacy-1u", time_budget_s=0.5))
    corral_session.plans.save(name, outcome.data)
    try:
        page = sized(size)
        page.goto(f"/#/plans/{name}")
        page.frame_locator("#plan-report").locator("h2:has-text('Cost')").wait_for()
        fit = """() => { const f = document.querySelector('#plan-report'); const d = f.contentDocument;
          if (!d || !d.documentElement) return null;
          return { frame: f.clientHeight, content: d.documentElement.scrollHeight,
                   inner: d.documentElement.getBoundingClientRect().height }; }"""
        fitted = f"() => {{ const s = ({fit})(); return s && s.inner > 300 && Math.abs(s.frame - s.inner) <= 2; }}"
        wait_js(page, fitted, what="the frame sized to its report")
        sizes = page.evaluate(fit)
        assert sizes["content"] <= sizes["frame"] + 1, sizes  # no scrollbar inside the frame
        assert no_sideways_scroll(page)
        # Nothing in the report runs: its frame is sandboxed without scripts.
        assert page.get_attribute("#plan-report", "sandbox") == "allow-same-origin"
        shot(page, f"edges-plan-{size}", full_page=True)
    finally:
        (corral_session.plans.folder / f"{name}.json").unlink(missing_ok=True)


# --- the create form: disk size, ISO, image import ---------------------------------------------------------
def test_the_create_form_takes_disk_size_iso_and_imports_images(page: Any, login: Callable[[Any], None],
                                                                corral_session: Corral) -> None:
    folder = corral_session.settings.data_dir / "web-imports"  # Corral's data folder is an allowed folder
    folder.mkdir(exist_ok=True)
    disk_file = folder / f"{unique('disk')}.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(disk_file), "64M"], check=True)
    iso_file = folder / f"{unique('iso')}.iso"
    iso_file.write_bytes(b"\0" * 0x8001 + b"CD001" + b"\0" * 4090)  # an ISO 9660 volume descriptor
    disk_image, iso_image, guest = unique("img"), unique("isoimg"), unique("form")
    try:
        login(page)
        page.goto("/#/create")
        page.wait_for_selector("#create-form select[name=image] option[value=tiny]", state="attached")
        for field in ("disk", "iso"):
            assert page.is_visible(f"#create-form input[name={field}]")

        # Import a disk image and an ISO: each shows in the image list at once, the ISO among the ISO paths.
        page.click("#import summary")
        page.fill("input[name=import_name]", "../etc")
        page.fill("input[name=import_path]", str(disk_file))
        page.click("#import-form button[type=submit]")
        page.wait_for_selector("#import-error:has-text('invalid image name')")
        page.fill("input[name=import_name]", disk_image)
        page.click("#import-form button[type=submit]")
        page.wait_for_selector(f"select[name=image] option[value='{disk_image}']", state="attached")
        assert page.input_value("select[name=image]") == disk_image
        assert corral_session.images.get(disk_image).kind == "disk"
        page.fill("input[name=import_name]", iso_image)
        page.fill("input[name=import_path]", str(iso_file))
        page.click("#import-form button[type=submit]")
        page.wait_for_selector(f"#iso-list option[value='{iso_file}']", state="attached")
        assert corral_session.images.get(iso_image).kind == "iso"
        shot(page, "edges-create-import", full_page=True)

        # A guest of the tiny image with a 2 GiB disk and the ISO as its CD-ROM, not started.
        page.select_option("select[name=image]", "tiny")
        page.fill("input[name=name]", guest)
        page.fill("input[name=memory]", "128")
        page.fill("input[name=disk]", "2")
        page.fill("input[name=iso]", "/nonexistent/install.iso")
        page.uncheck("input[name=start]")
        page.wait_for_selector("#guard.refused:has-text('does not exist')")  # the API's check says why
        page.fill("input[name=iso]", str(iso_file))
        page.wait_for_selector("#guard.fits:has-text('on this host')")
        shot(page, "edges-create-filled", full_page=True)
        page.click("#create-submit")
        page.wait_for_selector("#detail-state[data-state='shut-off']")
        info = corral_session.guests.info(guest)
        cdroms = [d["path"] for d in info.disks if d["device"] == "cdrom"]
        assert cdroms == [str(iso_file)]
        disk0 = next(d["path"] for d in info.disks if d["device"] == "disk")
        details = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", disk0], capture_output=True,
                                            text=True, check=True).stdout)
        assert details["virtual-size"] == 2 * GIB
    finally:
        if corral_session.libvirt.exists(guest):
            corral_session.guests.delete(guest)
        for image in (disk_image, iso_image):
            if corral_session.images.exists(image):
                corral_session.images.remove(image, [])
        disk_file.unlink(missing_ok=True)
        iso_file.unlink(missing_ok=True)
