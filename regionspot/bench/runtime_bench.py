"""The parts of ``regionspot bench predict`` about compute and runtimes, measured in the same run:

* this machine's fp32 matmul peak (a square matmul, 2 n^3 FLOP), and each image encoder's GFLOP
  per image (counted by ``torch.utils.flop_counter``) with the GFLOP/s it achieves, as a share of
  that peak;
* the same model exported to ONNX (:mod:`regionspot.model.onnx_export`) and run in onnxruntime
  through the same predictor: both encoders and ``predict`` at each box count, masks off and on.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

if TYPE_CHECKING:
    from regionspot.model.regionspot import RegionSpot
    from regionspot.predictor import RegionPredictor

Timer = Callable[[Callable[[], object], int], float]


def matmul_peak_gflops(timer: Timer, repeats: int, size: int = 2048, device: torch.device | None = None) -> float:
    """GFLOP/s of one ``size`` x ``size`` fp32 matmul (2 size^3 FLOP) on ``device``."""
    a, b = (torch.randn(size, size, device=device) for _ in range(2))
    milliseconds = timer(lambda: a @ b, repeats)
    return 2 * size**3 / (milliseconds / 1000) / 1e9


def forward_gflop(run: Callable[[], object]) -> float:
    """GFLOP of the PyTorch operations ``run`` performs (matmuls and convolutions, as torch counts:
    2 FLOP per multiply-accumulate, so twice the "GFLOPs" papers quote as MACs)."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        run()
    return counter.get_total_flops() / 1e9


def encoder_compute(model: RegionSpot, image: np.ndarray, encode_ms: dict[str, float], timer: Timer,
                    repeats: int) -> dict[str, Any]:
    """The matmul peak and, per image encoder (``sam``, ``clip``), GFLOP per image, achieved
    GFLOP/s (from ``encode_ms``, measured by the caller) and its share of the peak."""
    assert model.image_encoder is not None
    clip = model.image_encoder
    peak = matmul_peak_gflops(timer, repeats, device=model.device)
    flops = {"sam": forward_gflop(lambda: model.region_tokenizer.encode_image(image)),
             "clip": forward_gflop(lambda: clip.encode_image(clip.preprocess(image)[None].to(model.device)))}
    encoders = {name: {"gflop": gflop, "ms": encode_ms[name], "gflops": gflop / (encode_ms[name] / 1000),
                       "of_peak": gflop / (encode_ms[name] / 1000) / peak} for name, gflop in flops.items()}
    return {"matmul_peak_gflops": peak, "encoders": encoders}


def time_onnx(model: RegionSpot, image: np.ndarray, box_counts: Sequence[int], vocabulary: list[str],
              repeats: int, timer: Timer, boxes_for: Callable[[int], np.ndarray],
              progress: Callable[[str], None]) -> dict[str, Any]:
    """Export ``model`` to ONNX in a temporary folder and time it in onnxruntime as the caller
    times PyTorch: both encoders (ms), then ``predict`` at each box count without and with masks."""
    from regionspot.model.onnx_export import export_onnx
    from regionspot.model.onnx_runtime import load_onnx_model

    with tempfile.TemporaryDirectory(prefix="regionspot-bench-onnx-") as folder:
        progress("exporting to ONNX ...")
        export_onnx(model, folder)
        onnx_model = load_onnx_model(folder, text_embedder=model.text_embedder)
        clip = onnx_model.image_encoder
        assert clip is not None  # the bench model has CLIP vision
        progress("timing onnxruntime ...")
        result: dict[str, Any] = {
            "sam_image_encode_ms": timer(lambda: onnx_model.region_tokenizer.encode_image(image), repeats),
            "clip_image_encode_ms": timer(lambda: clip.encode_image(clip.preprocess(image)[None]), repeats),
            "regions": []}
        predictor = onnx_model.predictor()
        predictor.set_image(image)
        result["regions"] = time_predict(predictor, box_counts, vocabulary, repeats, timer, boxes_for)
    return result


def time_predict(predictor: RegionPredictor, box_counts: Sequence[int], vocabulary: list[str], repeats: int,
                 timer: Timer, boxes_for: Callable[[int], np.ndarray],
                 progress: Callable[[str], None] | None = None) -> list[dict[str, float]]:
    """``predict`` on the predictor's image at each box count, without and with masks (ms): one
    row per count, the same for either runtime."""
    rows = []
    for count in box_counts:
        if progress is not None:
            progress(f"timing {count} region(s) ...")
        boxes = boxes_for(count)
        total = timer(partial(predictor.predict, boxes, vocabulary, with_masks=False), repeats)
        with_masks = timer(partial(predictor.predict, boxes, vocabulary, with_masks=True), repeats)
        rows.append({"boxes": count, "total_ms": total, "per_region_ms": total / count,
                     "total_with_masks_ms": with_masks})
    return rows


def runtime_lines(compute: dict[str, Any], onnx: dict[str, Any], torch_regions: list[dict[str, float]],
                  encode_ms: dict[str, float]) -> list[str]:
    """The table's lines for :func:`encoder_compute` and :func:`time_onnx` (each may be empty)."""
    lines: list[str] = []
    if compute:
        lines += ["", f"fp32 matmul peak (2048 x 2048): {compute['matmul_peak_gflops']:.1f} GFLOP/s"]
        for name, row in compute["encoders"].items():
            lines.append(f"  {name.upper():<5} encoder: {row['gflop']:.1f} GFLOP per image, {row['gflops']:.1f} "
                         f"GFLOP/s = {row['of_peak']:.2f} of the peak")
    if onnx:
        lines += ["", "onnxruntime beside PyTorch (same model, same predictor; ms):",
                  f"{'part':<22} {'PyTorch':>9} {'onnxruntime':>12}",
                  f"{'SAM image encoder':<22} {encode_ms['sam']:>9.1f} {onnx['sam_image_encode_ms']:>12.1f}",
                  f"{'CLIP image memory':<22} {encode_ms['clip']:>9.1f} {onnx['clip_image_encode_ms']:>12.1f}"]
        for ours, theirs in zip(torch_regions, onnx["regions"], strict=True):
            count = int(ours["boxes"])
            lines.append(f"{f'predict, {count} boxes':<22} {ours['total_ms']:>9.1f} {theirs['total_ms']:>12.1f}")
            lines.append(f"{'  with masks':<22} {ours['total_with_masks_ms']:>9.1f} "
                         f"{theirs['total_with_masks_ms']:>12.1f}")
    return lines
