"""Precision-recall curves of an evaluation, one panel per way of splitting the AP:

- **by frequency group** (with LVIS frequency tags): rare / common / frequent categories, the
  curves behind APr / APc / APf;
- **by object size** (always; COCO's and LVIS's area ranges): small / medium / large ground
  truth, the curves behind APs / APm / APl;
- **by IoU threshold**: all categories at IoU 0.50, 0.75 and averaged over 0.50:0.95 (AP50,
  AP75, AP). With ground-truth boxes these coincide (every box is its own perfect match), and
  the panel says so.

    evaluator.evaluate()
    plot_pr_curves(evaluator.result, evaluator.frequencies, out / "pr_curves.png", title="LVIS val, GT boxes")

Every curve is the interpolated precision at the 101 recall points averaged over the categories
with ground truth in its group, so its mean is the AP the report prints for that group; the
legend gives each curve's category count and AP. Matplotlib draws off-screen (Agg canvas, no
global backend change). Example pictures are :mod:`regionspot.eval.examples`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine

from regionspot.eval.average_precision import FREQUENCY_GROUPS, APResult

GROUP_NAMES = {"r": "rare", "c": "common", "f": "frequent", "all": "all"}
GROUP_COLORS = {"r": "#e6194b", "c": "#f58231", "f": "#0082c8", "all": "#3cb44b"}
SIZE_RANGES = ("small", "medium", "large")
SIZE_COLORS = {"small": "#27b5c4", "medium": "#1f6fb4", "large": "#222c7a"}  # light to dark: small to large
IOU_CURVES: tuple[tuple[float | None, str, str, str], ...] = (  # (IoU, label, metric, colour)
    (0.5, "IoU 0.50", "AP50", "#3cb44b"), (0.75, "IoU 0.75", "AP75", "#911eb4"),
    (None, "IoU 0.50:0.95", "AP", "#000000"))
REFERENCE_COLOR = "#555555"
COINCIDE = 0.005  # IoU curves closer than this everywhere are said to coincide


@dataclass(frozen=True)
class Curve:
    """One drawn curve: precision [R] at the recall points; ``style`` a matplotlib line style."""

    label: str
    precision: np.ndarray
    color: str
    style: str = "-"


@dataclass(frozen=True)
class Panel:
    """One subplot: its title and curves (none: nothing with ground truth to draw)."""

    title: str
    curves: list[Curve]


def mean_pr_curve(result: APResult, categories: np.ndarray, iou: float | None, area: str = "all") -> np.ndarray | None:
    """Interpolated precision [R] at ``result.params.rec_thrs``, area range ``area``, the largest
    max_dets, averaged over the selected categories (bool [K]) that have ground truth in that
    range, at IoU threshold ``iou`` (the nearest one) or averaged over all thresholds when None.
    The curve's mean is the AP of those categories. None when none of them has ground truth."""
    params = result.params
    index = _area_index(result, area)
    table = result.precision[:, :, :, index, -1]  # [T, R, K]
    if iou is not None:
        table = table[int(np.argmin(np.abs(params.iou_thrs - iou)))][None]
    with_gt = (result.num_gt[:, index] > 0) & (table > -1).all(axis=(0, 1)) & categories
    if not with_gt.any():
        return None
    return table[:, :, with_gt].mean(axis=(0, 2))


def _area_index(result: APResult, area: str) -> int:
    """Index of the area range named ``area``."""
    return [name for name, _, _ in result.params.area_ranges].index(area)


def _count(result: APResult, selection: np.ndarray, area: str = "all") -> int:
    """How many selected categories have ground truth in the area range."""
    return int(((result.num_gt[:, _area_index(result, area)] > 0) & selection).sum())


def _reference(result: APResult) -> list[Curve]:
    """The all-categories, all-sizes AP curve, drawn dashed behind a panel's groups."""
    everything = np.ones(len(result.categories), dtype=bool)
    curve = mean_pr_curve(result, everything, None)
    if curve is None:
        return []
    label = f"all ({_count(result, everything)} cat.) AP {100 * curve.mean():.1f}"
    return [Curve(label, curve, REFERENCE_COLOR, "--")]


