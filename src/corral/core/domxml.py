"""Domain XML built with ElementTree from a validated plan, and Corral's metadata read back.

Corral's own metadata (`<corral:guest>`) is declared once, on `CorralMeta`'s fields; building,
parsing and cloning derive from that declaration.

Nothing here formats XML as text: every value is set as an attribute or element text, so names
and paths can never break out of their element.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

from corral.core.errors import InvalidInput
from corral.core.spec import MAX_TRACE_STEPS, TRACE_STEP_MS, LoadSpec
from corral.core.tags import read_tag

CORRAL_NS = "https://corral.dev/xmlns/guest/1"
ET.register_namespace("corral", CORRAL_NS)

T = TypeVar("T")


# --------------------------------------------------------------------------- Corral's metadata, declared
#
# `<corral:guest>` in a domain's `<metadata>` is what makes a domain Corral's: which image it came
# from, how `--wait` knows it is up, the load it runs, its console log and the files it owns. Each
# field of `CorralMeta` declares its own XML spelling (virt-manager's virtinst `XMLProperty` is the
# model): the element, how its text or attributes read and write the value, whether it repeats, and
# what a clone does with it. Building, parsing and cloning all walk that one declaration, so a new
# field is one line in `CorralMeta`. Elements Corral does not know are left alone.


@dataclass(frozen=True)
class Codec(Generic[T]):
    """One value as XML text, both ways; `read` raises ValueError on text it cannot read."""

    read: Callable[[str], T]
    write: Callable[[T], str]


TEXT: Codec[str] = Codec(str, str)
PATH: Codec[Path] = Codec(Path, str)
INT: Codec[int] = Codec(int, str)
NUMBER: Codec[float] = Codec(float, lambda v: f"{v:g}")
TAG: Codec[str] = Codec(read_tag, str)


def _read_percents(text: str) -> tuple[int, ...]:
    steps = tuple(int(part) for part in text.split(","))
    if not 0 < len(steps) <= MAX_TRACE_STEPS or not all(0 <= pct <= 100 for pct in steps):
        raise ValueError(f"not a load trace: {text[:40]!r}")
    return steps


def _read_ms(seconds: str) -> int:
    ms = round(float(seconds) * 1000)  # ValueError for text that is not a number (or is NaN)
    if not 0 < ms <= 10**9:
        raise ValueError(f"not a step: {seconds!r}")
    return ms


#: A load trace's CPU percents, comma-separated ("10,80,10"): made to be read (the kernel command line
#: has its own, compact, spelling: `encode_trace`).
PERCENTS: Codec[tuple[int, ...]] = Codec(_read_percents, lambda steps: ",".join(map(str, steps)))
#: Milliseconds, written as seconds ("5", "0.083").
SECONDS_MS: Codec[int] = Codec(_read_ms, lambda ms: f"{ms / 1000:g}")


@dataclass(frozen=True)
class Attr:
    """One attribute of a metadata element that holds one field (`key`) of a structured value; with
    `when`, written only when `when(value)` (absent, the field reads as the default's)."""

    name: str
    key: str
    codec: Codec[Any]
    when: Callable[[Any], bool] | None = None


@dataclass(frozen=True)
class CloneTarget:
    """Where a clone's own files are: the source's owned files moved (`path_map`) and its console log."""

    path_map: Mapping[Path, Path]
    console_log: Path


#: What a clone makes of a field's value.
CloneRule = Callable[[Any, CloneTarget], Any]


def kept(value: Any, _target: CloneTarget) -> Any:
    """The clone has the same value (image, readiness, load)."""
    return value


def clones_console_log(value: Path | None, target: CloneTarget) -> Path | None:
    """The clone logs to its own console log (if the source recorded one)."""
    return target.console_log if value is not None else None


def moved_files(value: tuple[Path, ...], target: CloneTarget) -> tuple[Path, ...]:
    """The clone owns its copies of the source's owned files, and nothing that was not copied."""
    return tuple(target.path_map[p] for p in value if p in target.path_map)


@dataclass(frozen=True)
class MetaField:
    """The XML spelling of one `CorralMeta` field: element `<corral:TAG>` whose text (`codec`) or
    attributes (`attrs`, the fields of a structured value) hold the value; `many`: the element repeats
    once per item of a tuple. A missing, empty or unreadable element reads as the field's default."""

    tag: str
    codec: Codec[Any] | None = None
    attrs: tuple[Attr, ...] = ()
    many: bool = False
    on_clone: CloneRule = kept

    def __post_init__(self) -> None:
        if (self.codec is None) == (not self.attrs) or (self.attrs and self.many):
            raise TypeError(f"corral:{self.tag}: declare a codec, or attrs of a single element")

    @property
    def qname(self) -> str:
        return f"{{{CORRAL_NS}}}{self.tag}"

    def read(self, guest: ET.Element, default: Any) -> Any:
        found = guest.findall(self.qname)
        if self.many:
            return tuple(v for el in found if (v := self._read_one(el, None)) is not None)
        value = self._read_one(found[0], default) if found else None
        return default if value is None else value

    def _read_one(self, el: ET.Element, default: Any) -> Any:
        if self.codec is not None:
            if not el.text:
                return None
            try:
                return self.codec.read(el.text)
            except ValueError:
                return None
        values: dict[str, Any] = {}
        for attr in self.attrs:
            text = el.get(attr.name)
            if text is not None:
                with contextlib.suppress(ValueError):  # unreadable: the default's value
                    values[attr.key] = attr.codec.read(text)
        try:
            return replace(default, **values)
        except (ValueError, InvalidInput):  # each readable, together not a value (edited by hand): the default
            return default

    def fill(self, el: ET.Element, value: Any) -> None:
        if self.codec is not None:
            el.text = self.codec.write(value)
        for attr in self.attrs:
            if attr.when is None or attr.when(value):
                el.set(attr.name, attr.codec.write(getattr(value, attr.key)))
            else:
                el.attrib.pop(attr.name, None)

    def items(self, value: Any) -> list[Any]:
        if self.many:
            return list(value)
        return [] if value is None else [value]


def spelled(tag: str, codec: Codec[Any] | None = None, *, attrs: tuple[Attr, ...] = (), many: bool = False,
        on_clone: CloneRule = kept) -> dict[str, MetaField]:
    """A `CorralMeta` field's XML spelling (see `MetaField`), as the field's metadata."""
    return {_SPELLING: MetaField(tag, codec, attrs, many, on_clone)}


_SPELLING = "corral-xml"


def _has_trace(load: LoadSpec) -> bool:
    return bool(load.trace)


@dataclass(frozen=True)
class CorralMeta:
    """Corral's own facts about a guest, kept in its domain XML; each field declares its element."""

    image: str = field(default="", metadata=spelled("image", TEXT))
    readiness: str = field(default="agent", metadata=spelled("readiness", TEXT))
    load: LoadSpec = field(default=LoadSpec(), metadata=spelled("load", attrs=(
        Attr("cpu", "cpu_pct", NUMBER), Attr("disk", "disk_kbps", INT), Attr("net", "net_kbps", INT),
        Attr("trace", "trace", PERCENTS, _has_trace), Attr("step", "step_ms", SECONDS_MS, _has_trace))))
    console_log: Path | None = field(default=None, metadata=spelled("console-log", PATH, on_clone=clones_console_log))
    owned_files: tuple[Path, ...] = field(default=(), metadata=spelled("owned-file", PATH, many=True,
                                                                       on_clone=moved_files))
    # Where its own files are: "files" in Corral's data folder (a host that shares it), or "pool": volumes
    # of the corral storage pool on its host, reached only through libvirt's storage API.
    storage: str = field(default="files", metadata=spelled("storage", TEXT))
    # Short labels (`corral tag`), one `<corral:tag>` each; one that is not a tag (edited by hand) is ignored.
    tags: tuple[str, ...] = field(default=(), metadata=spelled("tag", TAG, many=True))


#: The declaration, in the order the elements are written: (CorralMeta field, spelling, default).
GUEST_META: tuple[tuple[str, MetaField, Any], ...] = tuple(
    (f.name, f.metadata[_SPELLING], f.default) for f in fields(CorralMeta)
)


def write_meta(metadata: ET.Element, meta: CorralMeta) -> ET.Element:
    """Append `<corral:guest>` holding `meta` to a domain's `<metadata>` element."""
    guest = ET.SubElement(metadata, f"{{{CORRAL_NS}}}guest")
    for name, spelling, _default in GUEST_META:
        _put(guest, spelling, getattr(meta, name))
    return guest


def read_meta(root: ET.Element) -> CorralMeta | None:
    """Corral's metadata in a domain's XML, or None for a domain Corral did not make."""
    guest = root.find(f"metadata/{{{CORRAL_NS}}}guest")
    if guest is None:
        return None
    return CorralMeta(**{name: spelling.read(guest, default) for name, spelling, default in GUEST_META})


def _put(guest: ET.Element, spelling: MetaField, value: Any) -> None:
    """Make `guest`'s elements of one field say `value`: existing elements are rewritten in place (their
    other attributes and position kept), surplus ones removed, missing ones added after the last."""
    old = guest.findall(spelling.qname)
    items = spelling.items(value)
    for el, item in zip(old, items, strict=False):
        spelling.fill(el, item)
    for el in old[len(items):]:
        _remove(guest, el)
    anchor = old[-1] if old else None
    for item in items[len(old):]:
        el = ET.Element(spelling.qname)
        spelling.fill(el, item)
        _insert_after(guest, anchor, el)
        anchor = el


def _remove(parent: ET.Element, el: ET.Element) -> None:
    kids = list(parent)
    at = kids.index(el)
    if at == len(kids) - 1 and at > 0:  # the last child's tail indents the closing tag: keep it
        kids[at - 1].tail = el.tail
    parent.remove(el)


def _insert_after(parent: ET.Element, anchor: ET.Element | None, el: ET.Element) -> None:
    kids = list(parent)
    after = kids.index(anchor) if anchor is not None else len(kids) - 1
    if after >= 0:  # take over the layout: the new element sits where the anchor's tail led
        el.tail = kids[after].tail
        if after == len(kids) - 1:
            kids[after].tail = kids[after - 1].tail if after > 0 else parent.text
    parent.insert(after + 1, el)


def plan_meta(plan: DomainPlan) -> CorralMeta:
    """The metadata a new guest's XML records."""
    owned = tuple(d.path for d in plan.disks if d.owned) + tuple(plan.extra_owned_files)
    return CorralMeta(image=plan.image, readiness=plan.readiness, load=plan.load, console_log=plan.console_log,
                      owned_files=owned, storage=plan.storage)


@dataclass(frozen=True)
class DiskPlan:
    path: Path
    format: str  # qcow2 | raw
    device: str = "disk"  # disk | cdrom
    owned: bool = True  # made by Corral for this guest: removed with it
    backing: Path | None = None  # an overlay's base image (read-only, never relabeled)
    backing_format: str | None = None
    readonly: bool = False  # a disk the guest only reads (its cloud-init seed: virtio, which every kernel has)


@dataclass(frozen=True)
class DomainPlan:
    """Everything needed to define one guest, all names and paths already validated and resolved."""

    name: str
    uuid: str  # chosen by Corral, so a create can recognise its own domain after losing libvirt's answer
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
    # How `--wait` knows the guest is up: "serial", the tiny image's readiness line; "agent", the QEMU
    # guest agent answers; "running", the domain runs (an installer ISO gives no other signal).
    readiness: str = "agent"
    storage: str = "files"  # files (Corral's data folder) | pool (volumes of the host's corral pool)
    extra_owned_files: tuple[Path, ...] = field(default_factory=tuple)


def build_domain_xml(plan: DomainPlan) -> str:
    dom = ET.Element("domain", type=plan.domain_type)
    ET.SubElement(dom, "name").text = plan.name
    ET.SubElement(dom, "uuid").text = plan.uuid
    ET.SubElement(dom, "description").text = f"Corral guest from image {plan.image}"
    write_meta(ET.SubElement(dom, "metadata"), plan_meta(plan))

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
        # The disk first, then the CD: a blank disk is not bootable, so the installer on the CD starts;
        # once it has installed onto the disk, the guest boots from the disk (as Proxmox orders them).
        ET.SubElement(os_el, "boot", dev="hd")
        if any(d.device == "cdrom" for d in plan.disks):
            ET.SubElement(os_el, "boot", dev="cdrom")
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
        if disk.backing is not None:  # the chain spelled out: QEMU opens this base and nothing below it
            store = ET.SubElement(el, "backingStore", type="file")
            ET.SubElement(store, "format", type=disk.backing_format or "raw")
            ET.SubElement(store, "source", file=str(disk.backing))
            ET.SubElement(store, "backingStore")
        if disk.device == "cdrom":
            ET.SubElement(el, "target", dev=f"sd{chr(ord('a') + sata_index)}", bus="sata")
            ET.SubElement(el, "readonly")
            sata_index += 1
        else:
            ET.SubElement(el, "target", dev=f"vd{chr(ord('a') + virtio_index)}", bus="virtio")
            if disk.readonly:
                ET.SubElement(el, "readonly")
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
    _add_no_relabel(dom)
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode")


def _add_no_relabel(dom: ET.Element) -> None:
    """libvirt's DAC driver would chown every file a guest uses (base images, ISOs, kernels) to QEMU's
    user while it runs, and not always back: a guest never changes a file it was given. Files Corral
    makes for the guest are given to QEMU's user by Corral itself."""
    ET.SubElement(dom, "seclabel", type="none", model="dac")


def has_no_relabel(root: ET.Element) -> bool:
    return any(el.get("model") == "dac" and (el.get("type") == "none" or el.get("relabel") == "no")
               for el in root.findall("seclabel"))


def harden_domain_xml(xml: str, backing: dict[Path, tuple[Path, str]]) -> str | None:
    """A Corral guest's XML made by an older Corral, with no-relabel and its overlays' backing chains
    spelled out (`backing`: overlay -> (base, format)); None when it needs no change."""
    root = ET.fromstring(xml)
    changed = False
    if not has_no_relabel(root):
        for old in root.findall("seclabel"):
            if old.get("model") == "dac":
                root.remove(old)
        _add_no_relabel(root)
        changed = True
    for disk in root.iterfind("devices/disk"):
        source = disk.find("source")
        path = Path(source.get("file", "")) if source is not None else None
        if path is None or path not in backing or disk.find("backingStore") is not None:
            continue
        base, fmt = backing[path]
        store = ET.Element("backingStore", type="file")
        ET.SubElement(store, "format", type=fmt)
        ET.SubElement(store, "source", file=str(base))
        ET.SubElement(store, "backingStore")
        disk.insert(list(disk).index(source) + 1 if source is not None else 0, store)
        changed = True
    return ET.tostring(root, encoding="unicode") if changed else None


def eject_media_xml(xml: str, device: str | None = None) -> list[tuple[str, str]]:
    """For `media eject`: each CD drive holding media (or only `device`, e.g. sda) as (its target, its
    device XML without the media), for libvirt's update-device. Raises InvalidInput when there is
    nothing to eject, naming the drives there are."""
    root = ET.fromstring(xml)
    drives = [d for d in root.iterfind("devices/disk") if d.get("device") == "cdrom"]
    names = [_target_dev(d) for d in drives]
    if device is not None and device not in names:
        raise InvalidInput(f"{root.findtext('name')} has no CD drive {device}" +
                           (f" (its CD drives: {', '.join(names)})" if names else " (it has no CD drive)"))
    out = []
    for drive, target in zip(drives, names, strict=True):
        source = drive.find("source")
        if (device is not None and target != device) or source is None or not source.get("file"):
            continue
        emptied = ET.fromstring(ET.tostring(drive, encoding="unicode"))
        for child in list(emptied):
            if child.tag in ("source", "backingStore", "alias", "address"):
                emptied.remove(child)
        out.append((target, ET.tostring(emptied, encoding="unicode")))
    if not out:
        where = f"CD drive {device}" if device else "any CD drive"
        raise InvalidInput(f"{root.findtext('name')} has no media in {where} to eject")
    return out


def _target_dev(disk: ET.Element) -> str:
    target = disk.find("target")
    return target.get("dev", "?") if target is not None else "?"


def boot_from_disk_first(xml: str) -> str | None:
    """A definition whose boot order puts the disk before the CD (for an older Corral's ISO guests,
    which booted the CD first); None when it already does or names no boot devices."""
    root = ET.fromstring(xml)
    os_el = root.find("os")
    if os_el is None:
        return None
    boots = os_el.findall("boot")
    order = [b.get("dev") for b in boots]
    if "hd" not in order or order[0] == "hd":
        return None
    first = os_el.find("boot")
    hd = next(b for b in boots if b.get("dev") == "hd")
    os_el.remove(hd)
    os_el.insert(list(os_el).index(first) if first is not None else len(os_el), hd)
    return ET.tostring(root, encoding="unicode")


@dataclass(frozen=True)
class DomainFacts:
    """What Corral reads back from any domain's XML, made by Corral or not."""

    name: str
    vcpus: int
    memory_mib: int
    disks: tuple[DiskPlan, ...]
    vnc_port: int | None
    meta: CorralMeta | None
    uuid: str = ""
    kernel: Path | None = None
    initrd: Path | None = None
    no_relabel: bool = False  # the DAC driver leaves every file of this guest as it is
    has_agent_channel: bool = False


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
            base = disk.find("backingStore/source")
            base_format = disk.find("backingStore/format")
            disks.append(DiskPlan(Path(path), driver.get("type", "raw") if driver is not None else "raw",
                                  disk.get("device", "disk"), owned=False,
                                  backing=Path(base.get("file", "")) if base is not None and base.get("file")
                                  else None,
                                  backing_format=base_format.get("type") if base_format is not None else None))
    vnc_port = None
    for graphics in root.iterfind("devices/graphics"):
        if graphics.get("type") == "vnc" and graphics.get("port", "-1") not in ("-1", ""):
            vnc_port = int(graphics.get("port", "0"))
    kernel, initrd = root.findtext("os/kernel"), root.findtext("os/initrd")
    agent = any(t.get("name") == "org.qemu.guest_agent.0" for t in root.iterfind("devices/channel/target"))
    return DomainFacts(name, vcpus, memory_mib, tuple(disks), vnc_port, read_meta(root),
                       uuid=root.findtext("uuid") or "", kernel=Path(kernel) if kernel else None,
                       initrd=Path(initrd) if initrd else None, no_relabel=has_no_relabel(root),
                       has_agent_channel=agent)


def _to_mib(value: int, unit: str) -> int:
    factor = {"b": 1 / 1024 / 1024, "bytes": 1 / 1024 / 1024, "k": 1 / 1024, "kib": 1 / 1024,
              "m": 1, "mib": 1, "g": 1024, "gib": 1024, "kb": 1000 / 1024 / 1024,
              "mb": 1000 * 1000 / 1024 / 1024, "gb": 1e9 / 1024 / 1024}.get(unit.lower(), 1 / 1024)
    return round(value * factor)


def clone_domain_xml(xml: str, new_name: str, path_map: dict[Path, Path], console_log: Path, uuid: str) -> str:
    """A copy of a domain's (inactive) XML for a clone: new name and UUID, no MACs, owned disks
    and the console log moved to the clone's own files, the hostname on the kernel command line."""
    root = ET.fromstring(xml)
    old_name = root.findtext("name") or ""
    name_el = root.find("name")
    if name_el is None:
        raise ValueError("domain XML has no <name>")
    name_el.text = new_name
    for el in root.findall("uuid"):
        el.text = uuid
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
    guest = root.find(f"metadata/{{{CORRAL_NS}}}guest")
    meta = read_meta(root)
    if guest is not None and meta is not None:
        target = CloneTarget(path_map, console_log)
        for name, spelling, _default in GUEST_META:
            value = getattr(meta, name)
            cloned = spelling.on_clone(value, target)
            if cloned != value:
                _put(guest, spelling, cloned)
    return ET.tostring(root, encoding="unicode")


def snapshot_xml(name: str, description: str) -> str:
    snap = ET.Element("domainsnapshot")
    ET.SubElement(snap, "name").text = name
    ET.SubElement(snap, "description").text = description
    return ET.tostring(snap, encoding="unicode")


def guest_hostname(name: str) -> str:
    """A domain name as a hostname: '.' and '_' (valid in names, not in hostnames) become '-'."""
    return name.replace(".", "-").replace("_", "-")


#: x86's COMMAND_LINE_SIZE is 2048 bytes with the final NUL: the kernel cuts a longer command line short.
MAX_CMDLINE_BYTES = 2047


def encode_trace(steps: tuple[int, ...]) -> str:
    """A load trace on the kernel command line: two hex digits a step ("0a50" is 10 %, then 80 %)."""
    return "".join(f"{pct:02x}" for pct in steps)


def decode_trace(text: str) -> tuple[int, ...]:
    """`encode_trace`'s inverse; ValueError for anything else (as corral-load refuses it)."""
    if not text or len(text) % 2 or len(text) > 2 * MAX_TRACE_STEPS or not set(text) <= set("0123456789abcdef"):
        raise ValueError(f"not an encoded load trace: {text[:40]!r}")
    steps = tuple(int(text[i:i + 2], 16) for i in range(0, len(text), 2))
    if max(steps) > 100:
        raise ValueError(f"a load trace step above 100 %: {text[:40]!r}")
    return steps


def tiny_cmdline(base: str, name: str, load: LoadSpec) -> str:
    """The built-in image's kernel command line: its hostname and the workload it runs at boot
    (`parse_tiny_cmdline` reads it back; the guest's /init and corral-load are its other reader).
    InvalidInput when it would not fit the kernel's command line."""
    words = [*base.split(), f"corral.name={guest_hostname(name)}"]
    if load.cpu_pct:
        words.append(f"corral.cpu={load.cpu_pct:g}")
    if load.disk_kbps:
        words.append(f"corral.disk={load.disk_kbps}")
    if load.net_kbps:
        words.append(f"corral.net={load.net_kbps}")
    if load.trace:
        words += [f"corral.trace={encode_trace(load.trace)}", f"corral.step_ms={load.step_ms}"]
    line = " ".join(words)
    if len(line.encode()) > MAX_CMDLINE_BYTES:
        raise InvalidInput(f"the guest's kernel command line would be {len(line.encode())} bytes, more than the "
                           f"{MAX_CMDLINE_BYTES} the kernel keeps: use a shorter load trace")
    return line


def parse_tiny_cmdline(cmdline: str) -> tuple[str | None, LoadSpec]:
    """The hostname and the load a tiny guest's kernel command line gives it (what /init reads); words
    that are not Corral's are ignored. ValueError for a Corral word it cannot read."""
    found: dict[str, str] = {}
    for word in cmdline.split():
        key, sep, value = word.partition("=")
        if sep and key.startswith("corral."):
            found[key.removeprefix("corral.")] = value
    trace = decode_trace(found["trace"]) if "trace" in found else ()
    try:
        load = LoadSpec(float(found.get("cpu", 0)), int(found.get("disk", 0)), int(found.get("net", 0)), trace,
                        int(found["step_ms"]) if trace and "step_ms" in found else TRACE_STEP_MS)
    except InvalidInput as exc:
        raise ValueError(exc.message) from None
    return found.get("name"), load


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


def build_pool_xml(name: str, path: str) -> str:
    """A directory storage pool: where Corral keeps images and guests' disks on a host that does not
    share its data folder."""
    pool = ET.Element("pool", type="dir")
    ET.SubElement(pool, "name").text = name
    target = ET.SubElement(pool, "target")
    ET.SubElement(target, "path").text = path
    return ET.tostring(pool, encoding="unicode")


def build_volume_xml(name: str, capacity_bytes: int, fmt: str, *, backing: tuple[str, str] | None = None,
                     owner: tuple[int, int] | None = None, mode: str = "0600") -> str:
    """A volume of a pool: `fmt` qcow2 or raw, an overlay when `backing` (path, format) is given, owned by
    QEMU's user when `owner` is given (the files Corral makes for a guest are QEMU's to use)."""
    vol = ET.Element("volume", type="file")
    ET.SubElement(vol, "name").text = name
    ET.SubElement(vol, "capacity", unit="bytes").text = str(int(capacity_bytes))
    target = ET.SubElement(vol, "target")
    ET.SubElement(target, "format", type=fmt)
    permissions = ET.SubElement(target, "permissions")
    ET.SubElement(permissions, "mode").text = mode
    if owner is not None:
        ET.SubElement(permissions, "owner").text = str(owner[0])
        ET.SubElement(permissions, "group").text = str(owner[1])
    if backing is not None:
        store = ET.SubElement(vol, "backingStore")
        ET.SubElement(store, "path").text = backing[0]
        ET.SubElement(store, "format", type=backing[1])
    return ET.tostring(vol, encoding="unicode")


def relocate_domain_xml(xml: str, paths: dict[Path, Path], *, drop_backing: set[Path] | None = None,
                        console_log: Path | None = None) -> str:
    """A domain's XML with its files at other paths (a guest copied to another host's storage): disk
    sources, kernel and initrd, the console log and Corral's metadata follow `paths`; disks in
    `drop_backing` were copied whole (their backing chain flattened) and lose their backingStore."""
    root = ET.fromstring(xml)
    for disk in root.iterfind("devices/disk"):
        source = disk.find("source")
        if source is None or not source.get("file"):
            continue
        old = Path(source.get("file", ""))
        if old in paths:
            source.set("file", str(paths[old]))
        if drop_backing and old in drop_backing:
            for store in disk.findall("backingStore"):
                disk.remove(store)
    for tag in ("os/kernel", "os/initrd"):
        el = root.find(tag)
        if el is not None and el.text and Path(el.text) in paths:
            el.text = str(paths[Path(el.text)])
    if console_log is not None:
        for log in root.iterfind("devices/serial/log"):
            log.set("file", str(console_log))
    meta = root.find(f"metadata/{{{CORRAL_NS}}}guest")
    if meta is not None:
        for el in meta:
            if el.text and Path(el.text) in paths:
                el.text = str(paths[Path(el.text)])
            if console_log is not None and el.tag == f"{{{CORRAL_NS}}}console-log":
                el.text = str(console_log)
    return ET.tostring(root, encoding="unicode")


def set_meta_storage(xml: str, storage: str) -> str:
    """A Corral guest's XML with its metadata saying where its files now are (files | pool)."""
    root = ET.fromstring(xml)
    meta = root.find(f"metadata/{{{CORRAL_NS}}}guest")
    if meta is not None:
        el = meta.find(f"{{{CORRAL_NS}}}storage")
        if el is None:
            el = ET.SubElement(meta, f"{{{CORRAL_NS}}}storage")
        el.text = storage
    return ET.tostring(root, encoding="unicode")


def meta_with_tags(xml: str, tags: tuple[str, ...]) -> str | None:
    """A domain's `<corral:guest>` element with its tags replaced by `tags` (already checked), everything else
    in it kept; None for a domain Corral did not make. Written without its namespace, as libvirt's metadata
    call takes it (libvirt puts Corral's namespace on it and every element inside)."""
    root = ET.fromstring(xml)
    guest = root.find(f"metadata/{{{CORRAL_NS}}}guest")
    if guest is None:
        return None
    spelling = next(s for n, s, _d in GUEST_META if n == "tags")
    _put(guest, spelling, tags)
    for el in guest.iter():
        el.tag = el.tag.removeprefix(f"{{{CORRAL_NS}}}")
    return ET.tostring(guest, encoding="unicode")


# --------------------------------------------------------------------------- a guest's disks and NICs, changed
#
# `corral disk …` and `corral nic …` hot-plug devices into a guest (libvirt's attach-device and detach-device):
# the device XML is built here, and the disks and NICs a definition has are read back here.


@dataclass(frozen=True)
class DomainDisk:
    """One disk or CD drive of a domain as its XML declares it."""

    target: str  # vda, sda
    device: str  # disk | cdrom
    bus: str
    path: Path | None  # its file (None: an empty CD drive, or a disk that is not a file)
    format: str
    xml: str  # its <disk> element, as detach-device wants it


def domain_disks(xml: str) -> list[DomainDisk]:
    """The disks and CD drives a domain XML declares, in its order."""
    disks = []
    for el in ET.fromstring(xml).iterfind("devices/disk"):
        target = el.find("target")
        source = el.find("source")
        driver = el.find("driver")
        file = source.get("file") if source is not None else None
        disks.append(DomainDisk(target.get("dev", "") if target is not None else "", el.get("device", "disk"),
                                target.get("bus", "") if target is not None else "",
                                Path(file) if file else None,
                                driver.get("type", "raw") if driver is not None else "raw",
                                ET.tostring(el, encoding="unicode")))
    return disks


def disk_target_name(index: int, prefix: str = "vd") -> str:
    """The `index`th target name, as Linux names disks: vda … vdz, vdaa, vdab …"""
    if index < 0:
        raise ValueError(f"a disk index must not be negative, not {index}")
    letters = ""
    while True:
        letters = chr(ord("a") + index % 26) + letters
        index = index // 26 - 1
        if index < 0:
            return prefix + letters


def next_disk_target(*xmls: str) -> str:
    """The first virtio target (vdX) no disk of any of these XMLs (the definition, the running guest's) uses."""
    used = {d.target for xml in xmls for d in domain_disks(xml)}
    return next(name for name in map(disk_target_name, itertools.count()) if name not in used)


def disk_device_xml(path: Path, target: str, fmt: str = "qcow2") -> str:
    """A virtio disk backed by a file, for attach-device (the same shape as the disks of `build_domain_xml`)."""
    el = ET.Element("disk", type="file", device="disk")
    ET.SubElement(el, "driver", name="qemu", type=fmt)
    ET.SubElement(el, "source", file=str(path))
    ET.SubElement(el, "target", dev=target, bus="virtio")
    return ET.tostring(el, encoding="unicode")


def nic_device_xml(mac: str, network: str | None, model: str = "virtio") -> str:
    """A NIC with a given MAC on a libvirt network (a tap on its bridge), or user-mode with no network."""
    el = ET.Element("interface", type="network" if network else "user")
    ET.SubElement(el, "mac", address=mac)
    if network:
        ET.SubElement(el, "source", network=network)
    ET.SubElement(el, "model", type=model)
    return ET.tostring(el, encoding="unicode")


def domain_nic_xml(xml: str, mac: str) -> str | None:
    """The <interface> element with this MAC (any case) in a domain XML, as detach-device wants it."""
    for iface in ET.fromstring(xml).iterfind("devices/interface"):
        found = iface.find("mac")
        if found is not None and found.get("address", "").lower() == mac.lower():
            return ET.tostring(iface, encoding="unicode")
    return None


def meta_with_owned_files(xml: str, owned: tuple[Path, ...]) -> str:
    """A Corral guest's `<corral:guest>` element with its owned files changed to `owned`, everything else as
    it was, for libvirt's set-metadata: without namespace prefixes (libvirt puts the element and all its
    children in Corral's namespace itself, and refuses an element that declares it). InvalidInput for a
    domain Corral did not make."""
    root = ET.fromstring(xml)
    guest = root.find(f"metadata/{{{CORRAL_NS}}}guest")
    if guest is None:
        raise InvalidInput(f"{root.findtext('name')} was not made by Corral: it has no Corral metadata")
    spelling = dict((name, s) for name, s, _default in GUEST_META)["owned_files"]
    _put(guest, spelling, owned)
    for el in guest.iter():
        if el.tag.startswith(f"{{{CORRAL_NS}}}"):
            el.tag = el.tag[len(CORRAL_NS) + 2:]
    return ET.tostring(guest, encoding="unicode").strip()
