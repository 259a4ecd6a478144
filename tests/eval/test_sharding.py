"""Images split across processes and merged back in order; ``regionspot eval`` under a
2-process gloo ``torchrun`` gives the numbers and detections of one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from regionspot.datasets.coco_format import DatasetError
from regionspot.eval.jobs import ImageJob
from regionspot.eval.sharding import run_sharded, shard_indices
from regionspot.ops.image import load_image
from regionspot.prefetch import prefetched
from regionspot.processes import DistributedContext


def test_shards_cover_every_item_once() -> None:
    for count in range(8):
        for world in (1, 2, 3):
            shards = [shard_indices(count, rank, world) for rank in range(world)]
            assert sorted(i for shard in shards for i in shard) == list(range(count))
    with pytest.raises(ValueError, match="rank 2"):
        shard_indices(5, 2, 2)


def test_single_process_map_keeps_order_in_batches() -> None:
    calls: list[list[str]] = []

    def join(items: list[str], loaded: list[str]) -> list[str]:
        calls.append(items)
        return [item + value for item, value in zip(items, loaded, strict=True)]

    for batch, expected_calls in ((1, [["a"], ["b"], ["c"]]), (2, [["a", "b"], ["c"]]), (5, [["a", "b", "c"]])):
        calls.clear()
        written: list[str] = []
        assert run_sharded(list("abc"), join, DistributedContext(), write=written.append, load=str.upper, batch=batch,
                           progress=False) == 3
        assert written == ["aA", "bB", "cC"] and calls == expected_calls
    with pytest.raises(ValueError, match="batch"):
        run_sharded(list("abc"), join, DistributedContext(), write=print, load=str.upper, batch=0)


def decode(job: ImageJob) -> np.ndarray:
    """A module-level loader (worker processes pickle it)."""
    return job.load()


def test_background_decoding_gives_the_same_images_in_order(coco_sample: Path) -> None:
    """Two DataLoader workers decode the photos ahead: the same arrays, in the same order, as
    decoding them in this process."""
    paths = sorted((coco_sample / "images").iterdir())[:5]
    jobs = [ImageJob(index, path.name, path, *load_image(path).shape[:2]) for index, path in enumerate(paths)]
    here = list(prefetched(jobs, decode, workers=0))
    ahead = list(prefetched(jobs, decode, workers=2))
    assert [index for index, _ in ahead] == [index for index, _ in here] == list(range(5))
    for (_, mine), (_, theirs) in zip(here, ahead, strict=True):
        assert isinstance(theirs, np.ndarray) and theirs.dtype == np.uint8  # passed as decoded, not as tensors
        np.testing.assert_array_equal(mine, theirs)


def test_a_worker_error_is_raised_as_itself(coco_sample: Path, tmp_path: Path) -> None:
    """A photo that does not match its annotation fails in a worker as the same one-line
    DatasetError a single process gives, when its turn comes."""
    good = sorted((coco_sample / "images").iterdir())[0]
    height, width = load_image(good).shape[:2]
    jobs = [ImageJob(0, good.name, good, height, width), ImageJob(1, good.name, good, height + 1, width)]
    loading = prefetched(jobs, decode, workers=2)
    assert next(loading)[0] == 0  # the good photo comes first
    with pytest.raises(DatasetError, match="but the annotation says"):
        next(loading)
    with pytest.raises(ValueError, match="workers"):
        list(prefetched(jobs, decode, workers=-1))


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


@pytest.mark.slow
def test_two_process_batch_prediction_equals_one_process(finish_run, coco_sample, tiny_sam_dir, tiny_clip_dir,
                                                         text_cache_dir, tmp_path) -> None:
    """predict-batch under a 2-process gloo torchrun: each rank writes its shard, rank 0 writes the
    one output from them; the same documents as one process, and no shard folder left behind."""
    common = ["predict-batch", "--data", str(coco_sample / "annotations.json"), "--untrained",
              "--sam", str(tiny_sam_dir), "--clip", str(tiny_clip_dir), "--max-images", "5", "--format", "json",
              "--no-progress", "--device", "cpu", "--set", f"text.cache_dir={text_cache_dir}"]
    finish_run(_launch([*common, "--out", str(tmp_path / "one" / "out.json")], nproc=1))
    finish_run(_launch([*common, "--out", str(tmp_path / "two" / "out.json")], nproc=2))
    one, two = (json.loads((tmp_path / name / "out.json").read_text()) for name in ("one", "two"))
    assert [d["image"]["id"] for d in one] == [d["image"]["id"] for d in two] and len(one) == 5
    for a, b in zip(one, two, strict=True):
        assert [r["box"] for r in a["regions"]] == [r["box"] for r in b["regions"]]
        assert [r["label"] for r in a["regions"]] == [r["label"] for r in b["regions"]]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["out.json"]


def failing_worker(rank: int, port: int, folder: str, photo: str) -> None:
    """Rank 1's images cannot be read; both ranks write what they ended with."""
    from regionspot.eval import output_shards
    from regionspot.eval.config import EvalConfig
    from regionspot.eval.image_run import ImageOutput
    from regionspot.processes import init_distributed, shutdown

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    output_shards.process_images = lambda jobs, images, setup: [ImageOutput(job.image_id) for job in jobs]
    ctx = init_distributed("cpu")
    jobs = [ImageJob(index, "photo.jpg", Path(photo if index % 2 == 0 else folder + "/missing.jpg"), 480, 640)
            for index in range(4)]
    try:
        output_shards.predict_into_shards(Path(folder), jobs, None, EvalConfig(), ctx,  # type: ignore[arg-type]
                                          fingerprint=None, progress=False, description="test")
        ended = "finished"
    except Exception as exc:  # noqa: BLE001 (what each rank ended with is the test's answer)
        ended = f"{type(exc).__name__}: {exc}"
    finally:
        shutdown(ctx)
    (Path(folder) / f"rank{rank}.txt").write_text(ended)


def test_a_failing_process_stops_the_others_with_its_error(coco_sample: Path, tmp_path: Path) -> None:
    """Rank 1 fails on its first image; rank 0, done with its own, does not wait for it until
    the timeout but ends with rank 1's error."""
    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    photo = sorted((coco_sample / "images").iterdir())[0]
    context = mp.spawn(failing_worker, args=(port, str(tmp_path), str(photo)), nprocs=2, join=False)
    deadline = time.monotonic() + 120
    while not context.join(timeout=5):
        assert time.monotonic() < deadline, "a process is still waiting"
    rank0, rank1 = ((tmp_path / f"rank{rank}.txt").read_text() for rank in (0, 1))
    assert rank1.startswith("ImageLoadError") and "missing.jpg" in rank1
    assert rank0.startswith("ShardError: process 1 of 2 failed: ") and "missing.jpg" in rank0
