"""Configuration of ``regionspot serve``: request limits, the embedding cache and auto proposals.

Plain nested dataclasses like :mod:`regionspot.config`; the command line overrides fields with
dotted keys (``limits.max_boxes=50 cache_size=16 proposals.points_per_side=8``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from regionspot.config import ConfigError
from regionspot.proposals.auto import AutoProposalConfig, check_auto_config

__all__ = ["ServeConfig", "ServeLimits", "check_serve_config"]


@dataclass
class ServeLimits:
    """What one request may ask for; going over a limit is answered 413 or 422, never a 500.

    ``max_upload_bytes``: size of the uploaded image file (413 above it).
    ``max_form_bytes``: allowance for the other form fields together (boxes, vocabulary, ...),
    and the most any one of them may hold (413 above it). A whole request body larger than
    ``max_upload_bytes + max_form_bytes`` is refused with 413 while it is read (or at once from
    its ``Content-Length``).
    ``max_image_side``: longer side in pixels of a decoded image (checked on the file header).
    ``max_boxes``: boxes per ``/v1/recognize`` request.
    ``max_vocabulary``: names a client may send in one vocabulary. The built-in vocabularies
    (``lvis`` 1203, ``coco`` 80, ``objects365`` 365) are the server's own and always allowed.
    ``max_topk``: largest ``topk``.
    ``max_mask_pixels``: regions x image pixels of the masks one request makes. Masks are made
    when a request asks for them, and always for a recognizer that crops regions by their masks
    (the zero-shot default); they take one byte per pixel, so this bounds a request's memory
    (400 M: 100 regions of a 2000x2000 image, 23 of a 4096x4096 one). 422 above it.
    """

    max_upload_bytes: int = 16 * 1024 * 1024
    max_form_bytes: int = 1024 * 1024
    max_image_side: int = 4096
    max_boxes: int = 100
    max_vocabulary: int = 1000
    max_topk: int = 50
    max_mask_pixels: int = 400_000_000


@dataclass
class ServeConfig:
    """Everything the server needs besides the model.

    ``cache_size``: encoded images kept (LRU, keyed by the sha256 of the uploaded bytes); one
    entry holds the SAM embedding (about 4 MiB for SAM's 1024 input), the CLIP memory and the
    decoded image. ``proposals``: how ``/v1/propose`` makes class-agnostic boxes.
    ``warmup_vocabularies``: vocabularies (built-in names such as ``lvis``, or files) whose text
    embeddings are computed before the server accepts requests. Text embeddings are made under
    the inference lock, so a large vocabulary's first use (LVIS with the 81-template ensemble:
    ~97k prompts) would otherwise hold every other request until it is done.
    """

    limits: ServeLimits = field(default_factory=ServeLimits)
    cache_size: int = 8
    proposals: AutoProposalConfig = field(default_factory=AutoProposalConfig)
    warmup_vocabularies: list[str] = field(default_factory=list)


def check_serve_config(config: ServeConfig) -> ServeConfig:
    """``config`` unchanged when every value is usable, else :class:`ConfigError` naming the field."""
    if not isinstance(config, ServeConfig):
        raise ConfigError(f"expected a ServeConfig, got {type(config).__name__}")
    for item in fields(config.limits):
        _check_positive_int(getattr(config.limits, item.name), f"limits.{item.name}")
    _check_positive_int(config.cache_size, "cache_size")
    check_auto_config(config.proposals)
    return config


def _check_positive_int(value: object, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"serve config: {where} must be a positive integer, got {value!r}")
