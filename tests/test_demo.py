"""`corral demo` end to end: five loaded guests up on this host, then cleaned away."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from corral.config import Settings
from corral.services.context import Corral, open_corral
from corral.services.demo import DEMO_SERVERS
from tests.conftest import require

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


@pytest.mark.cluster
def test_demo_with_five_hosts_consolidates_them_live_onto_one(settings: Settings, corral_session: Corral,
                                                              tmp_path: Path) -> None:
    """`corral demo --hosts 5`: five private hosts, each server alone on its own; the balancer moves them
    live onto one host and puts the four others in standby; `--clean` removes guests and hosts."""
    require(os.geteuid() == 0, "root (lab hosts are privileged libvirt daemons in namespaces)")
    data = tmp_path / "data"
    data.mkdir()
    (data / "images").symlink_to(os.path.realpath(settings.images_dir))
    (data / "config.toml").write_text("")
    env = {**os.environ, "CORRAL_DATA_DIR": str(data), "CORRAL_CONFIG": str(data / "config.toml")}
    try:
        result = subprocess.run([CORRAL_BIN, "demo", "--hosts", "5"], capture_output=True, text=True, timeout=900,
                                env=env, check=False)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Before: each server alone on its own host" in result.stdout
        assert "kWh a year saved" in result.stdout
        ours = open_corral(replace(settings, data_dir=data, config_path=None))
        try:
            hosts = {t.name: t for t in ours.hosts if t.name.endswith("-host")}
            assert len(hosts) == 5
            standby = sorted(h for h, t in hosts.items() if t.standby)
            running = {h: sorted(r.name for r in t.libvirt.rows() if r.state == "running")
                       for h, t in hosts.items() if not t.standby}
            assert len(standby) == 4, (standby, running, result.stdout)
            [(_host, guests)] = running.items()
            assert guests == sorted(s.name for s in DEMO_SERVERS)
            listed = subprocess.run([CORRAL_BIN, "balance", "--log", "--json"], capture_output=True, text=True,
                                    env=env, check=True)
            moves = [e for e in json.loads(listed.stdout) if e["kind"] == "move" and e["outcome"].startswith("done")]
            assert len(moves) == 4  # four servers moved, each once
        finally:
            ours.close()
    finally:
        clean = subprocess.run([CORRAL_BIN, "demo", "--clean"], capture_output=True, text=True, env=env,
                               timeout=600, check=False)
    assert clean.returncode == 0, clean.stderr
    again = open_corral(replace(settings, data_dir=data, config_path=None))
    try:
        assert not [t.name for t in again.hosts if t.name.endswith("-host")]
    finally:
        again.close()
