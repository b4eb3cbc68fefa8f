"""Every endpoint and its error statuses, in process, over the real libvirt daemon (no guest boots here)."""

from __future__ import annotations

import subprocess
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from corral.api.app import create_app
from corral.api.auth import Authenticator
from corral.api.middleware import LOOPBACK_HOSTS, host_of
from corral.config import Settings
from corral.planning import demo_traceset, load_catalog, plan_consolidation, plan_to_json, write_plan_json
from corral.services.context import Corral, open_corral

from .conftest import Api, Clock, Credentials, unique

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient
    from starlette.testclient import WebSocketDenialResponse


BAD_NAME = "a'b<c>"


@pytest.fixture
def corral(offline: Corral) -> Corral:
    """No daemon needed here: libvirt's test driver."""
    return offline


def test_host_matches_the_cli_report(api: Api) -> None:
    body = api.client.get("/api/host", headers=api.bearer).json()
    assert body["cores"] >= 1 and body["engine"] in ("kvm", "tcg") and body["engine_reason"]
    assert set(body["capacity"]) == {"vcpus", "memory", "cpu"}
    assert body["limits"]["cap"] == api.corral.settings.limits.cap
    assert body["libvirt_uri"] == api.corral.settings.libvirt_uri


def test_domains_list_starts_with_domain0_and_shows_defined_guests(api: Api) -> None:
    guest = unique("list")
    response = api.client.post("/api/domains", headers=api.bearer,
                               json={"name": guest, "image": "tiny", "memory": 128, "load": "cpu=10"})
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["state"] == "shut-off" and created["image"] == "tiny" and created["load"].startswith("cpu=10")
    rows = api.client.get("/api/domains", headers=api.bearer).json()
    assert rows[0]["name"] == "Domain-0" and rows[0]["id"] == 0
    mine = next(r for r in rows if r["name"] == guest)
    assert mine == {**mine, "state": "shut-off", "id": None, "memory_mib": 128, "cpu_pct": None}
    info = api.client.get(f"/api/domains/{guest}", headers=api.bearer).json()
    assert info["managed_by_corral"] and info["disks"][0]["path"].endswith("disk0.qcow2")
    # The same answer as the service gives the CLI.
    assert info == {**api.corral.guests.info(guest).as_dict(), "cpu_time_s": info["cpu_time_s"]}


def test_create_errors_leave_nothing_behind(api: Api) -> None:
    guest = unique("err")
    post = api.client.post
    assert post("/api/domains", headers=api.bearer, json={"name": guest, "image": "tiny"}).status_code == 201
    taken = post("/api/domains", headers=api.bearer, json={"name": guest, "image": "tiny"})
    assert taken.status_code == 409 and "already exists" in taken.json()["error"]

    other = unique("err2")
    cases: list[tuple[dict[str, object], int, str]] = [
        ({"name": other, "image": "no-such-image"}, 404, "no image named"),
        ({"name": other, "image": "tiny", "vcpus": 64, "memory": 1024 * 1024}, 507, "does not fit"),
        ({"name": other, "image": "tiny", "vcpus": 0}, 422, "vcpus=0"),
        ({"name": other, "image": "tiny", "memory": 1}, 422, "memory=1"),
        ({"name": other, "image": "tiny", "disk": -1}, 422, "disk=-1"),
        ({"name": other, "image": "tiny", "load": {"cpu": 500}}, 422, "load cpu=500"),
        ({"name": other, "image": "tiny", "load": "bogus"}, 422, "invalid load item"),
        ({"name": other, "image": "tiny", "iso": "relative.iso"}, 422, "absolute path"),
        ({"name": other, "image": "tiny", "iso": "/no/such.iso"}, 422, "does not exist"),
        ({"name": BAD_NAME, "image": "tiny"}, 422, "invalid domain name"),
        ({"name": "Domain-0", "image": "tiny"}, 422, "reserved"),
        ({"name": other, "image": "tiny", "colour": "red"}, 422, "colour"),
        ({"name": other, "image": "tiny", "vcpus": "many"}, 422, "vcpus"),
        ({"image": "tiny"}, 422, "name"),
    ]
    for body, status, text in cases:
        response = post("/api/domains", headers=api.bearer, json=body)
        assert response.status_code == status, (body, response.text)
        assert set(response.json()) == {"error"} and text in response.json()["error"], (body, response.json())
    broken = post("/api/domains", headers={**api.bearer, "Content-Type": "application/json"}, content=b"{nope")
    assert broken.status_code == 422 and broken.json()["error"].startswith("invalid request")
    # Nothing was made by the refused requests.
    assert not api.corral.libvirt.exists(other)
    assert not (api.corral.settings.guests_dir / other).exists()


