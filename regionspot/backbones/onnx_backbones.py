"""SAM and CLIP vision adapters that run exported ONNX graphs with onnxruntime (``--runtime onnx``).

They implement the same Protocols as the PyTorch adapters (:class:`~regionspot.backbones.protocols.
RegionTokenizer`, :class:`~regionspot.backbones.protocols.ImageMemoryEncoder`), so the one
predictor runs them unchanged: the pre-processing, box scaling and mask pasting are the PyTorch
adapters' own functions; only the networks run in onnxruntime. Graphs are those of
:mod:`regionspot.model.onnx_graphs`, written by ``regionspot export onnx``. Click prompts and
automatic proposals need SAM's point decoding, which is not exported: those features say so
(a :class:`~regionspot.backbones.protocols.BackboneCapabilityError`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from regionspot.backbones.clip_vision import preprocess_image as clip_preprocess
from regionspot.backbones.mask_paste import paste_masks
from regionspot.backbones.protocols import RegionTokens, SamImageEmbedding
from regionspot.backbones.sam_geometry import check_boxes, preprocess_image, scale_boxes
from regionspot.config import ConfigError
from regionspot.weights import CheckpointError


def import_onnxruntime() -> Any:
    """The onnxruntime module, or ConfigError saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError("the ONNX runtime needs onnxruntime: pip install 'regionspot[onnx]'") from None
    return onnxruntime


class OnnxGraph:
    """One ONNX graph in an onnxruntime CPU session: named torch tensors in, float32 tensors out.

    ``threads``: intra-op threads (default: torch's CPU thread count, so both runtimes compare
    on equal terms)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        onnxruntime = import_onnxruntime()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"ONNX graph {self.path} is missing; export the model again with "
                                  "'regionspot export onnx'")
        try:
            self.session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own Exception subclasses (InvalidProtobuf, Fail, ...)
            message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(f"{self.path} is not a usable ONNX graph ({message}); export the model "
                                  "again") from None
        self.input_names = [item.name for item in self.session.get_inputs()]

    def __call__(self, **inputs: torch.Tensor) -> list[torch.Tensor]:
        feeds = {name: np.ascontiguousarray(inputs[name].detach().float().cpu().numpy()) for name in self.input_names}
        return [torch.from_numpy(output) for output in self.session.run(None, feeds)]


class OnnxSamTokenizer:
    """A :class:`~regionspot.backbones.protocols.RegionTokenizer` on three exported graphs: the
    image encoder, and the box decoder without and with masks (masks cost SAM's upscaling, so it
    runs only when they are asked for). ``described``: the exported adapter's ``describe()``."""

    def __init__(self, encoder: OnnxGraph, box_tokens: OnnxGraph, box_masks: OnnxGraph, *, image_input_size: int,
                 token_dim: int, described: dict[str, object]) -> None:
        self.encoder, self.box_tokens, self.box_masks = encoder, box_tokens, box_masks
        self.image_input_size = image_input_size
        self.token_dim = token_dim
        self.described = dict(described)
        self.chunk_size = 32  # boxes per graph run, as the PyTorch head: memory stays bounded

    def encode_image(self, image: np.ndarray) -> SamImageEmbedding:
        """``image``: HxWx3 uint8 RGB -> embeddings [1, C, h, w] (the SAM adapter's pre-processing)."""
        pixels, input_size = preprocess_image(image, self.image_input_size)
        (embeddings,) = self.encoder(pixels=pixels)
        return SamImageEmbedding(embeddings=embeddings, original_size=(image.shape[0], image.shape[1]),
                                 input_size=input_size)

    def encode_regions(self, embedding: SamImageEmbedding, boxes: torch.Tensor,
                       with_masks: bool = True) -> RegionTokens:
        """``boxes``: [R, 4] xyxy original-image pixels -> tokens [R, d], mask scores [R] and,
        ``with_masks``, low-res mask logits [R, 4h, 4w] (padded input frame)."""
        check_boxes(boxes)
        scaled = scale_boxes(boxes.float().cpu(), embedding.original_size, embedding.input_size)
        graph = self.box_masks if with_masks else self.box_tokens
        parts = [graph(embeddings=embedding.embeddings, boxes=chunk) for chunk in scaled.split(self.chunk_size)]
        tokens, scores, *masks = (torch.cat(outputs) for outputs in zip(*parts, strict=True))
        return RegionTokens(tokens=tokens, mask_scores=scores, mask_logits=masks[0] if with_masks else None)

    def paste_masks(self, embedding: SamImageEmbedding, mask_logits: torch.Tensor) -> torch.Tensor:
        """Low-res [R, 4h, 4w] logits -> bool [R, H, W] at the original image size."""
        return paste_masks(mask_logits, embedding.input_size, embedding.original_size, self.image_input_size)

    def describe(self) -> dict[str, object]:
        return {**self.described, "runtime": "onnxruntime", "graph": str(self.encoder.path.parent)}


class OnnxClipMemory:
    """A :class:`~regionspot.backbones.protocols.ImageMemoryEncoder` on the exported CLIP tower:
    the PyTorch adapter's pre-processing (``image_size``, ``mean``, ``std``), then the graph."""

    def __init__(self, graph: OnnxGraph, *, image_size: int, width: int, mean: list[float], std: list[float],
                 described: dict[str, object]) -> None:
        self.graph = graph
        self.image_size, self.width = image_size, width
        self.mean, self.std = tuple(mean), tuple(std)
        self.described = dict(described)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """HxWx3 uint8 -> [3, S, S] float32, as the exported tower's adapter did it."""
        return clip_preprocess(image, self.image_size, self.mean, self.std)

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] -> memory [B, T, width]."""
        (memory,) = self.graph(pixels=pixel_values)
        return memory

    def describe(self) -> dict[str, object]:
        return {**self.described, "runtime": "onnxruntime"}
