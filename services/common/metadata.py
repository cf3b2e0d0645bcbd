"""Schema of `model.json`, the metadata stored beside each `model.onnx`.

A model version is the folder `<repository>/<name>/<version>/`. The exporter in
`training/` writes this file and the services read it, so the two sides agree
on labels and preprocessing by construction rather than by convention.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

METADATA_FILENAME = "model.json"
MODEL_FILENAME = "model.onnx"

Task = Literal["classification", "detection"]
ResizePolicy = Literal["stretch", "shorter_side_center_crop", "letterbox"]
Interpolation = Literal["nearest", "bilinear", "bicubic", "lanczos"]
ColorMode = Literal["RGB", "BGR", "L"]


class PreprocessSpec(BaseModel):
    """Steps that turn a decoded RGB image into the model's input tensor."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    height: int = Field(gt=0, description="Input height in pixels.")
    width: int = Field(gt=0, description="Input width in pixels.")
    color_mode: ColorMode = Field(
        description="Channel order of the input tensor; L is one luminance channel."
    )
    resize: ResizePolicy = Field(
        description=(
            "stretch: resize to height x width ignoring aspect ratio. "
            "shorter_side_center_crop: scale the shorter side to size / crop_fraction, "
            "then take the central height x width. "
            "letterbox: scale to fit, keep aspect ratio, pad with pad_value."
        )
    )
    crop_fraction: float = Field(
        default=1.0, gt=0.0, le=1.0, description="Used by shorter_side_center_crop only."
    )
    interpolation: Interpolation = "bilinear"
    mean: tuple[float, ...] = Field(
        description="Per-channel mean, on pixel values scaled to [0, 1]."
    )
    std: tuple[float, ...] = Field(description="Per-channel std, on pixel values scaled to [0, 1].")
    pad_value: int = Field(default=114, ge=0, le=255, description="Letterbox padding, 0-255.")
    stride: int = Field(default=32, gt=0, description="Letterbox stride (detection only).")

    @property
    def channels(self) -> int:
        return 1 if self.color_mode == "L" else 3

    @model_validator(mode="after")
    def _check_channel_stats(self) -> PreprocessSpec:
        for field_name in ("mean", "std"):
            values = getattr(self, field_name)
            if len(values) != self.channels:
                raise ValueError(
                    f"{field_name} has {len(values)} values but color_mode {self.color_mode} "
                    f"has {self.channels} channel(s)"
                )
        if any(value <= 0 for value in self.std):
            raise ValueError("std values must be positive")
        return self


class DetectionSpec(BaseModel):
    """Post-processing defaults of a detection model, used when a request sets none."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    conf_threshold: float = Field(
        default=0.25, ge=0.0, le=1.0, description="Minimum class score a detection needs."
    )
    iou_threshold: float = Field(
        default=0.45, ge=0.0, le=1.0, description="NMS suppresses boxes with a greater IoU."
    )
    max_det: int = Field(default=300, ge=1, description="Maximum detections per image.")


class ModelMetadata(BaseModel):
    """Contents of `model.json`. Unknown keys are kept so newer exporters stay readable."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", max_length=64)
    version: int = Field(ge=1)
    task: Task
    labels: list[str] = Field(min_length=1)
    preprocess: PreprocessSpec
    input_name: str = "input"
    output_names: list[str] = Field(default_factory=lambda: ["logits"])
    metrics: dict[str, Any] = Field(default_factory=dict)
    detection: DetectionSpec | None = Field(
        default=None,
        description="Detection models only; a detection model without it uses the defaults.",
    )
    training_data_fingerprint: str | None = None
    exported_at: str | None = None
    exporter: dict[str, str] = Field(default_factory=dict)

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, labels: list[str]) -> list[str]:
        if len(set(labels)) != len(labels):
            raise ValueError("labels must be unique")
        return labels

    @property
    def num_classes(self) -> int:
        return len(self.labels)


def read_metadata(version_dir: Path) -> ModelMetadata:
    """Load and validate `model.json` from a model version folder.

    Raises FileNotFoundError when the file is missing and pydantic's
    ValidationError (a ValueError) when it does not match the schema.
    """
    path = version_dir / METADATA_FILENAME
    return ModelMetadata.model_validate(json.loads(path.read_text(encoding="utf-8")))


def write_metadata(version_dir: Path, metadata: ModelMetadata) -> Path:
    path = version_dir / METADATA_FILENAME
    path.write_text(metadata.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path
