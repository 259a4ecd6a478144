"""A checkpoint folder whose ``config.json`` is malformed, holds impossible sizes, or does not fit
the weights beside it: one CheckpointError naming the file and the field (and, for a mismatch,
the parameter and both shapes); through ``regionspot info`` one ``error:`` line, exit status 2."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from regionspot.cli.main import main
from regionspot.config import (
    ConfigError,
    FusionConfig,
    RegionSpotConfig,
    apply_overrides,
)
from regionspot.model.checkpoint import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    read_checkpoint,
    write_checkpoint,
)
from regionspot.model.fusion import RegionFusion
from regionspot.weights import CheckpointError

TINY = FusionConfig(token_dim=8, width=8, text_dim=6, depth=1, heads=2, ffn_dim=16)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A valid checkpoint of a tiny head (backbones named, never built)."""
    state = {f"fusion.{key}": value for key, value in RegionFusion(TINY).state_dict().items()}
    return write_checkpoint(tmp_path / "head", RegionSpotConfig(fusion=TINY), state)


def edit_config(folder: Path, edit: Callable[[dict[str, Any]], Any]) -> Path:
    """Rewrite ``folder/config.json`` with ``edit(document)``; returns the file."""
    path = folder / CONFIG_NAME
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    return path


def set_fusion(**fields: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def edit(document: dict[str, Any]) -> dict[str, Any]:
        document["config"]["fusion"].update(fields)
        return document
    return edit


def test_the_untouched_checkpoint_reads(checkpoint: Path) -> None:
    config, state = read_checkpoint(checkpoint)
    assert config.fusion == TINY and "fusion.token_projector.weight" in state


@pytest.mark.parametrize(("edit", "message"), [
    (lambda document: [document], "holds a JSON list, not a RegionSpot config"),
    (lambda document: {**document, "config": [1, 2]}, "bad config: RegionSpotConfig: expected a mapping, got list"),
    (set_fusion(width=-8), "bad config: fusion.width must be at least 1, got -8"),
    (set_fusion(width=0), "bad config: fusion.width must be at least 1, got 0"),
    (set_fusion(token_dim=0), "bad config: fusion.token_dim must be at least 1, got 0"),
    (set_fusion(text_dim=-1), "bad config: fusion.text_dim must be at least 1, got -1"),
    (set_fusion(ffn_dim=0), "bad config: fusion.ffn_dim must be at least 1, got 0"),
    (set_fusion(heads=0), "bad config: fusion.heads must be at least 1, got 0"),
    (set_fusion(heads=3), "bad config: fusion.width 8 must be a multiple of fusion.heads 3"),
    (set_fusion(depth=-1), "bad config: fusion.depth must be at least 0, got -1"),
    (set_fusion(dropout=1.5), "bad config: fusion.dropout must be below 1.0, got 1.5"),
])
def test_malformed_or_impossible_configs_name_the_file_and_field(checkpoint: Path, edit, message: str) -> None:
    path = edit_config(checkpoint, edit)
    with pytest.raises(CheckpointError, match=re.escape(f"{path}") + ".*" + re.escape(message)):
        read_checkpoint(checkpoint)


@pytest.mark.parametrize(("fields", "message"), [
    ({"width": 16}, ("fusion.width 16 does not fit the weights in {weights}: fusion.token_projector.weight has shape "
                    "(8, 8), the config expects (16, 8) (fusion.width x fusion.token_dim)")),
    ({"token_dim": 4}, ("fusion.token_dim 4 does not fit the weights in {weights}: fusion.token_projector.weight has "
                       "shape (8, 8), the config expects (8, 4) (fusion.width x fusion.token_dim)")),
    ({"text_dim": 12}, ("fusion.text_dim 12 does not fit the weights in {weights}: fusion.text_projector.weight has "
                       "shape (6, 8), the config expects (12, 8) (fusion.text_dim x fusion.width)")),
    ({"ffn_dim": 32}, ("fusion.ffn_dim 32 does not fit the weights in {weights}: fusion.blocks.0.ffn.0.weight has "
                      "shape (16, 8), the config expects (32, 8) (fusion.ffn_dim x fusion.width)")),
    ({"depth": 2}, "fusion.depth 2 does not fit the weights in {weights}, which hold 1 fusion block(s)"),
])
def test_widths_that_do_not_fit_the_weights_name_parameter_and_shapes(checkpoint: Path, fields, message) -> None:
    path = edit_config(checkpoint, set_fusion(**fields))
    expected = f"{path}: " + message.format(weights=checkpoint / WEIGHTS_NAME)
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(checkpoint)
    assert str(error.value) == expected


@pytest.mark.parametrize(("edit", "message"), [
    (lambda document: [document], "config.json holds a JSON list"),
    (set_fusion(width=-8), "fusion.width must be at least 1, got -8"),
    (set_fusion(width=16), "fusion.token_projector.weight has shape (8, 8), the config expects (16, 8)"),
])
def test_the_command_line_prints_one_error_line(checkpoint: Path, edit, message: str, capsys) -> None:
    edit_config(checkpoint, edit)
    assert main(["info", "--checkpoint", str(checkpoint)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err and "Traceback" not in err


@pytest.mark.parametrize(("override", "message"), [
    ("fusion.width=0", "fusion.width must be at least 1, got 0"),
    ("fusion.heads=-2", "fusion.heads must be at least 1, got -2"),
    ("fusion.width=100", "fusion.width 100 must be a multiple of fusion.heads 8"),
    ("clip.image_size=0", "clip.image_size must be at least 1, got 0"),
])
def test_overrides_with_impossible_sizes_are_config_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        apply_overrides(RegionSpotConfig(), [override])
    assert apply_overrides(RegionSpotConfig(), ["clip.image_size=null", "fusion.depth=0"]).fusion.depth == 0
