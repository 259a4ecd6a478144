"""Key mapping between the original segment-anything checkpoint layout and Hugging Face ``SamModel``.

The Hugging Face layout is the library's canonical one. Original checkpoints
(``sam_vit_b_01ec64.pth``-style files, MobileSAM's ``mobile_sam.pt``) name the same tensors
differently; this module renames them in both directions with one rule table, so the inverse is
exactly the forward mapping read backwards. Everything here is a pure function over state dicts
(loading into modules is :func:`regionspot.weights.load_strict`).

Covered: the prompt encoder and mask decoder of every SAM variant (MobileSAM included) and the
ViT image encoder of SAM ViT-B/L/H. The TinyViT encoder of MobileSAM keeps its original key
names (see :mod:`regionspot.backbones.tiny_vit`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TypeVar

import torch
from transformers import SamConfig, SamMaskDecoderConfig, SamPromptEncoderConfig, SamVisionConfig

from regionspot.weights import CheckpointError, preview

StateDict = dict[str, torch.Tensor]

SubConfig = TypeVar("SubConfig", SamVisionConfig, SamPromptEncoderConfig, SamMaskDecoderConfig)

PE_ORIGINAL = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
PE_HF = ("shared_image_embedding.positional_embedding", "prompt_encoder.shared_embedding.positional_embedding")
MLP_ORIGINAL = re.compile(
    r"^mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.layers\.(\d+)\.(\w+)$")
MLP_HF = re.compile(
    r"^mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.(proj_in|proj_out|layers\.\d+)\.(\w+)$")

# (original template, Hugging Face template). "{name}" matches one dotted segment and is carried over.
_PROMPT_DECODER_RULES: tuple[tuple[str, str], ...] = (
    ("prompt_encoder.point_embeddings.{i}.weight", "prompt_encoder.point_embed.{i}.weight"),
    ("prompt_encoder.not_a_point_embed.weight", "prompt_encoder.not_a_point_embed.weight"),
    ("prompt_encoder.no_mask_embed.weight", "prompt_encoder.no_mask_embed.weight"),
    ("prompt_encoder.mask_downscaling.0.{p}", "prompt_encoder.mask_embed.conv1.{p}"),
    ("prompt_encoder.mask_downscaling.1.{p}", "prompt_encoder.mask_embed.layer_norm1.{p}"),
    ("prompt_encoder.mask_downscaling.3.{p}", "prompt_encoder.mask_embed.conv2.{p}"),
    ("prompt_encoder.mask_downscaling.4.{p}", "prompt_encoder.mask_embed.layer_norm2.{p}"),
    ("prompt_encoder.mask_downscaling.6.{p}", "prompt_encoder.mask_embed.conv3.{p}"),
    ("mask_decoder.iou_token.weight", "mask_decoder.iou_token.weight"),
    ("mask_decoder.mask_tokens.weight", "mask_decoder.mask_tokens.weight"),
    ("mask_decoder.transformer.layers.{i}.{attn}.{proj}.{p}", "mask_decoder.transformer.layers.{i}.{attn}.{proj}.{p}"),
    ("mask_decoder.transformer.layers.{i}.norm{k}.{p}", "mask_decoder.transformer.layers.{i}.layer_norm{k}.{p}"),
    ("mask_decoder.transformer.final_attn_token_to_image.{proj}.{p}",
     "mask_decoder.transformer.final_attn_token_to_image.{proj}.{p}"),
    ("mask_decoder.transformer.norm_final_attn.{p}", "mask_decoder.transformer.layer_norm_final_attn.{p}"),
    ("mask_decoder.output_upscaling.0.{p}", "mask_decoder.upscale_conv1.{p}"),
    ("mask_decoder.output_upscaling.1.{p}", "mask_decoder.upscale_layer_norm.{p}"),
    ("mask_decoder.output_upscaling.3.{p}", "mask_decoder.upscale_conv2.{p}"),
)

_VIT_RULES: tuple[tuple[str, str], ...] = (
    ("image_encoder.patch_embed.proj.{p}", "vision_encoder.patch_embed.projection.{p}"),
    ("image_encoder.pos_embed", "vision_encoder.pos_embed"),
    ("image_encoder.blocks.{i}.norm{k}.{p}", "vision_encoder.layers.{i}.layer_norm{k}.{p}"),
    ("image_encoder.blocks.{i}.attn.{proj}.{p}", "vision_encoder.layers.{i}.attn.{proj}.{p}"),
    ("image_encoder.blocks.{i}.attn.{rel}", "vision_encoder.layers.{i}.attn.{rel}"),
    ("image_encoder.blocks.{i}.mlp.{lin}.{p}", "vision_encoder.layers.{i}.mlp.{lin}.{p}"),
    ("image_encoder.neck.0.weight", "vision_encoder.neck.conv1.weight"),
    ("image_encoder.neck.1.{p}", "vision_encoder.neck.layer_norm1.{p}"),
    ("image_encoder.neck.2.weight", "vision_encoder.neck.conv2.weight"),
    ("image_encoder.neck.3.{p}", "vision_encoder.neck.layer_norm2.{p}"),
)

# Original SAM builds the two-way transformer's LayerNorms with PyTorch's default eps (1e-5);
# Hugging Face uses the config value (1e-6 by default). Converted checkpoints keep the original.
ORIGINAL_DECODER_LAYER_NORM_EPS = 1e-5
SAM_VIT_VARIANTS: dict[tuple[int, int], str] = {(768, 12): "vit_b", (1024, 24): "vit_l", (1280, 32): "vit_h"}


def _compile(template: str) -> re.Pattern[str]:
    pattern = re.escape(template)
    pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^.]+)", pattern)
    return re.compile(f"^{pattern}$")


_RULES = tuple((_compile(o), o, _compile(h), h) for o, h in _PROMPT_DECODER_RULES + _VIT_RULES)


def _rename(key: str, to_hf: bool) -> str | None:
    """The renamed key by the rule table, or None when no rule matches."""
    for original_re, original, hf_re, hf in _RULES:
        match = (original_re if to_hf else hf_re).match(key)
        if match:
            return (hf if to_hf else original).format(**match.groupdict())
    return None


def _mlp_depths(keys: list[str], pattern: re.Pattern[str], hf: bool) -> dict[str, int]:
    """Number of linear layers of each mask-decoder MLP (hypernetworks and IoU head).

    Original layout: ``layers.0 .. layers.{n-1}``. HF layout: ``proj_in``, ``layers.0 ..
    layers.{n-3}``, ``proj_out``.
    """
    depths: dict[str, int] = {}
    for key in keys:
        match = pattern.match(key)
        if not match:
            continue
        name, layer = match.group(1), match.group(2)
        if not hf:
            count = int(layer) + 1
        elif layer.startswith("layers."):
            count = int(layer.split(".")[1]) + 3
        else:
            count = 2
        depths[name] = max(depths.get(name, 0), count)
    return depths


def original_to_hf(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Rename an original-layout SAM state dict (``prompt_encoder.*``, ``mask_decoder.*`` and,
    for ViT SAM, ``image_encoder.*``) to the Hugging Face ``SamModel`` layout.

    The original positional-encoding matrix feeds two tied HF keys. Raises
    :class:`CheckpointError` naming every key that no rule knows.
    """
    keys = list(state_dict)
    depths = _mlp_depths(keys, MLP_ORIGINAL, hf=False)
    out: StateDict = {}
    unknown: list[str] = []
    for key in keys:
        value = state_dict[key]
        if key == PE_ORIGINAL:
            out.update(dict.fromkeys(PE_HF, value))
            continue
        mlp = MLP_ORIGINAL.match(key)
        if mlp:
            name, layer, param = mlp.group(1), int(mlp.group(2)), mlp.group(3)
            last = depths[name] - 1
            part = "proj_in" if layer == 0 else "proj_out" if layer == last else f"layers.{layer - 1}"
            out[f"mask_decoder.{name}.{part}.{param}"] = value
            continue
        renamed = _rename(key, to_hf=True)
        if renamed is None:
            unknown.append(key)
        else:
            out[renamed] = value
    if unknown:
        raise CheckpointError(f"unknown key(s) in original SAM checkpoint: {preview(unknown)}")
    return out


