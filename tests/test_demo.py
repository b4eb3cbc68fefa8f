"""`corral demo` end to end: five loaded guests up on this host, then cleaned away."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from corral.services.context import Corral
from corral.services.demo import DEMO_SERVERS

pytestmark = [pytest.mark.libvirt, pytest.mark.guest]
CORRAL_BIN = str(Path(sys.executable).with_name("corral"))


def test_demo_runs_five_servers_on_one_host_and_cleans_up(corral: Corral) -> None:
    names = [s.name for s in DEMO_SERVERS]
    taken = [n for n in names if corral.libvirt.exists(n)]
    if taken:
        pytest.fail(f"domains {taken} exist outside the test; the demo test needs their names")
    try:
        result = subprocess.run([CORRAL_BIN, "demo"], capture_output=True, text=True, timeout=600,
                                env=os.environ.copy(), check=False)
        assert result.returncode == 0, result.stderr
        assert "Domain-0" in result.stdout
        # The plan: the five servers at 8-18 % fit on one host of their own kind, under the cap.
        plan = corral.plans.read("demo")  # kept in the plan library, where corral serve shows it
        assert len(plan["hosts"]) == 1
        assert sorted(plan["hosts"][0]["servers"]) == sorted(s.name for s in DEMO_SERVERS)
        assert (corral.settings.data_dir / "plans" / "demo.html").stat().st_size > 10_000
        listed = {row["name"]: row for row in json.loads(subprocess.run(
            [CORRAL_BIN, "list", "--json"], capture_output=True, text=True, check=True).stdout)}
        for server in DEMO_SERVERS:
            assert listed[server.name]["state"] == "running"
            assert corral.guests.info(server.name).load == server.load.as_text()
        # Running it again is harmless: the guests are already up.
        again = subprocess.run([CORRAL_BIN, "demo"], capture_output=True, text=True, timeout=600, check=False)
        assert again.returncode == 0, again.stderr
    finally:
        clean = subprocess.run([CORRAL_BIN, "demo", "--clean"], capture_output=True, text=True, check=False)
    assert clean.returncode == 0, clean.stderr
    assert not any(corral.libvirt.exists(n) for n in names)
    assert not any((corral.settings.guests_dir / n).exists() for n in names)


def test_demo_never_touches_a_users_guest_of_the_same_name(corral: Corral) -> None:
    from corral.core.spec import GuestSpec

    name = DEMO_SERVERS[0].name
    if corral.libvirt.exists(name):
        pytest.fail(f"a domain {name!r} exists outside the test")
    corral.guests.create(GuestSpec(name, "tiny", memory_mib=128))
    try:
        result = subprocess.run([CORRAL_BIN, "demo"], capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 1 and "was not made by the demo" in result.stderr
        assert not any(corral.libvirt.exists(s.name) for s in DEMO_SERVERS[1:])  # nothing made
        subprocess.run([CORRAL_BIN, "demo", "--clean"], capture_output=True, text=True, check=True)
        assert corral.libvirt.exists(name)  # the user's guest survives the clean-up
    finally:
        corral.guests.delete(name)
