"""Position-aware region tokens: SAM's prompt encoder + mask decoder run per box.

The weights live in Hugging Face's ``SamPromptEncoder``, ``SamMaskDecoder`` and
``SamPositionalEmbedding`` (so the HF key layout is ours), but the forward is written here, over
their submodules, so the token can be read at the three places of the paper's Table 4b:

* ``"prompt_encoder"``: the box's sparse prompt embedding, the mean of its two corner
  embeddings (``hidden`` = 256 wide);
* ``"transformer"`` (default; the paper's choice): the chosen mask token as it leaves the
  decoder's two-way transformer, after the final token-to-image attention and final LayerNorm, before the
  hypernetwork MLP (256 wide);
* ``"hypernet_mlp"``: the output of that mask token's hypernetwork MLP (``hidden / 8`` = 32).

Mask choice: single-mask mode (``multimask=False``) uses mask token 0 and its mask, as SAM does
for unambiguous prompts such as boxes. Multi-mask mode runs SAM's three ambiguity-aware tokens
(1..3) and keeps, per box, the one whose predicted IoU is highest; the token, mask and score
all come from that same output.

Each box is decoded on its own (its tokens never see another box), batched in chunks of
``chunk_size`` boxes to bound memory, so a box's outputs do not depend on the others sent with it.

Point prompts (``decode_points``, used for class-agnostic proposals): each point is one positive
point followed by SAM's padding point, decoded in multi-mask mode; all three masks and their
predicted IoU are returned, as ``SamModel(input_points=..., multimask_output=True)`` gives them.

Also here, shared by every SAM-family adapter: the image pre-processing (longest side to 1024,
SAM mean/std, zero padding bottom/right), box scaling, mask post-processing, and
the frozen ``RegionTokenizer`` built from any image encoder plus a :class:`SamPromptHead` lives in
:mod:`regionspot.backbones.sam_tokenizer` (``sam_hf`` and ``mobile_sam`` only build and load the modules).
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn
from transformers import SamConfig, SamMaskDecoderConfig, SamModel, SamVisionConfig
from transformers.models.sam.modeling_sam import SamMaskDecoder, SamPositionalEmbedding, SamPromptEncoder

from regionspot.backbones.protocols import RegionTokens
from regionspot.backbones.sam_convert import sam_sub_config
from regionspot.backbones.sam_two_way import Workspace, two_way_transformer
from regionspot.backbones.sam_upscale import upscaled_mask_logits
from regionspot.config import TOKEN_PLACES
from regionspot.devices import full_precision


def check_token_place(token_place: str) -> str:
    """``token_place`` if it is one of ``regionspot.config.TOKEN_PLACES``, else ValueError."""
    if token_place not in TOKEN_PLACES:
        raise ValueError(f"token_place {token_place!r} is not one of {list(TOKEN_PLACES)}")
    return token_place


class SamPromptHead(nn.Module):
    """SAM's prompt encoder and mask decoder, giving one token, mask and IoU score per box.

    Parameters (HF ``SamModel`` key names): ``shared_image_embedding.*`` (random-Fourier
    positional encoding, tied with ``prompt_encoder.shared_embedding.*``), ``prompt_encoder.*``,
    ``mask_decoder.*``.
    """

    def __init__(self, positional: SamPositionalEmbedding, prompt_encoder: SamPromptEncoder,
                 mask_decoder: SamMaskDecoder, token_place: str = "transformer", multimask: bool = False,
                 chunk_size: int = 32) -> None:
        super().__init__()
        self.shared_image_embedding = positional
        self.prompt_encoder = prompt_encoder
        if prompt_encoder.shared_embedding.positional_embedding is not positional.positional_embedding:
            self.prompt_encoder.shared_embedding = positional  # one matrix, tied as in SamModel
        self.mask_decoder = mask_decoder
        self.token_place = check_token_place(token_place)
        self.multimask = bool(multimask)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = chunk_size

    @classmethod
    def from_config(cls, config: SamConfig, token_place: str = "transformer", multimask: bool = False,
                    chunk_size: int = 32) -> SamPromptHead:
        """Fresh (randomly initialised) modules shaped by ``config``; load weights afterwards."""
        decoder_config = sam_sub_config(config, "mask_decoder_config", SamMaskDecoderConfig)
        decoder_config._attn_implementation = config._attn_implementation or "sdpa"
        positional = SamPositionalEmbedding(sam_sub_config(config, "vision_config", SamVisionConfig))
        return cls(positional, SamPromptEncoder(config), SamMaskDecoder(decoder_config), token_place, multimask,
                   chunk_size)

    @classmethod
    def from_sam_model(cls, model: SamModel, token_place: str = "transformer", multimask: bool = False,
                       chunk_size: int = 32) -> SamPromptHead:
        """A head that shares (does not copy) ``model``'s prompt encoder and mask decoder."""
        return cls(model.shared_image_embedding, model.prompt_encoder, model.mask_decoder,
                   token_place, multimask, chunk_size)

    @property
    def hidden_size(self) -> int:
        return self.mask_decoder.hidden_size

    @property
    def token_dim(self) -> int:
        """256 for ``prompt_encoder``/``transformer``, ``hidden / 8`` (32) for ``hypernet_mlp``."""
        return self.hypernet_dim if self.token_place == "hypernet_mlp" else self.hidden_size

    @property
    def hypernet_dim(self) -> int:
        """Output width of the mask decoder's hypernetwork MLPs (``hidden / 8``)."""
        proj_out = self.mask_decoder.output_hypernetworks_mlps[0].proj_out
        return int(cast(nn.Linear, proj_out).out_features)

    def _point_embedding(self, label: int) -> torch.Tensor:
        """``[1, C]``: SAM's learned embedding for point label ``label`` (2, 3: box corners)."""
        return cast(nn.Embedding, self.prompt_encoder.point_embed[label]).weight

    @property
    def decoder_layer_norm_eps(self) -> float:
        """The eps of the two-way transformer's block LayerNorms (see :meth:`set_decoder_layer_norm_eps`)."""
        return float(self._block_norms()[0].eps)

    def set_decoder_layer_norm_eps(self, eps: float) -> None:
        """Set the eps of every two-way transformer block's four LayerNorms: 1e-5 in the original
        SAM code, ``layer_norm_eps`` (1e-6 by default) in a ``transformers`` SAM config. The final
        token-to-image norm is 1e-5 in both and is left alone."""
        for norm in self._block_norms():
            norm.eps = float(eps)

    def _block_norms(self) -> list[nn.LayerNorm]:
        layers = self.mask_decoder.transformer.layers
        return [cast(nn.LayerNorm, getattr(layer, f"layer_norm{i}")) for layer in layers for i in range(1, 5)]

    @property
    def input_image_size(self) -> int:
        """Side of the square (padded) encoder input the box coordinates refer to (1024)."""
        return int(self.prompt_encoder.input_image_size)

    def dense_positional_encoding(self, height: int, width: int) -> torch.Tensor:
        """``[1, C, height, width]`` encoding of the image-embedding grid (cell centres in [0,1])."""
        weight = self.shared_image_embedding.positional_embedding
        ys = (torch.arange(height, device=weight.device, dtype=weight.dtype) + 0.5) / height
        xs = (torch.arange(width, device=weight.device, dtype=weight.dtype) + 0.5) / width
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # [h, w, (x, y)]
        return self.fourier_features(grid).permute(2, 0, 1).unsqueeze(0)

    def fourier_features(self, coords: torch.Tensor) -> torch.Tensor:
        """SAM's random Fourier encoding of ``[..., 2]`` coordinates in [0, 1] -> ``[..., C]``,
        always in float32: under half-precision autocast, sin/cos of bf16 arguments of up to ~10
        lose about 0.05, which moved tiny-model tokens by 20% in a test."""
        with full_precision(coords.device):
            return self.shared_image_embedding(coords.float())

    def embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """``[R, 4]`` xyxy boxes in the encoder-input frame (pixels of the resized image, before
        padding) -> ``[R, 2, C]`` corner embeddings (top-left, bottom-right)."""
        corners = (boxes + 0.5).reshape(-1, 2, 2) / self.input_image_size  # pixel centres, in [0, 1]
        embedding = self.fourier_features(corners)
        return embedding + torch.cat([self._point_embedding(2), self._point_embedding(3)], dim=0)

    def forward(self, image_embeddings: torch.Tensor, boxes: torch.Tensor, with_masks: bool = True) -> RegionTokens:
        """``image_embeddings``: ``[1, C, h, w]`` of one image; ``boxes``: ``[R, 4]`` xyxy in the
        encoder-input frame. Returns tokens ``[R, token_dim]``, predicted IoU ``[R]`` and, when
        ``with_masks``, mask logits ``[R, 4h, 4w]`` (padded input frame; else None)."""
        if image_embeddings.dim() != 4 or image_embeddings.shape[0] != 1:
            raise ValueError(f"image_embeddings must be [1, C, h, w], got {tuple(image_embeddings.shape)}")
        if boxes.dim() != 2 or boxes.shape[-1] != 4 or boxes.shape[0] < 1:
            raise ValueError(f"boxes must be [R, 4] with R >= 1, got {tuple(boxes.shape)}")
        workspace = Workspace.for_inference(image_embeddings.device)
        parts = [self.decode_boxes(image_embeddings, chunk, with_masks, workspace)
                 for chunk in boxes.split(self.chunk_size)]
        tokens, masks, scores = zip(*parts, strict=True)
        return RegionTokens(tokens=torch.cat(tokens), mask_logits=torch.cat(masks) if with_masks else None,
                            mask_scores=torch.cat(scores))

    def decode_boxes(self, image_embeddings: torch.Tensor, boxes: torch.Tensor, with_masks: bool,
                     workspace: Workspace | None = None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """All ``boxes`` [n, 4] (encoder-input frame) at once, unchecked and unchunked (what
        :meth:`forward` does per chunk, and what the ONNX graphs trace): tokens [n, d], mask
        logits [n, 4h, 4w] or None, predicted IoU [n]. ``workspace``: buffers shared with the
        other chunks of the same call (None: fresh tensors, as tracing needs)."""
        image, image_pe, grid = self._image_side(image_embeddings)
        return self._decode(image, image_pe, grid, boxes, with_masks, workspace or Workspace(reuse=False))

    def embed_points(self, points: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``[R, P, 2]`` xy points in the encoder-input frame (``[P, 2]``: P regions of one point)
        and their labels ``[R, P]`` (1 foreground, 0 background, -1 no point: ignored, as SAM's
        padding; None: all 1) -> ``[R, P + 1, C]``: the points followed by SAM's padding point
        (label -1), which SAM's prompt encoder appends when no box comes with the points."""
        if points.dim() == 2:
            points = points[:, None]
        if labels is None:
            labels = torch.ones(points.shape[:2], dtype=torch.long, device=points.device)
        coords = (points + 0.5) / self.input_image_size  # pixel centres, in [0, 1]
        positive = (labels == 1)[..., None]
        embedded = self.fourier_features(coords) + torch.where(positive, self._point_embedding(1),
                                                                self._point_embedding(0))
        no_point = self.prompt_encoder.not_a_point_embed.weight
        embedded = torch.where((labels == -1)[..., None], no_point.expand_as(embedded), embedded)
        padding = self.prompt_encoder.not_a_point_embed.weight.expand(points.shape[0], 1, -1)
        return torch.cat([embedded, padding], dim=1)

    def decode_points(self, image_embeddings: torch.Tensor, points: torch.Tensor,
                      labels: torch.Tensor | None = None, single: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Point prompts decoded in SAM's multi-mask mode, each region on its own.

        ``image_embeddings``: ``[1, C, h, w]`` of one image; ``points``: ``[P, 2]`` xy in the
        encoder-input frame (P regions, each one foreground point) or ``[R, P, 2]`` with
        ``labels`` ``[R, P]`` (1 foreground, 0 background; None: all foreground). Returns mask
        logits ``[R, K, 4h, 4w]`` (padded input frame) and predicted IoU ``[R, K]`` of the K = 3
        ambiguity-aware outputs (mask tokens 1..3), or with ``single`` of SAM's one output for
        unambiguous prompts (K = 1, mask token 0)."""
        if image_embeddings.dim() != 4 or image_embeddings.shape[0] != 1:
            raise ValueError(f"image_embeddings must be [1, C, h, w], got {tuple(image_embeddings.shape)}")
        grouped = points[:, None] if points.dim() == 2 else points
        if grouped.dim() != 3 or grouped.shape[-1] != 2 or grouped.shape[0] < 1 or grouped.shape[1] < 1:
            raise ValueError(f"points must be [P, 2] or [R, P, 2] with R, P >= 1, got {tuple(points.shape)}")
        if labels is None:
            labels = torch.ones(grouped.shape[:2], dtype=torch.long, device=grouped.device)
        if tuple(labels.shape) != tuple(grouped.shape[:2]):
            raise ValueError(f"labels must be [R, P] = {list(grouped.shape[:2])}, got {tuple(labels.shape)}")
        image, image_pe, grid = self._image_side(image_embeddings)
        workspace = Workspace.for_inference(image_embeddings.device)
        parts = [self._decode_points(image, image_pe, grid, self.embed_points(chunk, chunk_labels), single, workspace)
                 for chunk, chunk_labels in zip(grouped.split(self.chunk_size), labels.split(self.chunk_size),
                                                strict=True)]
        masks, ious = zip(*parts, strict=True)
        return torch.cat(masks), torch.cat(ious)

    def refine_points(self, image_embeddings: torch.Tensor, points: torch.Tensor, labels: torch.Tensor,
                      previous: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM's interactive step: the clicks ``[R, P, 2]`` (encoder-input frame) with labels
        ``[R, P]`` decoded together with each region's previous low-res mask logits ``[R, m, m]``
        as the mask prompt, in single-output mode. Returns logits ``[R, 1, m, m]`` and IoU
        ``[R, 1]``. Runs ``transformers``' own prompt encoder and mask decoder (a few regions)."""
        count = points.shape[0]
        height, width = image_embeddings.shape[-2:]
        sparse, dense = self.prompt_encoder(input_points=points[:, None], input_labels=labels[:, None],
                                            input_boxes=None, input_masks=previous[:, None])
        masks, iou = self.mask_decoder(
            image_embeddings=image_embeddings.expand(count, -1, -1, -1),
            image_positional_embeddings=self.dense_positional_encoding(height, width).expand(count, -1, -1, -1),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False)[:2]
        return masks[:, 0], iou[:, 0]

    def _image_side(self, image_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """``[1, C, h, w]`` -> (image with the no-mask dense prompt added ``[1, h*w, C]``, its
        positional encoding ``[1, h*w, C]``, (h, w))."""
        _, _, height, width = image_embeddings.shape
        src = image_embeddings + self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        pos = self.dense_positional_encoding(height, width)
        image = src.flatten(2).transpose(1, 2).contiguous()
        image_pe = pos.flatten(2).transpose(1, 2).contiguous()
        return image, image_pe, (height, width)

    def _decode_points(self, image: torch.Tensor, image_pe: torch.Tensor, grid: tuple[int, int],
                       sparse: torch.Tensor, single: bool, workspace: Workspace) -> tuple[torch.Tensor, torch.Tensor]:
        """One chunk of n point prompts (``sparse`` ``[n, P + 1, C]``), each decoded on its own:
        masks ``[n, K, 4h, 4w]``, IoU ``[n, K]``; K = 3 (mask tokens 1..3), or 1 with ``single``
        (mask token 0, SAM's choice for unambiguous prompts such as several clicks)."""
        decoder = self.mask_decoder
        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight])  # [1 + M, C]
        queries = torch.cat([output_tokens.expand(sparse.shape[0], -1, -1), sparse], dim=1)
        hidden, image_out = two_way_transformer(decoder.transformer, queries, image, image_pe,
                                                final_tokens=2 if single else output_tokens.shape[0],
                                                workspace=workspace)
        mlps = decoder.output_hypernetworks_mlps
        kept = [0] if single else list(range(1, len(mlps)))
        iou = decoder.iou_prediction_head(hidden[:, 0])[:, kept]  # [n, K]
        hyper = torch.stack([mlps[k](hidden[:, 1 + k]) for k in kept], dim=1)  # [n, K, C/8]
        return upscaled_mask_logits(decoder, image_out, grid, hyper, per_box=workspace.reuse), iou

    def _decode(self, image: torch.Tensor, image_pe: torch.Tensor, grid: tuple[int, int], boxes: torch.Tensor,
                with_masks: bool, workspace: Workspace) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """One chunk of n boxes, each decoded independently of the others: token ``[n, d]``,
        mask ``[n, 4h, 4w]`` or None, IoU ``[n]``. ``image``/``image_pe``: ``[1, h*w, C]``."""
        decoder = self.mask_decoder
        n = boxes.shape[0]
        sparse = self.embed_boxes(boxes)  # [n, 2, C]
        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight])  # [1 + M, C]
        queries = torch.cat([output_tokens.expand(n, -1, -1), sparse], dim=1)  # [n, T, C]
        # the final attention runs only for the tokens read: IoU + chosen mask token(s)
        hidden, image_out = two_way_transformer(decoder.transformer, queries, image, image_pe,
                                                final_tokens=output_tokens.shape[0] if self.multimask else 2,
                                                workspace=workspace)
        iou = decoder.iou_prediction_head(hidden[:, 0])  # [n, M]
        rows = torch.arange(n, device=boxes.device)
        if self.multimask:
            choice = 1 + iou[:, 1:].argmax(dim=1)
        else:
            choice = torch.zeros(n, dtype=torch.long, device=boxes.device)
        mask_token = hidden[rows, 1 + choice]  # [n, C]
        needs_hyper = with_masks or self.token_place == "hypernet_mlp"
        hyper = self._hypernetwork(mask_token, choice) if needs_hyper else None  # [n, C/8]
        masks = self._masks(image_out, hyper, grid, workspace.reuse) if hyper is not None and with_masks else None
        if self.token_place == "prompt_encoder":
            token = sparse.mean(dim=1)
        elif self.token_place == "transformer":
            token = mask_token
        else:
            assert hyper is not None  # computed above for the hypernet_mlp place
            token = hyper
        return token, masks, iou[rows, choice]

    def _hypernetwork(self, mask_token: torch.Tensor, choice: torch.Tensor) -> torch.Tensor:
        """Run each box's chosen mask token through that token's hypernetwork MLP: ``[n, C/8]``.
        (Every MLP on every row, then a gather: no data-dependent shapes, so it exports to ONNX.)"""
        mlps = self.mask_decoder.output_hypernetworks_mlps
        if not self.multimask:
            return mlps[0](mask_token)  # the choice is always token 0
        outputs = torch.stack([mlp(mask_token) for mlp in mlps], dim=1)  # [n, M, C/8]
        return outputs[torch.arange(mask_token.shape[0], device=choice.device), choice]

    def _masks(self, image: torch.Tensor, hyper: torch.Tensor, grid: tuple[int, int], per_box: bool) -> torch.Tensor:
        """Upscale the transformer's image tokens ``[n, h*w, C]`` 4x and take the dot product with
        ``hyper`` ``[n, C/8]``: mask logits ``[n, 4h, 4w]``."""
        return upscaled_mask_logits(self.mask_decoder, image, grid, hyper[:, None], per_box)[:, 0]
