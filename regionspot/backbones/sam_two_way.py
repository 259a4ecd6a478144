"""SAM's two-way transformer for many boxes of one image, with the per-box work cut down.

Mathematically the same as ``SamTwoWayTransformer.forward`` run with each box in its own batch
row, but much cheaper per box, because

* until the first image-to-token attention, the image side is the same for every box of the
  image, so its projections (layer 1's token-to-image keys/values and image-to-token queries)
  are computed once per call instead of once per box;
* attention against the few prompt tokens (T = 7) is re-associated so that the large image
  side (h*w = 4096 rows) meets a 7-wide operand, never a full 256x128 projection per box:
  ``softmax(q (X Wk)^T) (X Wv) = softmax((q Wk^T) X^T) (X) Wv`` per head (the key bias only adds
  a per-query constant, which softmax ignores; rows of the attention sum to 1, so the value
  bias passes through), and the image-to-token output projection is applied to the 7 value
  rows before mixing.

Per box this is about 0.4 GMAC instead of about 1.3 GMAC for SAM ViT-B/MobileSAM at 1024.
Shapes: ``n`` boxes, ``T`` prompt tokens, ``L = h*w`` image tokens, ``C`` = 256 channels,
``H`` heads of width ``d`` (cross-attention internal width is C/2 in SAM).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # the modules this file drives (transformers' SAM; pinned in pyproject.toml)
    from transformers.models.sam.modeling_sam import SamAttention, SamTwoWayAttentionBlock, SamTwoWayTransformer


def _split(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[..., L, H*d] -> [..., H, L, d]."""
    *lead, length, width = x.shape
    return x.reshape(*lead, length, heads, width // heads).transpose(-3, -2)


def _head_weights(linear: nn.Linear, heads: int) -> torch.Tensor:
    """A projection's weight [H*d, C] as [H, d, C]."""
    return linear.weight.reshape(heads, -1, linear.weight.shape[-1])


def _self_attention(attn: SamAttention, query: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Plain attention among the T prompt tokens of each box: [n, T, C] -> [n, T, C]."""
    heads = attn.num_attention_heads
    q, k, v = (_split(p(x), heads) for p, x in ((attn.q_proj, query), (attn.k_proj, query), (attn.v_proj, value)))
    out = F.scaled_dot_product_attention(q, k, v, scale=attn.scaling)
    return attn.out_proj(out.transpose(1, 2).flatten(2))


def tokens_to_shared_image(attn: SamAttention, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
                           ) -> torch.Tensor:
    """Token-to-image attention when the image side is the same for all boxes.

    ``query`` [n, T, C]; ``keys``/``values`` [1, L, C] (one image). Returns [n, T, C]."""
    heads = attn.num_attention_heads
    q = _split(attn.q_proj(query), heads)                   # [n, H, T, d]
    k = _split(attn.k_proj(keys), heads)                    # [1, H, L, d], once for all boxes
    v = _split(attn.v_proj(values), heads)
    out = F.scaled_dot_product_attention(q, k.expand(q.shape[0], -1, -1, -1),
                                         v.expand(q.shape[0], -1, -1, -1), scale=attn.scaling)
    return attn.out_proj(out.transpose(1, 2).flatten(2))


def softmax_last(x: torch.Tensor) -> torch.Tensor:
    """Numerically stable softmax over a short last dimension (the T prompt tokens), written
    out because torch's kernel is several times slower on such narrow rows. Works in place."""
    x = x - x.amax(dim=-1, keepdim=True)
    x = x.exp_()
    return x.div_(x.sum(dim=-1, keepdim=True))


def tokens_to_image(attn: SamAttention, query: torch.Tensor, values: torch.Tensor, image_pe: torch.Tensor,
                    keys: torch.Tensor | None = None) -> torch.Tensor:
    """Token-to-image attention with a different image side per box, re-associated.

    ``query`` [n, T, C]; ``values`` [n, L, C] the image side; ``keys`` [n, L, C] the image side
    plus its positional encoding, or None to add ``image_pe`` [1, L, C] inside the score
    product (cheaper when only a few tokens query). Returns [n, T, C]."""
    heads = attn.num_attention_heads
    q = _split(attn.q_proj(query), heads)                                  # [n, H, T, d]
    q_in_image_space = ((q * attn.scaling) @ _head_weights(attn.k_proj, heads)).flatten(1, 2)  # [n, H*T, C]
    if keys is None:
        pe_scores = (q_in_image_space.flatten(0, 1) @ image_pe[0].t()).unflatten(0, q_in_image_space.shape[:2])
        scores = torch.baddbmm(pe_scores, q_in_image_space, values.transpose(1, 2))   # [n, H*T, L]
    else:
        scores = q_in_image_space @ keys.transpose(1, 2)
    weights = scores.softmax(dim=-1)
    mixed = (weights @ values).unflatten(1, (heads, -1))                   # [n, H, T, C]
    w_v = _head_weights(attn.v_proj, heads)                                # [H, d, C]
    out = mixed @ w_v.transpose(1, 2) + attn.v_proj.bias.reshape(heads, 1, -1)  # [n, H, T, d]
    return attn.out_proj(out.transpose(1, 2).flatten(2))


def image_to_tokens(attn: SamAttention, image: torch.Tensor, image_query: torch.Tensor, token_keys: torch.Tensor,
                    token_values: torch.Tensor, image_q: torch.Tensor | None = None) -> torch.Tensor:
    """The image side after image-to-token attention, ``image + attention(image -> tokens)``.

    ``image`` [n or 1, L, C] is the image side, ``image_query`` the same plus its positional
    encoding. When the image side is shared by all boxes, pass its projected queries ``image_q``
    [L, H, d] (computed once); otherwise the query projection is re-associated onto the T token
    keys. ``token_keys``/``token_values`` [n, T, C]. The output projection is applied to the T
    value rows before mixing, and the residual is added inside the same product. Returns [n, L, C]."""
    heads = attn.num_attention_heads
    n, tokens = token_keys.shape[:2]
    k = _split(attn.k_proj(token_keys), heads) * attn.scaling              # [n, H, T, d]
    if image_q is not None:
        scores = torch.einsum("lhd,nhtd->nlht", image_q, k)                # [n, L, H, T]
    else:
        w_q = _head_weights(attn.q_proj, heads)                            # [H, d, C]
        k_in_image_space = torch.einsum("hdc,nhtd->ncht", w_q, k).flatten(2)   # [n, C, H*T]
        bias = torch.einsum("hd,nhtd->nht", attn.q_proj.bias.reshape(heads, -1), k).flatten(1)
        scores = torch.baddbmm(bias.unsqueeze(1), image_query.expand(n, -1, -1), k_in_image_space)
        scores = scores.unflatten(2, (heads, tokens))
    weights = softmax_last(scores).flatten(2)                              # [n, L, H*T]
    v = _split(attn.v_proj(token_values), heads)                           # [n, H, T, d]
    w_out = attn.out_proj.weight.reshape(-1, heads, v.shape[-1]).permute(1, 2, 0)  # [H, d, C]
    # each head's weights sum to 1, so bias/heads per value row adds the output bias once
    v_out = (v @ w_out + attn.out_proj.bias / heads).flatten(1, 2)         # [n, H*T, C]
    return torch.baddbmm(image.expand(n, -1, -1), weights, v_out)


def two_way_transformer(transformer: SamTwoWayTransformer, point_embeddings: torch.Tensor, image: torch.Tensor,
                        image_pe: torch.Tensor, final_tokens: int | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """``SamTwoWayTransformer`` for n boxes of one image.

    ``point_embeddings`` [n, T, C] (output tokens + box corners); ``image`` and ``image_pe``
    [1, L, C] (flattened image embedding with the dense prompt added, and its positional
    encoding). ``final_tokens``: how many leading tokens the caller reads (the IoU and mask
    tokens); the final attention runs for those only. Returns (tokens [n, final_tokens, C]
    after the final attention and norm, image side [n, L, C])."""
    queries, keys = point_embeddings, image
    shared = True
    for index, layer in enumerate(cast("Iterable[SamTwoWayAttentionBlock]", transformer.layers)):
        if index == 0 and layer.skip_first_layer_pe:
            queries = _self_attention(layer.self_attn, queries, queries)
        else:
            queries = queries + _self_attention(layer.self_attn, queries + point_embeddings, queries)
        queries = layer.layer_norm1(queries)
        query = queries + point_embeddings
        key = keys + image_pe
        if shared:
            queries = queries + tokens_to_shared_image(layer.cross_attn_token_to_image, query, key, keys)
        else:
            queries = queries + tokens_to_image(layer.cross_attn_token_to_image, query, keys, image_pe, key)
        queries = layer.layer_norm2(queries)
        queries = layer.layer_norm3(queries + layer.mlp(queries))
        query = queries + point_embeddings
        attn = layer.cross_attn_image_to_token
        image_q = None
        if shared:  # the image side is still the same for every box: project its queries once
            image_q = attn.q_proj(key[0]).unflatten(-1, (attn.num_attention_heads, -1))
        keys = layer.layer_norm4(image_to_tokens(attn, keys, key, query, queries, image_q))  # per box now
        shared = False
    kept = slice(0, final_tokens)
    queries, query = queries[:, kept], (queries + point_embeddings)[:, kept]
    final = transformer.final_attn_token_to_image
    if shared:
        attended = tokens_to_shared_image(final, query, keys + image_pe, keys)
    else:
        attended = tokens_to_image(final, query, keys, image_pe)
    queries = transformer.layer_norm_final_attn(queries + attended)
    return queries, keys
