"""Identifying the caller of every gateway route from its API key or the admin key.

`authenticate` runs before each route as an app-wide dependency and stores a
`ClientIdentity` in `request.state.client`. Clients send the key as
`Authorization: Bearer <key>` or `X-API-Key: <key>`. The settings hold only
SHA-256 digests of the keys, so the gateway hashes the presented key and looks
the digest up. Routes in `OPEN_ROUTES` need no key, and routes under
`ADMIN_ROUTE_PREFIX` need the admin key instead of an API key.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass

from fastapi import Request

from services.common.errors import Forbidden, InvalidRequest, Unauthorized
from services.gateway.access_settings import AccessSettings

logger = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
# Routes that probes and scrapers call without credentials. FastAPI serves
# /docs and /openapi.json outside the routers, so no dependency runs for them.
OPEN_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
ADMIN_ROUTE_PREFIX = "/v1/admin/"
_CHALLENGE = {"WWW-Authenticate": "Bearer"}
_BEARER = "bearer"
_KEY_HEADERS = f"'Authorization: Bearer <key>' or '{API_KEY_HEADER}: <key>'"


@dataclass(frozen=True)
class ClientIdentity:
    """The caller of a request: the id of its key (never the key) and its tier."""

    key_id: str
    tier: str


ANONYMOUS = ClientIdentity("anonymous", "default")
ADMIN = ClientIdentity("admin", "admin")


def key_digest(key: str) -> str:
    """Return the hexadecimal SHA-256 digest of `key`, as the settings store it."""
    return hashlib.sha256(key.encode()).hexdigest()


class AccessControl:
    """The configured key digests, and the rules that turn a presented key into an identity."""

    def __init__(self, settings: AccessSettings) -> None:
        self._clients = {
            entry.sha256: ClientIdentity(entry.id, entry.tier) for entry in settings.api_keys
        }
        self._admin_digest = settings.admin_key_sha256
        self._open_access = settings.open_access

    def log_configuration(self) -> None:
        if self._open_access:
            logger.warning(
                "open access: requests without an API key are served as the anonymous client; "
                "use this in development only"
            )
        elif not self._clients:
            logger.warning(
                "no API keys configured: every route but health, readiness and metrics "
                "returns 401; set VS_GATEWAY_API_KEYS"
            )
        logger.info(
            "access control configured",
            extra={"api_keys": len(self._clients), "admin_routes": self._admin_digest is not None},
        )

    def identify_client(self, key: str | None) -> ClientIdentity:
        """Return the identity of an API key; raise Unauthorized (401) for a missing or wrong key.

        Without a key the caller is ANONYMOUS in open access mode.
        """
        if key is None:
            if self._open_access:
                return ANONYMOUS
            raise Unauthorized(f"missing API key; send {_KEY_HEADERS}", headers=_CHALLENGE)
        # A dict lookup on the digest is safe from timing attacks: its timing depends
        # only on the SHA-256 digest of the presented key, and learning how that digest
        # compares with a stored one reveals nothing about the stored key's preimage.
        client = self._clients.get(key_digest(key))
        if client is None:
            raise Unauthorized(
                "invalid API key; ask the gateway operator for a key", headers=_CHALLENGE
            )
        return client

    def identify_admin(self, key: str | None) -> ClientIdentity:
        """Return ADMIN for the admin key.

        Raises Unauthorized (401) for a missing or unknown key, and Forbidden
        (403) for an API key or when no admin key is configured.
        """
        if key is None:
            raise Unauthorized(
                f"admin routes need the admin key; send {_KEY_HEADERS}", headers=_CHALLENGE
            )
        if self._admin_digest is None:
            raise Forbidden("admin routes are disabled; set VS_GATEWAY_ADMIN_KEY_SHA256")
        digest = key_digest(key)
        if hmac.compare_digest(digest, self._admin_digest):
            return ADMIN
        if digest in self._clients:
            raise Forbidden("this API key cannot call admin routes; send the admin key")
        raise Unauthorized("invalid admin key", headers=_CHALLENGE)


def presented_key(request: Request) -> str | None:
    """Return the key from the Authorization or X-API-Key header, or None when neither is sent.

    Raises Unauthorized for an Authorization header with another scheme, and
    InvalidRequest when both headers are sent with different keys.
    """
    bearer = None
    authorization = request.headers.get("authorization")
    if authorization is not None:
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != _BEARER or not credentials.strip():
            raise Unauthorized(
                "the Authorization header must be 'Bearer <key>'", headers=_CHALLENGE
            )
        bearer = credentials.strip()
    api_key = request.headers.get(API_KEY_HEADER) or None
    if bearer is not None and api_key is not None and bearer != api_key:
        raise InvalidRequest(
            f"the Authorization and {API_KEY_HEADER} headers carry different keys; "
            "send the key in one of them"
        )
    return bearer or api_key


async def authenticate(request: Request) -> None:
    """Store the caller's identity in `request.state.client`, or raise 401 or 403."""
    route = request.scope.get("route")
    path = str(getattr(route, "path", ""))
    if path in OPEN_ROUTES:
        return
    access: AccessControl = request.app.state.access
    key = presented_key(request)
    if path.startswith(ADMIN_ROUTE_PREFIX):
        request.state.client = access.identify_admin(key)
    else:
        request.state.client = access.identify_client(key)
