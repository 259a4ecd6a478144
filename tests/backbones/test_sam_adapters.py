"""SAM adapters on a tiny random SamModel: token places, mask modes, freezing, independence of
boxes, loading from a save_pretrained folder and from an original-layout checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import SamConfig, SamMaskDecoderConfig, SamModel, SamVisionConfig

from regionspot.backbones.loading import BackboneLoadError
from regionspot.backbones.protocols import RegionTokenizer
from regionspot.backbones.sam import build_region_tokenizer, region_tokenizer_from_sam_model
from regionspot.backbones.sam_convert import hf_to_original
from regionspot.backbones.sam_geometry import masks_to_original, preprocess_image, resized_shape, scale_boxes
from regionspot.backbones.sam_tokenizer import SamRegionTokenizer
from regionspot.config import SamBackboneConfig

H, W = 480, 640


@pytest.fixture(scope="module")
def tiny_sam() -> SamModel:
    """Tiny vision tower, real-size decoder; decoder LayerNorm eps as in original SAM (1e-5) so
    the original-layout round trip is exact. Weights perturbed so that tests can tell things apart."""
    torch.manual_seed(0)
    vision = SamVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             global_attn_indexes=[1], mlp_dim=64)
    model = SamModel(SamConfig(vision_config=vision, mask_decoder_config=SamMaskDecoderConfig(layer_norm_eps=1e-5)))
    with torch.no_grad():
        for parameter in model.parameters():
            if (parameter == 0).all():
                parameter.normal_(0, 0.02)
        model.shared_image_embedding.positional_embedding.normal_(0, 1)  # SAM's scale
        model.mask_decoder.iou_prediction_head.proj_out.weight.mul_(30)  # spread IoU predictions
    return model.eval()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def boxes() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    xy = torch.rand(12, 2, generator=generator) * torch.tensor([500.0, 350.0])
    return torch.cat([xy, xy + torch.rand(12, 2, generator=generator) * 120 + 10], dim=1)


def _tokenizer(model: SamModel, place: str = "transformer", multimask: bool = False) -> SamRegionTokenizer:
    tokenizer = region_tokenizer_from_sam_model(model, place, multimask)
    assert isinstance(tokenizer, SamRegionTokenizer)
    return tokenizer


def _hf_reference(model: SamModel, embedding: torch.Tensor, boxes: torch.Tensor, multimask: bool):
    scaled = boxes * torch.tensor([1024 / W, 768 / H, 1024 / W, 768 / H])
    with torch.no_grad():
        return model(image_embeddings=embedding, input_boxes=scaled[None], multimask_output=multimask)


@pytest.mark.parametrize("multimask", [False, True])
@pytest.mark.parametrize(("place", "dim"), [("prompt_encoder", 256), ("transformer", 256), ("hypernet_mlp", 32)])
def test_token_shapes(tiny_sam: SamModel, image: np.ndarray, boxes: torch.Tensor, place: str, dim: int,
                      multimask: bool) -> None:
    tokenizer = _tokenizer(tiny_sam, place, multimask)
    embedding = tokenizer.encode_image(image)
    assert embedding.embeddings.shape == (1, 256, 64, 64)
    assert embedding.original_size == (H, W) and embedding.input_size == (768, 1024)
    out = tokenizer.encode_regions(embedding, boxes[:5])
    assert tokenizer.token_dim == dim and out.tokens.shape == (5, dim)
    assert out.mask_logits.shape == (5, 256, 256) and out.mask_scores.shape == (5,)
    assert torch.isfinite(out.tokens).all() and torch.isfinite(out.mask_logits).all()
    assert tokenizer.masks_to_image(embedding, out.mask_logits).shape == (5, H, W)


def test_single_mask_outputs_match_hf_forward(tiny_sam: SamModel, image: np.ndarray, boxes: torch.Tensor) -> None:
    tokenizers = {place: _tokenizer(tiny_sam, place) for place in ("prompt_encoder", "transformer", "hypernet_mlp")}
    embedding = tokenizers["transformer"].encode_image(image)
    outs = {place: t.encode_regions(embedding, boxes) for place, t in tokenizers.items()}
    reference = _hf_reference(tiny_sam, embedding.embeddings, boxes, multimask=False)
    out = outs["transformer"]
    torch.testing.assert_close(out.mask_logits, reference.pred_masks[0, :, 0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.mask_scores, reference.iou_scores[0, :, 0], rtol=1e-4, atol=1e-5)
    scaled = boxes * torch.tensor([1024 / W, 768 / H, 1024 / W, 768 / H])
    with torch.no_grad():
        sparse, _ = tiny_sam.get_prompt_embeddings(input_boxes=scaled[None])
        hyper = tiny_sam.mask_decoder.output_hypernetworks_mlps[0](out.tokens)
    torch.testing.assert_close(outs["prompt_encoder"].tokens, sparse[0].mean(dim=1))
    torch.testing.assert_close(outs["hypernet_mlp"].tokens, hyper)
    for other in ("prompt_encoder", "hypernet_mlp"):  # the place changes the token, not the mask
        assert torch.equal(outs[other].mask_logits, out.mask_logits)


def test_multimask_keeps_the_output_with_highest_predicted_iou(tiny_sam: SamModel, image: np.ndarray,
                                                               boxes: torch.Tensor) -> None:
    single, multi = _tokenizer(tiny_sam), _tokenizer(tiny_sam, "hypernet_mlp", multimask=True)
    embedding = single.encode_image(image)
    out = multi.encode_regions(embedding, boxes)
    reference = _hf_reference(tiny_sam, embedding.embeddings, boxes, multimask=True)
    best = reference.iou_scores[0].argmax(dim=1)  # among mask tokens 1..3
    assert best.unique().numel() > 1, "fixture should make boxes pick different outputs"
    rows = torch.arange(len(boxes))
    torch.testing.assert_close(out.mask_logits, reference.pred_masks[0, rows, best], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.mask_scores, reference.iou_scores[0].max(dim=1).values)
    transformer_tokens = _tokenizer(tiny_sam, "transformer", multimask=True).encode_regions(embedding, boxes).tokens
    with torch.no_grad():
        expected = torch.stack([tiny_sam.mask_decoder.output_hypernetworks_mlps[1 + int(b)](t)
                                for b, t in zip(best, transformer_tokens, strict=True)])
    torch.testing.assert_close(out.tokens, expected)
    assert not torch.allclose(transformer_tokens, single.encode_regions(embedding, boxes).tokens)


def test_backbone_is_frozen(tiny_sam: SamModel, image: np.ndarray, boxes: torch.Tensor) -> None:
    tokenizer = _tokenizer(tiny_sam)
    owner = nn.ModuleDict({"sam": tokenizer, "trainable": nn.Linear(256, 4)})
    owner.train()
    assert not tokenizer.training and not any(m.training for m in tokenizer.modules())
    assert owner["trainable"].training
    assert all(not p.requires_grad for p in tokenizer.parameters())
    out = tokenizer.encode_regions(tokenizer.encode_image(image), boxes[:2])
    assert not out.tokens.requires_grad
    owner["trainable"](out.tokens).sum().backward()  # tokens can feed a trainable layer
    assert all(p.grad is None for p in tokenizer.parameters())
    tiny_sam.train()  # the SamModel whose modules the adapter shares
    assert not any(m.training for m in tokenizer.modules())


def test_box_order_and_batch_do_not_change_a_box_token(tiny_sam: SamModel, image: np.ndarray,
                                                       boxes: torch.Tensor) -> None:
    tokenizer = _tokenizer(tiny_sam, multimask=True)
    embedding = tokenizer.encode_image(image)
    full = tokenizer.encode_regions(embedding, boxes)
    order = torch.randperm(len(boxes), generator=torch.Generator().manual_seed(1))
    permuted = tokenizer.encode_regions(embedding, boxes[order])
    torch.testing.assert_close(permuted.tokens, full.tokens[order], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(permuted.mask_logits, full.mask_logits[order], rtol=1e-4, atol=1e-4)
    alone = tokenizer.encode_regions(embedding, boxes[3:4])
    torch.testing.assert_close(alone.tokens, full.tokens[3:4], rtol=1e-4, atol=1e-5)
    tokenizer.head.chunk_size = 5
    torch.testing.assert_close(tokenizer.encode_regions(embedding, boxes).tokens, full.tokens, rtol=1e-4, atol=1e-5)


def _assert_same_outputs(a: SamRegionTokenizer, b: SamRegionTokenizer, image: np.ndarray, boxes: torch.Tensor) -> None:
    ea, eb = a.encode_image(image), b.encode_image(image)
    torch.testing.assert_close(ea.embeddings, eb.embeddings)
    oa, ob = a.encode_regions(ea, boxes), b.encode_regions(eb, boxes)
    torch.testing.assert_close(oa.tokens, ob.tokens)
    torch.testing.assert_close(oa.mask_logits, ob.mask_logits)


def test_save_pretrained_folder_loads_like_a_hub_id(tiny_sam: SamModel, image: np.ndarray, boxes: torch.Tensor,
                                                    tmp_path: Path) -> None:
    tiny_sam.save_pretrained(tmp_path)
    loaded = build_region_tokenizer(SamBackboneConfig(name_or_path=str(tmp_path)))
    assert isinstance(loaded, SamRegionTokenizer) and isinstance(loaded, RegionTokenizer)
    assert loaded.describe()["family"] == "sam" and loaded.describe()["name_or_path"] == str(tmp_path)
    _assert_same_outputs(loaded, _tokenizer(tiny_sam), image, boxes[:4])


def test_folder_with_a_missing_weight_is_refused(tiny_sam: SamModel, tmp_path: Path) -> None:
    tiny_sam.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["mask_decoder.iou_token.weight"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(BackboneLoadError, match=r"mask_decoder\.iou_token\.weight"):
        build_region_tokenizer(SamBackboneConfig(name_or_path=str(tmp_path)))


def test_original_layout_checkpoint_loads(tiny_sam: SamModel, image: np.ndarray, boxes: torch.Tensor,
                                          tmp_path: Path) -> None:
    path = tmp_path / "sam_tiny.pth"
    torch.save(hf_to_original(tiny_sam.state_dict()), path)
    loaded = build_region_tokenizer(SamBackboneConfig(name_or_path=str(path), token_place="hypernet_mlp"))
    assert loaded.describe()["family"] == "sam" and loaded.token_dim == 32
    _assert_same_outputs(loaded, _tokenizer(tiny_sam, "hypernet_mlp"), image, boxes[:4])
    broken = hf_to_original(tiny_sam.state_dict())
    broken["mask_decoder.extra.weight"] = torch.zeros(1)
    torch.save(broken, path)
    with pytest.raises(BackboneLoadError, match=r"mask_decoder\.extra\.weight"):
        build_region_tokenizer(SamBackboneConfig(name_or_path=str(path)))


def test_bad_names_and_places_are_refused(tmp_path: Path, tiny_sam: SamModel) -> None:
    with pytest.raises(BackboneLoadError, match="not found"):
        build_region_tokenizer(SamBackboneConfig(name_or_path=str(tmp_path / "missing.pt")))
    with pytest.raises(BackboneLoadError):
        build_region_tokenizer(SamBackboneConfig(name_or_path=str(tmp_path / "no-such-folder")))
    with pytest.raises(ValueError, match="token_place"):
        region_tokenizer_from_sam_model(tiny_sam, "neck")


def test_inputs_are_validated(tiny_sam: SamModel, image: np.ndarray, boxes: torch.Tensor) -> None:
    tokenizer = _tokenizer(tiny_sam)
    for bad in (image.astype(np.float32), image[..., 0], image[..., :2], image[:0]):
        with pytest.raises(ValueError, match="uint8"):
            tokenizer.encode_image(bad)
    embedding = tokenizer.encode_image(image)
    for bad_boxes in (boxes.long(), boxes[:0], boxes[0], boxes[:, :3]):
        with pytest.raises(ValueError, match="boxes"):
            tokenizer.encode_regions(embedding, bad_boxes)


def test_describe(tiny_sam: SamModel) -> None:
    info = _tokenizer(tiny_sam, "prompt_encoder", multimask=True).describe()
    assert {k: info[k] for k in ("family", "token_place", "multimask", "token_dim")} == {
        "family": "sam", "token_place": "prompt_encoder", "multimask": True, "token_dim": 256}
    assert "name_or_path" in info and info["image_input_size"] == 1024


def test_preprocessing_geometry() -> None:
    assert resized_shape(480, 640, 1024) == (768, 1024)
    assert resized_shape(1000, 333, 1024) == (1024, 341)
    mean_color = np.broadcast_to(np.array([124, 116, 104], dtype=np.uint8), (100, 50, 3)).copy()
    pixels, size = preprocess_image(mean_color, 1024)
    assert pixels.shape == (1, 3, 1024, 1024) and size == (1024, 512)
    assert pixels[..., :, :512].abs().max() < 0.01  # the SAM mean maps to ~0
    noisy = np.random.default_rng(1).integers(0, 256, (100, 50, 3), dtype=np.uint8)
    pixels, _ = preprocess_image(noisy, 1024)
    assert pixels[..., 512:].abs().max() == 0 and pixels[..., :512].abs().mean() > 0.3  # padded right only
    box = scale_boxes(torch.tensor([[10.0, 20.0, 50.0, 100.0]]), (100, 50), (1024, 512))
    torch.testing.assert_close(box, torch.tensor([[102.4, 204.8, 512.0, 1024.0]]))


def test_masks_to_original_recovers_a_box() -> None:
    """A box drawn in the 256x256 padded frame comes back at its original-pixel position."""
    original, input_size = (H, W), (768, 1024)
    box = torch.tensor([100.0, 50.0, 300.0, 200.0])  # xyxy, original pixels
    low = box * 1.6 / 4  # original -> resized (x1.6) -> low-res grid (1024 / 256)
    ys, xs = torch.meshgrid(torch.arange(256) + 0.5, torch.arange(256) + 0.5, indexing="ij")
    inside = (xs > low[0]) & (xs < low[2]) & (ys > low[1]) & (ys < low[3])
    logits = torch.where(inside, 10.0, -10.0)[None]
    mask = masks_to_original(logits, input_size, original, 1024)[0] > 0
    assert mask.shape == original
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    truth = (xs > box[0]) & (xs < box[2]) & (ys > box[1]) & (ys < box[3])
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.98


@pytest.mark.parametrize("place", ["transformer", "hypernet_mlp"])
def test_skipping_masks_keeps_tokens_and_scores(tiny_sam: SamModel, image: np.ndarray, boxes: torch.Tensor,
                                                place: str) -> None:
    tokenizer = _tokenizer(tiny_sam, place, multimask=True)
    embedding = tokenizer.encode_image(image)
    full = tokenizer.encode_regions(embedding, boxes)
    lean = tokenizer.encode_regions(embedding, boxes, with_masks=False)
    assert lean.mask_logits is None and full.mask_logits is not None
    torch.testing.assert_close(lean.tokens, full.tokens)
    torch.testing.assert_close(lean.mask_scores, full.mask_scores)
