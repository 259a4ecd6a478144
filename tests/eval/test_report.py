"""report.md: the model that answered opens the report, above the protocol and the AP tables."""

from __future__ import annotations

from regionspot.eval.report import markdown_report, model_lines

MODEL = {"checkpoint": "`runs/x/final`", "method": "regionspot", "head": "trained", "SAM": "`facebook/sam-vit-base`",
         "CLIP": "`openai/clip-vit-base-patch16`", "inputs": "official"}
PROTOCOL = {"method": "regionspot (...)", "boxes": "ground-truth boxes"}
SECTIONS = {"bbox": {"metrics": {"AP": 0.25, "AP50": float("nan")}}}


def test_the_model_comes_first() -> None:
    lines = markdown_report("Evaluation: regionspot on val.json", PROTOCOL, SECTIONS, model=MODEL,
                            extra=["## Counts"]).splitlines()
    assert lines[:10] == ["# Evaluation: regionspot on val.json", "", "## Model", "",
                          "- checkpoint: `runs/x/final`", "- method: regionspot", "- head: trained",
                          "- SAM: `facebook/sam-vit-base`", "- CLIP: `openai/clip-vit-base-patch16`",
                          "- inputs: official"]
    assert lines[10:14] == ["", "## Protocol", "", "- method: regionspot (...)"]
    assert lines.index("## Box AP") > lines.index("## Protocol") and lines[-1] == "## Counts"
    assert "| 25.00 | n/a |" in lines


def test_without_a_model_the_protocol_comes_first() -> None:
    lines = markdown_report("Evaluation", PROTOCOL, SECTIONS).splitlines()
    assert lines[:3] == ["# Evaluation", "", "## Protocol"] and "## Model" not in lines


def test_model_lines_keep_the_given_order() -> None:
    assert model_lines({"detections": "`r.json`", "model": "none run here"}) == [
        "## Model", "", "- detections: `r.json`", "- model: none run here", ""]
