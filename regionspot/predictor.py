"""Encode an image once, then recognise any boxes against any vocabulary (like SamPredictor).

The one inference path: ``regionspot predict``, ``predict-batch``, ``eval``, ``serve`` and the
Python API all drive :class:`RegionPredictor`, whatever the recognizer (a RegionSpot head or the
zero-shot CLIP recognizer, see :mod:`regionspot.model.recognizer`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from regionspot.backbones.protocols import (
    BATCH_SAM,
    PREDICT_CLICKS,
    PREDICT_SAM,
    PREDICT_TEXT,
    RegionTokenizer,
    SamImageEmbedding,
)
from regionspot.devices import autocast
from regionspot.model.recognizer import Recognizer, RegionBatch
from regionspot.ops.boxes import as_box_array, validate_boxes
from regionspot.ops.image import load_image
from regionspot.ops.instances import FIND_THRESHOLDS, find_thresholds, select_instances
from regionspot.ops.masks import pairwise_mask_iou
from regionspot.ops.official_inputs import nearest_resize_masks, scale_xy, scale_xyxy
from regionspot.ops.prompts import PromptError, as_mask_prompts, as_point_prompts, region_boxes
from regionspot.proposals.auto import AutoProposalConfig, Proposals, RegionProposer
from regionspot.results import RegionResult
from regionspot.vocab import FIND_DISTRACTORS, find_vocabulary, parse_vocabulary, validate_vocabulary

__all__ = ["FIND_DISTRACTORS", "FIND_THRESHOLDS", "EncodedImage", "PredictorStateError", "RegionPredictor",
           "attention_to_grid", "find_thresholds", "find_vocabulary"]


class PredictorStateError(RuntimeError):
    """``predict`` was called before ``set_image``."""


@dataclass
class EncodedImage:
    """One image, encoded. ``image``: the photo as given (boxes and masks are in its pixels);
    ``sam``: SAM's embedding of the recognizer's input frame (the photo itself, or its resized
    copy for ``inputs="official"``); ``context``: the recognizer's own per-image work
    (RegionSpot: CLIP memory [1, T, width]; zero-shot: None)."""

    image: np.ndarray
    sam: SamImageEmbedding
    context: torch.Tensor | None

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the photo."""
        return int(self.image.shape[0]), int(self.image.shape[1])

    @property
    def frame_size(self) -> tuple[int, int]:
        """(h, w) of the input frame the towers saw (``size`` unless the recognizer resizes)."""
        return self.sam.original_size

    @property
    def memory(self) -> torch.Tensor | None:
        """The CLIP memory of a RegionSpot recognizer (an alias of ``context``)."""
        return self.context


@dataclass
class PromptedRegions:
    """The regions of one ``predict`` call: ``boxes`` float [R, 4] xyxy image pixels (the boxes
    the head sees); for click and mask prompts ``masks`` bool [R, H, W] (the prompt's answer,
    returned as is) and, for clicks, ``mask_scores`` [R] (SAM's predicted IoU of that mask) and
    ``clicks`` (per region: points float [P, 2] xy pixels, labels int [P])."""

    boxes: np.ndarray
    masks: np.ndarray | None = None
    mask_scores: np.ndarray | None = None
    clicks: list[tuple[np.ndarray, np.ndarray]] | None = None


