"""`corral migrate` next to `virsh migrate --live --p2p` of the same guest, in the same run.

Two lab hosts on this machine (corral lab), one tiny guest; the guest goes back and forth, each
direction alternately by Corral and by virsh, and the script prints the median total time and
downtime of each and their ratio (goal: Corral within 1.1x of virsh's time, the same downtime).
Twice: an idle guest, then a guest dirtying memory (a loop writing 32 MiB into its RAM-backed root).

Under TCG, QEMU 7.2 can crash a guest that dirties memory during a live migration (not Corral's
doing, see ../shared/notes/virt-host.md); the script reports such crashes as TCG's and goes on.

    .venv/bin/python bench/migrate.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CORRAL = str(Path(sys.executable).with_name("corral"))
DOWNTIME = re.compile(r"Total downtime:\s+(\d+)\s*ms")


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, env=env, check=False, timeout=600)


def virsh_downtime(uri: str, name: str, env: dict[str, str]) -> int | None:
    out = run(["virsh", "-c", uri, "domjobinfo", name, "--completed"], env).stdout
    match = DOWNTIME.search(out)
    return int(match.group(1)) if match else None


def corral_move(name: str, dest: str, env: dict[str, str]) -> tuple[float, int | None, str]:
    began = time.perf_counter()
    result = run([CORRAL, "migrate", name, dest, "--json"], env)
    elapsed = time.perf_counter() - began
    if result.returncode != 0:
        return elapsed, None, result.stderr.strip()
    return elapsed, json.loads(result.stdout)["downtime_ms"], ""


def virsh_move(name: str, source_uri: str, dest_uri: str, env: dict[str, str]) -> tuple[float, int | None, str]:
    began = time.perf_counter()
    result = run(["virsh", "-c", source_uri, "migrate", "--live", "--p2p", "--persistent", "--undefinesource",
                  "--unsafe", name, dest_uri], env)
    elapsed = time.perf_counter() - began
    if result.returncode != 0:
        return elapsed, None, result.stderr.strip()
    return elapsed, virsh_downtime(dest_uri, name, env), ""


def state(uri: str, name: str, env: dict[str, str]) -> str:
    return run(["virsh", "-c", uri, "domstate", name], env).stdout.strip()


def dirty(name: str, env: dict[str, str]) -> None:
    loop = "while true; do dd if=/dev/zero of=/tmp/dirty bs=1M count=32 2>/dev/null; done &\n"
    subprocess.run([CORRAL, "console", name], input="\n" + loop, capture_output=True, text=True, env=env,
                   timeout=60, check=False)


def series(label: str, name: str, uris: dict[str, str], rounds: int, env: dict[str, str]) -> None:
    corral_t: list[float] = []
    corral_d: list[int] = []
    virsh_t: list[float] = []
    virsh_d: list[int] = []
    crashes = 0
    where = "lab1"
    for i in range(rounds * 2):
        other = "lab2" if where == "lab1" else "lab1"
        if i % 2 == 0:
            t, d, error = corral_move(name, other, env)
            bucket_t, bucket_d = corral_t, corral_d
        else:
            t, d, error = virsh_move(name, uris[where], uris[other], env)
            bucket_t, bucket_d = virsh_t, virsh_d
        if error:
            print(f"  {label}: migration failed: {error}", file=sys.stderr)
            return
        bucket_t.append(t)
        if d is not None:
            bucket_d.append(d)
        where = other
        time.sleep(1.0)
        if state(uris[where], name, env) != "running":
            crashes += 1
            print(f"  {label}: the guest is {state(uris[where], name, env)} after a migration (TCG, see the "
                  "note); restarting it", file=sys.stderr)
            run([CORRAL, "start", name, "--wait"], env)
            if label.startswith("dirty"):
                dirty(name, env)
    ct, vt = statistics.median(corral_t), statistics.median(virsh_t)
    cd = statistics.median(corral_d) if corral_d else float("nan")
    vd = statistics.median(virsh_d) if virsh_d else float("nan")
    print(f"{label:<18} corral {ct:6.2f} s  {cd:6.0f} ms | virsh {vt:6.2f} s  {vd:6.0f} ms | "
          f"time x{ct / vt:.2f}, downtime x{cd / vd:.2f}" + (f" | {crashes} TCG crash(es)" if crashes else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="migrations each way per tool")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="corral-bench-migrate-") as tmp:
        data = Path(tmp)
        cache = Path(os.environ.get("CORRAL_TEST_CACHE", "/var/cache/corral-test")) / "images"
        cache.mkdir(parents=True, exist_ok=True)
        (data / "images").symlink_to(cache)
        env = {**os.environ, "CORRAL_DATA_DIR": str(data), "CORRAL_CONFIG": str(data / "config.toml")}
        try:
            if run([CORRAL, "lab", "up", "lab1", "lab2"], env).returncode != 0:
                sys.exit("could not start the lab hosts")
            listed = json.loads(run([CORRAL, "host", "list", "--json"], env).stdout)
            hosts = {h["name"]: h["uri"] for h in listed}
            run([CORRAL, "image", "build", "tiny"], env)
            name = "bench-mig"
            made = run([CORRAL, "create", name, "--image", "tiny", "--memory", "192", "--host", "lab1", "--start",
                        "--wait"], env)
            if made.returncode != 0:
                sys.exit(f"could not make the guest: {made.stderr.strip()}")
            print(f"{'guest':<18} {'Corral: median time, downtime':<29} | {'virsh --live --p2p':<24} | ratio")
            series("idle (192 MiB)", name, hosts, args.rounds, env)
            dirty(name, env)
            series("dirty 32 MiB loop", name, hosts, args.rounds, env)
        finally:
            run([CORRAL, "lab", "down"], env)


if __name__ == "__main__":
    main()
