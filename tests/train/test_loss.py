"""Sigmoid focal loss and top-1 accuracy of the training loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from regionspot.train.loss import region_accuracy, sigmoid_focal_loss


def reference_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Textbook focal loss with probabilities, in float64, summed and divided by M."""
    p = torch.sigmoid(logits.double())
    total = torch.zeros((), dtype=torch.float64)
    for m in range(logits.shape[0]):
        for n in range(logits.shape[1]):
            if n == int(targets[m]):
                total += -alpha * (1 - p[m, n]) ** gamma * torch.log(p[m, n])
            else:
                total += -(1 - alpha) * p[m, n] ** gamma * torch.log(1 - p[m, n])
    return total / logits.shape[0]


@pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 2.0), (0.5, 1.0), (0.9, 0.5)])
def test_matches_reference_with_probabilities(alpha: float, gamma: float) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 5, generator=generator) * 3
    targets = torch.randint(0, 5, (7,), generator=generator)
    loss = sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma)
    assert loss.dim() == 0
    torch.testing.assert_close(loss.double(), reference_focal_loss(logits, targets, alpha, gamma), rtol=1e-5, atol=1e-6)


def test_gamma_zero_without_alpha_is_bce() -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 4, generator=generator) * 5
    targets = torch.randint(0, 4, (6,), generator=generator)
    one_hot = F.one_hot(targets, 4).float()
    summed_over_classes = F.binary_cross_entropy_with_logits(logits, one_hot, reduction="sum") / 6
    mean = F.binary_cross_entropy_with_logits(logits, one_hot)
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, alpha=-1, gamma=0), summed_over_classes)
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, alpha=-1, gamma=0, normalizer=6 * 4), mean)


def test_default_alpha_weights_positives_by_quarter() -> None:
    # one region, one class: the loss is alpha * (1 - p)^2 * -log p
    logits = torch.tensor([[0.0]])
    expected = 0.25 * 0.5**2 * torch.log(torch.tensor(2.0))
    torch.testing.assert_close(sigmoid_focal_loss(logits, torch.tensor([0])), expected)


def test_normalizer_divides_and_accepts_a_tensor() -> None:
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(4, 3, generator=generator)
    targets = torch.tensor([0, 2, 1, 1])
    summed = sigmoid_focal_loss(logits, targets, normalizer=1.0)
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets), summed / 4)
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, normalizer=torch.tensor(10.0)), summed / 10)
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, normalizer=2.5), summed / 2.5)
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, normalizer=0.5), summed / 0.5)
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, normalizer=torch.tensor(0.5)), summed / 0.5)


def test_gradient_finite_at_clip_scale() -> None:
    # scale 100 x cosine: logits at +-100, correct and badly wrong, positives and negatives
    logits = torch.tensor([[100.0, -100.0, 100.0], [-100.0, 100.0, -100.0]], requires_grad=True)
    targets = torch.tensor([0, 0])
    loss = sigmoid_focal_loss(logits, targets)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()
    # a confident wrong positive and a confident wrong negative both cost about 100 nats, weighted
    assert loss.item() == pytest.approx((0.75 * 100 + 0.25 * 100 + 0.75 * 100) / 2, rel=1e-4)
    # a wrong confident answer is pushed back; a right one is left nearly alone
    assert logits.grad[0, 2] > 0.1 and logits.grad[1, 0] < -0.01
    assert abs(logits.grad[0, 0]) < 1e-6 and abs(logits.grad[0, 1]) < 1e-6


def test_gradient_matches_finite_differences() -> None:
    generator = torch.Generator().manual_seed(3)
    logits = (torch.randn(3, 4, generator=generator, dtype=torch.float64) * 2).requires_grad_()
    targets = torch.tensor([1, 3, 0])
    assert torch.autograd.gradcheck(lambda x: sigmoid_focal_loss(x, targets).double(), (logits,))


def test_half_precision_logits_give_float32_loss() -> None:
    logits = torch.randn(5, 6).bfloat16()
    loss = sigmoid_focal_loss(logits, torch.zeros(5, dtype=torch.int64))
    assert loss.dtype == torch.float32


def test_empty_batch_is_zero_not_nan() -> None:
    logits = torch.zeros(0, 5, requires_grad=True)
    loss = sigmoid_focal_loss(logits, torch.zeros(0, dtype=torch.int64))
    loss.backward()
    assert loss.item() == 0.0
    assert sigmoid_focal_loss(logits, torch.zeros(0, dtype=torch.int64), normalizer=torch.tensor(0.0)).item() == 0.0


@pytest.mark.parametrize("targets", [torch.tensor([0, -1]), torch.tensor([0, 3])])
def test_out_of_range_targets_are_refused(targets: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="class indices"):
        sigmoid_focal_loss(torch.zeros(2, 3), targets)


def test_bad_shapes_and_types_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\[M, N\]"):
        sigmoid_focal_loss(torch.zeros(2, 3, 1), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"targets must be \[M\]"):
        sigmoid_focal_loss(torch.zeros(2, 3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="int64"):
        sigmoid_focal_loss(torch.zeros(2, 3), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="empty"):
        sigmoid_focal_loss(torch.zeros(2, 0), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="normalizer"):
        sigmoid_focal_loss(torch.zeros(2, 3), torch.tensor([0, 1]), normalizer=-1.0)


def test_region_accuracy_counts_top1() -> None:
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    assert region_accuracy(logits, torch.tensor([0, 1, 1])) == (2, 3)
    assert region_accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64)) == (0, 0)
    with pytest.raises(ValueError, match=r"targets must be class indices in 0\.\.2, got values in 0\.\.3"):
        region_accuracy(logits, torch.tensor([0, 1, 3]))
