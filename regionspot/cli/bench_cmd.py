"""``regionspot bench predict|train|proposals|clicks|eval-memory``: measured on this machine, printed and
written as JSON."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from regionspot.cli.arguments import add_progress_argument, positive_int, unit_interval

DEFAULT_SAM = Path(".cache/mobile_sam.pt")


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("bench", help="benchmarks measured on this machine")
    which = parser.add_subparsers(dest="bench", required=True, metavar="BENCH")
    _add_predict(which)
    _add_train(which)
    _add_proposals(which)
    _add_clicks(which)
    _add_eval_memory(which)


def _add_predict(which: argparse._SubParsersAction) -> None:
    predict = which.add_parser(
        "predict", help="image encoding and per-region cost vs CLIP on crops",
        description="Times MobileSAM + a random-weight CLIP ViT-B/16 (real architecture) with a BB head: "
                    "image encoding per tower, the cost per region at several box counts, and the same "
                    "boxes classified by CLIP ViT-B/16 on crops.",
    )
    predict.add_argument("--sam", default=str(DEFAULT_SAM),
                         help="MobileSAM (or other SAM) checkpoint; get MobileSAM with scripts/fetch_mobile_sam.py")
    predict.add_argument("--checkpoint", help="time this RegionSpot head (a folder, Hub id or the authors' .pth, "
                                              "loaded by the one model loader) instead of the random-weight "
                                              "ViT-B/16 architecture on --sam")
    predict.add_argument("--image", help="photo to time on (default: a synthetic 640x480 image)")
    predict.add_argument("--boxes", default="1,10,50,100", help="box counts, comma-separated")
    predict.add_argument("--vocab-size", type=positive_int, default=1203,
                         help="names scored per region; LVIS has 1203")
    predict.add_argument("--repeats", type=positive_int, default=3, help="timed repeats per measurement (median)")
    predict.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's choice)")
    predict.add_argument("--out", default="bench-results/predict.json", help="JSON output")
    predict.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (the towers and head move there)")
    predict.add_argument("--onnx", action=argparse.BooleanOptionalAction, default=None,
                         help="also export the model to ONNX and time it in onnxruntime (default: on the CPU when "
                              "the onnx extra is installed)")
    predict.add_argument("--mobile-sam-reference", metavar="DIR",
                         help="a checkout of github.com/ChaoningZhang/MobileSAM: also time its image encoder on "
                              "--sam beside ours, on the same input")
    add_progress_argument(predict)
    predict.set_defaults(handler=run_predict)


def _add_train(which: argparse._SubParsersAction) -> None:
    train = which.add_parser(
        "train", help="training throughput: online vs cached SAM tokens vs cached tokens + CLIP memory",
        description="Regions/s and peak memory of training steps fed three ways, each in its own process.",
    )
    train.add_argument("--sam", default=str(DEFAULT_SAM), help="MobileSAM (or other SAM) checkpoint")
    train.add_argument("--annotations", default="../shared/data/coco-sample/annotations.json",
                       help="COCO-format annotations of the images to train on")
    train.add_argument("--images", default="../shared/data/coco-sample/images", help="their image folder")
    train.add_argument("--limit", type=positive_int, default=16, help="images used (caches are built for these)")
    train.add_argument("--batch", type=positive_int, default=4, help="images per step")
    train.add_argument("--online-steps", type=positive_int, default=2, help="timed steps when both towers run")
    train.add_argument("--cached-steps", type=positive_int, default=20, help="timed steps with caches")
    train.add_argument("--workers", default="1,2", help="also time the tokens mode (CLIP online) with these "
                                                        "counts of DataLoader workers preparing the batches "
                                                        "(comma-separated; '' for none)")
    train.add_argument("--out", default="bench-results/train.json", help="JSON output")
    add_progress_argument(train)
    train.set_defaults(handler=run_train)


def _add_proposals(which: argparse._SubParsersAction) -> None:
    proposals = which.add_parser(
        "proposals", help="recall and time of SAM's automatic boxes on annotated photos",
        description="Recall at IoU 0.5, AR (0.5:0.95), recall by object size, boxes and seconds per photo of "
                    "auto proposals made with each setting, on COCO-format annotated photos.",
    )
    _add_photo_arguments(proposals, "COCO-format annotations (non-crowd boxes are the objects to find)")
    proposals.add_argument("--setting", action="append", dest="settings", metavar="KEY=VALUE,...",
                           help="a proposal setting as comma-separated overrides, e.g. 'points_per_side=32,"
                                "pred_iou_thresh=0.8'; 'preset=recall' starts from the high-recall preset; "
                                "'' is the default; repeat for several (default: the default, "
                                "points_per_side=32 and preset=recall)")
    proposals.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's choice)")
    proposals.add_argument("--out", default="bench-results/proposals.json", help="JSON output")
    proposals.add_argument("--records", help="per-photo measurements, one JSON line each, read back to resume "
                                             "a stopped run or extend it to more photos (default: OUT with "
                                             "the suffix .records.jsonl)")
    add_progress_argument(proposals)
    proposals.set_defaults(handler=run_proposals)


def _add_photo_arguments(parser: argparse.ArgumentParser, annotations_help: str) -> None:
    """``--sam``, ``--annotations``, ``--images`` and ``--limit`` of the benches on annotated photos."""
    parser.add_argument("--sam", default=str(DEFAULT_SAM), help="MobileSAM (or other SAM) checkpoint")
    parser.add_argument("--annotations", default="../shared/data/coco-sample/annotations.json", help=annotations_help)
    parser.add_argument("--images", default="../shared/data/coco-sample/images", help="their image folder")
    parser.add_argument("--limit", type=positive_int, help="measure on the first N annotated photos (default: all)")


def _add_clicks(which: argparse._SubParsersAction) -> None:
    clicks = which.add_parser(
        "clicks", help="how often one click gives the whole annotated object",
        description="One click at each annotated object's deepest point; the IoU with its annotated mask of "
                    "the mask predict keeps (SAM's best rated of three), of each of SAM's three candidates, "
                    "and of the best of them, on COCO-format photos with polygon or RLE masks.",
    )
    _add_photo_arguments(clicks, "COCO-format annotations with masks (polygons or RLE)")
    clicks.add_argument("--min-side", type=positive_int, default=48,
                        help="objects of at least this many pixels squared of area")
    clicks.add_argument("--per-photo", type=positive_int, default=4, help="objects per photo (the first by id)")
    clicks.add_argument("--iou", type=unit_interval, default=0.6, help="IoU that counts as the whole object")
    clicks.add_argument("--mobile-sam-reference", metavar="DIR",
                        help="a checkout of github.com/ChaoningZhang/MobileSAM (or the folder "
                             "'scripts/fetch_mobile_sam.py --code DIR' writes): also answer the clicks with the "
                             "authors' own SamPredictor on --sam")
    clicks.add_argument("--out", default="bench-results/clicks.json", help="JSON output (with every object's IoUs)")
    add_progress_argument(clicks)
    clicks.set_defaults(handler=run_clicks)


def run_clicks(args: argparse.Namespace) -> int:
    from regionspot.bench.clicks_bench import format_table, read_click_objects, run_click_bench, write_json

    photos = read_click_objects(args.annotations, args.images, args.limit, args.min_side, args.per_photo)
    if not photos:
        raise SystemExit(f"error: no objects of at least {args.min_side}x{args.min_side} pixels in {args.annotations}")
    result = run_click_bench(args.sam, photos, args.iou, reference=args.mobile_sam_reference,
                             progress=not args.no_progress)
    print(format_table(result))
    write_json(result, args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _add_eval_memory(which: argparse._SubParsersAction) -> None:
    memory = which.add_parser(
        "eval-memory", help="rank 0's peak memory evaluating detections read from shards vs all held at once",
        description="Writes a synthetic LVIS-style run (no model) as the shards of --processes ranks, then "
                    "measures, each in its own process, the peak RSS and time of computing box AP from the "
                    "shards one image at a time (what regionspot eval does) and with every output held at "
                    "once (what gathering them on rank 0 gives).",
    )
    memory.add_argument("--images", type=positive_int, default=20000, help="images (LVIS val has 19,809)")
    memory.add_argument("--detections", type=positive_int, default=300, help="detections per image (LVIS keeps 300)")
    memory.add_argument("--categories", type=positive_int, default=1203, help="categories (LVIS has 1203)")
    memory.add_argument("--processes", type=positive_int, default=2, help="ranks whose shards are written")
    memory.add_argument("--out", default="bench-results/eval_memory.json", help="JSON output")
    memory.set_defaults(handler=run_eval_memory)


def run_eval_memory(args: argparse.Namespace) -> int:
    from regionspot.bench.eval_memory_bench import format_table, run_eval_memory_bench, write_json

    result = run_eval_memory_bench(images=args.images, per_image=args.detections, categories=args.categories,
                                   processes=args.processes, log=lambda line: print(line, file=sys.stderr))
    print(format_table(result))
    write_json(result, args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def synthetic_image(height: int = 480, width: int = 640) -> np.ndarray:
    """A deterministic textured test image (timings do not depend on content)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=-1)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def run_predict(args: argparse.Namespace) -> int:
    import torch

    from regionspot.bench.predict_bench import format_table, run_predict_bench, write_json
    from regionspot.ops.image import load_image

    model = None
    if args.checkpoint:
        from regionspot.model.loader import load
        from regionspot.model.regionspot import RegionSpot

        loaded = load(args.checkpoint, device=args.device)
        assert isinstance(loaded, RegionSpot)  # a checkpoint is always a head
        model = loaded
    elif not Path(args.sam).is_file():
        raise FileNotFoundError(f"SAM checkpoint {args.sam} not found; fetch MobileSAM with "
                                f"'python scripts/fetch_mobile_sam.py {DEFAULT_SAM}' or pass --sam")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        counts = sorted({int(c) for c in args.boxes.split(",") if c.strip()})
    except ValueError:
        raise SystemExit(f"error: --boxes must be comma-separated integers, got {args.boxes!r}") from None
    if not counts or counts[0] < 1:
        raise SystemExit("error: --boxes needs positive counts")
    image = load_image(args.image) if args.image else synthetic_image()
    result = run_predict_bench(args.sam, image, counts, args.vocab_size, args.repeats,
                               progress=_no_progress if args.no_progress else lambda m: print(m, file=sys.stderr),
                               device=args.device, model=model, onnx=_with_onnx(args.onnx, args.device),
                               mobile_sam_reference=args.mobile_sam_reference)
    print(format_table(result))
    write_json(result, args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def run_proposals(args: argparse.Namespace) -> int:
    import torch

    from regionspot.bench.proposals_bench import (
        DEFAULT_SETTINGS,
        format_table,
        read_annotated_photos,
        run_proposal_bench,
        setting_config,
        write_json,
    )

    if not Path(args.sam).is_file():
        raise FileNotFoundError(f"SAM checkpoint {args.sam} not found; fetch MobileSAM with "
                                f"'python scripts/fetch_mobile_sam.py {DEFAULT_SAM}' or pass --sam")
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = args.settings if args.settings is not None else list(DEFAULT_SETTINGS)
    for setting in settings:
        setting_config(setting)  # a bad setting fails before any work
    photos = read_annotated_photos(args.annotations, args.images, args.limit)
    records = args.records or str(Path(args.out).with_suffix(".records.jsonl"))
    result = run_proposal_bench(args.sam, photos, settings, records, progress=not args.no_progress,
                                log=lambda line: print(line, file=sys.stderr))
    print(format_table(result))
    write_json(result, args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _with_onnx(asked: bool | None, device: str) -> bool:
    """``--onnx``/``--no-onnx`` as given; by default on the CPU when the onnx extra is installed."""
    from regionspot.config import ConfigError
    from regionspot.model.onnx_export import check_exporter, exporter_missing

    if asked is None:
        return exporter_missing() is None and device == "cpu"
    if asked:
        check_exporter()
        if device != "cpu":
            raise ConfigError("--onnx times onnxruntime's CPU provider; use --device cpu")
    return asked


def _no_progress(message: str) -> None:
    """Progress callback of ``--no-progress``: says nothing."""


def run_train(args: argparse.Namespace) -> int:
    from regionspot.bench.train_bench import format_table, run_train_bench, write_json

    if not Path(args.sam).is_file():
        raise FileNotFoundError(f"SAM checkpoint {args.sam} not found; fetch MobileSAM with "
                                f"'python scripts/fetch_mobile_sam.py {DEFAULT_SAM}' or pass --sam")
    try:
        workers = [int(count) for count in args.workers.split(",") if count.strip()]
    except ValueError:
        raise SystemExit(f"error: --workers must be comma-separated integers, got {args.workers!r}") from None
    if any(count < 0 for count in workers):
        raise SystemExit("error: --workers counts must be >= 0")
    result = run_train_bench(args.sam, args.annotations, args.images, limit=args.limit, batch=args.batch,
                             online_steps=args.online_steps, cached_steps=args.cached_steps, workers=workers)
    print(format_table(result))
    write_json(result, args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0
