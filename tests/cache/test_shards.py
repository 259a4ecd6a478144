"""The generic sharded store: atomic writes, resume, integrity checks on read, kill -9 safety."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from regionspot import fileio
from regionspot.cache import shards
from regionspot.cache.filling import fill_shards, plan_shards
from regionspot.cache.shards import (
    CacheError,
    ShardReader,
    meta_differences,
    open_for_writing,
    shard_file_name,
)

META = {"format": "test", "backbone": {"name": "a", "fingerprint": "f1"}, "options": {"flips": [False, True]}}
ITEMS = list(range(10, 17))  # 7 "images" with ids 10..16


def compute(items, tick):
    tensors = {}
    for item in items:
        tensors[f"{item}/x"] = torch.full((item % 3 + 1, 4), float(item))
        tick()
    return tensors


def fill(folder: Path, meta=META, size: int = 3, stop: int | None = None, calls: list | None = None):
    def counted(items, tick):
        if calls is not None:
            calls.append(list(items))
        return compute(items, tick)

    writer = open_for_writing(folder, meta, num_shards=plan_shards(len(ITEMS), size), shard_size=size,
                              ignore=("backbone.name",))
    return fill_shards(writer, ITEMS, lambda item: item, counted, progress=False, stop_after_shards=stop)


def test_round_trip_and_manifest(tmp_path: Path) -> None:
    stats = fill(tmp_path)
    assert (stats.shards_total, stats.shards_computed, stats.shards_skipped) == (3, 3, 0)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["meta"] == META and manifest["num_shards"] == 3 and manifest["shard_size"] == 3
    assert [manifest["shards"][str(i)]["image_ids"] for i in range(3)] == [[10, 11, 12], [13, 14, 15], [16]]
    for i in range(3):
        entry = manifest["shards"][str(i)]
        assert entry["file"] == shard_file_name(i)
        assert entry["sha256"] == shards.sha256_bytes((tmp_path / entry["file"]).read_bytes())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"] + [shard_file_name(i) for i in range(3)]
    reader = ShardReader(tmp_path)
    reader.require_complete()
    tensors, index = reader.tensors_of(14)
    assert index == 1 and torch.equal(tensors["14/x"], torch.full((3, 4), 14.0))
    with pytest.raises(KeyError, match="image 99"):
        reader.tensors_of(99)


def test_resume_recomputes_only_missing_and_damaged_shards(tmp_path: Path) -> None:
    calls: list = []
    stats = fill(tmp_path, stop=1, calls=calls)
    assert stats.stopped and stats.shards_computed == 1 and calls == [[10, 11, 12]]
    with pytest.raises(CacheError, match=r"unfinished: 2 of 3 shards are missing"):
        ShardReader(tmp_path).require_complete()
    calls.clear()
    stats = fill(tmp_path, meta={**META, "backbone": {"name": "other path", "fingerprint": "f1"}}, calls=calls)
    assert (stats.shards_skipped, stats.shards_computed) == (1, 2) and calls == [[13, 14, 15], [16]]
    path = tmp_path / shard_file_name(1)
    path.write_bytes(path.read_bytes()[:-5])  # damaged: recomputed on the next run, the others kept
    calls.clear()
    stats = fill(tmp_path, calls=calls)
    assert (stats.shards_skipped, stats.shards_computed) == (2, 1) and calls == [[13, 14, 15]]
    ShardReader(tmp_path).tensors_of(13)


def test_a_folder_of_other_settings_is_never_overwritten(tmp_path: Path) -> None:
    fill(tmp_path)
    before = (tmp_path / "manifest.json").read_text()
    other = {**META, "backbone": {"name": "a", "fingerprint": "f2"}}
    with pytest.raises(CacheError, match=r"backbone.fingerprint: cache has 'f1', now 'f2'"):
        fill(tmp_path, meta=other)
    with pytest.raises(CacheError, match=r"shard_size: cache has 3, now 2"):
        fill(tmp_path, size=2)
    assert (tmp_path / "manifest.json").read_text() == before


def test_a_non_empty_folder_without_a_cache_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CacheError, match=r"is not empty \(notes.txt\) but holds no cache"):
        fill(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_meta_differences_lists_dotted_keys() -> None:
    a = {"x": {"y": 1, "z": (1, 2)}, "w": "p"}
    b = {"x": {"y": 2, "z": [1, 2]}, "w": "q", "new": True}
    assert meta_differences(a, b, ignore=("w",)) == ["new: cache has '<absent>', now True",
                                                     "x.y: cache has 1, now 2"]


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_a_damaged_shard_is_refused_naming_it(tmp_path: Path, damage: str) -> None:
    fill(tmp_path)
    path = tmp_path / shard_file_name(2)
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        path.unlink()
    reader = ShardReader(tmp_path)
    reader.tensors_of(10)  # other shards stay readable
    expected = "missing" if damage == "delete" else "corrupt"
    with pytest.raises(CacheError, match=rf"{shard_file_name(2)} is {expected}.*re-run `regionspot extract-tokens`"):
        reader.tensors_of(16)


def test_a_shard_whose_bytes_do_not_parse_is_refused(tmp_path: Path) -> None:
    fill(tmp_path)
    garbage = b"not a safetensors file"
    (tmp_path / shard_file_name(0)).write_bytes(garbage)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["shards"]["0"]["sha256"] = shards.sha256_bytes(garbage)  # hash fits, content does not
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CacheError, match=rf"{shard_file_name(0)} cannot be read.*delete"):
        ShardReader(tmp_path).tensors_of(10)


def test_bad_or_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(CacheError, match=r"manifest\.json is missing"):
        ShardReader(tmp_path)
    (tmp_path / "manifest.json").write_text("{ half")
    with pytest.raises(CacheError, match="not a valid regionspot cache manifest"):
        ShardReader(tmp_path)


def test_lru_keeps_a_few_shards_and_pickles_without_them(tmp_path: Path) -> None:
    fill(tmp_path)
    reader = ShardReader(tmp_path, max_open=2)
    for image_id in (10, 13, 16):
        reader.tensors_of(image_id)
    assert list(reader._open) == [1, 2]
    reader.tensors_of(13)
    assert list(reader._open) == [2, 1]
    clone = pickle.loads(pickle.dumps(reader))
    assert not clone._open and torch.equal(clone.tensors_of(16)[0]["16/x"], reader.tensors_of(16)[0]["16/x"])


def test_death_between_shard_and_manifest_leaves_a_valid_cache(tmp_path: Path, monkeypatch) -> None:
    fill(tmp_path, stop=1)
    real_replace = os.replace

    def die_on_manifest(src, dst):
        if str(dst).endswith("manifest.json"):
            raise KeyboardInterrupt  # killed after the shard file landed, before the manifest
        real_replace(src, dst)

    monkeypatch.setattr(fileio.os, "replace", die_on_manifest)
    with pytest.raises(KeyboardInterrupt):
        fill(tmp_path)
    monkeypatch.undo()
    assert (tmp_path / shard_file_name(1)).exists()
    assert ShardReader(tmp_path).missing == [1, 2]  # the manifest still tells the old, true state
    stats = fill(tmp_path)
    assert (stats.shards_skipped, stats.shards_computed) == (1, 2)
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


CHILD = """
import sys, torch
from pathlib import Path
from regionspot.cache.filling import fill_shards
from regionspot.cache.shards import open_for_writing
items = list(range(100000))
writer = open_for_writing(Path(sys.argv[1]), {"format": "kill-test"}, num_shards=len(items) // 4, shard_size=4)
fill_shards(writer, items, lambda i: i, lambda chunk, tick: {f"{i}/x": torch.randn(64, 256) for i in chunk},
            progress=False)
"""


def test_sigkill_at_any_moment_leaves_a_valid_resumable_cache(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            manifest = tmp_path / "manifest.json"
            if manifest.exists() and len(json.loads(manifest.read_text())["shards"]) >= 3:
                break
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    reader = ShardReader(tmp_path)
    finished = sorted(int(k) for k in reader.manifest["shards"])
    assert len(finished) >= 3 and finished == list(range(len(finished)))
    for index in finished:  # every recorded shard verifies
        assert len(reader.load(index)) == 4
    writer = open_for_writing(tmp_path, {"format": "kill-test"}, num_shards=reader.num_shards, shard_size=4)
    assert writer.finished() == set(finished)