class RegionPredictor:
    """``set_image`` runs the image encoders once; ``predict`` then costs only SAM's prompt
    decoder and the recognizer's per-region scoring.

    With a RegionSpot head whose region self-attention is on, scores depend on which boxes are
    sent together (the paper's Table 5: regions attend to each other); ``together=False`` scores
    each box as if sent alone. With ``fusion.region_self_attention=False`` or the zero-shot
    recognizer a box's result never depends on the others.

    The model's backbones are checked once against what each feature needs (see
    :mod:`regionspot.backbones.protocols`): at the first ``predict`` and at the first ``propose``;
    an adapter without a needed member fails there with a
    :class:`~regionspot.backbones.protocols.BackboneCapabilityError` naming it.
    """

    def __init__(self, model: Recognizer, region_batch_size: int = 64) -> None:
        if region_batch_size < 1:
            raise ValueError("region_batch_size must be >= 1")
        self.model = model
        self.region_batch_size = region_batch_size
        self.encoded: EncodedImage | None = None
        self._tokenizer: RegionTokenizer | None = None  # the model's SAM side, once checked for predict
        self._proposer: RegionProposer | None = None  # made (and its SAM side checked) by the first propose

    @torch.inference_mode()
    def set_image(self, image: Any, sam_embedding: SamImageEmbedding | None = None) -> None:
        """``image``: a path, a PIL image or an HxWx3 uint8 array (grayscale and RGBA are
        converted, see :func:`regionspot.ops.image.load_image`). Encodes it once;
        ``sam_embedding``: this image's SAM encoding when the caller already has one."""
        self.encoded = self.encode(load_image(image), sam_embedding)

    @torch.inference_mode()
    def encode(self, image: np.ndarray, sam_embedding: SamImageEmbedding | None = None) -> EncodedImage:
        """SAM's encoder and the recognizer's context on one HxWx3 uint8 image (no state change),
        both on the recognizer's input frame of it. SAM's encoder is skipped when
        ``sam_embedding`` (of this image, e.g. from proposals) is given and is of that frame; one
        of the photo itself is re-made for a recognizer that resizes first."""
        model = self.model
        frame = model.input_frame(image)
        if sam_embedding is not None and tuple(sam_embedding.original_size) != tuple(frame.shape[:2]):
            if tuple(sam_embedding.original_size) != tuple(image.shape[:2]):
                raise ValueError(f"sam_embedding is of a {sam_embedding.original_size} image, not {image.shape[:2]}")
            sam_embedding = None  # of the photo, but this recognizer's towers see a resized copy
        with autocast(model.device, model.precision):
            if sam_embedding is None:
                sam_embedding = model.region_tokenizer.encode_image(frame)
            context = model.encode_context(frame)
        return EncodedImage(image=image, sam=sam_embedding, context=context)

    @torch.inference_mode()
    def encode_many(self, images: Sequence[np.ndarray]) -> list[EncodedImage]:
        """:meth:`encode` of several HxWx3 uint8 images, each tower run once on the batch (SAM
        one image at a time when its adapter cannot batch: ``BATCH_SAM``). Equal to encoding
        them one by one, up to float rounding; no state change (see :meth:`set_encoded`)."""
        model = self.model
        frames = [model.input_frame(image) for image in images]
        with autocast(model.device, model.precision):
            tokenizer = model.region_tokenizer
            if BATCH_SAM.provided_by(tokenizer):
                sam = tokenizer.encode_images(frames)
            else:
                sam = [tokenizer.encode_image(frame) for frame in frames]
            contexts = model.encode_contexts(frames)
        return [EncodedImage(image=image, sam=embedding, context=context)
                for image, embedding, context in zip(images, sam, contexts, strict=True)]

    def set_encoded(self, encoded: EncodedImage) -> None:
        """Make ``encoded`` (from :meth:`encode` or :meth:`encode_many`) the current image."""
        self.encoded = encoded

    def reset_image(self) -> None:
        self.encoded = None

    @torch.inference_mode()
    def predict(
        self,
        boxes: Any = None,
        vocabulary: str | Sequence[str] | None = None,
        topk: int = 5,
        with_masks: bool = True,
        with_attention: bool = False,
        together: bool = True,
        *,
        points: Any = None,
        point_labels: Any = None,
        masks: Any = None,
    ) -> RegionResult:
        """Name each region, given as boxes, clicks or masks (one kind per call).

        ``boxes``: [R, 4] xyxy absolute pixels (list, array or tensor); boxes reaching outside
        the image are clipped, NaN/inverted/degenerate boxes raise ``BoxError``; no boxes at all
        (``[]``, an empty ``supervision.Detections``) give an empty result.
        ``points``: clicks, xy absolute pixels: ``[P, 2]`` one region, ``[R, P, 2]`` R regions, or
        a list of R regions' ``[P_r, 2]`` clicks (counts may differ); ``point_labels`` nested the
        same way, 1 (foreground, the default) or 0 (background) per click. SAM turns
        each region's clicks into masks and the one it rates best is kept (``mask_scores``).
        ``masks``: [R, H, W] (or one [H, W]) at the image's size, bool or 0/1 numbers, used as
        given (a label image whose values number the regions must first be split into one mask
        per value: ``labels == value``).
        A clicked or masked region is recognised from the token of its mask's tight box (the
        box prompts the head was trained on); its returned box is that box and its returned
        mask is the answer to the prompt itself.
        ``vocabulary``: names, or a built-in vocabulary name (``lvis``, ``coco``, ``objects365``).
        ``topk``: pairs kept per region (capped at the vocabulary size).
        ``with_attention``: also return, in ``result.extras["attention"]``, each region's
        last-block cross-attention over the CLIP patch grid, float [R, g, g] (RegionSpot heads
        with CLIP vision only). Click-prompted results carry their clicks in
        ``result.extras["clicks"]`` (per region: points float [P, 2], labels int [P]), which
        ``--viz`` draws. ``together``: see the class docstring.
        """
        encoded = self._encoded("predict")
        if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)) or topk < 1:
            raise ValueError(f"topk must be a positive integer, got {topk!r}")
        if with_attention and not self.model.has_attention:
            raise ValueError(f"with_attention needs a RegionSpot head with CLIP vision; {self.model.method!r} "
                             "has no attention maps")
        if vocabulary is None:
            raise ValueError("give a vocabulary: names, or a built-in vocabulary name (lvis, coco, objects365)")
        names = validate_vocabulary(parse_vocabulary(vocabulary))
        if boxes is not None and points is None and masks is None and not len(as_box_array(boxes)):
            return _no_regions(names, min(int(topk), len(names)), encoded.size, with_masks)
        regions = self._prompted_regions(encoded, boxes, points, point_labels, masks)
        return self._recognize(encoded, regions, names, int(topk), with_masks, with_attention, together)

    def _prompted_regions(self, encoded: EncodedImage, boxes: Any, points: Any, point_labels: Any,
                          masks: Any) -> PromptedRegions:
        """The regions of one ``predict`` call as boxes (and, for clicks and masks, their masks)."""
        given = [name for name, value in (("boxes", boxes), ("points", points), ("masks", masks)) if value is not None]
        if len(given) != 1:
            raise PromptError(f"give the regions as boxes, points or masks (one kind per call), got "
                              f"{' and '.join(given) if given else 'none'}")
        if boxes is not None:
            return PromptedRegions(validate_boxes(boxes, encoded.size))
        if masks is not None:
            given_masks = as_mask_prompts(masks, encoded.size)
            return PromptedRegions(region_boxes(given_masks), given_masks)
        clicks = as_point_prompts(points, point_labels, encoded.size)
        decoder = PREDICT_CLICKS.require(self._predict_tokenizer())
        clicked = np.zeros((len(clicks), *encoded.size), dtype=bool)
        rated = np.zeros(len(clicks), dtype=np.float32)
        for rows, xy, labels in clicks.by_labels():  # one SAM batch per label sequence: each as if alone
            in_frame = torch.as_tensor(scale_xy(xy, encoded.size, encoded.frame_size), dtype=torch.float32)
            with autocast(self.model.device, self.model.precision):
                logits, ious = decoder.encode_point_prompts(encoded.sam, in_frame, torch.as_tensor(labels))
            best = ious.float().argmax(dim=1)
            picked = torch.arange(len(best))
            clicked[rows] = self._masks_at_image_size(logits[picked, best])
            rated[rows] = ious[picked, best].float().cpu().numpy()
        return PromptedRegions(region_boxes(clicked, clicks.first_foreground()), clicked, rated,
                               list(zip(clicks.points, clicks.labels, strict=True)))

    def _recognize(self, encoded: EncodedImage, regions: PromptedRegions, names: list[str], topk: int,
                   with_masks: bool, with_attention: bool, together: bool) -> RegionResult:
        """Tokens of the regions' boxes, the recognizer's scores against ``names``, top-``topk``."""
        model, tokenizer = self.model, self._predict_tokenizer()
        text = model.text_embeddings(names)
        need_box_masks = regions.masks is None and (with_masks or model.needs_region_masks)
        in_frame = scale_xyxy(regions.boxes, encoded.size, encoded.frame_size)
        with autocast(model.device, model.precision):
            tokens = tokenizer.encode_regions(
                encoded.sam, torch.as_tensor(in_frame, dtype=torch.float32), with_masks=need_box_masks)
            masks = regions.masks
            if masks is None and tokens.mask_logits is not None:
                masks = self._masks_at_image_size(tokens.mask_logits)
            scored = model.score_regions(RegionBatch(
                image=encoded.image, context=encoded.context, boxes=regions.boxes, tokens=tokens.tokens, masks=masks,
                text=text, together=together, with_attention=with_attention))
        scores = scored.scores.float().cpu().clamp_(0.0, 1.0)
        top_scores, top_ids = scores.topk(min(topk, len(names)), dim=-1)
        extras: dict[str, Any] = {} if regions.clicks is None else {"clicks": regions.clicks}
        if with_attention and scored.attention is not None:
            extras["attention"] = attention_to_grid(scored.attention.float().cpu())
        mask_scores = tokens.mask_scores.float().cpu().numpy() if regions.masks is None else regions.mask_scores
        return RegionResult(
            boxes=regions.boxes, topk_ids=top_ids.numpy(), topk_scores=top_scores.double().numpy(),
            vocabulary=names, image_size=encoded.size, masks=masks if with_masks else None,
            mask_scores=mask_scores, extras=extras,
        )

    @torch.inference_mode()
    def find(self, queries: str | Sequence[str], *, boxes: Any = None, threshold: float | Sequence[float] | None = None,
             nms_iou: float = 0.5, nms: str = "box", max_per_query: int = 100,
             proposals: AutoProposalConfig | None = None, with_masks: bool = True,
             progress: bool = False) -> RegionResult:
        """Every instance of each query name in the image: class-agnostic regions (``boxes``, or
        SAM's ``auto`` proposals made with ``proposals``), scored against the queries, kept where
        a query scores at least its ``threshold`` (one value, or one per query; default
        :data:`FIND_THRESHOLDS` for the recognizer's score kind), de-duplicated per query by
        non-maximum suppression at ``nms_iou`` (``nms="box"``: box IoU; ``"mask"``: IoU of the
        regions' SAM masks, so a part inside a whole is kept unless it covers most of it), at most
        ``max_per_query`` each. Returns one result, best first, whose vocabulary is the queries and
        whose single (name, score) per region is the query found. Masks are made only for the
        regions returned.

        A softmax recognizer's scores sum to one over the names it is given, so with queries
        alone every region would look like one of them; they are scored against the queries
        plus the names of :data:`FIND_DISTRACTORS` that are not queries instead."""
        encoded = self._encoded("find")
        if nms not in ("box", "mask"):
            raise ValueError(f"nms must be 'box' or 'mask', got {nms!r}")
        names = validate_vocabulary(parse_vocabulary(queries))
        thresholds = find_thresholds(threshold, len(names), self.model.score_kind)
        if boxes is None:
            boxes = self.propose(proposals, progress=progress).boxes
        if not len(as_box_array(boxes)):
            return _no_regions(names, 1, encoded.size, with_masks)
        vocabulary = find_vocabulary(names, self.model.score_kind)
        scored = self.predict(boxes, vocabulary, topk=len(vocabulary), with_masks=False)
        matrix = np.zeros((len(scored), len(vocabulary)))
        np.put_along_axis(matrix, scored.topk_ids, scored.topk_scores, axis=1)
        matrix = matrix[:, :len(names)]
        candidates = np.asarray((matrix >= thresholds).any(axis=1))
        overlaps = self._mask_overlaps(scored.boxes, candidates) if nms == "mask" else None
        found = select_instances(matrix, scored.boxes, thresholds, nms_iou, max_per_query, overlaps)
        picked_boxes = scored.boxes[found.regions]
        masks, mask_scores = None, None
        if with_masks:
            masks, mask_scores = self.segment(picked_boxes) if len(picked_boxes) else \
                (np.zeros((0, *encoded.size), dtype=bool), np.zeros(0))
        return RegionResult(boxes=picked_boxes, topk_ids=found.queries[:, None], topk_scores=found.scores[:, None],
                            vocabulary=names, image_size=encoded.size, masks=masks, mask_scores=mask_scores)

    @torch.inference_mode()
    def segment(self, boxes: Any) -> tuple[np.ndarray, np.ndarray]:
        """SAM's masks of ``boxes`` ([R, 4] xyxy image pixels, validated as ``predict``'s), without
        naming them: bool [R, H, W] at the image's size and SAM's predicted IoU float [R]."""
        encoded = self._encoded("segment")
        logits, scores = self._box_mask_logits(validate_boxes(boxes, encoded.size))
        return self._masks_at_image_size(logits), scores

    def _box_mask_logits(self, boxes: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Low-res mask logits [R, 256, 256] and predicted IoU [R] of validated image-pixel boxes."""
        assert self.encoded is not None
        in_frame = scale_xyxy(boxes, self.encoded.size, self.encoded.frame_size)
        with autocast(self.model.device, self.model.precision):
            tokens = self._predict_tokenizer().encode_regions(
                self.encoded.sam, torch.as_tensor(in_frame, dtype=torch.float32), with_masks=True)
        assert tokens.mask_logits is not None and tokens.mask_scores is not None
        return tokens.mask_logits, tokens.mask_scores.float().cpu().numpy()

    def _mask_overlaps(self, boxes: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Pairwise IoU [R, R] of the SAM masks of ``boxes`` [R, 4] where ``candidates`` [R] is
        True (0 elsewhere), measured on the decoder's low-resolution masks."""
        overlaps = np.zeros((len(boxes), len(boxes)))
        rows = np.flatnonzero(candidates)
        if rows.size:
            masks = np.concatenate([(self._box_mask_logits(boxes[chunk])[0] > 0).cpu().numpy()
                                    for chunk in np.array_split(rows, math.ceil(rows.size / self.region_batch_size))])
            overlaps[np.ix_(rows, rows)] = pairwise_mask_iou(masks)
        return overlaps

    @torch.inference_mode()
    def propose(self, config: AutoProposalConfig | None = None, progress: bool = False) -> Proposals:
        """Class-agnostic ``auto`` boxes of the current image from SAM's point-grid masks
        (:class:`regionspot.proposals.auto.RegionProposer`), best first, ready for ``predict``.
        The first call checks that the SAM adapter has ``encode_points``
        (:class:`~regionspot.proposals.auto.ProposalBackboneError` otherwise)."""
        encoded = self._encoded("propose")
        if self._proposer is None:
            self._proposer = RegionProposer(self.model.region_tokenizer)
        frame = self.model.input_frame(encoded.image) if config is not None and config.crop_layers else None
        proposals = self._proposer(encoded.sam, config, progress, image=frame)
        if encoded.frame_size != encoded.size:
            height, width = encoded.size
            boxes = np.clip(scale_xyxy(proposals.boxes, encoded.frame_size, encoded.size), 0, [width, height] * 2)
            proposals = Proposals(boxes=boxes, scores=proposals.scores)
        return proposals

    def _predict_tokenizer(self) -> RegionTokenizer:
        """The model's SAM side, its members and the text side's checked for ``predict`` on the
        first call (:data:`~regionspot.backbones.protocols.PREDICT_SAM`, ``PREDICT_TEXT``)."""
        if self._tokenizer is None:
            PREDICT_TEXT.require(self.model.text_embedder)
            self._tokenizer = PREDICT_SAM.require(self.model.region_tokenizer)
        return self._tokenizer

    def _encoded(self, what: str) -> EncodedImage:
        if self.encoded is None:
            raise PredictorStateError(f"call set_image(image) before {what}(...)")
        return self.encoded

    def _masks_at_image_size(self, mask_logits: torch.Tensor) -> np.ndarray:
        """Low-res logits [R, 256, 256] -> bool [R, H, W] (the SAM adapter's ``paste_masks``; no
        float logits at image size are made). SAM pastes at the input frame's size; a frame smaller
        or larger than the photo is then resized to it with nearest neighbour (the authors' rule)."""
        assert self.encoded is not None
        masks = self._predict_tokenizer().paste_masks(self.encoded.sam, mask_logits).cpu().numpy()
        return nearest_resize_masks(masks, self.encoded.size)


def _no_regions(names: list[str], topk: int, image_size: tuple[int, int], with_masks: bool) -> RegionResult:
    """The result of a call given no regions (a detector that found nothing): zero rows, ``topk``
    columns, masks ``[0, H, W]`` when asked for."""
    masks, mask_scores = (np.zeros((0, *image_size), dtype=bool), np.zeros(0)) if with_masks else (None, None)
    return RegionResult(boxes=np.zeros((0, 4)), topk_ids=np.zeros((0, topk), dtype=np.int64),
                        topk_scores=np.zeros((0, topk)), vocabulary=names, image_size=image_size, masks=masks,
                        mask_scores=mask_scores)


def attention_to_grid(patches: torch.Tensor) -> np.ndarray:
    """Cross-attention [R, P] over the CLIP patch tokens -> [R, g, g] over the patch grid (each
    map rescaled to sum to 1)."""
    side = math.isqrt(patches.shape[1])
    if side * side != patches.shape[1]:
        raise ValueError(f"{patches.shape[1]} patch tokens do not form a square grid")
    grid = patches.reshape(-1, side, side).float()
    grid = grid / grid.sum(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    return grid.numpy()
