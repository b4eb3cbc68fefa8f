"""REST API latency: `GET /api/domains` with 20 defined (not running) guests under 50 concurrent clients.

Starts a real `corral serve` on loopback (its own data folder, the image cache of the usual one,
one bench user with an API token), defines 20 tiny guests without starting them, then:
- one client, 20 requests in a row: the latency of the endpoint alone;
- 50 concurrent clients (httpx AsyncClient, one connection each), 2,000 requests in all: p50, p90,
  p99, max, throughput;
and, in the same run, `corral list --json` (the same service call from the CLI, a new process each
time) measured as subprocess wall time, median of 5. Every request is bounded in count and time,
and goes only to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import httpx

from corral.config import load_settings
from corral.core.spec import GuestSpec
from corral.services.context import open_corral
from corral.services.users import UserStore, users_path

GUESTS = int(os.environ.get("BENCH_GUESTS", "20"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "50"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "2000"))
CLI_RUNS = 5
TIMEOUT_S = 60.0


def serve_command() -> list[str]:
    return [str(Path(sys.executable).parent / "corral"), "serve"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def hammer(base: str, token: str) -> tuple[list[float], float, int]:
    """(latencies in s, wall time in s, non-200 answers) of REQUESTS requests from CLIENTS clients."""
    latencies: list[float] = []
    failures = 0
    remaining = REQUESTS
    headers = {"Authorization": f"Bearer {token}"}

    async def client() -> None:
        nonlocal remaining, failures
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=TIMEOUT_S) as http:
            while remaining > 0:
                remaining -= 1
                began = time.perf_counter()
                response = await http.get("/api/domains")
                latencies.append(time.perf_counter() - began)
                if response.status_code != 200 or len(response.json()) < GUESTS + 1:
                    failures += 1

    began = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(client() for _ in range(CLIENTS))), timeout=600)
    return latencies, time.perf_counter() - began, failures


def main() -> None:
    settings = load_settings()
    corral = open_corral(settings)
    if not corral.images.exists("tiny"):
        print("building the tiny image ...", file=sys.stderr)
        corral.images.build_tiny()
    data = Path(tempfile.mkdtemp(prefix="corral-bench-api-"))
    (data / "images").symlink_to(settings.images_dir)
    config = data / "config.toml"
    config.write_text("")
    env = {**os.environ, "CORRAL_DATA_DIR": str(data), "CORRAL_CONFIG": str(config)}
    store = UserStore(users_path(data))
    store.add("bench", "bench-password")
    token, _ = store.create_token("bench", "bench/api.py")
    bench_corral = open_corral(replace(settings, data_dir=data))
    prefix = f"bench-api-{os.getpid()}"
    names = [f"{prefix}-{i:02d}" for i in range(GUESTS)]
    port = free_port()
    server: subprocess.Popen[bytes] | None = None
    try:
        print(f"defining {GUESTS} guests (not started) ...", file=sys.stderr)
        for name in names:
            bench_corral.guests.create(GuestSpec(name, "tiny", memory_mib=128))
        server = subprocess.Popen([*serve_command(), "--listen", f"127.0.0.1:{port}"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("corral serve did not come up")
            time.sleep(0.1)

        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT_S) as http:
            http.get("/api/domains")  # warm up
            single = []
            for _ in range(20):
                began = time.perf_counter()
                rows = http.get("/api/domains").json()
                single.append(time.perf_counter() - began)
        assert len(rows) >= GUESTS + 1 and rows[0]["name"] == "Domain-0"

        latencies, wall, failures = asyncio.run(hammer(base, token))

        corral_bin = shutil.which("corral", path=str(Path(sys.executable).parent)) or "corral"
        cli = []
        for _ in range(CLI_RUNS):
            began = time.perf_counter()
            subprocess.run([corral_bin, "list", "--json"], env=env, check=True, stdout=subprocess.DEVNULL)
            cli.append(time.perf_counter() - began)
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
        for name in names:
            if bench_corral.libvirt.exists(name):
                bench_corral.guests.delete(name)
        shutil.rmtree(data, ignore_errors=True)

    ms = 1000.0
    print(f"GET /api/domains, {GUESTS} defined guests + Domain-0 (CPU % over the time since the background "
          "sampler's last reading: one counter reading per call)")
    print(f"  1 client, 20 in a row:     p50 {statistics.median(single) * ms:7.1f} ms   "
          f"max {max(single) * ms:7.1f} ms")
    print(f"  {CLIENTS} clients, {len(latencies)} requests: p50 {pct(latencies, 50) * ms:7.1f} ms   "
          f"p90 {pct(latencies, 90) * ms:7.1f} ms   p99 {pct(latencies, 99) * ms:7.1f} ms   "
          f"max {max(latencies) * ms:7.1f} ms   {len(latencies) / wall:6.1f} req/s   {failures} failed")
    print(f"corral list --json (new process each time), median of {CLI_RUNS}: "
          f"{statistics.median(cli) * ms:7.1f} ms wall")


if __name__ == "__main__":
    main()
