"""Reading uploads safely: a request-body size limit enforced while reading, multipart forms
kept in memory (never spooled to a temporary file on disk), and images decoded from bytes with
their size checked on the file header first."""

from __future__ import annotations

import hashlib
import inspect
import io
import struct
import sys
from collections import Counter
from collections.abc import Callable, Coroutine
from contextlib import aclosing
from typing import Any

import numpy as np
from fastapi import Request, Response, UploadFile
from fastapi.routing import APIRoute
from PIL import Image, ImageOps, UnidentifiedImageError
from starlette.datastructures import FormData, Headers
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from regionspot.ops.image import ImageLoadError, load_image
from regionspot.serve.errors import ApiError, error_body

__all__ = ["BodyLimitMiddleware", "decode_image_bytes", "in_memory_form_route", "read_upload", "upload_key"]

# failures PIL may raise while decoding a corrupt or truncated file
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)


def too_large(message: str) -> ApiError:
    return ApiError(413, "upload_too_large", message)


class BodyLimitMiddleware:
    """ASGI middleware refusing request bodies over ``max_body_bytes`` with a JSON 413.

    A ``Content-Length`` over the limit is refused before anything is read; otherwise the bytes
    are counted as they arrive and reading stops (413) as soon as the count passes the limit,
    so a chunked upload without a length cannot grow memory either.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._refuse(send, f"request body of {int(declared)} bytes")
            return
        received = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise too_large(f"request body over {self.max_body_bytes} bytes (the image may be at most "
                                    "max_upload_bytes, the other fields max_form_bytes together)")
            return message

        async def watching_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except ApiError as exc:  # raised by counting_receive outside FastAPI's own handling
            if response_started or exc.status_code != 413:
                raise
            await self._send_json(send, 413, error_body(exc.error_type, exc.message))

    async def _refuse(self, send: Send, what: str) -> None:
        message = (f"{what} is over the limit of {self.max_body_bytes} bytes (the image may be at most "
                   "max_upload_bytes, the other fields max_form_bytes together)")
        await self._send_json(send, 413, error_body("upload_too_large", message))

    @staticmethod
    async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
        from fastapi.responses import JSONResponse

        response = JSONResponse(body, status_code=status, headers={"connection": "close"})
        await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})


class _InMemoryMultiPartParser(MultiPartParser):
    """Starlette's multipart parser whose uploaded files never roll over to a temporary file on
    disk (the request body is bounded by :class:`BodyLimitMiddleware`, so memory is bounded)."""

    spool_max_size = sys.maxsize


_FORM_PARSERS: dict[str, type[MultiPartParser] | type[FormParser]] = {
    "multipart/form-data": _InMemoryMultiPartParser,
    "application/x-www-form-urlencoded": FormParser,
}


class _InMemoryFormRequest(Request):
    """A request whose multipart form is parsed by :class:`_InMemoryMultiPartParser` (and a
    urlencoded one by Starlette's parser), each non-file field at most ``max_field_bytes`` where
    Starlette supports that limit; a malformed form is a 422 (a field over the size limit a 413)
    with the JSON error body."""

    def __init__(self, scope: Scope, receive: Receive, max_field_bytes: int) -> None:
        super().__init__(scope, receive)
        self.max_field_bytes = max_field_bytes

    async def _get_form(self, **limits: Any) -> FormData:
        media_type = self.headers.get("content-type", "").split(";")[0].strip().lower()
        parser_class = _FORM_PARSERS.get(media_type)
        if self._form is None and parser_class is not None:
            options = {**limits, "max_part_size": self.max_field_bytes}
            accepted = inspect.signature(parser_class.__init__).parameters
            try:
                async with aclosing(self.stream()) as stream:
                    parser = parser_class(self.headers, stream,
                                          **{k: v for k, v in options.items() if k in accepted})
                    self._form = await parser.parse()
                check_fields_sent_once(self._form)
            except MultiPartException as exc:
                if "maximum size" in exc.message:
                    raise too_large(f"a form field is too large: {exc.message}") from None
                raise ApiError(422, "bad_form", f"malformed form: {exc.message}") from None
        return await super()._get_form(**limits)


def check_fields_sent_once(form: FormData) -> None:
    """422 ``repeated_field`` when a field comes more than once (two images, two box lists):
    taking silently the last one would answer a question the client did not ask."""
    counts = Counter(key for key, _ in form.multi_items())
    repeated = sorted(key for key, count in counts.items() if count > 1)
    if repeated:
        raise ApiError(422, "repeated_field", f"field(s) {', '.join(repr(k[:40]) for k in repeated[:5])} sent more "
                                              "than once; send each field once")


def in_memory_form_route(max_field_bytes: int) -> type[APIRoute]:
    """A FastAPI route class whose forms are parsed in memory (see :class:`_InMemoryFormRequest`)."""

    class InMemoryFormRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def in_memory_handler(request: Request) -> Response:
                return await handler(_InMemoryFormRequest(request.scope, request.receive, max_field_bytes))

            return in_memory_handler

    return InMemoryFormRoute


def read_upload(upload: UploadFile, max_bytes: int) -> bytes:
    """All bytes of an uploaded file (already in memory); 413 over ``max_bytes``, 422 when empty."""
    data = upload.file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise too_large(f"the image file is over max_upload_bytes={max_bytes} bytes")
    if not data:
        raise ApiError(422, "bad_image", "the uploaded image file is empty")
    return data


def upload_key(data: bytes) -> str:
    """The image id of uploaded bytes: their sha256, 64 lowercase hex digits."""
    return hashlib.sha256(data).hexdigest()


def decode_image_bytes(data: bytes, max_side: int) -> np.ndarray:
    """Image file bytes -> HxWx3 uint8 RGB, EXIF orientation applied, first frame of an
    animation (the rules of :func:`regionspot.ops.image.load_image` for files).

    Raises ``ApiError`` 422 ``image_too_large`` when the longer side (read from the header,
    before decoding) exceeds ``max_side`` or the pixel count passes PIL's decompression-bomb
    limit, and :class:`ImageLoadError` for anything that is not a readable image.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            bomb_limit = Image.MAX_IMAGE_PIXELS
            if max(width, height) > max_side or (bomb_limit is not None and width * height > bomb_limit):
                raise ApiError(422, "image_too_large",
                               f"the image is {width}x{height} pixels; its longer side may be at most "
                               f"max_image_side={max_side}")
            img.load()
            return load_image(ImageOps.exif_transpose(img))
    except Image.DecompressionBombError as exc:
        raise ApiError(422, "image_too_large", f"the image is too large ({exc})") from None
    except UnidentifiedImageError:
        raise ImageLoadError("the upload is not an image file, or an image format PIL cannot read") from None
    except (ApiError, ImageLoadError):
        raise
    except _DECODE_ERRORS as exc:
        raise ImageLoadError(f"the image file is corrupt or truncated ({exc})") from None
