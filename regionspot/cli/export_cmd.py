"""``regionspot export onnx --checkpoint CKPT --out DIR``: the model as ONNX graphs, for onnxruntime.

DIR is then a checkpoint that both runtimes load: ``--checkpoint DIR --runtime onnx`` runs the
graphs in onnxruntime (``predict``, ``predict-batch``, ``eval``, ``serve``), and without
``--runtime onnx`` PyTorch runs it as before. Each graph is checked against PyTorch at export;
see :mod:`regionspot.model.onnx_export`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from regionspot.cli.arguments import add_overrides_argument
from regionspot.cli.model_args import add_model_arguments


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("export", help="export the model for other runtimes (ONNX)")
    which = parser.add_subparsers(dest="export", required=True, metavar="FORMAT")
    onnx = which.add_parser(
        "onnx", help="SAM's image encoder, CLIP's image tower and the region path as ONNX graphs",
        description="Writes DIR: the checkpoint (config.json, model.safetensors), the ONNX graphs "
                    "sam_image_encoder, clip_image_memory, sam_box_tokens, sam_box_masks, region_head and "
                    "region_path (all of the region path in one graph, for runtimes outside Python), and "
                    "onnx.json. Each graph is checked against PyTorch at export. Run it with "
                    "'--checkpoint DIR --runtime onnx'. Needs the onnx extra: pip install 'regionspot[onnx]'.",
    )
    add_model_arguments(onnx, runtime=False)
    add_overrides_argument(onnx, "model config overrides with dotted keys, e.g. --set sam.multimask=true")
    onnx.add_argument("--out", required=True, metavar="DIR", help="folder to write (created; files replaced)")
    onnx.set_defaults(handler=run_onnx)


def run_onnx(args: argparse.Namespace) -> int:
    from regionspot.cli.model_args import model_source_from_args
    from regionspot.config import ConfigError
    from regionspot.model.loader import load
    from regionspot.model.onnx_export import export_onnx

    if args.checkpoint is None and not args.untrained:
        raise ConfigError("only a RegionSpot head exports to ONNX: give --checkpoint (or --untrained to try it)")
    model = load(model_source_from_args(args, args.overrides), device="cpu")
    manifest = export_onnx(model, args.out, log=lambda line: print(line, file=sys.stderr))
    print(f"{'graph':<20} {'MiB':>7} {'max |onnx - torch|':>19} {'relative':>9}")
    for name, graph in manifest["graphs"].items():
        size = (Path(args.out) / graph["file"]).stat().st_size / 2**20
        print(f"{name:<20} {size:>7.1f} {graph['max_abs_difference']:>19.2e} {graph['max_rel_difference']:>9.1e}")
    print(f"wrote {args.out}; run it with --checkpoint {args.out} --runtime onnx")
    return 0
