"""The OpenAPI schema shows real response shapes, and the response models give the JSON the services give.

No libvirt daemon needed: the schema is built without a connection, and the models are fed the services'
own dataclasses and JSON forms, built here by hand.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import TypeAdapter

from corral.adapters.accel import Accelerator
from corral.api.app import create_app
from corral.api.models import NAME_SCHEMA
from corral.api.schemas import DomainDetails, DomainRow, HistoryRow, HostStatus, Image, PlanDocument, Snapshot
from corral.config import Settings
from corral.core.capacity import CapacityLimits, HostFacts, capacity_report, footprint
from corral.monitoring.metrics import METRICS
from corral.planning import demo_traceset, load_catalog, plan_consolidation, plan_to_json
from corral.planning.report import summary_lines
from corral.services.context import open_corral
from corral.services.guests import GuestInfo, ListedDomain, SnapshotInfo
from corral.services.host import HostReport, HostSnapshot
from corral.services.images import ImageRecord

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

NOT_JSON = {("GET", "/api/plans/{name}/report"), ("GET", "/api/plans/{name}/servers.csv"),
            ("GET", "/metrics")}  # HTML, CSV and Prometheus text


@pytest.fixture(scope="module")
def openapi(settings: Settings) -> Iterator[dict[str, Any]]:
    corral = open_corral(settings)  # connects to libvirt only when asked something: never, here
    try:
        with TestClient(create_app(corral)) as client:
            response = client.get("/api/openapi.json")
            assert response.status_code == 200
            yield response.json()
    finally:
        corral.close()


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _shape(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """The object a response is made of: the schema itself, or the items of an array."""
    schema = _resolve(schema, components)
    if schema.get("type") == "array":
        schema = _resolve(schema.get("items", {}), components)
    return schema


def test_every_json_success_response_has_a_shape(openapi: dict[str, Any]) -> None:
    components = openapi["components"]["schemas"]
    typed, other, untyped = [], set(), []
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            where = (method.upper(), path)
            successes = {code: r for code, r in operation["responses"].items() if code.startswith("2")}
            assert successes, f"{where}: no 2xx response documented"
            for code, response in successes.items():
                for media, content in response.get("content", {}).items():
                    if media != "application/json":
                        other.add(where)
                        continue
                    shape = _shape(content.get("schema", {}), components)
                    if shape.get("type") == "object" and shape.get("properties"):
                        typed.append(where)
                    else:
                        untyped.append((*where, code, shape))
    assert not untyped, untyped
    assert other == NOT_JSON
    assert len(typed) >= 30, typed


def test_listings_are_arrays_of_typed_rows(openapi: dict[str, Any]) -> None:
    components = openapi["components"]["schemas"]
    for path, row in [("/api/domains", "DomainRow"), ("/api/images", "Image"), ("/api/plans", "PlanEntry"),
                      ("/api/domains/{name}/snapshots", "Snapshot"), ("/api/stats/{domain}", "HistoryRow")]:
        schema = openapi["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert schema["type"] == "array" and schema["items"]["$ref"].endswith(f"/{row}"), (path, schema)
    domain_row = components["DomainRow"]
    assert {"name", "host", "state", "reason", "cpu_pct"} <= set(domain_row["required"])
    host = components["HostStatus"]["properties"]
    assert host["limits"]["$ref"].endswith("/Limits")
    budget = _resolve(host["capacity"]["additionalProperties"], components)
    assert set(budget["properties"]) == {"unit", "limit", "used", "free"}
    assert set(components["Snapshot"]["properties"]) == {"name", "created", "state", "current"}
    assert {"schema", "hosts", "summary"} <= set(components["PlanDocument"]["properties"])


def test_path_names_keep_their_documented_pattern(openapi: dict[str, Any]) -> None:
    """Names are checked by the services, but the schema still shows their shape."""
    for path in ("/api/domains/{name}", "/api/domains/{name}/snapshots/{snapshot}", "/api/images/{name}",
                 "/api/stats/{domain}", "/api/plans/{name}"):
        operation = next(iter(openapi["paths"][path].values()))
        for parameter in operation["parameters"]:
            if parameter["in"] == "path":
                assert parameter["schema"]["pattern"] == NAME_SCHEMA["pattern"], (path, parameter)


# --- the models give the same bytes the services' JSON gave through `dict[str, Any]` ------------------------
def _old(data: Any) -> bytes:
    """How a route serialized the services' JSON before it had response models."""
    return TypeAdapter(Any).dump_json(data)


