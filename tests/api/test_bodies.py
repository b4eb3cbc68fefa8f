"""Strict request bodies: no bool, string or float for a whole number, no NaN or infinity, no absurd number;
each refused with 422 and a message that names the field, and nothing made."""

from __future__ import annotations

import pytest

from .conftest import Api, unique

HUGE = "9" * 400  # a JSON integer no machine number holds

REFUSED = [
    ('"vcpus": true', "vcpus: Input should be a valid integer"),
    ('"vcpus": false', "vcpus: Input should be a valid integer"),
    ('"vcpus": 1.0', "vcpus: Input should be a valid integer"),
    ('"vcpus": "1"', "vcpus: Input should be a valid integer"),
    ('"vcpus": null', "vcpus: Input should be a valid integer"),
    (f'"vcpus": {HUGE}', "vcpus: Input should be less than or equal to"),
    ('"memory": 256.0', "memory: Input should be a valid integer"),
    ('"memory": true', "memory: Input should be a valid integer"),
    (f'"memory": {HUGE}', "memory: Input should be less than or equal to"),
    ('"memory": 1e400', "memory: Input should be a valid integer"),
    ('"disk": true', "disk: Input should be a valid number"),
    ('"disk": "1"', "disk: Input should be a valid number"),
    ('"disk": NaN', "disk: Input should be a finite number"),
    ('"disk": Infinity', "disk: Input should be a finite number"),
    ('"disk": -Infinity', "disk: Input should be a finite number"),
    (f'"disk": {HUGE}', "disk: Input should be"),
    ('"load": {"cpu": true}', "load.table.cpu: Input should be a valid number"),
    ('"load": {"cpu": "15"}', "load.table.cpu: Input should be a valid number"),
    ('"load": {"cpu": NaN}', "load.table.cpu: Input should be a finite number"),
    (f'"load": {{"disk": {HUGE}}}', "load.table.disk: Input should be"),
    ('"load": 15', "load.table: Input should be"),
    ('"load": "' + "cpu=1," * 50 + '"', "load.text: String should have at most 200 characters"),
    ('"iso": 5', "iso: Input should be a valid string"),
    ('"name": 5', "name: Input should be a valid string"),
]


@pytest.mark.parametrize(("field", "message"), REFUSED, ids=[f for f, _ in REFUSED])
def test_spec_fields_of_the_wrong_kind_are_refused(api: Api, field: str, message: str) -> None:
    guest = unique("strict")
    body = '{"name": "' + guest + '", "image": "tiny", ' + field + "}" if not field.startswith('"name"') \
        else '{"image": "tiny", ' + field + "}"
    headers = {**api.bearer, "Content-Type": "application/json"}
    for path in ("/api/domains/check", "/api/domains"):
        response = api.client.post(path, content=body, headers=headers)
        assert response.status_code == 422, (path, response.text)
        assert set(response.json()) == {"error"} and message in response.json()["error"], response.json()
    assert not api.corral.libvirt.exists(guest)


def test_the_core_still_judges_the_ranges(api: Api) -> None:
    headers = {**api.bearer, "Content-Type": "application/json"}
    for field, message in [('"vcpus": 0', "vcpus=0 must be between 1 and 64"),
                           ('"vcpus": 65', "vcpus=65 must be between 1 and 64"),
                           ('"memory": 10', "memory=10 MiB must be between"),
                           ('"disk": 0', "disk=0 GiB must be"),
                           ('"load": {"cpu": 15.5}', "load cpu=15.5 must be a whole percent"),
                           ('"load": "cpu=1e400"', "load cpu must be a finite number")]:
        body = '{"name": "ct-api-range", "image": "tiny", ' + field + "}"
        response = api.client.post("/api/domains/check", content=body, headers=headers)
        assert response.status_code == 422 and message in response.json()["error"], (field, response.json())
    # Whole numbers as JSON gives them, floats where a fraction makes sense, both forms of load.
    for field in ('"vcpus": 2, "memory": 128', '"disk": 1.5', '"disk": 2', '"load": {"cpu": 15, "disk": 64.5}',
                  '"load": "cpu=15,net=32"'):
        body = '{"name": "ct-api-range", "image": "tiny", ' + field + "}"
        response = api.client.post("/api/domains/check", content=body, headers=headers)
        assert response.status_code == 200, (field, response.text)


def test_other_bodies_are_strict_too(api: Api) -> None:
    headers = {**api.bearer, "Content-Type": "application/json"}
    assert api.client.post("/api/login", json={"user": 5, "password": "x" * 8}).status_code == 422
    assert api.client.post("/api/login", json={"user": "alice", "password": True}).status_code == 422
    assert api.client.post("/api/domains/ct-api-none/clone", content='{"name": 7}', headers=headers).status_code == 422
    assert api.client.post("/api/images", content='{"name": "x", "path": 1}', headers=headers).status_code == 422


def test_the_schema_shows_the_core_s_ranges(api: Api) -> None:
    schema = api.client.get("/api/openapi.json").json()
    spec = schema["components"]["schemas"]["SpecBody"]["properties"]
    assert spec["vcpus"]["minimum"] == 1 and spec["vcpus"]["maximum"] == 64 and spec["vcpus"]["type"] == "integer"
    assert spec["memory"]["minimum"] == 64 and spec["disk"]["exclusiveMinimum"] == 0
