"""Version folders of a model repository: which exist, and whether their model.json is sound."""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import ValidationError

from services.common.metadata import METADATA_FILENAME, MODEL_FILENAME, ModelMetadata, read_metadata

logger = logging.getLogger(__name__)


class ModelLoadError(Exception):
    """A model version in the repository cannot be served: at start-up, or on a reload."""


def scan_versions(root: Path, *, warn: bool = True) -> dict[str, list[int]]:
    """Return the version numbers found under each model folder of `root`, ascending.

    Hidden entries are skipped, so a version can be written into a hidden
    folder and renamed into place when complete. Folders whose names are not
    positive integers are skipped with a warning (unless `warn` is false, as
    for the repeated scans of reload polling), and so are model folders
    without any version.
    """
    if not root.is_dir():
        raise ModelLoadError(f"model repository {root} is not a directory")
    versions: dict[str, list[int]] = {}
    for model_dir in sorted(root.iterdir()):
        if model_dir.name.startswith(".") or not model_dir.is_dir():
            continue
        found = sorted(_version_numbers(model_dir, warn))
        if not found:
            if warn:
                logger.warning("skipping %s: it has no version folders named 1, 2, ...", model_dir)
            continue
        versions[model_dir.name] = found
    return versions


def _version_numbers(model_dir: Path, warn: bool) -> list[int]:
    numbers = []
    for entry in model_dir.iterdir():
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        if entry.name.isdigit() and not entry.name.startswith("0"):
            numbers.append(int(entry.name))
        elif warn:
            logger.warning("skipping %s: version folders must be positive integers", entry)
    return numbers


def read_checked_metadata(version_dir: Path, name: str, version: int) -> ModelMetadata:
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


def folder_signature(version_dir: Path) -> tuple[int, ...]:
    """Return the modification times of a version's files, to tell a rewritten folder apart."""
    signature = []
    for filename in (MODEL_FILENAME, METADATA_FILENAME):
        path = version_dir / filename
        signature.append(path.stat().st_mtime_ns if path.exists() else 0)
    return tuple(signature)
