"""The sampler, the monitor commands and the Prometheus endpoint against real guests under TCG."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from corral.core.spec import GuestSpec, LoadSpec
from corral.monitoring.metrics import HOST_DOMAIN, Sample
from corral.monitoring.rates import Counters, sample_values
from corral.monitoring.sampler import Sampler
from corral.services.context import Corral

CORRAL_BIN = str(Path(sys.executable).with_name("corral"))


def counters(t: float, instance: str = "id1", cpu: float = 0.0, disk: float = 0.0,
             net: float | None = 0.0) -> Counters:
    return Counters(t, "g", instance, 1, cpu, 100.0, 50.0, disk, disk, disk / 4096, disk / 4096, net, net)


def test_rates_from_counters() -> None:
    values = sample_values(counters(0, cpu=1.0, disk=0), counters(2, cpu=1.8, disk=8192), host_cores=2)
    assert values["cpu_pct"] == pytest.approx(40.0)
    assert values["cpu_host_pct"] == pytest.approx(20.0)
    assert values["disk_read_bps"] == pytest.approx(4096)
    assert values["mem_used_bytes"] == 50.0


def test_restart_and_reset_never_give_negative_or_huge_rates() -> None:
    restarted = sample_values(counters(0, "id1", cpu=500.0, disk=10**9), counters(5, "id2", cpu=0.1, disk=10),
                              host_cores=2)
    assert restarted["cpu_pct"] is None and restarted["disk_read_bps"] is None
    assert restarted["mem_total_bytes"] == 100.0  # gauges are still read
    reset = sample_values(counters(0, cpu=5.0, disk=10**6), counters(5, cpu=6.0, disk=10), host_cores=2)
    assert reset["disk_read_bps"] is None and reset["cpu_pct"] == pytest.approx(20.0)
    no_nic = sample_values(counters(0, net=None), counters(5, net=None), host_cores=2)
    assert no_nic["net_rx_bps"] is None  # no host-side counters: unknown, not zero


def _values(samples: list[Sample], name: str) -> dict[str, float | None]:
    return dict(next(s for s in samples if s.domain == name).values)


def _wait_ready(corral: Corral, names: list[str]) -> None:
    for name in names:
        corral.guests.wait_ready(name, 90)


@pytest.mark.guest
def test_sampler_tells_loaded_from_idle_and_sees_io(corral: Corral) -> None:
    loaded, idle = f"ct-load-{uuid.uuid4().hex[:6]}", f"ct-idle-{uuid.uuid4().hex[:6]}"
    corral.guests.create(GuestSpec(loaded, "tiny", memory_mib=160, load=LoadSpec(40, 256, 128)), start=True)
    corral.guests.create(GuestSpec(idle, "tiny", memory_mib=160), start=True)
    _wait_ready(corral, [loaded, idle])
    time.sleep(2)  # corral-load starts right after the readiness line
    sampler = Sampler(corral.libvirt)
    sampler.sample()
    cpu = []
    for _ in range(3):
        time.sleep(3)
        samples = sampler.sample()
        cpu.append((_values(samples, loaded)["cpu_pct"], _values(samples, idle)["cpu_pct"]))
    busy = sorted(c for c, _i in cpu if c is not None)[1]  # median of 3
    quiet = max(i for _c, i in cpu if i is not None)
    assert 30 <= busy <= 50, f"cpu=40 measured {cpu}"  # the issue's +-10 points under TCG
    assert quiet < 10, f"idle guest measured {cpu}"
    v = _values(samples, loaded)
    # disk=256 KiB/s read + written (half each); net=128 KiB/s of UDP payload.
    assert 0.7 * 128 * 1024 <= (v["disk_read_bps"] or 0) <= 1.3 * 128 * 1024, v
    assert 0.7 * 128 * 1024 <= (v["disk_write_bps"] or 0) <= 1.3 * 128 * 1024, v
    if corral.host.network()[0] is None:
        assert v["net_tx_bps"] is None  # said, not zero
    else:
        assert 0.9 * 128 * 1024 <= (v["net_tx_bps"] or 0) <= 1.3 * 128 * 1024, v
    quiet_values = _values(samples, idle)
    assert (quiet_values["disk_read_bps"] or 0) < 4096
    host = _values(samples, HOST_DOMAIN)
    assert host["cpu_pct"] is not None and host["mem_total_bytes"]

    # Destroyed and re-created under the same name: no negative or huge rate, ever.
    corral.guests.delete(loaded)
    corral.guests.create(GuestSpec(loaded, "tiny", memory_mib=160), start=True)
    after = _values(sampler.sample(), loaded)
    assert all(value is None for key, value in after.items() if key.endswith(("_pct", "_bps", "_iops")))
    time.sleep(2)
    later = _values(sampler.sample(), loaded)
    for key, value in later.items():
        assert value is None or value >= 0, (key, value)
    assert (later["cpu_pct"] or 0) <= 100


@pytest.mark.guest
def test_monitor_store_stats_and_prometheus(corral: Corral) -> None:
    guest = f"ct-mon-{uuid.uuid4().hex[:6]}"
    corral.guests.create(GuestSpec(guest, "tiny", memory_mib=128, load=LoadSpec(cpu_pct=20)), start=True,
                         wait=True)
    proc = subprocess.Popen([CORRAL_BIN, "monitor", "--interval", "0.5", "--prometheus", "127.0.0.1:9178"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 20
        text = ""
        while time.monotonic() < deadline:
            try:
                text = urllib.request.urlopen("http://127.0.0.1:9178/metrics", timeout=2).read().decode()
                if f'corral_domain_cpu_utilization_ratio{{domain="{guest}",host="local"}}' in text:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        assert "# TYPE corral_domain_cpu_seconds_total counter" in text
        assert f'corral_domain_cpu_seconds_total{{domain="{guest}",host="local"}}' in text
        assert f'corral_domain_disk_read_bytes_total{{domain="{guest}",host="local",target_device="vda"}}' in text
        assert f'corral_domain_state{{domain="{guest}",host="local",state="running"}} 1.0' in text
        assert 'corral_host_memory_bytes{host="local"}' in text and 'domain="Domain-0"' not in text
        time.sleep(2)
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    rows = json.loads(subprocess.run([CORRAL_BIN, "stats", guest, "--since", "5m", "--json"],
                                     capture_output=True, text=True, check=True).stdout)
    assert len(rows) >= 3 and all("cpu_pct" in row and "time" in row for row in rows)
    assert any(row["cpu_pct"] and row["cpu_pct"] > 5 for row in rows)
    table = subprocess.run([CORRAL_BIN, "stats", HOST_DOMAIN, "--since", "5m", "--resource", "cpu"],
                           capture_output=True, text=True, check=True).stdout
    assert "cpu_pct" in table and "mem_used" not in table
    once = json.loads(subprocess.run([CORRAL_BIN, "monitor", "--once", "--json"], capture_output=True,
                                     text=True, check=True).stdout)
    assert {row["domain"] for row in once} >= {HOST_DOMAIN, guest}
    bad = subprocess.run([CORRAL_BIN, "stats", guest, "--since", "soon"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--since" in bad.stderr


@pytest.mark.guest
def test_top_in_a_real_terminal(corral: Corral, require_tool: Callable[[str], None]) -> None:
    require_tool("tmux")
    guest = f"ct-top-{uuid.uuid4().hex[:6]}"
    corral.guests.create(GuestSpec(guest, "tiny", memory_mib=128), start=True)
    session = f"corral-top-{uuid.uuid4().hex[:6]}"
    env = " ".join(f"{k}={v}" for k, v in os.environ.items() if k.startswith("CORRAL_"))
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "40",
                    f"env {env} {CORRAL_BIN} top --interval 1"], check=True)
    try:
        screen = ""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and guest not in screen:
            time.sleep(0.5)
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True,
                                    text=True, check=True).stdout
        assert "Domain-0" in screen and guest in screen and "CPU%" in screen, screen
        subprocess.run(["tmux", "send-keys", "-t", session, "n"], check=True)  # sort by name
        time.sleep(1)
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            alive = subprocess.run(["tmux", "has-session", "-t", session], capture_output=True).returncode == 0
            if not alive:
                break
            time.sleep(0.3)
        assert not alive, "top did not quit on q"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
