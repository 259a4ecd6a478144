"""The model options of every command that runs a model (``predict``, ``predict-batch``, ``eval``,
``serve``, ``download``), all loaded by the one loader, :func:`regionspot.model.loader.load`.

No model option: the zero-shot recognizer (CLIP on SAM-mask crops) on the default backbones.
``--checkpoint``: a RegionSpot folder, a Hub repo id or the authors' released ``.pth``.
``--untrained``: a fresh, random head (training and debugging only).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from regionspot.config import ClipBackboneConfig, SamBackboneConfig
from regionspot.devices import PRECISIONS as PRECISION_CHOICES
from regionspot.model.recognizer import METHODS as METHOD_CHOICES
from regionspot.model.recognizer import RUNTIMES as RUNTIME_CHOICES
from regionspot.presets import VARIANTS as VARIANT_CHOICES

if TYPE_CHECKING:
    from regionspot.model.loader import Model, ModelSource

__all__ = ["METHOD_CHOICES", "PRECISION_CHOICES", "VARIANT_CHOICES", "add_device_argument", "add_model_arguments",
           "load_model_from_args", "model_source_from_args"]


def add_model_arguments(parser: argparse.ArgumentParser, *, method: bool = True, device: bool = True,
                        runtime: bool = True) -> None:
    """``--checkpoint``, ``--untrained``, ``--sam``, ``--clip``, ``--variant`` and, for commands that
    run the model (``runtime``), ``--precision`` and, unless the command defines its own,
    ``--method`` and ``--device``."""
    group = parser.add_argument_group("model (default: zero-shot CLIP on SAM-mask crops, no trained head)")
    group.add_argument("--checkpoint", metavar="CKPT",
                       help="a trained RegionSpot folder, a Hugging Face Hub id, or the authors' released .pth "
                            "(default: none, the zero-shot recognizer)")
    group.add_argument("--untrained", action="store_true",
                       help="a fresh head with RANDOM weights on --sam/--clip (training and debugging only: its "
                            "labels mean nothing)")
    group.add_argument("--sam", help="SAM backbone: Hub id, local folder or original .pt/.pth (default: "
                                     f"{SamBackboneConfig.name_or_path}, or the checkpoint's)")
    group.add_argument("--clip", help="CLIP backbone: Hub id or local folder (default: "
                                      f"{ClipBackboneConfig.name_or_path}, or the checkpoint's)")
    group.add_argument("--variant", choices=VARIANT_CHOICES,
                       help="for an authors' .pth whose shapes cannot tell BL from BL@336 (default: read from "
                            "the file)")
    if not runtime:
        return
    group.add_argument("--precision", choices=PRECISION_CHOICES, default="fp32",
                       help="fp32, or bf16/fp16 under autocast (fp16 needs a GPU); scores stay float32")
    group.add_argument("--runtime", choices=RUNTIME_CHOICES, default="torch",
                       help="torch, or onnx: run a folder written by 'regionspot export onnx' (given as "
                            "--checkpoint) in onnxruntime, on the CPU")
    if method:
        group.add_argument("--method", choices=METHOD_CHOICES,
                           help="regionspot (a head), clip-mask-crop or clip-crop (zero-shot CLIP on each region's "
                                "crop); default: the model's own")
    if device:
        add_device_argument(group)


def add_device_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--device", default="auto",
                        help="auto (a GPU when there is one), cpu, cuda, cuda:N or mps")


def model_source_from_args(args: argparse.Namespace, overrides: list[str] | None = None,
                           base: ModelSource | None = None, *, with_method: bool = True) -> ModelSource:
    """The :class:`~regionspot.model.loader.ModelSource` the options describe; ``base``: values
    (e.g. from a config file) that the options given on the command line replace;
    ``with_method``: ``--method`` chooses the recognizer (False where the command uses it itself)."""
    import dataclasses

    from regionspot.model.loader import ModelSource

    base = base or ModelSource()
    given: dict[str, Any] = {key: getattr(args, key, None) for key in ("checkpoint", "sam", "clip", "variant")}
    given = {key: value for key, value in given.items() if value is not None}
    if getattr(args, "untrained", False):
        given["untrained"] = True
    if with_method and getattr(args, "method", None) is not None:
        given["method"] = args.method
    if getattr(args, "precision", None) not in (None, "fp32"):
        given["precision"] = args.precision
    if getattr(args, "runtime", None) not in (None, "torch"):
        given["runtime"] = args.runtime
    return dataclasses.replace(base, **given, overrides=[*base.overrides, *(overrides or [])])


def load_model_from_args(args: argparse.Namespace, overrides: list[str] | None = None) -> Model:
    """The model the options describe, on ``--device``, saying on stderr what it loaded."""
    from regionspot.model.loader import load

    return load(model_source_from_args(args, overrides), device=getattr(args, "device", "auto"))
