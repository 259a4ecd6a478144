"""Convert the authors' released RegionSpot checkpoints (``.pth``) into our checkpoint format.

What their files hold (learned by reading the public release Surrey-UP-Lab/RegionSpot, commit
76faa4d: ``regionspot/modeling/regionspot.py``, ``regionspot/modeling/decoder.py``,
``regionspot/detector.py``, ``regionspot/modeling/clip/model.py``, ``tools/re_save_ckpt.py`` and
``configs/*.yaml``; nothing of theirs is copied here):

* A detectron2 checkpoint: a dict whose ``"model"`` entry is the state dict (other entries such as
  ``"trainer"``, ``"iteration"``, ``"optimizer"`` are training state). The detectron2
  meta-architecture keeps the network as its attribute ``model``, so every key starts with
  ``model.``; their own loader strips that prefix. Their ``tools/re_save_ckpt.py`` makes a smaller
  file by deleting the frozen backbones, ``model.clip_model.*`` (the whole OpenAI CLIP) and
  ``model.sam.*`` (SAM ViT-B); a full file still has them. We drop both groups: our backbones
  come from the ids named in the config.
* The trained head (after the prefix), with ``D`` the CLIP vision width, ``E`` the text width,
  ``F`` the FFN width (2048) and ``i`` the decoder layer (3 layers):

  ===========================================  =====================  ==========================
  theirs                                       shape                  ours (``fusion.`` + ...)
  ===========================================  =====================  ==========================
  ``to_clip.{weight,bias}``                    [D, 256], [D]          ``token_projector.*``
  ``decoder.layers.i.self_attn.*``             in_proj [3D, D], ...   ``blocks.i.self_attn.*``
  ``decoder.layers.i.multihead_attn.*``        in_proj [3D, D], ...   ``blocks.i.cross_attn.*``
  ``decoder.layers.i.norm1/norm2/norm3.*``     [D]                    ``blocks.i.norm_self/norm_cross/norm_ffn.*``
  ``decoder.layers.i.linear1.*`` / ``linear2``  [F, D] / [D, F]        ``blocks.i.ffn.0.*`` / ``ffn.3.*``
  ``decoder.norm.*``                           [D]                    ``final_norm.*``
  ``projector.{weight,bias}``                  [E, D], [E]            ``text_projector.*``
  ===========================================  =====================  ==========================

  Both sides use ``torch.nn.MultiheadAttention`` (fused ``in_proj_weight`` for q/k/v, since the
  memory has the query width) and ``nn.Linear`` (``[out, in]``), so every tensor is copied
  unchanged. Their decoder layer is post-norm: self-attention among the regions of one image
  (no mask, no positional embeddings), residual, ``norm1``; cross-attention to the CLIP memory,
  residual, ``norm2``; ``linear2(relu(linear1(x)))``, residual, ``norm3``; dropout 0.1; 8 heads
  (their default, never overridden; the heads cannot be read from shapes). After the layers come
  ``decoder.norm`` and ``projector``: exactly :class:`~regionspot.model.fusion.RegionFusion`.
  A ``ln_clip`` LayerNorm without affine parameters is built but never used in their forward, and
  has no keys.
* Scoring: region embedding divided by ``(norm + 1e-7)`` and text embeddings unit, times CLIP's own
  ``logit_scale.exp()`` (a frozen value of CLIP, 100 for OpenAI CLIP; only stored in the file as
  ``clip_model.logit_scale``, which we read when present). The ``1e-7`` differs from our
  ``F.normalize`` by a relative ``1e-7 / norm``, far below float32 noise for real embeddings.
* CLIP memory: all tokens of the last vision transformer layer, class token first, before
  ``ln_post`` and the projection; the whole image resized to ``CLIP_INPUT_SIZE`` (224, or 336 for
  the @336 model). SAM is ViT-B in all three models. The variants (BB, BL, BL@336: their
  ``MODEL.CLIP_TYPE``, CLIP tower, ``D``, ``E`` and input size) are the table of
  :mod:`regionspot.presets`.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from regionspot.config import ClipBackboneConfig, FusionConfig, RegionSpotConfig, SamBackboneConfig, TextConfig
from regionspot.model.fusion import RegionFusion
from regionspot.presets import BY_VARIANT, MODELS, VARIANTS, NamedModel
from regionspot.weights import CheckpointError, preview

WRAPPER_PREFIX = "model."
FROZEN_PREFIXES: tuple[str, ...] = ("clip_model.", "sam.")
OUR_PREFIX = "fusion."
OFFICIAL_HEADS = 8

# their per-layer module names -> ours (tensor names inside each module are the same on both sides)
_LAYER_MODULES: dict[str, str] = {
    "self_attn": "self_attn", "multihead_attn": "cross_attn", "norm1": "norm_self", "norm2": "norm_cross",
    "norm3": "norm_ffn", "linear1": "ffn.0", "linear2": "ffn.3",
}
_TOP_MODULES: dict[str, str] = {"to_clip": "token_projector", "decoder.norm": "final_norm",
                                "projector": "text_projector"}
_LAYER_KEY = re.compile(r"^decoder\.layers\.(\d+)\.")
_CLIP_POSITIONS_KEY = "clip_model.visual.positional_embedding"
_CLIP_LOGIT_SCALE_KEY = "clip_model.logit_scale"


def _variant_spec(variant: str) -> NamedModel:
    """The released model of ``variant`` (``bb``, ``bl``, ``bl336``); CheckpointError otherwise."""
    if variant not in BY_VARIANT:
        raise CheckpointError(f"unknown variant {variant!r}; choose one of {list(VARIANTS)}")
    return BY_VARIANT[variant]


def official_config(variant: str) -> RegionSpotConfig:
    """Our config for a released model: SAM ViT-B, the variant's CLIP at its input size, their
    head hyper-parameters (depth 3, 8 heads, FFN 2048, dropout 0.1, region self-attention on,
    logit scale 100), their evaluation's inputs (``inputs="official"``: detectron2's resize
    first, SAM decoder eps 1e-5, their 81 templates on raw names; ``inputs=native`` gives ours)
    and their evaluation's scoring: a softmax over the vocabulary (their head is trained with a
    sigmoid focal loss but their LVIS evaluation ranks softmax probabilities;
    ``fusion.score_function=sigmoid`` gives ours)."""
    spec = _variant_spec(variant)
    return RegionSpotConfig(
        sam=SamBackboneConfig(name_or_path=spec.sam, token_place="transformer", multimask=False),
        clip=ClipBackboneConfig(name_or_path=spec.clip, image_size=spec.image_size, use_class_token=True),
        text=TextConfig(templates="official"),
        fusion=FusionConfig(token_dim=spec.token_dim, width=spec.width, text_dim=spec.text_dim, depth=3,
                            heads=OFFICIAL_HEADS, ffn_dim=2048, dropout=0.1, region_self_attention=True,
                            logit_scale=100.0, score_function="softmax"),
        inputs="official",
    )


def split_official_state(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(head tensors keyed by their names without prefix, sorted original keys of the frozen
    CLIP/SAM weights that are dropped)."""
    head: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, value in state.items():
        name = key[len(WRAPPER_PREFIX):] if key.startswith(WRAPPER_PREFIX) else key
        if name.startswith(FROZEN_PREFIXES):
            dropped.append(key)
        elif name in head:
            raise CheckpointError(f"checkpoint has both {name!r} and {WRAPPER_PREFIX + name!r}")
        else:
            head[name] = value
    return head, sorted(dropped)


