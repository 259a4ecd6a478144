"""Detection evaluator with detectron2's interface (``reset`` / ``process`` / ``evaluate``):
COCO semantics for COCO-style annotations, LVIS v1 federated semantics for LVIS-style ones, box or
mask AP, APr/APc/APf when categories carry LVIS frequency tags, and the LVIS "fixed AP" protocol.

Inputs are COCO-format: the annotation file (``images``, ``annotations``, ``categories``; LVIS adds
``neg_category_ids`` and ``not_exhaustive_category_ids`` per image and ``frequency`` per category)
and results ``{"image_id", "category_id", "bbox": [x, y, w, h], "score", "segmentation": RLE}``.
The numbers come from :mod:`regionspot.eval.average_precision`; see its docstring for the rules.

Inputs are held to what ``regionspot eval`` accepts (:func:`checked_annotation`,
:func:`checked_results`): what would change AP without a sign (a NaN score or box, a malformed
entry, an unknown image or category) is a :class:`~regionspot.datasets.coco_format.DatasetError`
(a ValueError) naming the file, or the input given in memory, with the count and the first entry.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from regionspot.eval.average_precision import (
    APParams,
    APResult,
    Detections,
    GroundTruth,
    evaluate,
    per_category_ap,
    summarize,
    top_per_category,
    top_per_image,
)

COCO_MAX_DETS = (1, 10, 100)
LVIS_MAX_DETS = (300,)
_AUTO = "auto"


def load_json(source: Mapping[Any, Any] | Sequence[Any] | str | Path) -> Any:
    """A parsed JSON document, or ``source`` itself when it is already a mapping / list."""
    if isinstance(source, (str, Path)):
        with open(source, encoding="utf-8") as handle:
            return json.load(handle)
    return source


#: How an input given in memory, not as a file, is named in an error.
IN_MEMORY_ANNOTATION = "annotation (in memory)"
IN_MEMORY_RESULTS = "results (in memory)"


def checked_annotation(annotations: Mapping[str, Any] | str | Path, *, masks: bool = False) -> Mapping[str, Any]:
    """The annotation held to :func:`~regionspot.eval.protocol.check_ground_truth` (``masks``:
    every annotation needs a segmentation). A file is read by
    :func:`~regionspot.datasets.coco_format.read_annotations`, named in errors and warned about
    (annotations the evaluation leaves out). A document given in memory gets the same refusals,
    named :data:`IN_MEMORY_ANNOTATION`, and no warnings: they are its reader's to give (``regionspot
    eval`` and the evaluation runner check the file themselves before they pass its document)."""
    # imported here: these modules import this one (and torch)
    from regionspot.datasets.coco_format import coco_document, read_annotations
    from regionspot.eval.protocol import check_ground_truth

    if isinstance(annotations, (str, Path)):
        path = Path(annotations)
        document = read_annotations(path)
        check_ground_truth(document, path, masks=masks)
        return document
    check_ground_truth(coco_document(annotations, IN_MEMORY_ANNOTATION), IN_MEMORY_ANNOTATION, masks=masks,
                       warn=False)
    return annotations


def checked_results(results: Sequence[Mapping[str, Any]] | str | Path, dataset: Mapping[str, Any], *,
                    masks: bool = False) -> list[dict[str, Any]]:
    """A COCO results list or JSON file held to :func:`~regionspot.eval.protocol.check_results`
    against the annotation ``dataset`` (``masks``: every detection needs a segmentation); errors
    name the file, or :data:`IN_MEMORY_RESULTS`."""
    # imported here: these modules import this one (and torch)
    from regionspot.datasets.coco_format import read_json
    from regionspot.eval.protocol import check_results

    if isinstance(results, (str, Path)):
        path = Path(results)
        return check_results(read_json(path, "detections"), dataset, path, masks=masks)
    given = list(results) if isinstance(results, Sequence) else results
    return check_results(given, dataset, IN_MEMORY_RESULTS, masks=masks)


def is_federated(dataset: Mapping[str, Any]) -> bool:
    """True when the annotation is LVIS-style (an image carries ``neg_category_ids``)."""
    return any("neg_category_ids" in image for image in dataset.get("images", []))


def to_rle(segmentation: Any, height: int, width: int) -> dict:
    """Polygons (list of flat [x0, y0, x1, y1, ...] lists), uncompressed RLE (``counts`` a list)
    or compressed RLE -> one compressed RLE dict for an image of ``height`` x ``width``."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation.get("counts"), list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation


