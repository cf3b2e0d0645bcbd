"""Settings shared by every service. Each service subclasses `ServiceSettings`
with its own env prefix (`VS_CLASSIFIER_`, `VS_GATEWAY_`, ...)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Common options. Invalid values stop the service at start-up."""

    model_config = SettingsConfigDict(env_prefix="VS_", extra="ignore", frozen=True)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    environment: Literal["development", "production"] = Field(
        default="production",
        description="production refuses settings that are only safe on a developer machine.",
    )