def official_head_shapes(fusion: FusionConfig) -> dict[str, tuple[int, ...]]:
    """Every head key of their layout (no prefix) -> its shape, for a head of ``fusion``'s sizes."""
    d, f = fusion.width, fusion.ffn_dim
    attention = {"in_proj_weight": (3 * d, d), "in_proj_bias": (3 * d,), "out_proj.weight": (d, d),
                 "out_proj.bias": (d,)}
    shapes: dict[str, tuple[int, ...]] = {"to_clip.weight": (d, fusion.token_dim), "to_clip.bias": (d,)}
    for i in range(fusion.depth):
        layer = f"decoder.layers.{i}."
        for module in ("self_attn", "multihead_attn"):
            shapes.update({f"{layer}{module}.{name}": shape for name, shape in attention.items()})
        for norm in ("norm1", "norm2", "norm3"):
            shapes.update({f"{layer}{norm}.weight": (d,), f"{layer}{norm}.bias": (d,)})
        shapes.update({f"{layer}linear1.weight": (f, d), f"{layer}linear1.bias": (f,),
                       f"{layer}linear2.weight": (d, f), f"{layer}linear2.bias": (d,)})
    shapes.update({"decoder.norm.weight": (d,), "decoder.norm.bias": (d,),
                   "projector.weight": (fusion.text_dim, d), "projector.bias": (fusion.text_dim,)})
    return shapes