def ground_truth_from_dataset(dataset: Mapping[str, Any], *, iou_type: str, federated: bool,
                              drop_zero_area: bool | None = None) -> GroundTruth:
    """COCO/LVIS annotation dict -> :class:`GroundTruth`. ``area`` comes from the annotation (box
    area w*h when absent). Crowd (``iscrowd``) annotations are crowd and ignored; in COCO mode that
    is the only ignore flag (pycocotools overrides a stored ``ignore`` with ``iscrowd``), in
    federated mode a true ``ignore`` field also ignores (as lvis-api). ``drop_zero_area`` (None:
    ``federated``): leave out annotations of area 0, as lvis-api does (they then neither count as
    ground truth nor make their category positive in the image); pycocotools keeps them."""
    drop = federated if drop_zero_area is None else drop_zero_area
    anns = [a for a in dataset["annotations"] if not drop or _area(a) > 0]
    boxes = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    areas = np.array([_area(a) for a in anns], dtype=np.float64)
    crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
    ignore = crowd | (np.array([bool(a.get("ignore", 0)) for a in anns], dtype=bool) if federated else crowd)
    masks = None
    if iou_type == "segm":
        sizes = {img["id"]: (img["height"], img["width"]) for img in dataset["images"]}
        if any("segmentation" not in a for a in anns):
            raise ValueError("iou_type='segm' needs a 'segmentation' in every annotation")
        masks = [to_rle(a["segmentation"], *sizes[a["image_id"]]) for a in anns]
    images = dataset["images"]
    return GroundTruth(
        image_ids=np.array([a["image_id"] for a in anns], dtype=np.int64),
        category_ids=np.array([a["category_id"] for a in anns], dtype=np.int64),
        boxes=boxes, areas=areas, crowd=crowd, ignore=ignore, masks=masks,
        images=np.unique(np.array([img["id"] for img in images], dtype=np.int64)),
        categories=np.unique(np.array([c["id"] for c in dataset["categories"]], dtype=np.int64)),
        neg_category_ids={img["id"]: frozenset(img.get("neg_category_ids", ())) for img in images},
        not_exhaustive_category_ids={img["id"]: frozenset(img.get("not_exhaustive_category_ids", ()))
                                     for img in images},
    )


def _area(annotation: Mapping[str, Any]) -> float:
    """An annotation's ``area``, else its box area w*h."""
    return float(annotation.get("area", annotation["bbox"][2] * annotation["bbox"][3]))


def detections_from_results(results: Sequence[Mapping[str, Any]], gt: GroundTruth,
                            image_sizes: Mapping[int, tuple[int, int]], *, iou_type: str,
                            mask_area: bool = False, known: tuple[set[int], set[int]] | None = None) -> Detections:
    """COCO results -> :class:`Detections`. A missing ``bbox`` is taken from the mask. A detection's
    area is its box area w*h when it has a ``bbox``, else its mask area: what pycocotools' and
    lvis-api's ``loadRes`` do (they decide on the first result, this on each). ``mask_area`` (with
    ``iou_type="segm"``): the mask area always, as the LVIS fixed-AP script, which removes the
    ``bbox`` of every result before mask AP. ``known``: the annotation's (image ids, category ids),
    when the caller holds them already. Raises ValueError for an image or category unknown to the
    annotation, or a missing mask when ``iou_type="segm"``."""
    known_images, known_cats = known or (set(gt.images.tolist()), set(gt.categories.tolist()))
    boxes, areas = [], []
    masks: list[dict] = []  # every detection's when iou_type="segm"
    for det in results:
        if det["image_id"] not in known_images or det["category_id"] not in known_cats:
            raise ValueError(f"detection for unknown image {det['image_id']} or category {det['category_id']}")
        rle = None
        if "segmentation" in det and (iou_type == "segm" or "bbox" not in det):
            rle = to_rle(det["segmentation"], *image_sizes[det["image_id"]])
        elif iou_type == "segm" or "bbox" not in det:
            raise ValueError(f"detection without {'segmentation' if iou_type == 'segm' else 'bbox'}: {det}")
        box = det["bbox"] if "bbox" in det else mask_utils.toBbox(rle).tolist()
        boxes.append(box)
        by_mask = rle is not None and (mask_area or "bbox" not in det)
        areas.append(float(mask_utils.area(rle)) if by_mask else box[2] * box[3])
        if rle is not None:
            masks.append(rle)
    return Detections(
        image_ids=np.array([d["image_id"] for d in results], dtype=np.int64),
        category_ids=np.array([d["category_id"] for d in results], dtype=np.int64),
        boxes=np.array(boxes, dtype=np.float64).reshape(-1, 4),
        scores=np.array([d["score"] for d in results], dtype=np.float64),
        areas=np.array(areas, dtype=np.float64),
        masks=masks if iou_type == "segm" else None,
    )


