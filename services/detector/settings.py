"""Settings of the detector service, read from `VS_DETECTOR_*` environment variables.

Dict and tuple values are JSON, for example
`VS_DETECTOR_PINNED_VERSIONS='{"digits-yolo": 2}'`.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import ModelServiceSettings


class DetectorSettings(ModelServiceSettings):
    """Options of the detector service. Invalid values stop it at start-up."""

    model_config = SettingsConfigDict(env_prefix="VS_DETECTOR_", protected_namespaces=())

    max_det_limit: int = Field(
        default=1000,
        ge=1,
        description=(
            "Largest max_det a request may ask for. A model's own max_det default "
            "from model.json is capped at this value."
        ),
    )
    render_jpeg_quality: int = Field(
        default=90, ge=1, le=95, description="JPEG quality of /v1/detect/render images."
    )
