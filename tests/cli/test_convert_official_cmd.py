"""``regionspot convert-official`` on synthetic files of the authors' layout (real widths, depth 1).

The head layout itself and the numerical match with their forward are tested in
tests/model/test_official.py; loading a converted folder with ``RegionSpot.from_pretrained`` is
tested there on small shapes (the real CLIP/SAM backbones cannot be built here).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from regionspot.cli.main import main
from regionspot.config import FusionConfig
from regionspot.model.checkpoint import read_checkpoint
from regionspot.model.fusion import RegionFusion
from regionspot.model.official import official_head_shapes
from regionspot.weights import load_strict


def write_their_file(path: Path, width: int, text: int, clip_positions: int | None) -> dict[str, torch.Tensor]:
    """A detectron2-style ``.pth`` ({"model": ..., "iteration": ...}) with their key layout, depth 1;
    with ``clip_positions`` it also carries frozen CLIP and SAM tensors. Returns the state dict."""
    generator = torch.Generator().manual_seed(width)
    shapes = official_head_shapes(FusionConfig(token_dim=256, width=width, text_dim=text, depth=1))
    state = {"model." + k: torch.randn(*shape, generator=generator) for k, shape in shapes.items()}
    if clip_positions is not None:
        state["model.clip_model.visual.positional_embedding"] = torch.zeros(clip_positions, width)
        state["model.clip_model.logit_scale"] = torch.tensor(math.log(100.0))
        state["model.sam.image_encoder.patch_embed.proj.weight"] = torch.zeros(8, 3, 2, 2)
    torch.save({"model": state, "iteration": 449999}, path)
    return state


@pytest.fixture(scope="module")
def bb_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    path = tmp_path_factory.mktemp("official") / "regionspot_bb.pth"
    return path, write_their_file(path, 768, 512, clip_positions=197)


@pytest.fixture(scope="module")
def bl_file_without_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("official") / "model_final_modified.pth"
    write_their_file(path, 1024, 768, clip_positions=None)
    return path


def test_converts_and_guesses_the_variant(bb_file, tmp_path, capsys) -> None:
    path, state = bb_file
    out = tmp_path / "regionspot-bb"
    assert main(["convert-official", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "guessed 'bb'" in printed
    assert "dropped 3 frozen-backbone keys (clip_model.*: 2, sam.*: 1)" in printed
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    document = json.loads((out / "config.json").read_text())
    assert document["converted_from"]["variant"] == "bb"
    assert document["converted_from"]["file"] == "regionspot_bb.pth"
    config, head = read_checkpoint(out)
    assert config.clip.name_or_path == "openai/clip-vit-base-patch16" and config.clip.image_size == 224
    assert config.sam.name_or_path == "facebook/sam-vit-base"
    assert (config.fusion.width, config.fusion.text_dim, config.fusion.depth) == (768, 512, 1)
    fusion = RegionFusion(config.fusion)
    load_strict(fusion, {k.removeprefix("fusion."): v for k, v in head.items()}, "converted")
    assert torch.equal(fusion.text_projector.weight, state["model.projector.weight"])
    assert torch.equal(fusion.blocks[0].cross_attn.in_proj_weight,
                       state["model.decoder.layers.0.multihead_attn.in_proj_weight"])


def test_explicit_variant_and_backbone_ids(bl_file_without_clip, tmp_path, capsys) -> None:
    out = tmp_path / "bl336"
    argv = ["convert-official", str(bl_file_without_clip), "--out", str(out), "--variant", "bl336",
            "--sam", "/models/sam-vit-base", "--clip", "/models/clip-l14-336"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "guessed" not in printed and "dropped 0 frozen-backbone keys (none in this file)" in printed
    config, _ = read_checkpoint(out)
    assert (config.sam.name_or_path, config.clip.name_or_path) == ("/models/sam-vit-base", "/models/clip-l14-336")
    assert config.clip.image_size == 336 and config.fusion.width == 1024


@pytest.mark.parametrize(("case", "message"), [
    ("junk", "is not a readable PyTorch checkpoint"),
    ("ambiguous", "cannot tell bl from bl336"),
    ("wrong-variant", "variant 'bb' needs (256, 768, 512)"),
    ("out-is-file", "is a file; give a folder"),
])
def test_user_errors_exit_2(case, message, bl_file_without_clip, tmp_path, capsys) -> None:
    source, out = bl_file_without_clip, tmp_path / "out"
    extra: list[str] = []
    if case == "junk":
        source = tmp_path / "junk.pth"
        source.write_text("not a checkpoint")
    elif case == "wrong-variant":
        extra = ["--variant", "bb"]
    elif case == "out-is-file":
        out.write_text("x")
        extra = ["--variant", "bl"]
    assert main(["convert-official", str(source), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_python_api_writes_the_same_checkpoint(bb_file, tmp_path) -> None:
    from regionspot.model.official import convert_official_checkpoint

    path, state = bb_file
    folder = convert_official_checkpoint(path, None, tmp_path / "api", clip="/models/clip-b16")
    config, head = read_checkpoint(folder)
    assert config.clip.name_or_path == "/models/clip-b16" and config.fusion.width == 768
    assert torch.equal(head["fusion.token_projector.weight"], state["model.to_clip.weight"])
    assert json.loads((folder / "config.json").read_text())["converted_from"]["dropped_frozen_keys"] == 3
