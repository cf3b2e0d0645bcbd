"""checkov on the built overlays and the Dockerfiles: no failed check, and every skip justified.

checkov runs from its own virtualenv (`make checkov-venv`), because it pins
packages that .venv also has. It runs offline: `--skip-download` and
BC_SKIP_MAPPING keep it from fetching policy metadata, and
CKV_SKIP_PACKAGE_UPDATE_CHECK from asking PyPI for a newer release. A skip
is a `checkov.io/skipN` annotation on the Kubernetes object, whose text after
`CHECK_ID=` is the justification.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy_manifests import CHECKOV, DOCKERFILES, OVERLAYS, kustomize_build

OFFLINE_ENV = {
    "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true",
    "BC_SKIP_MAPPING": "TRUE",
}
MIN_JUSTIFICATION_WORDS = 5


@pytest.fixture(scope="module")
def checkov_reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Return checkov's JSON report per framework (kubernetes, dockerfile)."""
    if not CHECKOV.is_file():
        pytest.fail(f"checkov not found at {CHECKOV}; run `make checkov-venv`", pytrace=False)
    folder = tmp_path_factory.mktemp("checkov")
    manifests = []
    for overlay in OVERLAYS:
        path = folder / f"{overlay}.yaml"
        path.write_text(kustomize_build(f"overlays/{overlay}"))
        manifests.append(path)
    command = [
        str(CHECKOV), "--skip-download", "--framework", "kubernetes", "dockerfile",
        "--output", "json", "--compact",
        "-f", *map(str, manifests), *map(str, DOCKERFILES),
    ]  # fmt: skip
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **OFFLINE_ENV},
    )
    try:
        output = json.loads(completed.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov printed no JSON report:\n{completed.stdout}\n{completed.stderr}")
    reports = output if isinstance(output, list) else [output]
    return {report["check_type"]: report for report in reports}


def describe(check: dict[str, Any]) -> str:
    source = Path(check["file_path"]).name
    return f"{check['check_id']} {check['check_name']} on {check['resource']} ({source})"


@pytest.mark.parametrize("framework", ["kubernetes", "dockerfile"])
def test_checkov_finds_no_failure(
    checkov_reports: dict[str, dict[str, Any]], framework: str
) -> None:
    report = checkov_reports[framework]
    failed = [describe(check) for check in report["results"]["failed_checks"]]
    assert not failed, "\n".join(failed)
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] > 0


@pytest.mark.parametrize("framework", ["kubernetes", "dockerfile"])
def test_checkov_skips_are_justified(
    checkov_reports: dict[str, dict[str, Any]], framework: str
) -> None:
    for check in checkov_reports[framework]["results"]["skipped_checks"]:
        justification = (check.get("check_result") or {}).get("suppress_comment", "")
        assert len(justification.split()) >= MIN_JUSTIFICATION_WORDS, describe(check)


def test_checkov_covers_every_overlay(checkov_reports: dict[str, dict[str, Any]]) -> None:
    checked = {
        Path(check["file_path"]).name
        for check in checkov_reports["kubernetes"]["results"]["passed_checks"]
    }
    assert checked == {f"{overlay}.yaml" for overlay in OVERLAYS}
