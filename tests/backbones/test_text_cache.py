"""Bounded text-embedding caches: LRU in memory, capped file on disk, rejected names never kept."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from regionspot.backbones.clip_text import ClipTextEmbedder, save_tiny_clip
from regionspot.backbones.text import build_text_embedder
from regionspot.backbones.text_cache import NameRowTable, TextEmbeddingDiskCache
from regionspot.config import ConfigError, TextConfig
from regionspot.vocab import MAX_NAME_CHARS, VocabularyError


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("tiny_clip_cache"), seed=0)


def test_name_table_drops_least_recently_used() -> None:
    table = NameRowTable(capacity=2)
    table.put_many({"a": torch.zeros(2), "b": torch.ones(2)})
    assert set(table.get_many(["a"])) == {"a"}  # "a" is now the most recent
    table.put_many({"c": torch.ones(2)})
    assert "b" not in table and "a" in table and "c" in table and len(table) == 2
    with pytest.raises(ValueError, match="at least one name"):
        NameRowTable(0)


def test_disk_cache_keeps_the_newest_and_the_used(tmp_path: Path) -> None:
    cache = TextEmbeddingDiskCache(tmp_path / "t.safetensors", capacity=3)
    cache.save({name: torch.full((2,), float(i)) for i, name in enumerate("abc")}, metadata={})
    cache.save({"d": torch.zeros(2)}, metadata={}, used=["a"])  # "a" was used: "b" is the oldest
    stored = cache.load()
    assert list(stored) == ["c", "a", "d"]
    torch.testing.assert_close(stored["a"], torch.zeros(2))
    torch.testing.assert_close(stored["c"], torch.full((2,), 2.0))


def test_embedder_caches_stay_bounded_and_rows_stay_right(tiny_folder: Path, tmp_path: Path) -> None:
    reference = ClipTextEmbedder.from_pretrained(str(tiny_folder), templates="single", cache_dir=tmp_path / "ref")
    bounded = ClipTextEmbedder.from_pretrained(str(tiny_folder), templates="single", cache_dir=tmp_path / "b",
                                               memory_names=3, disk_names=4, lru_size=1)
    names = [f"thing {i}" for i in range(10)]
    for start in range(0, 10, 2):
        pair = names[start:start + 2]
        torch.testing.assert_close(bounded.encode_text(pair), reference.encode_text(pair))
    assert len(bounded._table) == 3
    on_disk = TextEmbeddingDiskCache(bounded.cache_path).load()
    assert list(on_disk) == names[-4:]
    # a vocabulary larger than the memory table is still answered whole and right
    torch.testing.assert_close(bounded.encode_text(names), reference.encode_text(names))
    assert len(bounded._table) == 3 and len(TextEmbeddingDiskCache(bounded.cache_path).load()) == 4


def test_rejected_names_are_never_encoded_or_cached(tiny_folder: Path, tmp_path: Path) -> None:
    embedder = ClipTextEmbedder.from_pretrained(str(tiny_folder), templates="single", cache_dir=tmp_path)
    with pytest.raises(VocabularyError, match=f"at most {MAX_NAME_CHARS}"):
        embedder.encode_text(["new name", "x" * (MAX_NAME_CHARS + 1)])
    with pytest.raises(ValueError, match="empty after cleaning"):
        embedder.encode_text(["other new name", "_"])
    assert len(embedder._table) == 0 and not embedder.cache_path.exists()


def test_concurrent_vocabularies_get_their_own_rows(tiny_folder: Path, tmp_path: Path) -> None:
    reference = ClipTextEmbedder.from_pretrained(str(tiny_folder), templates="single", cache_dir=tmp_path / "ref")
    shared = ClipTextEmbedder.from_pretrained(str(tiny_folder), templates="single", cache_dir=tmp_path / "s",
                                              memory_names=5)
    vocabularies = [[f"word {i}", f"word {i + 1}", "cat"] for i in range(8)]
    results: dict[int, torch.Tensor] = {}

    def run(index: int) -> None:
        results[index] = shared.encode_text(vocabularies[index])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, names in enumerate(vocabularies):
        torch.testing.assert_close(results[index], reference.encode_text(names))


@pytest.mark.parametrize("key", ["memory_names", "disk_names"])
def test_cache_sizes_must_be_positive(tiny_folder: Path, key: str) -> None:
    with pytest.raises(ConfigError, match=f"text.{key} must be at least 1"):
        build_text_embedder(TextConfig(**{key: 0}), str(tiny_folder))
