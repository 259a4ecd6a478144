"""Conversion of the authors' released checkpoints.

No real release file is available here, so the tests build state dicts with THEIR key names and
shapes (written out below from reading their public model definition, independently of the
converter's own table), convert them, and check that our head computes what a small
re-implementation of THEIR forward computes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from regionspot.config import FusionConfig
from regionspot.model.checkpoint import write_checkpoint
from regionspot.model.fusion import RegionFusion
from regionspot.model.official import (
    convert_head_state,
    convert_official_state,
    guess_variant,
    infer_fusion_config,
    official_config,
    official_head_shapes,
    read_official_checkpoint,
)
from regionspot.presets import BY_VARIANT, VARIANTS
from regionspot.weights import CheckpointError, load_strict

THEIR_HEADS = 8
WIDTHS = {"bb": (768, 512), "bl": (1024, 768), "bl336": (1024, 768)}  # CLIP vision width, text width
CLIP_POSITIONS = {"bb": 197, "bl": 257, "bl336": 577}  # (224/16)^2+1, (224/14)^2+1, (336/14)^2+1

Maker = Callable[..., torch.Tensor]


def random_maker(seed: int) -> Maker:
    generator = torch.Generator().manual_seed(seed)

    def make(*shape: int, kind: str = "weight") -> torch.Tensor:
        noise = torch.randn(*shape, generator=generator)
        if kind == "weight":
            return noise * shape[-1] ** -0.5
        return 1.0 + 0.1 * noise if kind == "norm" else 0.1 * noise

    return make


def meta_maker(*shape: int, kind: str = "weight") -> torch.Tensor:
    return torch.empty(*shape, device="meta")


def their_head(token: int, width: int, text: int, depth: int, ffn: int, make: Maker) -> dict[str, torch.Tensor]:
    """Their head keys (inner model, no ``model.`` prefix) with the shapes their modules have."""
    head = {"to_clip.weight": make(width, token), "to_clip.bias": make(width, kind="bias")}
    for i in range(depth):
        layer = f"decoder.layers.{i}."
        for attention in ("self_attn", "multihead_attn"):
            head[f"{layer}{attention}.in_proj_weight"] = make(3 * width, width)
            head[f"{layer}{attention}.in_proj_bias"] = make(3 * width, kind="bias")
            head[f"{layer}{attention}.out_proj.weight"] = make(width, width)
            head[f"{layer}{attention}.out_proj.bias"] = make(width, kind="bias")
        head[f"{layer}linear1.weight"], head[f"{layer}linear1.bias"] = make(ffn, width), make(ffn, kind="bias")
        head[f"{layer}linear2.weight"], head[f"{layer}linear2.bias"] = make(width, ffn), make(width, kind="bias")
        for norm in ("norm1", "norm2", "norm3"):
            head[f"{layer}{norm}.weight"] = make(width, kind="norm")
            head[f"{layer}{norm}.bias"] = make(width, kind="bias")
    head["decoder.norm.weight"], head["decoder.norm.bias"] = make(width, kind="norm"), make(width, kind="bias")
    head["projector.weight"], head["projector.bias"] = make(text, width), make(text, kind="bias")
    return head


def as_detectron2(head: dict[str, torch.Tensor], clip_positions: int | None, width: int) -> dict[str, torch.Tensor]:
    """Their full file's state dict: ``model.`` prefix plus a few frozen CLIP/SAM tensors."""
    state = {"model." + k: v for k, v in head.items()}
    if clip_positions is not None:
        state["model.clip_model.visual.positional_embedding"] = torch.zeros(clip_positions, width)
        state["model.clip_model.logit_scale"] = torch.tensor(math.log(100.0))
        state["model.sam.image_encoder.pos_embed"] = torch.zeros(1, 4, 4, 8)
    return state


