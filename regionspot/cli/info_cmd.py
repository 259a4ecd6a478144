"""``regionspot info``: what a model is made of and how many parameters it trains."""

from __future__ import annotations

import argparse
import json

from regionspot.config import FusionConfig, RegionSpotConfig
from regionspot.presets import MODELS


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "info", help="backbones, configuration and trainable parameter counts",
        description="Without arguments: the trainable parameter count of the paper's BB, BL and BL@336 heads. "
                    "With --checkpoint: that checkpoint's configuration and head size.",
    )
    parser.add_argument("--checkpoint", help="a RegionSpot checkpoint folder, a Hub id or the authors' .pth")
    parser.add_argument("--load", action="store_true",
                        help="also build the backbones the checkpoint names and describe them")
    parser.set_defaults(handler=run)


def head_parameter_count(fusion: FusionConfig, cross_attention: bool = True) -> int:
    from regionspot.model.fusion import RegionFusion, count_parameters

    return count_parameters(RegionFusion(fusion, cross_attention=cross_attention))


def run(args: argparse.Namespace) -> int:
    if args.checkpoint:
        return _checkpoint_info(args.checkpoint, args.load)
    from regionspot.model.official import official_config

    print(f"{'model':8} {'SAM':24} {'CLIP':36} {'trainable':>12} {'paper':>6}")
    for model in MODELS:
        count = head_parameter_count(official_config(model.variant).fusion)
        paper = f"{model.paper_trainable_millions}M"
        print(f"{model.name:8} {model.sam:24} {model.clip:36} {count / 1e6:>11.2f}M {paper:>6}")
    print("\nBackbones are frozen; only the fusion head trains. Use --checkpoint for a saved model.")
    return 0


def inputs_line(built: RegionSpotConfig) -> str:
    """The input mode and the SAM decoder eps a head runs with, in words (``built``: the
    configuration its backbones are built from, see :func:`regionspot.config.backbone_config`)."""
    eps = built.sam.decoder_layer_norm_eps
    eps_text = f"{eps:g}" if eps is not None else "the SAM checkpoint's own"
    mode = ("official (the authors' evaluation: detectron2 800/1333 resize first, their 81 templates on raw names)"
            if built.inputs == "official" else "native")
    return f"{mode}; SAM decoder LayerNorm eps {eps_text}; text templates {built.text.templates}"


def _checkpoint_info(checkpoint: str, load_backbones: bool) -> int:
    """A checkpoint's configuration and head size (a folder, a Hub id or the authors' .pth, read
    by the one loader); with ``load_backbones`` the whole model is built and described."""
    from regionspot.config import backbone_config, to_dict
    from regionspot.model.loader import ModelSource, load, source_config

    source = ModelSource(checkpoint=checkpoint)
    config = source_config(source)
    print(f"checkpoint: {checkpoint}")
    print(json.dumps(to_dict(config), indent=2))
    if isinstance(config, RegionSpotConfig):
        print(f"trainable parameters: {head_parameter_count(config.fusion, config.clip.enabled) / 1e6:.2f}M")
        print(f"inputs: {inputs_line(backbone_config(config))}")
    if load_backbones:
        model = load(source, device="cpu")
        print(json.dumps(model.describe(), indent=2, default=str))
    return 0
