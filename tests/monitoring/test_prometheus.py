"""Prometheus: Corral's collector, `corral serve`'s /metrics (prometheus_client's ASGI app behind a bearer
token) and the exporter (`corral monitor --prometheus`, prometheus_client's HTTP server). Both endpoints'
output passes `promtool check metrics`; every defined guest is there with its state, shut-off ones too,
and the hosts are in corral_host_*, never among the domains."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry
from tests.conftest import free_port, require

from corral.api.app import create_app
from corral.api.auth import Authenticator
from corral.config import Settings
from corral.core.capacity import Budget
from corral.core.errors import AdmissionRefused, InvalidInput
from corral.core.spec import GuestSpec
from corral.monitoring.exporter import serve_metrics
from corral.monitoring.metrics import HOST_DOMAIN
from corral.monitoring.prometheus import (
    BalancerFigures,
    CorralCollector,
    DomainReading,
    HostReading,
    Reading,
    balancer_families,
    flat,
)
from corral.services.context import Corral
from corral.services.users import UserStore, users_path

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

CORRAL_BIN = str(Path(sys.executable).with_name("corral"))


def promtool() -> str:
    """scripts/setup --dev puts it beside the virtual environment's Python."""
    beside = Path(sys.executable).with_name("promtool")
    found = str(beside) if beside.exists() else shutil.which("promtool")
    require(found is not None, "promtool (scripts/setup --dev installs it into .venv/bin)")
    assert found is not None
    return found


def check_metrics(text: str) -> None:
    result = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, f"promtool check metrics:\n{result.stdout}{result.stderr}"


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)], from the text exposition."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found.setdefault(s.name, []).append((s.labels, s.value))
    return found


def assert_guest_and_hosts(text: str, guest: str, host: str) -> None:
    """The shut-off guest with its state and info, the host's figures in corral_host_*, no Domain-0 among
    the domains, build info and process metrics."""
    found = samples(text)
    states = {labels["state"]: value for labels, value in found["corral_domain_state"]
              if labels["domain"] == guest and labels["host"] == host}
    assert states["shut-off"] == 1 and sum(states.values()) == 1, states
    assert any(labels["domain"] == guest and labels["uuid"] for labels, _ in found["corral_domain_info"])
    assert not any(labels["domain"] == guest for labels, _ in found.get("corral_domain_cpu_seconds_total", []))
    assert {"corral_host_state", "corral_host_cpus", "corral_host_memory_bytes", "corral_host_capacity_limit",
            "corral_host_capacity_allocated", "corral_host_capacity_free"} <= set(found)
    assert ({"state": "up", "host": host}, 1.0) in found["corral_host_state"]
    assert {labels["resource"] for labels, _ in found["corral_host_capacity_free"]} == {"vcpus", "memory", "cpu"}
    for name, rows in found.items():
        if name.startswith("corral_domain_"):
            assert all(labels.get("domain") != HOST_DOMAIN and labels.get("host") for labels, _ in rows), name
    assert found["corral_build_info"][0][0]["version"] and "process_cpu_seconds_total" in found
    assert "corral_balancer_migrations_total" in found and "corral_admission_refusals_total" in found


