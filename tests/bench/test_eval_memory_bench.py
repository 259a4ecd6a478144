"""``regionspot bench eval-memory`` on a small synthetic run: both modes measured in their own
processes, giving the same AP, and the table and JSON written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from regionspot.bench.eval_memory_bench import synthetic_annotation
from regionspot.cli.main import main


def test_the_synthetic_annotation_is_lvis_style() -> None:
    document = synthetic_annotation(images=5, categories=30, objects_per_image=4)
    assert len(document["images"]) == 5 and len(document["annotations"]) == 20
    assert all("neg_category_ids" in image for image in document["images"])  # federated rules apply
    assert {c["frequency"] for c in document["categories"]} == {"r", "c", "f"}


@pytest.mark.slow  # two spawned processes importing torch
def test_bench_eval_memory_measures_both_modes(tmp_path: Path, capsys) -> None:
    out = tmp_path / "memory.json"
    assert main(["bench", "eval-memory", "--images", "60", "--detections", "20", "--categories", "50",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["modes"]) == {"gather", "stream"}
    for values in result["modes"].values():
        assert values["detections"] == 60 * 20 and values["peak_rss_mib"] >= values["annotation_rss_mib"] > 0
    assert result["modes"]["gather"]["AP"] == result["modes"]["stream"]["AP"]
    assert "read from shards image by image" in capsys.readouterr().out
