"""The training-free recognizer: SAM masks, CLIP zero-shot on each region's crop.

These are the paper's two CLIP baselines (Table 1, ground-truth boxes on LVIS): "CLIP crop of
the box" (48.7 AP) and "CLIP crop of the SAM mask" (49.2 AP). Each region is cut out of the image
(``clip-mask-crop``: pixels outside its SAM mask set to CLIP's pixel mean first), padded to a
square with that mean (so the whole region is seen at its own aspect ratio), resized and
normalised by the CLIP tower's own preprocessing, and embedded by CLIP's pooled, projected image
embedding. Scores follow CLIP's zero-shot rule: a softmax over the vocabulary of ``100 x cosine``
(100 is OpenAI CLIP's learned temperature), so a region's scores sum to 1 over the vocabulary and
are not comparable with a RegionSpot head's sigmoid scores.

It is the default model (``regionspot.load()`` with no checkpoint): real labels without any
trained head. It shares the predictor API of RegionSpot (``set_image``, ``predict``, ``propose``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from regionspot.backbones.protocols import (
    CROP_CLIP,
    PREDICT_TEXT,
    PooledImageEncoder,
    RegionTokenizer,
    TextEmbedder,
)
from regionspot.config import (
    ZERO_SHOT_METHODS,
    ConfigError,
    ZeroShotConfig,
    ZeroShotMethod,
    apply_overrides,
)
from regionspot.devices import full_precision
from regionspot.model.recognizer import RegionBatch, RegionScores
from regionspot.model.text_memo import TextEmbeddingMemo
from regionspot.ops.crops import crop_region, neutral_fill, pad_to_square

if TYPE_CHECKING:
    from regionspot.model.regionspot import RegionSpot
    from regionspot.predictor import RegionPredictor

#: CLIP's learned softmax temperature (``logit_scale.exp()`` of the OpenAI models).
CLIP_LOGIT_SCALE = 100.0
CROP_BATCH = 64


def check_pooled_encoder(image_encoder: object, text_dim: int, method: str) -> PooledImageEncoder:
    """``image_encoder`` as a :class:`~regionspot.backbones.protocols.PooledImageEncoder` when it
    has the members the crop baselines need (:data:`~regionspot.backbones.protocols.CROP_CLIP`)
    and a visual projection as wide as the text embeddings; else :class:`ConfigError` (a
    :class:`~regionspot.backbones.protocols.BackboneCapabilityError` for a missing member)
    saying what is missing."""
    if image_encoder is None:
        raise ConfigError(f"method {method!r} needs CLIP's vision tower, but this model was built without "
                          "CLIP vision (clip.enabled=false)")
    encoder = CROP_CLIP.require(image_encoder)
    if encoder.projection_dim is None:
        raise ConfigError(f"method {method!r} needs CLIP's pooled image embedding, but the CLIP vision "
                          "weights have no visual projection (load CLIPModel or CLIPVisionModelWithProjection "
                          "weights)")
    if int(encoder.projection_dim) != int(text_dim):
        raise ConfigError(f"method {method!r} compares CLIP image and text embeddings, but the pooled image "
                          f"embedding is {encoder.projection_dim}-d and the text embedding {text_dim}-d: use the "
                          "text tower of the same CLIP model")
    return encoder


class ZeroShotCLIP(nn.Module):
    """SAM + CLIP, no trained head: a :class:`~regionspot.model.recognizer.Recognizer` whose
    ``method`` is ``clip-mask-crop`` or ``clip-crop`` (see the module docstring). Backbones are
    injected (shared, frozen); build one with :meth:`from_config` or :meth:`from_model`.

    ``image_encoder`` and ``text_embedder`` are checked here, once, against what the crop
    baselines need (:data:`~regionspot.backbones.protocols.CROP_CLIP`, ``PREDICT_TEXT``); the
    SAM side is checked by the predictor's first ``predict``."""

    def __init__(self, config: ZeroShotConfig, region_tokenizer: RegionTokenizer, image_encoder: object,
                 text_embedder: TextEmbedder) -> None:
        super().__init__()
        if config.method not in ZERO_SHOT_METHODS:
            raise ConfigError(f"zero-shot method {config.method!r} is not one of {list(ZERO_SHOT_METHODS)}")
        self.config = config
        self.region_tokenizer = region_tokenizer
        self.text_embedder = PREDICT_TEXT.require(text_embedder)
        self.image_encoder = check_pooled_encoder(image_encoder, self.text_embedder.embed_dim, config.method)
        self.precision = "fp32"
        self.origin: dict[str, Any] = {"head": "none (zero-shot)"}
        self.fill = neutral_fill(self.image_encoder.mean)
        self._text_memo = TextEmbeddingMemo()
        self.eval()

    @classmethod
    def from_config(cls, config: ZeroShotConfig, overrides: Sequence[str] = ()) -> ZeroShotCLIP:
        """Build the backbones ``config`` names (Hub ids or local folders; ``.pt`` for SAM)."""
        from regionspot.backbones.clip_vision import build_image_memory_encoder
        from regionspot.backbones.sam import build_region_tokenizer
        from regionspot.backbones.text import build_text_embedder

        config = apply_overrides(config, list(overrides))
        if not config.clip.enabled:
            raise ConfigError("the zero-shot recognizer needs CLIP's vision tower (clip.enabled=false given)")
        return cls(config, build_region_tokenizer(config.sam), build_image_memory_encoder(config.clip),
                   build_text_embedder(config.text, config.clip.name_or_path))

    @classmethod
    def from_model(cls, model: RegionSpot | ZeroShotCLIP, method: ZeroShotMethod = "clip-mask-crop") -> ZeroShotCLIP:
        """The zero-shot recognizer on another recognizer's towers (shared, not copied)."""
        config = ZeroShotConfig(sam=model.config.sam, clip=model.config.clip, text=model.config.text,
                                method=method)
        zero_shot = cls(config, model.region_tokenizer, model.image_encoder, model.text_embedder)
        zero_shot.precision = model.precision
        return zero_shot

    @property
    def method(self) -> str:
        return self.config.method

    @property
    def mask_crop(self) -> bool:
        return self.config.method == "clip-mask-crop"

    @property
    def score_kind(self) -> str:
        return "softmax"

    @property
    def needs_region_masks(self) -> bool:
        return self.mask_crop

    @property
    def has_attention(self) -> bool:
        return False

    @property
    def device(self) -> torch.device:
        """Where the CLIP tower's weights are (the CPU for parameter-free stand-ins)."""
        parameter = next(self.parameters(), None)
        return parameter.device if parameter is not None else torch.device("cpu")

    def describe_backbones(self) -> dict[str, Any]:
        return {"sam": self.region_tokenizer.describe(), "clip_vision": self.image_encoder.describe(),
                "text": self.text_embedder.describe()}

    def describe(self) -> dict[str, Any]:
        """What answers: the zero-shot method (no trained head), its scores and backbones."""
        return {"method": self.method, "trained": False, "origin": dict(self.origin), "score_kind": self.score_kind,
                "precision": self.precision, "backbones": self.describe_backbones()}

    def text_embeddings(self, names: Sequence[str]) -> torch.Tensor:
        """Unit text embeddings [N, text_dim] float32 on the model's device, memoised per vocabulary."""
        return self._text_memo.embeddings(self.text_embedder, names, self.device)

    def input_frame(self, image: np.ndarray) -> np.ndarray:
        """The image itself: the crops are cut from the photo as it is."""
        return image

    def encode_context(self, image: np.ndarray) -> torch.Tensor | None:
        """No whole-image context: each region is embedded from its own crop."""
        return None

    def encode_contexts(self, images: Sequence[np.ndarray]) -> list[torch.Tensor | None]:
        """No whole-image context for any image."""
        return [None] * len(images)

    def score_regions(self, batch: RegionBatch) -> RegionScores:
        """CLIP's softmax over the vocabulary of ``100 x cosine`` between each crop and each name."""
        if self.mask_crop and batch.masks is None:
            raise ValueError("clip-mask-crop scoring needs the regions' SAM masks")
        masks = batch.masks if self.mask_crop else None
        crops = [crop_region(batch.image, box, self.fill, mask=None if masks is None else masks[i])
                 for i, box in enumerate(batch.boxes)]
        region_embeddings = self.encode_crops(crops).to(batch.text.device)
        with full_precision(self.device):  # half precision stops before the scores
            logits = CLIP_LOGIT_SCALE * F.normalize(region_embeddings.float(), dim=-1) @ batch.text.float().t()
            return RegionScores(torch.softmax(logits, dim=-1))

    def encode_crops(self, crops: Sequence[np.ndarray]) -> torch.Tensor:
        """hxwx3 uint8 crops (R) -> unit CLIP image embeddings [R, projection_dim] float32, each
        padded to a square with the neutral fill and preprocessed by the tower, in batches."""
        parts = []
        for start in range(0, len(crops), CROP_BATCH):
            batch = crops[start:start + CROP_BATCH]
            pixels = torch.stack([self.image_encoder.preprocess(pad_to_square(crop, self.fill)) for crop in batch])
            parts.append(self.image_encoder.encode_pooled(pixels).float())
        return torch.cat(parts, dim=0)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> ZeroShotCLIP:
        """``.to()`` and friends move the memoised text embeddings with the towers."""
        super()._apply(fn, recurse)
        self._text_memo.to(self.device)
        return self

    def predictor(self, region_batch_size: int = 64) -> RegionPredictor:
        """A :class:`~regionspot.predictor.RegionPredictor` (the same API as RegionSpot's)."""
        from regionspot.predictor import RegionPredictor

        return RegionPredictor(self, region_batch_size=region_batch_size)
