"""``regionspot download``: which repos and which of their files, without any network.

The Hub is faked: ``HfApi.list_repo_files`` and ``snapshot_download`` are replaced, and the
probe's verdict is set by hand. The command run in a fresh process against an unreachable Hub is
tested in tests/test_hub.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from regionspot import hub
from regionspot.cli.download_cmd import select_files
from regionspot.cli.main import main
from regionspot.config import ClipBackboneConfig, FusionConfig, RegionSpotConfig, SamBackboneConfig, TextConfig, to_dict
from regionspot.model.checkpoint import write_checkpoint

DEFAULT_SAM = SamBackboneConfig().name_or_path
DEFAULT_CLIP = ClipBackboneConfig().name_or_path


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A reachable "Hub" whose repos list ``listing`` files; records every snapshot_download."""
    import huggingface_hub
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    hub.reset_probe_cache()
    hub._PROBES[hub.hub_endpoint()] = None  # the Hub "answers"
    state: dict[str, Any] = {"listing": ["config.json", "model.safetensors", "tf_model.h5"], "fetched": []}

    def snapshot_download(repo_id: str, allow_patterns: list[str] | None = None, **kwargs: Any) -> str:
        state["fetched"].append((repo_id, allow_patterns, kwargs))
        folder = cache / repo_id.replace("/", "--")
        folder.mkdir(parents=True, exist_ok=True)
        for name in allow_patterns or []:
            (folder / name).write_text("x")
        return str(folder)

    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", lambda self, repo_id, **kw: state["listing"])
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    yield state
    hub.reset_probe_cache()


def test_select_files_prefers_safetensors_and_skips_other_frameworks() -> None:
    repo = ["config.json", "preprocessor_config.json", "merges.txt", "vocab.json", "tokenizer.json",
            "tokenizer_config.json", "special_tokens_map.json", "model.safetensors", "pytorch_model.bin",
            "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack", "onnx/model.onnx",
            "onnx/config.json", "README.md", ".gitattributes", "training_args.bin", "spiece.model"]
    assert select_files(repo) == ["config.json", "merges.txt", "model.safetensors", "preprocessor_config.json",
                                  "special_tokens_map.json", "spiece.model", "tokenizer.json",
                                  "tokenizer_config.json", "vocab.json"]
    older = ["config.json", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin",
             "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack", "rust_model.ot"]
    assert select_files(older) == ["config.json", "pytorch_model-00001-of-00002.bin",
                                   "pytorch_model-00002-of-00002.bin", "pytorch_model.bin.index.json"]
    sharded = ["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
               "model.safetensors.index.json", "pytorch_model.bin"]
    assert select_files(sharded) == sharded[:4]


def test_dry_run_lists_the_default_backbones(fake_hub: dict[str, Any], capsys: pytest.CaptureFixture) -> None:
    assert main(["download", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"SAM backbone: {DEFAULT_SAM}" in out and f"CLIP backbone + CLIP text tower: {DEFAULT_CLIP}" in out
    assert fake_hub["fetched"] == []
    assert main(["download", "--dry-run", "--sam", "org/sam", "--set", "clip.name_or_path=org/clip",
                 "text.name_or_path=org/text"]) == 0
    out = capsys.readouterr().out
    assert "SAM backbone: org/sam" in out and "CLIP backbone: org/clip" in out and "CLIP text tower: org/text" in out
    assert DEFAULT_SAM not in out


def test_checkpoint_folder_names_its_hub_backbones(fake_hub: dict[str, Any], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    config = RegionSpotConfig(sam=SamBackboneConfig(name_or_path=str(tmp_path / "mobile_sam.pt")),
                              clip=ClipBackboneConfig(name_or_path="org/clip"),
                              text=TextConfig(name_or_path="org/text"),
                              fusion=FusionConfig(token_dim=8, width=8, text_dim=8, depth=1, heads=2, ffn_dim=16))
    folder = write_checkpoint(tmp_path / "ckpt", config, {"fusion.w": torch.zeros(2)})
    assert main(["download", "--checkpoint", str(folder)]) == 0
    out = capsys.readouterr().out
    assert [repo for repo, _, _ in fake_hub["fetched"]] == ["org/clip", "org/text"]  # the local .pt is skipped
    assert all(patterns == ["config.json", "model.safetensors"] for _, patterns, _ in fake_hub["fetched"])
    assert "CLIP backbone org/clip: 2 files (config.json, model.safetensors)" in out
    assert "Hugging Face cache:" in out and "HF_HUB_OFFLINE=1" in out


def test_bin_weights_only_without_safetensors(fake_hub: dict[str, Any]) -> None:
    fake_hub["listing"] = ["config.json", "pytorch_model.bin", "tf_model.h5", "flax_model.msgpack"]
    assert main(["download", "--sam", "org/sam", "--set", "clip.enabled=false", "text.bank=bank.npy"]) == 0
    assert fake_hub["fetched"] == [("org/sam", ["config.json", "pytorch_model.bin"], {})]


def test_hub_checkpoint_from_the_cache_when_offline(fake_hub: dict[str, Any], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture, add_to_hub_cache) -> None:
    from huggingface_hub import constants

    config = RegionSpotConfig(clip=ClipBackboneConfig(name_or_path="org/clip-l"))
    document = {"format": "regionspot", "format_version": 1, "config": to_dict(config)}
    add_to_hub_cache(Path(constants.HF_HUB_CACHE), "org/regionspot-bl",
                     lambda folder: (folder / "config.json").write_text(json.dumps(document)))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["download", "--checkpoint", "org/regionspot-bl", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "RegionSpot checkpoint: org/regionspot-bl (in the cache already)" in out
    assert f"SAM backbone: {DEFAULT_SAM}" in out and "CLIP backbone + CLIP text tower: org/clip-l" in out
    assert main(["download"]) == 2  # offline and not cached: the one-line error
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and f"cannot download the SAM backbone '{DEFAULT_SAM}'" in err


def test_official_file_names_its_variants_backbones(fake_hub: dict[str, Any], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    from regionspot.model.official import official_head_shapes

    shapes = official_head_shapes(FusionConfig(token_dim=256, width=1024, text_dim=768, depth=1))
    state = {"model." + k: torch.zeros(*shape) for k, shape in shapes.items()}
    state["model.clip_model.visual.positional_embedding"] = torch.zeros(577, 1024)  # ViT-L/14 at 336 px
    path = tmp_path / "model_final.pth"
    torch.save({"model": state}, path)
    assert main(["download", "--checkpoint", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "openai/clip-vit-large-patch14-336" in out and DEFAULT_SAM in out  # the variant read off the shapes
    assert main(["download", "--checkpoint", str(tmp_path / "missing.pth"), "--variant", "bb"]) == 2
