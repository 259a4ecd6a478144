"""The one model loader: every source (nothing, a folder, the authors' .pth, --untrained), the
method switch, devices and precisions, and moving the memoised text embeddings with the model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPConfig, CLIPModel

from regionspot.backbones.clip_text import tiny_clip_tokenizer
from regionspot.config import ConfigError, FusionConfig
from regionspot.devices import DeviceError
from regionspot.model.loader import ModelSource, describe_origin, load, source_config
from regionspot.model.official import official_head_shapes
from regionspot.model.regionspot import RegionSpot
from regionspot.model.zero_shot import ZeroShotCLIP

BOXES = [[5.0, 5.0, 40.0, 30.0], [20.0, 10.0, 70.0, 55.0]]
NAMES = ["cat", "dog", "red car"]


def photo(height: int = 60, width: int = 80) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)


def photo_array() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)


def answer(model, image: np.ndarray | None = None):
    predictor = model.predictor()
    predictor.set_image(photo() if image is None else image)
    return predictor.predict(BOXES, NAMES, topk=3)


@pytest.fixture
def cache_override(text_cache_dir: Path) -> list[str]:
    return [f"text.cache_dir={text_cache_dir}"]


def test_no_checkpoint_is_the_zero_shot_recognizer(tiny_sam_dir: Path, tiny_clip_dir: Path,
                                                   cache_override: list[str]) -> None:
    lines: list[str] = []
    model = load(sam=str(tiny_sam_dir), clip=str(tiny_clip_dir), overrides=cache_override, device="cpu",
                 log=lines.append)
    assert isinstance(model, ZeroShotCLIP) and model.method == "clip-mask-crop"
    assert model.config.sam.name_or_path == str(tiny_sam_dir)
    assert "zero-shot clip-mask-crop" in lines[0] and "no trained head" in lines[0]
    result = answer(model)
    np.testing.assert_allclose(np.sort(result.topk_scores.sum(axis=1)), 1.0, atol=1e-5)  # softmax over 3 names
    crop = load(sam=str(tiny_sam_dir), clip=str(tiny_clip_dir), method="clip-crop", overrides=cache_override,
                log=None)
    assert crop.method == "clip-crop"


def test_the_package_exports_the_loader() -> None:
    import regionspot

    assert regionspot.load is load and regionspot.ZeroShotCLIP is ZeroShotCLIP
    assert {"load", "ZeroShotCLIP"} <= set(regionspot.__all__)


def test_folder_and_untrained_sources(tiny_sam_dir: Path, tiny_clip_dir: Path, cache_override: list[str],
                                      tmp_path: Path) -> None:
    lines: list[str] = []
    fresh = load(untrained=True, sam=str(tiny_sam_dir), clip=str(tiny_clip_dir),
                 overrides=[*cache_override, "fusion.depth=1", "fusion.heads=4", "fusion.ffn_dim=64"], log=lines.append)
    assert isinstance(fresh, RegionSpot) and fresh.origin == {"head": "untrained"}
    assert any("random weights" in line for line in lines) and "UNTRAINED" in lines[-1]
    again = load(ModelSource(untrained=True, sam=str(tiny_sam_dir), clip=str(tiny_clip_dir),
                             overrides=[*cache_override, "fusion.depth=1", "fusion.heads=4", "fusion.ffn_dim=64"]),
                 log=None)
    for a, b in zip(fresh.fusion.parameters(), again.fusion.parameters(), strict=True):  # seeded: the same head
        assert torch.equal(a, b)
    fresh.save_pretrained(tmp_path / "head")
    loaded = load(str(tmp_path / "head"), overrides=cache_override, log=lines.append)
    assert loaded.origin == {"head": "checkpoint", "checkpoint": str(tmp_path / "head")}
    assert "regionspot head from" in lines[-1]  # the saved head records its SAM decoder eps: no note
    np.testing.assert_allclose(answer(loaded).topk_scores, answer(fresh).topk_scores, atol=1e-6)
    crop = load(str(tmp_path / "head"), method="clip-crop", overrides=cache_override, log=None)
    assert isinstance(crop, ZeroShotCLIP) and crop.region_tokenizer is not None


def test_source_errors(tiny_sam_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a RegionSpot head"):
        load(method="regionspot", log=None)
    with pytest.raises(ConfigError, match="cannot be combined"):
        load("some/head", untrained=True, log=None)
    with pytest.raises(ConfigError, match="unknown method"):
        load(method="owl", log=None)
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(Exception, match=r"authors' released RegionSpot|not a readable PyTorch checkpoint"):
        load(str(tmp_path / "notes.txt"), log=None)
    with pytest.raises(DeviceError, match="unknown device"):
        load(device="tpu", log=None)
    with pytest.raises(DeviceError, match="fp16 needs a GPU"):
        load(device="cpu", precision="fp16", log=None)


# ----------------------------------------------------------------------------- the authors' .pth
def save_bb_width_clip(folder: Path) -> Path:
    """A one-layer random CLIP with BB's widths (vision 768, text and projection 512) and the
    tiny tokenizer: enough for a converted BB head to run."""
    config = CLIPConfig(
        vision_config=dict(hidden_size=768, num_hidden_layers=1, num_attention_heads=12, intermediate_size=64,
                           patch_size=16, image_size=32, projection_dim=512),
        text_config=dict(hidden_size=512, num_hidden_layers=1, num_attention_heads=8, intermediate_size=64,
                         vocab_size=1024, max_position_embeddings=77, projection_dim=512, bos_token_id=1022,
                         eos_token_id=1023, pad_token_id=1023),
        projection_dim=512)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        CLIPModel(config).save_pretrained(folder)
    tiny_clip_tokenizer().save_pretrained(folder)
    return folder


def write_their_bb_file(path: Path) -> Path:
    """A detectron2-style ``.pth`` with the authors' key names and BB's real shapes (depth 1 to
    stay small), with their frozen CLIP's positional embedding and logit scale inside."""
    generator = torch.Generator().manual_seed(7)
    shapes = official_head_shapes(FusionConfig(token_dim=256, width=768, text_dim=512, depth=1))
    state = {"model." + k: 0.05 * torch.randn(*shape, generator=generator) for k, shape in shapes.items()}
    state["model.clip_model.visual.positional_embedding"] = torch.zeros(197, 768)
    state["model.clip_model.logit_scale"] = torch.tensor(math.log(100.0))
    torch.save({"model": state, "iteration": 449999}, path)
    return path


