"""The re-associated two-way transformer equals Hugging Face's, box by box."""

from __future__ import annotations

import pytest
import torch
from transformers import SamMaskDecoderConfig
from transformers.models.sam.modeling_sam import SamTwoWayTransformer

from regionspot.backbones.sam_two_way import Workspace, two_way_transformer


@pytest.fixture(scope="module")
def transformer() -> SamTwoWayTransformer:
    torch.manual_seed(0)
    config = SamMaskDecoderConfig(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, mlp_dim=128)
    config._attn_implementation = "eager"
    module = SamTwoWayTransformer(config).eval()
    with torch.no_grad():
        for parameter in module.parameters():  # biases start at zero: make them count
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return module


@pytest.mark.parametrize("reuse", [True, False], ids=["reused-buffers", "fresh-tensors"])
@pytest.mark.parametrize("final_tokens", [None, 2])
def test_matches_reference_for_each_box(transformer: SamTwoWayTransformer, final_tokens: int | None,
                                        reuse: bool) -> None:
    torch.manual_seed(1)
    n, tokens, length = 5, 7, 36
    points = torch.randn(n, tokens, 64)
    image, pe = torch.randn(1, length, 64), torch.randn(1, length, 64)
    with torch.no_grad():
        workspace = Workspace(reuse=reuse)
        # chunks of 3 then 2 boxes through one workspace: the second reuses (part of) the first's buffers
        chunks = [two_way_transformer(transformer, part, image, pe, final_tokens=final_tokens, workspace=workspace)
                  for part in points.split(3)]
        fast_tokens = torch.cat([chunk_tokens for chunk_tokens, _ in chunks])
        fast_image = chunks[-1][1]  # a reused buffer holds the last chunk's image side only
        for box in range(n):  # the reference, one box at a time
            ref_tokens, ref_image = transformer(point_embeddings=points[box][None, None],
                                                image_embeddings=image.transpose(1, 2).reshape(1, 64, 6, 6),
                                                image_positional_embeddings=pe.transpose(1, 2).reshape(1, 64, 6, 6),
                                                attention_similarity=None)
            kept = ref_tokens[0, 0, :final_tokens]
            torch.testing.assert_close(fast_tokens[box], kept, atol=2e-5, rtol=1e-4)
            if box >= 3:
                torch.testing.assert_close(fast_image[box - 3], ref_image[0, 0], atol=2e-5, rtol=1e-4)
    assert fast_tokens.shape == (n, final_tokens or tokens, 64)


def test_workspace_reuses_buffers_only_in_eager_cpu_inference() -> None:
    assert Workspace(reuse=False).buffer("x", (2, 3), torch.zeros(1)) is None
    assert not Workspace.for_inference(torch.device("cpu")).reuse  # autograd is on here
    with torch.no_grad():
        workspace = Workspace.for_inference(torch.device("cpu"))
        assert workspace.reuse
        first = workspace.buffer("x", (4, 3), torch.zeros(1))
        smaller = workspace.buffer("x", (2, 3), torch.zeros(1))
        assert first is not None and smaller is not None
        assert smaller.data_ptr() == first.data_ptr() and smaller.shape == (2, 3)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not Workspace.for_inference(torch.device("cpu")).reuse
        assert not Workspace.for_inference(torch.device("cuda")).reuse  # a GPU batches boxes instead
