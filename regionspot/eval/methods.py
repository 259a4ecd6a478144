"""The three region classifiers of SPEC's evaluation table behind one interface.

    classifier = build_classifier("clip-crop", model)
    result = classifier.classify(image, boxes, vocabulary, topk=5, with_masks=True)  # RegionResult

- ``"regionspot"``: the model itself (SAM tokens + CLIP memory + fusion head). Scores are the
  head's scores (``fusion.score_function``: per-(region, name) sigmoid probabilities by default,
  a softmax over the vocabulary for converted official checkpoints). ``prompt="together"`` sends all boxes of an
  image through the head together, so with region self-attention on they attend to each other
  (SPEC Table 5); ``prompt="alone"`` runs every box through the head on its own (batched, with
  the same numbers as one ``predict`` call per box).
- ``"clip-crop"``: SPEC's baseline "CLIP crop of the box". The box is cut out of the image,
  padded to a square with CLIP's pixel mean (so the whole box is seen at its own aspect ratio),
  resized and normalised by the tower's own preprocessing and embedded by CLIP's pooled,
  projected image embedding. Scores follow CLIP's zero-shot rule: a softmax over the vocabulary
  of ``100 x cosine`` (100 is CLIP's learned temperature), so a region's scores over the whole
  vocabulary sum to 1 and are *not* comparable with RegionSpot's sigmoid scores.
- ``"clip-mask-crop"``: "CLIP crop of the SAM mask": as ``clip-crop``, but pixels outside the
  box's SAM mask (box prompt) are first replaced by CLIP's pixel mean.

Masks, when asked for, always come from SAM box prompts, so mask AP of the baselines uses the
same SAM masks as RegionSpot. Images are ``HxWx3`` uint8 RGB; boxes are float ``[R, 4]`` xyxy in
absolute pixels (clipped to the image; degenerate boxes raise ``BoxError``; R >= 1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol, Sequence, cast

import numpy as np
import torch

from regionspot.backbones.clip_vision import OPENAI_CLIP_MEAN
from regionspot.backbones.protocols import RegionTokenizer, SamImageEmbedding
from regionspot.config import ConfigError
from regionspot.ops.boxes import validate_boxes
from regionspot.ops.image import load_image
from regionspot.results import RegionResult
from regionspot.vocab import parse_vocabulary, validate_vocabulary

if TYPE_CHECKING:
    from regionspot.model.fusion import RegionFusion
    from regionspot.model.regionspot import RegionSpot

METHODS = ("regionspot", "clip-crop", "clip-mask-crop")
PROMPT_MODES = ("together", "alone")
#: CLIP's learned softmax temperature (``logit_scale.exp()`` of the OpenAI models).
CLIP_LOGIT_SCALE = 100.0
DEFAULT_BATCH = 64


class RegionClassifier(Protocol):
    """Names regions of one image against a vocabulary."""

    name: str

    def classify(self, image: np.ndarray, boxes: np.ndarray, vocabulary: Sequence[str], topk: int,
                 with_masks: bool, sam_embedding: SamImageEmbedding | None = None) -> RegionResult:
        """``image`` HxWx3 uint8; ``boxes`` float [R, 4] xyxy absolute pixels -> top-``topk``
        (name, score) pairs per box, scores in [0, 1], SAM masks bool [R, H, W] when ``with_masks``.
        ``sam_embedding``: the image's SAM encoding when the caller already made one (reused)."""
        ...


class PooledImageEncoder(Protocol):
    """What the crop baselines need of CLIP's vision tower (:class:`~regionspot.backbones.
    clip_vision.ClipVisionMemory` has it): HxWx3 uint8 -> [3, S, S] preprocessing and unit pooled,
    projected embeddings [B, projection_dim] of [B, 3, S, S] pixels."""

    projection_dim: int | None

    def preprocess(self, image: np.ndarray) -> torch.Tensor: ...

    def encode_pooled(self, pixel_values: torch.Tensor) -> torch.Tensor: ...


