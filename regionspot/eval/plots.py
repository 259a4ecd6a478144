"""Pictures of an evaluation: precision-recall curves and example images with named regions.

    evaluator.evaluate()
    plot_pr_curves(evaluator.result, evaluator.frequencies, out / "pr_curves.png", title="LVIS val, GT boxes")
    write_example_images([(image, region_result), ...], out / "examples")

Matplotlib draws off-screen (Agg canvas, no global backend change); regions are drawn with
:func:`regionspot.viz.draw_regions`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from regionspot.eval.average_precision import FREQUENCY_GROUPS, APResult
from regionspot.results import RegionResult
from regionspot.viz import draw_regions, save_figure

GROUP_NAMES = {"r": "rare", "c": "common", "f": "frequent", "all": "all"}
GROUP_COLORS = {"r": "#e6194b", "c": "#f58231", "f": "#0082c8", "all": "#3cb44b"}


def mean_pr_curve(result: APResult, categories: np.ndarray, iou: float | None) -> np.ndarray | None:
    """Interpolated precision [R] at ``result.params.rec_thrs``, area "all", the largest max_dets,
    averaged over the selected categories (bool [K]) that have ground truth, at IoU threshold
    ``iou`` (the nearest one) or averaged over all thresholds when None. The curve's mean is the
    AP of those categories. None when no selected category has ground truth."""
    params = result.params
    area = _all_area(result)
    table = result.precision[:, :, :, area, -1]  # [T, R, K]
    if iou is not None:
        table = table[int(np.argmin(np.abs(params.iou_thrs - iou)))][None]
    with_gt = (result.num_gt[:, area] > 0) & (table > -1).all(axis=(0, 1)) & categories
    if not with_gt.any():
        return None
    return table[:, :, with_gt].mean(axis=(0, 2))


def _all_area(result: APResult) -> int:
    """Index of the area range "all"."""
    return [name for name, _, _ in result.params.area_ranges].index("all")


def _groups(result: APResult, frequencies: Mapping[int, str] | None) -> list[tuple[str, np.ndarray]]:
    """(group key, bool [K] category selection): r/c/f with frequencies, else one "all"."""
    if frequencies is None:
        return [("all", np.ones(len(result.categories), dtype=bool))]
    tags = np.array([frequencies.get(int(c), "") for c in result.categories])
    return [(group, tags == group) for group in FREQUENCY_GROUPS]


def plot_pr_curves(result: APResult, frequencies: Mapping[int, str] | None, path: Path, *, title: str = "") -> Path:
    """Precision vs recall at IoU 0.5 (left) and averaged over IoU .50:.95 (right), area "all",
    the largest max_dets, averaged over the categories with ground truth: one curve per
    frequency group (r/c/f) when ``frequencies`` maps category id -> 'r' | 'c' | 'f', else one
    "all" curve. Legends give each group's category count and AP. Saves a PNG at ``path``
    (parent folders created) and returns it."""
    figure = Figure(figsize=(11, 4.8), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2, sharey=True)
    recall = result.params.rec_thrs
    for ax, (iou, label) in zip(axes, ((0.5, "IoU 0.50"), (None, "IoU 0.50:0.95 (mean)")), strict=True):
        drawn = 0
        for group, selection in _groups(result, frequencies):
            curve = mean_pr_curve(result, selection, iou)
            if curve is None:
                continue
            count = int(((result.num_gt[:, _all_area(result)] > 0) & selection).sum())
            ax.plot(recall, curve, color=GROUP_COLORS[group], linewidth=2,
                    label=f"{GROUP_NAMES[group]} ({count} cat.) AP {100 * curve.mean():.1f}")
            drawn += 1
        if drawn:
            ax.legend(loc="lower left", fontsize=10)
        else:
            ax.text(0.5, 0.5, "no category with ground truth", ha="center", va="center", transform=ax.transAxes)
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", title=label)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=10)
    axes[0].set_ylabel("precision (interpolated)")
    max_dets = result.params.max_dets[-1]
    figure.suptitle(f"{title + ': ' if title else ''}precision-recall, area all, max {max_dets} detections",
                    fontsize=12)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def write_example_images(examples: Sequence[tuple[np.ndarray, RegionResult]], folder: Path, *,
                         max_regions: int = 20) -> list[Path]:
    """Draw each (HxWx3 uint8 image, its RegionResult) pair: the top-1 name and score of its
    ``max_regions`` highest-scoring regions, with masks when the result has them, saved as
    ``folder/example_000.png``, ``example_001.png``, ... Returns the paths written."""
    if max_regions < 1:
        raise ValueError(f"max_regions must be >= 1, got {max_regions}")
    folder = Path(folder)
    paths = []
    for number, (image, result) in enumerate(examples):
        if tuple(image.shape[:2]) != tuple(result.image_size):
            raise ValueError(f"example {number}: image is {image.shape[:2]} but its result is for {result.image_size}")
        best = result[np.argsort(-result.scores, kind="stable")[:max_regions]]
        drawing = draw_regions(image, best.boxes, best.labels, best.scores, best.masks)
        paths.append(save_figure(drawing, folder / f"example_{number:03d}.png"))
    return paths
