"""Class-agnostic region proposals ("auto" boxes) from SAM's automatic point-grid masks.

The idea of SAM's automatic mask generator, for boxes: a regular grid of points over the image
(cell centres), each point decoded alone as one foreground prompt in multi-mask mode (3 masks and
their predicted IoU per point); masks are kept when SAM's predicted IoU and their stability
score are high enough; each kept mask gives its tight box; boxes are de-duplicated by box NMS and
capped. With these boxes RegionSpot names regions without any external detector.

Cost control for CPU: masks are judged and boxed on the decoder's low-resolution logits
(256 x 256 for a 1024 encoder, one cell = 4 encoder-input pixels), never upscaled to the image,
so a box edge is exact to one low-res cell (4 encoder-input pixels, 2.5 pixels of a 640-wide
photo). SAM's stability score is an area ratio, which this resolution changes very little.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch
from tqdm.auto import tqdm

from regionspot.backbones.protocols import (
    BackboneCapabilityError,
    Capability,
    CropPromptable,
    PointPromptable,
    SamImageEmbedding,
)
from regionspot.config import ConfigError
from regionspot.ops.boxes import box_sizes, clip_boxes, masks_to_boxes, nms


class ProposalBackboneError(BackboneCapabilityError):
    """The SAM-side backbone cannot decode point prompts, so it cannot propose regions (a
    :class:`ConfigError` and a TypeError)."""


#: What ``propose`` needs of the SAM adapter (see :mod:`regionspot.backbones.protocols`).
PROPOSE_SAM = Capability[PointPromptable]("propose", "SAM", PointPromptable, error=ProposalBackboneError,
                                          hint="use a SAM-family backbone, or pass boxes")
#: What ``propose`` with crop layers needs of it.
CROP_SAM = Capability[CropPromptable]("propose with crop layers", "SAM", CropPromptable, error=ProposalBackboneError,
                                      hint="use a SAM-family backbone, or crop_layers=0")


@dataclass
class AutoProposalConfig:
    """How ``auto`` proposals are made (SAM automatic-mask-generator defaults, except the grid).

    ``points_per_side``: the grid has ``points_per_side ** 2`` foreground points at cell
    centres. SAM uses 32; 16 is the CPU-friendly default here (4x fewer decoder runs; small
    objects between grid points are missed more often).
    ``points_per_batch``: points decoded per call (bounds memory: 3 low-res masks per point).
    ``pred_iou_thresh``: keep a mask when SAM's predicted IoU is at least this.
    ``stability_score_thresh`` / ``stability_score_offset``: keep a mask when the IoU of its
    logits thresholded at ``+offset`` and at ``-offset`` is at least the threshold.
    ``box_nms_thresh``: boxes overlapping a better one by more than this IoU are dropped.
    ``min_box_side``: boxes narrower or lower than this many original-image pixels are dropped.
    ``max_proposals``: at most this many boxes, best predicted IoU first.
    ``crop_layers``: also propose on crops of the image, each encoded on its own so small
    objects are seen larger (SAM's crop layers): layer ``i`` cuts the image into ``2**i`` x
    ``2**i`` overlapping crops with a ``points_per_side // crop_points_downscale**i`` grid each.
    Costs one encoder run per crop (4 for one layer). Boxes touching a crop's inner edge (within
    ``crop_edge_margin`` pixels) are dropped: the object goes on past the crop.
    ``crop_overlap``: how far neighbouring crops overlap, as a share of the image's shorter side
    at layer 1 (halved at each further layer).
    """

    points_per_side: int = 16
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    min_box_side: float = 4.0
    max_proposals: int = 300
    crop_layers: int = 0
    crop_overlap: float = 0.34
    crop_points_downscale: int = 2
    crop_edge_margin: float = 8.0

    @classmethod
    def high_recall(cls) -> AutoProposalConfig:
        """More of the objects for more time: SAM's own 32 x 32 grid, every multi-mask candidate
        SAM rates at least 0.7 (stability 0.85), box NMS at 0.8, up to 300 boxes. Measured with
        ``regionspot bench proposals`` (docs/benchmarks.md)."""
        return cls(points_per_side=32, pred_iou_thresh=0.7, stability_score_thresh=0.85, box_nms_thresh=0.8)


@dataclass
class Proposals:
    """Class-agnostic boxes of one image.

    ``boxes``: float64 ``[N, 4]`` xyxy absolute pixels of the original image, clipped, best first.
    ``scores``: float64 ``[N]`` in [0, 1]: SAM's predicted IoU of the mask each box came from.
    """

    boxes: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


_POSITIVE_INTS = ("points_per_side", "points_per_batch", "max_proposals", "crop_points_downscale")
_NON_NEGATIVE_INTS = ("crop_layers",)
#: Most crop layers (layer i costs 4**i encoder runs: 3 layers are 84).
MAX_CROP_LAYERS = 3
_UNIT_INTERVAL = ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh", "crop_overlap")
_NON_NEGATIVE = ("stability_score_offset", "min_box_side", "crop_edge_margin")


def check_auto_config(config: AutoProposalConfig) -> AutoProposalConfig:
    """``config`` unchanged if every value is usable, else :class:`ConfigError` naming the field:
    positive integers for the counts, [0, 1] for the thresholds, finite >= 0 for the rest."""
    if not isinstance(config, AutoProposalConfig):
        raise ConfigError(f"expected an AutoProposalConfig, got {type(config).__name__}")
    for field in fields(config):
        value, where = getattr(config, field.name), f"auto proposals: {field.name}"
        if field.name in _POSITIVE_INTS or field.name in _NON_NEGATIVE_INTS:
            least = 1 if field.name in _POSITIVE_INTS else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"{where} must be {'a positive' if least else 'a non-negative'} integer, "
                                  f"got {value!r}")
            if field.name == "crop_layers" and value > MAX_CROP_LAYERS:
                raise ConfigError(f"{where} must be at most {MAX_CROP_LAYERS} (4**i encoder runs a layer), got {value}")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        if field.name in _UNIT_INTERVAL and not 0.0 <= value <= 1.0:
            raise ConfigError(f"{where} must be in [0, 1], got {value!r}")
        if field.name in _NON_NEGATIVE and value < 0:
            raise ConfigError(f"{where} must be >= 0, got {value!r}")
    return config


def point_grid(points_per_side: int, image_size: tuple[int, int]) -> np.ndarray:
    """Cell centres of a ``points_per_side`` square grid over an (H, W) image: float64
    ``[points_per_side ** 2, 2]`` xy original-image pixels, row by row from the top left."""
    height, width = image_size
    centres = (np.arange(points_per_side, dtype=np.float64) + 0.5) / points_per_side
    xs, ys = np.meshgrid(centres * width, centres * height, indexing="xy")
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def stability_scores(mask_logits: torch.Tensor, offset: float) -> torch.Tensor:
    """SAM's stability score ``[N]`` of mask logits ``[N, h, w]``: the IoU of the masks
    thresholded at ``+offset`` and at ``-offset`` (the first lies inside the second, so it is an
    area ratio). 0 where even the ``-offset`` mask is empty."""
    inner = (mask_logits > offset).flatten(1).sum(dim=1, dtype=torch.int64)
    outer = (mask_logits > -offset).flatten(1).sum(dim=1, dtype=torch.int64)
    return inner.double() / outer.clamp_min(1).double()  # inner <= outer, so 0 when outer is empty


def low_res_boxes_to_image(boxes: np.ndarray, cell: float, embedding: SamImageEmbedding) -> np.ndarray:
    """Boxes ``[N, 4]`` in low-res mask cells (pixel-edge xyxy) -> original-image pixels, clipped.
    ``cell``: encoder-input pixels per low-res cell (4 for SAM)."""
    (height, width), (new_h, new_w) = embedding.original_size, embedding.input_size
    scaled = boxes * cell * np.array([width / new_w, height / new_h, width / new_w, height / new_h])
    return clip_boxes(scaled, embedding.original_size)


def _kept_masks(tokenizer: PointPromptable, embedding: SamImageEmbedding, points: torch.Tensor,
                config: AutoProposalConfig) -> tuple[np.ndarray, np.ndarray]:
    """One batch of points -> boxes ``[n, 4]`` (original pixels) and predicted IoU ``[n]`` of the
    masks that pass the predicted-IoU and stability filters and the minimum box side."""
    mask_logits, iou = tokenizer.encode_points(embedding, points)
    mask_logits, iou = mask_logits.flatten(0, 1), iou.flatten().float()  # [P*K, m, m], [P*K]
    cell = tokenizer.image_input_size / mask_logits.shape[-1]
    rows, cols = (math.ceil(side / cell) for side in embedding.input_size)
    keep = iou >= config.pred_iou_thresh
    mask_logits, iou = mask_logits[keep, :rows, :cols], iou[keep]  # crop the padding away
    keep = stability_scores(mask_logits, config.stability_score_offset) >= config.stability_score_thresh
    mask_logits, iou = mask_logits[keep], iou[keep]
    boxes = low_res_boxes_to_image(masks_to_boxes(mask_logits > 0), cell, embedding)
    big_enough = box_sizes(boxes).min(axis=1) >= max(config.min_box_side, np.finfo(np.float64).tiny)
    return boxes[big_enough], iou.cpu().double().numpy()[big_enough]


Crop = tuple[int, int, int, int]


def crop_boxes(image_size: tuple[int, int], layers: int, overlap: float) -> list[tuple[int, Crop]]:
    """The crops of crop layers 1..``layers`` of an (H, W) image as (layer, xyxy integer pixels),
    layer by layer, row by row: layer ``i`` has ``2**i`` x ``2**i`` equal crops covering the
    image, where neighbours overlap by ``overlap * min(H, W) * 2 / 2**i`` pixels (more on an image
    of fewer pixels than crops; a crop never reaches past the image or is empty)."""
    height, width = image_size
    crops = []
    for layer in range(1, layers + 1):
        per_side = 2**layer
        shared = int(overlap * min(height, width) * 2 / per_side)
        crop_w, crop_h = (math.ceil((shared * (per_side - 1) + side) / per_side) for side in (width, height))
        for row in range(per_side):
            for col in range(per_side):
                x0, y0 = min((crop_w - shared) * col, width - crop_w), min((crop_h - shared) * row, height - crop_h)
                crops.append((layer, (max(x0, 0), max(y0, 0), min(x0 + crop_w, width), min(y0 + crop_h, height))))
    return crops


def inside_crop(boxes: np.ndarray, crop: Crop, image_size: tuple[int, int],
                margin: float) -> np.ndarray:
    """bool [N]: which boxes [N, 4] (crop pixels) stay ``margin`` pixels away from every edge of
    ``crop`` (image xyxy) that is not an edge of the image."""
    x0, y0, x1, y1 = crop
    height, width = image_size
    cut = ((x0 > 0) & (boxes[:, 0] <= margin)) | ((y0 > 0) & (boxes[:, 1] <= margin)) \
        | ((x1 < width) & (boxes[:, 2] >= x1 - x0 - margin)) | ((y1 < height) & (boxes[:, 3] >= y1 - y0 - margin))
    return ~cut


class RegionProposer:
    """``auto`` proposals from one SAM adapter, whose point prompts are checked once, here.

    ``tokenizer``: a SAM-family adapter with ``encode_points`` and ``image_input_size`` (every
    built-in one has them; crop layers also need ``encode_image``); anything else is a
    :class:`ProposalBackboneError` (a ConfigError and TypeError) naming its class. Call it
    with an image's ``encode_image`` output (and the image itself for crop layers).
    """

    def __init__(self, tokenizer: object) -> None:
        self.tokenizer = PROPOSE_SAM.require(tokenizer)

    def __call__(self, embedding: SamImageEmbedding, config: AutoProposalConfig | None = None,
                 progress: bool = False, image: np.ndarray | None = None) -> Proposals:
        """Class-agnostic boxes of one encoded image (see the module docstring). ``image``:
        the HxWx3 uint8 image ``embedding`` encodes, needed with ``config.crop_layers``.
        ``progress``: show a tqdm bar over point batches. Raises :class:`ConfigError` for bad
        config values or crop layers without the image."""
        config = check_auto_config(config if config is not None else AutoProposalConfig())
        crops = crop_boxes(embedding.original_size, config.crop_layers, config.crop_overlap)
        if crops and (image is None or tuple(image.shape[:2]) != tuple(embedding.original_size)):
            raise ConfigError(f"auto proposals: crop_layers={config.crop_layers} needs the image the embedding "
                              "was made from")
        grids: list[tuple[Crop | None, int]] = [(None, config.points_per_side)] + [
            (crop, max(1, config.points_per_side // config.crop_points_downscale**layer)) for layer, crop in crops]
        bar = tqdm(total=sum(math.ceil(side * side / config.points_per_batch) for _, side in grids),
                   desc="auto proposals", unit="batch", disable=not progress)
        boxes, scores = [np.zeros((0, 4))], [np.zeros(0)]
        with torch.inference_mode(), bar:
            for crop, side in grids:
                crop_boxes_found, crop_scores = self._grid(embedding, image, crop, side, config, bar)
                boxes.append(crop_boxes_found)
                scores.append(crop_scores)
        all_boxes, all_scores = np.concatenate(boxes), np.concatenate(scores)
        kept = nms(all_boxes, all_scores, config.box_nms_thresh)[: config.max_proposals]
        return Proposals(boxes=all_boxes[kept], scores=all_scores[kept].clip(0.0, 1.0))

    def _grid(self, embedding: SamImageEmbedding, image: np.ndarray | None, crop: Crop | None, side: int,
              config: AutoProposalConfig, bar: tqdm) -> tuple[np.ndarray, np.ndarray]:
        """Kept boxes [n, 4] (image pixels) and predicted IoU [n] of a ``side`` x ``side`` grid
        over the whole image (``crop`` None: ``embedding``) or over ``crop`` (encoded here)."""
        if crop is not None:
            assert image is not None
            x0, y0, x1, y1 = crop
            embedding = CROP_SAM.require(self.tokenizer).encode_image(np.ascontiguousarray(image[y0:y1, x0:x1]))
        points = torch.as_tensor(point_grid(side, embedding.original_size), dtype=torch.float32)
        boxes, scores = [np.zeros((0, 4))], [np.zeros(0)]
        for batch in points.split(config.points_per_batch):
            batch_boxes, batch_scores = _kept_masks(self.tokenizer, embedding, batch, config)
            boxes.append(batch_boxes)
            scores.append(batch_scores)
            bar.update()
        found, found_scores = np.concatenate(boxes), np.concatenate(scores)
        if crop is None:
            return found, found_scores
        assert image is not None
        whole = inside_crop(found, crop, image.shape[:2], config.crop_edge_margin)
        return found[whole] + np.array([crop[0], crop[1], crop[0], crop[1]], dtype=np.float64), found_scores[whole]

def propose_regions(tokenizer: object, embedding: SamImageEmbedding,
                    config: AutoProposalConfig | None = None, progress: bool = False) -> Proposals:
    """Class-agnostic boxes of one encoded image: :class:`RegionProposer` made and called once
    (so the adapter is checked on every call; hold a :class:`RegionProposer` to check it once).

    ``tokenizer``: a SAM-family adapter with ``encode_points``; ``embedding``: its
    ``encode_image`` output; ``progress``: show a tqdm bar over point batches. Raises
    :class:`ProposalBackboneError` for an adapter without point prompts and
    :class:`ConfigError` for bad config values.
    """
    return RegionProposer(tokenizer)(embedding, config, progress)
