"""Property-based test of the whole OpenAPI schema with schemathesis: no input gives a 5xx.

Runs in process against the app over the real Corral of the test data folder, with a valid bearer
token. Left out: the operations that make things in shared places (define a guest from the schema's
own example, register or build or remove images in the image cache shared by the test runs); every
other operation, destructive ones included, runs on generated names, which name no existing guest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from schemathesis import GenerationMode

from corral.api.app import create_app
from corral.services.context import Corral

from .conftest import Credentials

pytestmark = pytest.mark.libvirt


SKIPPED = {("POST", "/api/domains"), ("POST", "/api/images"), ("POST", "/api/images/tiny/build"),
           ("DELETE", "/api/images/{name}")}
MAX_EXAMPLES = 6


def _property(operation: Any, mode: GenerationMode,
              headers: dict[str, str]) -> Callable[[], None]:
    @hypothesis.given(case=operation.as_strategy(mode))
    @hypothesis.settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    def check(case: Any) -> None:
        response = case.call(headers=headers)
        assert response.status_code < 500, (case.method, case.formatted_path, response.text)
        if mode is GenerationMode.POSITIVE and operation.path != "/api/login":  # negative: mangled auth too
            assert response.status_code != 401, "the token was not taken"
        kind = next((v[0] for k, v in response.headers.items() if k.lower() == "content-type"), "")
        if kind.startswith("application/json") and response.status_code >= 400:
            body = response.json()
            assert isinstance(body, dict) and set(body) == {"error"}, body

    return check


def test_no_input_gives_a_server_error(corral: Corral, credentials: Credentials) -> None:
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", create_app(corral))
    tried: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]
        if (operation.method.upper(), operation.path) in SKIPPED:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _property(operation, mode, credentials.bearer)()
            except hypothesis.errors.Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # nothing to get wrong: an operation without inputs
        tried.append(f"{operation.method.upper()} {operation.path}")
    assert len(tried) >= 25, tried
