"""Loss and metric curves of a run: a long-format CSV (one row per value) and a PNG of panels.

``metrics.csv`` has the columns ``step, split, name, value`` - one row per (step, split, metric
name), so a metric added later in a run needs no new column. Rows are flushed as they are
written; on ``--resume`` :meth:`MetricsLog.truncate_after` drops rows logged after the restored
checkpoint, so they are not duplicated when those steps are trained again. A damaged file (a
torn line, garbage, a wrong header) is repaired on opening: see :class:`MetricsLog`.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import numpy as np

from regionspot.fileio import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

COLUMNS = ("step", "split", "name", "value")
HEADER_LINE = ",".join(COLUMNS).encode()
LEARNING_RATE_NAMES = ("lr", "learning_rate")
class Row(TypedDict):
    """One line of metrics.csv."""

    step: int
    split: str
    name: str
    value: float


class MetricsLog:
    """Append-only CSV of ``step, split, name, value`` rows (one writer: rank 0).

    Opening an existing file keeps the rows that parse and drops every other line - a torn last
    line (a process killed while writing), garbage, a wrong header - rewriting the file and
    saying so once through ``warn`` (default: a :class:`UserWarning`). When more than a torn
    last line goes, the file as it was is first copied to ``metrics.csv.damaged``. Metrics are
    not the weights: a damaged log never stops a run.
    """

    def __init__(self, csv_path: str | Path, warn: Callable[[str], None] | None = None) -> None:
        self.csv_path = Path(csv_path)
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        if not self.csv_path.is_file() or self.csv_path.stat().st_size == 0:
            self._rewrite([])
        else:
            self._repair(warn or _warn)

    def append(self, step: int, split: str, values: Mapping[str, float]) -> None:
        """Add one row per entry of ``values`` (metric name -> number) for ``(step, split)``."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        with self.csv_path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            for name, value in values.items():
                writer.writerow([int(step), split, name, repr(float(value))])

    def rows(self) -> list[Row]:
        """All rows in file order as ``{"step": int, "split": str, "name": str, "value": float}``."""
        return _read_rows(self.csv_path)

    def truncate_after(self, step: int) -> int:
        """Drop the rows of steps ``> step`` (rewriting the file atomically); returns how many."""
        rows = self.rows()
        kept = [row for row in rows if row["step"] <= step]
        if len(kept) != len(rows):
            self._rewrite(kept)
        return len(rows) - len(kept)

    def _rewrite(self, rows: list[Row]) -> None:
        temporary = self.csv_path.with_name(f".{self.csv_path.name}.tmp")
        with temporary.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            for row in rows:
                writer.writerow([row["step"], row["split"], row["name"], repr(float(row["value"]))])
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.csv_path)

    def _repair(self, warn: Callable[[str], None]) -> None:
        """Keep the rows that parse; rewrite the file without the other lines, if there are any."""
        data = self.csv_path.read_bytes()
        rows, bad = _parse(data)
        if not bad:
            if not data.startswith(HEADER_LINE):
                self._rewrite(rows)  # rows without a header line: add it, nothing is lost
            return
        saved = ""
        if len(bad) > 1 or not bad[0].torn or not data.startswith(HEADER_LINE):  # more than a torn row
            backup = self.csv_path.with_name(f"{self.csv_path.name}.damaged")
            atomic_write_bytes(backup, data)
            saved = f"; the file as it was is saved as {backup}"
        self._rewrite(rows)
        lines = "1 line that is not a metrics row" if len(bad) == 1 else f"{len(bad)} lines that are not metrics rows"
        warn(f"{self.csv_path}: kept {len(rows)} row{'' if len(rows) == 1 else 's'} and dropped {lines} "
             f"(first: {bad[0].describe()}){saved}")


@dataclass(frozen=True)
class BadLine:
    """A line of a metrics log that is not a row: ``torn`` when it is the last one and lacks
    its newline (its writer was killed half-way)."""

    number: int
    content: bytes
    torn: bool

    def describe(self) -> str:
        """``line N: 'its first 60 bytes'`` (non-ASCII and control bytes escaped)."""
        how = ", torn by an interrupted write" if self.torn else ""
        return f"line {self.number}{how}: {repr(self.content[:60])[1:]}"


def _parse(data: bytes) -> tuple[list[Row], list[BadLine]]:
    """The rows of a metrics log's bytes and its lines that are not rows (a first line equal to
    the header and blank lines are neither)."""
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline, else a line cut short
    rows: list[Row] = []
    bad: list[BadLine] = []
    for number, raw in enumerate(lines, start=1):
        raw = raw.rstrip(b"\r")
        if not raw.strip() or (number == 1 and raw == HEADER_LINE):
            continue
        row = _parse_row(raw)
        if row is None:
            bad.append(BadLine(number, raw, torn=False))
        else:
            rows.append(row)
    if tail.strip():
        bad.append(BadLine(len(lines) + 1, tail, torn=True))
    return rows, bad


