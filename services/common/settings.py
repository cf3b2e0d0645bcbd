"""Settings shared by every service. Each service subclasses `ServiceSettings`
with its own env prefix (`VS_CLASSIFIER_`, `VS_GATEWAY_`, ...)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from services.common.redis_keys import DEFAULT_KEY_PREFIX, check_key_prefix, check_redis_url

MEBIBYTE = 1024 * 1024
MIN_ADMIN_TOKEN_LENGTH = 16
CPU_PROVIDER = "CPUExecutionProvider"
ColorChannel = Annotated[int, Field(ge=0, le=255)]
GraphOptimizationLevel = Literal["disabled", "basic", "extended", "all"]
ExecutionMode = Literal["sequential", "parallel"]


class ServiceSettings(BaseSettings):
    """Common options. Invalid values stop the service at start-up."""

    model_config = SettingsConfigDict(env_prefix="VS_", extra="ignore", frozen=True)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    environment: Literal["development", "production"] = Field(
        default="production",
        description="production refuses settings that are only safe on a developer machine.",
    )
    workers: int = Field(
        default=1,
        ge=1,
        description=(
            "Worker processes serving this service. `python -m services.serve` sets it from "
            "--workers; model services divide the usable CPUs among them for thread defaults."
        ),
    )


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


class InvalidSettingsError(ValueError):
    """Raised at start-up when an environment variable contains an invalid value."""


def load_settings(settings_class: type[SettingsT]) -> SettingsT:
    """Read `settings_class` from the environment, naming each invalid variable.

    pydantic's own message names the field (`max_top_k`); operators set the
    variable (`VS_CLASSIFIER_MAX_TOP_K`), so the error names both.
    """
    try:
        return settings_class()
    except ValidationError as error:
        prefix = str(settings_class.model_config.get("env_prefix", ""))
        problems = []
        for item in error.errors():
            field = str(item["loc"][0]) if item["loc"] else "settings"
            problems.append(f"{prefix}{field.upper()} ({field}): {item['msg']}")
        raise InvalidSettingsError("invalid settings: " + "; ".join(problems)) from None


class BatchingOverride(BaseModel):
    """Batching options of one model; unset fields take the service-wide value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool | None = None
    max_batch_size: Annotated[int, Field(ge=1, le=1024)] | None = None
    max_queue_delay_ms: Annotated[float, Field(ge=0, le=1000)] | None = None
    max_queue_size: Annotated[int, Field(ge=1)] | None = None


