"""RegionSpot: frozen region tokenizer (SAM) + frozen image memory (CLIP) + trained fusion head."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from regionspot.backbones.protocols import REGIONSPOT_CLIP, ImageMemoryEncoder, RegionTokenizer, TextEmbedder
from regionspot.config import (
    ClipBackboneConfig,
    ConfigError,
    FusionConfig,
    RegionSpotConfig,
    SamBackboneConfig,
    TextConfig,
    TokenPlace,
    apply_overrides,
    backbone_config,
)
from regionspot.devices import full_precision
from regionspot.model.checkpoint import read_checkpoint, resolve_checkpoint, write_checkpoint
from regionspot.model.fusion import RegionFusion, count_parameters
from regionspot.model.recognizer import RegionBatch, RegionScores
from regionspot.model.text_memo import TextEmbeddingMemo
from regionspot.ops.official_inputs import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    detectron2_test_resize,
    tensor_resize_clip_pixels,
)
from regionspot.weights import load_strict

if TYPE_CHECKING:
    from regionspot.model.onnx_runtime import OnnxFusion
    from regionspot.predictor import RegionPredictor

FUSION_PREFIX = "fusion."


class RegionSpot(nn.Module):
    """The whole model. Parts are built outside and injected; only ``fusion`` is trainable.

    ``image_encoder`` may be None (the paper's "no CLIP vision" ablation, Table 4a): regions then
    see no CLIP memory and the head learns from SAM tokens alone. A
    :class:`~regionspot.model.recognizer.Recognizer` (method ``"regionspot"``): ``origin`` says
    where the head's weights came from (``{"head": "untrained"}`` until loaded).
    """

    method = "regionspot"

    def __init__(
        self,
        config: RegionSpotConfig,
        region_tokenizer: RegionTokenizer,
        image_encoder: ImageMemoryEncoder | None,
        text_embedder: TextEmbedder,
        fusion: RegionFusion | OnnxFusion | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.region_tokenizer = region_tokenizer
        self.image_encoder = None if image_encoder is None else REGIONSPOT_CLIP.require(image_encoder)
        self.text_embedder = text_embedder
        self.fusion = fusion if fusion is not None else RegionFusion(config.fusion,
                                                                      cross_attention=image_encoder is not None)
        self._check_widths()
        self.eval()  # inference by default; a training loop calls .train() (backbones stay frozen)
        self.precision = "fp32"
        self.origin: dict[str, Any] = {"head": "untrained"}
        self._text_memo = TextEmbeddingMemo()

    def _check_widths(self) -> None:
        fusion = self.fusion.config
        problems = []
        if self.region_tokenizer.token_dim != fusion.token_dim:
            problems.append(f"SAM token width {self.region_tokenizer.token_dim} != fusion.token_dim {fusion.token_dim}")
        if self.image_encoder is not None and self.image_encoder.width != fusion.width:
            problems.append(f"CLIP vision width {self.image_encoder.width} != fusion.width {fusion.width}")
        if self.text_embedder.embed_dim != fusion.text_dim:
            problems.append(f"text width {self.text_embedder.embed_dim} != fusion.text_dim {fusion.text_dim}")
        if problems:
            raise ConfigError("backbones do not fit the fusion head: " + "; ".join(problems)
                              + " (load the head with the backbones it was trained with)")

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_config(cls, config: RegionSpotConfig) -> RegionSpot:
        """Build the backbones named in ``config`` and a fresh (randomly initialised) head."""
        from regionspot.backbones.clip_vision import build_image_memory_encoder
        from regionspot.backbones.sam import build_region_tokenizer
        from regionspot.backbones.text import build_text_embedder

        built = backbone_config(config)
        region_tokenizer = build_region_tokenizer(built.sam)
        image_encoder = build_image_memory_encoder(built.clip)
        text_embedder = build_text_embedder(built.text, built.clip.name_or_path)
        return cls(config, region_tokenizer, image_encoder, text_embedder)

    @classmethod
    def from_backbones(
        cls,
        sam: str = SamBackboneConfig.name_or_path,
        clip: str = ClipBackboneConfig.name_or_path,
        *,
        token_place: TokenPlace = "transformer",
        multimask: bool = False,
        text: TextConfig | None = None,
        fusion: FusionConfig | None = None,
        clip_vision: bool = True,
        overrides: Sequence[str] = (),
    ) -> RegionSpot:
        """A fresh head on the given backbones (Hub ids, local folders or original ``.pt`` for
        SAM). The head's widths (token, CLIP vision, text) are read off the backbones."""
        from regionspot.backbones.clip_vision import build_image_memory_encoder
        from regionspot.backbones.sam import build_region_tokenizer
        from regionspot.backbones.text import build_text_embedder

        config = RegionSpotConfig(
            sam=SamBackboneConfig(name_or_path=str(sam), token_place=token_place, multimask=multimask),
            clip=ClipBackboneConfig(name_or_path=str(clip), enabled=clip_vision),
            text=text or TextConfig(),
            fusion=fusion or FusionConfig(),
        )
        config = apply_overrides(config, list(overrides))
        region_tokenizer = build_region_tokenizer(config.sam)
        image_encoder = build_image_memory_encoder(config.clip)
        text_embedder = build_text_embedder(config.text, config.clip.name_or_path)
        config.fusion = fitted_fusion_config(config.fusion, region_tokenizer, image_encoder, text_embedder)
        config.sam = recorded_sam_config(config.sam, region_tokenizer)
        return cls(config, region_tokenizer, image_encoder, text_embedder)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, overrides: Sequence[str] = ()) -> RegionSpot:
        """Load a trained head from a checkpoint folder or Hub repo, building the backbones its
        config names. ``overrides`` (``"sam.name_or_path=/local/sam"``) change backbone fields,
        for example to point at a local copy; weights are loaded strictly."""
        from regionspot.backbones.loading import BackboneLoadError

        folder = resolve_checkpoint(name_or_path)
        config, state = read_checkpoint(folder)
        config = apply_overrides(config, list(overrides))
        try:
            model = cls.from_config(config)
        except BackboneLoadError as exc:
            raise BackboneLoadError(f"{exc} (a backbone named by the checkpoint {folder}; give another with --sam / "
                                    "--clip, or --set sam.name_or_path=... / clip.name_or_path=...)") from None
        model.load_head_state(state, what=f"checkpoint {folder}")
        model.origin = {"head": "checkpoint", "checkpoint": str(name_or_path)}
        return model

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (fusion weights only) to ``folder``."""
        describe = {"backbones": self.describe_backbones()}
        return write_checkpoint(folder, self.config, self.head_state(), extra=describe)

    # ----------------------------------------------------------------- weights
    def head_state(self) -> dict[str, torch.Tensor]:
        """The trainable weights, keyed ``fusion.*``."""
        return {FUSION_PREFIX + k: v for k, v in self.fusion.state_dict().items()}

    def load_head_state(self, state: dict[str, torch.Tensor], what: str = "checkpoint") -> None:
        """Load ``fusion.*`` weights strictly (missing/unexpected keys raise CheckpointError)."""
        fusion_state = {k[len(FUSION_PREFIX):] if k.startswith(FUSION_PREFIX) else k: v for k, v in state.items()}
        load_strict(self.fusion, fusion_state, what=f"the fusion head from {what}")

    def trainable_parameter_count(self) -> int:
        return count_parameters(self.fusion)

    def describe_backbones(self) -> dict[str, Any]:
        return {
            "sam": self.region_tokenizer.describe(),
            "clip_vision": self.image_encoder.describe() if self.image_encoder is not None else None,
            "text": self.text_embedder.describe(),
        }

    def describe(self) -> dict[str, Any]:
        """What answers (for outputs and reports): method, head origin, input mode, backbones."""
        return {"method": self.method, "trained": self.origin.get("head") != "untrained", "origin": dict(self.origin),
                "inputs": self.config.inputs, "score_kind": self.score_kind, "precision": self.precision,
                "backbones": self.describe_backbones()}

    # ----------------------------------------------------------------- the Recognizer interface
    @property
    def score_kind(self) -> str:
        """``sigmoid`` (per region and name) or ``softmax`` (over the vocabulary), by the config."""
        return self.config.fusion.score_function

    @property
    def needs_region_masks(self) -> bool:
        return False

    @property
    def has_attention(self) -> bool:
        return self.image_encoder is not None

    def text_embeddings(self, names: Sequence[str]) -> torch.Tensor:
        """Unit text embeddings [N, text_dim] float32 on the model's device, memoised per vocabulary."""
        return self._text_memo.embeddings(self.text_embedder, names, self.device)

    def input_frame(self, image: np.ndarray) -> np.ndarray:
        """The image both towers see: ``image`` itself, or with ``inputs="official"`` detectron2's
        800/1333 test resize of it (:mod:`regionspot.ops.official_inputs`)."""
        return detectron2_test_resize(image) if self.config.inputs == "official" else image

    def encode_context(self, image: np.ndarray) -> torch.Tensor | None:
        """The CLIP memory [1, T, width] of an HxWx3 uint8 image (the input frame), or None
        without CLIP vision. ``inputs="official"``: the authors' tensor resize and OpenAI CLIP's
        mean/std instead of the tower's own preprocessing."""
        return self.encode_contexts([image])[0]

    def encode_contexts(self, images: Sequence[np.ndarray]) -> list[torch.Tensor | None]:
        """:meth:`encode_context` of several images, through the CLIP tower in one batch."""
        encoder = self.image_encoder
        if encoder is None:
            return [None] * len(images)
        if self.config.inputs == "official":
            pixels = [tensor_resize_clip_pixels(image, encoder.image_size, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
                      for image in images]
        else:
            pixels = [encoder.preprocess(image) for image in images]
        memory = encoder.encode_image(torch.stack(pixels).to(self.device))
        return list(memory.split(1))

    def score_regions(self, batch: RegionBatch) -> RegionScores:
        """The head on the batch's tokens and memory: all regions together (they attend to each
        other when region self-attention is on) or each alone; scores by ``fusion.score_function``."""
        tokens = batch.tokens.to(self.device)
        if batch.together:
            embeddings, attention = self.fusion(tokens.unsqueeze(0), batch.context,
                                                need_attention=batch.with_attention)
            embeddings, attention = embeddings[0], (None if attention is None else attention[0])
        else:
            embeddings, attention = self._fuse_alone(tokens, batch.context, batch.with_attention)
        if attention is not None and self.config.clip.use_class_token:
            attention = attention[:, 1:]  # the patch grid only
        with full_precision(self.device):  # half precision stops before the scores
            scores = self.fusion.scores(embeddings.float(), batch.text.float())
        return RegionScores(scores, attention)

    def _fuse_alone(self, tokens: torch.Tensor, memory: torch.Tensor | None, with_attention: bool,
                    chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Every region through the head on its own (a batch of one-region images): tokens
        [R, token_dim] -> embeddings [R, text_dim] and attention [R, T] or None."""
        outputs, maps = [], []
        for part in tokens.split(chunk):
            part_memory = None if memory is None else memory.expand(part.shape[0], -1, -1)
            embeddings, attention = self.fusion(part.unsqueeze(1), part_memory, need_attention=with_attention)
            outputs.append(embeddings[:, 0])
            if attention is not None:
                maps.append(attention[:, 0])
        return torch.cat(outputs, dim=0), (torch.cat(maps, dim=0) if maps else None)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> RegionSpot:
        """``.to()``, ``.cuda()``, ``.cpu()`` move the memoised text embeddings with the head."""
        super()._apply(fn, recurse)
        self._text_memo.to(self.device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.fusion.parameters()).device

    def predictor(self, region_batch_size: int = 64) -> RegionPredictor:
        """A :class:`~regionspot.predictor.RegionPredictor`: encode an image once, then ask about
        any boxes and vocabularies."""
        from regionspot.predictor import RegionPredictor

        return RegionPredictor(self, region_batch_size=region_batch_size)


def fitted_fusion_config(
    fusion: FusionConfig,
    region_tokenizer: RegionTokenizer,
    image_encoder: ImageMemoryEncoder | None,
    text_embedder: TextEmbedder,
) -> FusionConfig:
    """``fusion`` with token/width/text widths read off the backbones (width kept as given
    when there is no CLIP vision tower)."""
    width = image_encoder.width if image_encoder is not None else fusion.width
    return dataclasses.replace(
        fusion, token_dim=region_tokenizer.token_dim, width=width, text_dim=text_embedder.embed_dim
    )


def recorded_sam_config(sam: SamBackboneConfig, region_tokenizer: RegionTokenizer) -> SamBackboneConfig:
    """``sam`` with the decoder LayerNorm eps the tokenizer runs with recorded (when it reports
    one), so a head saved from this model runs with the eps its tokens were made with."""
    eps = decoder_eps(region_tokenizer)
    return sam if eps is None else dataclasses.replace(sam, decoder_layer_norm_eps=eps)


def decoder_eps(region_tokenizer: RegionTokenizer) -> float | None:
    """The SAM decoder LayerNorm eps the tokenizer reports in ``describe()``, or None."""
    eps = region_tokenizer.describe().get("decoder_layer_norm_eps")
    return float(eps) if isinstance(eps, int | float) and not isinstance(eps, bool) else None
