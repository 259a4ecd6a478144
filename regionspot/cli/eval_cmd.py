"""``regionspot eval --data ANN.json --detections RESULTS.json --out DIR``: evaluate any COCO
results file (ours or another model's) with COCO or LVIS rules, and write JSON, Markdown and a
per-category CSV.

Running a RegionSpot checkpoint or the CLIP baselines over a dataset (``--checkpoint``,
``--method``, ``--boxes``) is not part of this command yet.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

from regionspot.datasets.coco_format import DatasetError


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "eval", help="AP of a COCO results file (COCO or LVIS rules)",
        description="Box (and with --masks, mask) AP, AP50, AP75, APs/m/l and, with LVIS frequency tags, "
                    "APr/APc/APf of a COCO-format results file. LVIS federated rules apply automatically "
                    "when the annotation has neg_category_ids.",
    )
    parser.add_argument("--data", required=True, help="COCO/LVIS-format annotation JSON")
    parser.add_argument("--detections", required=True, help="COCO results JSON (a list of detections)")
    parser.add_argument("--out", help="folder for metrics.json, report.md and per_category.csv")
    parser.add_argument("--masks", action="store_true", help="also mask AP (detections need 'segmentation')")
    parser.add_argument("--fixed-ap", type=int, metavar="BUDGET",
                        help="also LVIS fixed AP with this per-category budget (e.g. 10000)")
    parser.add_argument("--federated", action=argparse.BooleanOptionalAction, default=None,
                        help="force LVIS federated rules on or off (default: from the annotation)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from regionspot.eval.evaluator import evaluator_for_results, fixed_ap, format_metrics

    annotations = _read_json(args.data, "annotation")
    detections = _read_json(args.detections, "detections")
    if not isinstance(detections, list):
        raise DatasetError(f"{args.detections}: a COCO results file is a JSON list of detections")
    reports: dict[str, Any] = {}
    for iou_type in ("bbox", "segm") if args.masks else ("bbox",):
        try:
            evaluator = evaluator_for_results(annotations, detections, iou_type=iou_type, federated=args.federated)
            metrics = evaluator.evaluate()
        except (ValueError, KeyError) as exc:  # malformed detections: the user's file, not a crash
            raise DatasetError(f"{args.detections}: {exc}") from None
        reports[iou_type] = {"federated": evaluator.federated, "metrics": metrics,
                             "per_category": evaluator.per_category()}
        print(f"{'box' if iou_type == 'bbox' else 'mask'} AP ({_rules(evaluator.federated)}):")
        print(format_metrics(metrics))
    if args.fixed_ap:
        reports["fixed_ap"] = {"budget": args.fixed_ap,
                               "metrics": fixed_ap(annotations, detections, args.fixed_ap,
                                                   federated=args.federated)}
        print(f"fixed AP (top {args.fixed_ap} detections per category over the dataset):")
        print(format_metrics(reports["fixed_ap"]["metrics"]))
    if args.out:
        write_reports(Path(args.out), reports, args)
        print(f"wrote {args.out}/metrics.json, report.md, per_category.csv")
    return 0


def _read_json(path: str, what: str) -> Any:
    file = Path(path)
    if not file.is_file():
        raise DatasetError(f"{what} file not found: {file}")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{file} is not valid JSON: {exc}") from None


def _rules(federated: bool) -> str:
    return "LVIS federated rules, at most 300 detections per image" if federated else \
        "COCO rules, at most 100 detections per image and category"


def write_reports(folder: Path, reports: dict[str, Any], args: argparse.Namespace) -> None:
    """metrics.json (everything), report.md (a table per AP type, with the protocol), and
    per_category.csv (box AP per category)."""
    folder.mkdir(parents=True, exist_ok=True)
    document = {"annotations": str(args.data), "detections": str(args.detections), **reports}
    (folder / "metrics.json").write_text(json.dumps(document, indent=1) + "\n")
    lines = ["# Evaluation", "", f"- annotations: `{args.data}`", f"- detections: `{args.detections}`",
             "- protocol: the detections as given (their boxes, labels and scores); "
             + _rules(reports["bbox"]["federated"]), ""]
    for key in ("bbox", "segm", "fixed_ap"):
        if key in reports:
            metrics = reports[key]["metrics"]
            lines += [f"## {dict(bbox='Box AP', segm='Mask AP', fixed_ap='Fixed AP')[key]}", "",
                      "| " + " | ".join(metrics) + " |", "|" + "---:|" * len(metrics),
                      "| " + " | ".join(_percent(v) for v in metrics.values()) + " |", ""]
    (folder / "report.md").write_text("\n".join(lines))
    rows = reports["bbox"]["per_category"]
    with (folder / "per_category.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["id"])
        writer.writeheader()
        writer.writerows(rows)


def _percent(value: float) -> str:
    return f"{100 * value:.2f}" if value == value else "n/a"
