"""Redis key names and values shared by the gateway and the model services.

A model service publishes the live version of each model it serves, and the
gateway reads it before it uses a cached response. Both sides build the key
names here, so that they cannot drift apart.

Keys, all below one prefix per deployment:

- `<prefix>:live:<service>:<model>`: JSON `{"version": 2, "defaults": {...}}`,
  the live version and the default value of each request parameter that
  changes the result, as canonical strings (see `canonical_number`).
- `<prefix>:default:<service>`: name of the model that serves requests
  which name none. Absent when the service has no default model.
- `<prefix>:cache:...`: cached gateway responses.
- `<prefix>:ratelimit:<key id>`: rate-limit state of one client key.
- `<prefix>:predictions:<service>:<model>`: the prediction log stream of one
  model (see `services.common.prediction_record`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

DEFAULT_KEY_PREFIX = "visionserve"
REDIS_URL_SCHEMES = ("redis", "rediss", "unix")
_KEY_PREFIX = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def live_version_key_prefix(prefix: str, service: str) -> str:
    """Return the live-version key of `service` without the model name at its end."""
    return f"{prefix}:live:{service}:"


def live_version_key(prefix: str, service: str, model: str) -> str:
    return live_version_key_prefix(prefix, service) + model


def default_model_key(prefix: str, service: str) -> str:
    return f"{prefix}:default:{service}"


def canonical_number(value: float) -> str:
    """Return one spelling for each number, so `0.25`, `0.250` and `2.5e-1` share cache keys.

    Whole numbers keep a trailing `.0` (`1.0`), the spelling of Python's repr.
    """
    return repr(float(value))


@dataclass(frozen=True)
class LiveVersion:
    """The live version of one model and the defaults of its request parameters."""

    version: int
    defaults: Mapping[str, str]

    def to_json(self) -> str:
        return json.dumps({"version": self.version, "defaults": dict(self.defaults)})


def check_redis_url(value: str) -> str:
    """Return `value` when it is empty or a Redis URL, else raise ValueError."""
    if not value:
        return value
    scheme = urlsplit(value).scheme
    if scheme not in REDIS_URL_SCHEMES:
        raise ValueError(
            f"expected a Redis URL such as redis://127.0.0.1:6379/0 (scheme "
            f"{', '.join(REDIS_URL_SCHEMES)}), got scheme {scheme or '(none)'!r}"
        )
    return value


def check_key_prefix(value: str) -> str:
    """Return `value` when it is a usable key prefix, else raise ValueError."""
    if not _KEY_PREFIX.match(value):
        raise ValueError(
            "must be 1 to 64 characters from letters, digits and . _ : -, for example visionserve"
        )
    return value


def redacted_redis_url(url: str) -> str:
    """Return `url` without its user name and password, for logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def single_attempt_client(url: str, timeout_seconds: float) -> redis.Redis:
    """Return a client that sends each command once, so that its caller decides when to retry."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        retry=Retry(NoBackoff(), 0),
    )
