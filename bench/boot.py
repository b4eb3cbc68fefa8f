"""Boot and listing speed: `corral start --wait` against plain QEMU, and `corral list --json`.

Prints, measured in the same run on this host:
- plain `qemu-system-x86_64` booting the tiny image's kernel and initramfs to its readiness
  line (the baseline), with the same devices Corral gives a guest;
- `corral start --wait` of a defined guest until it is up (CLI process included), and the ratio;
- `corral list --json` with 20 defined guests.
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


if __name__ == "__main__":
    main()
