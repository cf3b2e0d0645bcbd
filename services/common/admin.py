"""The admin bearer token that guards routes which change what a service serves."""

from __future__ import annotations

import secrets

from services.common.errors import Forbidden, Unauthorized
from services.common.settings import ModelServiceSettings

_SCHEME = "bearer "


def check_admin(settings: ModelServiceSettings, authorization: str | None) -> None:
    """Raise unless `authorization` is `Bearer <admin_token>`.

    Raises Forbidden (403) when no admin token is configured and Unauthorized
    (401) when the header is missing or contains another token.
    """
    variable = f"{settings.model_config.get('env_prefix', '')}ADMIN_TOKEN"
    if settings.admin_token is None:
        raise Forbidden(f"admin routes are disabled; set {variable} to enable them")
    challenge = {"WWW-Authenticate": "Bearer"}
    if not authorization or not authorization.lower().startswith(_SCHEME):
        raise Unauthorized(
            "admin routes need the header 'Authorization: Bearer <admin token>'",
            headers=challenge,
        )
    supplied = authorization[len(_SCHEME) :].strip().encode()
    expected = settings.admin_token.get_secret_value().encode()
    if not secrets.compare_digest(supplied, expected):
        raise Unauthorized(f"wrong admin token; use the value of {variable}", headers=challenge)
