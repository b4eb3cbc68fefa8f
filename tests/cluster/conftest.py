"""A cluster of three private libvirt hosts on this machine (corral lab), with a Corral of its own (its
own data folder, images shared with the test cache), for the multi-host tests."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from corral.adapters.lab import Lab, LabHost
from corral.config import Settings
from corral.core.hosts import HostSpec, PowerSpec
from corral.services.context import Corral, open_corral
from tests.conftest import libvirt_available, require

CORRAL_BIN = str(Path(sys.executable).with_name("corral"))
LAB_HOSTS = ("lab1", "lab2", "lab3")  # storage shared (they see the data folder)
COPY_HOST = "lab4"  # storage copy: images and disks reach it through its storage pool


@dataclass
class Cluster:
    corral: Corral
    lab: Lab
    hosts: list[LabHost]
    env: dict[str, str]

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CORRAL_BIN, *args], capture_output=True, text=True, env=self.env, check=False,
                              timeout=timeout)

    def name(self, label: str) -> str:
        return f"ct-{label}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="session")
def cluster(settings: Settings, corral_session: Corral, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require(os.geteuid() == 0, "root (lab hosts are privileged libvirt daemons in namespaces)")
    require(libvirt_available(), "libvirt")
    data = tmp_path_factory.mktemp("cluster-data")
    (data / "images").symlink_to(os.path.realpath(settings.images_dir))
    config = data / "config.toml"
    config.write_text("")
    lab = Lab(data / "lab")
    hosts = lab.create([*LAB_HOSTS, COPY_HOST])
    cluster_settings = replace(settings, data_dir=data, config_path=None)
    corral = open_corral(cluster_settings)
    lab_cli = f"env CORRAL_DATA_DIR={data} CORRAL_CONFIG={config} {CORRAL_BIN} lab"
    for host in hosts:  # powered through the command driver: stopping and starting the lab host
        corral.host.add(HostSpec(host.name, host.uri, storage="copy" if host.name == COPY_HOST else "shared",
                                 network="",
                                 power=PowerSpec("command", (("standby", f"{lab_cli} stop {host.name}"),
                                                             ("wake", f"{lab_cli} start {host.name}")))))
    env = {**os.environ, "CORRAL_DATA_DIR": str(data), "CORRAL_CONFIG": str(config)}
    try:
        yield Cluster(corral, lab, hosts, env)
    finally:
        corral.close()
        lab.destroy()


@pytest.fixture(autouse=True)
def lab_hosts_awake(request: pytest.FixtureRequest) -> None:
    """Each cluster test begins with every lab host up: one that an earlier test (or a balancer it ran)
    left in standby is woken first."""
    if "cluster" not in request.fixturenames:
        return
    cluster: Cluster = request.getfixturevalue("cluster")
    for target in list(cluster.corral.hosts):
        if target.standby:
            cluster.corral.host.wake(target.name)