def concatenate_detections(parts: Sequence[Detections], *, masks: bool) -> Detections:
    """The detections of ``parts`` one after another (``masks``: keep their RLEs)."""
    def joined(name: str, shape: tuple[int, ...]) -> np.ndarray:
        arrays = [getattr(part, name) for part in parts]
        return np.concatenate(arrays) if arrays else np.zeros(shape, dtype=np.float64)

    return Detections(
        image_ids=joined("image_ids", (0,)).astype(np.int64),
        category_ids=joined("category_ids", (0,)).astype(np.int64),
        boxes=joined("boxes", (0, 4)), scores=joined("scores", (0,)), areas=joined("areas", (0,)),
        masks=[rle for part in parts for rle in (part.masks or [])] if masks else None)


def resolve_frequencies(categories: Sequence[Mapping[str, Any]],
                        frequencies: Mapping[int, str] | Sequence[Mapping[str, Any]] | str | Path | None
                        ) -> dict[int, str] | None:
    """Category id -> 'r' | 'c' | 'f'. From ``frequencies`` when given: a mapping, a list of
    category dicts with ``id`` and ``frequency``, or a JSON file holding such a list (or a dict with
    ``categories``, e.g. LVIS ``lvis_v1_categories.json``); else from the annotation's categories;
    None when neither has tags."""
    source: Any = categories if frequencies is None else load_json(frequencies)
    if isinstance(source, Mapping) and "categories" in source:
        source = source["categories"]
    if isinstance(source, Mapping):
        table = {int(k): str(v) for k, v in source.items()}
    else:
        table = {int(c["id"]): str(c["frequency"]) for c in source if "frequency" in c}
    bad = {v for v in table.values() if v not in ("r", "c", "f")}
    if bad:
        raise ValueError(f"frequency tags must be 'r', 'c' or 'f', got {sorted(bad)}")
    return table or None


