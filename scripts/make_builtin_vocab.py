"""Generate the built-in vocabularies shipped as package data under ``regionspot/data/``.

Run once (the outputs are committed)::

    python scripts/make_builtin_vocab.py [--shared-data ../shared/data]

Inputs are the category files in ``<shared-data>/vocab/``. Each output is a small JSON list of
``{"id": int, "name": str}`` records in dataset id order (LVIS records also carry
``"frequency"``: ``"r"``, ``"c"`` or ``"f"``). Names are the prompt-ready forms:

* LVIS v1: the ``name`` field with underscores replaced by spaces (``aerosol_can`` ->
  ``aerosol can``; disambiguations such as ``bat (animal)`` are kept).
* COCO: the ``name`` field as released.
* Objects365: the cleaned ``name`` field (typos of ``original_name`` fixed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = REPO_ROOT.parent / "shared" / "data"
OUT_DIR = REPO_ROOT / "regionspot" / "data"

# output file name -> (input file name, expected count)
SOURCES: dict[str, tuple[str, int]] = {
    "lvis_v1.json": ("lvis_v1_categories.json", 1203),
    "coco.json": ("coco_categories.json", 80),
    "objects365.json": ("objects365_categories.json", 365),
}


def clean_records(kind: str, categories: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Turn raw dataset category records into ``{"id", "name"[, "frequency"]}`` records."""
    records: list[dict[str, Any]] = []
    for cat in sorted(categories, key=lambda c: int(c["id"])):
        name = str(cat["name"]).strip()
        record: dict[str, Any] = {"id": int(cat["id"])}
        if kind == "lvis_v1.json":
            record["name"] = " ".join(name.replace("_", " ").split())
            record["frequency"] = str(cat["frequency"])
        else:
            record["name"] = " ".join(name.split())
        records.append(record)
    return records


def check_records(out_name: str, records: list[dict[str, Any]], expected: int) -> None:
    """Fail loudly on a wrong count, a duplicate id or a duplicate (case-folded) name."""
    if len(records) != expected:
        raise SystemExit(f"{out_name}: expected {expected} categories, got {len(records)}")
    ids = [r["id"] for r in records]
    names = [r["name"].casefold() for r in records]
    if len(set(ids)) != len(ids) or len(set(names)) != len(names):
        raise SystemExit(f"{out_name}: duplicate ids or names")


def dump(records: list[dict[str, Any]]) -> str:
    """Compact JSON, one record per line (small and diff-friendly)."""
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    return "[\n" + ",\n".join(lines) + "\n]\n"


def main() -> None:
    """Write the three built-in vocabulary files."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared-data", type=Path, default=DEFAULT_SHARED)
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for out_name, (in_name, expected) in SOURCES.items():
        raw = json.loads((args.shared_data / "vocab" / in_name).read_text(encoding="utf-8"))
        records = clean_records(out_name, raw)
        check_records(out_name, records, expected)
        (args.out_dir / out_name).write_text(dump(records), encoding="utf-8")
        print(f"wrote {args.out_dir / out_name} ({len(records)} categories)")


if __name__ == "__main__":
    main()
