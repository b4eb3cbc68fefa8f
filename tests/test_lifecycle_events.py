"""Waits on a guest's state are woken by libvirt's domain lifecycle events, not by a polling loop."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from corral.core.spec import GuestSpec
from corral.services.context import Corral

pytestmark = [pytest.mark.libvirt, pytest.mark.guest]


def test_a_wait_for_shut_off_is_woken_by_the_lifecycle_event(corral: Corral, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"ct-events-{uuid.uuid4().hex[:6]}"
    corral.guests.create(GuestSpec(name, "tiny", memory_mib=128), start=True)
    lv = corral.libvirt
    # Nothing may sleep in a loop while it waits: the answer must come from the event.
    monkeypatch.setattr("corral.adapters.libvirt_host.time.sleep",
                        lambda _s: (_ for _ in ()).throw(AssertionError("polled")))
    assert not lv.wait_state(name, {"shut-off"}, 0.5)  # still running: the timeout holds
    began = time.monotonic()
    killer = threading.Timer(1.0, lambda: lv.destroy(name))
    killer.start()
    try:
        assert lv.wait_state(name, {"shut-off"}, 30)
        waited = time.monotonic() - began
    finally:
        killer.join()
    assert lv.state(name) == "shut-off"
    assert 0.9 <= waited < 4.0, waited  # woken when it stopped, well before the 5 s safety wake
    monkeypatch.undo()
    corral.guests.delete(name)