class DetectionEvaluator:
    """Accumulates COCO-format detections image by image and computes box or mask AP.

    ``annotations``: COCO/LVIS dict or JSON path. ``iou_type``: "bbox" or "segm". ``federated``:
    LVIS rules (None: on when an image has ``neg_category_ids``). ``max_dets``: AR limits, default
    (1, 10, 100) for COCO (per image and category, as pycocotools) and (300,) for LVIS.
    ``max_dets_per_image``: keep each image's top-N detections over all categories before
    evaluating ("auto": ``max_dets[-1]`` when federated, as LVIS, none for COCO, as pycocotools).
    ``per_category_budget``: keep each category's top-N over the dataset (the fixed-AP protocol).
    ``drop_zero_area``: leave out detections and ground truth of area 0 (None: when federated, as
    lvis-api, whose evaluation keeps only areas > 0; pycocotools keeps them, so a zero-area
    detection is a false positive there). Detections are dropped after the caps above, in whose
    counts they take places (as in lvis-api). ``mask_area``: with ``iou_type="segm"``, a
    detection's area is its mask's even when it carries a ``bbox`` (see
    :func:`detections_from_results`). ``frequencies``: see :func:`resolve_frequencies`; gives
    APr/APc/APf.
    Metrics are evaluated over the images passed to :meth:`process` since the last :meth:`reset`.
    The annotation is held to :func:`checked_annotation` (DatasetError, a ValueError, naming it).
    """

    def __init__(self, annotations: Mapping[str, Any] | str | Path, *, iou_type: str = "bbox",
                 max_dets: Sequence[int] | None = None, federated: bool | None = None,
                 frequencies: Mapping[int, str] | Sequence[Mapping[str, Any]] | str | Path | None = None,
                 max_dets_per_image: int | str | None = _AUTO, per_category_budget: int | None = None,
                 drop_zero_area: bool | None = None, mask_area: bool = False) -> None:
        if iou_type not in ("bbox", "segm"):
            raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
        self.dataset = checked_annotation(annotations, masks=iou_type == "segm")
        self.iou_type = iou_type
        self.federated = is_federated(self.dataset) if federated is None else bool(federated)
        limits = tuple(int(d) for d in (max_dets or (LVIS_MAX_DETS if self.federated else COCO_MAX_DETS)))
        if not limits or list(limits) != sorted(limits) or limits[0] < 1:
            raise ValueError(f"max_dets must be increasing positive integers, got {limits}")
        self.params = APParams(max_dets=limits, federated=self.federated)
        if isinstance(max_dets_per_image, str):
            if max_dets_per_image != _AUTO:
                raise ValueError(f"max_dets_per_image must be an integer, None or 'auto', got {max_dets_per_image!r}")
            max_dets_per_image = limits[-1] if self.federated else None
        self.max_dets_per_image = max_dets_per_image
        self.per_category_budget = per_category_budget
        self.drop_zero_area = self.federated if drop_zero_area is None else bool(drop_zero_area)
        self.mask_area = mask_area
        self.frequencies = resolve_frequencies(self.dataset["categories"], frequencies)
        self.gt = ground_truth_from_dataset(self.dataset, iou_type=iou_type, federated=self.federated,
                                            drop_zero_area=self.drop_zero_area)
        self._sizes = {img["id"]: (img["height"], img["width"]) for img in self.dataset["images"]}
        self._names = {c["id"]: c.get("name", str(c["id"])) for c in self.dataset["categories"]}
        self._known = (set(self.gt.images.tolist()), set(self.gt.categories.tolist()))
        self.result: APResult | None = None
        self.reset()

    def reset(self) -> None:
        """Forget all processed images and detections."""
        self._parts: dict[int, list[Detections]] = {}  # image id -> its detections, as arrays
        self.result = None

    @property
    def detections_held(self) -> int:
        """How many detections the evaluator holds (as arrays: 64 bytes each, plus an RLE for mask AP)."""
        return sum(len(part) for parts in self._parts.values() for part in parts)

    def process(self, image_id: int, detections: Iterable[Mapping[str, Any]]) -> None:
        """Add one image's detections (COCO results dicts; ``image_id`` may be left out). The image
        counts as evaluated even with no detections. ValueError for an image the annotation does
        not list, a detection of another image, a category the annotation does not list or a
        missing mask (mask AP); DatasetError (a ValueError) naming the image for detections
        :func:`~regionspot.eval.protocol.check_detections` refuses (a NaN score or box, a
        malformed entry). The detections are kept as arrays, not as the dicts given, so an
        evaluation over a large dataset holds about 64 bytes per detection (plus its RLE for mask AP)."""
        # imported here: the protocol imports this module (and torch)
        from regionspot.eval.protocol import check_detections

        if image_id not in self._sizes:
            raise ValueError(f"image {image_id} is not in the annotation")
        filled: list[Any] = []
        for det in detections:
            if isinstance(det, Mapping):
                if det.get("image_id", image_id) != image_id:
                    raise ValueError(f"detection of image {det['image_id']!r} passed for image {image_id}")
                det = {**det, "image_id": image_id}
            filled.append(det)
        self._add(image_id, check_detections(filled, f"detections of image {image_id}"))

    def _add(self, image_id: int, detections: list[dict[str, Any]]) -> None:
        """Add one image's checked detections."""
        parts = self._parts.setdefault(int(image_id), [])
        if detections:
            parts.append(detections_from_results(detections, self.gt, self._sizes, iou_type=self.iou_type,
                                                 mask_area=self.mask_area, known=self._known))

    def evaluate(self) -> dict[str, float]:
        """Metrics over the processed images: AP, AP50, AP75, APs, APm, APl, AR@<d> for each
        max_dets d, ARs, ARm, ARl, and APr, APc, APf when frequencies are known (fractions, NaN
        where nothing can be measured)."""
        if not self._parts:
            raise RuntimeError("no image was processed: call process() before evaluate()")
        # in image-id order, whatever order the images came in (only the per-category budget's ties see it)
        dt = concatenate_detections([part for image in sorted(self._parts) for part in self._parts[image]],
                                    masks=self.iou_type == "segm")
        if self.per_category_budget is not None:
            dt = _kept(dt, top_per_category(dt, self.per_category_budget))
        if self.max_dets_per_image is not None:
            dt = _kept(dt, top_per_image(dt, self.max_dets_per_image))
        if self.drop_zero_area:
            dt = _kept(dt, np.flatnonzero(dt.areas > 0))
        self.result = evaluate(self.gt, dt, self.params, np.array(sorted(self._parts), dtype=np.int64))
        return summarize(self.result, self.frequencies)

    def per_category(self) -> list[dict[str, Any]]:
        """After :meth:`evaluate`: one dict per category {id, name, frequency, AP, num_gt} (AP NaN
        and left out of the averages when the evaluated images hold no non-ignored ground truth)."""
        if self.result is None:
            raise RuntimeError("call evaluate() first")
        aps = per_category_ap(self.result)
        freq = self.frequencies or {}
        columns = (self.result.categories, aps, self.result.num_gt[:, 0])
        return [{"id": int(c), "name": self._names[int(c)], "frequency": freq.get(int(c)), "AP": float(ap),
                 "num_gt": int(n)} for c, ap, n in zip(*columns, strict=True)]


