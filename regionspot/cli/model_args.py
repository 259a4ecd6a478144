"""The model options shared by ``predict``, ``serve`` and friends: ``--checkpoint CKPT`` (a
trained head) or ``--sam SAM [--clip CLIP]`` (a fresh, untrained head, with a loud warning)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from regionspot.model.regionspot import RegionSpot

DEFAULT_CLIP = "openai/clip-vit-base-patch16"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint`` | ``--sam`` (one of them required) and ``--clip``."""
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", help="trained RegionSpot folder or Hugging Face Hub id")
    model.add_argument("--sam", help="with --clip: a fresh, UNTRAINED head on these backbones (labels are "
                                     "meaningless; masks are SAM's)")
    parser.add_argument("--clip", default=DEFAULT_CLIP, help="CLIP backbone with --sam")


def load_model(checkpoint: str | None, sam: str | None, clip: str, overrides: Sequence[str]) -> RegionSpot:
    """A trained checkpoint, or an untrained head on ``sam``/``clip`` (warned about on stderr)."""
    from regionspot.model.regionspot import RegionSpot

    if checkpoint:
        return RegionSpot.from_pretrained(checkpoint, overrides=overrides)
    print("warning: --sam/--clip builds an UNTRAINED head: masks are real, labels are not", file=sys.stderr)
    return RegionSpot.from_backbones(sam=str(sam), clip=clip, overrides=overrides)
