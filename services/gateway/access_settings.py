"""Gateway settings for API keys, the admin key and request limits.

`GatewaySettings` inherits these fields, so they are read from the same
`VS_GATEWAY_*` environment variables. Keys are configured as SHA-256 digests
only: `python -m services.gateway.keys` creates a key and prints its entry.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator

from services.common.settings import ServiceSettings

# Key ids and tiers appear in logs and metric labels, so they are short and plain.
IDENTIFIER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
# Identities that the gateway assigns itself, which a configured key may not take.
RESERVED_KEY_IDS = frozenset({"anonymous", "admin"})
DEFAULT_TIER = "standard"

Identifier = Annotated[str, Field(pattern=IDENTIFIER_PATTERN)]


def _normalized_digest(value: str) -> str:
    if not SHA256_HEX.fullmatch(value):
        raise ValueError(
            "must be the SHA-256 digest of the key as 64 hexadecimal characters; "
            "print it with: python -m services.gateway.keys hash < key.txt"
        )
    return value.lower()


class ApiKeyEntry(BaseModel):
    """One configured API key: its id, the SHA-256 digest of the key, and its tier."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Identifier = Field(description="Name of the client, written to the access log.")
    sha256: str = Field(description="Hexadecimal SHA-256 digest of the key.")
    tier: Identifier = Field(
        default=DEFAULT_TIER,
        description="Tier of the client, for per-tier policies such as rate limits.",
    )

    @field_validator("id")
    @classmethod
    def _id_not_reserved(cls, value: str) -> str:
        if value in RESERVED_KEY_IDS:
            raise ValueError(f"{value!r} is reserved for the gateway; choose another key id")
        return value

    @field_validator("sha256")
    @classmethod
    def _sha256_hex(cls, value: str) -> str:
        return _normalized_digest(value)


class AccessSettings(ServiceSettings):
    """Access control: API keys, open access for development, and the admin key."""

    open_access: bool = Field(
        default=False,
        description=(
            "Serve requests without an API key as the anonymous client. Only allowed with "
            "environment=development. A request that sends a key is still checked."
        ),
    )
    api_keys: list[ApiKeyEntry] = Field(
        default_factory=list,
        description=(
            'JSON list of {"id", "sha256", "tier"} entries. Unset and without open_access, '
            "every route but health, readiness, metrics and docs returns 401."
        ),
    )
    admin_key_sha256: str | None = Field(
        default=None,
        description=(
            "Hexadecimal SHA-256 digest of the admin key, which alone opens the /v1/admin "
            "routes. Unset: the admin routes are off and return 403 to any key."
        ),
    )
    classifier_admin_token: SecretStr | None = Field(
        default=None,
        description="The classifier's VS_CLASSIFIER_ADMIN_TOKEN, sent when forwarding a reload.",
    )
    detector_admin_token: SecretStr | None = Field(
        default=None,
        description="The detector's VS_DETECTOR_ADMIN_TOKEN, sent when forwarding a reload.",
    )

    @field_validator("open_access")
    @classmethod
    def _open_access_only_in_development(cls, value: bool, info: ValidationInfo) -> bool:
        # `environment` is a field of ServiceSettings, so it is validated before this one.
        if value and info.data.get("environment") != "development":
            raise ValueError(
                "open access is only allowed with VS_GATEWAY_ENVIRONMENT=development; "
                "in production configure API keys in VS_GATEWAY_API_KEYS instead"
            )
        return value

    @field_validator("api_keys")
    @classmethod
    def _unique_keys(cls, value: list[ApiKeyEntry]) -> list[ApiKeyEntry]:
        ids = [entry.id for entry in value]
        duplicate_ids = sorted({key_id for key_id in ids if ids.count(key_id) > 1})
        if duplicate_ids:
            raise ValueError(f"key ids must be unique; repeated: {', '.join(duplicate_ids)}")
        digests = [entry.sha256 for entry in value]
        if len(set(digests)) != len(digests):
            raise ValueError("two entries have the same sha256; give every client its own key")
        return value

    @field_validator("admin_key_sha256")
    @classmethod
    def _admin_digest_hex(cls, value: str | None, info: ValidationInfo) -> str | None:
        if not value:
            return None
        digest = _normalized_digest(value)
        # api_keys is declared before this field, so it is validated first.
        if any(entry.sha256 == digest for entry in info.data.get("api_keys", [])):
            raise ValueError("the admin key must differ from every key in VS_GATEWAY_API_KEYS")
        return digest

    @field_validator("classifier_admin_token", "detector_admin_token")
    @classmethod
    def _empty_token_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value() else None


class RequestLimitSettings(ServiceSettings):
    """Limits on the query string that the gateway checks before a route runs."""

    max_query_parameters: int = Field(
        default=64,
        ge=1,
        description="Maximum number of query parameters in one request, each repeat counted.",
    )
    max_query_value_chars: int = Field(
        default=1024,
        ge=1,
        description="Maximum length of a query parameter name or value, in characters.",
    )
    max_model_name_chars: int = Field(
        default=64,
        ge=1,
        description=(
            "Maximum length of a model name in model, classifier_model or an admin route, "
            "in characters. "
            "Model repositories accept names of 1 to 64 characters."
        ),
    )
    max_classes: int = Field(
        default=1024,
        ge=1,
        description=(
            "Maximum number of class ids in the classes parameter of the detection routes, "
            "comma-separated and repeated values counted together."
        ),
    )
