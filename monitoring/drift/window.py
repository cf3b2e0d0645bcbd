"""Reading the most recent window of a model's prediction log from Redis."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

import redis

from services.common.prediction_record import PredictionRecord, prediction_log_key

logger = logging.getLogger(__name__)


@dataclass
class StreamWindow:
    """The records of one model's stream within the window, and the entries skipped."""

    service: str
    model: str
    key: str
    records: list[PredictionRecord] = field(default_factory=list)
    malformed: int = 0

    def by_version(self) -> dict[int, list[PredictionRecord]]:
        versions: dict[int, list[PredictionRecord]] = defaultdict(list)
        for record in self.records:
            versions[record.version].append(record)
        return dict(sorted(versions.items()))


def find_models(client: redis.Redis, prefix: str, service: str) -> list[str]:
    """Return the names of the models that have a prediction log stream for `service`."""
    key_start = prediction_log_key(prefix, service, "")
    models = set()
    for key in client.scan_iter(match=key_start + "*", count=500, _type="stream"):
        text = key.decode() if isinstance(key, bytes) else str(key)
        models.add(text.removeprefix(key_start))
    return sorted(models)


def read_window(
    client: redis.Redis,
    prefix: str,
    service: str,
    model: str,
    *,
    max_records: int,
    max_age_seconds: float,
) -> StreamWindow:
    """Read the newest `max_records` entries not older than `max_age_seconds` (0: any age).

    The age bound uses the stream entry ids, which Redis derives from its own
    clock, so the monitor's clock does not matter. Entries that do not parse,
    or that name another service or model than their stream, are skipped and counted.
    """
    key = prediction_log_key(prefix, service, model)
    window = StreamWindow(service=service, model=model, key=key)
    oldest_id = "-"
    if max_age_seconds > 0:
        seconds, microseconds = client.time()
        now_ms = seconds * 1000 + microseconds // 1000
        oldest_id = str(max(now_ms - int(max_age_seconds * 1000), 0))

    first_error = ""
    entries = client.xrevrange(key, max="+", min=oldest_id, count=max_records) or []
    for _entry_id, fields in entries:
        try:
            record = PredictionRecord.from_fields(fields or {})
            if (record.service, record.model) != (service, model):
                raise ValueError(
                    f"record of {record.service}/{record.model} in the stream of {service}/{model}"
                )
        except ValueError as error:
            window.malformed += 1
            first_error = first_error or str(error)
            continue
        window.records.append(record)

    if window.malformed:
        logger.warning(
            "skipped malformed prediction records",
            extra={"key": key, "skipped": window.malformed, "first_error": first_error},
        )
    return window
