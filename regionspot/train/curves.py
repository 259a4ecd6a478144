"""Loss and metric curves of a run: a long-format CSV (one row per value) and a PNG of panels.

``metrics.csv`` has the columns ``step, split, name, value`` - one row per (step, split, metric
name), so a metric added later in a run needs no new column. Rows are flushed as they are
written; on ``--resume`` :meth:`MetricsLog.truncate_after` drops rows logged after the restored
checkpoint, so they are not duplicated when those steps are trained again.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import numpy as np

COLUMNS = ("step", "split", "name", "value")
LEARNING_RATE_NAMES = ("lr", "learning_rate")


class MetricsLog:
    """Append-only CSV of ``step, split, name, value`` rows (one writer: rank 0).

    Opening an existing file keeps its rows; a torn last line (a process killed while writing)
    is cut off, so the next row starts on a line of its own.
    """

    def __init__(self, csv_path: str | Path) -> None:
        self.csv_path = Path(csv_path)
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        if not self.csv_path.is_file() or self.csv_path.stat().st_size == 0:
            self._rewrite([])
        else:
            self._cut_torn_tail()

    def append(self, step: int, split: str, values: Mapping[str, float]) -> None:
        """Add one row per entry of ``values`` (metric name -> number) for ``(step, split)``."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        with self.csv_path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            for name, value in values.items():
                writer.writerow([int(step), split, name, repr(float(value))])

    def rows(self) -> list[dict[str, object]]:
        """All rows in file order as ``{"step": int, "split": str, "name": str, "value": float}``."""
        return _read_rows(self.csv_path)

    def truncate_after(self, step: int) -> int:
        """Drop the rows of steps ``> step`` (rewriting the file atomically); returns how many."""
        rows = self.rows()
        kept = [row for row in rows if int(row["step"]) <= step]  # type: ignore[call-overload]
        if len(kept) != len(rows):
            self._rewrite(kept)
        return len(rows) - len(kept)

    def _rewrite(self, rows: list[dict[str, object]]) -> None:
        temporary = self.csv_path.with_name(f".{self.csv_path.name}.tmp")
        with temporary.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            for row in rows:
                value = float(row["value"])  # type: ignore[arg-type]
                writer.writerow([row["step"], row["split"], row["name"], repr(value)])
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.csv_path)

    def _cut_torn_tail(self) -> None:
        data = self.csv_path.read_bytes()
        if data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        warnings.warn(f"{self.csv_path}: dropping a torn last line {data[cut:]!r}", stacklevel=3)
        with self.csv_path.open("r+b") as handle:
            handle.truncate(cut)
        if cut == 0:
            self._rewrite([])


def _read_rows(csv_path: Path) -> list[dict[str, object]]:
    text = csv_path.read_text()
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        warnings.warn(f"{csv_path}: ignoring a torn last line {lines[-1]!r}", stacklevel=3)
        lines = lines[:-1]
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        return []
    if tuple(header) != COLUMNS:
        raise ValueError(f"{csv_path} is not a metrics log: header {header}, expected {list(COLUMNS)}")
    rows = []
    for number, record in enumerate(reader, start=2):
        try:
            step, split, name, value = record
            rows.append({"step": int(step), "split": split, "name": name, "value": float(value)})
        except ValueError:
            raise ValueError(f"{csv_path}:{number}: malformed row {record}") from None
    return rows


# ----------------------------------------------------------------------------- plotting


