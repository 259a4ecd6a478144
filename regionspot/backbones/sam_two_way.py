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

The image-to-token softmax runs over the T tokens with the L image positions contiguous (one
vectorised pass per token), and the shared first layer's scores come from one block-diagonal
GEMM. On a CPU, the large per-box tensors ([n, L, C], [n, H*T, L]) are written into buffers
reused from chunk to chunk (:class:`Workspace`): allocating them afresh for every chunk cost
the kernel's page faults, about as much time as the arithmetic done in them.

Per box this is about 0.4 GMAC instead of about 1.3 GMAC for SAM ViT-B/MobileSAM at 1024 (the
block-diagonal GEMM does 8x the multiply-adds of per-head products, 29M instead of 3.7M, and
is still faster: one large product instead of eight narrow ones).
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


class Workspace:
    """Buffers for the large per-box tensors, reused by the chunks of one call.

    With ``reuse`` (eager fp32 inference on the CPU), :meth:`buffer` hands out
    the first ``n`` rows of a buffer made for the largest chunk seen, and :meth:`layer_norm`
    normalises in place, box by box. Without it (tracing for ONNX, autocast, a GPU),
    :meth:`buffer` returns None, so ``out=None`` allocates as usual, and :meth:`layer_norm`
    is the module's own call. A tensor written into a buffer stays valid only until the next
    call that uses the same workspace."""

    def __init__(self, reuse: bool) -> None:
        self.reuse = reuse
        self._buffers: dict[str, torch.Tensor] = {}

    @classmethod
    def for_inference(cls, device: torch.device) -> Workspace:
        """A reusing workspace for eager fp32 inference on the CPU (where the page faults and the
        box-by-box temporaries were measured); fresh tensors on a GPU, under autograd, autocast,
        tracing or compilation."""
        eager = not torch.jit.is_tracing() and not torch.compiler.is_compiling()
        return cls(reuse=device.type == "cpu" and eager and not torch.is_grad_enabled()
                   and not torch.is_autocast_enabled(device.type))

    def buffer(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor | None:
        """``[n, ...]`` rows of the buffer ``name`` (dtype and device of ``like``), or None."""
        if not self.reuse:
            return None
        buffer = self._buffers.get(name)
        if (buffer is None or buffer.shape[1:] != shape[1:] or buffer.shape[0] < shape[0]
                or buffer.dtype != like.dtype or buffer.device != like.device):
            buffer = torch.empty(shape, dtype=like.dtype, device=like.device)
            self._buffers[name] = buffer
        return buffer[:shape[0]]

    def layer_norm(self, norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
        """``norm(x)`` for ``x`` [n, L, C]; with ``reuse`` written over ``x`` one box at a time
        (a per-box temporary is small enough for the allocator to recycle)."""
        if not self.reuse:
            return cast(torch.Tensor, norm(x))
        for row in x:
            row.copy_(F.layer_norm(row, norm.normalized_shape, norm.weight, norm.bias, norm.eps))
        return x


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


def softmax_in_place(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Numerically stable softmax of ``x`` over ``dim``, written over ``x`` (no second tensor of
    its size). Over the T prompt tokens of ``[n, H, T, L]`` each step is a vectorised pass over
    T contiguous rows of L, where torch's kernel reduces 7-wide rows."""
    x.sub_(x.amax(dim=dim, keepdim=True)).exp_()
    return x.div_(x.sum(dim=dim, keepdim=True))


def tokens_to_image(attn: SamAttention, query: torch.Tensor, values: torch.Tensor, image_pe: torch.Tensor,
                    keys: torch.Tensor | None, workspace: Workspace) -> torch.Tensor:
    """Token-to-image attention with a different image side per box, re-associated.

    ``query`` [n, T, C]; ``values`` [n, L, C] the image side; ``keys`` [n, L, C] the image side
    plus its positional encoding, or None to add ``image_pe`` [1, L, C] inside the score
    product (cheaper when only a few tokens query). ``workspace``: where the [n, H*T, L] scores
    go (see :class:`Workspace`). Returns [n, T, C]."""
    heads = attn.num_attention_heads
    q = _split(attn.q_proj(query), heads)                                  # [n, H, T, d]
    q_in_image_space = ((q * attn.scaling) @ _head_weights(attn.k_proj, heads)).flatten(1, 2)  # [n, H*T, C]
    n, rows = q_in_image_space.shape[:2]
    length = values.shape[1]
    buffer = workspace.buffer(f"token_scores_{rows}", (n, rows, length), values)
    if keys is not None:
        scores = torch.bmm(q_in_image_space, keys.transpose(1, 2), out=buffer)      # [n, H*T, L]
    elif buffer is not None:  # the positional part into the buffer, the image part added onto it
        torch.mm(q_in_image_space.flatten(0, 1), image_pe[0].t(), out=buffer.view(n * rows, length))
        scores = buffer.baddbmm_(q_in_image_space, values.transpose(1, 2))
    else:
        pe_scores = (q_in_image_space.flatten(0, 1) @ image_pe[0].t()).view(n, rows, length)
        scores = torch.baddbmm(pe_scores, q_in_image_space, values.transpose(1, 2))
    weights = scores.softmax(dim=-1) if buffer is None else softmax_in_place(scores, dim=-1)
    mixed = (weights @ values).unflatten(1, (heads, -1))                   # [n, H, T, C]
    w_v = _head_weights(attn.v_proj, heads)                                # [H, d, C]
    out = mixed @ w_v.transpose(1, 2) + attn.v_proj.bias.reshape(heads, 1, -1)  # [n, H, T, d]
    return attn.out_proj(out.transpose(1, 2).flatten(2))


def image_to_tokens(attn: SamAttention, image: torch.Tensor, image_query: torch.Tensor, token_keys: torch.Tensor,
                    token_values: torch.Tensor, image_q: torch.Tensor | None, workspace: Workspace,
                    out_name: str) -> torch.Tensor:
    """The image side after image-to-token attention, ``image + attention(image -> tokens)``.

    ``image`` [n or 1, L, C] is the image side, ``image_query`` the same plus its positional
    encoding. When the image side is shared by all boxes, pass its projected queries ``image_q``
    [H*d, L] (computed once); otherwise the query projection is re-associated onto the T token
    keys. ``token_keys``/``token_values`` [n, T, C]. The output projection is applied to the T
    value rows before mixing. ``workspace``/``out_name``: the buffers for the scores and for the
    result. Returns [n, L, C] (the buffer ``out_name`` when the workspace reuses buffers)."""
    heads = attn.num_attention_heads
    n, tokens = token_keys.shape[:2]
    length = image.shape[1]
    k = _split(attn.k_proj(token_keys), heads) * attn.scaling              # [n, H, T, d]
    buffer = workspace.buffer("image_scores", (n, heads * tokens, length), image)
    if image_q is not None:  # one GEMM: each head's keys meet only that head's query channels
        block = torch.block_diag(*torch.ones(heads, tokens, k.shape[-1], dtype=k.dtype, device=k.device))
        k_blocks = k.flatten(1, 2).repeat(1, 1, heads) * block             # [n, H*T, H*d]
        scores = torch.matmul(k_blocks, image_q, out=buffer)               # [n, H*T, L]
    else:
        w_q = _head_weights(attn.q_proj, heads)                            # [H, d, C]
        k_in_image_space = torch.einsum("hdc,nhtd->nhtc", w_q, k).flatten(1, 2)   # [n, H*T, C]
        bias = torch.einsum("hd,nhtd->nht", attn.q_proj.bias.reshape(heads, -1), k).flatten(1)
        scores = torch.baddbmm(bias.unsqueeze(2), k_in_image_space, image_query.transpose(1, 2), out=buffer)
    softmax_in_place(scores.unflatten(1, (heads, tokens)), dim=2)         # over each head's T tokens
    weights = scores                                                       # [n, H*T, L]
    v = _split(attn.v_proj(token_values), heads)                           # [n, H, T, d]
    w_out = attn.out_proj.weight.reshape(-1, heads, v.shape[-1]).permute(1, 2, 0)  # [H, d, C]
    # each head's weights sum to 1, so bias/heads per value row adds the output bias once
    v_out = (v @ w_out + attn.out_proj.bias / heads).flatten(1, 2)         # [n, H*T, C]
    out = workspace.buffer(out_name, (n, length, image.shape[2]), image)
    return torch.bmm(weights.transpose(1, 2), v_out, out=out).add_(image)


def two_way_transformer(transformer: SamTwoWayTransformer, point_embeddings: torch.Tensor, image: torch.Tensor,
                        image_pe: torch.Tensor, final_tokens: int | None = None,
                        workspace: Workspace | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``SamTwoWayTransformer`` for n boxes of one image.

    ``point_embeddings`` [n, T, C] (output tokens + box corners); ``image`` and ``image_pe``
    [1, L, C] (flattened image embedding with the dense prompt added, and its positional
    encoding). ``final_tokens``: how many leading tokens the caller reads (the IoU and mask
    tokens); the final attention runs for those only. ``workspace``: buffers shared by the
    chunks of one call (see :class:`Workspace`). Inference only: the softmaxes work in place,
    so there is no backward through this function (SAM is frozen). Returns (tokens
    [n, final_tokens, C] after the final attention and norm, image side [n, L, C], valid until
    the workspace's next use)."""
    workspace = workspace if workspace is not None else Workspace.for_inference(image.device)
    queries, keys = point_embeddings, image
    shared = True
    for index, layer in enumerate(cast("Iterable[SamTwoWayAttentionBlock]", transformer.layers)):
        if index == 0 and layer.skip_first_layer_pe:
            queries = _self_attention(layer.self_attn, queries, queries)
        else:
            queries = queries + _self_attention(layer.self_attn, queries + point_embeddings, queries)
        queries = layer.layer_norm1(queries)
        query = queries + point_embeddings
        if shared:
            key = keys + image_pe
            queries = queries + tokens_to_shared_image(layer.cross_attn_token_to_image, query, key, keys)
        else:
            key = torch.add(keys, image_pe, out=workspace.buffer("image_key", tuple(keys.shape), keys))
            queries = queries + tokens_to_image(layer.cross_attn_token_to_image, query, keys, image_pe, key,
                                                workspace)
        queries = layer.layer_norm2(queries)
        queries = layer.layer_norm3(queries + layer.mlp(queries))
        query = queries + point_embeddings
        attn = layer.cross_attn_image_to_token
        image_q = attn.q_proj(key[0]).t() if shared else None  # shared image side: its queries once [H*d, L]
        updated = image_to_tokens(attn, keys, key, query, queries, image_q, workspace, f"image_side_{index % 2}")
        keys = workspace.layer_norm(layer.layer_norm4, updated)  # per box from here on
        shared = False
    kept = slice(0, final_tokens)
    queries, query = queries[:, kept], (queries + point_embeddings)[:, kept]
    final = transformer.final_attn_token_to_image
    if shared:
        attended = tokens_to_shared_image(final, query, keys + image_pe, keys)
    else:
        attended = tokens_to_image(final, query, keys, image_pe, None, workspace)
    queries = transformer.layer_norm_final_attn(queries + attended)
    return queries, keys
