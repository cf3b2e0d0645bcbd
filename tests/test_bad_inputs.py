"""Every case of the bad-input corpus, on every route of a real gateway and real model services.

The classifier and the detector serve the tiny colour models; `tests.bad_inputs`
contains the cases and the response each route must return.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.bad_inputs import ROUTES, Case, build_cases, local_stack, measure, mismatches, send

pytestmark = pytest.mark.slow

CASES = build_cases()


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with local_stack(tmp_path_factory.mktemp("bad-inputs")) as url:
        yield url


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=120.0) as session:
        yield session


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_answer(client: httpx.Client, gateway_url: str, case: Case, route: str) -> None:
    response = send(client, gateway_url, case, route)

    assert response.status_code < 500, response.text
    assert mismatches(case.expected[route], measure(response, route)) == []


def test_services_ready_after_corpus(client: httpx.Client, gateway_url: str) -> None:
    for case in CASES:
        for route in ROUTES:
            send(client, gateway_url, case, route)

    ready = client.get(f"{gateway_url}/readyz")

    # The gateway's /readyz is 200 only when the classifier's and the detector's are.
    assert ready.status_code == 200, ready.text


def test_corpus_covers_every_route() -> None:
    for case in CASES:
        assert set(case.expected) == set(ROUTES), case.name
    assert len({case.name for case in CASES}) == len(CASES)


def test_corpus_written_nowhere(tmp_path: Path) -> None:
    # The corpus is built in memory; building it twice gives the same bytes.
    again = {case.name: case.image or case.body for case in build_cases()}
    assert again == {case.name: case.image or case.body for case in CASES}