def plot_curves(csv_path: str | Path, png_path: str | Path, smoothing: int | None = None) -> Path:
    """Plot every metric of a metrics CSV into ``png_path``: one panel per metric name.

    Training series are drawn raw (thin, faint) and smoothed (a centred mean over ``smoothing``
    logged points; default about 1/20 of the series, at most 200), evaluation series as lines with markers,
    and the learning rate on its own panel (log scale). Uses the Agg backend through
    :class:`matplotlib.figure.Figure`, without pyplot's global state. Returns ``png_path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    series = _series(_read_rows(Path(csv_path)))
    names = _panel_order(series)
    columns = min(3, max(1, len(names)))
    panel_rows = max(1, math.ceil(len(names) / columns))
    figure = Figure(figsize=(5.2 * columns, 3.6 * panel_rows), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    axes_grid = figure.subplots(panel_rows, columns, squeeze=False)
    for index, axes in enumerate(axes_grid.flat):
        if index >= len(names):
            axes.set_visible(False)
            continue
        _draw_panel(axes, names[index], series[names[index]], smoothing)
        axes.xaxis.set_major_formatter(FuncFormatter(_format_step))
    if not names:
        axes_grid[0, 0].set_visible(True)
        axes_grid[0, 0].text(0.5, 0.5, "no metrics logged yet", ha="center", va="center")
        axes_grid[0, 0].set_axis_off()
    figure.suptitle(f"Training curves - {Path(csv_path).name}", fontsize=12)
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png_path)
    return png_path


SeriesMap = dict[str, dict[str, tuple[list[int], list[float]]]]


def _series(rows: list[dict[str, object]]) -> SeriesMap:
    """name -> split -> (steps, values), sorted by step (last value wins for a repeated step)."""
    points: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        step, value = int(row["step"]), float(row["value"])  # type: ignore[call-overload, arg-type]
        points[str(row["name"])][str(row["split"])][step] = value
    return {name: {split: (sorted(by_step), [by_step[s] for s in sorted(by_step)])
                   for split, by_step in splits.items()} for name, splits in points.items()}


def _panel_order(series: SeriesMap) -> list[str]:
    """Loss first, then the other metrics alphabetically, learning rate last."""
    names = sorted(series)
    first = [n for n in names if n == "loss"]
    last = [n for n in names if n in LEARNING_RATE_NAMES]
    return first + [n for n in names if n not in first and n not in last] + last


def _draw_panel(axes, name: str, splits: dict[str, tuple[list[int], list[float]]], smoothing: int | None) -> None:
    colours = {"train": "tab:blue", "eval": "tab:orange"}
    extra = iter(["tab:green", "tab:red", "tab:purple", "tab:brown", "tab:gray"])
    for split in sorted(splits, key=lambda s: (s != "train", s)):
        steps, values = splits[split]
        colour = colours.get(split) or next(extra, "black")
        if name in LEARNING_RATE_NAMES:
            axes.plot(steps, values, color=colour, linewidth=1.5, label=split)
        elif split == "train" and len(values) > 2:
            window = smoothing or max(1, min(200, len(values) // 20))
            axes.plot(steps, values, color=colour, alpha=0.25, linewidth=0.8, label=f"{split} (raw)")
            axes.plot(steps, _centred_mean(values, window), color=colour, linewidth=1.8,
                      label=f"{split} (mean of {window})")
        else:
            axes.plot(steps, values, color=colour, marker="o", markersize=4, linewidth=1.4, label=split)
    if name in LEARNING_RATE_NAMES and all(v > 0 for _, vs in splits.values() for v in vs):
        axes.set_yscale("log")
    axes.set_title("learning rate" if name in LEARNING_RATE_NAMES else name.replace("_", " "))
    axes.set_xlabel("step")
    axes.set_ylabel(name)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8, loc="best")


def _centred_mean(values: list[float], window: int) -> np.ndarray:
    """Mean of the finite values in a window of ``window`` points centred on each point
    (shorter at the ends, so the curve has no lag); NaN where none is finite, so one NaN does
    not blank the rest of the curve."""
    array = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(array)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, array, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite)])
    positions = np.arange(len(array))
    starts = np.maximum(positions - window // 2, 0)
    ends = np.minimum(positions - window // 2 + window, len(array))
    number = counts[ends] - counts[starts]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(number > 0, (sums[ends] - sums[starts]) / np.maximum(number, 1), np.nan)


def _format_step(value: float, _position: int) -> str:
    if abs(value) >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if abs(value) >= 1_000:
        return f"{value / 1_000:g}k"
    return f"{value:g}"