def _kept(dt: Detections, index: np.ndarray) -> Detections:
    """``dt.take(index)`` for ascending indices ``index``; ``dt`` itself when they keep every
    detection (no copy: on a large run the arrays are the evaluation's largest part)."""
    return dt if len(index) == len(dt) else dt.take(index)


def evaluator_for_results(annotations: Mapping[str, Any] | str | Path,
                          results: Sequence[Mapping[str, Any]] | str | Path, *, iou_type: str = "bbox",
                          **options: Any) -> DetectionEvaluator:
    """A :class:`DetectionEvaluator` that has processed a COCO results list or JSON file over every
    image of the annotation (as pycocotools does); call ``evaluate()`` on it. Both inputs are held
    to what ``regionspot eval`` accepts (:func:`checked_annotation`, :func:`checked_results`;
    DatasetError, a ValueError, naming the file or the input in memory)."""
    evaluator = DetectionEvaluator(annotations, iou_type=iou_type, **options)
    by_image: dict[int, list[dict[str, Any]]] = {int(i): [] for i in evaluator.gt.images}
    for det in checked_results(results, evaluator.dataset, masks=iou_type == "segm"):
        by_image[det["image_id"]].append(det)
    for image_id, dets in by_image.items():
        evaluator._add(image_id, dets)
    return evaluator


def evaluate_results_file(annotations: Mapping[str, Any] | str | Path,
                          results: Sequence[Mapping[str, Any]] | str | Path, *, iou_type: str = "bbox",
                          output: str | Path | None = None, **options: Any) -> dict[str, float]:
    """Evaluate a COCO results list or JSON file over every image of the annotation, both held to
    what ``regionspot eval`` accepts (see :func:`evaluator_for_results`). ``options`` go to
    :class:`DetectionEvaluator`. When ``output`` is given, writes JSON
    ``{"metrics": ..., "per_category": ...}`` there."""
    evaluator = evaluator_for_results(annotations, results, iou_type=iou_type, **options)
    metrics = evaluator.evaluate()
    if output is not None:
        payload = {"iou_type": iou_type, "federated": evaluator.federated, "metrics": metrics,
                   "per_category": evaluator.per_category()}
        Path(output).write_text(json.dumps(payload, indent=1), encoding="utf-8")
    return metrics