# --- the collector over plain readings (no libvirt) -------------------------------------------------------
def _reading() -> Reading:
    running = {"cpu.time": 3_500_000_000, "balloon.available": 100_000, "balloon.usable": 60_000,
               "block.count": 2, "block.0.name": "vda", "block.0.rd.bytes": 4096, "block.0.wr.bytes": 512,
               "block.0.rd.reqs": 1, "block.0.wr.reqs": 1, "block.0.capacity": 1 << 30, "block.1.name": "sda",
               "net.count": 2, "net.0.name": "vnet3", "net.0.rx.bytes": 900, "net.0.tx.bytes": 100,
               "net.0.rx.pkts": 9, "net.0.tx.pkts": 1, "net.1.name": "user-mode, no counters"}
    hosts = [HostReading("h1", "up", "node1", "EPYC", 4, 100.0, 300.0, 8 * 2**30, 2 * 2**30,
                         {"nvme0n1": (10, 20, 1, 2)}, {"eth0": (30, 40)},
                         (Budget("vcpus", "vCPUs", 16, 2), Budget("memory", "MiB", 7168, 256),
                          Budget("cpu", "cores", 3.4, 0.5)), 0.25, 3),
             HostReading("h2", "standby")]
    domains = [DomainReading("h1", "web", "u-1", "running", 2, 256 * 2**20, running, 0.5),
               DomainReading("h1", "db", "u-2", "shut-off", 1, 128 * 2**20)]
    return Reading(hosts, domains, BalancerFigures({("move", "done"): 2, ("move", "failed"): 1}, 1, 1, "automatic"))


def _text(reading: Reading) -> str:
    registry = CollectorRegistry()
    registry.register(CorralCollector(lambda: reading, {"version": "1", "python_version": "3", "libvirt_version": "9"}))
    return generate_latest(registry).decode()


def test_the_collector_labels_devices_and_keeps_hosts_out_of_the_domains() -> None:
    text = _text(_reading())
    check_metrics(text)
    found = samples(text)

    def value(name: str, **labels: str) -> float:
        return next(v for got, v in found[name] if got == labels)

    web = {"host": "h1", "domain": "web"}
    assert value("corral_domain_cpu_seconds_total", **web) == pytest.approx(3.5)
    assert value("corral_domain_memory_used_bytes", **web) == 40_000 * 1024
    assert value("corral_domain_disk_read_bytes_total", **web, target_device="vda") == 4096
    assert value("corral_domain_disk_capacity_bytes", **web, target_device="vda") == 1 << 30
    assert value("corral_domain_network_receive_bytes_total", **web, target_device="vnet3") == 900
    assert value("corral_domain_cpu_utilization_ratio", **web) == 0.5
    # A disk without counters (an empty CD-ROM) and a NIC without host-side counters give no series.
    assert [labels["target_device"] for labels, _ in found["corral_domain_disk_read_bytes_total"]] == ["vda"]
    assert len(found["corral_domain_network_receive_bytes_total"]) == 1
    # The shut-off guest: info, state, size; no counters.
    assert value("corral_domain_state", host="h1", domain="db", state="shut-off") == 1
    assert value("corral_domain_vcpus", host="h1", domain="db") == 1
    assert {labels["domain"] for labels, _ in found["corral_domain_cpu_seconds_total"]} == {"web"}
    # Hosts: their own families, devices by name, capacity in base units (memory in bytes).
    assert value("corral_host_cpu_seconds_total", host="h1", mode="idle") == 300
    assert value("corral_host_disk_written_bytes_total", host="h1", device="nvme0n1") == 20
    assert value("corral_host_network_transmit_bytes_total", host="h1", device="eth0") == 40
    assert value("corral_host_capacity_limit", host="h1", resource="memory") == 7168 * 2**20
    assert value("corral_host_capacity_free", host="h1", resource="cpu") == pytest.approx(2.9)
    assert value("corral_host_state", host="h2", state="standby") == 1
    assert value("corral_admission_refusals_total", host="h1") == 3
    assert value("corral_admission_refusals_total", host="h2") == 0  # there from the start: rate() works
    assert value("corral_balancer_mode", mode="automatic") == 1
    for name, rows in found.items():
        if name.startswith("corral_domain_"):
            assert all(labels["domain"] != HOST_DOMAIN for labels, _ in rows)


def test_balancer_samples_are_those_of_the_exposition() -> None:
    figures = BalancerFigures({("move", "done"): 2, ("wake", "done"): 1}, 2, 1, "recommend")
    families: list[Metric] = balancer_families(figures)
    flattened = flat(families)
    assert flattened["corral_balancer_migrations_total"] == 2
    assert flattened["corral_balancer_migrations_failed_total"] == 0
    assert flattened['corral_balancer_decisions_total{kind="wake",outcome="done"}'] == 1
    assert flattened['corral_balancer_mode{mode="recommend"}'] == 1
    text = _text(Reading([], [], figures))
    for key, number in flattened.items():
        assert f"{key} {number!r}" in text


