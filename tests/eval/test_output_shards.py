"""Outputs written to per-process shards and read back on rank 0: item order and bit-exact
numbers, the same metrics as outputs held in memory, never all detections held at once, and a
missing or short shard is one clear error."""

from __future__ import annotations

import dataclasses
import errno
import gc
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from regionspot.bench.eval_memory_bench import synthetic_detections
from regionspot.cli.main import main
from regionspot.config import ConfigError
from regionspot.eval import image_run, output_shards
from regionspot.eval.config import EvalConfig, ProtocolConfig
from regionspot.eval.image_run import ImageOutput
from regionspot.eval.output_shards import (
    ShardError,
    ShardWriter,
    read_outputs,
    run_fingerprint,
    shard_folder,
    shard_path,
)
from regionspot.eval.runner import evaluate_outputs, load_dataset, run_evaluation
from regionspot.fileio import _umask, atomic_text_file
from regionspot.processes import DistributedContext

IMAGES = 24
PER_IMAGE = 30


@pytest.fixture(scope="module")
def dataset(coco_sample: Path) -> Any:
    return load_dataset(EvalConfig(annotations=str(coco_sample / "annotations.json"), max_images=IMAGES))


@pytest.fixture(scope="module")
def outputs(dataset: Any) -> list[ImageOutput]:
    """``PER_IMAGE`` synthetic detections per image, half near its annotated objects."""
    rng = np.random.default_rng(0)
    by_image: dict[int, list[dict[str, Any]]] = {}
    for annotation in dataset.document["annotations"]:
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    images = {image["id"]: {**image, "neg_category_ids": []} for image in dataset.document["images"]}
    made = []
    for job in dataset.jobs:
        detections = synthetic_detections(images[job.image_id], by_image.get(job.image_id, []), PER_IMAGE, rng)
        for detection in detections:
            detection["score"] = float(rng.uniform())  # full float64 bits, not rounded
        made.append(ImageOutput(job.image_id, detections, boxes=PER_IMAGE, seconds=float(rng.uniform())))
    return made


def write_as_ranks(outputs: list[ImageOutput], folder: Path, world: int) -> None:
    """The shards ``world`` processes write: item i by rank i % world."""
    for rank in range(world):
        with ShardWriter(folder, DistributedContext(rank=rank, world_size=world)) as writer:
            for output in outputs[rank::world]:
                writer.write(output)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_shards_read_back_in_item_order_to_the_bit(outputs, tmp_path: Path, world: int) -> None:
    write_as_ranks(outputs, tmp_path, world)
    back = list(read_outputs(tmp_path, world, len(outputs)))
    assert [o.image_id for o in back] == [o.image_id for o in outputs]
    for got, made in zip(back, outputs, strict=True):
        assert got.detections == made.detections and got.seconds == made.seconds  # float == float: same bits
        assert (got.boxes, got.skipped_boxes, got.document) == (made.boxes, made.skipped_boxes, made.document)


def test_metrics_from_shards_equal_metrics_from_memory(dataset, outputs, tmp_path: Path) -> None:
    config = EvalConfig(annotations=str(dataset.annotations))
    write_as_ranks(outputs, tmp_path, 2)
    in_memory, _, tally_memory = evaluate_outputs(dataset, outputs, config)
    streamed, _, tally_streamed = evaluate_outputs(dataset, read_outputs(tmp_path, 2, len(outputs)), config)
    assert json.dumps(streamed, sort_keys=True) == json.dumps(in_memory, sort_keys=True)  # NaN-safe, exact
    assert tally_streamed == tally_memory and tally_memory.detections == IMAGES * PER_IMAGE
    assert 0.0 < in_memory["bbox"]["metrics"]["AP"] < 1.0


def live_detections() -> int:
    """COCO result dicts alive in this process."""
    return sum(1 for thing in gc.get_objects() if type(thing) is dict and "category_id" in thing and "score" in thing)


def test_rank_0_never_holds_all_detections(dataset, outputs, tmp_path: Path) -> None:
    """Evaluating from the shards, the detections alive at any moment are a few images' worth;
    the evaluator keeps arrays, not the dicts. Held all at once, they would all be alive."""
    write_as_ranks(outputs, tmp_path, 2)
    del outputs  # this test's own reference; the module fixture still holds its copy
    baseline = live_detections()  # the fixture's
    peak = [0]

    def watched(stream: Iterator[ImageOutput]) -> Iterator[ImageOutput]:
        for output in stream:
            yield output
            peak[0] = max(peak[0], live_detections() - baseline)

    _, evaluators, tally = evaluate_outputs(dataset, watched(read_outputs(tmp_path, 2, IMAGES)),
                                            EvalConfig(annotations=str(dataset.annotations)))
    assert tally.detections == IMAGES * PER_IMAGE
    assert 0 < peak[0] <= 3 * PER_IMAGE, peak[0]  # the image being evaluated, its copy, the one before
    assert evaluators["bbox"].detections_held == IMAGES * PER_IMAGE  # as arrays