def test_admission_check(api: Api, override: Callable[..., None]) -> None:
    guest = unique("check")
    fits = api.client.post("/api/domains/check", headers=api.bearer, json={"name": guest, "image": "tiny"})
    assert fits.status_code == 200 and fits.json() == {"fits": True, "exceeded": None, "beside_running": True}
    huge = {"name": guest, "image": "tiny", "vcpus": 64, "memory": 1024 * 1024}
    refused = api.client.post("/api/domains/check?start=false", headers=api.bearer, json=huge).json()
    assert refused["fits"] is False and refused["beside_running"] is False
    assert "vCPUs" in refused["exceeded"] and "memory" in refused["exceeded"]
    override(limits={"cap": 0.01})
    assert api.client.post("/api/domains/check", headers=api.bearer,
                           json={"name": guest, "image": "tiny", "load": {"cpu": 50}}).json()["fits"] is False
    assert api.client.post("/api/domains/check", headers=api.bearer,
                           json={"name": BAD_NAME, "image": "tiny"}).status_code == 422
    assert not api.corral.libvirt.exists(guest)


def test_path_parameters_are_validated(api: Api) -> None:
    encoded = "a%27b%3Cc%3E"
    for method, path in [
        ("GET", f"/api/domains/{encoded}"), ("DELETE", f"/api/domains/{encoded}"),
        ("POST", f"/api/domains/{encoded}/start"), ("POST", f"/api/domains/{encoded}/shutdown"),
        ("POST", f"/api/domains/{encoded}/poweroff"), ("POST", f"/api/domains/{encoded}/reboot"),
        ("POST", f"/api/domains/{encoded}/pause"), ("POST", f"/api/domains/{encoded}/resume"),
        ("GET", f"/api/domains/{encoded}/snapshots"), ("POST", f"/api/domains/{encoded}/console-ticket"),
        ("POST", f"/api/domains/ct-api-x/snapshots/{encoded}/revert"),
        ("DELETE", f"/api/domains/ct-api-x/snapshots/{encoded}"),
        ("DELETE", f"/api/images/{encoded}"), ("GET", f"/api/stats/{encoded}"), ("GET", f"/api/plans/{encoded}"),
        ("GET", f"/api/plans/{encoded}/report"), ("GET", "/api/domains/Domain-0"),
        ("GET", "/api/domains/..."), ("GET", "/api/stats/Domain-0?since=soon"),
        ("GET", "/api/stats/Domain-0?resource=gpu"), ("POST", "/api/domains/ct-api-x/shutdown?timeout=-1"),
    ]:
        response = api.client.request(method, path, headers=api.bearer, json={"name": "ok"})
        assert response.status_code == 422, (method, path, response.text)
        assert set(response.json()) == {"error"}
    assert "invalid domain name" in api.client.get(f"/api/domains/{encoded}", headers=api.bearer).json()["error"]


