"""Load traces for the tiny image (`corral create --load-trace FILE --speed N`): the spec, the kernel
command line's encoding and its bounds, the metadata, the file reader; and a real guest following one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from corral.adapters.traces import read_load_trace
from corral.core import bootimage
from corral.core.capacity import CapacityLimits, footprint
from corral.core.domxml import (
    MAX_CMDLINE_BYTES,
    CorralMeta,
    clone_domain_xml,
    decode_trace,
    encode_trace,
    parse_domain_xml,
    parse_tiny_cmdline,
    tiny_cmdline,
    write_meta,
)
from corral.core.errors import InvalidInput
from corral.core.spec import (
    MAX_SPEED,
    MAX_TRACE_STEPS,
    TRACE_STEP_MS,
    GuestSpec,
    LoadSpec,
    spec_from_mapping,
    spec_from_toml,
)
from corral.monitoring.metrics import HOST_DOMAIN
from corral.monitoring.sampler import Sampler
from corral.services.context import Corral

CORRAL_BIN = str(Path(sys.executable).with_name("corral"))


# --------------------------------------------------------------------------- the load


def test_a_trace_is_whole_percents_replayed_at_a_speed() -> None:
    load = LoadSpec.from_trace([10, 80.4, 12.5, 0, 100], 60, disk_kbps=64, net_kbps=32)
    assert load.trace == (10, 80, 13, 0, 100)  # rounded half up
    assert (load.step_ms, load.speed, load.cpu_pct, load.disk_kbps, load.net_kbps) == (5000, 60, 0, 64, 32)
    assert LoadSpec.from_trace([5]).step_ms == TRACE_STEP_MS  # speed 1: the PlanetLab step, 5 minutes
    assert LoadSpec.from_trace([5], MAX_SPEED).step_ms == 83
    assert LoadSpec.from_trace([5], 7).step_ms == 42857
    assert not LoadSpec.from_trace([0]).is_idle
    assert load.as_text() == "trace=5x5s (mean 40.6, peak 100),disk=64,net=32"
    assert LoadSpec(15, 64, 8).as_text() == "cpu=15,disk=64,net=8"


@pytest.mark.parametrize(("percents", "speed", "why"), [
    ([], 1, "at least one step"),
    ([10] * (MAX_TRACE_STEPS + 1), 1, f"at most {MAX_TRACE_STEPS} fit"),
    ([10, 101], 1, "step 2: 101 is not a CPU percent"),
    ([10, -1], 1, "step 2: -1 is not a CPU percent"),
    ([True], 1, "not a CPU percent"),
    ([10], 0.5, "speed=0.5 must be between 1 and 3600"),
    ([10], 3601, "between 1 and 3600"),
    ([10], True, "speed=True"),
])
def test_trace_bounds(percents: list[float], speed: float, why: str) -> None:
    with pytest.raises(InvalidInput, match=why):
        LoadSpec.from_trace(percents, speed)


def test_a_load_is_checked_when_made_directly() -> None:
    with pytest.raises(InvalidInput, match="replaces cpu="):
        LoadSpec(cpu_pct=40, trace=(10, 80))
    with pytest.raises(InvalidInput, match="whole percent"):
        LoadSpec(trace=(10, 80.5))  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="between 83 and 300000 ms"):
        LoadSpec(trace=(10,), step_ms=50)
    with pytest.raises(InvalidInput, match=f"at most {MAX_TRACE_STEPS} steps"):
        LoadSpec(trace=(1,) * (MAX_TRACE_STEPS + 1))


def test_a_trace_declares_its_mean_to_the_capacity_model() -> None:
    load = LoadSpec.from_trace([10, 80, 10, 80, 0, 100])
    assert load.declared_cpu_pct == pytest.approx(280 / 6)
    guest = footprint("web", 2, 256, load.declared_cpu_pct, CapacityLimits())
    assert guest.cpu_demand_cores == pytest.approx(2 * 280 / 600)
    assert LoadSpec.from_trace([0, 0]).declared_cpu_pct == 0  # declared idle, not "unknown"
    assert LoadSpec(disk_kbps=64).declared_cpu_pct is None


# --------------------------------------------------------------------------- spec files, options, API bodies


def test_spec_fields_take_a_trace_inline_or_from_a_file(tmp_path: Path) -> None:
    spec = spec_from_mapping({"name": "web", "image": "tiny", "load": {"disk": 64},
                              "load_trace": [10, 80], "speed": 60})
    assert spec.load == LoadSpec(0, 64, 0, (10, 80), 5000)
    (tmp_path / "day.txt").write_text("10\n80\n\n35\n")
    text = 'name = "web"\nimage = "tiny"\nload = "net=32"\nload_trace = "day.txt"\nspeed = 300\n'
    spec = spec_from_toml(text, "web.toml", tmp_path, read_load_trace)  # relative to the spec file
    assert spec.load == LoadSpec(0, 0, 32, (10, 80, 35), 1000)
    assert spec_from_mapping({"name": "w", "image": "tiny", "load_trace": [5]}).load.step_ms == TRACE_STEP_MS


@pytest.mark.parametrize(("fields", "why"), [
    ({"load": "cpu=40", "load_trace": [10]}, "replaces cpu="),
    ({"speed": 60}, "speed goes with a load trace"),
    ({"load_trace": "/srv/day.txt"}, "must be a list of CPU percents here"),  # no reader: the REST API
    ({"load_trace": {"a": 1}}, "a trace file's path or a list"),
    ({"load_trace": ["x"]}, "load trace step 1 must be a finite number"),
    ({"load_trace": [10], "speed": "fast"}, "speed must be a finite number"),
    ({"load_trace": [10], "speed": 4000}, "between 1 and 3600"),
    ({"load_trace": [1] * 100_000}, "has 100,000 steps; at most 864"),
    ({"load_trace": "../day.txt"}, "'..'"),
])
def test_bad_trace_fields(fields: dict[str, object], why: str) -> None:
    with pytest.raises(InvalidInput, match=why):
        spec_from_mapping({"name": "web", "image": "tiny", **fields}, base_dir=Path("/srv"))


def test_the_api_body_takes_the_list() -> None:
    from pydantic import ValidationError

    from corral.api.models import SpecBody, spec_of

    spec = spec_of(SpecBody.model_validate({"name": "web", "image": "tiny", "load": {"net": 8},
                                            "load_trace": [10, 80.0], "speed": 60}))
    assert spec.load == LoadSpec(0, 0, 8, (10, 80), 5000)
    bad: list[object] = ["/etc/passwd", [10] * (MAX_TRACE_STEPS + 1), [], ["10"]]
    for trace in bad:  # the API takes no file path: nothing on the server is read
        with pytest.raises(ValidationError):
            SpecBody.model_validate({"name": "web", "image": "tiny", "load_trace": trace})


# --------------------------------------------------------------------------- trace files


def test_trace_files_are_read_under_bounds_with_one_line_errors(tmp_path: Path) -> None:
    good = tmp_path / "planetlab-day"
    good.write_text("".join(f"{v}\n" for v in [3, 17, 100, 0, 42]))
    assert read_load_trace(good) == [3, 17, 100, 0, 42]
    cases = {
        "word": ("12\nabc\n", r"word:2: CPU percent: not a number: 'abc'"),
        "over": ("12\n101\n", r"over:2: CPU percent 101.0 above 100"),
        "negative": ("-5\n", r"negative:1: CPU percent: negative value"),
        "empty": ("\n\n", r"empty: empty file"),
        "long": ("1" * 5000 + "\n", r"long:1: line longer than 1 KiB"),
        "huge": ("1\n" * 600_000, r"huge: 1,200,000 bytes: larger than 1 MiB"),
    }
    for name, (text, why) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(InvalidInput, match=why) as caught:
            read_load_trace(tmp_path / name)
        assert "\n" not in caught.value.message and caught.value.message.startswith("load trace ")
    with pytest.raises(InvalidInput, match="cannot read: a folder"):
        read_load_trace(tmp_path)
    with pytest.raises(InvalidInput, match="cannot read"):
        read_load_trace(tmp_path / "missing")
    week = tmp_path / "week"
    week.write_text("5\n" * (7 * 288))  # readable, but more than a guest can replay
    with pytest.raises(InvalidInput, match="has 2,016 steps; at most 864"):
        spec_from_mapping({"name": "w", "image": "tiny", "load_trace": str(week)}, read_trace=read_load_trace)


def test_the_cli_refuses_a_bad_trace_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("10\nten\n")
    env = {**os.environ, "CORRAL_DATA_DIR": str(tmp_path / "data"), "CORRAL_CONFIG": str(tmp_path / "c.toml")}
    for args, why in [
        (["--load-trace", str(bad)], f"load trace {bad}:2: CPU percent: not a number: 'ten'"),
        (["--load-trace", str(bad), "--load", "cpu=10"], "replaces cpu="),
        (["--speed", "60"], "speed goes with a load trace"),
    ]:
        result = subprocess.run([CORRAL_BIN, "create", "ct-trace", "--image", "tiny", *args], capture_output=True,
                                text=True, env=env, timeout=60, check=False)
        assert result.returncode == 2, result
        assert why in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


# --------------------------------------------------------------------------- the kernel command line


def test_encoding_two_hex_digits_a_step() -> None:
    assert encode_trace((10, 80, 0, 100)) == "0a500064"
    assert decode_trace("0a500064") == (10, 80, 0, 100)
    steps = tuple(range(101))
    assert decode_trace(encode_trace(steps)) == steps
    for bad in ("", "0a5", "0A50", "0g", "65", "0a 50", "00" * (MAX_TRACE_STEPS + 1)):
        with pytest.raises(ValueError, match="load trace"):
            decode_trace(bad)


def test_the_command_line_carries_the_trace_and_reads_back() -> None:
    load = LoadSpec.from_trace([10, 80, 10, 80], 60, disk_kbps=64)
    line = tiny_cmdline("console=ttyS0", "web_1", load)
    assert line == "console=ttyS0 corral.name=web-1 corral.disk=64 corral.trace=0a500a50 corral.step_ms=5000"
    assert parse_tiny_cmdline(line) == ("web-1", load)
    assert parse_tiny_cmdline("quiet corral.name=x corral.cpu=40 foo=bar") == ("x", LoadSpec(40))
    assert bootimage.load_cmdline(bootimage.BASE_CMDLINE, "web-1", disk_kbps=64, trace=[10, 80, 10, 80],
                                  step_ms=5000) == line.replace("console=ttyS0", bootimage.BASE_CMDLINE)
    with pytest.raises(InvalidInput, match="replaces cpu="):
        bootimage.load_cmdline(bootimage.BASE_CMDLINE, "web-1", cpu_pct=5, trace=[10])
    with pytest.raises(ValueError, match="load trace"):
        parse_tiny_cmdline("corral.trace=zz")


def test_the_longest_trace_always_fits_and_a_longer_line_is_refused() -> None:
    worst = LoadSpec(0, bootimage.MAX_LOAD_RATE, bootimage.MAX_LOAD_RATE, (100,) * MAX_TRACE_STEPS, 299_999)
    line = tiny_cmdline(bootimage.BASE_CMDLINE, "x" * 63, worst)
    assert len(line.encode()) <= MAX_CMDLINE_BYTES  # the spec's bound is what the kernel keeps
    assert parse_tiny_cmdline(line)[1] == worst
    room = MAX_CMDLINE_BYTES - len(line.encode())
    with pytest.raises(InvalidInput, match="more than the 2047 the kernel keeps: use a shorter load trace"):
        tiny_cmdline(bootimage.BASE_CMDLINE + " x" * (room // 2 + 1), "x" * 63, worst)


# --------------------------------------------------------------------------- Corral's metadata


def _meta_xml(meta: CorralMeta) -> str:
    dom = ET.Element("domain")
    ET.SubElement(dom, "name").text = "web"
    write_meta(ET.SubElement(dom, "metadata"), meta)
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode")


def test_the_trace_is_recorded_on_the_load_element_and_reads_back() -> None:
    load = LoadSpec.from_trace([10, 80, 35], 60, net_kbps=8)
    xml = _meta_xml(CorralMeta(image="tiny", load=load))
    assert '<corral:load cpu="0" disk="0" net="8" trace="10,80,35" step="5" />' in xml
    facts = parse_domain_xml(xml)
    assert facts.meta is not None and facts.meta.load == load
    assert facts.meta.load.declared_cpu_pct == pytest.approx(125 / 3)  # what admission and placement read
    odd = LoadSpec.from_trace([1], 7)  # 42.857 s: milliseconds survive the seconds
    assert parse_domain_xml(_meta_xml(CorralMeta(load=odd))).meta == CorralMeta(load=odd)
    assert "trace=" not in _meta_xml(CorralMeta(load=LoadSpec(15)))  # no trace: as before


@pytest.mark.parametrize(("attrs", "expected"), [
    ('cpu="0" disk="64" net="0" trace="10,x" step="5"', LoadSpec(0, 64, 0)),  # an unreadable trace: none
    ('cpu="0" disk="0" net="0" trace="10,101" step="5"', LoadSpec()),
    ('cpu="0" disk="0" net="0" trace="10,80"', LoadSpec(trace=(10, 80))),  # no step: 5 minutes
    ('cpu="0" disk="0" net="0" trace="10,80" step="nan"', LoadSpec(trace=(10, 80))),
    ('cpu="40" disk="0" net="0" trace="10,80" step="5"', LoadSpec()),  # edited into nonsense: the default
])
def test_odd_trace_metadata_never_breaks_reading(attrs: str, expected: LoadSpec) -> None:
    xml = (f'<domain><name>w</name><metadata><corral:guest xmlns:corral="https://corral.dev/xmlns/guest/1">'
           f"<corral:load {attrs}/></corral:guest></metadata></domain>")
    meta = parse_domain_xml(xml).meta
    assert meta is not None and meta.load == expected


def test_a_clone_replays_the_same_trace(tmp_path: Path) -> None:
    load = LoadSpec.from_trace([10, 80], 60)
    dom = ET.fromstring(_meta_xml(CorralMeta(image="tiny", load=load)))
    os_el = ET.SubElement(dom, "os")
    ET.SubElement(os_el, "cmdline").text = tiny_cmdline("console=ttyS0", "web", load)
    cloned = clone_domain_xml(ET.tostring(dom, encoding="unicode"), "web2", {}, tmp_path / "c.log",
                              "0d5c0c1e-9b7a-4a51-8f26-1f7c5d3c9e21")
    facts = parse_domain_xml(cloned)
    assert facts.meta is not None and facts.meta.load == load
    assert parse_tiny_cmdline(ET.fromstring(cloned).findtext("os/cmdline") or "") == ("web2", load)


# --------------------------------------------------------------------------- a real guest


def _phase_fit(windows: list[tuple[float, float, float]], levels: tuple[int, ...], step_s: float
               ) -> tuple[float, list[float]]:
    """The trace's start (within one cycle) that best explains the measured windows (start, end,
    cpu %), and the expected cpu % of each window for it."""
    cycle = step_s * len(levels)

    def expected(t0: float, a: float, b: float) -> float:
        n = 200
        return sum(levels[int(((a + (b - a) * (i + 0.5) / n - t0) % cycle) // step_s)] for i in range(n)) / n

    best: tuple[float, float, list[float]] | None = None
    for k in range(int(cycle * 10)):
        t0 = k / 10
        exp = [expected(t0, a, b) for a, b, _cpu in windows]
        err = sum((e - cpu) ** 2 for e, (_a, _b, cpu) in zip(exp, windows, strict=True))
        if best is None or err < best[0]:
            best = (err, t0, exp)
    assert best is not None
    return best[1], best[2]


@pytest.mark.guest
def test_a_tiny_guest_follows_its_trace(corral: Corral) -> None:
    corral.images.build_tiny()  # the shared test image may predate load traces: rebuilt when its inputs changed
    # Low and high, the high one below 80: on a 2-core host that runs other guests, a vCPU busy 80 % of
    # the time does not always get that much of a core (a fixed cpu=80 then measures 70-78).
    levels = (10, 60)
    step_s = 8.0
    name = f"ct-trace-{uuid.uuid4().hex[:6]}"
    # A day's worth of steps (288: 576 characters on the kernel command line), alternating low and high.
    load = LoadSpec.from_trace(list(levels) * 144, 300 / step_s)
    corral.guests.create(GuestSpec(name, "tiny", memory_mib=160, load=load), start=True, wait=True)
    info = corral.guests.info(name)
    assert info.load == "trace=288x8s (mean 35, peak 60),disk=0,net=0"
    log = Path(info.console_log or "").read_text(errors="replace")
    assert "corral-load: cpu=trace disk=0 net=0 vcpus=1" in log and "trace=288 step_ms=8000" in log, log[-2000:]
    sampler = Sampler(corral.libvirt)
    last = next(s for s in sampler.sample() if s.domain == name).time
    windows: list[tuple[float, float, float]] = []
    host_busy: list[float] = []
    for _ in range(32):  # 2 s windows over 64 s: four cycles of the trace
        time.sleep(2)
        samples = sampler.sample()
        sample = next(s for s in samples if s.domain == name)
        cpu = sample.values["cpu_pct"]
        if cpu is not None:
            windows.append((last, sample.time, cpu))
            host_busy.append(next(s for s in samples if s.domain == HOST_DOMAIN).values["cpu_pct"] or 0.0)
        last = sample.time
    assert len(windows) >= 28
    _t0, expected = _phase_fit(windows, levels, step_s)
    table = [(round(cpu), round(exp), round(host)) for (_a, _b, cpu), exp, host
             in zip(windows, expected, host_busy, strict=True)]
    errors = [cpu - exp for (_a, _b, cpu), exp in zip(windows, expected, strict=True)]
    why = f"(measured, expected, host busy %) per window: {table}"
    # Windows wholly inside a step: the step's level, as accurate as a fixed load (the median within 6
    # points), each within the issue's +-10 points under TCG, but for the odd sampling glitch (a reading
    # late on a busy host: that window high, the next low). Windows where the host had no CPU to spare
    # (others' guests on this 2-core machine) are left out: the guest paces itself by the clock, so a
    # starved vCPU does less, trace or not. The windows across a step change follow the mix of the two.
    inside = [(exp, cpu) for (_a, _b, cpu), exp, host in zip(windows, expected, host_busy, strict=True)
              if exp in levels and host < 95]
    assert len(inside) >= 12, f"the host was too busy to judge: {why}"
    for level in levels:
        at_level = sorted(cpu for exp, cpu in inside if exp == level)
        assert at_level and abs(at_level[len(at_level) // 2] - level) <= 6, why
    assert sum(abs(cpu - exp) <= 10 for exp, cpu in inside) >= 0.85 * len(inside), why
    assert sorted(abs(e) for e in errors)[len(errors) * 3 // 4 - 1] <= 10, why
    print(f"trace {levels} every {step_s:g} s, {why}")


def test_a_guest_made_with_a_trace_records_and_shows_it(offline: Corral) -> None:
    """Through the service on libvirt's test driver: the definition carries the trace on its kernel
    command line and in its metadata, `info` shows it, and what the admission guard reads is its mean."""
    name = f"ct-trace-{uuid.uuid4().hex[:6]}"
    load = LoadSpec.from_trace([10, 80] * 144, 60, net_kbps=32)
    offline.guests.create(GuestSpec(name, "tiny", vcpus=2, memory_mib=128, load=load))
    assert offline.guests.info(name).load == "trace=288x5s (mean 45, peak 80),disk=0,net=32"
    facts = parse_domain_xml(offline.libvirt.xml(name))
    assert facts.meta is not None and facts.meta.load == load
    cmdline = ET.fromstring(offline.libvirt.xml(name)).findtext("os/cmdline") or ""
    assert parse_tiny_cmdline(cmdline) == (name.replace("_", "-"), load)
    assert "corral.trace=0a500a50" in cmdline and cmdline.endswith("corral.step_ms=5000")
    guest = footprint(name, 2, 128, facts.meta.load.declared_cpu_pct, offline.settings.limits)
    assert guest.cpu_demand_cores == pytest.approx(0.9)  # 2 vCPUs x the trace's mean, 45 %
