"""Settings of the classifier service, read from `VS_CLASSIFIER_*` environment variables.

Dict and tuple values are JSON, for example
`VS_CLASSIFIER_PINNED_VERSIONS='{"resnet50": 2}'` and
`VS_CLASSIFIER_ALPHA_BACKGROUND='[0, 0, 0]'`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings

MEBIBYTE = 1024 * 1024
ColorChannel = Annotated[int, Field(ge=0, le=255)]


class ClassifierSettings(ServiceSettings):
    """Options of the classifier service. Invalid values stop it at start-up."""

    model_config = SettingsConfigDict(env_prefix="VS_CLASSIFIER_", protected_namespaces=())

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
    default_top_k: int = Field(
        default=5, ge=1, description="Predictions returned when a request sets no top_k."
    )
    max_top_k: int = Field(default=20, ge=1, description="Largest top_k a request may ask for.")
    alpha_background: tuple[ColorChannel, ColorChannel, ColorChannel] = Field(
        default=(255, 255, 255),
        description="RGB colour that transparent pixels are composited over, as JSON.",
    )
    intra_op_threads: int = Field(
        default=0,
        ge=0,
        description="onnxruntime threads per inference; 0 uses every CPU the process may run on.",
    )
    inter_op_threads: int = Field(
        default=0,
        ge=0,
        description="onnxruntime threads across graph branches; 0 uses every available CPU.",
    )
    worker_threads: int = Field(
        default=0,
        ge=0,
        description=(
            "Requests decoded and run at the same time; others wait. 0 uses one per available CPU."
        ),
    )

    @field_validator("default_model", mode="after")
    @classmethod
    def _empty_default_model_is_unset(cls, value: str | None) -> str | None:
        return value or None

    @model_validator(mode="after")
    def _default_top_k_within_max(self) -> ClassifierSettings:
        if self.default_top_k > self.max_top_k:
            raise ValueError(
                f"default_top_k ({self.default_top_k}) must not exceed max_top_k ({self.max_top_k})"
            )
        return self
