"""Metrics CSV (long format, resume-safe) and the curves PNG."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from regionspot.train.curves import MetricsLog, _centred_mean, curves_figure, is_loss, log_scale_note, plot_curves


def test_append_writes_long_rows_immediately(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path / "run" / "metrics.csv")
    log.append(20, "train", {"loss": 0.5, "lr": 2.5e-5})
    # flushed: a second reader sees the rows without the writer closing anything
    assert MetricsLog(log.csv_path).rows() == [
        {"step": 20, "split": "train", "name": "loss", "value": 0.5},
        {"step": 20, "split": "train", "name": "lr", "value": 2.5e-5},
    ]
    log.append(40, "eval", {"top1, %": 61.25})  # a new metric name, with a comma, needs no new column
    assert log.rows()[-1] == {"step": 40, "split": "eval", "name": "top1, %", "value": 61.25}
    assert log.csv_path.read_text().splitlines()[0] == "step,split,name,value"


def test_values_round_trip_exactly(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path / "m.csv")
    values = {"a": 0.1 + 0.2, "b": 1e-300, "c": float("nan"), "d": float("inf")}
    log.append(1, "train", values)
    read = {row["name"]: row["value"] for row in log.rows()}
    assert read["a"] == 0.1 + 0.2 and read["b"] == 1e-300 and read["d"] == math.inf
    assert math.isnan(read["c"])


def test_truncate_after_drops_later_rows_only(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path / "m.csv")
    for step in (10, 20, 30, 40):
        log.append(step, "train", {"loss": 1.0 / step})
    log.append(30, "eval", {"ap": 0.3})
    assert log.truncate_after(20) == 3
    assert [(r["step"], r["split"]) for r in log.rows()] == [(10, "train"), (20, "train")]
    log.append(30, "train", {"loss": 0.5})  # steps trained again are logged once
    assert [r["step"] for r in log.rows()] == [10, 20, 30]
    assert log.truncate_after(1000) == 0


def test_reopening_keeps_rows_and_cuts_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    MetricsLog(path).append(10, "train", {"loss": 1.0})
    with path.open("a") as handle:
        handle.write("20,train,lo")  # killed mid-row
    with pytest.warns(UserWarning, match=r"kept 1 row and dropped 1 line .*line 3, torn by an interrupted write: "
                                         r"'20,train,lo'\)$"):
        log = MetricsLog(path)
    log.append(20, "train", {"loss": 0.9})
    assert [(r["step"], r["value"]) for r in log.rows()] == [(10, 1.0), (20, 0.9)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv"]  # an ordinary torn line needs no copy


HEADER, ROWS = "step,split,name,value", ["1,train,loss,0.5", "2,train,loss,0.25"]
GOOD = "\n".join([HEADER, *ROWS, ""]).encode()
DAMAGED = {  # file content -> (rows kept, lines dropped, the first dropped line as the warning shows it)
    "garbage": (GOOD + b"hello world\n3,train,loss,abc\n3,train,loss\n-1,train,loss,1\n", 2, 4,
                "line 4: 'hello world'"),
    "a wrong header": (GOOD.replace(b"value", b"valu"), 2, 1, "line 1: 'step,split,name,valu'"),
    "binary noise": (GOOD + b"\x00\xff\xfe\n", 2, 1, "line 4: '\\x00\\xff\\xfe'"),
    "noise without a newline": (b"\x1b[2J\x00garbage", 0, 1,
                                r"line 1, torn by an interrupted write: '\x1b[2J\x00garbage'"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGED))
def test_opening_a_damaged_log_keeps_the_rows_that_parse(damage: str, tmp_path: Path) -> None:
    content, kept, dropped, first = DAMAGED[damage]
    path = tmp_path / "metrics.csv"
    path.write_bytes(content)
    messages: list[str] = []
    log = MetricsLog(path, warn=messages.append)
    lines = "1 line that is not a metrics row" if dropped == 1 else f"{dropped} lines that are not metrics rows"
    expected = (f"{path}: kept {kept} row{'' if kept == 1 else 's'} and dropped {lines} (first: {first}); the file "
                f"as it was is saved as {path}.damaged")
    assert messages == [expected]
    assert (tmp_path / "metrics.csv.damaged").read_bytes() == content  # nothing is lost
    assert path.read_text().splitlines() == [HEADER, *ROWS[:kept]]  # the log itself is clean again
    assert [row["step"] for row in log.rows()] == [1, 2][:kept]
    log.append(3, "train", {"loss": 0.125})
    assert MetricsLog(path, warn=messages.append).rows()[-1]["step"] == 3 and len(messages) == 1


def test_harmless_oddities_are_fixed_silently(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_bytes(b"1,train,loss,0.5\r\n\n2,train,loss,0.25\n")  # no header, CRLF, a blank line
    log = MetricsLog(path, warn=pytest.fail)
    assert [r["step"] for r in log.rows()] == [1, 2]
    assert path.read_text().splitlines()[0] == "step,split,name,value"


def test_reading_a_malformed_file_is_an_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.csv"
    broken.write_text("step,split,name,value\n1,train,loss,abc\n2,train,loss,1\n")
    with pytest.raises(ValueError, match=r"broken.csv: line 2: '1,train,loss,abc' is not a metrics row"):
        plot_curves(broken, tmp_path / "curves.png")
    broken.write_text("step,split,name,value\n2,tr")
    with pytest.warns(UserWarning, match="ignoring line 2, torn"):
        plot_curves(broken, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").is_file()


def test_centred_mean() -> None:
    assert _centred_mean([1, 2, 3, 4, 5], 3).tolist() == [1.5, 2, 3, 4, 4.5]
    assert _centred_mean([1, 2, 3, 4], 1).tolist() == [1, 2, 3, 4]
    nan = float("nan")
    assert _centred_mean([1, nan, 3, nan], 3).tolist() == [1, 2, 3, 3]
    assert np.isnan(_centred_mean([nan, nan], 1)).all()


def write_run(path: Path, steps: int = 3000) -> MetricsLog:
    log = MetricsLog(path)
    rng = np.random.default_rng(0)
    for step in range(20, steps + 1, 20):
        lr = 2.5e-5 * min(1.0, step / 1000) * (0.1 if step >= 2400 else 1.0)
        log.append(step, "train", {"loss": 1.5 * math.exp(-step / 800) + 0.2 + 0.15 * rng.random(),
                                   "accuracy": 1 - math.exp(-step / 700) * 0.9 - 0.05 * rng.random(),
                                   "grad_norm": 2 * math.exp(-step / 1500) + 0.3 * rng.random(), "lr": lr})
        if step % 500 == 0:
            log.append(step, "eval", {"loss": 1.4 * math.exp(-step / 900) + 0.3,
                                      "top1": 1 - 0.9 * math.exp(-step / 900)})
    return log


def test_plot_curves_writes_a_png(tmp_path: Path) -> None:
    log = write_run(tmp_path / "metrics.csv")
    png = plot_curves(log.csv_path, tmp_path / "out" / "curves.png")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    image = imread(png)
    assert image.shape[0] > 300 and image.shape[1] > 800  # 5 panels over two rows of three
    assert image[..., :3].std() > 0.05  # something is drawn, not a blank canvas


def test_plot_curves_of_an_empty_log(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path / "metrics.csv")
    assert plot_curves(log.csv_path, tmp_path / "empty.png").read_bytes()[:4] == b"\x89PNG"


def panels_by_title(figure: Any) -> dict[str, Any]:
    """Visible subplots of a curves figure by the first word(s) of their title."""
    return {ax.get_title().split(" (")[0]: ax for ax in figure.axes if ax.get_visible()}


def test_loss_and_learning_rate_panels_use_a_log_axis(tmp_path: Path) -> None:
    log = write_run(tmp_path / "metrics.csv")
    log.append(3000, "train", {"focal_loss": 0.3})
    panels = panels_by_title(curves_figure(log.csv_path))
    assert set(panels) == {"loss", "accuracy", "grad norm", "top1", "focal loss", "learning rate"}
    scales = {title: ax.get_yscale() for title, ax in panels.items()}
    assert scales == {"loss": "log", "focal loss": "log", "learning rate": "log", "accuracy": "linear",
                      "grad norm": "linear", "top1": "linear"}
    assert panels["loss"].get_title() == "loss (log scale)"
    low, high = panels["loss"].get_ylim()
    assert 0 < low < 0.3 and high > 1.5  # the whole curve, train and eval, on the axis
    labels = [tick.get_text() for tick in panels["loss"].get_yticklabels()]
    assert {"0.5", "1"} <= set(labels)  # plain numbers, not 10^-1


def test_a_loss_with_a_non_positive_value_stays_linear(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path / "metrics.csv")
    for step, loss in enumerate([0.8, 0.4, 0.0, -0.1], start=1):
        log.append(step, "train", {"loss": loss, "lr": 1e-4})
    log.append(4, "eval", {"loss": float("nan")})
    panels = panels_by_title(curves_figure(log.csv_path))
    assert panels["loss"].get_yscale() == "linear"
    assert panels["loss"].get_title() == "loss (linear: a value <= 0)"
    assert panels["learning rate"].get_yscale() == "log"
    assert plot_curves(log.csv_path, tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_log_scale_note_and_loss_names() -> None:
    assert log_scale_note([0.5, 0.1, float("nan"), float("inf")]) is None  # NaN and inf are not drawn anyway
    assert log_scale_note([0.5, 0.0]) == "a value <= 0"
    assert log_scale_note([0.5, -1e-9]) == "a value <= 0"
    assert log_scale_note([float("nan")]) == "no finite value"
    assert [name for name in ("loss", "focal_loss", "loss_box", "accuracy", "lossless", "top1") if is_loss(name)] == [
        "loss", "focal_loss", "loss_box"]
