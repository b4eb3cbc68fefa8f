"""Property-based test of the whole OpenAPI schema with schemathesis: no input gives a 5xx, and every success
conforms to the response schema.

Runs in process against the app over the real Corral of the test data folder, with a valid bearer
token. Left out: the operations that make things in shared places (define a guest from the schema's
own example, register or build or remove images in the image cache shared by the test runs); every
other operation, destructive ones included, runs on generated names, which name no existing guest.
"""

from __future__ import annotations

import itertools
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

SKIPPED = {("POST", "/api/domains"), ("POST", "/api/images"), ("POST", "/api/images/tiny/build"),
           ("POST", "/api/images/debian/build"), ("DELETE", "/api/images/{name}")}
MAX_EXAMPLES = 10
COVERAGE_CASES = 40  # per operation and mode


@pytest.fixture
def corral(offline: Corral) -> Corral:
    """No daemon needed here: libvirt's test driver."""
    return offline


def _verify(case: Any, mode: GenerationMode, headers: dict[str, str]) -> None:
    """One generated request: never a 5xx; the token always taken; every JSON error is {"error": ...}; every
    success has the shape its response model declares."""
    response = case.call(headers=headers)
    assert response.status_code < 500, (case.method, case.formatted_path, case.query, response.text)
    if 200 <= response.status_code < 300:
        case.operation.validate_response(response, case=case)
    if mode is GenerationMode.POSITIVE and case.operation.path != "/api/login":  # negative: mangled auth too
        assert response.status_code != 401, "the token was not taken"
    kind = next((v[0] for k, v in response.headers.items() if k.lower() == "content-type"), "")
    if kind.startswith("application/json") and response.status_code >= 400:
        body = response.json()
        assert isinstance(body, dict) and set(body) == {"error"}, body


def _fixed_names(operation: Any) -> dict[str, str] | None:
    """Operations that change things get a guest name that exists nowhere (all else is generated), so no
    generated name can ever hit a guest of another test or of the host."""
    if operation.method.upper() != "GET" and "{name}" in operation.path:
        return {"name": "ct-api-fuzz-none"}
    return None


def _property(operation: Any, mode: GenerationMode, headers: dict[str, str]) -> Callable[[], None]:
    fixed = _fixed_names(operation)
    strategy = operation.as_strategy(mode, path_parameters=fixed) if fixed else operation.as_strategy(mode)

    @hypothesis.given(case=strategy)
    @hypothesis.settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    def check(case: Any) -> None:
        _verify(case, mode, headers)

    return check


def test_no_input_gives_a_server_error(corral: Corral, credentials: Credentials) -> None:
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", create_app(corral))
    tried: list[str] = []
    covered = 0
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]
        if (operation.method.upper(), operation.path) in SKIPPED:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            # The coverage phase: every enum value, boundaries, missing and wrong-typed parameters.
            cases = schema.iter_coverage_cases(operation, generation_modes=[mode],
                                               generation_config=schema.config.generation_for(operation=operation))
            for case in itertools.islice(cases, COVERAGE_CASES):
                if fixed := _fixed_names(operation):
                    case.path_parameters = {**(case.path_parameters or {}), **fixed}
                _verify(case, mode, credentials.bearer)
                covered += 1
            # Then random inputs.
            try:
                _property(operation, mode, credentials.bearer)()
            except hypothesis.errors.Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # nothing to get wrong: an operation without inputs
        tried.append(f"{operation.method.upper()} {operation.path}")
    assert len(tried) >= 25, tried
    assert covered >= 100
