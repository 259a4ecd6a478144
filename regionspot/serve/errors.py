"""Every error the server answers has one JSON body: ``{"error": {"type", "message"}}``.

User mistakes get 404/413/422 with a sentence that says what is wrong; anything unexpected is
logged with its traceback on the server and answered with a bare 500 body (no details leak).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from regionspot.backbones.protocols import BackboneCapabilityError
from regionspot.ops.boxes import BoxError
from regionspot.ops.image import ImageLoadError
from regionspot.ops.prompts import PromptError
from regionspot.proposals.auto import ProposalBackboneError
from regionspot.vocab import VocabularyError

LOGGER = logging.getLogger("regionspot.serve")

# error type of a plain HTTPException (raised by the router or by Starlette) by its status
_TYPE_BY_STATUS = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "upload_too_large",
                   415: "unsupported_media_type", 422: "invalid_request"}

# our domain errors: status and error type
_DOMAIN_ERRORS: dict[type[Exception], tuple[int, str]] = {
    PromptError: (422, "bad_prompt"),
    BoxError: (422, "bad_boxes"),
    VocabularyError: (422, "bad_vocabulary"),
    ImageLoadError: (422, "bad_image"),
    ProposalBackboneError: (501, "proposals_unavailable"),
    BackboneCapabilityError: (501, "unsupported_by_model"),  # e.g. clicks on an ONNX export (after the above)
}


class ApiError(StarletteHTTPException):
    """An error answered as ``{"error": {"type": error_type, "message": message}}``.

    A Starlette ``HTTPException`` so that it also passes unchanged through FastAPI's body
    parsing (an error raised while the upload is read).
    """

    def __init__(self, status_code: int, error_type: str, message: str) -> None:
        super().__init__(status_code=status_code, detail=message)
        self.error_type = error_type
        self.message = message


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorBody(BaseModel):
    """The body of every error response (for the OpenAPI description)."""

    error: ErrorDetail


def error_body(error_type: str, message: str) -> dict[str, Any]:
    return {"error": {"type": error_type, "message": message}}


def error_response(status_code: int, error_type: str, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(error_type, message), status_code=status_code, headers=headers)


def describe_validation_error(exc: RequestValidationError) -> str:
    """FastAPI's validation errors as one sentence: ``field 'boxes': Field required; ...``."""
    parts = []
    for item in exc.errors():
        location = [str(part) for part in item.get("loc", ()) if part not in ("body", "query", "path")]
        where = f"field {'.'.join(location)!r}: " if location else ""
        parts.append(f"{where}{item.get('msg', 'invalid value')}")
    return "; ".join(parts) or "invalid request"


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "invalid_request", describe_validation_error(exc))


async def _http_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc, ApiError):
        return error_response(exc.status_code, exc.error_type, exc.message)
    error_type = _TYPE_BY_STATUS.get(exc.status_code, "http_error")
    return error_response(exc.status_code, error_type, str(exc.detail), headers=getattr(exc, "headers", None))


async def _domain_handler(request: Request, exc: Exception) -> JSONResponse:
    for error_class, (status, error_type) in _DOMAIN_ERRORS.items():
        if isinstance(exc, error_class):
            return error_response(status, error_type, str(exc))
    return await _unexpected_handler(request, exc)


async def _unexpected_handler(request: Request, exc: Exception) -> JSONResponse:
    LOGGER.error("unexpected error in %s %s", request.method, request.url.path, exc_info=exc)
    # the connection may be in any state after an unexpected error: tell the client not to reuse it
    return error_response(500, "internal_error", "internal server error (details are in the server log)",
                          headers={"Connection": "close"})


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error the JSON body of :func:`error_body`."""
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    for error_class in _DOMAIN_ERRORS:
        app.add_exception_handler(error_class, _domain_handler)
    app.add_exception_handler(Exception, _unexpected_handler)
