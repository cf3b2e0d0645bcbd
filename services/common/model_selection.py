"""Choice of the model that serves a request: the one it names, or the service's default."""

from __future__ import annotations

from services.common.errors import InvalidParameter
from services.common.repository import LoadedModel, ModelLoadError, ModelRepository

# The start of the 422 message for a request that names no model when several are served.
MODEL_REQUIRED = "query parameter 'model' is required"


def default_model_name(repository: ModelRepository, configured: str | None) -> str | None:
    """Return the configured default model, or the only model, or None when there are several.

    Raises ModelLoadError when the configured model is not served.
    """
    if configured is not None:
        if configured not in repository.names:
            raise ModelLoadError(
                f"default_model {configured!r} is not among the served models: "
                f"{', '.join(repository.names)}"
            )
        return configured
    names = repository.names
    return names[0] if len(names) == 1 else None


def select_model(
    repository: ModelRepository, model_name: str | None, default_model: str | None
) -> LoadedModel:
    """Return the requested model, or the default when the request names none.

    Raises ModelNotFound (404) for an unknown name and InvalidParameter (422)
    when the request names no model and there is no default.
    """
    if model_name is None:
        if default_model is None:
            raise InvalidParameter(
                f"{MODEL_REQUIRED} because several models are served: {', '.join(repository.names)}"
            )
        model_name = default_model
    return repository.get(model_name)