def fixed_ap(annotations: Mapping[str, Any] | str | Path, results: Sequence[Mapping[str, Any]] | str | Path,
             per_category_budget: int = 10000, *, iou_type: str = "bbox", federated: bool | None = None,
             frequencies: Mapping[int, str] | Sequence[Mapping[str, Any]] | str | Path | None = None,
             drop_zero_area: bool | None = None) -> dict[str, float]:
    """The LVIS "fixed AP" protocol of Dave et al., "Evaluating large-vocabulary object detectors:
    the devil is in the details" (2021): keep each category's ``per_category_budget`` highest-scoring
    detections over the whole dataset, with no per-image cap, then compute (federated, for LVIS) AP.
    Unlike the 300-per-image cap, this does not reward a detector for trading rare categories'
    detections against frequent ones in the same image. Mask fixed AP (``iou_type="segm"``) sizes
    detections by their mask area, as the authors' script (it removes each result's ``bbox``);
    ``drop_zero_area`` as :class:`DetectionEvaluator` (zero-area detections take places in the
    budget). The recall key is ``AR@<budget>/cat``. Over every image of the annotation; to feed
    images one at a time, use :func:`fixed_ap_evaluator` and :func:`fixed_ap_metrics`."""
    evaluator = evaluator_for_results(annotations, results, iou_type=iou_type,
                                      **fixed_ap_options(per_category_budget, iou_type, federated, frequencies,
                                                         drop_zero_area))
    return fixed_ap_metrics(evaluator)


def fixed_ap_options(per_category_budget: int, iou_type: str, federated: bool | None,
                     frequencies: Mapping[int, str] | Sequence[Mapping[str, Any]] | str | Path | None,
                     drop_zero_area: bool | None) -> dict[str, Any]:
    """The :class:`DetectionEvaluator` options of the fixed-AP protocol (see :func:`fixed_ap`)."""
    return dict(federated=federated, frequencies=frequencies, max_dets=(per_category_budget,), max_dets_per_image=None,
                per_category_budget=per_category_budget, drop_zero_area=drop_zero_area, mask_area=iou_type == "segm")


def fixed_ap_evaluator(annotations: Mapping[str, Any] | str | Path, per_category_budget: int = 10000, *,
                       iou_type: str = "bbox", federated: bool | None = None,
                       frequencies: Mapping[int, str] | Sequence[Mapping[str, Any]] | str | Path | None = None,
                       drop_zero_area: bool | None = None) -> DetectionEvaluator:
    """A :class:`DetectionEvaluator` under the fixed-AP protocol (see :func:`fixed_ap`), to be fed
    image by image with ``process``; its numbers come from :func:`fixed_ap_metrics`."""
    return DetectionEvaluator(annotations, iou_type=iou_type,
                              **fixed_ap_options(per_category_budget, iou_type, federated, frequencies, drop_zero_area))


def fixed_ap_metrics(evaluator: DetectionEvaluator) -> dict[str, float]:
    """``evaluator.evaluate()`` of a fixed-AP evaluator, with the recall key ``AR@<budget>/cat``."""
    budget = evaluator.per_category_budget
    return {(f"AR@{budget}/cat" if k == f"AR@{budget}" else k): v for k, v in evaluator.evaluate().items()}


def format_metrics(metrics: Mapping[str, float]) -> str:
    """A two-line table of metrics in percent, e.g. for printing."""
    names = list(metrics)
    values = [f"{100 * metrics[n]:.2f}" if np.isfinite(metrics[n]) else "nan" for n in names]
    widths = [max(len(n), len(v)) for n, v in zip(names, values, strict=True)]
    return "\n".join(" | ".join(s.rjust(w) for s, w in zip(row, widths, strict=True)) for row in (names, values))
