"""Managing guests in the web console (issue 14, item 8), in headless Chromium at 1366x768 against a real `corral
serve`: the autostart switch (read back through virsh), the edit form (memory live and for the next boot; a refusal
of the admission guard shown in the form, nothing changed), a disk added, grown and removed and a NIC added and
removed on a running tiny guest, tags with a filtered list and a bulk shutdown where one guest fails; and at 390x844
that these controls are reachable. Screenshots go to artifacts/screenshots/."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from corral.config import Settings
from corral.core.resources import Change, read_resources
from corral.core.spec import GuestSpec
from corral.services.context import Corral

from .conftest import shot, unique, wait_js
from .test_console_edges import ON_SCREEN, no_sideways_scroll

pytestmark = [pytest.mark.libvirt, pytest.mark.guest]

LAPTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}


def virsh(settings: Settings, *args: str) -> str:
    return subprocess.run(["virsh", "-c", settings.libvirt_uri, *args], capture_output=True, text=True,
                          check=True).stdout


def autostart(settings: Settings, guest: str) -> str:
    """`virsh dominfo`'s Autostart: enable or disable."""
    line = next(x for x in virsh(settings, "dominfo", guest).splitlines() if x.startswith("Autostart:"))
    return line.split(":", 1)[1].strip()


def until(condition: Callable[[], Any], timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return bool(condition())


@pytest.fixture
def open_page(browser: Any, server: str, login: Callable[[Any], None]) -> Iterator[Callable[..., Any]]:
    """`open_page()`: a logged-in page at 1366x768 (`open_page(PHONE)`: a phone's touch screen); page errors
    fail the test; a failing test's pages leave a screenshot."""
    contexts: list[Any] = []
    errors: list[str] = []

    def make(size: dict[str, int] = LAPTOP) -> Any:
        phone = size is PHONE
        context = browser.new_context(viewport=size, base_url=server, is_mobile=phone, has_touch=phone,
                                      device_scale_factor=2 if phone else 1)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.set_default_timeout(30_000)
        login(page)
        return page

    try:
        yield make
    finally:
        for context in contexts:
            context.close()
    assert not errors, f"errors in the page: {errors}"


@pytest.fixture(scope="module")
def running(corral_session: Corral) -> Iterator[str]:
    """A running tiny guest of 160 MiB whose maximum is 256 MiB (room for a live raise)."""
    guest = unique("manage")
    corral_session.guests.create(GuestSpec(guest, "tiny", memory_mib=160))
    corral_session.edit.set_resources(guest, Change(max_memory_mib=256))
    corral_session.guests.start(guest, wait=True)
    yield guest
    if corral_session.libvirt.exists(guest):
        corral_session.guests.delete(guest)


def details(page: Any, guest: str) -> None:
    page.goto(f"/#/domain/{guest}")
    page.wait_for_selector("#facts dd")
    wait_js(page, "() => document.querySelector('#resources-now').textContent.startsWith('Now:')",
            what="the guest's live resources")


def confirm(page: Any) -> None:
    page.wait_for_selector("dialog#confirm[open]")
    page.click("#confirm-ok")


def test_the_autostart_switch_is_libvirts_autostart(open_page: Callable[..., Any], running: str,
                                                     settings: Settings) -> None:
    page = open_page()
    details(page, running)
    assert not page.is_checked("#autostart")
    assert autostart(settings, running) == "disable"
    page.click("#autostart")
    page.wait_for_selector("#autostart-answer.ok:has-text('starts with its host')")
    assert autostart(settings, running) == "enable"
    page.wait_for_selector("#autostart-fact:has-text('yes')")
    shot(page, "manage-autostart", full_page=True)
    # The list says so too.
    page.goto("/#/")
    page.wait_for_selector(f"#domains tr[data-name='{running}'] .autostart-cell:has-text('on')")
    details(page, running)
    assert page.is_checked("#autostart")
    page.click("#autostart")
    page.wait_for_selector("#autostart-answer.ok:has-text('no longer starts')")
    assert autostart(settings, running) == "disable"


def test_memory_is_changed_live_and_a_refusal_shows_the_guards_answer(open_page: Callable[..., Any], running: str,
                                                                       settings: Settings) -> None:
    page = open_page()
    details(page, running)
    assert page.input_value("#edit-form input[name=memory]") == "160"
    assert page.input_value("#edit-form input[name=max_memory]") == "256"
    assert page.is_checked("#edit-form input[name=live]")

    # Live and for the next boot: the balloon gives the guest 64 MiB more.
    page.fill("#edit-form input[name=memory]", "224")
    page.click("#edit-submit")
    answer = page.wait_for_selector("#edit-answer:is(.fits, .refused)")
    assert "Now: 1 vCPU (max 1), 224 MiB (max 256 MiB)" in answer.inner_text(), answer.inner_text()
    assert until(lambda: "actual 229376" in virsh(settings, "dommemstat", running))
    assert read_resources(virsh(settings, "dumpxml", "--inactive", running)).memory_mib == 224
    page.wait_for_selector("#resources-now:has-text('Now: 1 vCPU (max 1), 224 MiB')")
    shot(page, "manage-edit-live", full_page=True)

    # More than the host has, for the next boot: the admission guard refuses, in the form; nothing changes.
    config = virsh(settings, "dumpxml", "--inactive", running)
    page.uncheck("#edit-form input[name=live]")
    page.fill("#edit-form input[name=memory]", str(1024 * 1024))
    page.fill("#edit-form input[name=max_memory]", str(1024 * 1024))
    page.click("#edit-submit")
    answer = page.wait_for_selector("#edit-answer.refused")
    assert "Refused by the admission guard" in answer.inner_text() and "memory" in answer.inner_text()
    shot(page, "manage-edit-refused", full_page=True)
    assert virsh(settings, "dumpxml", "--inactive", running) == config
    assert "actual 229376" in virsh(settings, "dommemstat", running)
    # The form keeps what was typed, to be corrected.
    assert page.input_value("#edit-form input[name=memory]") == str(1024 * 1024)


def test_a_disk_is_added_grown_and_removed_in_the_running_guest(open_page: Callable[..., Any], running: str,
                                                                 settings: Settings) -> None:
    page = open_page()
    details(page, running)
    assert "vdb" not in virsh(settings, "domblklist", running)
    page.fill("#disk-form input[name=disk_size]", "0.05")
    page.click("#disk-form button[type=submit]")
    page.wait_for_selector("#disks-answer.ok:has-text('disk vdb added')")
    assert "in the running guest too" in page.inner_text("#disks-answer")
    row = "#disk-table tr[data-target=vdb]"
    page.wait_for_selector(f"{row} .size:has-text('MiB')")
    assert "vdb" in virsh(settings, "domblklist", running)
    added = int(virsh(settings, "domblkinfo", running, "vdb").split("Capacity:")[1].split()[0])

    page.fill(f"{row} input.resize-size", "0.1")
    page.click(f"{row} button[data-action=resize]")
    page.wait_for_selector("#disks-answer.ok:has-text('disk vdb grown')")
    grown = int(virsh(settings, "domblkinfo", running, "vdb").split("Capacity:")[1].split()[0])
    assert grown > added
    page.wait_for_selector(f"{row} .size:has-text('{grown / 1024**2:.0f} MiB')")
    shot(page, "manage-disks", full_page=True)

    # A smaller size: the service's refusal, shown; nothing changes.
    page.fill(f"{row} input.resize-size", "0.05")
    page.click(f"{row} button[data-action=resize]")
    page.wait_for_selector("#disks-answer.bad:has-text('cannot shrink')")

    page.click(f"{row} button[data-action=remove-disk]")
    confirm(page)
    page.wait_for_selector("#disks-answer.ok:has-text('disk vdb removed')", timeout=60_000)
    page.wait_for_selector(row, state="detached")
    assert "vdb" not in virsh(settings, "domblklist", running)


def test_a_nic_is_added_and_removed_in_the_running_guest(open_page: Callable[..., Any], running: str,
                                                         settings: Settings) -> None:
    page = open_page()
    details(page, running)
    before = page.eval_on_selector_all("#nics li[data-mac]", "items => items.map(i => i.dataset.mac)")
    assert before
    page.click("#nic-form button[type=submit]")
    answer = page.wait_for_selector("#nics-answer.ok:has-text('added')")
    mac = answer.inner_text().split()[1]
    assert mac not in before and "in the running guest too" in answer.inner_text()
    item = page.wait_for_selector(f"#nics li[data-mac='{mac}']")
    assert "network" in item.inner_text()
    assert mac in virsh(settings, "domiflist", running)
    shot(page, "manage-nics", full_page=True)

    page.click(f"#nics li[data-mac='{mac}'] button[data-action=remove-nic]")
    confirm(page)
    page.wait_for_selector(f"#nics-answer.ok:has-text('NIC {mac} removed')", timeout=60_000)
    page.wait_for_selector(f"#nics li[data-mac='{mac}']", state="detached")
    assert mac not in virsh(settings, "domiflist", running)


def test_tags_a_filtered_list_and_a_bulk_shutdown_with_one_failing(open_page: Callable[..., Any],
                                                                   corral_session: Corral, settings: Settings) -> None:
    a, b, off = unique("tag-a"), unique("tag-b"), unique("tag-off")
    tag = unique("t")[7:].replace("-", "")  # ct-web-t-1a2b3c -> t1a2b3c
    try:
        for guest in (a, b):
            corral_session.guests.create(GuestSpec(guest, "tiny", memory_mib=128), start=True, wait=True)
        corral_session.guests.create(GuestSpec(off, "tiny", memory_mib=128))
        page = open_page()

        # Tag two guests on their details pages: chips, which a click removes.
        for guest in (a, b):
            page.goto(f"/#/domain/{guest}")
            page.wait_for_selector("#tags .muted:has-text('no tags')")
            page.fill("#tag-input", f"{tag} extra")
            page.click("#tag-form button[type=submit]")
            page.wait_for_selector(f"#tags .chip[data-tag='{tag}']")
            page.wait_for_selector("#tags .chip[data-tag='extra']")
        page.click("#tags .chip[data-tag='extra'] .chip-remove")
        page.wait_for_selector("#tags .chip[data-tag='extra']", state="detached")
        assert corral_session.guests.info(b).tags == [tag]
        assert corral_session.guests.info(a).tags == [tag, "extra"]
        shot(page, "manage-tags", full_page=True)
        # A bad tag: the API's one line, nothing changed.
        page.fill("#tag-input", "Bad<Tag>")
        page.click("#tag-form button[type=submit]")
        page.wait_for_selector("#tags-answer.bad:has-text('invalid tag')")
        assert corral_session.guests.info(b).tags == [tag]

        # The list: a chip filters by its tag.
        page.goto("/#/")
        chip = f"#domains tr[data-name='{a}'] .tags-cell .chip[data-tag='{tag}']"
        page.wait_for_selector(chip)
        page.click(chip)
        wait_js(page, f"() => location.hash === '#/?tag={tag}'")
        wait_js(page, f"""() => {{ const names = [...document.querySelectorAll('#domains tbody tr')]
                 .map(r => r.dataset.name).sort(); return names.join() === {sorted([a, b])!r}.join(); }}""",
                what="the list filtered by the tag")
        assert page.input_value("#tag-filter") == tag
        # The same by typing it.
        page.click("#clear-filter")
        page.wait_for_selector(f"#domains tr[data-name='{off}']")
        page.fill("#tag-filter", tag)
        page.wait_for_selector(f"#domains tr[data-name='{off}']", state="detached")
        page.wait_for_selector(f"#domains tr[data-name='{a}']")
        assert page.eval_on_selector_all("#domains tbody tr", "rows => rows.length") == 2

        # Select both, then the shut-off one as well, and shut them all down.
        page.check("#select-all")
        page.wait_for_selector("#selected-count:has-text('2 selected')")
        page.click("#clear-filter")
        page.check(f"#domains tr[data-name='{off}'] input.select")
        page.wait_for_selector("#selected-count:has-text('3 selected')")
        shot(page, "manage-bulk-selected", full_page=True)
        page.click("#bulk button[data-bulk=shutdown]")
        confirm(page)
        page.wait_for_selector("#bulk-summary:has-text('Shut down: 2 succeeded, 1 failed')", timeout=200_000)
        for guest in (a, b):
            assert "done, shut-off" in page.inner_text(f"#bulk-result li.ok[data-name='{guest}']")
            assert virsh(settings, "domstate", guest).strip() == "shut off"
        failed = page.inner_text(f"#bulk-result li.bad[data-name='{off}']")
        assert "shut-off" in failed and off in failed
        shot(page, "manage-bulk-result", full_page=True)
        page.wait_for_selector(f"#domains tr[data-name='{a}'][data-state='shut-off']")
    finally:
        for guest in (a, b, off):
            if corral_session.libvirt.exists(guest):
                corral_session.guests.delete(guest)


def test_the_new_controls_are_reachable_on_a_phone(open_page: Callable[..., Any], running: str,
                                                   corral_session: Corral) -> None:
    corral_session.edit.set_tags(running, ["phone"])
    page = open_page(PHONE)
    assert no_sideways_scroll(page)
    for selector in ("#tag-filter", "#select-all", "#bulk button[data-bulk=shutdown]",
                     f"#domains tr[data-name='{running}'] input.select",
                     f"#domains tr[data-name='{running}'] .chip[data-tag=phone]"):
        handle = page.wait_for_selector(selector)
        handle.evaluate("(el) => el.scrollIntoView({ block: 'center', inline: 'nearest' })")
        assert handle.evaluate(ON_SCREEN), f"{selector} is not on screen"
    shot(page, "manage-list-phone", full_page=True)
    details(page, running)
    assert no_sideways_scroll(page)
    for selector in ("#autostart", "#tag-input", "#edit-form input[name=memory]", "#edit-submit",
                     "#disk-form input[name=disk_size]", "#disk-form button[type=submit]",
                     "#nic-form input[name=network]", "#nic-form button[type=submit]",
                     "#nics li[data-mac] button[data-action=remove-nic]"):
        handle = page.wait_for_selector(selector)
        handle.evaluate("(el) => el.scrollIntoView({ block: 'center', inline: 'nearest' })")
        time.sleep(0.05)
        assert handle.evaluate(ON_SCREEN), f"{selector} is not on screen"
    shot(page, "manage-details-phone", full_page=True)


def test_the_create_form_takes_first_boot_fields_for_disk_images_and_a_cd_is_ejected(
        open_page: Callable[..., Any], corral_session: Corral) -> None:
    folder = corral_session.settings.data_dir / "web-imports"  # Corral's data folder is an allowed folder
    folder.mkdir(exist_ok=True)
    disk_file = folder / f"{unique('cloud')}.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(disk_file), "64M"], check=True)
    iso_file = folder / f"{unique('media')}.iso"
    iso_file.write_bytes(b"\0" * 0x8001 + b"CD001" + b"\0" * 4090)  # an ISO 9660 volume descriptor
    image, guest = unique("cloudimg"), unique("firstboot")
    keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBkYzdGVzdGtleWZvcmNvcnJhbHdlYnRlc3RzMDAx web@test",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPkYzdGVzdGtleWZvcmNvcnJhbHdlYnRlc3RzMDAy other@test"]
    try:
        corral_session.images.import_image(image, disk_file)
        page = open_page()
        bodies: list[Any] = []
        page.on("request", lambda r: bodies.append(r.post_data_json)
                if r.method == "POST" and urlsplit(r.url).path == "/api/domains" else None)
        page.goto("/#/create")
        page.wait_for_selector(f"#create-form select[name=image] option[value='{image}']", state="attached")
        page.select_option("select[name=image]", "tiny")
        assert not page.is_visible("#first-boot")  # the tiny image has no cloud-init
        page.select_option("select[name=image]", image)
        page.wait_for_selector("#first-boot textarea[name=ssh_keys]")
        page.fill("input[name=name]", guest)
        page.fill("input[name=memory]", "128")
        page.fill("#first-boot input[name=user]", "ops")
        page.fill("#first-boot textarea[name=ssh_keys]", f"{keys[0]}\n\n# a comment\n  {keys[1]}  \n")
        page.fill("input[name=iso]", str(iso_file))
        page.uncheck("input[name=start]")
        page.wait_for_selector("#guard.fits")
        shot(page, "manage-create-first-boot", full_page=True)
        page.click("#create-submit")
        page.wait_for_selector("#detail-state[data-state='shut-off']")
        assert bodies and bodies[-1]["user"] == "ops" and bodies[-1]["ssh_keys"] == keys
        assert corral_session.guests.info(guest).image == image

        # Its CD drive holds the ISO: Eject empties it (the drive stays, without a medium).
        cd = f"#disk-table tr[data-kind=cdrom][data-path='{iso_file}']"
        page.wait_for_selector(cd)
        page.click(f"{cd} button[data-action=eject]")
        page.wait_for_selector("#disks-answer.ok:has-text('the CD drive is empty now')")
        page.wait_for_selector(cd, state="detached")
        assert not [d for d in corral_session.guests.info(guest).disks if d["device"] == "cdrom"]
    finally:
        if corral_session.libvirt.exists(guest):
            corral_session.guests.delete(guest)
        if corral_session.images.exists(image):
            corral_session.images.remove(image, [])
        disk_file.unlink(missing_ok=True)
        iso_file.unlink(missing_ok=True)