def frequency_panel(result: APResult, frequencies: Mapping[int, str]) -> Panel:
    """Rare / common / frequent curves (IoU 0.50:0.95, all sizes), the ``all`` curve dashed."""
    tags = np.array([frequencies.get(int(c), "") for c in result.categories])
    curves = []
    for group in FREQUENCY_GROUPS:
        curve = mean_pr_curve(result, tags == group, None)
        if curve is not None:
            label = f"{GROUP_NAMES[group]} ({_count(result, tags == group)} cat.) AP{group} {100 * curve.mean():.1f}"
            curves.append(Curve(label, curve, GROUP_COLORS[group]))
    return Panel("by frequency group\nIoU 0.50:0.95, all sizes", curves + _reference(result) if curves else [])


def size_panel(result: APResult) -> Panel:
    """Small / medium / large curves (IoU 0.50:0.95, all categories), the ``all`` curve dashed."""
    everything = np.ones(len(result.categories), dtype=bool)
    names = [name for name, _, _ in result.params.area_ranges]
    curves = []
    for size in (size for size in SIZE_RANGES if size in names):
        curve = mean_pr_curve(result, everything, None, area=size)
        if curve is not None:
            label = f"{size} ({_count(result, everything, size)} cat.) AP{size[0]} {100 * curve.mean():.1f}"
            curves.append(Curve(label, curve, SIZE_COLORS[size]))
    return Panel("by object size\nIoU 0.50:0.95, all categories", curves + _reference(result) if curves else [])


def iou_panel(result: APResult) -> Panel:
    """All categories, all sizes, at IoU 0.50, 0.75 and 0.50:0.95; the title says when they coincide."""
    everything = np.ones(len(result.categories), dtype=bool)
    curves = []
    for (iou, name, metric, color), style in zip(IOU_CURVES, ("-", "--", ":"), strict=True):
        curve = mean_pr_curve(result, everything, iou)
        if curve is not None:
            curves.append(Curve(f"{name}: {metric} {100 * curve.mean():.1f}", curve, color, style))
    title = "by IoU threshold\nall categories, all sizes"
    if len(curves) > 1 and all(np.abs(c.precision - curves[0].precision).max() < COINCIDE for c in curves):
        title += "\n(curves coincide: boxes match their ground truth exactly)"
    return Panel(title, curves)


def pr_panels(result: APResult, frequencies: Mapping[int, str] | None) -> list[Panel]:
    """The panels of :func:`plot_pr_curves`: by frequency group (only with ``frequencies``, a
    map category id -> 'r' | 'c' | 'f'), by object size, by IoU threshold."""
    panels = [frequency_panel(result, frequencies)] if frequencies is not None else []
    return [*panels, size_panel(result), iou_panel(result)]


def pr_figure(panels: list[Panel], recall: np.ndarray, *, title: str = "") -> Figure:
    """A figure with one subplot per panel (precision vs recall, legend below the plot)."""
    layout = ConstrainedLayoutEngine(wspace=0.06)  # room between one panel's "1.0" and the next one's "0.0"
    figure = Figure(figsize=(5.0 * len(panels), 5.6), dpi=110, layout=layout)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
        for curve in panel.curves:
            ax.plot(recall, curve.precision, color=curve.color, linestyle=curve.style,
                    linewidth=1.6 if curve.color == REFERENCE_COLOR else 2.2, label=curve.label)
        if panel.curves:
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=9, frameon=False)
        else:
            ax.text(0.5, 0.5, "no category with ground truth", ha="center", va="center", transform=ax.transAxes)
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall")
        ax.set_title(panel.title, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=9)
    axes[0].set_ylabel("precision (interpolated)")
    figure.suptitle(title, fontsize=12)
    return figure


def plot_pr_curves(result: APResult, frequencies: Mapping[int, str] | None, path: Path, *, title: str = "") -> Path:
    """Save the precision-recall panels of :func:`pr_panels` as a PNG at ``path`` (parent
    folders created) and return it. ``title`` heads the figure, followed by the detection limit
    the curves are computed at (the largest max_dets)."""
    per = "image" if result.params.federated else "image and category"
    limit = f"at most {result.params.max_dets[-1]} detections per {per}"
    heading = f"{title + ': ' if title else ''}precision-recall, {limit}"
    figure = pr_figure(pr_panels(result, frequencies), result.params.rec_thrs, title=heading)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
