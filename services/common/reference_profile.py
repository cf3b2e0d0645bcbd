"""Schema of `reference.json`, the input and output statistics a model showed at export.

The exporters in `training/` write it beside `model.onnx` from the validation
images, and the drift job (`python -m monitoring.drift`) compares the
prediction log of the live service with it. It keeps samples, not
histograms, because the two-sample KS test needs the values and PSI bins are
derived from the reference quantiles at comparison time.

Features, each a list of sample values:

- the input features of `services.common.input_stats.INPUT_FEATURES`, one
  value per image;
- `confidence`: for classification the top-1 probability of each image, for
  detection the score of each detection;
- `box_count` (detection only): detections per image.

`label_frequencies` is the share of each predicted label: the top-1 label per
image for classification, the label of each detection for detection.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.common.input_stats import INPUT_FEATURES
from services.common.metadata import Task

REFERENCE_FILENAME = "reference.json"
REFERENCE_FORMAT = 1
OUTPUT_FEATURES: dict[Task, tuple[str, ...]] = {
    "classification": ("confidence",),
    "detection": ("confidence", "box_count"),
}
# Enough to estimate deciles for PSI; more only makes the file larger.
MAX_REFERENCE_SAMPLES = 5000


class ReferenceProfile(BaseModel):
    """Samples of each feature and the predicted-label shares of one model version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: int = Field(default=REFERENCE_FORMAT, description="Schema version of this file.")
    model: str
    version: int = Field(ge=1)
    task: Task
    source: str = Field(description="Where the samples come from, e.g. the validation split.")
    image_count: int = Field(ge=1)
    features: dict[str, list[float]]
    label_frequencies: dict[str, float]

    @model_validator(mode="after")
    def _check_features(self) -> ReferenceProfile:
        if self.format != REFERENCE_FORMAT:
            raise ValueError(f"format {self.format} is not supported; expected {REFERENCE_FORMAT}")
        expected = set(INPUT_FEATURES) | set(OUTPUT_FEATURES[self.task])
        missing = sorted(expected - set(self.features))
        unknown = sorted(set(self.features) - expected)
        if missing or unknown:
            raise ValueError(f"features missing: {missing}, unknown: {unknown}")
        for name in INPUT_FEATURES:
            if len(self.features[name]) != self.image_count:
                raise ValueError(
                    f"feature {name} has {len(self.features[name])} values "
                    f"for {self.image_count} images"
                )
        total = sum(self.label_frequencies.values())
        if self.label_frequencies and abs(total - 1.0) > 1e-6:
            raise ValueError(f"label_frequencies sum to {total}, expected 1")
        return self


def write_reference(profile: ReferenceProfile, version_dir: Path) -> Path:
    path = version_dir / REFERENCE_FILENAME
    path.write_text(profile.model_dump_json(indent=1) + "\n", encoding="utf-8")
    return path


def read_reference(version_dir: Path) -> ReferenceProfile:
    """Read `reference.json` of a model version; raise FileNotFoundError or ValueError."""
    path = version_dir / REFERENCE_FILENAME
    return ReferenceProfile.model_validate_json(path.read_text(encoding="utf-8"))