def our_key(their_key: str) -> str:
    """Our ``fusion.*`` key for one of their head keys (no prefix); KeyError if not a head key."""
    match = _LAYER_KEY.match(their_key)
    if match:
        module, _, tensor = their_key[match.end():].partition(".")
        if module in _LAYER_MODULES and tensor:
            return f"{OUR_PREFIX}blocks.{match.group(1)}.{_LAYER_MODULES[module]}.{tensor}"
    for theirs, ours in _TOP_MODULES.items():
        if their_key.startswith(theirs + "."):
            return f"{OUR_PREFIX}{ours}{their_key[len(theirs):]}"
    raise KeyError(their_key)


def infer_fusion_config(state: Mapping[str, torch.Tensor]) -> FusionConfig:
    """Head sizes read off a state dict of their layout: token/CLIP/text widths, depth, FFN width,
    and CLIP's logit scale when ``clip_model.logit_scale`` is inside. Heads are their fixed 8."""
    head, _ = split_official_state(state)
    anchors = ("to_clip.weight", "projector.weight", "decoder.layers.0.linear1.weight")
    absent = [key for key in anchors if key not in head]
    if absent:
        raise CheckpointError(f"not a RegionSpot checkpoint of the authors' layout: no {absent}; "
                              f"its keys are {preview(sorted(state))}")
    if any(head[key].dim() != 2 for key in anchors):
        raise CheckpointError(f"not a RegionSpot checkpoint: {list(anchors)} must be matrices, got shapes "
                              f"{[tuple(head[key].shape) for key in anchors]}")
    width, token_dim = head["to_clip.weight"].shape
    layers = sorted({int(m.group(1)) for m in map(_LAYER_KEY.match, head) if m})
    if layers != list(range(len(layers))):
        raise CheckpointError(f"decoder layers must be numbered 0..N-1, found {layers}")
    return FusionConfig(
        token_dim=int(token_dim), width=int(width), text_dim=int(head["projector.weight"].shape[0]),
        depth=len(layers), heads=OFFICIAL_HEADS, ffn_dim=int(head["decoder.layers.0.linear1.weight"].shape[0]),
        dropout=0.1, region_self_attention=True, logit_scale=_logit_scale(state),
    )


def _logit_scale(state: Mapping[str, torch.Tensor]) -> float:
    """``exp(clip_model.logit_scale)`` when the file holds CLIP, else OpenAI CLIP's 100."""
    for key in (_CLIP_LOGIT_SCALE_KEY, WRAPPER_PREFIX + _CLIP_LOGIT_SCALE_KEY):
        if key in state and state[key].numel() == 1:
            return float(math.exp(float(state[key].float())))
    return 100.0


