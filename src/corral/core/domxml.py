"""Domain XML built with ElementTree from a validated plan, and Corral's metadata read back.

Nothing here formats XML as text: every value is set as an attribute or element text, so names
and paths can never break out of their element.
"""

from __future__ import annotations

import ipaddress
import itertools
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from corral.core.spec import LoadSpec

CORRAL_NS = "https://corral.dev/xmlns/guest/1"
ET.register_namespace("corral", CORRAL_NS)


@dataclass(frozen=True)
class DiskPlan:
    path: Path
    format: str  # qcow2 | raw
    device: str = "disk"  # disk | cdrom
    owned: bool = True  # made by Corral for this guest: removed with it


@dataclass(frozen=True)
class DomainPlan:
    """Everything needed to define one guest, all names and paths already validated and resolved."""

    name: str
    domain_type: str  # kvm | qemu (TCG)
    emulator: str
    vcpus: int
    memory_mib: int
    image: str
    load: LoadSpec
    disks: tuple[DiskPlan, ...]
    console_log: Path
    kernel: Path | None = None
    initrd: Path | None = None
    cmdline: str | None = None
    machine: str = "pc"
    network: str | None = None  # a libvirt network (a tap on its bridge); None: QEMU user-mode NIC
    readiness: str = "agent"  # "serial": the tiny image's readiness line; "agent": qemu-guest-agent
    extra_owned_files: tuple[Path, ...] = field(default_factory=tuple)