def hf_to_original(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """The inverse of :func:`original_to_hf`: a Hugging Face ``SamModel`` (or prompt-head) state
    dict in the original segment-anything layout. The two tied positional-encoding keys must be
    equal and become one."""
    keys = list(state_dict)
    depths = _mlp_depths(keys, MLP_HF, hf=True)
    out: StateDict = {}
    unknown: list[str] = []
    pe = [state_dict[name] for name in PE_HF if name in state_dict]
    if pe:
        if any(not (other.is_meta or torch.equal(pe[0], other)) for other in pe[1:]):
            raise CheckpointError("the two tied positional-encoding matrices differ")
        out[PE_ORIGINAL] = pe[0]
    for key in keys:
        if key in PE_HF:
            continue
        mlp = MLP_HF.match(key)
        if mlp:
            name, part, param = mlp.groups()
            layer = 0 if part == "proj_in" else depths[name] - 1 if part == "proj_out" \
                else int(part.split(".")[1]) + 1
            out[f"mask_decoder.{name}.layers.{layer}.{param}"] = state_dict[key]
            continue
        renamed = _rename(key, to_hf=False)
        if renamed is None:
            unknown.append(key)
        else:
            out[renamed] = state_dict[key]
    if unknown:
        raise CheckpointError(f"unknown key(s) in Hugging Face SAM state dict: {preview(unknown)}")
    return out


def split_original(state_dict: Mapping[str, torch.Tensor]) -> tuple[StateDict, StateDict]:
    """Split an original-layout checkpoint into (``image_encoder.*`` with the prefix removed,
    prompt encoder + mask decoder keys unchanged). Any other top-level key is an error."""
    encoder: StateDict = {}
    head: StateDict = {}
    other: list[str] = []
    for key, value in state_dict.items():
        if key.startswith("image_encoder."):
            encoder[key[len("image_encoder."):]] = value
        elif key.startswith(("prompt_encoder.", "mask_decoder.")):
            head[key] = value
        else:
            other.append(key)
    if other:
        raise CheckpointError(f"unexpected key(s) in original SAM checkpoint: {preview(other)}")
    return encoder, head


def _count_indexed(state_dict: Mapping[str, torch.Tensor], pattern: str) -> int:
    regex = re.compile(pattern)
    indices = {int(m.group(1)) for m in map(regex.match, state_dict) if m}
    return max(indices) + 1 if indices else 0


def vision_config_from_original(state_dict: Mapping[str, torch.Tensor]) -> SamVisionConfig:
    """A ``SamVisionConfig`` read from the shapes of an original ViT ``image_encoder.*``.

    Hidden size from the patch projection, depth from the block count, head width from the
    relative-position tables, global-attention blocks from those tables' length (2*64-1 rows
    for a 64x64 grid, 2*window-1 for windowed blocks). Works on meta tensors.
    """
    try:
        return _vision_config_from_original(state_dict)
    except KeyError as exc:
        raise CheckpointError(f"not a ViT SAM image encoder: missing {exc.args[0]}") from None


def _vision_config_from_original(state_dict: Mapping[str, torch.Tensor]) -> SamVisionConfig:
    patch = state_dict["image_encoder.patch_embed.proj.weight"]
    pos = state_dict["image_encoder.pos_embed"]
    neck = state_dict["image_encoder.neck.0.weight"]
    hidden, patch_size, grid = patch.shape[0], patch.shape[-1], pos.shape[1]
    depth = _count_indexed(state_dict, r"^image_encoder\.blocks\.(\d+)\.")
    rel = [state_dict[f"image_encoder.blocks.{i}.attn.rel_pos_h"] for i in range(depth)]
    head_dim = rel[0].shape[1]
    global_blocks = [i for i, table in enumerate(rel) if table.shape[0] == 2 * grid - 1]
    windowed = [table.shape[0] for table in rel if table.shape[0] != 2 * grid - 1]
    window = (windowed[0] + 1) // 2 if windowed else 14
    return SamVisionConfig(
        hidden_size=hidden, num_hidden_layers=depth, num_attention_heads=hidden // head_dim,
        global_attn_indexes=global_blocks, window_size=window, patch_size=patch_size,
        image_size=grid * patch_size, output_channels=neck.shape[0],
        mlp_dim=state_dict["image_encoder.blocks.0.mlp.lin1.weight"].shape[0],
        num_pos_feats=state_dict[PE_ORIGINAL].shape[1] if PE_ORIGINAL in state_dict else 128,
    )


def sam_sub_config(config: SamConfig, name: str, kind: type[SubConfig]) -> SubConfig:
    """``config.<name>`` as ``kind``: transformers types a sub-config loosely (dict, config or
    None) although a built ``SamConfig`` always holds the config object."""
    sub_config = getattr(config, name)
    if not isinstance(sub_config, kind):
        raise TypeError(f"SamConfig.{name} is a {type(sub_config).__name__}, expected {kind.__name__}")
    return sub_config


def vit_variant_name(config: SamVisionConfig) -> str:
    """``vit_b``/``vit_l``/``vit_h`` for the released sizes, else ``vit_custom``."""
    return SAM_VIT_VARIANTS.get((config.hidden_size, config.num_hidden_layers), "vit_custom")


def sam_config_from_original(
    state_dict: Mapping[str, torch.Tensor], vision_config: SamVisionConfig | None = None
) -> SamConfig:
    """A ``SamConfig`` matching an original-layout checkpoint's prompt encoder and mask decoder
    (and its ViT encoder when ``vision_config`` is None and ``image_encoder.*`` ViT keys exist).

    The decoder's attention head count (8) is not visible in shapes; every released SAM uses 8.
    """
    try:
        return _sam_config_from_original(state_dict, vision_config)
    except KeyError as exc:
        raise CheckpointError(f"not a SAM prompt encoder / mask decoder: missing {exc.args[0]}") from None


def _sam_config_from_original(state_dict: Mapping[str, torch.Tensor], vision_config: SamVisionConfig | None
                              ) -> SamConfig:
    if vision_config is None:
        if "image_encoder.patch_embed.proj.weight" in state_dict:
            vision_config = vision_config_from_original(state_dict)
        else:  # only the positional-encoding width of the vision config matters to the head
            vision_config = SamVisionConfig(num_pos_feats=state_dict[PE_ORIGINAL].shape[1])
    tokens = state_dict["mask_decoder.mask_tokens.weight"]
    hidden = tokens.shape[1]
    cross = state_dict["mask_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight"]
    decoder = SamMaskDecoderConfig(
        hidden_size=hidden, num_multimask_outputs=tokens.shape[0] - 1,
        num_hidden_layers=_count_indexed(state_dict, r"^mask_decoder\.transformer\.layers\.(\d+)\."),
        mlp_dim=state_dict["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0],
        attention_downsample_rate=hidden // cross.shape[0],
        iou_head_depth=_count_indexed(state_dict, r"^mask_decoder\.iou_prediction_head\.layers\.(\d+)\."),
        iou_head_hidden_dim=state_dict["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0],
        layer_norm_eps=ORIGINAL_DECODER_LAYER_NORM_EPS,
    )
    image_size = vision_config.image_size
    prompt = SamPromptEncoderConfig(
        hidden_size=hidden, image_size=image_size, patch_size=vision_config.patch_size,
        mask_input_channels=state_dict["prompt_encoder.mask_downscaling.3.weight"].shape[0],
        num_point_embeddings=_count_indexed(state_dict, r"^prompt_encoder\.point_embeddings\.(\d+)\."),
    )
    return SamConfig(vision_config=vision_config, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def read_checkpoint(path: str) -> StateDict:
    """Tensors of a ``.pt``/``.pth`` checkpoint (``weights_only`` loading, on CPU). A dict that
    wraps the state dict under ``model`` or ``state_dict`` is unwrapped."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling and zip errors have many types
        raise CheckpointError(f"{path}: cannot be read as a weights-only PyTorch checkpoint: {exc}") from exc
    for wrapper in ("model", "state_dict"):
        if isinstance(data, dict) and isinstance(data.get(wrapper), dict):
            data = data[wrapper]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    return dict(data)