class ModelServiceSettings(ServiceSettings):
    """Options of every service that serves ONNX models from a model repository."""

    model_repository: Path = Field(
        default=Path("models"),
        description="Folder laid out as <name>/<version>/{model.onnx, model.json}.",
    )
    default_model: str | None = Field(
        default=None,
        description=(
            "Model used when a request names none. Unset: the only model when the "
            "repository holds exactly one, otherwise requests must name a model."
        ),
    )
    pinned_versions: dict[str, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict,
        description="Model name to the version to serve instead of the newest, as JSON.",
    )
    max_body_bytes: int = Field(
        default=20 * MEBIBYTE, gt=0, description="Largest request body in bytes."
    )
    max_pixels: int = Field(
        default=50_000_000,
        gt=0,
        description="Largest image in pixels (width x height), checked from the header.",
    )
    alpha_background: tuple[ColorChannel, ColorChannel, ColorChannel] = Field(
        default=(255, 255, 255),
        description="RGB colour that transparent pixels are composited over, as JSON.",
    )
    intra_op_threads: int = Field(
        default=0,
        ge=0,
        description=(
            "onnxruntime threads per inference. 0 uses this worker's share of the usable CPUs: "
            "the smaller of the affinity mask and the cgroup CPU quota, divided by workers."
        ),
    )
    inter_op_threads: int = Field(
        default=0,
        ge=0,
        description=(
            "onnxruntime threads across graph branches, used only in parallel execution mode. "
            "0 uses this worker's share of the usable CPUs."
        ),
    )
    worker_threads: int = Field(
        default=0,
        ge=0,
        description=(
            "Requests decoded and run at the same time; others wait. 0 uses this worker's "
            "share of the usable CPUs."
        ),
    )
    graph_optimization_level: GraphOptimizationLevel = Field(
        default="all", description="onnxruntime graph optimizations applied when a model loads."
    )
    execution_mode: ExecutionMode = Field(
        default="sequential",
        description="parallel runs independent graph branches at once on inter_op_threads.",
    )
    execution_providers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [CPU_PROVIDER],
        description=(
            "onnxruntime execution providers in order of preference, as a JSON list. "
            "CPUExecutionProvider is always added last; providers missing from this "
            "onnxruntime build are skipped with a warning."
        ),
    )

    batching_enabled: bool = Field(
        default=True,
        description="Run requests to the same model that arrive close together as one batch.",
    )
    max_batch_size: int = Field(
        default=8, ge=1, le=1024, description="Maximum images in one batched inference run."
    )
    max_queue_delay_ms: float = Field(
        default=2.0,
        ge=0,
        le=1000,
        description="Maximum wait, in milliseconds, for more requests to fill a batch.",
    )
    max_queue_size: int = Field(
        default=64,
        ge=1,
        description="Requests that may wait for a batch per model; more get 503.",
    )
    model_batching: dict[str, BatchingOverride] = Field(
        default_factory=dict,
        description=(
            "Per-model batching options as JSON, e.g. "
            '{"digits-cnn": {"enabled": false}, "resnet50": {"max_batch_size": 16}}.'
        ),
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description="Bearer token for POST /v1/models/{name}/reload. Unset: reload is disabled.",
    )
    reload_poll_seconds: float = Field(
        default=0,
        ge=0,
        description="Seconds between scans for new version folders; 0 turns polling off.",
    )

    redis_url: str = Field(
        default="",
        description=(
            "Redis where the service publishes the live version of each model, so that the "
            "gateway caches its responses and never returns a result of another version. "
            "The service also appends its prediction log there. Empty turns both off, and "
            "with them the gateway's cache for this service."
        ),
    )
    redis_key_prefix: str = Field(
        default=DEFAULT_KEY_PREFIX,
        description=(
            "Prefix of the published keys and prediction log streams; the same as the "
            "gateway's redis_key_prefix."
        ),
    )
    redis_timeout_seconds: float = Field(
        default=0.5, gt=0, description="Maximum time in seconds to connect to Redis or write."
    )
    live_version_ttl_seconds: float = Field(
        default=10.0,
        ge=1,
        description=(
            "Seconds a published live version lasts. The service rewrites it three times "
            "within that time, so the versions of a stopped service expire within it."
        ),
    )

    prediction_log_enabled: bool | None = Field(
        default=None,
        description=(
            "Append a record of each predicted image (labels, scores, input statistics) to a "
            "Redis stream per model, for the drift job. Unset: on when redis_url is set."
        ),
    )
    prediction_log_max_length: int = Field(
        default=100_000,
        ge=1,
        description=(
            "Approximate maximum entries per model stream (XADD MAXLEN ~). Redis trims "
            "whole nodes, so a stream may hold somewhat more."
        ),
    )
    prediction_log_queue_size: int = Field(
        default=10_000,
        ge=1,
        description=(
            "Records that may wait in memory for the background writer; more are dropped "
            "and counted, so a slow Redis never delays a request."
        ),
    )
    prediction_log_flush_seconds: float = Field(
        default=2.0,
        ge=0,
        description="Maximum time in seconds to write the queued records at shutdown.",
    )

    @property
    def prediction_log_active(self) -> bool:
        """Whether the prediction log is written: the explicit setting, else redis_url is set."""
        if self.prediction_log_enabled is None:
            return bool(self.redis_url)
        return self.prediction_log_enabled

    @model_validator(mode="after")
    def _prediction_log_needs_redis(self) -> ModelServiceSettings:
        if self.prediction_log_enabled and not self.redis_url:
            raise ValueError(
                "prediction_log_enabled is true but redis_url is empty. Set redis_url "
                "or leave prediction_log_enabled unset"
            )
        return self

    @field_validator("default_model", mode="after")
    @classmethod
    def _empty_default_model_is_unset(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("redis_url", mode="after")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        return check_redis_url(value)

    @field_validator("redis_key_prefix", mode="after")
    @classmethod
    def _redis_key_prefix(cls, value: str) -> str:
        return check_key_prefix(value)

    @field_validator("admin_token", mode="after")
    @classmethod
    def _admin_token_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if len(value.get_secret_value()) < MIN_ADMIN_TOKEN_LENGTH:
            raise ValueError(
                f"must be at least {MIN_ADMIN_TOKEN_LENGTH} characters; "
                "generate one with: python -c 'import secrets; print(secrets.token_urlsafe())'"
            )
        return value

    @field_validator("execution_providers", mode="before")
    @classmethod
    def _providers_from_json(cls, value: Any) -> Any:
        # NoDecode leaves environment values as text, so that a parse error
        # becomes a validation error naming the variable, like any other.
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(
                'must be a JSON list of provider names, for example ["CUDAExecutionProvider"]'
            ) from None

    @field_validator("execution_providers", mode="after")
    @classmethod
    def _known_providers(cls, value: list[str]) -> list[str]:
        # Imported here so that the gateway, which shares this module, loads no onnxruntime.
        import onnxruntime

        known = onnxruntime.get_all_providers()
        unknown = [name for name in value if name not in known]
        if unknown:
            raise ValueError(
                f"unknown execution provider {', '.join(unknown)}; "
                f"onnxruntime knows {', '.join(known)}"
            )
        if len(set(value)) != len(value):
            raise ValueError("lists a provider more than once; list each provider once")
        if CPU_PROVIDER in value[:-1]:
            raise ValueError(
                f"{CPU_PROVIDER} must be last, because onnxruntime assigns every node "
                "to the first provider that supports it and the CPU supports all of them"
            )
        return value