@pytest.fixture(scope="module")
def their_bb(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("official")
    return write_their_bb_file(folder / "regionspot_bb.pth"), save_bb_width_clip(folder / "clip-bb-widths")


def test_authors_pth_loads_as_a_checkpoint(their_bb: tuple[Path, Path], mobile_sam_checkpoint: Path,
                                           cache_override: list[str]) -> None:
    pth, clip = their_bb
    lines: list[str] = []
    model = load(str(pth), sam=str(mobile_sam_checkpoint), clip=str(clip), overrides=cache_override,
                 log=lines.append)
    assert isinstance(model, RegionSpot) and model.origin["variant"] == "bb"
    assert model.origin["variant_from"] == "read from the weight shapes"
    assert "detected the authors' RegionSpot-BB checkpoint (CLIP_400M" in lines[0]
    assert model.config.fusion.score_function == "softmax" and model.config.clip.image_size == 224
    assert "the authors' bb head" in describe_origin(model)
    config = source_config(ModelSource(checkpoint=str(pth)))
    assert config.clip.name_or_path == "openai/clip-vit-base-patch16"  # what `download` would fetch


@pytest.mark.slow
def test_authors_pth_answers_like_its_converted_folder(their_bb: tuple[Path, Path], mobile_sam_checkpoint: Path,
                                                       cache_override: list[str], tmp_path: Path) -> None:
    from regionspot.cli.main import main

    pth, clip = their_bb
    backbones = ["--sam", str(mobile_sam_checkpoint), "--clip", str(clip), "--set", *cache_override]
    assert main(["convert-official", str(pth), "--out", str(tmp_path / "converted")]) == 0
    photo = tmp_path / "photo.png"
    Image.fromarray(photo_array()).save(photo)
    outputs = []
    for checkpoint in (pth, tmp_path / "converted"):
        out = tmp_path / f"{checkpoint.name}.json"
        assert main(["predict", str(photo), "--boxes", "2,3,40,30;10,12,60,45", "--vocab", "cat,dog,bowl,car",
                     "--checkpoint", str(checkpoint), "--out", str(out), *backbones]) == 0
        outputs.append(json.loads(out.read_text()))
    direct, converted = outputs
    assert direct["model"]["origin"]["head"] == "official" and converted["model"]["origin"]["head"] == "checkpoint"
    assert direct["model"]["inputs"] == converted["model"]["inputs"] == "official"  # the authors' evaluation inputs
    assert direct["regions"] == converted["regions"] and len(direct["regions"]) == 2


# ----------------------------------------------------------------------------- devices
def test_to_moves_the_memoised_text_embeddings(tiny_sam_dir: Path, tiny_clip_dir: Path,
                                               cache_override: list[str]) -> None:
    model = load(untrained=True, sam=str(tiny_sam_dir), clip=str(tiny_clip_dir), device="cpu",
                 overrides=[*cache_override, "fusion.depth=1", "fusion.heads=4", "fusion.ffn_dim=64"], log=None)
    answer(model)
    assert model._text_memo.devices() == {torch.device("cpu")}
    assert {p.device for p in model.parameters()} == {torch.device("cpu")}
    model.to("meta")  # a real move on any machine: the memo must follow the head
    assert model._text_memo.devices() == {torch.device("meta")}
    assert {p.device.type for p in model.parameters()} == {"meta"}


@pytest.mark.parametrize("photo_index", [None, 0, 1, 2])  # a random image, then three shared COCO photos
def test_bf16_gives_the_same_top1_as_fp32(tiny_sam_dir: Path, tiny_clip_dir: Path, cache_override: list[str],
                                          coco_sample: Path, photo_index: int | None) -> None:
    source = ModelSource(untrained=True, sam=str(tiny_sam_dir), clip=str(tiny_clip_dir),
                         overrides=[*cache_override, "fusion.depth=1", "fusion.heads=4", "fusion.ffn_dim=64",
                                    "fusion.logit_scale=5", "fusion.score_function=softmax"])
    # softmax over the 3 names at scale 5 spreads a random head's scores enough for clear top-1s
    image = None if photo_index is None else np.asarray(
        Image.open(sorted((coco_sample / "images").iterdir())[photo_index]).convert("RGB"))
    full = answer(load(source, device="cpu", log=None), image)
    half = load(source, device="cpu", precision="bf16", log=None)
    assert half.precision == "bf16"
    result = answer(half, image)
    assert result.topk_scores.dtype == np.float64 and result.boxes.dtype == np.float64
    dense = lambda r: np.take_along_axis(r.topk_scores, np.argsort(r.topk_ids, axis=1), axis=1)  # noqa: E731
    np.testing.assert_allclose(dense(result), dense(full), atol=0.02)
    clear = full.topk_scores[:, 0] - full.topk_scores[:, 1] > 0.02  # top-1 is only defined where not a near-tie
    assert clear.any(), "no region with a clear top-1: the comparison below would test nothing"
    np.testing.assert_array_equal(result.label_ids[clear], full.label_ids[clear])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_everything_lands_on_cuda(tiny_sam_dir: Path, tiny_clip_dir: Path, cache_override: list[str]) -> None:
    model = load(untrained=True, sam=str(tiny_sam_dir), clip=str(tiny_clip_dir), device="cuda",
                 overrides=[*cache_override, "fusion.depth=1", "fusion.heads=4", "fusion.ffn_dim=64"], log=None)
    answer(model)
    assert {p.device.type for p in model.parameters()} == {"cuda"}
    assert {d.type for d in model._text_memo.devices()} == {"cuda"}
