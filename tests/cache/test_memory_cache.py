"""CLIP memory cache on a tiny random CLIP: memories equal the encoder's, resume, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import CLIPModel

from regionspot.backbones.clip_vision import ClipVisionMemory, tiny_clip_config
from regionspot.cache.memory_cache import MemoryCache, MemoryCacheError, clip_fingerprint, extract_memories
from regionspot.cache.shards import CacheError, shard_file_name
from regionspot.cache.token_cache import TokenCache
from regionspot.datasets.coco_format import CocoDataset

IMAGE_IDS = (25, 30, 34)


def tiny_clip(seed: int = 0, **kwargs) -> ClipVisionMemory:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(tiny_clip_config())
    return ClipVisionMemory.from_clip_model(model, name=f"tiny-clip-{seed}", **kwargs)


@pytest.fixture(scope="module")
def dataset(coco_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> CocoDataset:
    document = json.loads((coco_sample / "annotations.json").read_text())
    document["images"] = [i for i in document["images"] if i["id"] in IMAGE_IDS]
    document["annotations"] = [a for a in document["annotations"] if a["image_id"] in IMAGE_IDS]
    path = tmp_path_factory.mktemp("annotations") / "subset.json"
    path.write_text(json.dumps(document))
    return CocoDataset(path, coco_sample / "images", name="subset")


@pytest.fixture(scope="module")
def encoder() -> ClipVisionMemory:
    return tiny_clip(0)


@pytest.fixture(scope="module")
def cache_dir(dataset: CocoDataset, encoder: ClipVisionMemory, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("memories")
    extract_memories(dataset, encoder, folder, shard_size=2, progress=False)
    return folder


def test_cached_memory_equals_the_encoder_memory(cache_dir: Path, dataset: CocoDataset,
                                                 encoder: ClipVisionMemory) -> None:
    cache = MemoryCache.open(cache_dir, encoder, dataset=dataset)
    assert len(cache) == 3 and all(i in cache for i in IMAGE_IDS) and cache.width == 32
    for record in dataset.records:
        expected = encoder.encode_image(encoder.preprocess(dataset.load_image(record))[None])[0]
        memory = cache.memory(record.image_id)
        assert memory.dtype == torch.float32 and memory.shape == (17, 32)  # 16 patches + class token
        torch.testing.assert_close(memory, expected, rtol=2e-3, atol=2e-3)


def test_same_weights_same_fingerprint_other_weights_or_size_not(encoder: ClipVisionMemory,
                                                                 tiny_clip_dir: Path) -> None:
    fingerprint = clip_fingerprint(encoder)
    assert clip_fingerprint(ClipVisionMemory.from_pretrained(str(tiny_clip_dir))) == fingerprint
    assert clip_fingerprint(tiny_clip(1)) != fingerprint
    assert clip_fingerprint(tiny_clip(0, image_size=48)) != fingerprint
    assert clip_fingerprint(tiny_clip(0, use_class_token=False)) != fingerprint


def test_a_cache_of_another_clip_is_refused(cache_dir: Path) -> None:
    with pytest.raises(MemoryCacheError, match=r"other CLIP weights: cache has 'tiny-clip-0' .*uses 'tiny-clip-1'"):
        MemoryCache.open(cache_dir, tiny_clip(1))
    with pytest.raises(MemoryCacheError, match=r"CLIP image_size 32, but the model uses 48"):
        MemoryCache.open(cache_dir, tiny_clip(0, image_size=48))
    manifest = json.loads((cache_dir / "manifest.json").read_text())
    manifest["meta"]["format"] = "regionspot-sam-tokens"
    fake = cache_dir.parent / "fake-token-cache"
    fake.mkdir(exist_ok=True)
    (fake / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MemoryCacheError, match=r"is a 'regionspot-sam-tokens' cache .*not a CLIP memory cache"):
        MemoryCache.open(fake)


def test_a_memory_cache_is_not_a_token_cache(cache_dir: Path) -> None:
    with pytest.raises(CacheError, match=r"is a 'regionspot-clip-memory' cache, not a SAM token cache"):
        TokenCache.open(cache_dir)


def test_resume_unfinished_and_corrupt(dataset: CocoDataset, encoder: ClipVisionMemory, tmp_path: Path,
                                       monkeypatch) -> None:
    calls: list[int] = []
    real = encoder.encode_image
    monkeypatch.setattr(encoder, "encode_image", lambda pixels: calls.append(len(pixels)) or real(pixels))
    extract_memories(dataset, encoder, tmp_path, shard_size=1, progress=False, stop_after_shards=2)
    with pytest.raises(CacheError, match=r"memory cache .* unfinished: 1 of 3 shards"):
        MemoryCache.open(tmp_path, encoder, dataset=dataset)
    assert calls == [1, 1]
    calls.clear()
    stats = extract_memories(dataset, encoder, tmp_path, shard_size=1, progress=False).extract_stats
    assert (stats.shards_skipped, stats.shards_computed) == (2, 1) and calls == [1]
    path = tmp_path / shard_file_name(0)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(CacheError, match=rf"{shard_file_name(0)} is corrupt"):
        MemoryCache.open(tmp_path, encoder, dataset=dataset).memory(IMAGE_IDS[0])
