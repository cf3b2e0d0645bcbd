"""Exceptions that the command-line tools turn into an error message and an exit status."""

from __future__ import annotations


class TrainingError(Exception):
    """A failure the user can fix: invalid arguments, missing data or weights."""


class DataNotFoundError(TrainingError):
    """A data set or weights file is missing from the path the user gave."""


class ParityError(TrainingError):
    """ONNX Runtime and PyTorch disagree on the same inputs beyond the tolerance."""


class InvalidArgumentsError(TrainingError):
    """A command-line option has an invalid value or does not combine with another one."""