def build_classifier(method: str, model: RegionSpot, *, prompt: str = "together") -> RegionClassifier:
    """The classifier for ``method`` (one of :data:`METHODS`) on ``model``'s backbones.

    ``prompt`` (one of :data:`PROMPT_MODES`) only matters for ``"regionspot"``: the crop
    baselines embed each crop on its own, so both modes give them the same results.
    Raises ConfigError for an unknown method or prompt mode, and for a crop baseline on a model
    without CLIP vision or whose pooled CLIP embedding width differs from the text width.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown evaluation method {method!r}; choose one of {', '.join(METHODS)}")
    if prompt not in PROMPT_MODES:
        raise ConfigError(f"unknown prompt mode {prompt!r}; choose one of {', '.join(PROMPT_MODES)}")
    if method == "regionspot":
        return RegionSpotClassifier(model, prompt=prompt)
    if model.image_encoder is None:
        raise ConfigError(f"method {method!r} needs CLIP's vision tower, but this model was built without "
                          "CLIP vision (clip.enabled=false)")
    encoder = cast(PooledImageEncoder, model.image_encoder)
    return ClipCropClassifier(encoder, model.text_embeddings, model.region_tokenizer,
                              text_dim=model.text_embedder.embed_dim, mask_crop=method == "clip-mask-crop")


def checked_topk(topk: int) -> int:
    """``topk`` when it is a positive integer, else ValueError."""
    if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)) or topk < 1:
        raise ValueError(f"topk must be a positive integer, got {topk!r}")
    return int(topk)


def masks_at_image_size(tokenizer: RegionTokenizer, embedding: SamImageEmbedding, mask_logits: torch.Tensor,
                        chunk: int = DEFAULT_BATCH) -> np.ndarray:
    """SAM low-res mask logits [R, 256, 256] -> bool masks [R, H, W] at the original image size,
    pasted back ``chunk`` masks at a time to bound memory."""
    parts = [(tokenizer.masks_to_image(embedding, mask_logits[start:start + chunk]) > 0).cpu().numpy()
             for start in range(0, mask_logits.shape[0], chunk)]
    return np.concatenate(parts, axis=0)


def fuse_alone(fusion: RegionFusion, tokens: torch.Tensor, memory: torch.Tensor | None,
               chunk: int = DEFAULT_BATCH) -> torch.Tensor:
    """Every region through the head on its own (a batch of one-region images, so no region
    attends to another): tokens [R, token_dim], memory [1, T, width] or None -> unit region
    embeddings [R, text_dim]."""
    device = next(fusion.parameters()).device
    outputs = []
    for part in tokens.to(device).split(chunk):
        part_memory = None if memory is None else memory.expand(part.shape[0], -1, -1)
        embeddings, _ = fusion(part.unsqueeze(1), part_memory)
        outputs.append(embeddings[:, 0])
    return torch.cat(outputs, dim=0)


class RegionSpotClassifier:
    """RegionSpot through its predictor; see the module docstring for the two prompt modes."""

    name = "regionspot"

    def __init__(self, model: RegionSpot, *, prompt: str = "together", region_batch_size: int = DEFAULT_BATCH) -> None:
        if prompt not in PROMPT_MODES:
            raise ConfigError(f"unknown prompt mode {prompt!r}; choose one of {', '.join(PROMPT_MODES)}")
        self.model = model
        self.prompt = prompt
        self.region_batch_size = region_batch_size
        self.predictor = model.predictor(region_batch_size=region_batch_size)

    @torch.inference_mode()
    def classify(self, image: np.ndarray, boxes: np.ndarray, vocabulary: Sequence[str], topk: int,
                 with_masks: bool, sam_embedding: SamImageEmbedding | None = None) -> RegionResult:
        """See :class:`RegionClassifier`. Scores by the head's ``fusion.score_function``."""
        self.predictor.set_image(image, sam_embedding)
        try:
            if self.prompt == "together":
                return self.predictor.predict(boxes, vocabulary, topk=topk, with_masks=with_masks)
            return self._classify_alone(boxes, vocabulary, checked_topk(topk), with_masks)
        finally:
            self.predictor.reset_image()

    def _classify_alone(self, boxes: np.ndarray, vocabulary: Sequence[str], topk: int,
                        with_masks: bool) -> RegionResult:
        encoded = self.predictor.encoded
        assert encoded is not None
        model = self.model
        names = validate_vocabulary(parse_vocabulary(vocabulary))
        clipped = validate_boxes(boxes, encoded.size)
        regions = model.region_tokenizer.encode_regions(
            encoded.sam, torch.as_tensor(clipped, dtype=torch.float32), with_masks=with_masks)
        embeddings = fuse_alone(model.fusion, regions.tokens, encoded.memory, self.region_batch_size)
        scores = model.fusion.scores(embeddings, model.text_embeddings(names)).cpu()
        top_scores, top_ids = scores.topk(min(topk, len(names)), dim=-1)
        masks = None
        if regions.mask_logits is not None:
            masks = masks_at_image_size(model.region_tokenizer, encoded.sam, regions.mask_logits,
                                        self.region_batch_size)
        return RegionResult(boxes=clipped, topk_ids=top_ids.numpy(), topk_scores=top_scores.double().numpy(),
                            vocabulary=names, image_size=encoded.size, masks=masks,
                            mask_scores=regions.mask_scores.float().cpu().numpy())


