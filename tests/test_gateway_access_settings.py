"""Validation of the gateway's key, admin and limit settings, without a running gateway."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from services.common.settings import InvalidSettingsError, load_settings
from services.gateway.auth import key_digest
from services.gateway.settings import GatewaySettings

DIGEST_A = key_digest("key-a")
DIGEST_B = key_digest("key-b")


def entry(key_id: str, digest: str, **fields: str) -> dict[str, str]:
    return {"id": key_id, "sha256": digest, **fields}


def test_defaults_are_closed() -> None:
    settings = GatewaySettings()

    assert settings.open_access is False
    assert settings.api_keys == []
    assert settings.admin_key_sha256 is None
    assert settings.classifier_admin_token is None


def test_api_keys_read_from_json_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = [entry("team-a", DIGEST_A.upper()), entry("team-b", DIGEST_B, tier="premium")]
    monkeypatch.setenv("VS_GATEWAY_API_KEYS", json.dumps(keys))
    monkeypatch.setenv("VS_GATEWAY_CLASSIFIER_ADMIN_TOKEN", "token-0123456789abcdef")

    settings = GatewaySettings()

    assert [(key.id, key.sha256, key.tier) for key in settings.api_keys] == [
        ("team-a", DIGEST_A, "standard"),
        ("team-b", DIGEST_B, "premium"),
    ]
    assert settings.classifier_admin_token is not None
    assert "token-0123456789abcdef" not in repr(settings)


def test_open_access_allowed_in_development() -> None:
    settings = GatewaySettings(environment="development", open_access=True)

    assert settings.open_access is True


def test_open_access_rejected_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VS_GATEWAY_OPEN_ACCESS", "true")

    with pytest.raises(InvalidSettingsError) as raised:
        load_settings(GatewaySettings)

    assert "VS_GATEWAY_OPEN_ACCESS (open_access)" in str(raised.value)
    assert "VS_GATEWAY_ENVIRONMENT=development" in str(raised.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"api_keys": [entry("team-a", "abc")]}, "64 hexadecimal characters"),
        ({"api_keys": [entry("team-a", "g" * 64)]}, "64 hexadecimal characters"),
        ({"api_keys": [entry("team a", DIGEST_A)]}, "String should match pattern"),
        ({"api_keys": [entry("anonymous", DIGEST_A)]}, "reserved"),
        ({"api_keys": [entry("admin", DIGEST_A)]}, "reserved"),
        ({"api_keys": [entry("team-a", DIGEST_A, tier="")]}, "String should match pattern"),
        ({"api_keys": [{**entry("team-a", DIGEST_A), "key": "plain"}]}, "Extra inputs"),
        (
            {"api_keys": [entry("team-a", DIGEST_A), entry("team-a", DIGEST_B)]},
            "repeated: team-a",
        ),
        (
            {"api_keys": [entry("team-a", DIGEST_A), entry("team-b", DIGEST_A)]},
            "same sha256",
        ),
        ({"admin_key_sha256": "not-hex"}, "64 hexadecimal characters"),
        (
            {"api_keys": [entry("team-a", DIGEST_A)], "admin_key_sha256": DIGEST_A},
            "admin key must differ",
        ),
        ({"max_query_parameters": 0}, "max_query_parameters"),
        ({"max_query_value_chars": 0}, "max_query_value_chars"),
        ({"max_model_name_chars": 0}, "max_model_name_chars"),
        ({"max_classes": 0}, "max_classes"),
    ],
)
def test_invalid_access_settings_rejected(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        GatewaySettings.model_validate(values)

    assert message in str(raised.value)


def test_empty_admin_settings_mean_unset() -> None:
    settings = GatewaySettings(
        admin_key_sha256="", classifier_admin_token="", detector_admin_token=""
    )

    assert settings.admin_key_sha256 is None
    assert settings.classifier_admin_token is None
    assert settings.detector_admin_token is None
