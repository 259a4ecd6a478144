"""Point-prompt decoding (one foreground point per prompt, multi-mask mode) equals Hugging Face's
``SamModel`` forward, on a tiny random SAM whose every width is small."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import SamConfig, SamMaskDecoderConfig, SamModel, SamPromptEncoderConfig, SamVisionConfig

from regionspot.backbones.protocols import PointPromptable, SamImageEmbedding
from regionspot.backbones.sam_prompt_head import SamPromptHead
from regionspot.backbones.sam_tokenizer import SamRegionTokenizer

HIDDEN, GRID, INPUT = 32, 16, 256  # channels, image-embedding side, encoder input side
H, W = 120, 200  # original image; resized to (154, 256) before padding


@pytest.fixture(scope="module")
def tiny_sam() -> SamModel:
    """Every module small; weights perturbed (biases start at zero) and IoU outputs spread."""
    torch.manual_seed(0)
    vision = SamVisionConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, global_attn_indexes=[0],
                             mlp_dim=32, image_size=INPUT, output_channels=HIDDEN, num_pos_feats=HIDDEN // 2)
    prompt = SamPromptEncoderConfig(hidden_size=HIDDEN, image_size=INPUT, image_embedding_size=GRID,
                                    mask_input_channels=8)
    decoder = SamMaskDecoderConfig(hidden_size=HIDDEN, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32)
    model = SamModel(SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
        model.shared_image_embedding.positional_embedding.normal_(0, 1)
        model.mask_decoder.iou_prediction_head.proj_out.weight.mul_(10)
    return model.eval()


def _hf_points(model: SamModel, embeddings: torch.Tensor, points: torch.Tensor):
    """HF forward with each point its own prompt (point batch P, one point each, label 1)."""
    with torch.no_grad():
        out = model(image_embeddings=embeddings, input_points=points[None, :, None, :],
                    input_labels=torch.ones(1, len(points), 1, dtype=torch.long), multimask_output=True)
    return out.pred_masks[0], out.iou_scores[0]  # [P, 3, 4g, 4g], [P, 3]


def test_decode_points_matches_hf_forward(tiny_sam: SamModel) -> None:
    head = SamPromptHead.from_sam_model(tiny_sam, chunk_size=4)  # several chunks
    generator = torch.Generator().manual_seed(1)
    embeddings = torch.randn(1, HIDDEN, GRID, GRID, generator=generator)
    points = torch.rand(9, 2, generator=generator) * INPUT
    with torch.no_grad():
        masks, iou = head.decode_points(embeddings, points)
    ref_masks, ref_iou = _hf_points(tiny_sam, embeddings, points)
    assert masks.shape == (9, 3, 4 * GRID, 4 * GRID) and iou.shape == (9, 3)
    torch.testing.assert_close(iou, ref_iou, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(masks, ref_masks, rtol=1e-5, atol=1e-5)
    # the comparison means something only if the point and the output index change the result
    assert (masks[1:] - masks[:1]).abs().amax() > 100 * 1e-5 and (iou[1:] - iou[:1]).abs().amax() > 100 * 1e-5
    assert (masks[:, 1:] - masks[:, :1]).abs().amax() > 100 * 1e-5
    with torch.no_grad():  # a point alone gives what it gives in a batch
        alone_masks, alone_iou = head.decode_points(embeddings, points[5:6])
    torch.testing.assert_close(alone_masks, masks[5:6], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(alone_iou, iou[5:6], rtol=1e-5, atol=1e-5)


def test_point_embedding_matches_hf_prompt_encoder(tiny_sam: SamModel) -> None:
    head = SamPromptHead.from_sam_model(tiny_sam)
    points = torch.tensor([[0.0, 0.0], [100.5, 31.0], [255.0, 200.0]])
    with torch.no_grad():
        sparse, _ = tiny_sam.get_prompt_embeddings(input_points=points[None, :, None, :],
                                                   input_labels=torch.ones(1, 3, 1, dtype=torch.long))
        ours = head.embed_points(points)
    torch.testing.assert_close(ours, sparse[0], rtol=1e-5, atol=1e-5)  # foreground point + padding point


def test_tokenizer_scales_original_pixels_to_the_encoder_input(tiny_sam: SamModel) -> None:
    tokenizer = SamRegionTokenizer(nn.Identity(), SamPromptHead.from_sam_model(tiny_sam), family="sam",
                                   name_or_path="tiny")
    assert isinstance(tokenizer, PointPromptable)
    embeddings = torch.randn(1, HIDDEN, GRID, GRID, generator=torch.Generator().manual_seed(2))
    embedding = SamImageEmbedding(embeddings=embeddings, original_size=(H, W), input_size=(154, 256))
    points = torch.tensor([[10.0, 20.0], [150.0, 100.0], [199.0, 119.0]])
    masks, iou = tokenizer.encode_points(embedding, points)
    ref_masks, ref_iou = _hf_points(tiny_sam, embeddings, points * torch.tensor([256 / W, 154 / H]))
    torch.testing.assert_close(masks, ref_masks, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(iou, ref_iou, rtol=1e-5, atol=1e-5)
    for bad in (points.long(), points[:0], points[0], points[:, :1]):
        with pytest.raises(ValueError, match=r"\[P, 2\]"):
            tokenizer.encode_points(embedding, bad)


def test_several_labelled_clicks_decode_as_hf_forward(tiny_sam: SamModel) -> None:
    """R regions of P clicks with foreground/background labels, SAM's single output (token 0)."""
    head = SamPromptHead.from_sam_model(tiny_sam, chunk_size=2)
    generator = torch.Generator().manual_seed(3)
    embeddings = torch.randn(1, HIDDEN, GRID, GRID, generator=generator)
    points = torch.rand(3, 2, 2, generator=generator) * INPUT  # [R, P, 2]
    labels = torch.tensor([[1, 0], [1, 1], [0, 1]])
    with torch.no_grad():
        masks, iou = head.decode_points(embeddings, points, labels, single=True)
        out = tiny_sam(image_embeddings=embeddings, input_points=points[None], input_labels=labels[None],
                       multimask_output=False)
    assert masks.shape == (3, 1, 4 * GRID, 4 * GRID) and iou.shape == (3, 1)
    torch.testing.assert_close(masks, out.pred_masks[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(iou, out.iou_scores[0], rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the comparison means something only if a background label changes the prompt
        background = head.embed_points(points[:1], torch.tensor([[1, 0]]))
        foreground = head.embed_points(points[:1], torch.tensor([[1, 1]]))
        flipped, _ = head.decode_points(embeddings, points[:1], torch.tensor([[1, 1]]), single=True)
    assert (background - foreground)[:, 1].abs().amax() > 0.01 and not torch.equal(flipped, masks[:1])


def test_background_clicks_refine_the_foreground_answer(tiny_sam: SamModel) -> None:
    """With background clicks the tokenizer first decodes the foreground clicks alone, then all
    clicks with that answer as the mask prompt, as HF's forward with ``input_masks``."""
    head = SamPromptHead.from_sam_model(tiny_sam)
    tokenizer = SamRegionTokenizer(nn.Identity(), head, family="sam", name_or_path="tiny")
    embeddings = torch.randn(1, HIDDEN, GRID, GRID, generator=torch.Generator().manual_seed(4))
    embedding = SamImageEmbedding(embeddings=embeddings, original_size=(INPUT, INPUT), input_size=(INPUT, INPUT))
    points = torch.tensor([[[40.0, 50.0], [120.0, 90.0]]])
    masks, iou = tokenizer.encode_point_prompts(embedding, points, torch.tensor([[1, 0]]))
    with torch.no_grad():
        first, first_iou = head.decode_points(embeddings, points[:, :1])  # the foreground click alone
        previous = first[0, int(first_iou[0].argmax())]
        out = tiny_sam(image_embeddings=embeddings, input_points=points[None], input_labels=torch.tensor([[[1, 0]]]),
                       input_masks=previous[None, None], multimask_output=False)
    assert masks.shape == (1, 1, 4 * GRID, 4 * GRID)
    torch.testing.assert_close(masks, out.pred_masks[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(iou, out.iou_scores[0], rtol=1e-5, atol=1e-5)