# ----------------------------------------------------------------------------- CLIP crop baselines
def neutral_fill(mean: Sequence[float] = OPENAI_CLIP_MEAN) -> np.ndarray:
    """CLIP's pixel mean (fractions in [0, 1]) as a uint8 RGB colour [3]: the colour that
    normalises to zero, used for padding and for pixels outside a mask."""
    return np.clip(np.round(np.asarray(mean, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def box_pixel_bounds(box: np.ndarray, image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Integer pixel bounds (x0, y0, x1, y1), end-exclusive, of the pixels an xyxy box touches:
    floor of the low edges, ceil of the high ones, clipped to the image of size (H, W), at
    least one pixel each way."""
    height, width = image_size
    x0 = int(np.clip(np.floor(box[0]), 0, width - 1))
    y0 = int(np.clip(np.floor(box[1]), 0, height - 1))
    x1 = int(np.clip(np.ceil(box[2]), x0 + 1, width))
    y1 = int(np.clip(np.ceil(box[3]), y0 + 1, height))
    return x0, y0, x1, y1


def crop_region(image: np.ndarray, box: np.ndarray, *, mask: np.ndarray | None = None,
                fill: np.ndarray | None = None) -> np.ndarray:
    """The pixels of ``image`` (HxWx3 uint8) inside ``box`` (xyxy absolute pixels) -> hxwx3
    uint8 (a new array). With ``mask`` (bool [H, W]) the pixels outside the mask are set to
    ``fill`` (uint8 RGB [3], default CLIP's pixel mean) first."""
    x0, y0, x1, y1 = box_pixel_bounds(np.asarray(box, dtype=np.float64), image.shape[:2])
    crop = image[y0:y1, x0:x1].copy()
    if mask is not None:
        if mask.shape != image.shape[:2]:
            raise ValueError(f"mask must be {image.shape[:2]} (H, W), got {mask.shape}")
        crop[~mask[y0:y1, x0:x1]] = neutral_fill() if fill is None else fill
    return crop


def pad_to_square(crop: np.ndarray, fill: np.ndarray | None = None) -> np.ndarray:
    """hxwx3 uint8 -> sxsx3 uint8 with s = max(h, w): the crop centred, the rest ``fill``
    (uint8 RGB [3], default CLIP's pixel mean). A square crop is returned as is."""
    height, width = crop.shape[:2]
    side = max(height, width)
    if height == width:
        return crop
    square = np.empty((side, side, 3), dtype=np.uint8)
    square[:] = neutral_fill() if fill is None else fill
    top, left = (side - height) // 2, (side - width) // 2
    square[top:top + height, left:left + width] = crop
    return square


def sam_box_masks(tokenizer: RegionTokenizer, image: np.ndarray, boxes: np.ndarray,
                  chunk: int = DEFAULT_BATCH, embedding: SamImageEmbedding | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """SAM masks for box prompts: image HxWx3 uint8, boxes [R, 4] xyxy -> (bool masks [R, H, W],
    SAM's predicted IoU float [R]). ``embedding``: the image's SAM encoding, if already made."""
    if embedding is None:
        embedding = tokenizer.encode_image(image)
    regions = tokenizer.encode_regions(embedding, torch.as_tensor(boxes, dtype=torch.float32), with_masks=True)
    assert regions.mask_logits is not None
    masks = masks_at_image_size(tokenizer, embedding, regions.mask_logits, chunk)
    return masks, regions.mask_scores.float().cpu().numpy()


class ClipCropClassifier:
    """SPEC's CLIP crop baselines (see the module docstring). ``text_embeddings`` maps names (N) to unit
    rows [N, text_dim]; ``region_tokenizer`` gives the SAM masks."""

    def __init__(self, image_encoder: PooledImageEncoder, text_embeddings: Callable[[Sequence[str]], torch.Tensor],
                 region_tokenizer: RegionTokenizer, *, text_dim: int, mask_crop: bool,
                 batch_size: int = DEFAULT_BATCH) -> None:
        self.name = "clip-mask-crop" if mask_crop else "clip-crop"
        projection_dim = getattr(image_encoder, "projection_dim", None)
        if projection_dim is None or not hasattr(image_encoder, "encode_pooled"):
            raise ConfigError(f"method {self.name!r} needs CLIP's pooled image embedding, but the CLIP vision "
                              "weights have no visual projection (load CLIPModel or "
                              "CLIPVisionModelWithProjection weights)")
        if int(projection_dim) != int(text_dim):
            raise ConfigError(f"method {self.name!r} compares CLIP image and text embeddings, but the pooled image "
                              f"embedding is {projection_dim}-d and the text embedding {text_dim}-d: use the "
                              "text tower of the same CLIP model")
        self.image_encoder = image_encoder
        self.text_embeddings = text_embeddings
        self.region_tokenizer = region_tokenizer
        self.mask_crop = mask_crop
        self.batch_size = batch_size
        self.fill = neutral_fill(getattr(image_encoder, "mean", OPENAI_CLIP_MEAN))

    @torch.inference_mode()
    def classify(self, image: np.ndarray, boxes: np.ndarray, vocabulary: Sequence[str], topk: int,
                 with_masks: bool, sam_embedding: SamImageEmbedding | None = None) -> RegionResult:
        """See :class:`RegionClassifier`. Scores are CLIP's softmax over the whole vocabulary."""
        image = load_image(image)
        names = validate_vocabulary(parse_vocabulary(vocabulary))
        topk = checked_topk(topk)
        clipped = validate_boxes(boxes, image.shape[:2])
        masks = mask_scores = None
        if with_masks or self.mask_crop:
            masks, mask_scores = sam_box_masks(self.region_tokenizer, image, clipped, self.batch_size,
                                               sam_embedding)
        crops = [crop_region(image, box, mask=masks[i] if self.mask_crop and masks is not None else None,
                             fill=self.fill) for i, box in enumerate(clipped)]
        region_embeddings = self.encode_crops(crops)
        text = self.text_embeddings(names).float()
        probabilities = torch.softmax(CLIP_LOGIT_SCALE * region_embeddings.to(text.device) @ text.t(), dim=-1)
        top_scores, top_ids = probabilities.cpu().double().clamp(0.0, 1.0).topk(min(topk, len(names)), dim=-1)
        return RegionResult(boxes=clipped, topk_ids=top_ids.numpy(), topk_scores=top_scores.numpy(),
                            vocabulary=names, image_size=image.shape[:2], masks=masks if with_masks else None,
                            mask_scores=mask_scores if with_masks else None)

    def encode_crops(self, crops: Sequence[np.ndarray]) -> torch.Tensor:
        """hxwx3 uint8 crops (R) -> unit CLIP image embeddings [R, projection_dim] float32, each
        padded to a square with the neutral fill and preprocessed by the tower, in batches."""
        parts = []
        for start in range(0, len(crops), self.batch_size):
            batch = crops[start:start + self.batch_size]
            pixels = torch.stack([self.image_encoder.preprocess(pad_to_square(crop, self.fill)) for crop in batch])
            parts.append(self.image_encoder.encode_pooled(pixels).float())
        return torch.cat(parts, dim=0)