def convert_head_state(state: Mapping[str, torch.Tensor],
                       fusion: FusionConfig) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Their state dict (with or without ``model.``, with or without the frozen backbones) ->
    (our head state ``fusion.*`` float32 for a :class:`RegionFusion` of ``fusion``, dropped keys).

    Strict: each of their head keys must be present with the expected shape and nothing else may
    be there, else :class:`CheckpointError` names the missing, unexpected and wrongly shaped keys.
    """
    head, dropped = split_official_state(state)
    expected = official_head_shapes(fusion)
    missing = sorted(set(expected) - set(head))
    unexpected = sorted(set(head) - set(expected))
    shapes = sorted(f"{k}: file {tuple(head[k].shape)} vs expected {expected[k]}"
                    for k in set(expected) & set(head) if tuple(head[k].shape) != expected[k])
    if missing or unexpected or shapes:
        parts = [f"{label} {preview(items)}" for label, items in
                 (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)) if items]
        raise CheckpointError("not the authors' RegionSpot head layout for width "
                              f"{fusion.width}, text {fusion.text_dim}, depth {fusion.depth}: " + "; ".join(parts))
    converted = {our_key(k): v.detach().to(torch.float32).contiguous() for k, v in head.items()}
    _check_against_our_module(converted, fusion)
    return converted, dropped


def _check_against_our_module(converted: Mapping[str, torch.Tensor], fusion: FusionConfig) -> None:
    """Guard: the renamed keys and shapes are exactly RegionFusion's (built on the meta device,
    so nothing is allocated)."""
    with torch.device("meta"):
        ours = {OUR_PREFIX + k: tuple(v.shape) for k, v in RegionFusion(fusion).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in converted.items()}
    if got != ours:
        diff = sorted(set(got) ^ set(ours)) + sorted(k for k in set(got) & set(ours) if got[k] != ours[k])
        raise CheckpointError(f"internal key map does not match RegionFusion: {preview(diff)}")


def guess_variant(state: Mapping[str, torch.Tensor]) -> str:
    """The variant whose widths fit the head; BL and BL@336 differ only in CLIP's input size, so
    they are told apart by ``clip_model.visual.positional_embedding`` when the file holds CLIP."""
    fusion = infer_fusion_config(state)
    candidates = [spec.variant for spec in MODELS if (spec.width, spec.text_dim) == (fusion.width, fusion.text_dim)]
    if not candidates:
        raise CheckpointError(f"no released variant has CLIP width {fusion.width} and text width "
                              f"{fusion.text_dim} (known: {_variant_widths()})")
    tokens = _clip_memory_tokens(state)
    if tokens is not None:
        candidates = [name for name in candidates if BY_VARIANT[name].memory_tokens == tokens]
    if len(candidates) != 1:
        positions = tokens if tokens is not None else "unknown: no CLIP weights inside"
        raise CheckpointError(
            f"cannot tell {' from '.join(candidates) or 'the variant'} from this file (CLIP width {fusion.width}, "
            f"text {fusion.text_dim}, CLIP positions {positions}); pass the variant explicitly (--variant)")
    return candidates[0]


def _variant_widths() -> str:
    """``bb: 768/512, ...``: each variant's CLIP and text widths, for messages."""
    return ", ".join(f"{spec.variant}: {spec.width}/{spec.text_dim}" for spec in MODELS)


def _clip_memory_tokens(state: Mapping[str, torch.Tensor]) -> int | None:
    """Length of their CLIP's positional embedding (patches + 1), when CLIP is in the file."""
    for key in (_CLIP_POSITIONS_KEY, WRAPPER_PREFIX + _CLIP_POSITIONS_KEY):
        if key in state and state[key].dim() == 2:
            return int(state[key].shape[0])
    return None


