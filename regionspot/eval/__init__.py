"""Evaluation: COCO-style box/mask AP with LVIS federated rules (numpy, no lvis package).

    from regionspot.eval import DetectionEvaluator
    evaluator = DetectionEvaluator("lvis_v1_val.json", iou_type="bbox")   # federated: auto
    for image_id, detections in predictions:
        evaluator.process(image_id, detections)     # COCO results dicts, bbox xywh
    metrics = evaluator.evaluate()                  # {"AP": ..., "APr": ..., "AR@300": ...}
"""

from __future__ import annotations

from regionspot.eval.average_precision import (
    APParams,
    APResult,
    Detections,
    GroundTruth,
    box_iou_xywh,
    evaluate,
    match_detections,
    per_category_ap,
    precision_recall,
    summarize,
    top_per_category,
    top_per_image,
)
from regionspot.eval.evaluator import (
    DetectionEvaluator,
    detections_from_results,
    evaluate_results_file,
    fixed_ap,
    format_metrics,
    ground_truth_from_dataset,
    resolve_frequencies,
)

__all__ = [
    "APParams",
    "APResult",
    "DetectionEvaluator",
    "Detections",
    "GroundTruth",
    "box_iou_xywh",
    "detections_from_results",
    "evaluate",
    "evaluate_results_file",
    "fixed_ap",
    "format_metrics",
    "ground_truth_from_dataset",
    "match_detections",
    "per_category_ap",
    "precision_recall",
    "resolve_frequencies",
    "summarize",
    "top_per_category",
    "top_per_image",
]
