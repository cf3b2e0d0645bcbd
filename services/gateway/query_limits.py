"""Limits on the query string and on model names, checked by the gateway before a route runs.

The backends validate each parameter's meaning. These limits bound how much
client input the gateway parses and forwards. Every violation is an
InvalidParameter (422) that names the limit and the setting that sets it.
"""

from __future__ import annotations

from fastapi import Request

from services.common.errors import InvalidParameter
from services.gateway.access_settings import RequestLimitSettings

MODEL_NAME_PARAMETERS = frozenset({"model", "classifier_model"})
CLASSES_PARAMETER = "classes"
# Client-supplied parameter names are quoted back only up to this length.
_QUOTED_NAME_CHARS = 40


def setting_variable(settings: RequestLimitSettings, field: str) -> str:
    """Return the environment variable that sets `field`, such as VS_GATEWAY_MAX_CLASSES."""
    return f"{settings.model_config.get('env_prefix', '')}{field.upper()}"


def check_model_name_length(name: str, settings: RequestLimitSettings, source: str) -> None:
    """Raise InvalidParameter for a model name longer than `max_model_name_chars`.

    `source` names where the value came from, such as "query parameter 'model'".
    """
    limit = settings.max_model_name_chars
    if len(name) > limit:
        variable = setting_variable(settings, "max_model_name_chars")
        raise InvalidParameter(
            f"{source} is {len(name)} characters long, more than the limit of {limit} "
            f"({variable}); send the name of a served model, as listed by GET /v1/models"
        )


def check_query_string(request: Request, settings: RequestLimitSettings) -> None:
    """Raise InvalidParameter when the query string exceeds a limit of `settings`."""
    items = request.query_params.multi_items()
    if len(items) > settings.max_query_parameters:
        variable = setting_variable(settings, "max_query_parameters")
        raise InvalidParameter(
            f"the query string has {len(items)} parameters, more than the limit of "
            f"{settings.max_query_parameters} ({variable}); send fewer parameters"
        )

    class_ids = 0
    for name, value in items:
        _check_length(name, value, settings)
        if name in MODEL_NAME_PARAMETERS and value:
            check_model_name_length(value, settings, f"query parameter {name!r}")
        if name == CLASSES_PARAMETER:
            class_ids += value.count(",") + 1
    if class_ids > settings.max_classes:
        variable = setting_variable(settings, "max_classes")
        raise InvalidParameter(
            f"query parameter 'classes' lists {class_ids} class ids, more than the limit of "
            f"{settings.max_classes} ({variable}); send fewer ids, or none to keep every class"
        )


def _check_length(name: str, value: str, settings: RequestLimitSettings) -> None:
    limit = settings.max_query_value_chars
    variable = setting_variable(settings, "max_query_value_chars")
    if len(name) > limit:
        raise InvalidParameter(
            f"a query parameter name is {len(name)} characters long, more than the limit "
            f"of {limit} ({variable}); send only the parameters this route documents"
        )
    if len(value) > limit:
        raise InvalidParameter(
            f"query parameter {name[:_QUOTED_NAME_CHARS]!r} is {len(value)} characters long, "
            f"more than the limit of {limit} ({variable}); send a shorter value"
        )


async def limit_query_string(request: Request) -> None:
    """App-wide dependency: apply `check_query_string` with the gateway's settings."""
    settings: RequestLimitSettings = request.app.state.settings
    check_query_string(request, settings)