# --- both endpoints -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bearer(settings: Settings) -> tuple[UserStore, dict[str, str]]:
    store = UserStore(users_path(settings.data_dir))
    if not store.exists("prometheus"):
        store.add("prometheus", "scraper's password, unused")
    token, _ = store.create_token("prometheus", "tests")
    return store, {"Authorization": f"Bearer {token}"}


def _served(corral: Corral, bearer: tuple[UserStore, dict[str, str]]) -> str:
    """`corral serve`'s /metrics, in process."""
    store, headers = bearer
    with TestClient(create_app(corral, authenticator=Authenticator(store))) as client:
        refused = client.get("/metrics")
        assert refused.status_code == 401 and "Bearer" in refused.json()["error"]
        response = client.get("/metrics", headers=headers)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        assert response.headers["cache-control"] == "no-store"
        chosen = client.get("/metrics", params={"name[]": "corral_domain_state"}, headers=headers).text
        assert "corral_domain_state{" in chosen and "corral_host_" not in chosen
    return response.text


def test_both_endpoints_on_the_test_driver(offline: Corral, bearer: tuple[UserStore, dict[str, str]]) -> None:
    """In process, no daemon: the API's /metrics and the exporter's server over the same Corral."""
    guest = f"ct-prom-{uuid.uuid4().hex[:6]}"
    offline.guests.create(GuestSpec(guest, "tiny", memory_mib=128))  # defined, not started
    host = offline.hosts.default.name
    before = offline.guests.admission_refusals.get(host, 0)
    huge = GuestSpec(f"ct-prom-huge-{uuid.uuid4().hex[:6]}", "tiny", vcpus=64, memory_mib=1024 * 1024)
    with pytest.raises(AdmissionRefused):
        offline.guests.check(huge, start=True)  # only asks: not counted
    with pytest.raises(AdmissionRefused):
        offline.guests.create(huge)
    served = _served(offline, bearer)
    port = free_port()
    server = serve_metrics(f"127.0.0.1:{port}", offline.prometheus.registry)
    try:
        exported = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        server.shutdown()
        server.server_close()
    for text in (served, exported):
        check_metrics(text)
        assert_guest_and_hosts(text, guest, host)
        refusals = dict((labels["host"], v) for labels, v in samples(text)["corral_admission_refusals_total"])
        assert refusals[host] == before + 1


@contextlib.contextmanager
def _exporter(port: int) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([CORRAL_BIN, "monitor", "--interval", "1", "--prometheus", f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(15) == 0, proc.communicate()[1]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.libvirt
def test_both_endpoints_on_the_daemon(corral: Corral, bearer: tuple[UserStore, dict[str, str]]) -> None:
    """The real daemon: `corral monitor --prometheus` (a process of its own) and `corral serve`'s route see
    the shut-off guest this test defines."""
    guest = f"ct-prom-{uuid.uuid4().hex[:6]}"
    corral.guests.create(GuestSpec(guest, "tiny", memory_mib=128))  # defined, not started
    host = corral.hosts.default.name
    port = free_port()
    with _exporter(port) as proc:
        exported = ""
        deadline = time.monotonic() + 30
        while f'domain="{guest}"' not in exported:
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the exporter did not answer within 30 s"
            with contextlib.suppress(OSError):
                exported = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            time.sleep(0.2)
    served = _served(corral, bearer)
    for text in (served, exported):
        check_metrics(text)
        assert_guest_and_hosts(text, guest, host)


def test_the_exporter_listens_on_loopback_only(offline: Corral) -> None:
    with pytest.raises(InvalidInput, match="only a loopback address"):
        serve_metrics("0.0.0.0:9177", offline.prometheus.registry)
