"""Schema-based fuzzing of the gateway with schemathesis, against real model services.

schemathesis reads the gateway's /openapi.json and generates requests from it,
valid ones (positive) and ones that break the schema (negative), for every
operation. A response must never be a 5xx, and its status, content type,
headers and body must be ones that the schema documents. The example count
keeps the run to about a minute on 2 CPU cores.

schemathesis 4.32's own pytest loader (`schemathesis.pytest.from_fixture`)
fails under pytest 9.2, so each operation runs as a plain Hypothesis test
built from `APIOperation.as_strategy`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.bad_inputs import local_stack

pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 60
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Every operation of the schema; test_schema_lists_known_operations fails when
# a route is added without being listed here.
OPERATIONS = [
    ("POST", "/v1/classify"),
    ("POST", "/v1/classify/batch"),
    ("POST", "/v1/detect"),
    ("POST", "/v1/detect/render"),
    ("POST", "/v1/analyze"),
    ("GET", "/v1/models"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("POST", "/v1/admin/models/{service}/{name}/reload"),
]
# Operations without parameters or body have no input to break.
WITHOUT_INPUT = {("GET", "/v1/models"), ("GET", "/healthz"), ("GET", "/readyz")}
RUNS = [(method, path, GenerationMode.POSITIVE) for method, path in OPERATIONS] + [
    (method, path, GenerationMode.NEGATIVE)
    for method, path in OPERATIONS
    if (method, path) not in WITHOUT_INPUT
]


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with local_stack(tmp_path_factory.mktemp("openapi-fuzz")) as url:
        yield url


@pytest.fixture(scope="module")
def gateway_schema(gateway_url: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{gateway_url}/openapi.json")


def test_schema_lists_known_operations(gateway_schema: schemathesis.BaseSchema) -> None:
    listed = {
        (result.ok().method.upper(), result.ok().path)
        for result in gateway_schema.get_all_operations()
    }

    assert listed == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path", "mode"), RUNS)
def test_operation_conforms(
    gateway_schema: schemathesis.BaseSchema,
    gateway_url: str,
    method: str,
    path: str,
    mode: GenerationMode,
) -> None:
    operation = gateway_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=gateway_url, checks=CHECKS, timeout=60)

    check()
