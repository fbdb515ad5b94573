"""OpenAI-shaped errors: ``{"error": {"message", "type", "param", "code"}}`` for every failure."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .protocol import ErrorDetail, ErrorResponse

log = logging.getLogger(__name__)


class APIError(Exception):
    """An error answered to the client as is."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers

    def body(self) -> dict[str, Any]:
        detail = ErrorDetail(message=self.message, type=self.type, param=self.param, code=self.code)
        return ErrorResponse(error=detail).model_dump()

    def sse(self) -> bytes:
        return f"data: {json.dumps(self.body())}\n\n".encode()


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def model_not_found(name: str) -> APIError:
    return APIError(
        404, f"The model '{name}' does not exist", param="model", code="model_not_found"
    )


# What each engine kind serves, in the words of a wrong-kind refusal.
_KIND_SERVES = {
    "llm": "a generative model: it serves /v1/chat/completions and /v1/completions",
    "embedding": "an embedding model: it serves /v1/embeddings",
    "rerank": "a reranker: it serves /v1/rerank",
    "vlm": "a vision-language model: it serves /v1/chat/completions and /v1/completions",
    "speech": "a text-to-speech model: it serves /v1/audio/speech",
    "whisper": "a speech recogniser: it serves /v1/audio/transcriptions and /translations",
}


def wrong_kind(name: str, kind: str, endpoint: str) -> APIError:
    return APIError(
        400,
        f"The model '{name}' is {_KIND_SERVES[kind]}, not {endpoint}",
        param="model",
        code="wrong_model_kind",
    )


def engine_error(message: str) -> APIError:
    return APIError(500, message, type="server_error", code="engine_error")


def unavailable(
    message: str, *, code: str = "model_unavailable", retry_after: int = 30
) -> APIError:
    return APIError(
        503, message, type="server_error", code=code, headers={"Retry-After": str(retry_after)}
    )


def shutting_down(model: str) -> APIError:
    """A request whose model was stopped under it (not at its own asking): the server stops."""
    return unavailable(
        f"Model '{model}' stopped while answering (the server is shutting down)",
        code="shutting_down",
        retry_after=5,
    )


def timed_out(seconds: float) -> APIError:
    return APIError(
        504,
        f"The request did not finish within this server's deadline of {seconds:g}s",
        type="server_error",
        code="request_timeout",
    )


def overloaded(model: str, retry_after: int = 1) -> APIError:
    return APIError(
        429,
        f"Too many requests queued for model '{model}'; retry shortly",
        type="rate_limit_error",
        code="queue_full",
        headers={"Retry-After": str(retry_after)},
    )


def _status_type(status: int) -> str:
    return {
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "invalid_request_error",
        429: "rate_limit_error",
    }.get(status, "invalid_request_error" if status < 500 else "server_error")


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None, str]:
    errors = exc.errors()
    if not errors:
        return "Invalid request", None, "invalid_request"
    first = errors[0]
    if first.get("type") == "json_invalid":
        return "Request body is not valid JSON", None, "invalid_json"
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(loc) or None
    where = f" at '{param}'" if param else ""
    return f"Invalid request{where}: {first.get('msg', 'invalid value')}", param, "invalid_value"


# Anthropic's Messages API answers its errors in its own shape, by status.
ANTHROPIC_PATHS = ("/v1/messages",)
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def anthropic_body(err: APIError) -> dict[str, Any]:
    fallback = "invalid_request_error" if err.status < 500 else "api_error"
    kind = _ANTHROPIC_TYPES.get(err.status, fallback)
    return {"type": "error", "error": {"type": kind, "message": err.message}}


def _answer(request: Request, err: APIError, headers: Any = None) -> JSONResponse:
    """The error in the shape of the API the client spoke."""
    anthropic = request.url.path.startswith(ANTHROPIC_PATHS)
    body = anthropic_body(err) if anthropic else err.body()
    return JSONResponse(body, status_code=err.status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, APIError)
        return _answer(request, exc, exc.headers)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        message, param, code = _validation_message(exc)
        return _answer(request, APIError(400, message, param=param, code=code))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        err = APIError(exc.status_code, str(exc.detail), type=_status_type(exc.status_code))
        return _answer(request, err, exc.headers)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The server logs the traceback itself; one line here ties it to the answer.
        log.error("unhandled error answered with 500: %r", exc)
        err = APIError(500, "Internal server error", type="server_error", code="internal_error")
        return _answer(request, err)

    app.add_exception_handler(APIError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
