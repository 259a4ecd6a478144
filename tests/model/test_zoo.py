"""The registry of named models (``regionspot.presets``) against the README's model-zoo table, the
configuration's defaults and the converter, so that none of them can drift from it."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from regionspot.config import ClipBackboneConfig, FusionConfig, SamBackboneConfig
from regionspot.model.official import official_config, official_head_shapes
from regionspot.presets import (
    BY_VARIANT,
    DEFAULT_CLIP,
    DEFAULT_SAM,
    MODELS,
    VARIANTS,
    NamedModel,
    named_model,
)

README = Path(__file__).resolve().parents[2] / "README.md"
ZOO_HEADER = ("head", "--variant", "SAM", "CLIP (vision and text)", "CLIP input", "widths (vision / text)",
              "trainable parameters")


def zoo_section() -> str:
    """The README's ``## Model zoo`` section, up to the next ``## `` heading."""
    found = re.search(r"^## Model zoo\n(.*?)(?=^## )", README.read_text(encoding="utf-8"), re.DOTALL | re.MULTILINE)
    assert found, "the README has no '## Model zoo' section"
    return found.group(1)


def markdown_tables(text: str) -> list[list[tuple[str, ...]]]:
    """Every pipe table of ``text`` as rows of cells (header first, the ``|---|`` line left out),
    backticks stripped."""
    tables: list[list[tuple[str, ...]]] = []
    previous_was_row = False
    for line in text.splitlines():
        is_row = line.startswith("|")
        if is_row and not re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line):
            cells = tuple(cell.strip().replace("`", "") for cell in line.strip().strip("|").split("|"))
            if not previous_was_row:
                tables.append([])
            tables[-1].append(cells)
        previous_was_row = is_row
    return tables


def readme_zoo_rows() -> dict[str, tuple[str, ...]]:
    """The trained-heads table of the README, keyed by head name."""
    tables = [table for table in markdown_tables(zoo_section()) if table[0] == ZOO_HEADER]
    assert len(tables) == 1, f"the model zoo must hold one table with the columns {ZOO_HEADER}"
    return {row[0]: row for row in tables[0][1:]}


def head_parameters(model: NamedModel) -> int:
    """The converted head's parameter count, from the shapes of the authors' layout (nothing built)."""
    return sum(math.prod(shape) for shape in official_head_shapes(official_config(model.variant).fusion).values())


def expected_row(model: NamedModel) -> tuple[str, ...]:
    return (model.name, model.variant, model.sam, model.clip, f"{model.image_size} px, patch {model.patch_size}",
            f"{model.width} / {model.text_dim}", f"{head_parameters(model) / 1e6:.2f}M")


def test_readme_zoo_table_is_the_registry() -> None:
    rows = readme_zoo_rows()
    assert list(rows) == [model.name for model in MODELS]
    for model in MODELS:
        assert rows[model.name] == expected_row(model)


def test_readme_backbone_table_names_each_models_clip() -> None:
    section = zoo_section()
    for model in MODELS:
        assert f"`{model.clip}` ({model.name})" in section


def test_markdown_tables_are_told_apart() -> None:
    text = "| a | b |\n|---|:-:|\n| `x` | 1 |\n\ntext\n| c |\n|---|\n| 2 |\n"
    assert markdown_tables(text) == [[("a", "b"), ("x", "1")], [("c",), ("2",)]]


def test_registry_values() -> None:
    """Independent of the table: the released models' token counts and the paper's head sizes."""
    assert VARIANTS == ("bb", "bl", "bl336") and list(BY_VARIANT) == list(VARIANTS)
    assert {m.variant: m.memory_tokens for m in MODELS} == {"bb": 197, "bl": 257, "bl336": 577}
    assert {m.variant: m.their_clip_type for m in MODELS} == {
        "bb": "CLIP_400M", "bl": "CLIP_400M_Large", "bl336": "CLIP_400M_Large_336"}
    for model in MODELS:
        assert round(head_parameters(model) / 1e6) == model.paper_trainable_millions


def test_configuration_defaults_are_bb() -> None:
    bb = named_model("BB")
    assert (bb.sam, bb.clip) == (DEFAULT_SAM, DEFAULT_CLIP)
    assert SamBackboneConfig().name_or_path == bb.sam and ClipBackboneConfig().name_or_path == bb.clip
    fusion = FusionConfig()
    assert (fusion.token_dim, fusion.width, fusion.text_dim) == (bb.token_dim, bb.width, bb.text_dim)


@pytest.mark.parametrize("model", MODELS, ids=[m.variant for m in MODELS])
def test_official_config_follows_the_registry(model: NamedModel) -> None:
    config = official_config(model.variant)
    assert (config.sam.name_or_path, config.clip.name_or_path, config.clip.image_size) == (
        model.sam, model.clip, model.image_size)
    assert (config.fusion.token_dim, config.fusion.width, config.fusion.text_dim) == (
        model.token_dim, model.width, model.text_dim)


@pytest.mark.parametrize("alias", ["BL@336", "bl336", "RegionSpot-BL@336", " regionspot-bl@336 "])
def test_named_model_aliases(alias: str) -> None:
    assert named_model(alias) is BY_VARIANT["bl336"]


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'BH'; choose one of BB, BL, BL@336 \(or bb, bl, bl336\)"):
        named_model("BH")
