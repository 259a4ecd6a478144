"""Learning-rate schedule, AdamW parameter groups and gradient clipping."""

from __future__ import annotations

import io
from itertools import pairwise

import pytest
import torch
from torch import nn

from regionspot.train.config import OptimConfig
from regionspot.train.schedule import build_optimizer, build_scheduler, clip_gradients, learning_rate_factor

SPEC = dict(warmup_iterations=1000, decay_at=[350_000, 420_000], decay_factor=0.1)


def test_spec_schedule_shape() -> None:
    factor = lambda step: learning_rate_factor(step, **SPEC)  # noqa: E731
    assert factor(0) == pytest.approx(1 / 1000)
    assert factor(499) == pytest.approx(0.5)
    assert factor(998) == pytest.approx(0.999)
    assert factor(999) == 1.0
    assert factor(1000) == 1.0
    assert factor(349_999) == 1.0
    assert factor(350_000) == pytest.approx(0.1)
    assert factor(419_999) == pytest.approx(0.1)
    assert factor(420_000) == pytest.approx(0.01)
    assert factor(449_999) == pytest.approx(0.01)


def test_warmup_is_linear_and_monotone() -> None:
    values = [learning_rate_factor(s, 10, [], 0.1) for s in range(20)]
    assert values[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert values[10:] == [1.0] * 10
    assert all(a <= b for a, b in pairwise(values))


def test_no_warmup_and_decay_inside_warmup() -> None:
    assert learning_rate_factor(0, 0, [], 0.1) == 1.0
    assert learning_rate_factor(4, 10, [3], 0.5) == pytest.approx(0.5 * 0.5)
    with pytest.raises(ValueError, match="step must be >= 0, got -1"):
        learning_rate_factor(-1, 10, [], 0.1)


def test_scheduler_follows_factor_and_round_trips_weights_only() -> None:
    config = OptimConfig(lr=0.5, warmup_iterations=4, decay_at=[6, 8], decay_factor=0.1)
    parameter = nn.Parameter(torch.zeros(2, 2))
    optimizer = build_optimizer([("w", parameter)], config)
    scheduler = build_scheduler(optimizer, config)
    seen = []
    for _ in range(10):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [0.5 * learning_rate_factor(s, 4, [6, 8], 0.1) for s in range(10)]
    assert seen == pytest.approx(expected)

    buffer = io.BytesIO()
    torch.save(scheduler.state_dict(), buffer)
    buffer.seek(0)
    restored_optimizer = build_optimizer([("w", nn.Parameter(torch.zeros(2, 2)))], config)
    restored = build_scheduler(restored_optimizer, config)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.last_epoch == 10
    assert restored.get_last_lr() == pytest.approx([0.5 * learning_rate_factor(10, 4, [6, 8], 0.1)])


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.norm = nn.LayerNorm(3)
        self.attention = nn.MultiheadAttention(4, 2, batch_first=True)
        self.frozen = nn.Linear(3, 3)
        self.frozen.requires_grad_(False)


def test_optimizer_groups_decay_matrices_only() -> None:
    model = Tiny()
    optimizer = build_optimizer(model.named_parameters(), OptimConfig(lr=1e-3, weight_decay=0.05))
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["decay"]["weight_decay"] == 0.05 and groups["no_decay"]["weight_decay"] == 0.0
    decayed = {id(p) for p in groups["decay"]["params"]}
    not_decayed = {id(p) for p in groups["no_decay"]["params"]}
    assert decayed == {id(model.linear.weight), id(model.attention.in_proj_weight), id(model.attention.out_proj.weight)}
    assert not_decayed == {id(model.linear.bias), id(model.norm.weight), id(model.norm.bias),
                           id(model.attention.in_proj_bias), id(model.attention.out_proj.bias)}
    assert all(g["lr"] == 1e-3 for g in optimizer.param_groups)
    # a module works as well as its named parameters; frozen ones are left out
    from_module = build_optimizer(model, OptimConfig())
    assert sum(len(g["params"]) for g in from_module.param_groups) == len(decayed | not_decayed)


def test_optimizer_without_trainable_parameters_is_an_error() -> None:
    model = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        build_optimizer(model.named_parameters(), OptimConfig())
    with pytest.raises(TypeError):
        build_optimizer(model.parameters(), OptimConfig())  # type: ignore[arg-type]


def test_bias_is_not_decayed() -> None:
    # with zero gradients, AdamW moves only decayed parameters (towards 0)
    model = nn.Linear(2, 2)
    nn.init.constant_(model.weight, 1.0)
    nn.init.constant_(model.bias, 1.0)
    optimizer = build_optimizer(model, OptimConfig(lr=0.1, weight_decay=0.5))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    assert torch.allclose(model.weight, torch.full((2, 2), 1 - 0.1 * 0.5))
    assert torch.equal(model.bias, torch.ones(2))


def test_clip_gradients_returns_norm_before_clipping() -> None:
    a, b, c = (nn.Parameter(torch.zeros(2)) for _ in range(3))
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 4.0])  # total norm 5; c has none
    assert clip_gradients([a, b, c], max_norm=1.0) == pytest.approx(5.0)
    total = torch.cat([a.grad, b.grad]).norm()
    assert total.item() == pytest.approx(1.0, rel=1e-5)
    torch.testing.assert_close(a.grad / b.grad.flip(0), torch.tensor([0.75, float("nan")]), equal_nan=True)
    # already below the limit: unchanged
    assert clip_gradients([a, b], max_norm=10.0) == pytest.approx(1.0, rel=1e-5)
    assert torch.cat([a.grad, b.grad]).norm().item() == pytest.approx(1.0, rel=1e-5)


def test_clip_gradients_disabled_still_reports_norm() -> None:
    p = nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([10.0, 0.0, 0.0])
    assert clip_gradients([p], max_norm=0.0) == pytest.approx(10.0)
    assert torch.equal(p.grad, torch.tensor([10.0, 0.0, 0.0]))
    assert clip_gradients([nn.Parameter(torch.zeros(1))], max_norm=1.0) == 0.0


def test_clip_gradients_leaves_non_finite_gradients_for_the_caller() -> None:
    p = nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor([float("inf"), 1.0])
    assert clip_gradients([p], max_norm=1.0) == float("inf")
    assert p.grad[1] == 1.0


def test_clip_matches_torch() -> None:
    generator = torch.Generator().manual_seed(0)
    ours = [nn.Parameter(torch.zeros(5, 3)), nn.Parameter(torch.zeros(7))]
    theirs = [nn.Parameter(torch.zeros(5, 3)), nn.Parameter(torch.zeros(7))]
    for p, q in zip(ours, theirs, strict=True):
        p.grad = torch.randn(p.shape, generator=generator)
        q.grad = p.grad.clone()
    norm = clip_gradients(ours, 0.7)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 0.7)
    assert norm == pytest.approx(expected.item(), rel=1e-6)
    for p, q in zip(ours, theirs, strict=True):
        torch.testing.assert_close(p.grad, q.grad)
