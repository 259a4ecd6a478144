"""``--runtime onnx``: a RegionSpot model whose towers and head run in onnxruntime.

:func:`load_onnx_model` reads a folder written by ``regionspot export onnx`` (see
:mod:`regionspot.model.onnx_export`) and builds the same :class:`~regionspot.model.regionspot.
RegionSpot` as PyTorch does, with ONNX parts injected: the SAM and CLIP adapters of
:mod:`regionspot.backbones.onnx_backbones` and :class:`OnnxFusion` for the head. The predictor,
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
from torch import nn

from regionspot.backbones.onnx_backbones import OnnxClipMemory, OnnxGraph, OnnxSamTokenizer
from regionspot.backbones.protocols import TextEmbedder
from regionspot.backbones.text import build_text_embedder
from regionspot.config import ConfigError, FusionConfig, apply_overrides, backbone_config
from regionspot.fileio import file_sha256
from regionspot.model.checkpoint import read_checkpoint, resolve_checkpoint
from regionspot.model.fusion import region_text_logits, region_text_scores
from regionspot.model.regionspot import RegionSpot
from regionspot.weights import CheckpointError

MANIFEST_NAME = "onnx.json"
MANIFEST_FORMAT = "regionspot-onnx"
MANIFEST_VERSION = 1
#: Config keys (prefixes) that ``--set`` may change under the ONNX runtime: what runs outside the
#: graphs. (Not ``inputs``: it also sets the SAM decoder's LayerNorm eps, which the graphs hold.)
OUTSIDE_THE_GRAPHS = ("text.",)
#: The graphs the runtime runs (``clip_image_memory`` only with CLIP vision).
RUNTIME_GRAPHS = ("sam_image_encoder", "sam_box_tokens", "sam_box_masks", "region_head")


class OnnxFusion(nn.Module):
    """The fusion head's exported graph, called as :class:`~regionspot.model.fusion.RegionFusion`
    is: ``tokens`` [B, R, d], ``memory`` [B, T, width] or None -> unit embeddings [B, R, D] and,
    when asked, attention [B, R, T]. No parameters: it cannot be trained."""

    def __init__(self, config: FusionConfig, graph: OnnxGraph) -> None:
        super().__init__()
        self.config = config
        self.graph = graph

    def forward(self, tokens: torch.Tensor, memory: torch.Tensor | None, region_padding: torch.Tensor | None = None,
                need_attention: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        if region_padding is not None:
            raise ConfigError("the ONNX head scores one image's regions; padded batches are for training in PyTorch")
        inputs = {"tokens": tokens} if memory is None else {"tokens": tokens, "memory": memory}
        outputs = self.graph(**inputs)
        return outputs[0], (outputs[1] if need_attention and len(outputs) > 1 else None)

    def logits(self, region_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        return region_text_logits(self.config, region_embeddings, text_embeddings)

    def scores(self, region_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        return region_text_scores(self.config, region_embeddings, text_embeddings)


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
    """``onnx.json`` of an export folder, checked against the folder's checkpoint; CheckpointError
    saying what is wrong (and to export again)."""
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise CheckpointError(f"{folder} is not an ONNX export ({MANIFEST_NAME} is missing); make one with "
                              f"'regionspot export onnx --checkpoint CKPT --out {folder}'")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); export the model again") from None
    problem = manifest_problem(manifest)
    if problem:
        raise CheckpointError(f"{path}: {problem}; export the model again")
    for name, recorded in manifest["checkpoint_sha256"].items():
        if not (folder / name).is_file() or file_sha256(folder / name) != recorded:
            raise CheckpointError(f"{folder / name} changed since the export (the graphs were made from another "
                                  "one); export the model again")
    return manifest


def manifest_problem(manifest: Any) -> str | None:
    """What is wrong with a parsed ``onnx.json`` (None when it is usable)."""
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        return "not a RegionSpot ONNX manifest"
    if manifest.get("format_version") != MANIFEST_VERSION:
        return f"format version {manifest.get('format_version')!r}; this regionspot reads version {MANIFEST_VERSION}"
    graphs, sam, clip = manifest.get("graphs"), manifest.get("sam"), manifest.get("clip")
    needed = [*RUNTIME_GRAPHS, *(["clip_image_memory"] if clip else [])]
    if not isinstance(graphs, dict) or any(not isinstance(graphs.get(name), dict) or "file" not in graphs[name]
                                           for name in needed):
        return f"it must list the graphs {', '.join(needed)}, each with its file"
    if not isinstance(sam, dict) or not {"image_input_size", "token_dim", "describe"} <= set(sam):
        return "its sam entry lacks image_input_size, token_dim or describe"
    if clip and (not isinstance(clip, dict) or not {"image_size", "width", "mean", "std", "describe"} <= set(clip)):
        return "its clip entry lacks image_size, width, mean, std or describe"
    if not isinstance(manifest.get("checkpoint_sha256"), dict):
        return "it records no checkpoint_sha256"
    return None


def resolve_export(name_or_path: str | Path) -> Path:
    """A local export folder, or a Hub repo holding one (its graphs and manifest downloaded)."""
    if Path(name_or_path).exists():
        return Path(name_or_path)
    return resolve_checkpoint(name_or_path, extra_files=(MANIFEST_NAME,), extra_patterns=("*.onnx",))


def load_onnx_model(folder: str | Path, overrides: Sequence[str] = (), threads: int | None = None,
                    text_embedder: TextEmbedder | None = None) -> OnnxRegionSpot:
    """The export in ``folder`` (a local folder or a Hub repo id; see the module docstring).
    ``overrides``: ``key=value`` changes of what stays outside the graphs (``text.*``);
    ``threads``: onnxruntime intra-op threads per graph (default: torch's); ``text_embedder``: use
    this one instead of building the config's (benchmarks inject theirs)."""
    folder = resolve_export(folder)
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
