from __future__ import annotations

import pytest
import torch

from regionspot.config import FusionConfig
from regionspot.model.fusion import RegionFusion, count_parameters, pad_regions

TINY = FusionConfig(token_dim=16, width=32, text_dim=24, depth=2, heads=4, ffn_dim=64, dropout=0.0)


def test_parameter_counts_match_spec_shapes():
    bb = count_parameters(RegionFusion(FusionConfig(token_dim=256, width=768, text_dim=512)))
    bl = count_parameters(RegionFusion(FusionConfig(token_dim=256, width=1024, text_dim=768)))
    assert 23.5e6 < bb < 24.5e6  # the paper: about 24M
    assert 38.5e6 < bl < 39.5e6  # the paper: about 39M


def test_output_shapes_unit_norm_and_attention():
    torch.manual_seed(0)
    fusion = RegionFusion(TINY).eval()
    tokens, memory = torch.randn(2, 5, 16), torch.randn(2, 7, 32)
    embeddings, attention = fusion(tokens, memory, need_attention=True)
    assert embeddings.shape == (2, 5, 24)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(2, 5))
    assert attention.shape == (2, 5, 7)
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 5))
    logits = fusion.logits(embeddings, torch.nn.functional.normalize(torch.randn(3, 24), dim=-1))
    assert logits.shape == (2, 5, 3) and logits.abs().max() <= 100.0 + 1e-4


def test_padding_mask_makes_padded_slots_invisible():
    torch.manual_seed(0)
    fusion = RegionFusion(TINY).eval()
    a, b = torch.randn(3, 16), torch.randn(5, 16)
    memory = torch.randn(2, 7, 32)
    tokens, padding = pad_regions([a, b])
    assert padding.tolist()[0] == [False] * 3 + [True] * 2
    batched, _ = fusion(tokens, memory, padding)
    alone, _ = fusion(a[None], memory[:1])
    torch.testing.assert_close(batched[0, :3], alone[0], atol=1e-5, rtol=1e-5)
    # garbage in the padded slots must not leak into real regions
    tokens[0, 3:] = 1e3
    again, _ = fusion(tokens, memory, padding)
    torch.testing.assert_close(again[0, :3], alone[0], atol=1e-5, rtol=1e-5)


def test_self_attention_switch():
    torch.manual_seed(0)
    memory = torch.randn(1, 7, 32)
    tokens = torch.randn(1, 4, 16)
    for self_attention, should_match in ((False, True), (True, False)):
        fusion = RegionFusion(FusionConfig(**{**TINY.__dict__, "region_self_attention": self_attention})).eval()
        together, _ = fusion(tokens, memory)
        alone, _ = fusion(tokens[:, :1], memory)
        assert torch.allclose(together[0, 0], alone[0, 0], atol=1e-5) is should_match


def test_no_memory_ablation_runs_and_has_no_attention():
    fusion = RegionFusion(TINY, cross_attention=False).eval()
    embeddings, attention = fusion(torch.randn(1, 3, 16), None, need_attention=True)
    assert embeddings.shape == (1, 3, 24) and attention is None
    assert not any("cross_attn" in name for name, _ in fusion.named_parameters())
    with pytest.raises(ValueError, match="without CLIP vision"):
        fusion(torch.randn(1, 3, 16), torch.randn(1, 7, 32))
    embeddings.sum().backward()  # every parameter is used, so DDP needs no unused-parameter search
    assert all(p.grad is not None for p in fusion.parameters())


def test_gradients_reach_every_parameter():
    fusion = RegionFusion(TINY).train()
    embeddings, _ = fusion(torch.randn(2, 3, 16), torch.randn(2, 5, 32))
    embeddings.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in fusion.parameters())


@pytest.mark.parametrize(("tokens", "memory", "message"), [
    (torch.randn(3, 16), torch.randn(1, 7, 32), "tokens must be"),
    (torch.randn(1, 3, 15), torch.randn(1, 7, 32), "tokens must be"),
    (torch.randn(1, 3, 16), torch.randn(1, 7, 31), "memory must be"),
    (torch.randn(2, 3, 16), torch.randn(1, 7, 32), "memory must be"),
])
def test_shape_errors_are_clear(tokens, memory, message):
    with pytest.raises(ValueError, match=message):
        RegionFusion(TINY)(tokens, memory)


def test_width_must_divide_heads():
    with pytest.raises(ValueError, match="divisible"):
        RegionFusion(FusionConfig(width=30, heads=4))
