"""Response cache in Redis for /v1/classify, /v1/detect and /v1/analyze.

A cached response is used only for the model version that is live now, and
a response is cached only under the version that computed it:

- Each model service publishes the live version of each of its models, and
  writes a new version before a reload swaps it in (`services.common.live_versions`).
- One Lua script resolves the model (the service's default when the request
  names none), reads its live version and reads the entry keyed by that
  version, in one round trip. No published version means no cache use.
- A response is stored only when every model version that its body reports
  equals the live version read before the call. A response computed by the
  old version while a reload was swapping in the new one is not stored.

So once a reload has returned, no request gets a result of the old version
from the cache. With several replicas of a model service, requests may get
either version until every replica serves the new one, as they would from
the replicas themselves.

The key holds the SHA-256 of the image bytes, the route, each model name and
version, and every request parameter that changes the result, in canonical
spelling with the model's defaults filled in, sorted by name.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, Request, Response
from fastapi.responses import JSONResponse

from services.common.redis_keys import default_model_key, live_version_key_prefix
from services.gateway.redis_state import RedisState, RedisUnavailable

logger = logging.getLogger(__name__)

CACHE_HEADER = "X-Cache"
CacheStatus = Literal["hit", "miss", "bypass"]

# ARGV: the cache key prefix, the route, the image digest, the route's own
# parameters and the number of models. Four values per model follow: its
# live-version key prefix, its service's default-model key, its name ("" for
# the default) and its parameters as a JSON object of canonical strings. A
# null parameter stands for the default published with the live version.
# Returns {} when the cache cannot be used, else {key, entry or "", then the
# name and version of each model}.
# NOTE: the script reads keys that it builds itself, which Redis Cluster does not allow.
LOOKUP_SCRIPT = """
local parts = {ARGV[2], ARGV[3], ARGV[4]}
local resolved = {}
for slot = 0, tonumber(ARGV[5]) - 1 do
  local base = 6 + slot * 4
  local model = ARGV[base + 2]
  if model == '' then
    model = redis.call('GET', ARGV[base + 1])
    if not model then return {} end
  end
  local record = redis.call('GET', ARGV[base] .. model)
  if not record then return {} end
  record = cjson.decode(record)
  local wanted = cjson.decode(ARGV[base + 3])
  local names = {}
  for name in pairs(wanted) do names[#names + 1] = name end
  table.sort(names)
  local fields = {}
  for _, name in ipairs(names) do
    local value = wanted[name]
    if value == cjson.null then value = record.defaults[name] end
    if type(value) ~= 'string' then return {} end
    fields[#fields + 1] = name .. '=' .. value
  end
  local version = string.format('%d', record.version)
  parts[#parts + 1] = model .. '/' .. version .. '/' .. table.concat(fields, '&')
  resolved[#resolved + 1] = model
  resolved[#resolved + 1] = version
end
local key = ARGV[1] .. table.concat(parts, ':')
local result = {key, redis.call('GET', key) or ''}
for _, value in ipairs(resolved) do result[#result + 1] = value end
return result
"""


@dataclass(frozen=True)
class ModelSlot:
    """One model whose result a cached response contains."""

    service: str
    # None selects the service's default model.
    model: str | None
    # Canonical values of the parameters that change this model's result. None
    # stands for the default that the service published.
    parameters: Mapping[str, str | None]
    # The top-level field of the response body that reports this model's name and version.
    body_field: str


@dataclass(frozen=True)
class CacheQuery:
    route: str
    image_sha256: str
    # Canonical values of the parameters that the gateway itself applies, all filled in.
    route_parameters: Mapping[str, str]
    models: tuple[ModelSlot, ...]


@dataclass(frozen=True)
class CacheLookup:
    status: CacheStatus
    key: str = ""
    entry: bytes | None = None
    query: CacheQuery | None = None
    # The (name, version) that each slot of the query resolved to.
    served: tuple[tuple[str, int], ...] = ()


BYPASS = CacheLookup("bypass")


class ResponseCache:
    """Looks up and stores JSON response bodies in Redis."""

    def __init__(self, state: RedisState) -> None:
        self._state = state
        self._ttl_seconds = state.settings.cache_ttl_seconds
        self._max_entry_bytes = state.settings.cache_max_entry_bytes

    @property
    def active(self) -> bool:
        """True when a lookup can be tried now. Callers skip building a query otherwise."""
        return self._ttl_seconds > 0 and self._state.is_up

    async def lookup(self, route: str, query: CacheQuery | None) -> CacheLookup:
        """Return the entry for `query`, or a miss, or BYPASS when the cache cannot be used."""
        lookup = await self._lookup(query) if query is not None and self.active else BYPASS
        self._state.metrics.count_cache(route, lookup.status)
        return lookup

    async def store(self, lookup: CacheLookup, body: Any, content: bytes) -> None:
        """Store `content`, the rendered `body`, when the models that computed it are still live."""
        if lookup.status != "miss" or lookup.query is None:
            return
        if len(content) > self._max_entry_bytes or not _computed_by(lookup, body):
            return
        try:
            await self._state.call(
                lambda client: client.set(lookup.key, content, ex=self._ttl_seconds)
            )
        except RedisUnavailable:
            return

    async def _lookup(self, query: CacheQuery) -> CacheLookup:
        prefix = self._state.key_prefix
        args: list[str | int | float] = [
            f"{prefix}:cache:",
            query.route,
            query.image_sha256,
            "&".join(f"{name}={value}" for name, value in sorted(query.route_parameters.items())),
            len(query.models),
        ]
        for slot in query.models:
            args += [
                live_version_key_prefix(prefix, slot.service),
                default_model_key(prefix, slot.service),
                slot.model or "",
                json.dumps(dict(slot.parameters)),
            ]
        try:
            result = await self._state.run_script(LOOKUP_SCRIPT, [], args)
        except RedisUnavailable:
            return BYPASS
        if not result:
            return BYPASS
        key, entry, *resolved = result
        served = tuple(
            (resolved[index].decode(), int(resolved[index + 1]))
            for index in range(0, len(resolved), 2)
        )
        status: CacheStatus = "hit" if entry else "miss"
        return CacheLookup(status, key.decode(), entry or None, query, served)


def _computed_by(lookup: CacheLookup, body: Any) -> bool:
    """Return True when every model that `body` reports is the live version `lookup` read.

    A body field that is null means that model was not used (as in /v1/analyze
    with no object to classify), so any live version of it fits.
    """
    if not isinstance(body, dict) or lookup.query is None:
        return False
    for slot, (name, version) in zip(lookup.query.models, lookup.served, strict=True):
        reported = body.get(slot.body_field)
        if reported is None:
            continue
        if not isinstance(reported, dict):
            return False
        if reported.get("name") != name or reported.get("version") != version:
            logger.info(
                "response not cached: computed by %s version %s while %s version %d was live",
                reported.get("name"),
                reported.get("version"),
                name,
                version,
            )
            return False
    return True


async def respond_with_cache(
    cache: ResponseCache,
    route: str,
    query: CacheQuery | None,
    compute: Callable[[], Awaitable[Any]],
) -> Response:
    """Return the cached response for `query`, or compute, store and return a new one.

    The `X-Cache` header says which: hit, miss, or bypass.
    """
    lookup = await cache.lookup(route, query)
    if lookup.entry is not None:
        return Response(lookup.entry, media_type="application/json", headers={CACHE_HEADER: "hit"})
    body = await compute()
    response = JSONResponse(body, headers={CACHE_HEADER: lookup.status})
    await cache.store(lookup, body, bytes(response.body))
    return response


async def get_response_cache(request: Request) -> ResponseCache:
    cache: ResponseCache = request.app.state.response_cache
    return cache


ResponseCacheDep = Annotated[ResponseCache, Depends(get_response_cache)]
