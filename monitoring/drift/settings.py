"""Settings of the drift job, read from `VS_MONITOR_*` environment variables.

List and dict values are JSON, for example `VS_MONITOR_SERVICES='["classifier"]'`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from services.common.input_stats import INPUT_FEATURES
from services.common.redis_keys import DEFAULT_KEY_PREFIX, check_key_prefix, check_redis_url

WatchedService = Literal["classifier", "detector"]
WATCHED_SERVICES: tuple[WatchedService, ...] = ("classifier", "detector")
# `predicted_class` is compared with JS divergence only, and the other features with PSI and KS.
DRIFT_FEATURES = (*INPUT_FEATURES, "confidence", "box_count", "predicted_class")
_PROMETHEUS_DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


class MonitorSettings(BaseSettings):
    """Options of `python -m monitoring.drift`. Invalid values stop the job at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="VS_MONITOR_", extra="ignore", frozen=True, protected_namespaces=()
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="Redis that the model services write the prediction log to.",
    )
    redis_key_prefix: str = Field(
        default=DEFAULT_KEY_PREFIX,
        description="Key prefix of the prediction log; the same as the services' redis_key_prefix.",
    )
    redis_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Maximum time in seconds to connect to Redis or read."
    )
    model_repository: Path = Field(
        default=Path("models"),
        description="Folder laid out as <name>/<version>/, where each reference.json is read.",
    )
    services: Annotated[list[WatchedService], NoDecode] = Field(
        default_factory=lambda: list(WATCHED_SERVICES),
        min_length=1,
        description="Services whose prediction logs are checked, as a JSON list.",
    )
    window_max_records: int = Field(
        default=5000,
        ge=1,
        description="Maximum number of the most recent records read per model.",
    )
    window_max_age_seconds: float = Field(
        default=3600.0,
        ge=0,
        description="Maximum age in seconds of the records read; 0 reads regardless of age.",
    )
    min_samples: int = Field(
        default=200,
        ge=1,
        description=(
            "Minimum number of live records and of reference images of a model version, "
            "and of values of a feature on either side, below which the job reports "
            "not enough data instead of a score."
        ),
    )
    psi_bins: int = Field(
        default=10,
        ge=2,
        le=100,
        description="Number of quantile bins of the reference for the PSI.",
    )
    psi_threshold: float = Field(default=0.2, gt=0, description="PSI above which a feature drifts.")
    ks_threshold: float = Field(
        default=0.2,
        gt=0,
        le=1,
        description="Two-sample KS statistic above which a feature drifts.",
    )
    js_threshold: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description=(
            "Jensen-Shannon divergence (base 2) of the predicted labels above which they drift."
        ),
    )
    drift_features: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DRIFT_FEATURES),
        min_length=1,
        description=(
            "Features whose scores set the drift flag, as a JSON list. The others are "
            "still scored and reported."
        ),
    )
    pushgateway_url: str = Field(
        default="",
        description="Base URL of the Prometheus Pushgateway; empty turns pushing off.",
    )
    pushgateway_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Maximum time in seconds for one push."
    )
    prometheus_url: str = Field(
        default="",
        description=(
            "Base URL of the Prometheus server read for the bottleneck section of the report; "
            "empty skips that section."
        ),
    )
    prometheus_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Maximum time in seconds for one Prometheus query."
    )
    bottleneck_window: str = Field(
        default="15m",
        description="Prometheus range over which stage latencies are averaged, e.g. 15m or 1h.",
    )
    report_dir: Path = Field(
        default=Path("reports/drift"),
        description="Folder where drift-report.json and drift-report.html are written.",
    )
    interval_seconds: float = Field(
        default=300.0, gt=0, description="Seconds between runs in --loop mode."
    )

    @field_validator("redis_url", mode="after")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if not value:
            raise ValueError("must be set: the drift job reads the prediction log from Redis")
        return check_redis_url(value)

    @field_validator("redis_key_prefix", mode="after")
    @classmethod
    def _redis_key_prefix(cls, value: str) -> str:
        return check_key_prefix(value)

    @field_validator("services", "drift_features", mode="before")
    @classmethod
    def _list_from_json(cls, value: Any) -> Any:
        # NoDecode leaves environment values as text, so that a parse error
        # becomes a validation error naming the variable, like any other.
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f'must be a JSON list such as ["classifier"], got {value!r}') from None

    @field_validator("services", mode="after")
    @classmethod
    def _services_unique(cls, value: list[WatchedService]) -> list[WatchedService]:
        if len(set(value)) != len(value):
            raise ValueError("lists a service more than once; list each service once")
        return value

    @field_validator("drift_features", mode="after")
    @classmethod
    def _known_features(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(DRIFT_FEATURES))
        if unknown:
            raise ValueError(
                f"unknown feature {', '.join(unknown)}; known: {', '.join(DRIFT_FEATURES)}"
            )
        return value

    @field_validator("pushgateway_url", "prometheus_url", mode="after")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"expected an http(s) URL such as http://127.0.0.1:9091, got {value!r}"
            )
        return value.rstrip("/")

    @field_validator("bottleneck_window", mode="after")
    @classmethod
    def _prometheus_duration(cls, value: str) -> str:
        if not _PROMETHEUS_DURATION.match(value):
            raise ValueError(f"expected a Prometheus duration such as 5m or 1h, got {value!r}")
        return value

    def threshold(self, statistic: str) -> float:
        thresholds = {"psi": self.psi_threshold, "ks": self.ks_threshold, "js": self.js_threshold}
        return thresholds[statistic]
