"""``regionspot eval``: box (and mask) AP with COCO or LVIS rules, in two modes.

- ``--data ANN.json --detections RESULTS.json``: evaluate any COCO results file (ours or another
  model's) as given. Both files are checked first, and a fault is an error naming the file, the
  first faulty entry and how many share it (see
  :func:`~regionspot.eval.protocol.check_ground_truth` and
  :func:`~regionspot.eval.protocol.check_results` for what is refused and what only warned
  about).
- ``--data ANN.json [--checkpoint CKPT] [--boxes gt|auto|PROPOSALS.json]
  [--method regionspot|clip-crop|clip-mask-crop]``: run a model (without a checkpoint the
  zero-shot recognizer) or a CLIP baseline over the dataset's images by the paper's protocol (top
  (box, category) pairs per image, evaluator cap), also under ``torchrun`` (images split across
  processes, results merged on rank 0).

Both print the metrics and, with ``--out DIR``, write metrics.json, report.md (the model, or
the detections file, then the protocol) and per_category.csv; a model run adds pr_curves_*.png
and examples/ (ground truth beside the predictions).
``--set KEY=VALUE`` changes the model config (``sam.``, ``clip.``, ``text.``, ``fusion.`` keys,
e.g. ``text.templates=single``) or the evaluation config (any other key, e.g.
``protocol.pairs_per_image=300`` or ``auto.points_per_side=8``); see regionspot.eval.config for
which model ablations need a checkpoint trained with them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from regionspot.cli.arguments import check_output_path, non_negative_int, positive_int
from regionspot.cli.dataset_args import add_run_options, config_from_args, model_flags_given
from regionspot.config import ConfigError
from regionspot.datasets.coco_format import DatasetError, read_annotations, read_json


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "eval", help="AP of a model, a CLIP baseline or a COCO results file (COCO or LVIS rules)",
        description="Box (and with --masks, mask) AP, AP50, AP75, APs/m/l and, with LVIS frequency tags, "
                    "APr/APc/APf, of a COCO results file (--detections) or of a model run over the dataset "
                    "(--checkpoint; without one the zero-shot recognizer). LVIS federated rules apply "
                    "automatically when the annotation has neg_category_ids.",
    )
    parser.add_argument("--data", help="COCO/LVIS-format annotation JSON")
    parser.add_argument("--detections", help="COCO results JSON (a list of detections) to evaluate as given "
                                             "(no model runs)")
    parser.add_argument("--out", help="folder for metrics.json, report.md, per_category.csv (and pictures)")
    parser.add_argument("--masks", action="store_true", default=None,
                        help="also mask AP (a model run: SAM masks of the box prompts)")
    parser.add_argument("--fixed-ap", type=positive_int, metavar="BUDGET",
                        help="also LVIS fixed AP with this per-category budget (e.g. 10000), box and with "
                             "--masks mask")
    parser.add_argument("--federated", action=argparse.BooleanOptionalAction, default=None,
                        help="force LVIS federated rules on or off (default: from the annotation)")
    parser.add_argument("--frequencies", metavar="FILE",
                        help="LVIS r/c/f tags per category id (e.g. lvis_v1_categories.json) for APr/APc/APf")
    add_run_options(parser)
    parser.add_argument("--pairs-per-image", type=positive_int, metavar="N",
                        help="(box, category) pairs kept per image (default 900)")
    parser.add_argument("--max-dets-per-image", type=non_negative_int, metavar="N",
                        help="evaluator cap over all categories (default: the rules', LVIS 300; 0: none)")
    parser.add_argument("--keep-zero-area", action="store_true", default=None,
                        help="under LVIS rules: keep detections and ground truth of area 0 (false positives, as "
                             "pycocotools) instead of leaving them out as lvis-api does")
    parser.add_argument("--examples", type=non_negative_int, metavar="N", help="example pictures drawn (default 4)")
    parser.add_argument("--save-detections", action="store_true", default=None,
                        help="also write the detections as OUT/results.json")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    check_output_path("--out", args.out, folder=True)
    if args.detections:
        given = model_flags_given(args) + (["--method"] if args.method else [])
        if given:
            raise ConfigError(f"--detections evaluates a results file as given; {', '.join(given)} would run a "
                              "model: give one or the other")
        return run_results_file(args)
    return run_model(args)


def run_model(args: argparse.Namespace) -> int:
    """A model (or CLIP baseline) over the dataset, under torchrun split across processes."""
    from regionspot.eval.runner import run_evaluation
    from regionspot.processes import init_distributed, shutdown

    config = config_from_args(args)
    if config.annotations is None:
        raise DatasetError("give the annotation: --data ANN.json")
    ctx = init_distributed(args.device, command="eval")
    try:
        run_evaluation(config, out=Path(args.out) if args.out else None, ctx=ctx, progress=not args.no_progress)
    finally:
        shutdown(ctx)
    return 0


def run_results_file(args: argparse.Namespace) -> int:
    """A COCO results file evaluated as given, after both files are checked (each fault named
    with its file)."""
    from regionspot.eval import protocol as eval_protocol
    from regionspot.eval.report import summary_text

    if not args.data:
        raise DatasetError("give the annotation the detections are for: --data ANN.json")
    annotations = read_annotations(Path(args.data))
    eval_protocol.check_ground_truth(annotations, Path(args.data), masks=bool(args.masks))
    frequencies = eval_protocol.frequency_tags(annotations["categories"], args.frequencies, args.data)
    detections = eval_protocol.check_results(read_json(Path(args.detections), "detections"), annotations,
                                             Path(args.detections), masks=bool(args.masks))
    try:
        reports = evaluate_results(args, annotations, detections, frequencies)
    except (ValueError, KeyError, TypeError) as exc:  # a fault the checks above let through
        raise DatasetError(f"evaluating {args.detections} against {args.data}: {exc}") from None
    protocol = results_file_protocol(args, reports["bbox"]["federated"])
    print(summary_text(reports, f"{args.detections}: {protocol['protocol']}"))
    if args.out:
        write_reports(Path(args.out), reports, args, protocol)
        print(f"wrote {args.out}/metrics.json, report.md, per_category.csv")
    return 0


def evaluate_results(args: argparse.Namespace, annotations: dict[str, Any], detections: list[dict[str, Any]],
                     frequencies: dict[int, str] | None) -> dict[str, Any]:
    """Report sections ``{"bbox": {"federated", "rules", "metrics", "per_category"}, "segm": ...,
    "fixed_ap": {"budget", "metrics"}, "fixed_ap_segm": ...}``: the cap of a model run
    (:func:`~regionspot.eval.protocol.evaluator_cap`), fixed AP for each AP type."""
    from regionspot.eval.evaluator import evaluator_for_results, fixed_ap, is_federated
    from regionspot.eval.protocol import FIXED_AP_SECTIONS, ap_section, evaluator_settings, iou_types

    federated = is_federated(annotations) if args.federated is None else args.federated
    settings = evaluator_settings(federated, args.max_dets_per_image, bool(args.keep_zero_area))
    reports: dict[str, Any] = {}
    for iou_type in iou_types(bool(args.masks)):
        evaluator = evaluator_for_results(annotations, detections, iou_type=iou_type, federated=federated,
                                          frequencies=frequencies, max_dets=settings.max_dets,
                                          max_dets_per_image=settings.max_dets_per_image,
                                          drop_zero_area=settings.drop_zero_area)
        reports[iou_type] = ap_section(evaluator, settings.rules)
    for iou_type in iou_types(bool(args.masks)) if args.fixed_ap else ():
        reports[FIXED_AP_SECTIONS[iou_type]] = {"budget": args.fixed_ap, "metrics": fixed_ap(
            annotations, detections, args.fixed_ap, iou_type=iou_type, federated=federated, frequencies=frequencies,
            drop_zero_area=settings.drop_zero_area)}
    return reports


def results_file_protocol(args: argparse.Namespace, federated: bool) -> dict[str, Any]:
    from regionspot.eval.protocol import detections_cap, fixed_ap_text, rules_name, zero_area_text

    cap = detections_cap(federated, args.max_dets_per_image)
    protocol = {"annotations": f"`{args.data}`", "detections": f"`{args.detections}`",
                "protocol": f"the detections as given (their boxes, labels and scores); "
                            f"{rules_name(federated)}; {cap}",
                "zero_area": zero_area_text(federated, bool(args.keep_zero_area))}
    if args.fixed_ap:
        protocol["fixed_ap"] = fixed_ap_text(args.fixed_ap, bool(args.masks))
    return protocol


def write_reports(folder: Path, reports: dict[str, Any], args: argparse.Namespace, protocol: dict[str, Any]) -> None:
    """metrics.json (everything), report.md (what was evaluated: the detections file, no model
    run here; the protocol; then a table per AP type) and per_category.csv (AP per category)."""
    from regionspot.eval.report import markdown_report, write_report_files

    document = {"annotations": str(args.data), "detections": str(args.detections), "protocol": protocol, **reports}
    model = {"detections": f"`{args.detections}`, evaluated as given",
             "model": "none run here (the file's own boxes, labels and scores)"}
    title = f"Evaluation: {Path(args.detections).name} on {Path(args.data).name}"
    write_report_files(folder, document, markdown_report(title, protocol, reports, model=model))
