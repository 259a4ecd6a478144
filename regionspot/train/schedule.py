"""Optimiser, learning-rate schedule and gradient clipping of the paper's training recipe
(values as in the authors' released configs).

AdamW (lr 2.5e-5, weight decay 1e-4), a linear warm-up over the first 1000 iterations, the
learning rate divided by 10 at 350k and 420k iterations, gradients clipped at norm 1.0.

Step convention: ``step`` is the 0-based index of the optimiser step about to be taken. A
:class:`~torch.optim.lr_scheduler.LambdaLR` made by :func:`build_scheduler` starts at step 0 and
is advanced with ``scheduler.step()`` after each ``optimizer.step()``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from regionspot.train.config import OptimConfig

NamedParameters = Iterable[tuple[str, nn.Parameter]]


def learning_rate_factor(step: int, warmup_iterations: int, decay_at: Sequence[int], decay_factor: float) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based).

    Linear warm-up: ``(step + 1) / warmup_iterations`` while ``step < warmup_iterations`` (so the
    first step uses ``1 / warmup_iterations`` of the rate, never 0, and step ``warmup - 1`` the
    full rate); then 1. Multiplied by ``decay_factor`` once for every entry of ``decay_at`` that
    is ``<= step`` (the authors' release: 0.1 at 350k and 420k, so steps >= 420k use lr / 100). The two parts
    multiply, should a decay fall inside the warm-up.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if warmup_iterations < 0:
        raise ValueError(f"warmup_iterations must be >= 0, got {warmup_iterations}")
    warmup = min(1.0, (step + 1) / warmup_iterations) if warmup_iterations > 0 else 1.0
    decays = sum(1 for boundary in decay_at if step >= boundary)
    return warmup * decay_factor**decays


def build_optimizer(parameters: nn.Module | NamedParameters, config: OptimConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, in two groups.

    ``parameters``: a module or its ``named_parameters()``. Parameters with ``requires_grad``
    False are left out (the frozen backbones). Weight decay ``config.weight_decay`` applies to
    matrices only (``ndim >= 2``: linear and attention projection weights); biases, LayerNorm
    weights and other vectors/scalars get none, since decaying them towards 0 only constrains
    scale and shift parameters. The groups carry a ``"name"`` key (``"decay"`` / ``"no_decay"``);
    empty groups are omitted. Parameters named twice (shared) are added once.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    named = parameters.named_parameters() if isinstance(parameters, nn.Module) else parameters
    for pair in named:
        if isinstance(pair, torch.Tensor) or len(pair) != 2 or not isinstance(pair[0], str) \
                or not isinstance(pair[1], torch.Tensor):
            raise TypeError("build_optimizer needs a module or (name, parameter) pairs, e.g. "
                            f"module.named_parameters(); got an item of type {type(pair).__name__}")
        parameter = pair[1]
        if not parameter.requires_grad or id(parameter) in seen:
            continue
        seen.add(id(parameter))
        (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    if not seen:
        raise ValueError("build_optimizer: no trainable parameters (all are frozen or none given)")
    groups = [
        {"name": "decay", "params": decay, "weight_decay": config.weight_decay},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr, weight_decay=config.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, config: OptimConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying :func:`learning_rate_factor` with ``config``'s warm-up and decays.

    Its ``state_dict()`` holds only numbers (the factor is a ``functools.partial``, whose
    arguments are not saved), so it loads with ``torch.load(weights_only=True)``, and a
    restored scheduler keeps the schedule of the config it was built with.
    """
    factor = functools.partial(
        learning_rate_factor,
        warmup_iterations=config.warmup_iterations,
        decay_at=tuple(config.decay_at),
        decay_factor=config.decay_factor,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=factor)


def clip_gradients(parameters: Iterable[torch.Tensor], max_norm: float) -> float:
    """Clip the gradients of ``parameters`` in place to a total L2 norm of ``max_norm``.

    Returns the total norm *before* clipping (a Python float, for logging; synchronises with
    the device). ``max_norm <= 0`` disables clipping but still returns the norm. Parameters
    without a gradient are skipped. A non-finite norm is returned as is (inf / nan) and the
    gradients are left unscaled: the caller decides whether to skip the step. Under DDP call it
    after ``backward()`` (gradients are already averaged, so every process gets the same norm);
    with an fp16 ``GradScaler`` unscale first (bf16 autocast needs no scaler).
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    device = grads[0].device
    norms = [torch.linalg.vector_norm(g.detach().float()).to(device) for g in grads]
    total = torch.linalg.vector_norm(torch.stack(norms))
    if max_norm > 0 and bool(torch.isfinite(total)):
        # Same rule as torch.nn.utils.clip_grad_norm_ (written out: its split helpers need torch 2.6).
        coefficient = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        for grad in grads:
            grad.detach().mul_(coefficient.to(grad.device, grad.dtype))
    return float(total)
