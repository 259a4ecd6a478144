"""A token cache filled in parts (``--part i/n``, or concurrent processes): the same shards, byte for
byte, and the same index as one process; a part killed mid-way redoes only its own unfinished
shards; readers see the whole cache only once every part has ended."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from regionspot.backbones.sam import build_region_tokenizer
from regionspot.cache.parts import Part, finished_in_job, job_eta_text, parse_part
from regionspot.cache.shards import CacheError, ShardReader
from regionspot.cache.token_cache import TokenCache, extract_tokens
from regionspot.config import ConfigError, SamBackboneConfig
from regionspot.datasets.coco_format import CocoDataset

IMAGES = (25, 30, 34, 36, 49)  # 5 photos, 1 per shard: 5 shards, 3 for part 1/2 and 2 for part 2/2


@pytest.fixture(scope="module")
def subset(coco_sample: Path, tmp_path_factory: pytest.TempPathFactory, write_coco_subset) -> Path:
    return write_coco_subset(coco_sample, tmp_path_factory.mktemp("parts") / "subset.json", IMAGES)


@pytest.fixture(scope="module")
def dataset(subset: Path, coco_sample: Path) -> CocoDataset:
    return CocoDataset(subset, coco_sample / "images")


@pytest.fixture(scope="module")
def tokenizer(tiny_sam_dir: Path):
    return build_region_tokenizer(SamBackboneConfig(name_or_path=str(tiny_sam_dir)))


@pytest.fixture(scope="module")
def whole(dataset: CocoDataset, tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cache made by one process."""
    folder = tmp_path_factory.mktemp("whole") / "cache"
    extract_tokens(dataset, tokenizer, folder, shard_size=1, progress=False)
    return folder


def same_cache(folder: Path, reference: Path) -> None:
    """Every shard file byte for byte, and the index of the shards, as the one-process cache."""
    shards = sorted(path.name for path in reference.glob("shard-*.safetensors"))
    assert sorted(path.name for path in folder.glob("shard-*.safetensors")) == shards
    for name in shards:
        assert (folder / name).read_bytes() == (reference / name).read_bytes(), name
    ours, theirs = (json.loads((path / "manifest.json").read_text()) for path in (folder, reference))
    assert ours["shards"] == theirs["shards"] and ours["meta"] == theirs["meta"]


