"""Admin routes of the gateway. `services.gateway.auth` lets only the admin key reach them."""

from __future__ import annotations

import logging
import re
from enum import StrEnum
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import SecretStr

from services.common.errors import Forbidden, InvalidParameter
from services.gateway.api import BackendsDep, SettingsDep
from services.gateway.backend import Backend, Backends
from services.gateway.backend_errors import BackendRejected, BadGateway
from services.gateway.openapi import error_responses
from services.gateway.query_limits import check_model_name_length
from services.gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)

# Looser than the model repository's own rule, so that no name a backend serves
# is rejected here. The name becomes part of the backend path, so it may not be
# "." or "..", which would move the request to another backend route.
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

router = APIRouter(prefix="/v1/admin")


class ModelService(StrEnum):
    """The model services that the gateway can ask to reload a model."""

    CLASSIFIER = "classifier"
    DETECTOR = "detector"


@router.post(
    "/models/{service}/{name}/reload",
    responses=error_responses(401, 403, 404, 422, 502, 503, 504),
)
async def reload_model(
    service: ModelService, name: str, settings: SettingsDep, backends: BackendsDep
) -> JSONResponse:
    """Make a model service serve the newest (or pinned) version of a model. Needs the admin key.

    The gateway sends the reload with the service's admin token and returns
    the service's response: 200 with the previous and the new version, 404 for
    an unknown model, or 422 when the new version fails its checks.
    """
    check_model_name_length(name, settings, "the model name in the path")
    if not _MODEL_NAME.fullmatch(name):
        raise InvalidParameter(
            "the model name in the path is invalid; model names start with a letter or "
            "digit and contain only letters, digits, '.', '_' and '-'"
        )
    backend = _backend(backends, service)
    token = _admin_token(settings, service)
    body = await _forward_reload(backend, name, token)
    return JSONResponse(body)


def _backend(backends: Backends, service: ModelService) -> Backend:
    if service is ModelService.CLASSIFIER:
        return backends.classifier
    return backends.require_detector()


def _admin_token(settings: GatewaySettings, service: ModelService) -> SecretStr:
    token = (
        settings.classifier_admin_token
        if service is ModelService.CLASSIFIER
        else settings.detector_admin_token
    )
    if token is None:
        prefix = service.value.upper()
        raise Forbidden(
            f"the gateway has no admin token for the {service.value} service; set "
            f"VS_GATEWAY_{prefix}_ADMIN_TOKEN to the service's VS_{prefix}_ADMIN_TOKEN"
        )
    return token


async def _forward_reload(backend: Backend, name: str, token: SecretStr) -> Any:
    authorization = {"Authorization": f"Bearer {token.get_secret_value()}"}
    # NOTE: the backend latency metric labels calls by this path, so every model name
    # reloaded, known to the backend or not, adds a label value. Only the admin key gets here.
    try:
        response = await backend.post(
            f"/v1/models/{name}/reload", content=b"", content_type=None, extra_headers=authorization
        )
    except BackendRejected as error:
        if error.status_code not in (401, 403):
            raise
        # The admin key was right, so this is the gateway's configuration, not the client's.
        logger.error(
            "the %s service rejected the gateway's admin token with status %d: %s",
            backend.name,
            error.status_code,
            error.message,
            extra={"backend": backend.name, "backend_status": error.status_code},
        )
        raise BadGateway(
            f"the {backend.name} service rejected the gateway's admin token; see the gateway log"
        ) from error
    return response.body