# ---------------------------------------------------------------- their forward, re-implemented
def _linear(x: torch.Tensor, head: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    return x @ head[f"{name}.weight"].t() + head[f"{name}.bias"]


def _norm(x: torch.Tensor, head: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5) * head[f"{name}.weight"] + head[f"{name}.bias"]


def _attention(query: torch.Tensor, source: torch.Tensor, head: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """Multi-head attention from the fused in-projection (rows q, k, v) and the out-projection."""
    weight, bias, d = head[f"{name}.in_proj_weight"], head[f"{name}.in_proj_bias"], query.shape[-1]
    q, k, v = (x @ weight[j * d:(j + 1) * d].t() + bias[j * d:(j + 1) * d]
               for j, x in enumerate((query, source, source)))

    def split(x: torch.Tensor) -> torch.Tensor:  # [B, L, d] -> [B, heads, L, d / heads]
        return x.reshape(x.shape[0], x.shape[1], THEIR_HEADS, d // THEIR_HEADS).transpose(1, 2)

    q, k, v = split(q), split(k), split(v)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // THEIR_HEADS), dim=-1)
    mixed = (weights @ v).transpose(1, 2).reshape(query.shape)
    return _linear(mixed, head, f"{name}.out_proj")


def their_region_features(head: dict[str, torch.Tensor], tokens: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """to_clip -> post-norm decoder layers -> decoder.norm -> projector -> x / (|x| + 1e-7)."""
    x = _linear(tokens, head, "to_clip")
    depth = len({k.split(".")[2] for k in head if k.startswith("decoder.layers.")})
    for i in range(depth):
        layer = f"decoder.layers.{i}"
        x = _norm(x + _attention(x, x, head, f"{layer}.self_attn"), head, f"{layer}.norm1")
        x = _norm(x + _attention(x, memory, head, f"{layer}.multihead_attn"), head, f"{layer}.norm2")
        hidden = torch.relu(_linear(x, head, f"{layer}.linear1"))
        x = _norm(x + _linear(hidden, head, f"{layer}.linear2"), head, f"{layer}.norm3")
    x = _linear(_norm(x, head, "decoder.norm"), head, "projector")
    return x / (x.norm(dim=-1, keepdim=True) + 1e-7)


def loaded_fusion(fusion_config: FusionConfig, head_state: dict[str, torch.Tensor]) -> RegionFusion:
    fusion = RegionFusion(fusion_config)
    load_strict(fusion, {k.removeprefix("fusion."): v for k, v in head_state.items()}, "converted head")
    return fusion.eval()


def assert_same_function(fusion: RegionFusion, head: dict[str, torch.Tensor], memory_tokens: int,
                         logit_scale: float) -> None:
    torch.manual_seed(1)
    tokens = torch.randn(1, 5, fusion.config.token_dim)
    memory = torch.randn(1, memory_tokens, fusion.config.width)
    text = F.normalize(torch.randn(7, fusion.config.text_dim), dim=-1)
    with torch.no_grad():
        ours, _ = fusion(tokens, memory)
        theirs = their_region_features(head, tokens, memory)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    torch.testing.assert_close(fusion.logits(ours, text) / 100.0, logit_scale * theirs @ text.t() / 100.0,
                               atol=1e-5, rtol=0)


# ---------------------------------------------------------------- tests
@pytest.mark.parametrize("variant", VARIANTS)
def test_real_shapes_listing_and_meta_conversion(variant: str) -> None:
    """Depth 3, FFN 2048 at the real widths, on the meta device (nothing allocated)."""
    width, text = WIDTHS[variant]
    head = their_head(256, width, text, 3, 2048, meta_maker)
    fusion = official_config(variant).fusion
    assert official_head_shapes(fusion) == {k: tuple(v.shape) for k, v in head.items()}
    config, converted, dropped = convert_official_state(as_detectron2(head, None, width), variant)
    assert dropped == [] and config.fusion == fusion
    with torch.device("meta"):
        ours = RegionFusion(fusion).state_dict()
    assert {k: tuple(v.shape) for k, v in converted.items()} == {"fusion." + k: tuple(v.shape) for k, v in ours.items()}
    total = sum(v.numel() for v in head.values())
    assert total == sum(v.numel() for v in ours.values())
    # the paper: ~24M, ~39M
    assert f"{total / 1e6:.2f}M" == {"bb": "24.23M", "bl": "38.85M", "bl336": "38.85M"}[variant]


@pytest.mark.parametrize(("variant", "depth"), [("bb", 1), ("bl", 1), ("bl336", 1)])
def test_converted_head_computes_their_forward(variant: str, depth: int) -> None:
    width, text = WIDTHS[variant]
    head = their_head(256, width, text, depth, 2048, random_maker(seed=depth))
    state = as_detectron2(head, CLIP_POSITIONS[variant], width)
    config, converted, dropped = convert_official_state(state, variant)
    assert dropped == sorted(k for k in state if k.startswith(("model.clip_model.", "model.sam.")))
    assert (config.fusion.depth, config.fusion.heads, config.fusion.ffn_dim) == (depth, THEIR_HEADS, 2048)
    assert config.fusion.logit_scale == pytest.approx(100.0, rel=1e-6)
    assert config.clip.name_or_path == BY_VARIANT[variant].clip
    assert config.clip.image_size == (336 if variant == "bl336" else 224)
    assert config.sam.name_or_path == "facebook/sam-vit-base" and config.sam.token_place == "transformer"
    fusion = loaded_fusion(config.fusion, converted)
    assert_same_function(fusion, head, CLIP_POSITIONS[variant], config.fusion.logit_scale)


@pytest.fixture(scope="module")
def small_head() -> dict[str, torch.Tensor]:
    return their_head(256, 32, 16, 2, 64, random_maker(seed=3))


def small_fusion() -> FusionConfig:
    return FusionConfig(token_dim=256, width=32, text_dim=16, depth=2, heads=THEIR_HEADS, ffn_dim=64)


def test_small_head_shapes_are_read_from_the_file(small_head: dict[str, torch.Tensor]) -> None:
    fusion = infer_fusion_config(as_detectron2(small_head, None, 32))
    assert fusion == small_fusion()
    converted, dropped = convert_head_state(small_head, fusion)
    assert dropped == []
    assert_same_function(loaded_fusion(fusion, converted), small_head, 9, 100.0)


@pytest.mark.parametrize(("change", "message"), [
    (lambda s: s.pop("decoder.layers.1.norm2.bias"), "missing [decoder.layers.1.norm2.bias]"),
    (lambda s: s.update({"decoder.layers.0.gate.weight": torch.zeros(3)}), "unexpected [decoder.layers.0.gate.weight]"),
    (lambda s: s.update({"ln_clip.weight": torch.ones(32)}), "unexpected [ln_clip.weight]"),
    (lambda s: s.update({"projector.weight": s["projector.weight"].t()}),
     "projector.weight: file (32, 16) vs expected (16, 32)"),
])
def test_strict_head_errors(small_head: dict[str, torch.Tensor], change: Callable, message: str) -> None:
    state = dict(small_head)
    change(state)
    with pytest.raises(CheckpointError, match="not the authors' RegionSpot head layout") as info:
        convert_head_state(state, small_fusion())
    assert message in str(info.value)


def test_not_their_layout_or_gapped_layers_are_refused(small_head: dict[str, torch.Tensor]) -> None:
    with pytest.raises(CheckpointError, match="not a RegionSpot checkpoint of the authors' layout"):
        infer_fusion_config({"backbone.conv.weight": torch.zeros(2, 2)})
    gapped = {k.replace("decoder.layers.1.", "decoder.layers.2."): v for k, v in small_head.items()}
    with pytest.raises(CheckpointError, match=r"numbered 0..N-1, found \[0, 2\]"):
        infer_fusion_config(gapped)
    both = {**small_head, "model.to_clip.bias": small_head["to_clip.bias"]}
    with pytest.raises(CheckpointError, match=r"both 'to_clip\.bias' and 'model\.to_clip\.bias'"):
        convert_head_state(both, small_fusion())


def test_variant_mismatches_are_refused() -> None:
    bb = as_detectron2(their_head(256, 768, 512, 1, 2048, meta_maker), None, 768)
    with pytest.raises(CheckpointError, match=r"widths \(256, 768, 512\), variant 'bl' needs \(256, 1024, 768\)"):
        convert_official_state(bb, "bl")
    bl_with_336_clip = as_detectron2(their_head(256, 1024, 768, 1, 2048, meta_maker), 577, 1024)
    with pytest.raises(CheckpointError, match=r"has 577 positions, variant 'bl' .* use variant 'bl336'"):
        convert_official_state(bl_with_336_clip, "bl")
    with pytest.raises(CheckpointError, match="unknown variant 'bh'"):
        convert_official_state(bb, "bh")


def test_guess_variant() -> None:
    bl_head = their_head(256, 1024, 768, 1, 2048, meta_maker)
    assert guess_variant(as_detectron2(their_head(256, 768, 512, 1, 2048, meta_maker), None, 768)) == "bb"
    assert guess_variant(as_detectron2(bl_head, 257, 1024)) == "bl"
    assert guess_variant(as_detectron2(bl_head, 577, 1024)) == "bl336"
    with pytest.raises(CheckpointError, match="cannot tell bl from bl336"):
        guess_variant(as_detectron2(bl_head, None, 1024))
    with pytest.raises(CheckpointError, match="no released variant has CLIP width 32"):
        guess_variant(their_head(256, 32, 16, 1, 64, meta_maker))


class NotATensor:
    """A custom class: a weights-only load must refuse to unpickle it."""


def test_read_official_checkpoint(tmp_path, small_head: dict[str, torch.Tensor]) -> None:
    state = as_detectron2(small_head, 197, 32)
    wrapped = tmp_path / "model_final.pth"
    torch.save({"model": state, "iteration": 449999, "trainer": {"iteration": 449999}}, wrapped)
    read = read_official_checkpoint(wrapped)
    assert read.keys() == state.keys() and torch.equal(read["model.projector.weight"], state["model.projector.weight"])
    bare = tmp_path / "bare.pth"
    torch.save(small_head, bare)
    assert read_official_checkpoint(bare).keys() == small_head.keys()
    cases = {"junk.pth": b"this is not a checkpoint", "missing.pth": None}
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match=r"not a readable PyTorch checkpoint|not found"):
            read_official_checkpoint(tmp_path / name)
    torch.save({"model": {"to_clip.weight": NotATensor()}}, tmp_path / "pickle.pth")
    with pytest.raises(CheckpointError, match=r"safe \(weights-only\) load: it holds a Python object \(.*NotATensor\)"):
        read_official_checkpoint(tmp_path / "pickle.pth")
    torch.save({"model": {"to_clip.weight": [1, 2]}}, tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match=r"entries that are not tensors: \[to_clip\.weight\]"):
        read_official_checkpoint(tmp_path / "list.pth")


def test_small_conversion_loads_with_from_pretrained(tmp_path, small_head, mobile_sam_checkpoint, tiny_clip_dir,
                                                      text_cache_dir) -> None:
    """The loading path of a converted checkpoint, on MobileSAM (token 256) and the tiny CLIP
    (vision width 32, text 16): real BB/BL backbones cannot be built here."""
    from regionspot.model.regionspot import RegionSpot

    fusion = infer_fusion_config(small_head)
    converted, _ = convert_head_state(small_head, fusion)
    folder = write_checkpoint(tmp_path / "converted", dataclasses.replace(official_config("bb"), fusion=fusion),
                              converted)
    model = RegionSpot.from_pretrained(folder, overrides=[
        f"sam.name_or_path={mobile_sam_checkpoint}", f"clip.name_or_path={tiny_clip_dir}", "clip.image_size=null",
        f"text.cache_dir={text_cache_dir}"])
    assert model.config.fusion == fusion
    assert model.region_tokenizer.token_dim == 256 and model.image_encoder.width == fusion.width
    assert_same_function(model.fusion, small_head, model.image_encoder.num_tokens, 100.0)