def _parse_row(raw: bytes) -> Row | None:
    """One ``step,split,name,value`` line as a row, or None when it is not one."""
    try:
        record = next(csv.reader([raw.decode("utf-8")]))
        step, split, name, value = record
        row: Row = {"step": int(step), "split": split, "name": name, "value": float(value)}
    except (UnicodeDecodeError, csv.Error, StopIteration, ValueError):
        return None
    return row if int(step) >= 0 else None


def _read_rows(csv_path: Path) -> list[Row]:
    """The rows of a metrics log; a line that is not a row is a ValueError naming it, except a
    torn last line (a writer still at work, or killed), which is left out with a warning."""
    rows, bad = _parse(csv_path.read_bytes())
    for line in bad:
        if not line.torn:
            raise ValueError(f"{csv_path}: {line.describe()} is not a metrics row ({','.join(COLUMNS)})")
        warnings.warn(f"{csv_path}: ignoring {line.describe()}", stacklevel=3)
    return rows


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=4)


# ----------------------------------------------------------------------------- plotting


def plot_curves(csv_path: str | Path, png_path: str | Path, smoothing: int | None = None) -> Path:
    """Plot every metric of a metrics CSV into ``png_path``: one panel per metric name.

    Training series are drawn raw (thin, faint) and smoothed (a centred mean over ``smoothing``
    logged points; default about 1/20 of the series, at most 200), evaluation series as lines with markers,
    and the learning rate on its own panel. Loss panels (``loss``, ``*_loss``, ``loss_*``) and the
    learning rate use a log y axis when every finite value is positive; otherwise the panel stays
    linear and its title says why (see :func:`log_scale_note`). Uses the Agg backend through
    :class:`matplotlib.figure.Figure`, without pyplot's global state. Returns ``png_path``.
    """
    figure = curves_figure(csv_path, smoothing)
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png_path)
    return png_path


def curves_figure(csv_path: str | Path, smoothing: int | None = None) -> Figure:
    """The figure :func:`plot_curves` saves (on an Agg canvas), one panel per metric name."""
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
    return figure


SeriesMap = dict[str, dict[str, tuple[list[int], list[float]]]]


def _series(rows: list[Row]) -> SeriesMap:
    """name -> split -> (steps, values), sorted by step (last value wins for a repeated step)."""
    points: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        points[row["name"]][row["split"]][row["step"]] = row["value"]
    return {name: {split: (sorted(by_step), [by_step[s] for s in sorted(by_step)])
                   for split, by_step in splits.items()} for name, splits in points.items()}


def _panel_order(series: SeriesMap) -> list[str]:
    """Loss first, then the other metrics alphabetically, learning rate last."""
    names = sorted(series)
    first = [n for n in names if n == "loss"]
    last = [n for n in names if n in LEARNING_RATE_NAMES]
    return first + [n for n in names if n not in first and n not in last] + last


def _draw_panel(axes: Axes, name: str, splits: dict[str, tuple[list[int], list[float]]], smoothing: int | None) -> None:
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
    title = "learning rate" if name in LEARNING_RATE_NAMES else name.replace("_", " ")
    if name in LEARNING_RATE_NAMES or is_loss(name):
        note = log_scale_note([v for _, values in splits.values() for v in values])
        if note is None:
            _log_axis(axes)
            title += " (log scale)"
        else:
            title += f" (linear: {note})"
    axes.set_title(title)
    axes.set_xlabel("step")
    axes.set_ylabel(name)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8, loc="best")


def _log_axis(axes: Axes) -> None:
    """A log y axis with plain tick labels at 1, 2 and 5 times powers of ten (0.05, 0.1, 0.2, ...)."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    axes.set_yscale("log")
    axes.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _position: f"{value:g}"))


def is_loss(name: str) -> bool:
    """Whether a metric is a loss, drawn on a log axis: ``loss``, ``*_loss`` or ``loss_*``."""
    return name == "loss" or name.endswith("_loss") or name.startswith("loss_")


def log_scale_note(values: list[float]) -> str | None:
    """None when ``values`` can go on a log axis (some finite ones, all of them positive; NaN and
    inf are left out of the plot anyway), else why not, for the panel title."""
    finite = [value for value in values if math.isfinite(value)]
    if not finite:
        return "no finite value"
    if min(finite) <= 0:
        return "a value <= 0"
    return None


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