def test_actions_on_unknown_and_wrong_state_domains(api: Api) -> None:
    b = api.bearer
    for method, action in [("GET", ""), ("DELETE", ""), ("POST", "/start"), ("POST", "/shutdown"),
                           ("POST", "/poweroff"), ("POST", "/reboot"), ("POST", "/pause"), ("POST", "/resume"),
                           ("GET", "/snapshots")]:
        response = api.client.request(method, f"/api/domains/ct-api-missing{action}", headers=b)
        assert response.status_code == 404, (action, response.text)
        assert response.json() == {"error": "no domain named 'ct-api-missing'"}
    clone = api.client.post("/api/domains/ct-api-missing/clone", headers=b, json={"name": unique("c")})
    assert clone.status_code == 404

    guest = unique("state")
    assert api.client.post("/api/domains", headers=b, json={"name": guest, "image": "tiny"}).status_code == 201
    for action in ("shutdown", "poweroff", "reboot", "pause", "resume"):
        response = api.client.post(f"/api/domains/{guest}/{action}", headers=b)
        assert response.status_code == 409, (action, response.text)
        assert guest in response.json()["error"]
    assert api.client.post(f"/api/domains/{guest}/clone", headers=b, json={"name": guest}).status_code == 409
    assert api.client.post(f"/api/domains/{guest}/clone", headers=b, json={"name": BAD_NAME}).status_code == 422


def test_clone_snapshots_and_delete_of_a_shut_off_guest(api: Api) -> None:
    b = api.bearer
    guest, copy = unique("snap"), unique("copy")
    assert api.client.post("/api/domains", headers=b, json={"name": guest, "image": "tiny"}).status_code == 201
    cloned = api.client.post(f"/api/domains/{guest}/clone", headers=b, json={"name": copy})
    assert cloned.status_code == 201 and cloned.json()["name"] == copy and cloned.json()["state"] == "shut-off"

    assert api.client.get(f"/api/domains/{guest}/snapshots", headers=b).json() == []
    made = api.client.post(f"/api/domains/{guest}/snapshots", headers=b, json={"name": "clean"})
    assert made.status_code == 201 and made.json()["name"] == "clean"
    assert api.client.post(f"/api/domains/{guest}/snapshots", headers=b, json={"name": "clean"}).status_code == 409
    assert api.client.post(f"/api/domains/{guest}/snapshots", headers=b, json={"name": BAD_NAME}).status_code == 422
    listed = api.client.get(f"/api/domains/{guest}/snapshots", headers=b).json()
    assert [s["name"] for s in listed] == ["clean"] and listed[0]["current"] is True
    reverted = api.client.post(f"/api/domains/{guest}/snapshots/clean/revert", headers=b)
    assert reverted.status_code == 200 and reverted.json()["snapshots"] == ["clean"]
    assert api.client.post(f"/api/domains/{guest}/snapshots/nope/revert", headers=b).status_code == 404
    assert api.client.delete(f"/api/domains/{guest}/snapshots/nope", headers=b).status_code == 404
    assert api.client.delete(f"/api/domains/{guest}/snapshots/clean", headers=b).json() == {
        "deleted": "clean", "domain": guest}
    assert api.client.get(f"/api/domains/{guest}/snapshots", headers=b).json() == []

    kept = api.client.delete(f"/api/domains/{copy}?keep_disks=true", headers=b).json()
    assert kept["deleted"] == copy and kept["kept"] and Path(kept["kept"][0]).exists()
    assert api.client.delete(f"/api/domains/{guest}", headers=b).json() == {"deleted": guest, "kept": []}
    assert api.client.get(f"/api/domains/{guest}", headers=b).status_code == 404
    assert not (api.corral.settings.guests_dir / guest).exists()


