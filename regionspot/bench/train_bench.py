"""``regionspot bench train``: training throughput (regions/s) and peak memory, measured here.

Three ways to feed the head, each measured in a fresh process (so peak memory is its own):
``online`` runs SAM and CLIP on every image of every step; ``tokens`` reads SAM tokens from a
cache and runs CLIP; ``tokens+memory`` reads both from caches. Backbones: MobileSAM (real
weights), a CLIP ViT-B/16 of the real architecture with random weights, a BB-shaped head and
random unit text embeddings for the dataset's names (weights do not change the time).
"""

from __future__ import annotations

import json
import multiprocessing
import resource
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

MODES = ("online", "tokens", "tokens+memory")
# The paper's training schedule (its implementation details; the authors' released configs set
# MAX_ITER 450000 and IMS_PER_BATCH 16 for each stage): two stages of 450k iterations of 16 images.
PAPER_IMAGES = 2 * 450_000 * 16
PAPER_GPU_HOURS = 200


@dataclass
class TrainBenchResult:
    machine: dict[str, object]
    batch_images: int
    modes: dict[str, dict[str, float]] = field(default_factory=dict)
    extraction_seconds_per_image: float = 0.0

    def speedup(self) -> float:
        return self.modes["tokens+memory"]["regions_per_s"] / self.modes["online"]["regions_per_s"]

    def to_json(self) -> dict[str, Any]:
        return {"machine": self.machine, "batch_images": self.batch_images, "modes": self.modes,
                "extraction_seconds_per_image": self.extraction_seconds_per_image,
                "cached_over_online": self.speedup(), "target": "cached >= 20x the regions/s of online",
                "paper_schedule_images": PAPER_IMAGES}


def _measure(mode: str, sam: str, annotations: str, images: str, caches: dict[str, str], batch: int,
             steps: int, queue: Any, workers: int = 0) -> None:
    """Child process: train ``steps`` steps (after one warm-up) in ``mode``, batches prepared by
    ``workers`` DataLoader workers (as the trainer's ``num_workers``); report to ``queue``."""
    from regionspot.bench.predict_bench import build_bench_model
    from regionspot.cache.memory_cache import MemoryCache
    from regionspot.cache.token_cache import TokenCache
    from regionspot.datasets.coco_format import CocoDataset
    from regionspot.prefetch import prefetched
    from regionspot.train.batches import DataSource, PreparedBatch, finish_batch, prepare_batch
    from regionspot.train.config import AugmentConfig, OptimConfig
    from regionspot.train.loss import sigmoid_focal_loss
    from regionspot.train.schedule import build_optimizer

    model = build_bench_model(sam)
    dataset = CocoDataset(annotations, images, name="bench")
    token_cache = TokenCache.open(caches["tokens"], model.region_tokenizer) if mode != "online" else None
    memory_cache = MemoryCache.open(caches["memory"], model.image_encoder) if mode == "tokens+memory" else None
    source = DataSource(dataset, None, token_cache, memory_cache)
    augment = None if memory_cache is not None else AugmentConfig(crop=False)
    optimizer = build_optimizer(model.fusion.named_parameters(), OptimConfig(lr=1e-5))
    text = model.text_embeddings(dataset.names)
    model.fusion.train()
    regions, started = 0, 0.0
    encoder = model.image_encoder
    assert encoder is not None  # the bench model has CLIP vision

    def prepare(step: int) -> PreparedBatch:
        indices = [(step * batch + i) % len(dataset) for i in range(batch)]
        return prepare_batch(source, indices, range(batch), seed=0, step=step, augment=augment, max_regions=100,
                             preprocess=encoder.preprocess, uses_memory=True)

    for step, prepared in prefetched(range(steps + 1), prepare, workers):
        if step == 1:
            regions, started = 0, time.perf_counter()
        data = finish_batch(prepared, model.region_tokenizer, encoder, torch.device("cpu"))
        embeddings, _ = model.fusion(data.tokens, data.memory, data.padding)
        valid = ~data.padding
        loss = sigmoid_focal_loss(model.fusion.logits(embeddings[valid], text[data.vocabulary]), data.targets[valid])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        regions += data.num_regions
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put({"regions_per_s": regions / seconds, "images_per_s": steps * batch / seconds,
               "seconds_per_step": seconds / steps, "regions": regions, "peak_rss_mib": peak_mib})


