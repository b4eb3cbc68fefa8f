"""Which engine runs guests: KVM when a probe shows it really works, QEMU's TCG otherwise.

`/dev/kvm` existing is not enough: under PVM (`kvm_pvm`, nested without VMX/SVM) KVM_CREATE_VM
succeeds but a stock guest kernel dies after a while, and `-cpu host` aborts. So the probe
checks the module, the CPU flags, and then starts a real QEMU with `-accel kvm -cpu host` and
asks it over QMP whether KVM is enabled. The answer is cached per boot of the host.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

QEMU_BINARY = "qemu-system-x86_64"


@dataclass(frozen=True)
class Accelerator:
    engine: str  # "kvm" or "tcg"
    reason: str

    @property
    def domain_type(self) -> str:
        return "kvm" if self.engine == "kvm" else "qemu"


def emulator_path() -> str:
    return shutil.which(QEMU_BINARY) or f"/usr/bin/{QEMU_BINARY}"


def probe_kvm() -> tuple[bool, str]:
    """(works, why): a cheap chain of checks, ending in a real QEMU started with KVM."""
    kvm = Path("/dev/kvm")
    if not kvm.exists():
        return False, "no /dev/kvm (KVM module not loaded or no hardware virtualization)"
    if not os.access(kvm, os.R_OK | os.W_OK):
        return False, "/dev/kvm is not accessible to this user"
    if Path("/sys/module/kvm_pvm").exists():
        return False, "/dev/kvm is served by kvm_pvm (PVM nested mode without VMX/SVM): stock guest kernels fail"
    flags = _cpu_flags()
    if flags and not ({"vmx", "svm"} & flags):
        return False, "the CPU exposes neither VMX nor SVM"
    if shutil.which(QEMU_BINARY) is None:
        return False, f"{QEMU_BINARY} is not installed"
    commands = "".join(
        json.dumps({"execute": c}) + "\n" for c in ("qmp_capabilities", "query-kvm", "quit")
    )
    try:
        result = subprocess.run(
            [QEMU_BINARY, "-accel", "kvm", "-cpu", "host", "-M", "pc", "-m", "64", "-nodefaults",
             "-display", "none", "-S", "-qmp", "stdio"],
            input=commands, capture_output=True, text=True, timeout=20, check=False,
        )
    except subprocess.TimeoutExpired:
        return False, "a QEMU started with KVM did not answer within 20 s"
    for line in result.stdout.splitlines():
        try:
            reply = json.loads(line)
        except ValueError:
            continue
        ret = reply.get("return")
        if isinstance(ret, dict) and "enabled" in ret:
            if ret.get("enabled") and ret.get("present"):
                return True, "KVM probe: QEMU started with -accel kvm -cpu host and reports KVM enabled"
            return False, "QEMU reports KVM present but not enabled"
    detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
    return False, f"QEMU could not start with KVM: {detail}"


def choose_accelerator(preference: str, cache_dir: Path | None) -> Accelerator:
    """`preference` is auto, kvm or tcg (from the config); auto runs the probe (cached per boot)."""
    if preference == "tcg":
        return Accelerator("tcg", "TCG (software emulation) chosen in the configuration")
    cached = _read_cache(cache_dir)
    if cached is None:
        works, why = probe_kvm()
        cached = Accelerator("kvm" if works else "tcg", why if works else f"TCG because {why}")
        _write_cache(cache_dir, cached)
    if preference == "kvm" and cached.engine != "kvm":
        return Accelerator("tcg", f"KVM asked for in the configuration, but {cached.reason}")
    return cached


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def _read_cache(cache_dir: Path | None) -> Accelerator | None:
    if cache_dir is None:
        return None
    try:
        data = json.loads((cache_dir / "accelerator.json").read_text())
        if data.get("boot_id") == _boot_id():
            return Accelerator(data["engine"], data["reason"])
    except (OSError, ValueError, KeyError):
        pass
    return None


def _write_cache(cache_dir: Path | None, accel: Accelerator) -> None:
    if cache_dir is None:
        return
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        (cache_dir / "accelerator.json").write_text(json.dumps({**asdict(accel), "boot_id": _boot_id()}))
    except OSError:
        pass  # a cache that cannot be written only costs a probe next time
