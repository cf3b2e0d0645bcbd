"""Settings of the classifier service, read from `VS_CLASSIFIER_*` environment variables.

Dict and tuple values are JSON, for example
`VS_CLASSIFIER_PINNED_VERSIONS='{"resnet50": 2}'` and
`VS_CLASSIFIER_ALPHA_BACKGROUND='[0, 0, 0]'`.
"""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from services.common.settings import MEBIBYTE, ModelServiceSettings


class ClassifierSettings(ModelServiceSettings):
    """Options of the classifier service. Invalid values stop it at start-up."""

    model_config = SettingsConfigDict(env_prefix="VS_CLASSIFIER_", protected_namespaces=())

    default_top_k: int = Field(
        default=5, ge=1, description="Predictions returned when a request sets no top_k."
    )
    max_top_k: int = Field(default=20, ge=1, description="Largest top_k a request may ask for.")
    max_batch_images: int = Field(
        default=32,
        ge=1,
        description="Largest number of images in one /v1/classify/batch request.",
    )
    max_batch_body_bytes: int = Field(
        default=64 * MEBIBYTE,
        gt=0,
        description="Largest /v1/classify/batch request body in bytes, all images together.",
    )

    @model_validator(mode="after")
    def _default_top_k_within_max(self) -> ClassifierSettings:
        if self.default_top_k > self.max_top_k:
            raise ValueError(
                f"default_top_k ({self.default_top_k}) must not exceed max_top_k ({self.max_top_k})"
            )
        return self
