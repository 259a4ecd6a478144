"""Images split across processes and merged back in order; ``regionspot eval`` under a
2-process gloo ``torchrun`` gives the numbers and detections of one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from regionspot.eval.sharding import interleave, map_sharded, shard_indices
from regionspot.processes import DistributedContext


def test_shards_cover_every_item_once_and_merge_in_order() -> None:
    for count in range(8):
        for world in (1, 2, 3):
            shards = [shard_indices(count, rank, world) for rank in range(world)]
            assert sorted(i for shard in shards for i in shard) == list(range(count))
            assert interleave(shards) == list(range(count))
    with pytest.raises(ValueError, match="rank 2"):
        shard_indices(5, 2, 2)
    with pytest.raises(ValueError, match="missing"):
        interleave([[0, 2], []])


def test_single_process_map_keeps_order() -> None:
    assert map_sharded(list("abc"), str.upper, DistributedContext(), progress=False) == ["A", "B", "C"]


def _launch(args: list[str], nproc: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    launcher = [sys.executable, "-m", "regionspot"] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "regionspot"]
    return subprocess.Popen([*launcher, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


@pytest.mark.slow
def test_two_process_eval_equals_one_process(finish_run, coco_sample, mobile_sam_checkpoint, tiny_clip_dir,
                                             text_cache_dir, tmp_path) -> None:
    common = ["eval", "--data", str(coco_sample / "annotations.json"), "--untrained",
              "--sam", str(mobile_sam_checkpoint), "--clip", str(tiny_clip_dir), "--max-images", "3", "--masks",
              "--save-detections", "--no-progress",
              "--device", "cpu", "--examples", "3", "--set", f"text.cache_dir={text_cache_dir}"]
    finish_run(_launch([*common, "--out", str(tmp_path / "one")], nproc=1))
    output = finish_run(_launch([*common, "--out", str(tmp_path / "two")], nproc=2))
    assert output.count("wrote ") == 1, "only rank 0 writes"
    one, two = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("one", "two"))
    assert two["protocol"]["processes"] == 2 and one["protocol"]["processes"] == 1
    assert one["counts"] == two["counts"]
    for key in ("bbox", "segm"):
        for name, value in one[key]["metrics"].items():
            assert value == pytest.approx(two[key]["metrics"][name], abs=1e-6, nan_ok=True), (key, name)
    detections_one, detections_two = (json.loads((tmp_path / name / "results.json").read_text())
                                      for name in ("one", "two"))
    assert len(detections_one) == len(detections_two) > 0
    for a, b in zip(detections_one, detections_two, strict=True):
        assert (a["image_id"], a["category_id"], a["bbox"]) == (b["image_id"], b["category_id"], b["bbox"])
        assert a["score"] == pytest.approx(b["score"], abs=1e-5) and a["segmentation"] == b["segmentation"]
    assert len(list((tmp_path / "two" / "examples").glob("*.png"))) == 3  # examples from both ranks
