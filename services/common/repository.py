"""The model repository: ONNX models on disk, loaded into onnxruntime sessions.

Layout: `<root>/<name>/<version>/{model.onnx, model.json}`, where `version`
is a positive integer folder name (`1`, `2`, ..., no leading zeros). Each
model is served at its newest version unless a version is pinned. Every
problem found while loading raises `ModelLoadError` naming the folder, so a
bad repository stops the service before it reports ready.

`reload` brings in a new version while the service runs: it is loaded,
checked and warmed up first, then swapped in with one assignment, so a
request that already has the old `LoadedModel` finishes on it, and a
version that fails any check never serves.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from services.common.cpus import usable_cpus
from services.common.errors import ModelNotFound
from services.common.metadata import METADATA_FILENAME, MODEL_FILENAME, ModelMetadata, Task
from services.common.model_checks import check_output_shape, check_preprocess, check_signature
from services.common.session_config import SessionConfig, create_session
from services.common.version_folders import (
    ModelLoadError,
    folder_signature,
    read_checked_metadata,
    scan_versions,
)

logger = logging.getLogger(__name__)

_MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class ReloadOutcome:
    """Result of a reload. `changed` is false when the version that should serve already did."""

    name: str
    previous_version: int | None
    version: int
    changed: bool


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

    @property
    def fixed_batch_size(self) -> int | None:
        """The batch size the graph requires, or None when its batch axis is dynamic."""
        size = self.session.get_inputs()[0].shape[0]
        return size if isinstance(size, int) else None

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


class ModelRepository:
    """The models of one task that a service serves, one live version per model name."""

    def __init__(
        self,
        root: Path,
        *,
        task: Task,
        pinned_versions: Mapping[str, int] | None = None,
        session_config: SessionConfig | None = None,
        before_swap: Callable[[LoadedModel], None] | None = None,
    ) -> None:
        """`before_swap`, when given, is called with each new version that a reload
        is about to serve, once every check has passed, in the reloading thread."""
        self.root = root
        self.task = task
        self.pinned_versions = dict(pinned_versions or {})
        self._session_config = session_config or SessionConfig(
            available_threads(), available_threads()
        )
        self._before_swap = before_swap
        self._models: dict[str, LoadedModel] = {}
        self._reload_lock = threading.Lock()
        # Versions that failed to load, with their files' modification times,
        # so that polling retries a version only once its files change.
        self._rejected: dict[tuple[str, int], tuple[int, ...]] = {}

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
        raise ModelNotFound(
            f"model {_quoted(name)}not found; available models: {', '.join(self.names) or '(none)'}"
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
            metadata = read_checked_metadata(self.root / name / str(version), name, version)
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

    def reload(self, name: str) -> ReloadOutcome:
        """Serve the version of `name` that should be live now: the pinned one or the newest.

        Blocks while the new version loads and warms up, so run it in a worker
        thread. Raises ModelNotFound when `name` has no version folders, and
        ModelLoadError when the version cannot be served. In both cases the
        version that was live keeps serving.
        """
        with self._reload_lock:
            available = (
                scan_versions(self.root, warn=False).get(name) if _MODEL_NAME.match(name) else None
            )
            if not available:
                raise ModelNotFound(
                    f"model {_quoted(name)}has no version folders in the model repository"
                )
            version = self.pinned_versions.get(name, available[-1])
            current = self._models.get(name)
            if current is not None and current.version == version:
                # The live version stays; only the list of versions on disk may have changed.
                refreshed = dataclasses.replace(current, available_versions=tuple(available))
                self._models = {**self._models, name: refreshed}
                return ReloadOutcome(name, current.version, version, changed=False)
            version_dir = self.root / name / str(version)
            try:
                metadata = read_checked_metadata(version_dir, name, version)
                if metadata.task != self.task:
                    raise ModelLoadError(
                        f"{version_dir} contains a {metadata.task} model, "
                        f"and this service serves {self.task} models"
                    )
                model = self._load_version(metadata, tuple(available))
            except ModelLoadError:
                self._rejected[(name, version)] = folder_signature(version_dir)
                raise
            if self._before_swap is not None:
                self._before_swap(model)
            self._models = {**self._models, name: model}
            self._rejected.pop((name, version), None)
            return ReloadOutcome(name, current.version if current else None, version, changed=True)

    def pending_reloads(self) -> list[str]:
        """Return the names whose version on disk should replace the live one.

        A version that failed to load is left out until its files change, and
        models of another task are left out, so polling neither repeats a
        failure nor logs one for the other service's models.
        """
        pending = []
        for name, available in scan_versions(self.root, warn=False).items():
            version = self.pinned_versions.get(name, available[-1])
            current = self._models.get(name)
            if current is not None and current.version == version:
                continue
            version_dir = self.root / name / str(version)
            if self._rejected.get((name, version)) == folder_signature(version_dir):
                continue
            if current is None and _task_of(version_dir) not in (self.task, None):
                continue
            pending.append(name)
        return pending

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


def _quoted(name: str) -> str:
    """Quote `name` for a message only when it is a valid model name.

    Arbitrary client input never reaches a response this way.
    """
    return f"{name!r} " if _MODEL_NAME.match(name) else ""


def _task_of(version_dir: Path) -> Task | None:
    """Return the task that a version's model.json declares, or None when it cannot be read."""
    try:
        return read_checked_metadata(
            version_dir, version_dir.parent.name, int(version_dir.name)
        ).task
    except ModelLoadError:
        return None