def _new(model: Any, value: Any, *, exclude_unset: bool = False) -> bytes:
    """How FastAPI serializes a route's return value through its response model."""
    adapter: TypeAdapter[Any] = TypeAdapter(model)
    return adapter.dump_json(adapter.validate_python(value, from_attributes=True), by_alias=True,
                             exclude_unset=exclude_unset)


def test_domain_json_is_what_the_services_give() -> None:
    rows = [ListedDomain("Domain-0", 0, "running", 4, 16000, 12.345, 1234.56),
            ListedDomain("web", None, "shut-off", 1, 256, None, 0.0),
            ListedDomain("db", 3, "paused", 2, 512, 3.0, 7.0, "I/O error", "local"),
            ListedDomain("Domain-0", None, "unreachable", 0, 0, None, 0.0, "cannot reach far", "far")]
    assert _new(list[DomainRow], [r.as_dict() for r in rows]) == _old([r.as_dict() for r in rows])
    info = GuestInfo("web", "f00", None, "shut-off", None, 1, 256, 0.5, True, "tiny", "cpu=15", [
        {"path": "/g/web/disk0.qcow2", "format": "qcow2", "device": "disk", "target": "vda"}],
        "/g/web/console.log", None, ["s1"], False, "local")
    assert _new(DomainDetails, info) == _old(info.as_dict())
    snapshots = [SnapshotInfo("s1", "2024-01-01T00:00:00+00:00", "shutoff", True)]
    assert _new(list[Snapshot], snapshots) == _old([s.__dict__ for s in snapshots])
    image = ImageRecord("tiny", "kernel", "2024-01-01T00:00:00+00:00", 123, kernel="/i/vmlinux",
                        initrd="/i/initrd.img", cmdline="console=ttyS0", kernel_version="6.1")
    assert _new(list[Image], [image]) == _old([image.as_dict()])


def test_host_json_is_what_the_services_give() -> None:
    facts = HostFacts(cores=4, memory_mib=16000)
    for running in ([], [footprint("web", 2, 512, 15.0, CapacityLimits())]):
        report = HostReport("local", "qemu:///system", HostSnapshot("h", "cpu", 4, 16000, 900, 3.5, "6.1"),
                            Accelerator("kvm", "KVM works"), capacity_report(facts, CapacityLimits(), running),
                            len(running), 3, "corral", "the corral network")
        assert _new(HostStatus, report.as_dict()) == _old(report.as_dict())


def test_history_rows_keep_only_the_metrics_asked_for() -> None:
    raw = [{"time": 1000.0, "cpu_pct": 1.5, "cpu_host_pct": None}]
    rollup = [{"time": 900, "samples": 3, **{k: v for m in METRICS for k, v in
                                              ((m, 1.0), (f"{m}_min", 0), (f"{m}_max", None))}}]
    for rows in (raw, rollup, []):
        assert _new(list[HistoryRow], rows, exclude_unset=True) == _old(rows)


def test_a_plan_is_given_as_it_is_kept() -> None:
    plan = plan_to_json(plan_consolidation(demo_traceset(), load_catalog()["legacy-1u"], 0.85, time_budget_s=0.5))
    older = {k: v for k, v in plan.items() if k not in ("allowed_over_steps", "gaps_filled", "validation", "notes")}
    for data in (plan, older):
        data = json.loads(json.dumps(data))  # as read back from the file
        answer = {**data, "summary": summary_lines(data)}
        assert _new(PlanDocument, answer, exclude_unset=True) == _old(answer)
    # Keys the model does not name go through too (after the ones it names).
    other = {**plan, "made_by": "someone else", "hosts": [{**h, "rack": 7} for h in plan["hosts"]]}
    answer = {**other, "summary": summary_lines(other)}
    assert json.loads(_new(PlanDocument, answer, exclude_unset=True)) == json.loads(_old(answer))
