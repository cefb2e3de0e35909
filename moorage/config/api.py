"""The REST API root: one NinjaAPI, one error shape, every domain's router mounted here.

Every error leaves as ``{"code": str, "message": str, "detail": object}``; codes are stable.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError as DatabaseInterfaceError
from django.db import OperationalError as DatabaseOperationalError
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError

from moorage import __version__
from moorage.accounts.api import router as accounts_router
from moorage.accounts.auth import ApiTokenAuth
from moorage.apps.api import router as apps_router
from moorage.audit.api import router as audit_router
from moorage.credentials.api import router as credentials_router
from moorage.deployments.api import agent_router as deployments_agent_router
from moorage.deployments.api import router as deployments_router
from moorage.errors import ApplicationError, RequestTooLarge
from moorage.logs.api import agent_router as logs_agent_router
from moorage.logs.api import router as logs_router
from moorage.regions.api import agent_router
from moorage.regions.api import router as regions_router
from moorage.schemas import ERROR_STATUSES, ErrorOut

logger = logging.getLogger(__name__)
#: What a 503 tells the client to wait, in seconds (agents add their own jitter).
RETRY_AFTER_SECONDS = 2

_ERROR_REF = "#/components/schemas/Error"
_HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


class MoorageAPI(NinjaAPI):
    """The NinjaAPI whose OpenAPI document says what every operation may answer on error.

    django-ninja documents only the responses a route declares; every route here can also
    answer the error statuses of :data:`moorage.schemas.ERROR_STATUSES` in one shape, so
    they are added to every operation, pointing at one ``Error`` schema.
    """

    def get_openapi_schema(
        self, *, path_prefix: str | None = None, path_params: dict[str, Any] | None = None
    ) -> Any:
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Error"] = ErrorOut.model_json_schema(ref_template=_ERROR_REF)
        for operations in schema.get("paths", {}).values():
            for method, operation in operations.items():
                if method not in _HTTP_METHODS:
                    continue
                responses = operation.setdefault("responses", {})
                for status, description in ERROR_STATUSES.items():
                    if status in responses or str(status) in responses:
                        continue
                    responses[status] = {
                        "description": description,
                        "content": {"application/json": {"schema": {"$ref": _ERROR_REF}}},
                    }
        return schema


api = MoorageAPI(
    title="Moorage API",
    version=__version__,
    description=(
        "Authenticate with a personal API token: `Authorization: Bearer mrg_…`. "
        'Every error answers `{"code", "message", "detail"}`.'
    ),
    auth=ApiTokenAuth(),
    urls_namespace="api",
    docs_url="/docs",
    openapi_url="/openapi.json",
)
api.add_router("/", accounts_router)
api.add_router("/", audit_router)
api.add_router("/", credentials_router)
api.add_router("/", regions_router)
api.add_router("/", agent_router)
api.add_router("/", apps_router)
api.add_router("/", deployments_router)
api.add_router("/", deployments_agent_router)
api.add_router("/", logs_router)
api.add_router("/", logs_agent_router)


def _error(
    api: NinjaAPI, request: HttpRequest, status: int, code: str, message: str, detail: object
) -> HttpResponse:
    return api.create_response(
        request, {"code": code, "message": message, "detail": detail}, status=status
    )


@api.exception_handler(ApplicationError)
def _application_error(request: HttpRequest, exc: ApplicationError) -> HttpResponse:
    response = _error(api, request, exc.status, exc.code, exc.message, exc.detail)
    if exc.status == 429 and "retry_after" in exc.detail:
        response["Retry-After"] = str(exc.detail["retry_after"])
    return response


AGENT_PATH = "/api/v1/agent/"
NOT_AUTHENTICATED = ("Send an API token: 'Authorization: Bearer mrg_…'. Create one under "
                     "Account → API tokens or with 'moorage tokens create'.")
WWW_AUTHENTICATE = 'Bearer realm="moorage"'
AGENT_NOT_AUTHENTICATED = ("Send the region token: 'Authorization: Bearer mrr_…'. 'moorage "
                           "regions add' prints it, 'moorage regions rotate-token' replaces "
                           "it; the agent reads it from --token-file.")
AGENT_WWW_AUTHENTICATE = 'Bearer realm="moorage-agent"'


@api.exception_handler(AuthenticationError)
def _not_authenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    if request.path.startswith(AGENT_PATH):
        # Region agents authenticate with their region's token, not a person's API token.
        response = _error(api, request, 401, "not_authenticated", AGENT_NOT_AUTHENTICATED, {})
        response["WWW-Authenticate"] = AGENT_WWW_AUTHENTICATE
        return response
    response = _error(api, request, 401, "not_authenticated", NOT_AUTHENTICATED, {})
    response["WWW-Authenticate"] = WWW_AUTHENTICATE
    return response


def invalid_request(errors: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The 422 body for validation errors (pydantic's ``errors()`` shape)."""
    fields = {
        (".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "payload", "query"))
         or "body"): err.get("msg", "invalid")
        for err in errors
    }
    return {"code": "validation_error",
            "message": "The request is not valid: "
            + "; ".join(f"{k}: {v}" for k, v in fields.items()),
            "detail": {"fields": fields}}


@api.exception_handler(NinjaValidationError)
def _invalid(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    body = invalid_request(exc.errors)
    return _error(api, request, 422, body["code"], body["message"], body["detail"])


@api.exception_handler(RequestDataTooBig)
def _too_large(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    # A client's mistake (or abuse), not ours: one line in the log, no traceback.
    logger.warning("request body over the limit: %s %s", request.method, request.path)
    return _application_error(request, RequestTooLarge.over_the_limit())


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return _error(api, request, 404, "not_found", "Not found.", {})


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    code = {400: "bad_request", 405: "method_not_allowed", 413: "request_too_large"}.get(
        exc.status_code, "http_error"
    )
    return _error(api, request, exc.status_code, code, str(exc.message), {})


@api.exception_handler(DatabaseOperationalError)
@api.exception_handler(DatabaseInterfaceError)
def _overloaded(request: HttpRequest, exc: Exception) -> HttpResponse:
    # No connection within the pool's timeout, too many requests queued for one, or the
    # database refusing or dropping connections: the client should come back shortly, which
    # agents do with jittered backoff. Logged without the driver's message (it may name hosts).
    logger.warning("database unavailable for %s %s: %s", request.method, request.path,
                   type(exc.__cause__ or exc).__name__)
    body = overloaded()
    response = _error(api, request, 503, body["code"], body["message"], body["detail"])
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def overloaded() -> dict[str, Any]:
    """The 503 body when the database cannot serve now (with ``Retry-After``)."""
    return {"code": "service_unavailable",
            "message": "Moorage is overloaded or cannot reach its database right now; try "
                       f"again in {RETRY_AFTER_SECONDS} seconds.",
            "detail": {"retry_after": RETRY_AFTER_SECONDS}}


INTERNAL_ERROR = ("Moorage hit an unexpected error. The operators can find it in the server "
                  "log.")


@api.exception_handler(Exception)
def _unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
    # The traceback goes to the server log; the client gets no internals.
    logger.exception("unhandled error in %s %s", request.method, request.path)
    return _error(api, request, 500, "internal_error", INTERNAL_ERROR, {})
