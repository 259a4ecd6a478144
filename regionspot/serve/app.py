"""The HTTP API of ``regionspot serve`` (FastAPI): recognise regions, propose boxes, describe
the server, and serve the web page. See ``create_app``; the contract is in the README.

Routes: ``GET /healthz``, ``GET /v1/info``, ``POST /v1/recognize``, ``POST /v1/find``, ``POST /v1/propose``,
``GET /`` (the web page), ``/static/*`` (its assets), ``/docs`` and ``/openapi.json``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, FastAPI, File, Form, UploadFile
from fastapi.encoders import jsonable_encoder
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from regionspot import __version__
from regionspot.proposals.auto import Proposals
from regionspot.results import RegionResult
from regionspot.serve.config import ServeConfig, ServeLimits, check_serve_config
from regionspot.serve.errors import ApiError, ErrorBody, install_error_handlers
from regionspot.serve.forms import (
    check_positive_at_most,
    find_selection,
    parse_boxes_field,
    parse_points_field,
    parse_region_masks_field,
    parse_vocabulary_field,
)
from regionspot.serve.session import ImageInput, InferenceSession
from regionspot.serve.uploads import BodyLimitMiddleware, in_memory_form_route, read_upload, upload_key
from regionspot.vocab import BUILTIN_VOCABULARIES, builtin_vocabulary

if TYPE_CHECKING:
    from regionspot.model.loader import Model

__all__ = ["STATIC_DIR", "create_app", "proposals_document", "recognition_document"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
DEFAULT_TOPK = 5

_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "unknown or expired image_id"},
    413: {"model": ErrorBody, "description": "upload larger than max_upload_bytes"},
    422: {"model": ErrorBody, "description": "bad image, boxes, vocabulary, topk or missing fields"},
}

ImageField = Annotated[UploadFile | None, File(description="the image file (JPEG, PNG, ...); or send image_id")]
ImageIdField = Annotated[str | None, Form(description="image_id returned by an earlier response, instead of "
                                                      "uploading the image again")]
BoxesField = Annotated[str | None, Form(description="JSON [[x0, y0, x1, y1], ...]: boxes xyxy in pixels of the "
                                                   "image (or send points)")]
PointsField = Annotated[str | None, Form(description="instead of boxes, clicks xy in pixels: JSON [[x, y], ...] "
                                                     "(each click its own region) or [[[x, y], [x, y]], ...] (the "
                                                     "clicks of each region); each region is named from SAM's mask "
                                                     "for its clicks")]
RegionMasksField = Annotated[str | None, Form(description="instead of boxes or points, the regions as masks: a JSON "
                                                          "list of COCO RLE {\"size\": [H, W], \"counts\": \"...\"} "
                                                          "at the image's size (as the answers' mask)")]
PointLabelsField = Annotated[str | None, Form(description="with points: 1 (foreground) or 0 (background) per click, "
                                                          "nested as points (default: all 1)")]
VocabularyField = Annotated[str, Form(description="names as a JSON list, or separated by commas or newlines, "
                                                  "or a built-in vocabulary: lvis, coco, objects365")]
TopkField = Annotated[int | None, Form(description="(label, score) pairs per region (default 5, or the server's "
                                                    "max_topk when that is smaller)")]
MasksField = Annotated[bool, Form(description="return each region's mask as COCO RLE")]
AttentionField = Annotated[bool, Form(description="return each region's attention over the CLIP patch grid")]
MaxBoxesField = Annotated[int | None, Form(description="at most this many boxes (default: the server's setting)")]
QueriesField = Annotated[str, Form(description="names to find: a JSON list, or separated by commas or newlines")]
CandidateBoxesField = Annotated[str | None, Form(description="JSON [[x0, y0, x1, y1], ...]: candidate boxes xyxy in "
                                                             "pixels (default: SAM's automatic proposals)")]
ThresholdField = Annotated[str | None, Form(description="keep a region for a query scoring at least this, in [0, 1]: "
                                                        "one number, or one per query (a JSON list, or separated by "
                                                        "commas) in the order of queries (default: 0.3 for sigmoid "
                                                        "scores, 0.5 for softmax scores)")]
NmsIouField = Annotated[float, Form(description="drop a region overlapping a better one of the same query by more "
                                                "than this IoU, in [0, 1]")]
NmsField = Annotated[str, Form(description="'box': NMS by box IoU; 'mask': by the IoU of the regions' SAM masks")]
MaxPerQueryField = Annotated[int | None, Form(description="at most this many regions per query (default and most: "
                                                          "the server's max_boxes; at most max_boxes in all, best "
                                                          "first, and not_returned says how many more passed)")]


def create_app(model: Model, config: ServeConfig | None = None, *,
               static_dir: str | Path | None = None) -> FastAPI:
    """The API on ``model`` (a RegionSpot head or the zero-shot recognizer; loaded once, shared by
    all requests, inference serialised). ``/v1/info`` and the page say which method answers.

    ``config``: limits, embedding-cache size and proposal settings (default ``ServeConfig()``).
    ``static_dir``: folder of the web page (default: the package's ``serve/static``).
    """
    config = check_serve_config(config if config is not None else ServeConfig())
    session = InferenceSession(model, cache_size=config.cache_size, max_mask_pixels=config.limits.max_mask_pixels)
    session.warm_up(config.warmup_vocabularies)
    app = FastAPI(title="regionspot", version=__version__,
                  description="Name any region of an image against any vocabulary (RegionSpot).")
    app.state.session = session
    app.state.config = config
    install_error_handlers(app)
    limits = config.limits
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=limits.max_upload_bytes + limits.max_form_bytes)
    info = info_document(model, limits, config.cache_size)
    app.include_router(_api_router(session, config, info))
    _add_page_routes(app, Path(static_dir) if static_dir is not None else STATIC_DIR)
    return app


def info_document(model: Model, limits: ServeLimits, cache_size: int) -> dict[str, Any]:
    """The body of ``GET /v1/info``: what answers (``method``, ``trained``, ``model`` in words,
    ``score_kind``, ``runtime``: torch or onnx), backbones, built-in vocabularies, limits."""
    from regionspot.model.loader import describe_origin

    description = model.describe()
    return {
        "version": __version__,
        "method": description["method"],
        "trained": description["trained"],
        "model": describe_origin(model),
        "score_kind": description["score_kind"],
        "runtime": description.get("runtime", "torch"),
        "attention": model.has_attention,
        "backbones": jsonable_encoder(description["backbones"]),
        "vocabularies": scorable_vocabularies(model),
        "limits": dataclasses.asdict(limits),
        "cache_size": cache_size,
    }


def scorable_vocabularies(model: Model) -> dict[str, int]:
    """The built-in vocabularies (name -> size) the model can score: all of them for a CLIP text
    tower; for a head bound to a text bank, only those whose every name is in the bank."""
    index_of = getattr(model.text_embedder, "index_of", None)
    sizes = {}
    for name in BUILTIN_VOCABULARIES:
        names = builtin_vocabulary(name)
        if index_of is None or all(index_of(entry) is not None for entry in names):
            sizes[name] = len(names)
    return sizes


def recognition_document(result: RegionResult, image_id: str, with_masks: bool) -> dict[str, Any]:
    """``regionspot predict``'s JSON (``RegionResult.to_dict``) plus ``image_id``, and each
    region's ``attention`` ([g][g] floats) when the result carries it."""
    document = result.to_dict(include_masks=with_masks)
    attention = result.extras.get("attention")
    if attention is not None:
        for region, grid in zip(document["regions"], attention, strict=True):
            region["attention"] = grid.tolist()
    return {"image_id": image_id, **document}


def proposals_document(proposals: Proposals, image_id: str, size: tuple[int, int]) -> dict[str, Any]:
    """The body of ``POST /v1/propose``: boxes xyxy pixels (rounded to 0.01) and scores, best first."""
    return {
        "image_id": image_id,
        "image": {"height": int(size[0]), "width": int(size[1])},
        "boxes": [[round(float(v), 2) for v in box] for box in proposals.boxes],
        "scores": [float(s) for s in proposals.scores],
    }


def _image_input(upload: UploadFile | None, image_id: str | None, limits: ServeLimits,
                 session: InferenceSession) -> ImageInput:
    """The request's image: an upload (decoded now unless cached, so a bad file fails before any
    model work) or a reference to a cached one."""
    if upload is not None and not upload.filename and not upload.size:
        upload = None  # an empty file input of an HTML form
    image_id = (image_id or "").strip().lower() or None
    if upload is not None and image_id is not None:
        raise ApiError(422, "invalid_request", "send either an image file or an image_id, not both")
    if upload is not None:
        data = read_upload(upload, limits.max_upload_bytes)
        image = ImageInput(key=upload_key(data), data=data, max_side=limits.max_image_side)
        if not session.is_cached(image.key):
            image.pixels()
        return image
    if image_id is not None:
        return ImageInput(key=image_id)
    raise ApiError(422, "invalid_request", "send an image file (field 'image') or the image_id of an earlier upload")


def _api_router(session: InferenceSession, config: ServeConfig, info: dict[str, Any]) -> APIRouter:
    router = APIRouter(route_class=in_memory_form_route(config.limits.max_form_bytes))
    limits = config.limits

    @router.get("/healthz", summary="liveness check")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.head("/healthz", include_in_schema=False)  # load balancers probe with HEAD
    def healthz_head() -> Response:
        return Response(status_code=200)

    @router.get("/v1/info", summary="backbones, built-in vocabularies and limits")
    def server_info() -> dict[str, Any]:
        return info

    @router.post("/v1/recognize", summary="name the given boxes of an image", responses=_ERROR_RESPONSES)
    def recognize(vocabulary: VocabularyField, boxes: BoxesField = None, image: ImageField = None,
                  image_id: ImageIdField = None, topk: TopkField = None, masks: MasksField = True,
                  attention: AttentionField = False, points: PointsField = None,
                  point_labels: PointLabelsField = None, region_masks: RegionMasksField = None) -> JSONResponse:
        """The JSON of ``regionspot predict`` (image size, vocabulary, per region box, label,
        score, top-k, mask as COCO RLE, mask score) plus ``image_id`` for later requests and the
        ``method`` that named the regions. Regions are ``boxes``, ``points`` (clicks) or
        ``region_masks``."""
        if sum(field is not None for field in (boxes, points, region_masks)) != 1:
            raise ApiError(422, "bad_regions", "send the regions as boxes, as points or as region_masks (one of them)")
        box_array = parse_boxes_field(boxes, limits.max_boxes) if boxes is not None else None
        clicks, labels = parse_points_field(points, point_labels, limits.max_boxes) if points is not None \
            else (None, None)
        names = parse_vocabulary_field(vocabulary, limits.max_vocabulary)
        topk = min(DEFAULT_TOPK, limits.max_topk) if topk is None else \
            check_positive_at_most(topk, limits.max_topk, "topk")
        if attention and not info["attention"]:
            raise ApiError(422, "attention_unavailable",
                           f"this server's model ({info['method']}) has no cross-attention maps; send attention=false")
        source = _image_input(image, image_id, limits, session)
        given_masks = None if region_masks is None else parse_region_masks_field(
            region_masks, session.image_size(source), limits.max_boxes, limits.max_mask_pixels)
        result = session.recognize(source, box_array, names, topk, with_masks=masks, with_attention=attention,
                                   points=clicks, point_labels=labels, masks=given_masks)
        document = recognition_document(result, source.key, with_masks=masks)
        return JSONResponse({"method": info["method"], **document})

    @router.post("/v1/propose", summary="class-agnostic boxes from SAM's point grid", responses=_ERROR_RESPONSES)
    def propose(image: ImageField = None, image_id: ImageIdField = None,
                max_boxes: MaxBoxesField = None) -> JSONResponse:
        """Boxes (xyxy pixels) and scores (SAM's predicted IoU), best first."""
        if max_boxes is not None and max_boxes < 1:
            raise ApiError(422, "bad_max_boxes", f"max_boxes must be at least 1, got {max_boxes}")
        source = _image_input(image, image_id, limits, session)
        size, proposals = session.propose(source, config.proposals, max_boxes=max_boxes)
        return JSONResponse(proposals_document(proposals, source.key, size))

    _add_find_route(router, session, config, info)
    return router


def _add_find_route(router: APIRouter, session: InferenceSession, config: ServeConfig, info: dict[str, Any]) -> None:
    """``POST /v1/find`` on ``router``."""
    limits = config.limits

    @router.post("/v1/find", summary="every instance of each named thing", responses=_ERROR_RESPONSES)
    def find(queries: QueriesField, image: ImageField = None, image_id: ImageIdField = None,
             boxes: CandidateBoxesField = None, threshold: ThresholdField = None, nms_iou: NmsIouField = 0.5,
             nms: NmsField = "box", max_per_query: MaxPerQueryField = None, masks: MasksField = True) -> JSONResponse:
        """Class-agnostic regions (SAM's proposals, or ``boxes``) named against ``queries``, kept
        above ``threshold`` and de-duplicated per query: the JSON of ``/v1/recognize`` (each
        region's ``label`` is the query it was found for, ``topk`` that one pair)."""
        names = parse_vocabulary_field(queries, limits.max_vocabulary)
        box_array = parse_boxes_field(boxes, limits.max_boxes) if boxes is not None else None
        selection = find_selection(threshold, len(names), nms_iou, nms, max_per_query, limits.max_boxes)
        source = _image_input(image, image_id, limits, session)
        result = session.find(source, names, boxes=box_array, proposals=config.proposals, with_masks=masks,
                              max_regions=limits.max_boxes, **selection)
        document = recognition_document(result.found, source.key, with_masks=masks)
        return JSONResponse({"method": info["method"], **document, "not_returned": result.not_returned})


_NO_PAGE = ("<!doctype html><html><head><meta charset='utf-8'><title>regionspot</title></head><body>"
            "<p>The regionspot server is running, but its web page is not installed.</p>"
            "<p>API description: <a href='/docs'>/docs</a>.</p></body></html>")


def _add_page_routes(app: FastAPI, static_dir: Path) -> None:
    @app.get("/", include_in_schema=False)
    def index() -> Response:
        page = static_dir / "index.html"
        if page.is_file():
            return FileResponse(page)
        return HTMLResponse(_NO_PAGE)

    if static_dir.is_dir():
        app.mount("/static", StaticFiles(directory=static_dir), name="static")
