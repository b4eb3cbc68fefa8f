"""Boot and listing speed: `corral start --wait` against plain QEMU, and `corral list --json`.

Prints, measured in the same run on this host:
- plain `qemu-system-x86_64` booting the tiny image's kernel and initramfs to its readiness
  line (the baseline), with the same devices Corral gives a guest;
- `corral start --wait` of a defined guest until it is up (CLI process included), and the ratio;
- `corral list --json` with 20 defined guests;
- the Debian server image (`corral image build debian`): plain QEMU booting the same disk, kernel and
  initrd to its login prompt, against `corral start --wait` until the guest agent answers (its first
  boot, when cloud-init configures it from the seed, apart from later boots). BENCH_DEBIAN=0 skips it.
Goals: start within 1.3x of plain QEMU; list of 20 guests under 0.3 s.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from corral.core.spec import GuestSpec
from corral.services.context import open_corral

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
DEBIAN_RUNS = int(os.environ.get("BENCH_DEBIAN_RUNS", "2"))
CORRAL = str(Path(sys.executable).with_name("corral"))


def plain_qemu_boot(kernel: str, initrd: str, cmdline: str, disk: Path, engine: str) -> float:
    args = [
        "qemu-system-x86_64",
        "-M",
        "pc",
        "-accel",
        engine,
        "-m",
        "160",
        "-smp",
        "1",
        "-nodefaults",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-kernel",
        kernel,
        "-initrd",
        initrd,
        "-append",
        cmdline,
        "-netdev",
        "user,id=n0",
        "-device",
        "virtio-net-pci,netdev=n0",
        "-drive",
        f"file={disk},if=virtio,format=qcow2",
        "-device",
        "virtio-balloon",
    ]
    began = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    try:
        seen = b""
        while b"CORRAL-READY" not in seen:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError("QEMU exited before the guest was up")
            seen += chunk
        return time.monotonic() - began
    finally:
        proc.kill()
        proc.wait()


def plain_qemu_login(kernel: str, initrd: str, cmdline: str, disk: Path, engine: str) -> float:
    """Plain QEMU booting a disk with its own kernel to the serial login prompt."""
    args = ["qemu-system-x86_64", "-M", "pc", "-accel", engine, "-m", "768", "-smp", "1", "-nodefaults",
            "-display", "none", "-serial", "stdio", "-kernel", kernel, "-initrd", initrd, "-append", cmdline,
            "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0",
            "-drive", f"file={disk},if=virtio,format=qcow2", "-device", "virtio-balloon"]
    began = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    try:
        seen = b""
        while b"login: " not in seen:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError("QEMU exited before the login prompt")
            seen = (seen + chunk)[-8192:]
        return time.monotonic() - began
    finally:
        proc.kill()
        proc.wait()


def debian_boot(prefix: str, engine: str) -> None:
    """The Debian image: plain QEMU to login against corral start --wait to the agent."""
    corral = open_corral()
    print("building the Debian image (cached when built) ...", file=sys.stderr)
    image = corral.images.build_debian()
    with tempfile.TemporaryDirectory() as tmp:
        disk = Path(tmp) / "disk.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", image.path or "", "-F", "qcow2",
                        str(disk)], check=True)
        plain = [plain_qemu_login(image.kernel or "", image.initrd or "", image.cmdline or "", disk, engine)
                 for _ in range(DEBIAN_RUNS)]
    guest = f"{prefix}-debian"
    corral.guests.create(GuestSpec(guest, "debian", memory_mib=768))
    ours = []
    try:
        for _ in range(DEBIAN_RUNS + 1):
            began = time.monotonic()
            subprocess.run([CORRAL, "start", "--wait", guest], check=True, capture_output=True)
            ours.append(time.monotonic() - began)
            corral.guests.poweroff(guest)
    finally:
        corral.guests.delete(guest)
    p, first, later = statistics.median(plain), ours[0], statistics.median(ours[1:])
    print(f"debian: plain qemu to login    {p:6.2f} s   (runs: {', '.join(f'{x:.2f}' for x in plain)})")
    print(f"debian: corral start --wait    {first:6.2f} s first boot (cloud-init), {later:.2f} s later boots "
          "(to the guest agent)")
    print(f"debian: ratio corral / plain   {later / p:6.2f}x later boots, {first / p:.2f}x first boot")


def main() -> None:
    corral = open_corral()
    if not corral.images.exists("tiny"):
        print("building the tiny image first ...", file=sys.stderr)
        corral.images.build_tiny()
    image = corral.images.get("tiny")
    engine = corral.host.accelerator().engine
    prefix = f"bench-{os.getpid()}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            disk = Path(tmp) / "disk.qcow2"
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "1G"], check=True)
            cmdline = f"{image.cmdline} corral.name=plain"
            plain = [
                plain_qemu_boot(image.kernel or "", image.initrd or "", cmdline, disk, engine) for _ in range(RUNS)
            ]

        guest = f"{prefix}-boot"
        corral.guests.create(GuestSpec(guest, "tiny", memory_mib=160))
        ours = []
        for _ in range(RUNS):
            began = time.monotonic()
            subprocess.run([CORRAL, "start", "--wait", guest], check=True, capture_output=True)
            ours.append(time.monotonic() - began)
            corral.guests.poweroff(guest)
        corral.guests.delete(guest)

        for i in range(20):
            corral.guests.create(GuestSpec(f"{prefix}-list-{i:02d}", "tiny", memory_mib=128))
        lists = []
        for _ in range(5):
            began = time.monotonic()
            subprocess.run([CORRAL, "list", "--json"], check=True, capture_output=True)
            lists.append(time.monotonic() - began)
    finally:
        for row in corral.libvirt.rows():
            if row.name.startswith(prefix):
                corral.guests.delete(row.name)

    p, c = statistics.median(plain), statistics.median(ours)
    print(f"engine: {engine}; {RUNS} runs each, medians")
    print(f"plain qemu boot to readiness   {p:6.2f} s   (runs: {', '.join(f'{x:.2f}' for x in plain)})")
    print(f"corral start --wait            {c:6.2f} s   (runs: {', '.join(f'{x:.2f}' for x in ours)})")
    print(f"ratio corral / plain qemu      {c / p:6.2f}x  (goal <= 1.30x)")
    print(
        f"corral list --json, 20 guests  {statistics.median(lists):6.3f} s   (goal < 0.3 s; "
        f"runs: {', '.join(f'{x:.3f}' for x in lists)})"
    )
    if os.environ.get("BENCH_DEBIAN", "1") != "0":
        debian_boot(prefix, engine)


if __name__ == "__main__":
    main()