def test_images(api: Api, tmp_path: Path, override: Callable[..., None]) -> None:
    override(image_dirs=(tmp_path,))
    b = api.bearer
    names = [r["name"] for r in api.client.get("/api/images", headers=b).json()]
    assert "tiny" in names
    raw = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(raw), "16M"], check=True)
    image = unique("img")
    made = api.client.post("/api/images", headers=b, json={"name": image, "path": str(raw)})
    assert made.status_code == 201 and made.json()["kind"] == "disk" and made.json()["format"] == "raw"
    assert api.client.post("/api/images", headers=b, json={"name": image, "path": str(raw)}).status_code == 409
    assert api.client.post("/api/images", headers=b,
                           json={"name": unique("img"), "path": str(tmp_path / "none")}).status_code == 422
    assert api.client.post("/api/images", headers=b, json={"name": BAD_NAME, "path": str(raw)}).status_code == 422
    guest = unique("user")
    assert api.client.post("/api/domains", headers=b, json={"name": guest, "image": image}).status_code == 201
    in_use = api.client.delete(f"/api/images/{image}", headers=b)
    assert in_use.status_code == 409 and guest in in_use.json()["error"]
    api.client.delete(f"/api/domains/{guest}", headers=b)
    assert api.client.delete(f"/api/images/{image}", headers=b).json() == {"deleted": image}
    assert raw.exists()  # the user's file stays
    assert api.client.delete(f"/api/images/{image}", headers=b).status_code == 404
    # The tiny image is cached: building it again returns at once with its record.
    built = api.client.post("/api/images/tiny/build", headers=b)
    assert built.status_code == 200 and built.json()["name"] == "tiny" and built.json()["kind"] == "kernel"


def test_files_a_guest_may_be_given_are_the_same_through_the_api(api: Api, tmp_path: Path) -> None:
    """Imports and ISOs only from allowed folders, and the admission check says what create would."""
    b = api.bearer
    link = tmp_path / "dev.iso"
    link.symlink_to("/dev/null")
    for path in ("/etc/shadow", "/proc/self/environ", "/dev/vda", str(link)):
        imported = api.client.post("/api/images", headers=b, json={"name": unique("img"), "path": path})
        assert imported.status_code == 422, (path, imported.text)
        spec = {"name": unique("iso"), "image": "tiny", "iso": path}
        created = api.client.post("/api/domains", headers=b, json=spec)
        checked = api.client.post("/api/domains/check", headers=b, json=spec)
        assert created.status_code == checked.status_code == 422, (path, created.text, checked.text)
        assert created.json()["error"] == checked.json()["error"]
    fits = api.client.post("/api/domains/check", headers=b, json={"name": unique("ok"), "image": "tiny"})
    assert fits.status_code == 200 and fits.json()["fits"] is True


def test_plans_and_reports(api: Api) -> None:
    b = api.bearer
    folder = api.corral.settings.data_dir / "plans"
    folder.mkdir(exist_ok=True)
    plan = plan_consolidation(demo_traceset(), load_catalog()["legacy-1u"], 0.85, time_budget_s=1.0)
    write_plan_json(plan_to_json(plan), folder / "ct-demo.json")
    (folder / "ct-broken.json").write_text("{not json")
    listed = {p["name"]: p for p in api.client.get("/api/plans", headers=b).json()}
    assert {"ct-demo", "ct-broken"} <= set(listed) and listed["ct-demo"]["size_bytes"] > 0
    data = api.client.get("/api/plans/ct-demo", headers=b).json()
    assert data["schema"] == "corral.plan/1" and len(data["hosts"]) == 1
    assert data["summary"][0].startswith("5 servers -> 1 x legacy-1u")
    assert api.client.get("/api/plans/ct-demo.json", headers=b).json()["schema"] == "corral.plan/1"
    report = api.client.get("/api/plans/ct-demo/report", headers=b)
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert "<svg" in report.text and "legacy-1u" in report.text
    assert "sandbox" in report.headers["content-security-policy"]
    assert "script" not in report.headers["content-security-policy"]  # default-src 'none' covers scripts
    assert report.headers["x-content-type-options"] == "nosniff" and report.headers["x-frame-options"] == "SAMEORIGIN"
    assert report.headers["cache-control"] == "no-store"
    assert api.client.get("/api/plans/ct-none", headers=b).status_code == 404
    assert api.client.get("/api/plans/ct-none/report", headers=b).status_code == 404
    broken = api.client.get("/api/plans/ct-broken", headers=b)
    assert broken.status_code == 500 and "invalid JSON" in broken.json()["error"]


