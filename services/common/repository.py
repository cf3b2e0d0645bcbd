"""The model repository: ONNX models on disk, loaded into onnxruntime sessions.

Layout: `<root>/<name>/<version>/{model.onnx, model.json}`, where `version`
is a positive integer folder name (`1`, `2`, ..., no leading zeros). Each
model is served at its newest version unless a version is pinned. Every
problem found while loading raises `ModelLoadError` naming the folder, so a
bad repository stops the service before it reports ready.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from pydantic import ValidationError

from services.common.cpus import usable_cpus
from services.common.errors import ModelNotFound
from services.common.metadata import (
    METADATA_FILENAME,
    MODEL_FILENAME,
    ModelMetadata,
    Task,
    read_metadata,
)
from services.common.model_checks import check_output_shape, check_preprocess, check_signature
from services.common.session_config import SessionConfig, create_session

logger = logging.getLogger(__name__)

_MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class ModelLoadError(Exception):
    """A model in the repository cannot be served. Raised while the service starts."""


@dataclass(frozen=True)
class LoadedModel:
    """One model version with its metadata and its onnxruntime session."""

    metadata: ModelMetadata
    session: ort.InferenceSession
    version_dir: Path
    available_versions: tuple[int, ...]

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def version(self) -> int:
        return self.metadata.version

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one input image: (channels, height, width)."""
        spec = self.metadata.preprocess
        return spec.channels, spec.height, spec.width

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run the session on a float32 (N, C, H, W) batch and return the first output."""
        output_name = self.metadata.output_names[0]
        (output,) = self.session.run([output_name], {self.metadata.input_name: batch})
        return np.asarray(output)


def available_threads() -> int:
    """Return the CPUs this process may use: the smaller of its affinity mask and cgroup quota."""
    return usable_cpus()


def session_options(intra_op_threads: int = 0, inter_op_threads: int = 0) -> ort.SessionOptions:
    """Build onnxruntime session options. A thread count of 0 means `available_threads()`."""
    config = SessionConfig(
        intra_op_threads or available_threads(), inter_op_threads or available_threads()
    )
    return config.options()


def scan_versions(root: Path) -> dict[str, list[int]]:
    """Return the version numbers found under each model folder of `root`, ascending.

    Hidden entries are skipped. Folders whose names are not positive integers
    are skipped with a warning, and so are model folders without any version.
    """
    if not root.is_dir():
        raise ModelLoadError(f"model repository {root} is not a directory")
    versions: dict[str, list[int]] = {}
    for model_dir in sorted(root.iterdir()):
        if model_dir.name.startswith(".") or not model_dir.is_dir():
            continue
        found = sorted(_version_numbers(model_dir))
        if not found:
            logger.warning("skipping %s: it has no version folders named 1, 2, ...", model_dir)
            continue
        versions[model_dir.name] = found
    return versions


def _version_numbers(model_dir: Path) -> list[int]:
    numbers = []
    for entry in model_dir.iterdir():
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        if entry.name.isdigit() and not entry.name.startswith("0"):
            numbers.append(int(entry.name))
        else:
            logger.warning("skipping %s: version folders must be positive integers", entry)
    return numbers


class ModelRepository:
    """The models of one task that a service serves, one live version per model name."""

    def __init__(
        self,
        root: Path,
        *,
        task: Task,
        pinned_versions: Mapping[str, int] | None = None,
        session_config: SessionConfig | None = None,
    ) -> None:
        self.root = root
        self.task = task
        self.pinned_versions = dict(pinned_versions or {})
        self._session_config = session_config or SessionConfig(
            available_threads(), available_threads()
        )
        self._models: dict[str, LoadedModel] = {}

    @property
    def names(self) -> list[str]:
        return sorted(self._models)

    def models(self) -> list[LoadedModel]:
        return [self._models[name] for name in self.names]

    def get(self, name: str) -> LoadedModel:
        """Return the live version of `name`; raise ModelNotFound listing the served names."""
        model = self._models.get(name)
        if model is not None:
            return model
        # The requested name is quoted only when it is a valid model name, so
        # that arbitrary client input never reaches the response.
        quoted_name = f"{name!r} " if _MODEL_NAME.match(name) else ""
        raise ModelNotFound(
            f"model {quoted_name}not found; available models: {', '.join(self.names) or '(none)'}"
        )

    def load(self) -> None:
        """Load and validate the live version of every model of this task, then warm each up.

        On failure the served models stay as they were and ModelLoadError propagates.
        """
        versions = scan_versions(self.root)
        self._check_pins(versions)
        loaded: dict[str, LoadedModel] = {}
        for name, available in versions.items():
            version = self.pinned_versions.get(name, available[-1])
            metadata = _read_checked_metadata(self.root / name / str(version), name, version)
            if metadata.task != self.task:
                if name in self.pinned_versions:
                    raise ModelLoadError(
                        f"{name} version {version} is pinned but is a {metadata.task} model, "
                        f"and this service serves {self.task} models"
                    )
                logger.info("skipping %s: it is a %s model", name, metadata.task)
                continue
            loaded[name] = self._load_version(metadata, tuple(available))

        if not loaded:
            raise ModelLoadError(
                f"no {self.task} models found in {self.root}; "
                f"expected <name>/<version>/{MODEL_FILENAME} with {METADATA_FILENAME} beside it"
            )
        self._models = loaded

    def _check_pins(self, versions: Mapping[str, list[int]]) -> None:
        for name, version in self.pinned_versions.items():
            if name not in versions:
                raise ModelLoadError(
                    f"pinned model {name!r} not found in {self.root}; "
                    f"available models: {', '.join(versions) or '(none)'}"
                )
            if version not in versions[name]:
                raise ModelLoadError(
                    f"pinned version {version} of {name} not found; "
                    f"available versions: {', '.join(map(str, versions[name]))}"
                )

    def _load_version(self, metadata: ModelMetadata, available: tuple[int, ...]) -> LoadedModel:
        version_dir = self.root / metadata.name / str(metadata.version)
        model_path = version_dir / MODEL_FILENAME
        if not model_path.is_file():
            raise ModelLoadError(f"{model_path} is missing")
        try:
            session = create_session(model_path, self._session_config)
        except Exception as exc:
            # onnxruntime raises its own exception types (Fail, InvalidGraph,
            # InvalidProtobuf, ...) that share no public base class.
            raise ModelLoadError(f"onnxruntime cannot load {model_path}: {exc}") from exc

        problem = check_preprocess(metadata) or check_signature(session, metadata)
        if problem:
            raise ModelLoadError(f"{model_path}: {problem}")
        model = LoadedModel(metadata, session, version_dir, available)
        _warm_up(model)
        logger.info(
            "loaded model",
            extra={"model": metadata.name, "version": metadata.version, "path": str(model_path)},
        )
        return model


def _read_checked_metadata(version_dir: Path, name: str, version: int) -> ModelMetadata:
    try:
        metadata = read_metadata(version_dir)
    except FileNotFoundError as exc:
        raise ModelLoadError(f"{version_dir / METADATA_FILENAME} is missing") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, error['loc'])) or 'document'}: {error['msg']}"
            for error in exc.errors()
        )
        raise ModelLoadError(f"{version_dir / METADATA_FILENAME} is invalid: {problems}") from exc
    except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError
        raise ModelLoadError(f"{version_dir / METADATA_FILENAME} is invalid: {exc}") from exc

    if metadata.name != name:
        raise ModelLoadError(
            f"{version_dir / METADATA_FILENAME} names the model {metadata.name!r}, "
            f"but its folder is {name!r}; rename one so that they match"
        )
    if metadata.version != version:
        raise ModelLoadError(
            f"{version_dir / METADATA_FILENAME} declares version {metadata.version}, "
            f"but its folder is {version}; rename one so that they match"
        )
    return metadata


def _warm_up(model: LoadedModel) -> None:
    """Run one batch of zeros, so that the first request does not pay for lazy initialisation.

    Also checks the output shape, which the graph may leave symbolic.
    """
    zeros = np.zeros((1, *model.input_shape), dtype=np.float32)
    try:
        output = model.run(zeros)
    except Exception as exc:
        raise ModelLoadError(f"warm-up run of {model.version_dir} failed: {exc}") from exc
    problem = check_output_shape(output.shape, model.metadata)
    if problem:
        raise ModelLoadError(f"{model.version_dir / MODEL_FILENAME}: {problem}")
