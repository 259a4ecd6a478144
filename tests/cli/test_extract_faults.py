"""``regionspot extract-tokens`` on a full disk or into a read-only folder: one ``error:`` line
naming the file and why, exit status 2, no traceback, the finished shards kept, and the same
command afterwards finishing the cache exactly as an undisturbed run would have."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from regionspot.cache import shards
from regionspot.cli.main import main


@pytest.fixture(scope="module")
def subset(coco_sample: Path, write_coco_subset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_coco_subset(coco_sample, tmp_path_factory.mktemp("annotations") / "subset.json")


@pytest.fixture
def extract_argv(subset: Path, coco_sample: Path, tiny_sam_dir: Path) -> Callable[[Path], list[str]]:
    """``extract-tokens`` arguments writing the cache to a given folder, one image per shard."""
    def argv(out: Path) -> list[str]:
        return ["extract-tokens", "--data", str(subset), "--images", str(coco_sample / "images"),
                "--sam", str(tiny_sam_dir), "--out", str(out), "--shard-size", "1", "--no-progress"]
    return argv


def files_of(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_a_full_disk_mid_way_keeps_finished_shards_and_resumes_exactly(extract_argv, full_disk, assert_one_error_line,
                                                                       tmp_path: Path, monkeypatch, capsys) -> None:
    assert main(extract_argv(tmp_path / "reference")) == 0
    out = tmp_path / "cache"
    full_disk(shards, "atomic_write_bytes", shards.shard_file_name(1))
    assert main(extract_argv(out)) == 2
    assert_one_error_line(capsys.readouterr().err,
                          f"cannot write {out / shards.shard_file_name(1)}: No space left on device; free some disk "
                          f"space; the 1 finished shard(s) in {out} are kept: run the same command again to resume")
    assert sorted(files_of(out)) == ["manifest.json", shards.shard_file_name(0)]  # no temporary file left
    assert list(json.loads((out / "manifest.json").read_text())["shards"]) == ["0"]
    monkeypatch.undo()
    assert main(extract_argv(out)) == 0
    assert "3/3 shards (1 skipped, 2 computed)" in capsys.readouterr().out
    assert files_of(out) == files_of(tmp_path / "reference")


def test_a_full_disk_on_the_manifest_keeps_the_previous_one(extract_argv, full_disk, assert_one_error_line,
                                                           tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "cache"
    # the fresh manifest lands, the first update does not
    full_disk(shards, "atomic_write_bytes", "manifest.json", after=1)
    assert main(extract_argv(out)) == 2
    assert_one_error_line(capsys.readouterr().err,
                          f"cannot write {out / 'manifest.json'}: No space left on device; free some disk space; "
                          f"finished shards in {out} are kept: run the same command again to resume")
    assert json.loads((out / "manifest.json").read_text())["shards"] == {}  # still the last good manifest
    monkeypatch.undo()
    assert main(extract_argv(out)) == 0
    assert "3/3 shards (0 skipped, 3 computed)" in capsys.readouterr().out


@pytest.mark.slow
def test_a_read_only_folder_is_one_error_line(extract_argv, run_read_only, assert_one_error_line,
                                             tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    done = run_read_only(locked, *extract_argv(locked / "cache"))
    assert done.returncode == 2, done.stderr
    assert_one_error_line(done.stderr, f"cannot write {locked / 'cache'}: Permission denied; make {locked} writable "
                                       f"or choose another folder; finished shards in {locked / 'cache'} are kept: "
                                       "run the same command again to resume")
    assert list(locked.iterdir()) == []


@pytest.mark.slow  # a subprocess (~6 s); kept shards on a write error: the full-disk tests here
def test_a_read_only_unfinished_cache_keeps_its_shards(extract_argv, run_read_only, assert_one_error_line,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "cache"
    assert main(extract_argv(out)) == 0
    (out / shards.shard_file_name(2)).unlink()  # to be recomputed: the manifest must change
    before = files_of(out)
    done = run_read_only(out, *extract_argv(out))
    assert done.returncode == 2, done.stderr
    assert_one_error_line(done.stderr, f"cannot write {out / 'manifest.json'}: Permission denied; make {out} "
                                       f"writable or choose another folder; finished shards in {out} are kept: run "
                                       "the same command again to resume")
    assert files_of(out) == before