def build_caches(sam: str, annotations: str, images: str, folder: Path) -> float:
    """Token and memory caches for the bench images; returns extraction seconds per image."""
    from regionspot.backbones.protocols import REGIONSPOT_CLIP
    from regionspot.bench.predict_bench import build_bench_model
    from regionspot.cache.memory_cache import extract_memories
    from regionspot.cache.token_cache import extract_tokens
    from regionspot.datasets.coco_format import CocoDataset

    model = build_bench_model(sam)
    dataset = CocoDataset(annotations, images, name="bench")
    started = time.perf_counter()
    extract_tokens(dataset, model.region_tokenizer, folder / "tokens", flips=(False, True), progress=True)
    per_image = (time.perf_counter() - started) / len(dataset)
    extract_memories(dataset, REGIONSPOT_CLIP.require(model.image_encoder), folder / "memory", progress=True)
    return per_image


def subset_annotations(annotations: str, limit: int, out: Path) -> str:
    """The first ``limit`` images (with boxes) of a COCO-format file, written to ``out``."""
    document = json.loads(Path(annotations).read_text())
    annotated = {a["image_id"] for a in document["annotations"] if not a.get("iscrowd", 0)}
    keep = [image for image in document["images"] if image["id"] in annotated][:limit]
    ids = {image["id"] for image in keep}
    document["images"] = keep
    document["annotations"] = [a for a in document["annotations"] if a["image_id"] in ids]
    out.write_text(json.dumps(document))
    return str(out)


def run_train_bench(sam: str, annotations: str, images: str, *, limit: int = 16, batch: int = 4,
                    online_steps: int = 2, cached_steps: int = 20, work_dir: str | None = None,
                    workers: Sequence[int] = ()) -> TrainBenchResult:
    """Measure every mode in its own process (spawned, so peak memory is per mode) on the first
    ``limit`` images of ``annotations``; then the ``tokens`` mode (cached tokens, CLIP online:
    images every step) again with each count of ``workers`` preparing the batches."""
    from regionspot.bench.predict_bench import machine_info

    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        folder = Path(tmp)
        annotations = subset_annotations(annotations, limit, folder / "annotations.json")
        result = TrainBenchResult(machine=machine_info(), batch_images=batch)
        result.extraction_seconds_per_image = build_caches(sam, annotations, images, folder)
        caches = {"tokens": str(folder / "tokens"), "memory": str(folder / "memory")}
        context = multiprocessing.get_context("spawn")
        runs = [(mode, mode, 0) for mode in MODES] + [
            (f"tokens, {count} worker{'s' if count > 1 else ''}", "tokens", count) for count in workers if count]
        for name, mode, count in runs:
            queue = context.Queue()
            steps = online_steps if mode == "online" else cached_steps
            child = context.Process(target=_measure, args=(mode, sam, annotations, images, caches, batch, steps, queue,
                                                           count))
            child.start()
            result.modes[name] = _result_of(child, queue, name)
            child.join()
    return result


def _result_of(child: Any, queue: Any, name: str) -> dict[str, float]:
    """What ``child`` puts on ``queue``; RuntimeError (not a hang) when it dies without an answer."""
    import queue as queues

    while True:
        try:
            return queue.get(timeout=5)
        except queues.Empty:
            if not child.is_alive():
                raise RuntimeError(f"the {name!r} measurement process ended (exit code {child.exitcode}) "
                                   "without a result; its error is printed above") from None


def format_table(result: TrainBenchResult) -> str:
    lines = [f"machine: {result.machine['platform']}, torch {result.machine['torch']}, "
             f"{result.machine['threads']} threads; batch {result.batch_images} images; BB head, "
             "MobileSAM + CLIP ViT-B/16 (random weights)", "",
             f"{'mode':>18} {'regions/s':>10} {'images/s':>9} {'s/step':>8} {'peak RSS MiB':>13} "
             f"{'paper schedule, h':>18}"]
    for mode, row in result.modes.items():
        hours = PAPER_IMAGES / row["images_per_s"] / 3600
        lines.append(f"{mode:>18} {row['regions_per_s']:>10.1f} {row['images_per_s']:>9.2f} "
                     f"{row['seconds_per_step']:>8.2f} {row['peak_rss_mib']:>13.0f} {hours:>18,.0f}")
    lines += ["", f"cached (tokens+memory) vs online: {result.speedup():.1f}x regions/s (target >= 20x)",
              f"token extraction, one-off: {result.extraction_seconds_per_image:.2f} s per image (both flips)",
              f"paper schedule: {PAPER_IMAGES:,} images (2 stages x 450k steps x 16) at each rate, in hours on "
              f"this machine, plus extraction; the paper reports {PAPER_GPU_HOURS} V100-hours"]
    return "\n".join(lines)


def write_json(result: TrainBenchResult, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result.to_json(), indent=2) + "\n")
