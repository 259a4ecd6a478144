"""``regionspot extract-tokens`` end to end on a tiny random SAM: both ``--data`` forms, resume
after Ctrl-C, CLIP memories, and user errors (exit status 2, no traceback)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from transformers import SamConfig, SamMaskDecoderConfig, SamModel, SamPromptEncoderConfig, SamVisionConfig

from regionspot.backbones.clip_vision import ClipVisionMemory
from regionspot.backbones.sam import build_region_tokenizer
from regionspot.cache import token_cache
from regionspot.cache.memory_cache import MemoryCache
from regionspot.cache.token_cache import TokenCache
from regionspot.cli.main import main
from regionspot.config import SamBackboneConfig
from regionspot.datasets.coco_format import CocoDataset


def write_subset(coco_sample: Path, path: Path, image_ids: tuple[int, ...]) -> Path:
    document = json.loads((coco_sample / "annotations.json").read_text())
    document["images"] = [i for i in document["images"] if i["id"] in image_ids]
    document["annotations"] = [a for a in document["annotations"] if a["image_id"] in image_ids]
    path.write_text(json.dumps(document))
    return path


@pytest.fixture(scope="module")
def sam_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SamModel (256 px input) saved like a Hub model."""
    torch.manual_seed(0)
    vision = SamVisionConfig(image_size=256, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             global_attn_indexes=[1], mlp_dim=64)
    model = SamModel(SamConfig(vision_config=vision,
                               prompt_encoder_config=SamPromptEncoderConfig(image_size=256, image_embedding_size=16),
                               mask_decoder_config=SamMaskDecoderConfig(layer_norm_eps=1e-5)))
    folder = tmp_path_factory.mktemp("tiny_sam")
    model.save_pretrained(folder)
    return folder


@pytest.fixture
def subset(coco_sample: Path, tmp_path: Path) -> Path:
    return write_subset(coco_sample, tmp_path / "subset.json", (25, 30, 34))


def test_coco_json_form_extracts_and_resumes(sam_dir: Path, subset: Path, coco_sample: Path, tmp_path: Path,
                                             capsys) -> None:
    out = tmp_path / "cache"
    argv = ["extract-tokens", "--data", str(subset), "--images", str(coco_sample / "images"), "--sam", str(sam_dir),
            "--out", str(out), "--shard-size", "2", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "subset SAM tokens: 3 images, 5 boxes; 2/2 shards (0 skipped, 2 computed)" in printed
    tokenizer = build_region_tokenizer(SamBackboneConfig(name_or_path=str(sam_dir)))
    dataset = CocoDataset(subset, coco_sample / "images")
    cache = TokenCache.open(out, tokenizer, dataset=dataset)
    assert cache.flips == (False, True) and cache.tokens(34, flipped=True)[0].shape == (1, 256)
    assert main(argv) == 0
    assert "2/2 shards (2 skipped, 0 computed)" in capsys.readouterr().out


def test_ctrl_c_leaves_a_resumable_cache(sam_dir: Path, subset: Path, coco_sample: Path, tmp_path: Path,
                                         monkeypatch, capsys) -> None:
    real = token_cache.extract_tokens

    def interrupted(*args, **kwargs):
        real(*args, **{**kwargs, "stop_after_shards": 1})
        raise KeyboardInterrupt

    monkeypatch.setattr(token_cache, "extract_tokens", interrupted)
    argv = ["extract-tokens", "--data", str(subset), "--images", str(coco_sample / "images"), "--sam", str(sam_dir),
            "--out", str(tmp_path / "cache"), "--shard-size", "2", "--no-progress"]
    assert main(argv) == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    monkeypatch.undo()
    assert main(argv) == 0
    assert "2/2 shards (1 skipped, 1 computed)" in capsys.readouterr().out


def test_training_config_form(sam_dir: Path, coco_sample: Path, tiny_clip_dir: Path, tmp_path: Path,
                              capsys) -> None:
    images = str(coco_sample / "images")
    first = write_subset(coco_sample, tmp_path / "first.json", (25, 34))
    second = write_subset(coco_sample, tmp_path / "second.json", (30,))
    config = {
        "model": {"sam": {"name_or_path": str(sam_dir), "token_place": "prompt_encoder"},
                  "clip": {"name_or_path": str(tiny_clip_dir)}},
        "datasets": [{"name": "first", "annotations": str(first), "images": images,
                      "token_cache": str(tmp_path / "first-tokens")},
                     {"name": "second", "annotations": str(second), "images": images}],
        "eval_dataset": {"name": "first-eval", "annotations": str(first), "images": images,
                         "token_cache": str(tmp_path / "first-tokens")},  # shared with "first": done once
        "augment": {"flip": False, "crop": False},
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["extract-tokens", "--data", str(path), "--out", str(tmp_path / "out"), "--memories",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("SAM tokens") == 2  # "first" and "first-eval" share their token cache
    assert printed.count("CLIP memories") == 3 and (tmp_path / "out" / "first-eval-memories" / "manifest.json").exists()
    tokenizer = build_region_tokenizer(SamBackboneConfig(name_or_path=str(sam_dir), token_place="prompt_encoder"))
    encoder = ClipVisionMemory.from_pretrained(str(tiny_clip_dir))
    for name, annotation_file, folder in (("first", first, tmp_path / "first-tokens"),
                                          ("second", second, tmp_path / "out" / "second")):
        dataset = CocoDataset(annotation_file, images, name=name)
        cache = TokenCache.open(folder, tokenizer, dataset=dataset)
        assert cache.flips == (False,)  # the config does not flip
        memories = MemoryCache.open(tmp_path / "out" / f"{name}-memories", encoder, dataset=dataset)
        assert memories.memory(dataset.records[0].image_id).shape == (17, 32)


def test_user_errors_exit_2_without_traceback(sam_dir: Path, subset: Path, coco_sample: Path, tmp_path: Path,
                                              capsys) -> None:
    images = str(coco_sample / "images")
    cases = [
        (["--data", str(tmp_path / "missing.json"), "--out", str(tmp_path / "o")], "--data file not found"),
        (["--data", str(subset), "--out", str(tmp_path / "o")], "--images and --sam must be given"),
        (["--data", str(subset), "--images", str(tmp_path / "no-images"), "--sam", str(sam_dir),
          "--out", str(tmp_path / "o")], "image folder not found"),
        (["--data", str(subset), "--images", images, "--sam", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o")],
         "SAM checkpoint file not found"),
        (["--data", str(subset), "--images", images, "--sam", str(sam_dir), "--out", str(tmp_path / "o"),
          "--clip", "openai/clip-vit-base-patch16"], "--clip and --memory-out go with --memories"),
    ]
    for argv, message in cases:
        assert main(["extract-tokens", *argv, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err
    out = tmp_path / "cache"
    base = ["extract-tokens", "--data", str(subset), "--images", images, "--sam", str(sam_dir), "--out", str(out),
            "--no-progress"]
    assert main(base) == 0
    capsys.readouterr()
    assert main([*base, "--token-place", "hypernet_mlp"]) == 2  # never overwrites another backbone's cache
    err = capsys.readouterr().err
    assert "already holds a cache made with other settings" in err and "backbone.token_place" in err
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"datasets": [{"name": "d", "annotations": str(subset), "images": images}]}))
    assert main(["extract-tokens", "--data", str(config)]) == 2
    assert "datasets d: no token_cache" in capsys.readouterr().err
