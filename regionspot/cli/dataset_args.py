"""Options shared by the commands that run a model over many images, ``eval`` (model mode) and
``predict-batch``, and the :class:`~regionspot.eval.config.EvalConfig` they describe."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from regionspot.cli.arguments import add_overrides_argument, add_progress_argument, positive_int
from regionspot.cli.model_args import METHOD_CHOICES, add_device_argument, add_model_arguments


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The model options (:func:`~regionspot.cli.model_args.add_model_arguments`) and the run's own."""
    add_model_arguments(parser, method=False, device=False)
    parser.add_argument("--images", help="image folder (default: 'images' beside the annotation)")
    parser.add_argument("--boxes", metavar="gt|auto|PROPOSALS.json",
                        help="regions: the annotation's boxes (gt, default), SAM point-grid proposals (auto), "
                             "or a detector's proposals file (its box scores multiply the class scores)")
    parser.add_argument("--method", choices=METHOD_CHOICES,
                        help="regionspot (a head), clip-crop or clip-mask-crop (CLIP zero-shot on crops); default: "
                             "the model's own (clip-mask-crop without --checkpoint)")
    parser.add_argument("--prompt", choices=("together", "alone"),
                        help="an image's boxes through the head together (default) or each alone")
    parser.add_argument("--vocab", help="category names (eval: one per annotation category, in id order)")
    parser.add_argument("--max-images", type=positive_int, metavar="N", help="only the first N images (by id / name)")
    parser.add_argument("--pairs-per-box", type=positive_int, metavar="K",
                        help="categories kept per box (default: all, then the image's best pairs)")
    parser.add_argument("--config", help="an EvalConfig YAML/JSON (flags given here override it)")
    add_overrides_argument(parser, "model-config (sam./clip./text./fusion.) or eval-config (protocol., auto., ...) "
                                   "overrides")
    add_device_argument(parser)
    add_progress_argument(parser)


def model_flags_given(args: argparse.Namespace) -> list[str]:
    """The model options given on the command line (for commands where they do not apply)."""
    names = {"checkpoint": "--checkpoint", "sam": "--sam", "clip": "--clip", "variant": "--variant"}
    given = [flag for key, flag in names.items() if getattr(args, key, None) is not None]
    given += [flag for key, flag, default in (("runtime", "--runtime", "torch"), ("precision", "--precision", "fp32"))
              if getattr(args, key, default) != default]
    return given + (["--untrained"] if getattr(args, "untrained", False) else [])


def config_from_args(args: argparse.Namespace) -> Any:
    """The EvalConfig of ``--config`` (or the defaults) with ``--set`` overrides, then the flags
    given on the command line."""
    from regionspot.cli.model_args import model_source_from_args
    from regionspot.config import apply_overrides, load_config
    from regionspot.eval.config import EvalConfig, split_overrides

    config = load_config(EvalConfig, args.config) if args.config else EvalConfig()
    model_overrides, eval_overrides = split_overrides(args.overrides)
    config = apply_overrides(config, eval_overrides)
    flags = {"annotations": args.data, "images": args.images, "method": args.method, "boxes": args.boxes,
             "prompt": args.prompt, "vocabulary": args.vocab, "max_images": args.max_images,
             "masks": getattr(args, "masks", None), "frequencies": getattr(args, "frequencies", None),
             "examples": getattr(args, "examples", None), "save_detections": getattr(args, "save_detections", None)}
    protocol = {"pairs_per_box": args.pairs_per_box, "pairs_per_image": getattr(args, "pairs_per_image", None),
                "max_dets_per_image": getattr(args, "max_dets_per_image", None),
                "fixed_ap_budget": getattr(args, "fixed_ap", None), "federated": getattr(args, "federated", None),
                "keep_zero_area": getattr(args, "keep_zero_area", None)}
    model = model_source_from_args(args, model_overrides, base=config.model, with_method=False)
    return dataclasses.replace(config, **_given(flags), model=model,
                               protocol=dataclasses.replace(config.protocol, **_given(protocol)))


def _given(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}