def test_parts_run_one_after_the_other_make_the_one_process_cache(dataset, tokenizer, whole: Path,
                                                                  tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    first = extract_tokens(dataset, tokenizer, folder, shard_size=1, progress=False, part=Part(0, 2))
    assert first.extract_stats is not None and first.extract_stats.shards_total == 3  # shards 0, 2, 4
    assert first.extract_stats.missing_after_merge == [1, 3]
    with pytest.raises(CacheError, match="last part ends"):
        ShardReader(folder)  # no whole-cache index yet: readers cannot take a half cache for a whole one
    second = extract_tokens(dataset, tokenizer, folder, shard_size=1, progress=False, part=Part(1, 2))
    assert second.extract_stats is not None and second.extract_stats.missing_after_merge == []
    same_cache(folder, whole)
    TokenCache.open(folder, tokenizer).reader.require_complete()


def test_a_killed_part_redoes_only_its_own_unfinished_shards(dataset, tokenizer, whole: Path, tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    extract_tokens(dataset, tokenizer, folder, shard_size=1, progress=False, part=Part(1, 2))  # shards 1, 3
    stopped = extract_tokens(dataset, tokenizer, folder, shard_size=1, progress=False, part=Part(0, 2),
                             stop_after_shards=1)  # killed after shard 0
    assert stopped.extract_stats is not None and stopped.extract_stats.missing_after_merge == [2, 4]
    (folder / ".shard-00002.safetensors.abc.tmp").write_bytes(b"half")  # what a kill leaves behind
    (folder / ".shard-00001.safetensors.def.tmp").write_bytes(b"another part's")  # not this part's to delete
    again = extract_tokens(dataset, tokenizer, folder, shard_size=1, progress=False, part=Part(0, 2))
    stats = again.extract_stats
    assert stats is not None and (stats.shards_skipped, stats.shards_computed) == (1, 2)
    assert not (folder / ".shard-00002.safetensors.abc.tmp").exists()
    assert (folder / ".shard-00001.safetensors.def.tmp").exists()
    (folder / ".shard-00001.safetensors.def.tmp").unlink()
    same_cache(folder, whole)


def test_the_whole_jobs_progress_counts_every_parts_shards(dataset, tokenizer, tmp_path: Path, capsys) -> None:
    """Each part's bar also shows the split job's progress: shards finished by all parts, and an
    ETA from the rate at which all of them finish shards."""
    folder = tmp_path / "cache"
    extract_tokens(dataset, tokenizer, folder, shard_size=1, progress=False, part=Part(1, 2))  # shards 1, 3
    assert finished_in_job(folder, Part(0, 2)) == 2
    assert job_eta_text(folder, Part(0, 2), 5, at_start=2, seconds=0.0) == "job 2/5 shards"  # no rate yet
    extract_tokens(dataset, tokenizer, folder, shard_size=1, progress=True, part=Part(0, 2), stop_after_shards=1)
    assert "job 3/5 shards, ETA 0:00:" in capsys.readouterr().err  # shard 0 added to the other part's two
    assert job_eta_text(folder, Part(0, 2), 5, at_start=1, seconds=200.0) == "job 3/5 shards, ETA 0:03:20"
    (folder / Part(0, 2).manifest_name).write_text("{half a manif")  # unreadable: left out of this look
    assert finished_in_job(folder, Part(0, 2)) == 2


def test_one_process_finishes_what_parts_began(dataset, tokenizer, whole: Path, tmp_path: Path, capsys) -> None:
    """Part 1/2 alone, then a run in one process: it keeps part 1's shards (rebuilding the index
    from them) and makes the rest."""
    folder = tmp_path / "cache"
    extract_tokens(dataset, tokenizer, folder, shard_size=1, progress=False, part=Part(0, 2))
    rest = extract_tokens(dataset, tokenizer, folder, shard_size=1, progress=False)
    assert rest.extract_stats is not None and (rest.extract_stats.shards_skipped, rest.extract_stats.shards_computed) \
        == (3, 2)
    assert "rebuilt it from the shards" in capsys.readouterr().err
    same_cache(folder, whole)


@pytest.mark.slow
def test_concurrent_processes_fill_one_cache(subset: Path, coco_sample: Path, tiny_sam_dir: Path, whole: Path,
                                             tmp_path: Path) -> None:
    """Two ``extract-tokens --part`` processes at once on one folder (as a job array would)."""
    folder = tmp_path / "cache"
    processes = [subprocess.Popen([sys.executable, "-m", "regionspot", "extract-tokens", "--data", str(subset),
                                   "--images", str(coco_sample / "images"), "--sam", str(tiny_sam_dir), "--out",
                                   str(folder), "--shard-size", "1", "--no-flip", "--no-progress", "--part", part],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for part in ("1/2", "2/2")]
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    assert any("the cache is whole" in output for output in outputs), outputs
    assert all("of part" in output for output in outputs)
    reference = tmp_path / "one"
    assert subprocess.run([sys.executable, "-m", "regionspot", "extract-tokens", "--data", str(subset), "--images",
                           str(coco_sample / "images"), "--sam", str(tiny_sam_dir), "--out", str(reference),
                           "--shard-size", "1", "--no-flip", "--no-progress"], capture_output=True).returncode == 0
    same_cache(folder, reference)


@pytest.mark.parametrize(("text", "message"), [("3", "must be i/n"), ("0/2", "between 1 and n"),
                                               ("3/2", "between 1 and n"), ("a/b", "must be i/n")])
def test_bad_parts_are_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_part(text)
    assert parse_part("2/8") == Part(1, 8) and Part(1, 8).owns(9) and not Part(1, 8).owns(8)


@pytest.mark.slow  # torchrun's start-up: about 20 s here
def test_torchrun_ranks_are_the_parts(subset: Path, coco_sample: Path, tiny_sam_dir: Path, tmp_path: Path,
                                      finish_run) -> None:
    """``torchrun --nproc_per_node=2 -m regionspot extract-tokens ...``: each rank fills its part
    and the cache is the one-process cache."""
    import os

    common = ["extract-tokens", "--data", str(subset), "--images", str(coco_sample / "images"), "--sam",
              str(tiny_sam_dir), "--shard-size", "1", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                "-m", "regionspot", *common, "--out", str(tmp_path / "two")], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    output = finish_run(process)
    assert "of part 1/2" in output and "of part 2/2" in output and "the cache is whole" in output
    assert subprocess.run([sys.executable, "-m", "regionspot", *common, "--out", str(tmp_path / "one")],
                          capture_output=True).returncode == 0
    same_cache(tmp_path / "two", tmp_path / "one")