def test_a_missing_or_short_shard_is_one_clear_error(outputs, tmp_path: Path) -> None:
    write_as_ranks(outputs[:5], tmp_path, 2)
    with pytest.raises(ShardError, match=r"ends after 2 images; item 5 is missing"):
        list(read_outputs(tmp_path, 2, 6))
    shard_path(tmp_path, 1, 2).unlink()
    with pytest.raises(ShardError, match=r"rank-1-of-2.jsonl not found: .* need --out on a filesystem they all share"):
        list(read_outputs(tmp_path, 2, 5))


def test_the_shard_folder_is_removed_unless_a_resumable_run_fails(tmp_path: Path) -> None:
    ctx = DistributedContext()
    with shard_folder(ctx) as folder:  # no --out: a temporary folder
        assert folder.is_dir()
    assert not folder.exists()
    with shard_folder(ctx, tmp_path / "out" / "shards") as folder:
        assert folder == tmp_path / "out" / "shards" and folder.is_dir()
    assert not folder.exists()  # the run succeeded
    with pytest.raises(KeyError), shard_folder(ctx, tmp_path / "out" / "shards") as folder:
        raise KeyError("a failed run")
    assert folder.is_dir()  # kept: the run started again continues from it
    with pytest.raises(KeyError), shard_folder(ctx) as folder:
        raise KeyError("a failed run without --out")
    assert not folder.exists()


# ----------------------------------------------------------------------------- a stopped run continues
def counting_images(monkeypatch: pytest.MonkeyPatch, stop_after: int | None = None) -> list[int]:
    """Count the images the run computes (and stop it, as a kill would, after ``stop_after``)."""
    seen: list[int] = []
    original = image_run.process_images  # the real one, however often this is patched

    def process(jobs, images, setup):  # type: ignore[no-untyped-def]
        if stop_after is not None and len(seen) >= stop_after:
            raise KeyboardInterrupt
        seen.extend(job.image_id for job in jobs)
        return original(jobs, images, setup)

    monkeypatch.setattr(output_shards, "process_images", process)
    return seen


