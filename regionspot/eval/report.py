"""The files an evaluation writes: ``metrics.json`` (everything), ``report.md`` (the model and
the protocol stated at the top, then one table per AP type), ``per_category.csv`` (box, and with
masks mask, AP per category), and the printed summary. Shared by ``regionspot eval`` in both its modes
(a results file, or a model run over a dataset)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from regionspot.eval.evaluator import format_metrics
from regionspot.eval.protocol import rules_name

SECTION_TITLES = {"bbox": "Box AP", "segm": "Mask AP", "fixed_ap": "Fixed AP (box)", "fixed_ap_segm": "Fixed AP (mask)"}


def rules_text(federated: bool) -> str:
    """The evaluation rules in words (the default detections cap included)."""
    default_cap = "at most 300 detections per image" if federated else "at most 100 detections per image and category"
    return f"{rules_name(federated)}, {default_cap}"


def percent(value: float) -> str:
    """A fraction as a percentage with two decimals; ``n/a`` for NaN (nothing to measure)."""
    return f"{100 * value:.2f}" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


def metrics_table(metrics: Mapping[str, float]) -> list[str]:
    """A Markdown table (header, rule, values in percent)."""
    return ["| " + " | ".join(metrics) + " |", "|" + "---:|" * len(metrics),
            "| " + " | ".join(percent(v) for v in metrics.values()) + " |"]


def protocol_lines(protocol: Mapping[str, Any]) -> list[str]:
    """Markdown bullet lines, one per protocol entry (``key: value``)."""
    return [f"- {key.replace('_', ' ')}: {value}" for key, value in protocol.items()]


def model_lines(model: Mapping[str, Any]) -> list[str]:
    """The ``## Model`` section that opens a report: one ``- key: value`` bullet per entry of
    ``model`` (what answered: checkpoint, method, head, backbones, ``inputs``; or the
    detections file evaluated), in its order."""
    return ["## Model", "", *[f"- {key}: {value}" for key, value in model.items()], ""]


def markdown_report(title: str, protocol: Mapping[str, Any], sections: Mapping[str, Any],
                    extra: Sequence[str] = (), model: Mapping[str, Any] | None = None) -> str:
    """The report: ``# title``, the model (:func:`model_lines`, when given), the protocol
    bullets, then a ``## <AP type>`` table for each of ``sections`` (keys of
    :data:`SECTION_TITLES`, values with ``metrics``), then ``extra`` lines."""
    header = model_lines(model) if model else []
    lines = [f"# {title}", "", *header, "## Protocol", "", *protocol_lines(protocol), ""]
    for key, title_text in SECTION_TITLES.items():
        if key in sections:
            lines += [f"## {title_text}", "", *metrics_table(sections[key]["metrics"]), ""]
    return "\n".join([*lines, *extra]) + "\n"


def per_category_rows(sections: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows {id, name, frequency, num_gt, AP} from the box section, with ``mask_AP`` added from
    the mask section when there is one."""
    rows = [dict(row) for row in sections["bbox"]["per_category"]]
    if "segm" in sections:
        mask_ap = {row["id"]: row["AP"] for row in sections["segm"]["per_category"]}
        for row in rows:
            row["mask_AP"] = mask_ap.get(row["id"], float("nan"))
    return rows


def write_per_category_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """One CSV row per category (columns from the first row)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["id"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_report_files(folder: Path, document: Mapping[str, Any], report: str) -> list[Path]:
    """``metrics.json`` (``document``), ``report.md`` (``report``) and ``per_category.csv``
    (from ``document["bbox"]`` / ``["segm"]``) in ``folder`` (created). Returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    metrics = folder / "metrics.json"
    metrics.write_text(json.dumps(document, indent=1, default=_json_default) + "\n", encoding="utf-8")
    markdown = folder / "report.md"
    markdown.write_text(report, encoding="utf-8")
    table = write_per_category_csv(folder / "per_category.csv", per_category_rows(document))
    return [metrics, markdown, table]


def _json_default(value: Any) -> Any:
    """Path and numpy scalars as JSON."""
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def summary_text(sections: Mapping[str, Any], protocol_line: str) -> str:
    """What is printed: the protocol in one line, then each AP type's table in percent (a box or
    mask section's ``rules``, when given, replaces the default words of :func:`rules_text`)."""
    parts = [protocol_line]
    for key in SECTION_TITLES:
        if key not in sections:
            continue
        section = sections[key]
        if key in ("bbox", "segm"):
            rules = section.get("rules") or rules_text(section["federated"])
            title = f"{'box' if key == 'bbox' else 'mask'} AP ({rules})"
        else:
            title = (f"fixed {'mask' if key == 'fixed_ap_segm' else 'box'} AP (top {section['budget']} detections "
                     "per category over the dataset)")
        parts += [f"{title}:", format_metrics(section["metrics"])]
    return "\n".join(parts)