def build_domain_xml(plan: DomainPlan) -> str:
    dom = ET.Element("domain", type=plan.domain_type)
    ET.SubElement(dom, "name").text = plan.name
    ET.SubElement(dom, "description").text = f"Corral guest from image {plan.image}"
    meta = ET.SubElement(ET.SubElement(dom, "metadata"), f"{{{CORRAL_NS}}}guest")
    ET.SubElement(meta, f"{{{CORRAL_NS}}}image").text = plan.image
    ET.SubElement(meta, f"{{{CORRAL_NS}}}readiness").text = plan.readiness
    ET.SubElement(
        meta,
        f"{{{CORRAL_NS}}}load",
        cpu=f"{plan.load.cpu_pct:g}",
        disk=str(plan.load.disk_kbps),
        net=str(plan.load.net_kbps),
    )
    ET.SubElement(meta, f"{{{CORRAL_NS}}}console-log").text = str(plan.console_log)
    for disk in plan.disks:
        if disk.owned:
            ET.SubElement(meta, f"{{{CORRAL_NS}}}owned-file").text = str(disk.path)
    for extra in plan.extra_owned_files:
        ET.SubElement(meta, f"{{{CORRAL_NS}}}owned-file").text = str(extra)

    ET.SubElement(dom, "memory", unit="MiB").text = str(plan.memory_mib)
    ET.SubElement(dom, "currentMemory", unit="MiB").text = str(plan.memory_mib)
    ET.SubElement(dom, "vcpu", placement="static").text = str(plan.vcpus)

    os_el = ET.SubElement(dom, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine=plan.machine).text = "hvm"
    if plan.kernel is not None:
        ET.SubElement(os_el, "kernel").text = str(plan.kernel)
        if plan.initrd is not None:
            ET.SubElement(os_el, "initrd").text = str(plan.initrd)
        if plan.cmdline:
            ET.SubElement(os_el, "cmdline").text = plan.cmdline
    else:
        if any(d.device == "cdrom" for d in plan.disks):
            ET.SubElement(os_el, "boot", dev="cdrom")
        ET.SubElement(os_el, "boot", dev="hd")
    features = ET.SubElement(dom, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    if plan.domain_type == "kvm":
        ET.SubElement(dom, "cpu", mode="host-passthrough")
    ET.SubElement(dom, "clock", offset="utc")
    ET.SubElement(dom, "on_poweroff").text = "destroy"
    ET.SubElement(dom, "on_reboot").text = "restart"
    ET.SubElement(dom, "on_crash").text = "destroy"

    devices = ET.SubElement(dom, "devices")
    ET.SubElement(devices, "emulator").text = plan.emulator
    virtio_index = 0
    sata_index = 0
    for disk in plan.disks:
        el = ET.SubElement(devices, "disk", type="file", device=disk.device)
        ET.SubElement(el, "driver", name="qemu", type=disk.format)
        ET.SubElement(el, "source", file=str(disk.path))
        if disk.device == "cdrom":
            ET.SubElement(el, "target", dev=f"sd{chr(ord('a') + sata_index)}", bus="sata")
            ET.SubElement(el, "readonly")
            sata_index += 1
        else:
            ET.SubElement(el, "target", dev=f"vd{chr(ord('a') + virtio_index)}", bus="virtio")
            virtio_index += 1
    if plan.network:  # a tap on the network's bridge: the host can count its traffic
        nic = ET.SubElement(devices, "interface", type="network")
        ET.SubElement(nic, "source", network=plan.network)
    else:  # user-mode: works anywhere, but has no host-side device and so no counters
        nic = ET.SubElement(devices, "interface", type="user")
    ET.SubElement(nic, "model", type="virtio")
    serial = ET.SubElement(devices, "serial", type="pty")
    # append: the log keeps every boot's output (virtlogd rotates it); readiness is looked for
    # after the offset where the current boot began.
    ET.SubElement(serial, "log", file=str(plan.console_log), append="on")
    ET.SubElement(serial, "target", port="0")
    console = ET.SubElement(devices, "console", type="pty")
    ET.SubElement(console, "target", type="serial", port="0")
    if plan.readiness == "agent":  # the tiny image has no agent: no channel to probe at boot
        agent = ET.SubElement(devices, "channel", type="unix")
        ET.SubElement(agent, "target", type="virtio", name="org.qemu.guest_agent.0")
    # No USB: nothing uses it, and its controller costs boot time under TCG.
    ET.SubElement(devices, "controller", type="usb", model="none")
    # The graphical console listens on loopback only; the web console proxies it.
    graphics = ET.SubElement(devices, "graphics", type="vnc", port="-1", autoport="yes")
    ET.SubElement(graphics, "listen", type="address", address="127.0.0.1")
    video = ET.SubElement(devices, "video")
    ET.SubElement(video, "model", type="vga")
    balloon = ET.SubElement(devices, "memballoon", model="virtio")
    ET.SubElement(balloon, "stats", period="5")
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode")


@dataclass(frozen=True)
class CorralMeta:
    image: str
    readiness: str
    load: LoadSpec
    console_log: Path | None
    owned_files: tuple[Path, ...]


@dataclass(frozen=True)
class DomainFacts:
    """What Corral reads back from any domain's XML, made by Corral or not."""

    name: str
    vcpus: int
    memory_mib: int
    disks: tuple[DiskPlan, ...]
    vnc_port: int | None
    meta: CorralMeta | None


def parse_domain_xml(xml: str) -> DomainFacts:
    root = ET.fromstring(xml)
    name = root.findtext("name") or ""
    vcpus = int(root.findtext("vcpu") or "1")
    memory = root.find("memory")
    memory_kib = int(memory.text or "0") if memory is not None else 0
    unit = memory.get("unit", "KiB") if memory is not None else "KiB"
    memory_mib = _to_mib(memory_kib, unit)
    disks: list[DiskPlan] = []
    for disk in root.iterfind("devices/disk"):
        source = disk.find("source")
        path = source.get("file") if source is not None else None
        if path:
            driver = disk.find("driver")
            disks.append(DiskPlan(Path(path), driver.get("type", "raw") if driver is not None else "raw",
                                  disk.get("device", "disk"), owned=False))
    vnc_port = None
    for graphics in root.iterfind("devices/graphics"):
        if graphics.get("type") == "vnc" and graphics.get("port", "-1") not in ("-1", ""):
            vnc_port = int(graphics.get("port", "0"))
    return DomainFacts(name, vcpus, memory_mib, tuple(disks), vnc_port, _parse_meta(root))


def _parse_meta(root: ET.Element) -> CorralMeta | None:
    meta = root.find(f"metadata/{{{CORRAL_NS}}}guest")
    if meta is None:
        return None
    load_el = meta.find(f"{{{CORRAL_NS}}}load")
    load = LoadSpec()
    if load_el is not None:
        load = LoadSpec(float(load_el.get("cpu", "0")), int(load_el.get("disk", "0")),
                        int(load_el.get("net", "0")))
    log = meta.findtext(f"{{{CORRAL_NS}}}console-log")
    return CorralMeta(
        image=meta.findtext(f"{{{CORRAL_NS}}}image") or "",
        readiness=meta.findtext(f"{{{CORRAL_NS}}}readiness") or "agent",
        load=load,
        console_log=Path(log) if log else None,
        owned_files=tuple(Path(e.text) for e in meta.iterfind(f"{{{CORRAL_NS}}}owned-file") if e.text),
    )


def _to_mib(value: int, unit: str) -> int:
    factor = {"b": 1 / 1024 / 1024, "bytes": 1 / 1024 / 1024, "k": 1 / 1024, "kib": 1 / 1024,
              "m": 1, "mib": 1, "g": 1024, "gib": 1024, "kb": 1000 / 1024 / 1024,
              "mb": 1000 * 1000 / 1024 / 1024, "gb": 1e9 / 1024 / 1024}.get(unit.lower(), 1 / 1024)
    return round(value * factor)


def clone_domain_xml(xml: str, new_name: str, path_map: dict[Path, Path], console_log: Path) -> str:
    """A copy of a domain's (inactive) XML for a clone: new name, no UUID or MACs, owned disks
    and the console log moved to the clone's own files, the hostname on the kernel command line."""
    root = ET.fromstring(xml)
    old_name = root.findtext("name") or ""
    name_el = root.find("name")
    if name_el is None:
        raise ValueError("domain XML has no <name>")
    name_el.text = new_name
    for tag in ("uuid",):
        for el in root.findall(tag):
            root.remove(el)
    for iface in root.iterfind("devices/interface"):
        for mac in iface.findall("mac"):
            iface.remove(mac)
    for source in root.iterfind("devices/disk/source"):
        old = Path(source.get("file", ""))
        if old in path_map:
            source.set("file", str(path_map[old]))
    for log in root.iterfind("devices/serial/log"):
        log.set("file", str(console_log))
    for graphics in root.iterfind("devices/graphics"):
        if graphics.get("autoport") == "yes":
            graphics.set("port", "-1")
    cmdline = root.find("os/cmdline")
    if cmdline is not None and cmdline.text:
        cmdline.text = " ".join(
            f"corral.name={guest_hostname(new_name)}" if word == f"corral.name={guest_hostname(old_name)}" else word
            for word in cmdline.text.split()
        )
    meta = root.find(f"metadata/{{{CORRAL_NS}}}guest")
    if meta is not None:
        log_el = meta.find(f"{{{CORRAL_NS}}}console-log")
        if log_el is not None:
            log_el.text = str(console_log)
        for owned in meta.findall(f"{{{CORRAL_NS}}}owned-file"):
            old = Path(owned.text or "")
            if old in path_map:
                owned.text = str(path_map[old])
            else:
                meta.remove(owned)
    return ET.tostring(root, encoding="unicode")


def snapshot_xml(name: str, description: str) -> str:
    snap = ET.Element("domainsnapshot")
    ET.SubElement(snap, "name").text = name
    ET.SubElement(snap, "description").text = description
    return ET.tostring(snap, encoding="unicode")


def guest_hostname(name: str) -> str:
    """A domain name as a hostname: '.' and '_' (valid in names, not in hostnames) become '-'."""
    return name.replace(".", "-").replace("_", "-")


def tiny_cmdline(base: str, name: str, load: LoadSpec) -> str:
    """The built-in image's kernel command line: its hostname and the workload it runs at boot."""
    words = [*base.split(), f"corral.name={guest_hostname(name)}"]
    if load.cpu_pct:
        words.append(f"corral.cpu={load.cpu_pct:g}")
    if load.disk_kbps:
        words.append(f"corral.disk={load.disk_kbps}")
    if load.net_kbps:
        words.append(f"corral.net={load.net_kbps}")
    return " ".join(words)


def build_network_xml(name: str, bridge: str, cidr: str, mode: str) -> str:
    """A libvirt network: a bridge with DHCP, NAT to the outside (mode "nat") or none ("isolated")."""
    network = ipaddress.ip_network(cidr, strict=True)
    if network.version != 4 or network.prefixlen > 28:
        raise ValueError(f"network {cidr} must be an IPv4 subnet of at least 16 addresses")
    hosts = list(itertools.islice(network.hosts(), 2))
    gateway, first = hosts[0], hosts[1]
    last = network.broadcast_address - 1
    root = ET.Element("network")
    ET.SubElement(root, "name").text = name
    if mode == "nat":
        ET.SubElement(root, "forward", mode="nat")
    elif mode != "isolated":
        raise ValueError(f"network mode {mode!r} must be nat or isolated")
    ET.SubElement(root, "bridge", name=bridge, stp="off", delay="0")
    ip = ET.SubElement(root, "ip", address=str(gateway), netmask=str(network.netmask))
    dhcp = ET.SubElement(ip, "dhcp")
    ET.SubElement(dhcp, "range", start=str(first + 8 if network.num_addresses > 32 else first), end=str(last))
    return ET.tostring(root, encoding="unicode")