def test_a_stopped_evaluation_continues_where_it_stopped(tiny_model, coco_sample: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    config = EvalConfig(annotations=str(coco_sample / "annotations.json"), max_images=4, examples=3,
                        save_detections=True)
    whole = run_evaluation(config, out=tmp_path / "whole", model=tiny_model, progress=False)
    assert whole is not None and not (tmp_path / "whole" / "shards").exists()  # removed once the run is done

    out = tmp_path / "stopped"
    seen = counting_images(monkeypatch, stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        run_evaluation(config, out=out, model=tiny_model, progress=False)
    assert len(seen) == 2 and (out / "shards").is_dir()  # kept for the next run
    with open(out / "shards" / "outputs.rank-0-of-1.jsonl", "a") as shard:
        shard.write('{"image_id": 7, "detec')  # a line cut short by a kill

    seen = counting_images(monkeypatch)
    again = run_evaluation(config, out=out, model=tiny_model, progress=False)
    assert again is not None and len(seen) == 2  # only the images the stopped run had not done
    for key in ("bbox", "counts"):
        assert json.dumps(again.document[key], sort_keys=True) == json.dumps(whole.document[key], sort_keys=True)
    assert (out / "results.json").read_bytes() == (tmp_path / "whole" / "results.json").read_bytes()
    assert len(list((out / "examples").glob("*.png"))) == 3  # the first 2 drawn from the saved pictures
    assert not (out / "shards").exists()


def test_a_shard_of_another_run_is_started_afresh(tiny_model, coco_sample: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    config = EvalConfig(annotations=str(coco_sample / "annotations.json"), max_images=4, examples=0)
    counting_images(monkeypatch, stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        run_evaluation(config, out=tmp_path, model=tiny_model, progress=False)
    seen = counting_images(monkeypatch)
    changed = dataclasses.replace(config, protocol=ProtocolConfig(pairs_per_box=1))  # other outputs
    assert run_evaluation(changed, out=tmp_path, model=tiny_model, progress=False) is not None
    assert len(seen) == 4


class FullDisk:
    """A file whose writes fail as on a full disk."""

    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def close(self) -> None:
        pass


def test_a_full_disk_is_one_clear_error(outputs, tmp_path: Path) -> None:
    writer = ShardWriter(tmp_path, DistributedContext())
    writer._file = FullDisk()  # type: ignore[assignment]
    with pytest.raises(ShardError, match=r"cannot write .*outputs.rank-0-of-1.jsonl: No space left on device; "
                                         r"free some disk space"):
        writer.write(outputs[0])
    assert issubclass(ShardError, ConfigError)  # the command line reports it in one line


def test_eval_reports_a_shard_folder_it_cannot_make_in_one_line(coco_sample: Path, tiny_sam_dir: Path,
                                                                 tiny_clip_dir: Path, text_cache_dir: Path,
                                                                 tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "shards").write_text("a file where the shard folder goes")
    assert main(["eval", "--data", str(coco_sample / "annotations.json"), "--max-images", "1", "--untrained",
                 "--sam", str(tiny_sam_dir), "--clip", str(tiny_clip_dir), "--set",
                 f"text.cache_dir={text_cache_dir}", "--no-progress", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"error: cannot write {out / 'shards'}" in err


# ----------------------------------------------------------------------------- what resumes, what does not
def test_the_fingerprint_covers_what_decides_the_outputs(tiny_model, dataset, tmp_path: Path) -> None:
    config = EvalConfig(annotations=str(dataset.annotations), max_images=IMAGES)
    jobs = [dataclasses.replace(job) for job in dataset.jobs]

    def fingerprint(**changes: Any) -> str | None:
        given = {"config": config, "jobs": jobs, "vocabulary": dataset.vocabulary,
                 "category_ids": dataset.category_ids, **changes}
        return run_fingerprint(given["config"], given["jobs"], given["vocabulary"], given["category_ids"],
                               tiny_model, 2)

    first = fingerprint()
    assert first is not None and fingerprint() == first
    assert fingerprint(config=dataclasses.replace(config, image_workers=3)) == first  # how, not what
    assert fingerprint(vocabulary=["cat", *dataset.vocabulary[1:]]) != first  # a names file edited
    assert fingerprint(config=dataclasses.replace(config, protocol=ProtocolConfig(pairs_per_box=1))) != first
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jobs[0].path.read_bytes())
    jobs[0] = dataclasses.replace(jobs[0], path=photo)
    before = fingerprint()
    os.utime(photo, ns=(1, 1))  # the photo replaced by another
    assert fingerprint() != before
    assert run_fingerprint(config, jobs, dataset.vocabulary, dataset.category_ids, object(), 2) is None


def test_a_shard_resumes_on_a_whole_batch_and_another_runs_shard_is_refused(outputs, tmp_path: Path) -> None:
    with ShardWriter(tmp_path, DistributedContext(), "this run") as writer:
        for output in outputs[:3]:
            writer.write(output)
    again = ShardWriter(tmp_path, DistributedContext(), "this run", multiple=2)  # batches of 2 images
    assert again.resumed == 2  # the third image is redone with the fourth, as a run that never stopped
    again.close()
    assert [o.image_id for o in read_outputs(tmp_path, 1, 2, "this run")] == [o.image_id for o in outputs[:2]]
    with pytest.raises(ShardError, match="holds another run's outputs"):
        list(read_outputs(tmp_path, 1, 2, "another run"))
    assert ShardWriter(tmp_path, DistributedContext(), "another run").resumed == 0


def test_pairs_of_one_box_share_its_mask_in_a_shard(tmp_path: Path) -> None:
    rle = {"size": [4, 4], "counts": "a long RLE string"}
    detections = [{"image_id": 1, "category_id": c, "bbox": [0, 0, 2, 2], "score": 0.5, "segmentation": rle}
                  for c in range(5)]
    record = output_shards.output_record(ImageOutput(1, detections))
    assert record["masks"] == [rle] and json.dumps(record).count("a long RLE string") == 1
    back = output_shards.output_from_record(json.loads(json.dumps(record)))
    assert back.detections == detections and len({id(d["segmentation"]) for d in back.detections}) == 1


def test_a_full_disk_when_the_shard_closes_is_one_clear_error(outputs, tmp_path: Path) -> None:
    class FullOnClose(FullDisk):
        def close(self) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    writer = ShardWriter(tmp_path, DistributedContext())
    writer._file.close()
    writer._file = FullOnClose()  # type: ignore[assignment]
    writer.__exit__(ShardError, ShardError("the first error"), None)  # leaving with an error: that one is told
    with pytest.raises(ShardError, match="No space left on device"):
        writer.__exit__(None, None, None)  # the end of a with-block that went well


def test_a_finished_run_removes_only_its_own_files(outputs, tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    with shard_folder(DistributedContext(), folder):
        (folder / "notes.txt").write_text("the user's")
        write_as_ranks(outputs[:2], folder, 1)
    assert sorted(path.name for path in folder.iterdir()) == ["notes.txt"]


def test_written_outputs_are_readable_by_the_users_group(tmp_path: Path) -> None:
    with atomic_text_file(tmp_path / "results.json") as handle:
        handle.write("[]")
    assert (tmp_path / "results.json").stat().st_mode & 0o044 == 0o044 & ~_umask()
