"""One entry of the prediction log: the Redis stream each model service appends to.

Stream key: `<prefix>:predictions:<service>:<model>`, one stream per model, so
the drift job reads a window of one model with a single XREVRANGE. Entry
fields are flat strings; `labels` and `scores` are JSON lists.

- classification: `labels` contains the top-1 label and `scores` its probability;
- detection: one label and score per detection, so `box_count` is their length.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from services.common.input_stats import INPUT_FEATURES, InputStats
from services.common.metadata import Task

# Scores are logged with this many decimals to keep entries short. The drift
# job rounds reference confidences the same way before comparing them.
SCORE_DECIMALS = 6
_PIXEL_FEATURES = tuple(name for name in INPUT_FEATURES if name not in ("width", "height"))


def prediction_log_key(prefix: str, service: str, model: str) -> str:
    return f"{prefix}:predictions:{service}:{model}"


@dataclass(frozen=True)
class PredictionRecord:
    """The input statistics and predictions of one image, without its pixels."""

    timestamp: float  # Unix seconds
    service: str
    model: str
    version: int
    task: Task
    request_id: str
    labels: tuple[str, ...]
    scores: tuple[float, ...]
    inputs: InputStats

    @property
    def box_count(self) -> int:
        return len(self.labels)

    def to_fields(self) -> dict[str, str]:
        fields = {
            "ts": repr(self.timestamp),
            "service": self.service,
            "model": self.model,
            "version": str(self.version),
            "task": self.task,
            "request_id": self.request_id,
            "labels": json.dumps(list(self.labels)),
            "scores": json.dumps([round(score, SCORE_DECIMALS) for score in self.scores]),
        }
        for name, value in asdict(self.inputs).items():
            fields[name] = repr(value)
        return fields

    @classmethod
    def from_fields(cls, fields: Mapping[str | bytes, str | bytes]) -> PredictionRecord:
        """Parse a stream entry; raise ValueError when a field is missing or malformed."""
        text = {_text(key): _text(value) for key, value in fields.items()}
        try:
            task = text["task"]
            if task not in ("classification", "detection"):
                raise ValueError(f"unknown task {task!r}")
            labels = tuple(str(label) for label in json.loads(text["labels"]))
            scores = tuple(float(score) for score in json.loads(text["scores"]))
            if len(labels) != len(scores):
                raise ValueError(f"{len(labels)} labels but {len(scores)} scores")
            inputs = InputStats(
                width=int(text["width"]),
                height=int(text["height"]),
                **{name: float(text[name]) for name in _PIXEL_FEATURES},
            )
            return cls(
                timestamp=float(text["ts"]),
                service=text["service"],
                model=text["model"],
                version=int(text["version"]),
                task=task,  # type: ignore[arg-type]  # checked above
                request_id=text["request_id"],
                labels=labels,
                scores=scores,
                inputs=inputs,
            )
        except KeyError as error:
            raise ValueError(f"prediction record has no field {error.args[0]!r}") from None
        except (TypeError, json.JSONDecodeError) as error:
            raise ValueError(f"malformed prediction record: {error}") from None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
