"""Error answers for pages and for unknown API paths: never a stack trace.

Django's ``handler404``/``handler500`` point here. A path under ``/api/`` gets the API's error
shape, everything else a page in the layout.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.deprecation import MiddlewareMixin

from moorage.errors import ApplicationError, RequestTooLarge

logger = logging.getLogger(__name__)

_TITLES = {
    400: "Bad request",
    403: "Not allowed",
    404: "Not found",
    413: "Too large",
    429: "Too many attempts",
    503: "Busy",
    500: "Something went wrong",
}


def error_response(
    request: HttpRequest,
    *,
    status: int,
    code: str,
    message: str,
    detail: dict[str, Any] | None = None,
) -> HttpResponse:
    """The error as JSON for API paths, as a page otherwise.

    A 429 whose ``detail`` says ``retry_after`` carries the ``Retry-After`` header, on pages
    as in the API.
    """
    response: HttpResponse
    if request.path.startswith("/api/"):
        response = JsonResponse(
            {"code": code, "message": message, "detail": detail or {}}, status=status
        )
    else:
        title = _TITLES.get(status, "Error")
        response = render(
            request,
            "web/error.html",
            {"status": status, "title": title, "message": message, "code": code},
            status=status,
        )
    if status == 429 and detail and "retry_after" in detail:
        response["Retry-After"] = str(detail["retry_after"])
    return response


def application_error_response(request: HttpRequest, error: ApplicationError) -> HttpResponse:
    """An :class:`ApplicationError` as JSON or page, with its detail (and Retry-After)."""
    return error_response(
        request, status=error.status, code=error.code, message=error.message, detail=error.detail
    )


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if isinstance(exception, RequestDataTooBig):
        # Django raises it while reading the form; it is the sender's size, not bad syntax.
        logger.warning("request body over the limit: %s %s", request.method, request.path)
        return application_error_response(request, RequestTooLarge.over_the_limit())
    return error_response(
        request, status=400, code="bad_request", message="The request could not be understood."
    )


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return error_response(
        request,
        status=403,
        code="permission_denied",
        message="You may not do this here. If you think you should, ask an account admin.",
    )


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return error_response(
        request, status=404, code="not_found", message="There is nothing at this address."
    )


def server_error(request: HttpRequest) -> HttpResponse:
    return error_response(
        request,
        status=500,
        code="internal_error",
        message="Moorage hit an unexpected error. The operators can find it in the server log.",
    )


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    return error_response(
        request,
        status=403,
        code="csrf_failed",
        message="The form expired or came from another site. Reload the page and try again.",
    )


class ApplicationErrorMiddleware(MiddlewareMixin):
    """Turns an :class:`ApplicationError` escaping a page view into an error page.

    Views show field errors on their forms; this catches what is left (a role that may not
    act, another account's object) so the person sees the message, never a traceback.
    (``MiddlewareMixin``: it also runs in an async middleware chain.)
    """

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, ApplicationError) and not request.path.startswith("/api/"):
            return application_error_response(request, exception)
        if isinstance(exception, OperationalError | InterfaceError):
            # Overloaded (no pool connection in time) or the database is away: not a bug.
            response = error_response(
                request, status=503, code="service_unavailable",
                message="Moorage is busy or cannot reach its database; try again in a moment.")
            response["Retry-After"] = "2"
            return response
        return None
