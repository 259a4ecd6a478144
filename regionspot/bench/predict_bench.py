"""``regionspot bench predict``: what one image and each extra region cost, measured here.

Set-up: MobileSAM (real weights) as the SAM side, a CLIP ViT-B/16 of the real architecture with
random weights as the vision side (timings do not depend on weight values), a fresh BB-shaped
head, and random unit text embeddings for the vocabulary (text encoding is cached per
vocabulary in real use and excluded here). Compared against classifying each box by cropping
it and running CLIP ViT-B/16 on the crop.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from regionspot.backbones.protocols import CROP_CLIP, REGIONSPOT_CLIP, PooledImageEncoder
from regionspot.backbones.sam_tokenizer import SamRegionTokenizer
from regionspot.bench.reference_mobile_sam import check_reference_checkout, time_reference_encoder
from regionspot.bench.runtime_bench import encoder_compute, runtime_lines, time_onnx, time_predict
from regionspot.config import (
    ClipBackboneConfig,
    ConfigError,
    FusionConfig,
    RegionSpotConfig,
    SamBackboneConfig,
    TextConfig,
)

if TYPE_CHECKING:
    from regionspot.model.regionspot import RegionSpot
    from regionspot.predictor import RegionPredictor


class RandomTextEmbedder:
    """Fixed random unit vectors per name (benchmarks only: the cost of scoring, not meaning)."""

    def __init__(self, embed_dim: int, seed: int = 0) -> None:
        self.embed_dim = embed_dim
        self.seed = seed

    def encode_text(self, names: Sequence[str]) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        vectors = torch.randn(len(names), self.embed_dim, generator=generator)
        return torch.nn.functional.normalize(vectors, dim=-1)

    def describe(self) -> dict[str, object]:
        return {"kind": "random_text", "embed_dim": self.embed_dim}


@dataclass
class PredictBenchResult:
    """All times in milliseconds (median over repeats)."""

    machine: dict[str, object]
    image_size: tuple[int, int]
    vocabulary_size: int
    sam_image_encode_ms: float
    clip_image_encode_ms: float
    regions: list[dict[str, float]] = field(default_factory=list)
    clip_crop_single_ms: float = 0.0
    clip_crop_batched_ms_per_crop: dict[int, float] = field(default_factory=dict)
    zero_shot: list[dict[str, float]] = field(default_factory=list)
    #: Pasting one region's mask back at image size, ms: ``paste_masks`` (what predict uses) and
    #: SAM's two full-size interpolations (``masks_to_image(...) > 0``), at the largest box count.
    mask_paste_ms_per_region: dict[str, float] = field(default_factory=dict)
    #: The matmul peak and the encoders' GFLOP, GFLOP/s and share of it (bench/runtime_bench.py).
    compute: dict[str, Any] = field(default_factory=dict)
    #: The same model in onnxruntime: encoders and predict per box count (empty when not run).
    onnx: dict[str, Any] = field(default_factory=dict)
    #: The MobileSAM authors' encoder beside ours on the same input (bench/reference_mobile_sam.py;
    #: empty when no checkout was given): ms each and the embeddings' largest difference.
    reference_mobile_sam: dict[str, float] = field(default_factory=dict)

    def marginal_region_ms(self) -> float:
        """Cost of each region beyond the first, from the 1-box and largest-box timings."""
        first, last = self.regions[0], self.regions[-1]
        return (last["total_ms"] - first["total_ms"]) / max(last["boxes"] - first["boxes"], 1)

    def to_json(self) -> dict[str, object]:
        document = asdict(self)
        document["marginal_region_ms"] = self.marginal_region_ms()
        document["marginal_region_over_clip_crop"] = self.marginal_region_ms() / self.clip_crop_single_ms
        document["target"] = "each additional region <= 0.05 x one CLIP ViT-B/16 crop forward"
        return document


def median_ms(run: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall milliseconds of ``run`` (GPU work waited for)."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def random_boxes(count: int, image_size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """``count`` xyxy boxes inside an (H, W) image, 5% to 60% of each side."""
    height, width = image_size
    rng = np.random.default_rng(seed)
    sizes = rng.uniform(0.05, 0.6, size=(count, 2)) * [width, height]
    corners = rng.uniform(0, 1, size=(count, 2)) * ([width, height] - sizes)
    return np.concatenate([corners, corners + sizes], axis=1)


def build_bench_model(sam_checkpoint: str | Path) -> RegionSpot:
    """MobileSAM + random-weight CLIP ViT-B/16 + random text + a fresh BB-shaped head."""
    from transformers import CLIPModel

    from regionspot.backbones.clip_vision import ClipVisionMemory, clip_vit_b16_config
    from regionspot.backbones.sam import build_region_tokenizer
    from regionspot.model.regionspot import RegionSpot

    torch.manual_seed(0)
    clip_model = CLIPModel(clip_vit_b16_config()).eval()
    sam_config = SamBackboneConfig(name_or_path=str(sam_checkpoint))
    region_tokenizer = build_region_tokenizer(sam_config)
    image_encoder = ClipVisionMemory.from_clip_model(clip_model, name="random CLIP ViT-B/16")
    text = RandomTextEmbedder(int(clip_model.config.projection_dim))
    fusion = FusionConfig(token_dim=region_tokenizer.token_dim, width=image_encoder.width, text_dim=text.embed_dim)
    config = RegionSpotConfig(sam=sam_config, clip=ClipBackboneConfig(name_or_path="random CLIP ViT-B/16"),
                              text=TextConfig(), fusion=fusion)
    return RegionSpot(config, region_tokenizer, image_encoder, text)


def crop_batch(image: np.ndarray, boxes: np.ndarray, preprocess: Callable[[np.ndarray], torch.Tensor]) -> torch.Tensor:
    """Each xyxy box cropped out of ``image`` and preprocessed for CLIP: [R, 3, S, S]."""
    crops = []
    for x1, y1, x2, y2 in boxes.round().astype(int):
        crops.append(preprocess(image[max(y1, 0):max(y2, y1 + 1), max(x1, 0):max(x2, x1 + 1)]))
    return torch.stack(crops)


def time_crops(encoder: PooledImageEncoder, image: np.ndarray, boxes: np.ndarray) -> torch.Tensor:
    """One CLIP-crop baseline forward: crop, preprocess and encode every box of ``image``."""
    return encoder.encode_pooled(crop_batch(image, boxes, encoder.preprocess))


def run_predict_bench(
    sam_checkpoint: str | Path,
    image: np.ndarray,
    box_counts: Sequence[int] = (1, 10, 50, 100),
    vocabulary_size: int = 1203,
    repeats: int = 3,
    progress: Callable[[str], None] = print,
    device: str = "cpu",
    model: RegionSpot | None = None,
    onnx: bool = False,
    mobile_sam_reference: str | Path | None = None,
) -> PredictBenchResult:
    """Time both towers' image encoding, the per-call cost at each box count (no masks: the
    recognition cost; masks pasting is reported separately), the CLIP-crop baseline and the
    zero-shot recognizer. ``model``: a RegionSpot from the loader (``--checkpoint``), else the
    random-weight real architecture of :func:`build_bench_model` on ``sam_checkpoint``. Also the
    encoders' GFLOP/s against the matmul peak, and with ``onnx`` (CPU only) the same model
    exported and run in onnxruntime (:mod:`regionspot.bench.runtime_bench`); with
    ``mobile_sam_reference`` (a checkout of the MobileSAM authors' code) their image encoder
    timed beside ours on ``sam_checkpoint`` (:mod:`regionspot.bench.reference_mobile_sam`)."""
    from regionspot.devices import choose_device

    if mobile_sam_reference is not None:  # checked before minutes of other timing, not after
        check_reference_checkout(mobile_sam_reference)
    target = choose_device(device)
    model = (model if model is not None else build_bench_model(sam_checkpoint)).to(target)
    if mobile_sam_reference is not None:
        if not isinstance(model.region_tokenizer, SamRegionTokenizer):
            raise ConfigError("--mobile-sam-reference compares PyTorch SAM encoders; this model's SAM is not one")
        reference_encoder = model.region_tokenizer.image_encoder
    memory_encoder = REGIONSPOT_CLIP.require(model.image_encoder)
    encoder = CROP_CLIP.require(model.image_encoder)
    predictor = model.predictor()
    size = (int(image.shape[0]), int(image.shape[1]))
    vocabulary = [f"category {i}" for i in range(vocabulary_size)]
    progress("timing image encoders ...")
    sam_ms = median_ms(lambda: model.region_tokenizer.encode_image(image), repeats)
    clip_ms = median_ms(lambda: memory_encoder.encode_image(memory_encoder.preprocess(image)[None]), repeats)
    predictor.set_image(image)
    predictor.predict(random_boxes(1, size), vocabulary)  # caches the vocabulary's text embeddings
    result = PredictBenchResult(machine=machine_info(target), image_size=size, vocabulary_size=vocabulary_size,
                                sam_image_encode_ms=sam_ms, clip_image_encode_ms=clip_ms)
    result.regions = time_predict(predictor, box_counts, vocabulary, repeats, median_ms,
                                  lambda count: random_boxes(count, size, seed=count), progress)
    result.mask_paste_ms_per_region = time_mask_paste(model, predictor, max(box_counts), size, repeats)
    progress("timing CLIP ViT-B/16 on crops ...")
    single = crop_batch(image, random_boxes(1, size), encoder.preprocess)
    result.clip_crop_single_ms = median_ms(lambda: encoder.encode_pooled(single), repeats)
    for count in box_counts:
        boxes = random_boxes(count, size, seed=count)
        crops_ms = median_ms(partial(time_crops, encoder, image, boxes), repeats)
        result.clip_crop_batched_ms_per_crop[count] = crops_ms / count
    result.zero_shot = time_zero_shot(model, image, box_counts, vocabulary, repeats, progress)
    progress("counting encoder FLOPs and timing the matmul peak ...")
    encode_ms = {"sam": sam_ms, "clip": clip_ms}
    result.compute = encoder_compute(model, image, encode_ms, median_ms, repeats)
    if mobile_sam_reference is not None:
        progress("timing the reference MobileSAM encoder beside ours ...")
        result.reference_mobile_sam = time_reference_encoder(
            reference_encoder, mobile_sam_reference, sam_checkpoint, image, median_ms, repeats)
    if onnx:
        result.onnx = time_onnx(model, image, box_counts, vocabulary, repeats, median_ms,
                                lambda count: random_boxes(count, size, seed=count), progress)
    return result


def time_mask_paste(model: RegionSpot, predictor: RegionPredictor, count: int, size: tuple[int, int],
                    repeats: int) -> dict[str, float]:
    """ms per region to paste ``count`` regions' masks at image size, fast and SAM's way."""
    assert predictor.encoded is not None
    embedding, tokenizer = predictor.encoded.sam, model.region_tokenizer
    boxes = torch.as_tensor(random_boxes(count, size, seed=count), dtype=torch.float32)
    logits = tokenizer.encode_regions(embedding, boxes).mask_logits
    assert logits is not None
    interpolate = getattr(tokenizer, "masks_to_image", None)
    timings = {"paste_masks": median_ms(lambda: tokenizer.paste_masks(embedding, logits), repeats) / count}
    if interpolate is not None:
        timings["sam_interpolation"] = median_ms(lambda: interpolate(embedding, logits) > 0, repeats) / count
    return timings


def time_zero_shot(model: RegionSpot, image: np.ndarray, box_counts: Sequence[int], vocabulary: list[str], repeats: int,
                   progress: Callable[[str], None]) -> list[dict[str, float]]:
    """The zero-shot recognizer (the default model: CLIP on SAM-mask crops) through the same
    predictor on the same towers: SAM encoding once per image, then per call SAM masks and one
    CLIP forward per crop. Milliseconds per image for each box count, masks off and on."""
    from regionspot.model.zero_shot import ZeroShotCLIP

    predictor = ZeroShotCLIP.from_model(model, "clip-mask-crop").predictor()
    size = (int(image.shape[0]), int(image.shape[1]))
    encode_ms = median_ms(lambda: predictor.set_image(image), repeats)
    rows = []
    for count in box_counts:
        progress(f"timing the zero-shot recognizer on {count} region(s) ...")
        boxes = random_boxes(count, size, seed=count)
        total = median_ms(partial(predictor.predict, boxes, vocabulary, with_masks=False), repeats)
        rows.append({"boxes": count, "set_image_ms": encode_ms, "predict_ms": total,
                     "per_image_ms": encode_ms + total})
    return rows


def machine_info(device: torch.device | None = None) -> dict[str, object]:
    device = device or torch.device("cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "device": name}


def format_table(result: PredictBenchResult) -> str:
    lines = [
        f"machine: {result.machine['platform']}, torch {result.machine['torch']}, "
        f"{result.machine['threads']} threads, image {result.image_size[1]}x{result.image_size[0]}, "
        f"vocabulary {result.vocabulary_size}",
        f"image encoding: MobileSAM {result.sam_image_encode_ms:.1f} ms, "
        f"CLIP ViT-B/16 {result.clip_image_encode_ms:.1f} ms (once per image)",
        "",
        f"{'boxes':>6} {'predict ms':>11} {'per region ms':>14} {'+masks ms':>10} {'CLIP crop ms/crop':>18}",
    ]
    for row in result.regions:
        crop = result.clip_crop_batched_ms_per_crop.get(int(row["boxes"]), float("nan"))
        lines.append(f"{int(row['boxes']):>6} {row['total_ms']:>11.1f} {row['per_region_ms']:>14.2f} "
                     f"{row['total_with_masks_ms']:>10.1f} {crop:>18.2f}")
    marginal = result.marginal_region_ms()
    ratio = marginal / result.clip_crop_single_ms
    lines += [
        "",
        f"each additional region: {marginal:.2f} ms; one CLIP ViT-B/16 crop forward: "
        f"{result.clip_crop_single_ms:.1f} ms; ratio {ratio:.3f} "
        f"({'meets' if ratio <= 0.05 else 'misses'} the <= 0.05 target)",
    ]
    paste = result.mask_paste_ms_per_region
    if paste:
        lines.append(f"masks: pasting one region's mask at image size {paste['paste_masks']:.2f} ms"
                     + (f" (SAM's two full-size interpolations: {paste['sam_interpolation']:.2f} ms)"
                        if "sam_interpolation" in paste else ""))
    if result.zero_shot:
        encode = result.sam_image_encode_ms + result.clip_image_encode_ms
        lines += ["", "per image, head vs zero-shot clip-mask-crop (set_image + predict, no masks in the output):",
                  f"{'boxes':>6} {'head ms':>10} {'zero-shot ms':>13}"]
        for row, zero in zip(result.regions, result.zero_shot, strict=True):
            lines.append(f"{int(row['boxes']):>6} {encode + row['total_ms']:>10.0f} {zero['per_image_ms']:>13.0f}")
    reference = result.reference_mobile_sam
    if reference:
        theirs, ours = reference["reference_ms"], reference["ours_ms"]
        lines += ["", f"reference MobileSAM encoder (the authors' code, same input): {theirs:.1f} ms; "
                      f"ours {ours:.1f} ms (median of {reference['repeats']:.0f} paired runs; ours "
                      f"{reference['ratio_median']:.2f}x as fast, {reference['ratio_min']:.2f}-"
                      f"{reference['ratio_max']:.2f}); embeddings differ by at most "
                      f"{reference['max_abs_difference']:.1e} (largest value {reference['max_abs_value']:.2f})"]
    encode_ms = {"sam": result.sam_image_encode_ms, "clip": result.clip_image_encode_ms}
    lines += runtime_lines(result.compute, result.onnx, result.regions, encode_ms)
    return "\n".join(lines)


def write_json(result: PredictBenchResult, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result.to_json(), indent=2) + "\n")
