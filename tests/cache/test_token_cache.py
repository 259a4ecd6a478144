"""SAM token cache on a tiny random SamModel (and once on the real MobileSAM): tokens equal the
tokenizer's for the original and the flipped image, resume, refusal of corrupt, unfinished and
mismatched caches."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from transformers import SamConfig, SamMaskDecoderConfig, SamModel, SamPromptEncoderConfig, SamVisionConfig

from regionspot.backbones.sam import build_region_tokenizer, region_tokenizer_from_sam_model
from regionspot.backbones.sam_convert import hf_to_original
from regionspot.cache.shards import CacheError, shard_file_name
from regionspot.cache.token_cache import (
    TokenCache,
    TokenCacheError,
    extract_tokens,
    sam_expectation,
    sam_fingerprint,
)
from regionspot.config import SamBackboneConfig
from regionspot.datasets.coco_format import CocoDataset

SUBSET = (25, 30, 34)  # 2 + 2 + 1 boxes


def tiny_sam_model(seed: int = 0) -> SamModel:
    """A random SamModel with a tiny image encoder at 256 px input (16x16 embedding grid) and the
    real-size prompt encoder and mask decoder: fast, yet every code path of the real thing."""
    torch.manual_seed(seed)
    vision = SamVisionConfig(image_size=256, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             global_attn_indexes=[1], mlp_dim=64)
    prompt = SamPromptEncoderConfig(image_size=256, image_embedding_size=16)
    model = SamModel(SamConfig(vision_config=vision, prompt_encoder_config=prompt,
                               mask_decoder_config=SamMaskDecoderConfig(layer_norm_eps=1e-5)))
    with torch.no_grad():
        model.shared_image_embedding.positional_embedding.normal_(0, 1)
    return model.eval()


@pytest.fixture(scope="module")
def sam_model() -> SamModel:
    return tiny_sam_model(0)


@pytest.fixture(scope="module")
def tokenizer(sam_model: SamModel):
    return region_tokenizer_from_sam_model(sam_model, "transformer", name_or_path="tiny-a")


@pytest.fixture(scope="module")
def dataset(coco_sample: Path, write_coco_subset, tmp_path_factory: pytest.TempPathFactory) -> CocoDataset:
    path = write_coco_subset(coco_sample, tmp_path_factory.mktemp("annotations") / "subset.json", SUBSET)
    return CocoDataset(path, coco_sample / "images", name="subset")


@pytest.fixture(scope="module")
def cache_dir(dataset: CocoDataset, tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tokens")
    extract_tokens(dataset, tokenizer, folder, shard_size=2, progress=False)
    return folder


def test_cached_tokens_equal_the_tokenizer_tokens(cache_dir: Path, dataset: CocoDataset, tokenizer) -> None:
    cache = TokenCache.open(cache_dir, tokenizer, dataset=dataset)
    assert cache.flips == (False, True) and cache.token_dim == 256 and len(cache) == 3
    assert all(i in cache for i in SUBSET) and 9 not in cache
    for record in dataset.records:
        image = dataset.load_image(record)
        boxes = torch.from_numpy(record.boxes)
        original = tokenizer.encode_regions(tokenizer.encode_image(image), boxes).tokens
        mirrored = np.asarray(ImageOps.mirror(Image.fromarray(image)))  # independent of the code under test
        mirrored_boxes = torch.stack([record.width - boxes[:, 2], boxes[:, 1], record.width - boxes[:, 0],
                                      boxes[:, 3]], dim=1)
        flipped = tokenizer.encode_regions(tokenizer.encode_image(mirrored), mirrored_boxes).tokens
        tokens, ids = cache.tokens(record.image_id, flipped=False)
        tokens_f, ids_f = cache.tokens(record.image_id, flipped=True)
        assert tokens.dtype == torch.float32 and tokens.shape == (len(record.boxes), 256)
        np.testing.assert_array_equal(ids, record.annotation_ids)
        np.testing.assert_array_equal(ids_f, record.annotation_ids)
        np.testing.assert_array_equal(cache.boxes(record.image_id), record.boxes)
        torch.testing.assert_close(tokens, original, rtol=2e-3, atol=2e-3)  # float16 storage
        torch.testing.assert_close(tokens_f, flipped, rtol=2e-3, atol=2e-3)
        assert not torch.allclose(tokens_f, original, atol=1e-2)  # the flip is not a no-op


def test_fingerprint_follows_weights_and_settings_not_paths(sam_model: SamModel, tokenizer, tmp_path: Path) -> None:
    sam_model.save_pretrained(tmp_path / "folder")
    torch.save(hf_to_original(sam_model.state_dict()), tmp_path / "sam.pth")
    fingerprint = sam_fingerprint(tokenizer)
    assert len(fingerprint) == 64
    for path in (tmp_path / "folder", tmp_path / "sam.pth"):
        assert sam_fingerprint(build_region_tokenizer(SamBackboneConfig(name_or_path=str(path)))) == fingerprint
    assert sam_fingerprint(region_tokenizer_from_sam_model(tiny_sam_model(1))) != fingerprint
    for place, multimask in (("hypernet_mlp", False), ("prompt_encoder", False), ("transformer", True)):
        assert sam_fingerprint(region_tokenizer_from_sam_model(sam_model, place, multimask)) != fingerprint


def test_resume_recomputes_only_missing_shards(dataset: CocoDataset, tokenizer, tmp_path: Path,
                                               count_encodes: Callable) -> None:
    calls = count_encodes(tokenizer)
    partial = extract_tokens(dataset, tokenizer, tmp_path, shard_size=1, progress=False, stop_after_shards=1)
    assert not partial.complete and partial.missing_shards == [1, 2]
    assert len(calls) == 2  # one image, two flip states
    with pytest.raises(CacheError, match=r"unfinished: 2 of 3 shards are missing.*re-run"):
        TokenCache.open(tmp_path, tokenizer, dataset=dataset)
    calls.clear()
    done = extract_tokens(dataset, tokenizer, tmp_path, shard_size=1, progress=False)
    stats = done.extract_stats
    assert (stats.shards_skipped, stats.shards_computed, stats.images_computed) == (1, 2, 2)
    record_sizes = [(r.height, r.width) for r in dataset.records[1:]]
    assert calls == [size for size in record_sizes for _ in range(2)]
    TokenCache.open(tmp_path, tokenizer, dataset=dataset).tokens(SUBSET[2], flipped=True)
    calls.clear()
    again = extract_tokens(dataset, tokenizer, tmp_path, shard_size=1, progress=False)
    assert calls == [] and again.extract_stats.shards_skipped == 3


def test_a_corrupt_shard_is_refused_then_repaired(dataset: CocoDataset, tokenizer, tmp_path: Path,
                                                  count_encodes: Callable) -> None:
    extract_tokens(dataset, tokenizer, tmp_path, shard_size=1, progress=False)
    flipped_byte, truncated = tmp_path / shard_file_name(1), tmp_path / shard_file_name(2)
    data = bytearray(flipped_byte.read_bytes())
    data[-100] ^= 0x55  # inside a tensor's bytes: the file still parses, only the hash can tell
    flipped_byte.write_bytes(bytes(data))
    truncated.write_bytes(truncated.read_bytes()[:300])
    cache = TokenCache.open(tmp_path, tokenizer, dataset=dataset)
    cache.tokens(SUBSET[0])  # shard 0 is fine
    for image_id, path in ((SUBSET[1], flipped_byte), (SUBSET[2], truncated)):
        with pytest.raises(CacheError, match=rf"{re.escape(str(path))} is corrupt.*delete {re.escape(str(path))} "
                                             r"and re-run `regionspot extract-tokens`"):
            cache.tokens(image_id)
    calls = count_encodes(tokenizer)
    stats = extract_tokens(dataset, tokenizer, tmp_path, shard_size=1, progress=False).extract_stats
    assert (stats.shards_skipped, stats.shards_computed) == (1, 2) and len(calls) == 4
    repaired = TokenCache.open(tmp_path, tokenizer, dataset=dataset)
    for image_id in SUBSET:
        repaired.tokens(image_id, flipped=True)


def test_a_cache_of_another_backbone_is_refused(cache_dir: Path, sam_model: SamModel) -> None:
    other_weights = region_tokenizer_from_sam_model(tiny_sam_model(1), name_or_path="tiny-b")
    with pytest.raises(TokenCacheError, match=r"other SAM weights: cache has sam 'tiny-a' \(fingerprint [0-9a-f]{12}\)"
                                              r", the model uses sam 'tiny-b'"):
        TokenCache.open(cache_dir, other_weights)
    other_place = region_tokenizer_from_sam_model(sam_model, "hypernet_mlp")
    with pytest.raises(TokenCacheError, match=r"SAM token_place 'transformer', but the model uses 'hypernet_mlp'"
                                              r".*--token-place hypernet_mlp"):
        TokenCache.open(cache_dir, other_place)
    with pytest.raises(TokenCacheError, match=r"SAM multimask False, but the model uses True"):
        TokenCache.open(cache_dir, region_tokenizer_from_sam_model(sam_model, "transformer", multimask=True))
    with pytest.raises(TokenCacheError, match=r"token_dim 256, but the model uses 32"):
        TokenCache.open(cache_dir, expected=sam_expectation("transformer", False, token_dim=32))
    TokenCache.open(cache_dir, expected=sam_expectation("transformer", False, token_dim=256))
    with pytest.raises(ValueError, match="unknown expected key"):
        TokenCache.open(cache_dir, expected={"colour": "blue"})


def test_a_cache_of_another_annotation_file_is_refused(cache_dir: Path, coco_sample: Path, write_coco_subset,
                                                       tmp_path: Path) -> None:
    other = CocoDataset(write_coco_subset(coco_sample, tmp_path / "subset.json", (25, 30)), coco_sample / "images")
    with pytest.raises(CacheError, match=r"made from another annotation file: cache has .*subset.json"):
        TokenCache.open(cache_dir, dataset=other)
    same_file = CocoDataset(_annotations_of(cache_dir), coco_sample / "images", min_box_size=200.0)
    with pytest.raises(CacheError, match=r"same annotation file but other kept boxes"):
        TokenCache.open(cache_dir, dataset=same_file)


def _annotations_of(cache_dir: Path) -> Path:
    return Path(json.loads((cache_dir / "manifest.json").read_text())["meta"]["dataset"]["annotations"])


def test_extracting_into_a_cache_of_other_settings_is_refused(cache_dir: Path, dataset: CocoDataset,
                                                              sam_model: SamModel) -> None:
    before = (cache_dir / "manifest.json").read_text()
    with pytest.raises(CacheError, match=r"backbone.token_place: cache has 'transformer', now 'prompt_encoder'"):
        extract_tokens(dataset, region_tokenizer_from_sam_model(sam_model, "prompt_encoder"), cache_dir,
                       shard_size=2, progress=False)
    with pytest.raises(CacheError, match=r"options.flips: cache has \[False, True\], now \[False\]"):
        extract_tokens(dataset, region_tokenizer_from_sam_model(sam_model), cache_dir, flips=(False,),
                       shard_size=2, progress=False)
    assert (cache_dir / "manifest.json").read_text() == before


def test_no_flip_cache_has_no_flipped_tokens(dataset: CocoDataset, tokenizer, tmp_path: Path) -> None:
    cache = extract_tokens(dataset, tokenizer, tmp_path, flips=(False,), shard_size=8, progress=False)
    assert cache.flips == (False,)
    assert cache.tokens(SUBSET[0])[0].shape == (2, 256)
    with pytest.raises(TokenCacheError, match="no flipped tokens"):
        cache.tokens(SUBSET[0], flipped=True)
    with pytest.raises(ValueError, match="flips must hold False"):
        extract_tokens(dataset, tokenizer, tmp_path / "x", flips=(True,), progress=False)


@pytest.mark.slow  # about 10 s: six MobileSAM image encodings on two CPU cores
def test_real_mobile_sam_end_to_end(mobile_sam_checkpoint: Path, coco_sample: Path, write_coco_subset,
                                    tmp_path: Path) -> None:
    dataset = CocoDataset(write_coco_subset(coco_sample, tmp_path / "subset.json", (30, 34)), coco_sample / "images")
    mobile = build_region_tokenizer(SamBackboneConfig(name_or_path=str(mobile_sam_checkpoint)))
    cache = extract_tokens(dataset, mobile, tmp_path / "cache", shard_size=1, progress=False)
    cache = TokenCache.open(tmp_path / "cache", mobile, dataset=dataset)
    assert cache.meta["backbone"]["family"] == "mobile_sam"
    record = dataset.records[1]
    image = dataset.load_image(record)
    boxes = torch.from_numpy(record.boxes)
    mirrored = np.ascontiguousarray(np.asarray(ImageOps.mirror(Image.fromarray(image))))
    mirrored_boxes = boxes[:, [2, 1, 0, 3]] * torch.tensor([-1.0, 1.0, -1.0, 1.0]) + torch.tensor(
        [record.width, 0.0, record.width, 0.0])
    for flipped, (picture, prompts) in enumerate(((image, boxes), (mirrored, mirrored_boxes))):
        expected = mobile.encode_regions(mobile.encode_image(picture), prompts, with_masks=False).tokens
        tokens, ids = cache.tokens(record.image_id, flipped=bool(flipped))
        np.testing.assert_array_equal(ids, record.annotation_ids)
        torch.testing.assert_close(tokens, expected, rtol=2e-3, atol=2e-3)
    with pytest.raises(TokenCacheError, match="image_input_size 1024, but the model uses 256"):
        TokenCache.open(tmp_path / "cache", region_tokenizer_from_sam_model(tiny_sam_model(0)))
