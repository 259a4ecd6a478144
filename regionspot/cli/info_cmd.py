"""``regionspot info``: what a model is made of and how many parameters it trains."""

from __future__ import annotations

import argparse
import json

from regionspot.config import FusionConfig

# The paper's model shapes: SAM ViT-B tokens (256-d) into CLIP ViT-B/16 (width 768, text 512)
# or ViT-L/14 (width 1024, text 768). BL@336 has BL's head; only the CLIP input size differs.
PRESETS: dict[str, tuple[str, str, FusionConfig]] = {
    "BB": ("facebook/sam-vit-base", "openai/clip-vit-base-patch16",
           FusionConfig(token_dim=256, width=768, text_dim=512)),
    "BL": ("facebook/sam-vit-base", "openai/clip-vit-large-patch14",
           FusionConfig(token_dim=256, width=1024, text_dim=768)),
    "BL@336": ("facebook/sam-vit-base", "openai/clip-vit-large-patch14-336",
               FusionConfig(token_dim=256, width=1024, text_dim=768)),
}
SPEC_TRAINABLE_MILLIONS = {"BB": 24, "BL": 39, "BL@336": 39}


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "info", help="backbones, configuration and trainable parameter counts",
        description="Without arguments: the trainable parameter count of the paper's BB and BL heads. "
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
    print(f"{'model':8} {'SAM':24} {'CLIP':36} {'trainable':>12} {'SPEC':>6}")
    for name, (sam, clip, fusion) in PRESETS.items():
        count = head_parameter_count(fusion)
        print(f"{name:8} {sam:24} {clip:36} {count / 1e6:>11.2f}M {SPEC_TRAINABLE_MILLIONS[name]:>5}M")
    print("\nBackbones are frozen; only the fusion head trains. Use --checkpoint for a saved model.")
    return 0


def _checkpoint_info(checkpoint: str, load_backbones: bool) -> int:
    """A checkpoint's configuration and head size (a folder, a Hub id or the authors' .pth, read
    by the one loader); with ``load_backbones`` the whole model is built and described."""
    from regionspot.config import RegionSpotConfig, to_dict
    from regionspot.model.loader import ModelSource, load, source_config

    source = ModelSource(checkpoint=checkpoint)
    config = source_config(source)
    print(f"checkpoint: {checkpoint}")
    print(json.dumps(to_dict(config), indent=2))
    if isinstance(config, RegionSpotConfig):
        print(f"trainable parameters: {head_parameter_count(config.fusion, config.clip.enabled) / 1e6:.2f}M")
    if load_backbones:
        model = load(source, device="cpu")
        print(json.dumps(model.describe(), indent=2, default=str))
    return 0
