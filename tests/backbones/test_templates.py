"""Prompt templates and category-name cleaning."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from regionspot.backbones.templates import (
    ENSEMBLE,
    OFFICIAL,
    OPENAI_IMAGENET_TEMPLATES,
    SINGLE,
    build_prompts,
    clean_category_name,
    official_name,
    resolve_templates,
)


def test_template_sets() -> None:
    assert SINGLE == ("a photo of a {} in the scene",)
    assert len(OPENAI_IMAGENET_TEMPLATES) == 80 and len(set(OPENAI_IMAGENET_TEMPLATES)) == 80
    assert len(ENSEMBLE) == 81 and ENSEMBLE[0] == SINGLE[0]
    assert OPENAI_IMAGENET_TEMPLATES[0] == "a bad photo of a {}."
    assert OPENAI_IMAGENET_TEMPLATES[-1] == "a tattoo of the {}."
    assert all(t.count("{}") == 1 for t in ENSEMBLE)
    assert resolve_templates("single") == SINGLE and resolve_templates("ensemble") == ENSEMBLE
    assert resolve_templates(["{} here"]) == ("{} here",)


def test_the_authors_template_set_is_their_81() -> None:
    """Their prompt_engineering.get_prompt_templates: '{}.' first, then OpenAI's 80 in order;
    it differs from our ensemble by that one template, in place of the paper's prompt."""
    assert OFFICIAL[0] == "{}." and OFFICIAL[1:] == OPENAI_IMAGENET_TEMPLATES and len(OFFICIAL) == 81
    assert set(OFFICIAL) - set(ENSEMBLE) == {"{}."} and set(ENSEMBLE) - set(OFFICIAL) == set(SINGLE)
    assert resolve_templates("official") == OFFICIAL


@pytest.mark.parametrize(("raw", "spelled"), [
    ("aerosol_can", "aerosol_can"), ("bow_(weapon)", "bow_(weapon)"), ("wall-other-merged", "wall"),
    ("grass-merged", "grass"), ("sky-other", "sky"), ("snow-stuff", "snow"), ("Baseball Bat", "Baseball Bat"),
])
def test_official_names_keep_the_released_spelling(raw: str, spelled: str) -> None:
    assert official_name(raw) == spelled


@pytest.mark.parametrize(("bad", "message"), [
    ("many", "unknown template set 'many'"),
    ([], "at least one prompt template is needed"),
    (["no slot"], r"prompt template 'no slot' must contain exactly one '\{\}'"),
    (["{} and {}"], r"prompt template '\{\} and \{\}' must contain exactly one '\{\}'"),
])
def test_resolve_templates_rejects(bad: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_templates(bad)  # type: ignore[arg-type]


def test_build_prompts() -> None:
    assert build_prompts("traffic_light", SINGLE) == ["a photo of a traffic light in the scene"]
    assert build_prompts("traffic_light", SINGLE, clean=False) == ["a photo of a traffic_light in the scene"]
    prompts = build_prompts("dog", ENSEMBLE)
    assert len(prompts) == 81 and prompts[1] == "a bad photo of a dog." and prompts[36] == "a dog in a video game."


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("bow_(weapon)", "bow (weapon)"),
        ("arctic_(type_of_shoe)", "arctic (type of shoe)"),
        ("wall-other-merged", "wall"),
        ("floor_other", "floor"),
        ("tree-merged", "tree"),
        ("  hot   dog ", "hot dog"),
        ("bow-tie", "bow-tie"),
        ("Other Shoes", "Other Shoes"),
        ("other", "other"),
        ("Band_Aid", "Band Aid"),
        ("flip-flop_(sandal)", "flip-flop (sandal)"),
    ],
)
def test_clean_category_name(raw: str, clean: str) -> None:
    assert clean_category_name(raw) == clean


@pytest.mark.parametrize("bad", ["", "   ", "_"])
def test_clean_category_name_rejects_empty(bad: str) -> None:
    with pytest.raises(ValueError, match=f"category name {re.escape(repr(bad))} is empty after cleaning"):
        clean_category_name(bad)


def test_cleaning_keeps_real_vocabularies_distinct(shared_data: Path) -> None:
    """Cleaned names key the text cache, so distinct categories must stay distinct."""
    lvis = [c["name"] for c in json.loads((shared_data / "vocab" / "lvis_v1_categories.json").read_text())]
    objects365 = [c["name"] for c in json.loads((shared_data / "vocab" / "objects365_categories.json").read_text())]
    for names in (lvis, objects365):
        cleaned = [clean_category_name(n) for n in names]
        assert len(set(cleaned)) == len(names)
        assert all("_" not in c and "  " not in c for c in cleaned)
