"""Publishing the live version of each model to Redis, for the gateway's response cache.

The gateway uses a cached response only while the live version that a model
service published for the model equals the version that computed the
response. So the service writes the new version before a reload swaps it in
(`publish_before_swap`), and rewrites every record on a heartbeat, with a TTL,
so that the records of a stopped service expire.

Publishing is optional (`redis_url` empty turns it off). Prediction requests
never touch Redis, and a failed heartbeat is logged while the service keeps
serving. A reload whose new version Redis does not take is rejected, so that
the old version keeps serving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping

import anyio
import anyio.to_thread
import redis

from services.common.redis_keys import (
    LiveVersion,
    default_model_key,
    live_version_key,
    redacted_redis_url,
    single_attempt_client,
)
from services.common.repository import LoadedModel

logger = logging.getLogger(__name__)

# Returns the default of each request parameter that changes the result of `model`,
# as canonical strings.
RequestDefaults = Callable[[LoadedModel], Mapping[str, str]]


class LiveVersionNotPublished(Exception):
    """Redis did not take the record of a new live version, so the version must not go live."""


class LiveVersionPublisher:
    """Writes `<prefix>:live:<service>:<model>` and `<prefix>:default:<service>` to Redis.

    Every write holds one lock and sends all records in one transaction, and
    the records are updated under the same lock. So a heartbeat that started
    before a reload can never overwrite the new version with the old one.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        service: str,
        ttl_seconds: float,
        timeout_seconds: float,
        request_defaults: RequestDefaults,
    ) -> None:
        self._url = url
        # No retries: a write that fails is repeated by the next heartbeat anyway.
        self._client = single_attempt_client(url, timeout_seconds)
        self._prefix = prefix
        self._service = service
        self._ttl_ms = int(ttl_seconds * 1000)
        self._heartbeat_seconds = ttl_seconds / 3
        self._request_defaults = request_defaults
        self._lock = threading.Lock()
        self._records: dict[str, str] = {}
        self._default_model: str | None = None
        self._failing = False

    def publish_all(self, models: Iterable[LoadedModel], default_model: str | None) -> None:
        """Publish every model that the service now serves, and its default model. Blocks."""
        with self._lock:
            self._records = {model.name: self._record(model) for model in models}
            self._default_model = default_model
            self._write()

    def publish_before_swap(self, model: LoadedModel) -> None:
        """Publish `model` as the live version of its name. Call it before it starts serving.

        Raises LiveVersionNotPublished when Redis does not take the write. The
        reload must then not go ahead: the gateway would keep returning
        the previous version's cached responses until that record expires.
        """
        with self._lock:
            previous = self._records.get(model.name)
            self._records[model.name] = self._record(model)
            if self._write():
                return
            if previous is None:
                del self._records[model.name]
            else:
                self._records[model.name] = previous
        raise LiveVersionNotPublished(
            f"cannot publish version {model.version} of {model.name} to Redis at "
            f"{redacted_redis_url(self._url)}, so it does not go live: the gateway's cache "
            "would keep returning the previous version's answers; retry when Redis is reachable"
        )

    def refresh(self) -> None:
        """Rewrite every record, renewing its TTL. Does nothing before the models load."""
        with self._lock:
            if self._records:
                self._write()

    async def heartbeat(self) -> None:
        """Call `refresh` in a worker thread three times per TTL, until cancelled."""
        while True:
            await anyio.sleep(self._heartbeat_seconds)
            await anyio.to_thread.run_sync(self.refresh)

    def close(self) -> None:
        self._client.close()

    def _record(self, model: LoadedModel) -> str:
        return LiveVersion(model.version, self._request_defaults(model)).to_json()

    def _write(self) -> bool:
        """Write every record in one transaction; return False (and log) when Redis fails."""
        transaction = self._client.pipeline(transaction=True)
        for name, record in self._records.items():
            transaction.set(
                live_version_key(self._prefix, self._service, name), record, px=self._ttl_ms
            )
        default_key = default_model_key(self._prefix, self._service)
        if self._default_model is None:
            transaction.delete(default_key)
        else:
            transaction.set(default_key, self._default_model, px=self._ttl_ms)
        try:
            transaction.execute()
        except redis.RedisError as error:
            self._log_failure(error)
            return False
        if self._failing:
            self._failing = False
            logger.info(
                "publishing live model versions to Redis works again",
                extra={"redis_url": redacted_redis_url(self._url)},
            )
        return True

    def _log_failure(self, error: redis.RedisError) -> None:
        # Logged once per outage, because the heartbeat retries every few seconds.
        if self._failing:
            return
        self._failing = True
        logger.warning(
            "cannot publish live model versions to Redis, so the gateway stops using "
            "cached responses of this service once the published versions expire: %s",
            error,
            extra={"redis_url": redacted_redis_url(self._url)},
        )
