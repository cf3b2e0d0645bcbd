"""When and how long the gateway waits before it repeats a failed backend call."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of one backend: `retries` extra attempts with jittered exponential backoff."""

    retries: int
    backoff_seconds: float
    max_delay_seconds: float

    def backoff(self, retry: int, rng: random.Random | None = None) -> float:
        """Return the wait in seconds before retry number `retry` (1 for the first retry).

        "Full jitter": a uniform draw between 0 and the exponential bound, so
        that gateway workers that failed together do not retry together.
        """
        bound = min(self.max_delay_seconds, self.backoff_seconds * 2 ** (retry - 1))
        return (rng or random).uniform(0, bound)

    def delay(self, retry: int, retry_after: float | None) -> float | None:
        """Return the wait before retry `retry`, or None when the call must not be retried.

        A backend's Retry-After is honoured as a lower bound. When it requests
        more than `max_delay_seconds`, the client is better served by getting
        the 503 and that Retry-After at once.
        """
        if retry > self.retries:
            return None
        wait = self.backoff(retry)
        if retry_after is None:
            return wait
        if retry_after > self.max_delay_seconds:
            return None
        return max(wait, retry_after)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Return the wait in seconds that a Retry-After header requests, or None if it is unusable.

    The header contains either delay-seconds or an HTTP date (RFC 9110, section 10.2.3).
    """
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, moment.timestamp() - current)
