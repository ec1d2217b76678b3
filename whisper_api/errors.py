"""ApiError and the one place that renders Azure's {"error": {...}} envelope."""

from __future__ import annotations

import logging

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

# Azure's own wording, so clients that match on messages keep working.
ACCESS_DENIED_MESSAGE = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key "
    "for an active subscription and use a correct regional API endpoint for your resource."
)
DEPLOYMENT_NOT_FOUND_MESSAGE = (
    "The API deployment for this resource does not exist. If you created the deployment within the last "
    "5 minutes, please wait a moment and try again."
)


class ApiError(Exception):
    """An error a client caused or must be told about, rendered as Azure's envelope."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        param: str | None = None,
        type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.type = type
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "param": self.param, "type": self.type}}


def invalid_field(param: str, message: str) -> ApiError:
    return ApiError(400, "invalid_value", message, param=param)


def unauthorized() -> ApiError:
    return ApiError(401, "401", ACCESS_DENIED_MESSAGE, type="invalid_request_error")


def deployment_not_found() -> ApiError:
    return ApiError(404, "DeploymentNotFound", DEPLOYMENT_NOT_FOUND_MESSAGE)


def too_many_requests(deployment: str, retry_after_seconds: int) -> ApiError:
    return ApiError(
        429,
        "429",
        f"Requests to the {deployment} deployment have exceeded the number this server queues. "
        f"Please retry after {retry_after_seconds} seconds.",
        type="rate_limit_exceeded",
        headers={"Retry-After": str(retry_after_seconds)},
    )


def service_unavailable(message: str, retry_after_seconds: int) -> ApiError:
    """The server is stopping: SDKs retry a 503 after Retry-After (on another instance, or this one
    restarted)."""
    return ApiError(503, "ServiceUnavailable", message, type="server_error",
                    headers={"Retry-After": str(retry_after_seconds)})


def client_closed_request(message: str) -> ApiError:
    """nginx's 499: logged and counted, never read (the client is gone)."""
    return ApiError(499, "client_closed_request", message)


def upload_too_large(limit_bytes: int | None, received_bytes: int | None) -> ApiError:
    """The hosted service's wording; the body is refused from its Content-Length, never read whole."""
    limit = f" ({limit_bytes})" if limit_bytes else ""
    received = f" ({received_bytes} bytes read)" if received_bytes else ""
    return ApiError(413, "content_too_large", f"Maximum content size limit{limit} exceeded{received}.", param="file")


def render(error: ApiError) -> Response:
    response = jsonify(error.body())
    response.status_code = error.status
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


def _from_http_exception(error: HTTPException) -> ApiError:
    status = error.code or 500
    if status == 404:
        return ApiError(404, "404", "Resource not found")
    if status == 405:
        return ApiError(405, "405", "The requested method is not allowed for this resource.")
    if status == 413:
        return upload_too_large(current_app.config.get("MAX_CONTENT_LENGTH"), request.content_length)
    return ApiError(status, str(status), error.description or error.name)


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def handle_api_error(error: ApiError) -> Response:
        return render(error)

    @app.errorhandler(HTTPException)
    def handle_http_exception(error: HTTPException) -> Response:
        if isinstance(error.__cause__, ApiError):
            return render(error.__cause__)
        return render(_from_http_exception(error))

    @app.errorhandler(Exception)
    def handle_unexpected(error: Exception) -> Response:
        log.exception("unexpected failure while handling a request")
        return render(
            ApiError(500, "internal_error", "The server had an error while processing your request.", type="server_error")
        )
