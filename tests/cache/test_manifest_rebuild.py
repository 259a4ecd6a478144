"""A truncated, corrupt or lost token-cache manifest is rebuilt from the intact shards (each
records its own checksum and settings): one warning line, only the missing shards recomputed,
the result bit-identical to an undisturbed cache; shards of other settings are never overwritten."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from regionspot.backbones.sam import build_region_tokenizer
from regionspot.cache.shards import MANIFEST, CacheError, shard_file_name
from regionspot.cache.token_cache import TokenCache, extract_tokens
from regionspot.config import SamBackboneConfig
from regionspot.datasets.coco_format import CocoDataset

IMAGE_IDS = (25, 30, 34)


@pytest.fixture(scope="module")
def dataset(coco_sample: Path, write_coco_subset, tmp_path_factory: pytest.TempPathFactory) -> CocoDataset:
    path = write_coco_subset(coco_sample, tmp_path_factory.mktemp("annotations") / "subset.json", IMAGE_IDS)
    return CocoDataset(path, coco_sample / "images", name="subset")


@pytest.fixture(scope="module")
def tokenizer(tiny_sam_dir: Path):
    return build_region_tokenizer(SamBackboneConfig(name_or_path=str(tiny_sam_dir)))


@pytest.fixture(scope="module")
def reference(dataset: CocoDataset, tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An undisturbed cache, one image per shard."""
    folder = tmp_path_factory.mktemp("reference")
    extract_tokens(dataset, tokenizer, folder, shard_size=1, progress=False)
    return folder


@pytest.fixture
def encoded(tokenizer, count_encodes) -> list[tuple[int, int]]:
    """The (H, W) of every image the SAM image encoder runs on from now on."""
    return count_encodes(tokenizer)


def copy_cache(source: Path, target: Path) -> Path:
    target.mkdir()
    for path in source.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


def assert_same_cache(folder: Path, reference: Path, tokenizer, dataset: CocoDataset) -> None:
    """Byte-identical shards and manifest, and tokens that read back the same."""
    for path in reference.iterdir():
        assert (folder / path.name).read_bytes() == path.read_bytes(), f"{path.name} differs"
    cache, expected = TokenCache.open(folder, tokenizer, dataset=dataset), TokenCache.open(reference)
    for image_id in IMAGE_IDS:
        for flipped in (False, True):
            assert torch.equal(cache.tokens(image_id, flipped)[0], expected.tokens(image_id, flipped)[0])


def warnings_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning:")]


def test_a_truncated_manifest_is_rebuilt_and_only_missing_shards_computed(
        reference: Path, dataset: CocoDataset, tokenizer, encoded, tmp_path: Path, capsys) -> None:
    folder = copy_cache(reference, tmp_path / "cache")
    manifest = folder / MANIFEST
    manifest.write_bytes(manifest.read_bytes()[:200])  # as after a crash of the storage
    (folder / shard_file_name(2)).unlink()
    kept = {i: (folder / shard_file_name(i)).stat().st_mtime_ns for i in (0, 1)}
    with pytest.raises(CacheError, match=r"not a valid regionspot cache manifest.*rebuilds the manifest"):
        TokenCache.open(folder, tokenizer, dataset=dataset)  # readers say how to repair it
    stats = extract_tokens(dataset, tokenizer, folder, shard_size=1, progress=False).extract_stats
    assert stats is not None and (stats.shards_skipped, stats.shards_computed) == (2, 1)
    assert encoded == [(dataset.records[2].height, dataset.records[2].width)] * 2  # one image, both flips
    assert {i: (folder / shard_file_name(i)).stat().st_mtime_ns for i in (0, 1)} == kept  # recovered, not rewritten
    lines = warnings_of(capsys.readouterr().err)
    assert len(lines) == 1 and f"{manifest} was unusable" in lines[0]
    assert "rebuilt it from the shards: 2 of 3 shards recovered, 1 to compute" in lines[0]
    assert_same_cache(folder, reference, tokenizer, dataset)


def test_corrupt_manifest_and_unverifiable_shards(reference: Path, dataset: CocoDataset, tokenizer, encoded,
                                                  tmp_path: Path, capsys) -> None:
    folder = copy_cache(reference, tmp_path / "cache")
    (folder / MANIFEST).write_bytes(b"\x00\xff garbage \xfe")
    damaged = folder / shard_file_name(0)
    data = bytearray(damaged.read_bytes())
    data[-20] ^= 0x55  # a token's bytes: the file still parses, only its recorded digest can tell
    damaged.write_bytes(bytes(data))
    old_style = folder / shard_file_name(1)  # as written before shards recorded their own checksum
    save_file(load_file(old_style), old_style)
    extract_tokens(dataset, tokenizer, folder, shard_size=1, progress=False)
    assert len(encoded) == 4  # shards 0 and 1 recomputed (two flips each), shard 2 recovered
    lines = warnings_of(capsys.readouterr().err)
    assert len(lines) == 1 and "1 of 3 shards recovered, 2 to compute" in lines[0]
    assert "2 shard file(s) that could not be verified will be recomputed" in lines[0]
    assert_same_cache(folder, reference, tokenizer, dataset)


def test_a_lost_manifest_beside_shards_is_rebuilt(reference: Path, dataset: CocoDataset, tokenizer, encoded,
                                                  tmp_path: Path, capsys) -> None:
    folder = copy_cache(reference, tmp_path / "cache")
    (folder / MANIFEST).unlink()
    stats = extract_tokens(dataset, tokenizer, folder, shard_size=1, progress=False).extract_stats
    assert stats is not None and stats.shards_skipped == 3 and encoded == []
    assert "manifest.json is missing); rebuilt it from the shards: 3 of 3" in capsys.readouterr().err
    assert_same_cache(folder, reference, tokenizer, dataset)


def test_shards_of_other_settings_are_never_overwritten(reference: Path, dataset: CocoDataset, tmp_path: Path,
                                                        tiny_sam_dir: Path) -> None:
    folder = copy_cache(reference, tmp_path / "cache")
    (folder / MANIFEST).write_text('{"format": "regionspot-sha')
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    other = build_region_tokenizer(SamBackboneConfig(name_or_path=str(tiny_sam_dir), token_place="prompt_encoder"))
    with pytest.raises(CacheError, match=r"holds shards made with other settings.*shard-00000.safetensors"):
        extract_tokens(dataset, other, folder, shard_size=1, progress=False)
    with pytest.raises(CacheError, match="holds shards made with other settings or another shard size"):
        extract_tokens(dataset, build_region_tokenizer(SamBackboneConfig(name_or_path=str(tiny_sam_dir))), folder,
                       shard_size=2, progress=False)
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before


def test_a_manifest_of_another_store_version_is_refused_not_rebuilt(reference: Path, dataset: CocoDataset,
                                                                     tokenizer, tmp_path: Path) -> None:
    folder = copy_cache(reference, tmp_path / "cache")
    document = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**document, "version": 99}))
    with pytest.raises(CacheError, match="store version 99, this regionspot reads 1"):
        extract_tokens(dataset, tokenizer, folder, shard_size=1, progress=False)
    assert json.loads((folder / MANIFEST).read_text())["version"] == 99
