"""``--runtime onnx``: a RegionSpot model whose towers and head run in onnxruntime.

:func:`load_onnx_model` reads a folder written by ``regionspot export onnx`` (see
:mod:`regionspot.model.onnx_export`) and builds the same :class:`~regionspot.model.regionspot.
RegionSpot` as PyTorch does, with ONNX parts injected: the SAM and CLIP adapters of
:mod:`regionspot.backbones.onnx_backbones` and :class:`~regionspot.model.fusion.OnnxFusion` for the head. The predictor,
and so ``predict``, ``predict-batch``, ``eval`` and ``serve``, run it unchanged. The text tower
stays in PyTorch (text embeddings are made once per vocabulary and memoised), as do the
pre-processing, box scaling and mask pasting. It runs on the CPU in float32.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from regionspot.backbones.onnx_backbones import OnnxClipMemory, OnnxGraph, OnnxSamTokenizer
from regionspot.backbones.protocols import TextEmbedder
from regionspot.backbones.text import build_text_embedder
from regionspot.config import ConfigError, apply_overrides, backbone_config
from regionspot.model.checkpoint import read_checkpoint
from regionspot.model.fusion import OnnxFusion
from regionspot.model.regionspot import RegionSpot
from regionspot.weights import CheckpointError

MANIFEST_NAME = "onnx.json"
MANIFEST_FORMAT = "regionspot-onnx"
#: Config keys (prefixes) that ``--set`` may change under the ONNX runtime: what runs outside the graphs.
OUTSIDE_THE_GRAPHS = ("text.", "inputs")
#: The graphs the runtime runs (``clip_image_memory`` only with CLIP vision).
RUNTIME_GRAPHS = ("sam_image_encoder", "sam_box_tokens", "sam_box_masks", "region_head")


class OnnxRegionSpot(RegionSpot):
    """RegionSpot with ONNX parts (see the module docstring): CPU only, inference only."""

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def save_pretrained(self, folder: str | Path) -> Path:
        raise ConfigError("an ONNX model holds no PyTorch weights to save; its export folder is already a checkpoint")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "runtime": "onnx"}


def read_manifest(folder: Path) -> dict[str, Any]:
    """``onnx.json`` of an export folder, checked; CheckpointError saying what is wrong."""
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise CheckpointError(f"{folder} is not an ONNX export ({MANIFEST_NAME} is missing); make one with "
                              f"'regionspot export onnx --checkpoint {folder} --out DIR'")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise CheckpointError(f"{path} is not a RegionSpot ONNX manifest")
    needed = [*RUNTIME_GRAPHS, *(["clip_image_memory"] if manifest.get("clip") else [])]
    missing = [name for name in needed if name not in manifest.get("graphs", {})]
    if missing:
        raise CheckpointError(f"{path} lists no {', '.join(missing)} graph; export the model again")
    return manifest


def load_onnx_model(folder: str | Path, overrides: Sequence[str] = (), threads: int | None = None,
                    text_embedder: TextEmbedder | None = None) -> OnnxRegionSpot:
    """The export in ``folder`` (see the module docstring). ``overrides``: ``key=value`` changes of
    what stays outside the graphs (``text.*``, ``inputs``); ``threads``: onnxruntime intra-op
    threads per graph (default: torch's); ``text_embedder``: use this one instead of building the
    config's (benchmarks inject theirs)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    fixed = [item for item in overrides if not item.split("=", 1)[0].strip().startswith(OUTSIDE_THE_GRAPHS)]
    if fixed:
        raise ConfigError(f"{fixed} would change the exported graphs; with --runtime onnx only "
                          f"{', '.join(key + '*' if key.endswith('.') else key for key in OUTSIDE_THE_GRAPHS)} "
                          "can be set (export again to change the rest)")
    config, _ = read_checkpoint(folder)  # the config, and the same integrity checks as a PyTorch load
    config = apply_overrides(config, list(overrides))
    graphs = {name: OnnxGraph(folder / entry["file"], threads) for name, entry in manifest["graphs"].items()
              if name in (*RUNTIME_GRAPHS, "clip_image_memory")}
    sam = manifest["sam"]
    tokenizer = OnnxSamTokenizer(graphs["sam_image_encoder"], graphs["sam_box_tokens"], graphs["sam_box_masks"],
                                 image_input_size=int(sam["image_input_size"]), token_dim=int(sam["token_dim"]),
                                 described=sam["describe"])
    clip = manifest.get("clip")
    image_encoder = None if not clip else OnnxClipMemory(
        graphs["clip_image_memory"], image_size=int(clip["image_size"]), width=int(clip["width"]),
        mean=clip["mean"], std=clip["std"], described=clip["describe"])
    if text_embedder is None:
        built = backbone_config(config)
        text_embedder = build_text_embedder(built.text, built.clip.name_or_path)
    model = OnnxRegionSpot(config, tokenizer, image_encoder, text_embedder, fusion=OnnxFusion(config.fusion,
                                                                                   graphs["region_head"]))
    model.origin = {**manifest.get("origin", {}), "onnx_export": str(folder)}
    return model
