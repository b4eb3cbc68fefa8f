"""Which engine runs guests: KVM when a probe shows it really works, QEMU's TCG otherwise.

`/dev/kvm` existing is not enough: under PVM (`kvm_pvm`, nested without VMX/SVM) KVM_CREATE_VM
succeeds but a stock guest kernel dies after a while, and `-cpu host` aborts. So the probe
checks the module, the CPU flags, and then starts a real QEMU with `-accel kvm -cpu host` and
asks it over QMP (qemu.qmp's client, on a socket pair) whether KVM is enabled. The answer is cached
per boot of the host.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

QEMU_BINARY = "qemu-system-x86_64"
PROBE_TIMEOUT_S = 20.0
KVM_ARGS = ("-accel", "kvm", "-cpu", "host")


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
    reply, stderr = ask_qemu(KVM_ARGS)
    if reply is None:
        if stderr is None:
            return False, f"a QEMU started with KVM did not answer within {PROBE_TIMEOUT_S:g} s"
        return False, f"QEMU could not start with KVM: {stderr or 'no output'}"
    if reply.get("enabled") and reply.get("present"):
        return True, "KVM probe: QEMU started with -accel kvm -cpu host and reports KVM enabled"
    return False, "QEMU reports KVM present but not enabled"


def ask_qemu(accel_args: Sequence[str], timeout_s: float = PROBE_TIMEOUT_S) -> tuple[dict[str, Any] | None, str | None]:
    """Start a QEMU with `accel_args`, paused and without a guest, ask it `query-kvm` over QMP and quit it.
    Returns (its answer, the last line it wrote on stderr); (None, that line) when it could not start, and
    (None, None) when it said nothing within `timeout_s`. Called from synchronous code (it runs its own loop)."""
    import asyncio  # here, with qemu.qmp: the probe runs once per boot, and both take 40 ms to load

    return asyncio.run(_ask_qemu(tuple(accel_args), timeout_s))


async def _ask_qemu(accel_args: tuple[str, ...], timeout_s: float) -> tuple[dict[str, Any] | None, str | None]:
    import asyncio

    from qemu.qmp import QMPClient, QMPError

    ours, theirs = socket.socketpair()  # QEMU's monitor on one end (an inherited fd), qemu.qmp on the other
    try:
        proc = await asyncio.create_subprocess_exec(
            QEMU_BINARY, *accel_args, "-M", "pc", "-m", "64", "-nodefaults", "-display", "none", "-S",
            "-chardev", f"socket,id=qmp,fd={theirs.fileno()}", "-mon", "chardev=qmp,mode=control",
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=(theirs.fileno(),))
    finally:
        theirs.close()
    qmp = QMPClient("kvm-probe")
    reply: object = None
    timed_out = asked_to_quit = False
    try:
        async with asyncio.timeout(timeout_s):
            await qmp.connect(ours)  # the greeting, then qmp_capabilities
            reply = await qmp.execute("query-kvm")
            asked_to_quit = True
            with contextlib.suppress(QMPError):  # QEMU may close the monitor before its answer arrives
                await qmp.execute("quit")
    except TimeoutError:
        timed_out = True
    except (QMPError, OSError):
        pass  # QEMU exited (its stderr says why) or closed the monitor
    finally:
        with contextlib.suppress(QMPError, OSError, EOFError):  # the end of a monitor QEMU closed on quit
            await qmp.disconnect()
        ours.close()
    if not asked_to_quit and proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()  # one that hangs, or lost its monitor: a paused QEMU without a guest, nothing to save
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 5.0)
    except TimeoutError:
        proc.kill()
        _, err = await proc.communicate()
    if isinstance(reply, dict):
        return reply, None
    if timed_out:
        return None, None
    return None, (err.decode(errors="replace").strip().splitlines() or [""])[-1]


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