def convert_official_state(
    state: Mapping[str, torch.Tensor], variant: str
) -> tuple[RegionSpotConfig, dict[str, torch.Tensor], list[str]]:
    """Their state dict -> (our config, our head state ``fusion.*``, their dropped frozen keys).

    The variant fixes the backbones; the file must carry that variant's widths (and, when CLIP is
    inside, its input size). Depth, FFN width and logit scale are taken from the file.
    """
    spec = _variant_spec(variant)
    fusion = infer_fusion_config(state)
    found = (fusion.token_dim, fusion.width, fusion.text_dim)
    wanted = (spec.token_dim, spec.width, spec.text_dim)
    if found != wanted:
        raise CheckpointError(f"this head has token/CLIP/text widths {found}, variant {variant!r} needs {wanted} "
                              f"(known: {_variant_widths()})")
    tokens = _clip_memory_tokens(state)
    if tokens is not None and tokens != spec.memory_tokens:
        fitting = [other.variant for other in MODELS
                   if other.memory_tokens == tokens and (other.width, other.text_dim) == (spec.width, spec.text_dim)]
        hint = f"use variant {fitting[0]!r}" if fitting else "no released variant uses that CLIP input size"
        raise CheckpointError(f"the CLIP inside this file has {tokens} positions, variant {variant!r} "
                              f"({spec.their_clip_type}) has {spec.memory_tokens}; {hint}")
    config = official_config(variant)
    config.fusion = dataclasses.replace(config.fusion, depth=fusion.depth, ffn_dim=fusion.ffn_dim,
                                        logit_scale=fusion.logit_scale)
    head_state, dropped = convert_head_state(state, config.fusion)
    return config, head_state, dropped


def read_official_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Load their ``.pth`` safely (``weights_only``; no arbitrary pickle) and return its state
    dict, unwrapping detectron2's ``{"model": state_dict, ...}``. Keys are left as stored."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found:
            raise CheckpointError(
                f"{path} is not a readable PyTorch checkpoint for a safe (weights-only) load: it holds a "
                f"Python object ({found.group(1)}) besides tensors. If you trust the file, re-save only its "
                "state dict, e.g. torch.save(torch.load(p, weights_only=False)['model'], 'clean.pth'), and "
                "convert that") from None
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (not a torch.save file, or "
                              "damaged)") from None
    except (RuntimeError, EOFError, ValueError, OSError, AttributeError, ImportError, IndexError, KeyError,
            TypeError) as exc:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    state = loaded.get("model") if isinstance(loaded, Mapping) and "model" in loaded else loaded
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{path} holds no state dict (got {type(state).__name__})")
    bad = sorted(str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor))
    if bad:
        raise CheckpointError(f"{path}: entries that are not tensors: {preview(bad)}")
    return dict(state)


def convert_official_checkpoint(path: str | Path, variant: str | None, out_folder: str | Path, *,
                                sam: str | None = None, clip: str | None = None) -> Path:
    """Read their ``.pth``, convert it (``variant`` None: guessed from the file) and write our
    checkpoint folder (``config.json`` + ``model.safetensors``); ``sam``/``clip`` replace the
    backbone ids (local copies). Returns the folder."""
    from regionspot.model.checkpoint import write_checkpoint

    state = read_official_checkpoint(path)
    variant = variant or guess_variant(state)
    config, head_state, dropped = convert_official_state(state, variant)
    config = with_backbones(config, sam=sam, clip=clip)
    return write_checkpoint(out_folder, config, head_state,
                            extra=conversion_record(Path(path), variant, len(dropped)))


def with_backbones(config: RegionSpotConfig, *, sam: str | None, clip: str | None) -> RegionSpotConfig:
    """``config`` with the SAM / CLIP ids replaced where given."""
    if sam:
        config = dataclasses.replace(config, sam=dataclasses.replace(config.sam, name_or_path=str(sam)))
    if clip:
        config = dataclasses.replace(config, clip=dataclasses.replace(config.clip, name_or_path=str(clip)))
    return config


def conversion_record(path: Path, variant: str, dropped: int) -> dict[str, dict[str, object]]:
    """What ``config.json`` records about the conversion (extra document entry)."""
    return {"converted_from": {"release": "Surrey-UP-Lab/RegionSpot", "file": path.name, "variant": variant,
                               "their_clip_type": _variant_spec(variant).their_clip_type,
                               "dropped_frozen_keys": dropped}}
