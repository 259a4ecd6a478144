"""RegionSpot assembly, checkpoints (round trip, strict loading, no pickle) and frozen towers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from regionspot.config import ConfigError, TextConfig
from regionspot.model.regionspot import RegionSpot
from regionspot.weights import CheckpointError


def photo(height: int = 60, width: int = 80) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (height, width, 3), dtype=np.uint8)


def predict(model: RegionSpot, image: np.ndarray) -> object:
    predictor = model.predictor()
    predictor.set_image(image)
    return predictor.predict([[5, 5, 40, 30], [20, 10, 70, 55]], ["cat", "dog", "red car"], topk=3)


def test_widths_are_read_off_the_backbones(tiny_model: RegionSpot) -> None:
    fusion = tiny_model.config.fusion
    assert (fusion.token_dim, fusion.width, fusion.text_dim) == (32, 32, 16)


def test_only_the_head_trains(tiny_model: RegionSpot) -> None:
    trainable = {n for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("fusion.") for n in trainable)
    assert tiny_model.trainable_parameter_count() == sum(p.numel() for p in tiny_model.fusion.parameters())
    tiny_model.train()
    assert tiny_model.fusion.training
    assert not tiny_model.region_tokenizer.training and not tiny_model.image_encoder.training
    tiny_model.eval()


def test_save_and_load_round_trip_gives_identical_outputs(tiny_model: RegionSpot, tmp_path: Path) -> None:
    image = photo()
    before = predict(tiny_model, image)
    tiny_model.save_pretrained(tmp_path / "ckpt")
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert files == ["config.json", "model.safetensors"]
    stored = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    assert all(k.startswith("fusion.") for k in stored)
    assert sum(t.numel() for t in stored.values()) == tiny_model.trainable_parameter_count()
    loaded = RegionSpot.from_pretrained(tmp_path / "ckpt")
    after = predict(loaded, image)
    np.testing.assert_array_equal(before.topk_ids, after.topk_ids)
    np.testing.assert_allclose(before.topk_scores, after.topk_scores, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(before.masks, after.masks)
    assert loaded.config == tiny_model.config


def test_strict_loading_names_missing_and_unexpected_keys(tiny_model: RegionSpot, tmp_path: Path) -> None:
    folder = tiny_model.save_pretrained(tmp_path / "ckpt")
    state = load_file(str(folder / "model.safetensors"))
    dropped = sorted(state)[0]
    del state[dropped]
    state["fusion.surprise.weight"] = torch.zeros(2)
    save_file(state, str(folder / "model.safetensors"))
    forget_weights_hash(folder)  # a head edited by hand: its config.json no longer vouches for the weights
    with pytest.raises(CheckpointError) as error:
        RegionSpot.from_pretrained(folder)
    assert dropped.removeprefix("fusion.") in str(error.value)
    assert "surprise.weight" in str(error.value)


def test_shape_mismatch_is_reported(tiny_model: RegionSpot, tmp_path: Path) -> None:
    folder = tiny_model.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="wrong shape"):
        RegionSpot.from_pretrained(folder, overrides=["fusion.ffn_dim=32"])


@pytest.mark.parametrize(("damage", "message"), [
    (lambda f: (f / "config.json").unlink(), "config.json is missing"),
    (lambda f: (f / "config.json").write_text("{not json"), "not valid JSON"),
    (lambda f: (f / "config.json").write_text(json.dumps({"format": "other"})), "not a RegionSpot config"),
    (lambda f: (f / "model.safetensors").write_bytes(b"garbage"), "not the file this checkpoint was saved with"),
    (lambda f: ((f / "model.safetensors").write_bytes(b"garbage"), forget_weights_hash(f)), "could not be read"),
    (lambda f: (f / "config.json").write_text("[1, 2]"), "holds a JSON list"),
    (lambda f: nan_weights(f), "are not finite"),
    (lambda f: edit_config(f, lambda c: c["config"]["fusion"].update(logit_scale=float("nan"))), "logit_scale nan"),
])
def test_broken_checkpoints_give_clear_errors(tiny_model: RegionSpot, tmp_path: Path, damage, message) -> None:
    folder = tiny_model.save_pretrained(tmp_path / "ckpt")
    damage(folder)
    with pytest.raises(CheckpointError, match=message):
        RegionSpot.from_pretrained(folder)


def forget_weights_hash(folder: Path) -> None:
    edit_config(folder, lambda document: document.pop("weights_sha256"))


def edit_config(folder: Path, change) -> None:
    document = json.loads((folder / "config.json").read_text())
    change(document)
    (folder / "config.json").write_text(json.dumps(document))


def nan_weights(folder: Path) -> None:
    state = load_file(str(folder / "model.safetensors"))
    state[sorted(state)[0]][0] = float("nan")
    save_file(state, str(folder / "model.safetensors"))
    forget_weights_hash(folder)


def test_backbone_paths_are_portable(tiny_model: RegionSpot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     tiny_sam_dir: Path) -> None:
    """A head saved with a relative backbone path loads from any working folder (the path is
    stored absolute), and a checkpoint shipped with its backbone beside it finds it there."""
    import dataclasses
    import shutil

    monkeypatch.chdir(tiny_sam_dir.parent)
    relative = dataclasses.replace(tiny_model.config, sam=dataclasses.replace(tiny_model.config.sam,
                                                                              name_or_path=tiny_sam_dir.name))
    saved = RegionSpot(relative, tiny_model.region_tokenizer, tiny_model.image_encoder, tiny_model.text_embedder,
                       tiny_model.fusion).save_pretrained(tmp_path / "ckpt")
    monkeypatch.chdir(tmp_path)
    stored = json.loads((saved / "config.json").read_text())["config"]["sam"]["name_or_path"]
    assert stored == str(tiny_sam_dir.resolve())
    assert RegionSpot.from_pretrained(saved).config.sam.name_or_path == str(tiny_sam_dir.resolve())
    shutil.copytree(tiny_sam_dir, saved / "sam")
    edit_config(saved, lambda document: document["config"]["sam"].update(name_or_path="sam"))
    assert RegionSpot.from_pretrained(saved).config.sam.name_or_path == str(saved / "sam")


def test_unknown_checkpoint_and_bad_override(tmp_path: Path, tiny_model: RegionSpot) -> None:
    with pytest.raises(CheckpointError, match="neither a local checkpoint folder"):
        RegionSpot.from_pretrained(str(tmp_path / "nothing-here"))
    folder = tiny_model.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(ConfigError, match="unknown key"):
        RegionSpot.from_pretrained(folder, overrides=["fusion.nope=1"])


def test_no_clip_vision_ablation(tiny_sam_dir: Path, tiny_clip_dir: Path, text_cache_dir: Path) -> None:
    model = RegionSpot.from_backbones(sam=str(tiny_sam_dir), clip=str(tiny_clip_dir), clip_vision=False,
                                      text=TextConfig(cache_dir=str(text_cache_dir)),
                                      overrides=["fusion.width=64", "fusion.heads=4"])
    assert model.image_encoder is None and model.config.fusion.width == 64
    result = predict(model, photo())
    assert result.topk_scores.shape == (2, 3)


def test_text_embeddings_are_memoised(tiny_model: RegionSpot) -> None:
    first = tiny_model.text_embeddings(["cat", "dog"])
    assert tiny_model.text_embeddings(["cat", "dog"]) is first
    torch.testing.assert_close(first.norm(dim=-1), torch.ones(2))


def test_a_missing_backbone_file_says_where_it_was_named(tiny_model: RegionSpot, tmp_path: Path) -> None:
    from regionspot.backbones.loading import BackboneLoadError

    saved = tiny_model.save_pretrained(tmp_path / "ckpt")
    edit_config(saved, lambda document: document["config"]["sam"].update(name_or_path=str(tmp_path / "gone.pt")))
    with pytest.raises(BackboneLoadError, match=r"SAM checkpoint file not found.*named by the checkpoint.*--sam"):
        RegionSpot.from_pretrained(saved)
