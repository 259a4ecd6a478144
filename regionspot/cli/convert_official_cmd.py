"""``regionspot convert-official CKPT.pth --out FOLDER [--variant bb|bl|bl336] [--sam ID] [--clip ID]``.

Turns one of the authors' released checkpoints (RegionSpot-BB, -BL, -BL@336) into a RegionSpot
checkpoint folder that ``RegionSpot.from_pretrained`` loads. A file that is not of their layout,
or of another variant, ends with ``error: ...`` (exit 2).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from regionspot.presets import MODELS, VARIANTS


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "convert-official", help="convert the authors' released .pth checkpoints to our format",
        description="Convert a RegionSpot checkpoint released by the paper's authors (a detectron2 .pth "
                    "with their key layout) into a checkpoint folder (config.json + model.safetensors). "
                    "Only the trained head is kept; the frozen CLIP/SAM weights some files carry are "
                    "dropped, the backbones are named in config.json instead.",
    )
    parser.add_argument("checkpoint", help="their .pth file (model_final.pth or a re-saved copy)")
    parser.add_argument("--out", required=True, help="output folder (created; existing files replaced)")
    parser.add_argument("--variant", choices=VARIANTS,
                        help=", ".join(f"{model.variant} (CLIP {model.clip_arch})" for model in MODELS)
                        + "; default: guessed from the file's shapes")
    parser.add_argument("--sam", help="SAM id or path written to the config (default: the variant's, "
                                      f"{'/'.join(sorted({model.sam for model in MODELS}))})")
    parser.add_argument("--clip", help="CLIP id or path written to the config (default: the variant's "
                                       "OpenAI CLIP on the Hugging Face Hub)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from regionspot.model.checkpoint import write_checkpoint
    from regionspot.model.official import (
        conversion_record,
        convert_official_state,
        guess_variant,
        read_official_checkpoint,
        with_backbones,
    )
    from regionspot.presets import BY_VARIANT
    from regionspot.weights import CheckpointError

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"--out {out} is a file; give a folder")
    state = read_official_checkpoint(args.checkpoint)
    variant = args.variant
    if variant is None:
        variant = guess_variant(state)
        print(f"variant not given: guessed {variant!r} from the file's shapes")
    config, head_state, dropped = convert_official_state(state, variant)
    config = with_backbones(config, sam=args.sam, clip=args.clip)
    write_checkpoint(out, config, head_state, extra=conversion_record(Path(args.checkpoint), variant, len(dropped)))
    parameters = sum(t.numel() for t in head_state.values())
    spec = BY_VARIANT[variant]
    print(f"wrote {out} (config.json + model.safetensors): variant {variant} ({spec.their_clip_type}), "
          f"head depth {config.fusion.depth}, {parameters / 1e6:.2f}M parameters, "
          f"logit scale {config.fusion.logit_scale:g}")
    print(f"backbones: sam {config.sam.name_or_path}, clip {config.clip.name_or_path} "
          f"at {config.clip.image_size} px")
    print(f"dropped {len(dropped)} frozen-backbone keys ({_dropped_summary(dropped)})")
    return 0


def _dropped_summary(dropped: list[str]) -> str:
    """``clip_model.*: 302, sam.*: 215`` style counts by top module (``model.`` prefix ignored)."""
    counts: dict[str, int] = {}
    for key in dropped:
        name = key.removeprefix("model.")
        group = name.split(".", 1)[0] + ".*"
        counts[group] = counts.get(group, 0) + 1
    return ", ".join(f"{group}: {n}" for group, n in sorted(counts.items())) or "none in this file"