def test_unknown_routes_and_methods(api: Api) -> None:
    assert api.client.get("/api/nothing", headers=api.bearer).json() == {"error": "Not Found"}
    wrong = api.client.put("/api/domains", headers=api.bearer)
    assert wrong.status_code == 405 and set(wrong.json()) == {"error"}


def test_sampler_feeds_live_stats_websocket_history_and_metrics(corral: Corral, credentials: Credentials) -> None:
    app = create_app(corral, sampler=True, sample_interval_s=0.3,
                     authenticator=Authenticator(credentials.store, clock=Clock()))
    b = credentials.bearer
    with TestClient(app) as client:
        with client.websocket_connect("/api/ws/stats", headers=b) as ws:
            first = ws.receive_json()
            second = ws.receive_json()
        for samples in (first, second):
            assert samples[0]["domain"] == "Domain-0" and "cpu_pct" in samples[0]
        assert second[0]["time"] > first[0]["time"]
        live = client.get("/api/stats", headers=b).json()
        assert live["sampler"] is True and live["error"] is None
        assert any(s["domain"] == "Domain-0" for s in live["samples"])
        deadline = time.monotonic() + 10
        history: list[dict[str, object]] = []
        while not history and time.monotonic() < deadline:
            history = client.get("/api/stats/Domain-0?since=5m&resource=cpu", headers=b).json()
            time.sleep(0.2)
        assert history and set(history[0]) >= {"time", "cpu_pct", "cpu_host_pct"}
        assert "mem_used_bytes" not in history[0]
        assert client.get("/api/stats/ct-api-none?since=1h", headers=b).json() == []
        metrics = client.get("/metrics", headers=b).text
        assert 'corral_host_cpu_seconds_total{host="local",mode="busy"}' in metrics
        assert 'corral_host_cpu_utilization_ratio{host="local"}' in metrics  # the sampler's last interval
        # A cross-site page cannot open the WebSocket with the user's cookie.
        session = app.state.auth.login("alice", "correct horse battery")
        client.cookies.set("corral_session", session.key)
        with pytest.raises(WebSocketDenialResponse) as refused, \
                client.websocket_connect("/api/ws/stats", headers={"Origin": "https://evil.example"}):
            pass
        assert refused.value.status_code == 403 and refused.value.json() == {"error": "cross-origin WebSocket refused"}
        with client.websocket_connect("/api/ws/stats", headers={"Origin": "http://testserver"}) as ws:
            assert ws.receive_json()[0]["domain"] == "Domain-0"
    assert app.state.live.running is False  # the sampler stops with the app


def test_libvirt_down_is_502(settings: Settings, credentials: Credentials) -> None:
    broken = open_corral(replace(settings, libvirt_uri="qemu+unix:///system?socket=/nonexistent/libvirt-sock"))
    with TestClient(create_app(broken)) as client:
        response = client.get("/api/domains", headers=credentials.bearer)
    assert response.status_code == 502 and "cannot connect to libvirt" in response.json()["error"]


def test_host_header_allow_list(corral: Corral, credentials: Credentials) -> None:
    assert host_of("[::1]:8080") == "[::1]" and host_of("localhost:8080") == "localhost"
    assert host_of("127.0.0.1") == "127.0.0.1" and host_of("evil.example:80") == "evil.example"
    app = create_app(corral, allowed_hosts=LOOPBACK_HOSTS)
    with TestClient(app, base_url="http://127.0.0.1:8080") as client:
        assert client.get("/api/health").status_code == 200
        assert client.get("/api/health", headers={"Host": "[::1]:8080"}).status_code == 200
        refused = client.get("/api/domains", headers={**credentials.bearer, "Host": "evil.example:8080"})
        assert refused.status_code == 400 and refused.json() == {"error": "unexpected Host header 'evil.example:8080'"}
        with pytest.raises(WebSocketDenialResponse) as closed, \
                client.websocket_connect("/api/ws/stats", headers={**credentials.bearer, "Host": "evil.example"}):
            pass
        assert closed.value.status_code == 400 and "Host" in closed.value.json()["error"]
