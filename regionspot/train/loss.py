"""The training loss of the paper's recipe (alpha 0.25, gamma 2 in the authors' release): sigmoid
focal loss against one-hot targets over the whole vocabulary.

Every region is scored against every name of its batch's dataset vocabulary (``N`` names); the
region's own class is the one positive, all other names are negatives. The loss is summed over all
``M x N`` (region, class) pairs and divided by a normaliser, by default the number of regions.

Distributed training: :class:`torch.nn.parallel.DistributedDataParallel` *averages* gradients
over the ``W`` processes. For the gradient to equal the single-process gradient of the whole
global batch (sum over all regions / global region count), every process must divide its local
sum by ``global_region_count / W``, i.e. by the all-reduced *mean* region count per process
(:func:`regionspot.processes.all_reduce_mean` of the local count). Dividing by the local
count instead would weight the regions of a process with few regions more heavily, and dividing
by the global count would shrink the gradient by ``W``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sigmoid_focal_loss(
    logits: Tensor,
    targets: Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    normalizer: float | Tensor | None = None,
) -> Tensor:
    """Sigmoid focal loss (Lin et al.) of ``logits`` [M, N] against one-hot ``targets`` [M].

    ``targets`` holds one class index in ``0..N-1`` per region (int64). For every pair with
    label ``t`` (1 for the region's class, 0 otherwise) and ``p = sigmoid(logit)``::

        loss = -alpha_t * (1 - p_t) ** gamma * log(p_t)
        p_t = p if t else 1 - p;   alpha_t = alpha if t else 1 - alpha   (alpha < 0: no weighting)

    The sum over all ``M x N`` pairs is divided by ``normalizer`` (default ``M``). A normaliser
    of 0 (an empty batch everywhere, whose sum is 0 too) is taken as 1, so the result is never
    NaN; a negative number is an error. See the module docstring for the value to pass under DDP.
    Fractional normalisers are used as they are (``global count / world size`` may be 0.5).

    Computed in at least float32 (half-precision logits from autocast are upcast) and in log
    space, so logits of +-100 (CLIP's scale x cosine) give finite values and gradients. Nothing
    is ignored: a target outside ``0..N-1`` (e.g. ``-1`` as an "ignore" marker) raises
    ``ValueError``. Returns a scalar.
    """
    _check_logits_targets(logits, targets)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if alpha > 1:
        raise ValueError(f"alpha must be in [0, 1] (or negative to disable), got {alpha}")
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # half -> float32
    labels = F.one_hot(targets, num_classes=logits.shape[1]).to(logits.dtype)
    cross_entropy = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    if gamma != 0:
        # 1 - p_t = sigmoid(-z) with z = logit for positives, -logit for negatives; the power is
        # taken as exp(gamma * logsigmoid(-z)), exact and with a finite gradient everywhere.
        signed = torch.where(labels > 0, logits, -logits)
        cross_entropy = cross_entropy * torch.exp(gamma * F.logsigmoid(-signed))
    if alpha >= 0:
        cross_entropy = cross_entropy * torch.where(labels > 0, alpha, 1.0 - alpha)
    return cross_entropy.sum() / _normalizer(normalizer, logits.shape[0], logits.device, logits.dtype)


def region_accuracy(logits: Tensor, targets: Tensor) -> tuple[int, int]:
    """Top-1 accuracy counts: (regions whose highest logit is their class, regions).

    ``logits`` [M, N], ``targets`` [M] int64 in ``0..N-1``. Returns Python ints (synchronises
    with the device); ``(0, 0)`` for an empty batch.
    """
    _check_logits_targets(logits, targets)
    if logits.shape[0] == 0:
        return 0, 0
    correct = (logits.argmax(dim=1) == targets).sum().item()
    return int(correct), int(targets.shape[0])


def _normalizer(normalizer: float | Tensor | None, regions: int, device: torch.device,
                dtype: torch.dtype) -> Tensor | float:
    if normalizer is None:
        return float(max(regions, 1))
    if isinstance(normalizer, Tensor):
        if normalizer.numel() != 1:
            raise ValueError(f"normalizer must be a scalar, got shape {tuple(normalizer.shape)}")
        # No .item() here: a CUDA normaliser stays on the device (no synchronisation).
        on_device = normalizer.detach().to(device=device, dtype=dtype).reshape(())
        return torch.where(on_device > 0, on_device, torch.ones_like(on_device))
    value = float(normalizer)
    if not value >= 0:  # also catches NaN
        raise ValueError(f"normalizer must be >= 0, got {normalizer}")
    return value if value > 0 else 1.0


def _check_logits_targets(logits: Tensor, targets: Tensor) -> None:
    if logits.dim() != 2:
        raise ValueError(f"logits must be [M, N], got shape {tuple(logits.shape)}")
    if targets.dim() != 1 or targets.shape[0] != logits.shape[0]:
        raise ValueError(f"targets must be [M] = [{logits.shape[0]}], got shape {tuple(targets.shape)}")
    if targets.dtype != torch.int64:
        raise ValueError(f"targets must be int64 class indices, got {targets.dtype}")
    if logits.shape[1] == 0:
        raise ValueError("logits have no classes (N = 0): the vocabulary is empty")
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= logits.shape[1]):
        raise ValueError(
            f"targets must be class indices in 0..{logits.shape[1] - 1}, got values in "
            f"{int(targets.min())}..{int(targets.max())} (no index is ignored)"
        )
