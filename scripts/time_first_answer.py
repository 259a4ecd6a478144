"""Time the README's first command and the per-image cost of each recognizer on this machine.

No SAM or CLIP weights may be downloadable where this runs, so it builds SAM ViT-B and CLIP
ViT-B/16 of the real architectures with random weights (weight values do not change the time)
and the real CLIP tokenizer, saves them like Hub models, and times:
1. ``regionspot predict`` on docs/examples/kitchen.jpg with the COCO vocabulary, as the README's
   first command runs it (zero-shot recognizer), with an empty text-embedding cache (the first
   answer a new user waits for) and again with it filled;
2. ``set_image`` + ``predict`` in one process, for a RegionSpot head (BB shapes, untrained) and
   the zero-shot recognizers, at 4 and 20 boxes (median of 3).

Usage: python scripts/time_first_answer.py [--tokenizer ../shared/data/clip-tokenizer] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMAND = ["predict", "docs/examples/kitchen.jpg", "--boxes", "docs/examples/kitchen_boxes.json", "--vocab", "coco",
           "--no-progress"]


def build_backbones(work: Path, tokenizer: Path) -> tuple[Path, Path]:
    """Random-weight SAM ViT-B and CLIP ViT-B/16 (with the real CLIP tokenizer) saved in ``work``."""
    import torch
    from transformers import CLIPModel, CLIPTokenizer, SamConfig, SamModel

    from regionspot.backbones.clip_vision import clip_vit_b16_config

    sam, clip = work / "sam-vit-base", work / "clip-vit-base-patch16"
    if not sam.is_dir() or not clip.is_dir():
        torch.manual_seed(0)
        SamModel(SamConfig()).save_pretrained(sam)
        CLIPModel(clip_vit_b16_config()).save_pretrained(clip)
        CLIPTokenizer(str(tokenizer / "vocab.json"), str(tokenizer / "merges.txt"), model_max_length=77,
                      pad_token="<|endoftext|>").save_pretrained(clip)
    return sam, clip


def time_cli(sam: Path, clip: Path, cache: Path, out: Path) -> float:
    """Seconds of one ``regionspot predict`` process (start-up, loading, text embeddings, answer)."""
    env = {**os.environ, "REGIONSPOT_CACHE": str(cache)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "regionspot", *COMMAND, "--sam", str(sam), "--clip", str(clip),
                    "--out", str(out)], cwd=REPO, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def time_per_image(sam: Path, clip: Path) -> list[tuple[str, str, float, float]]:
    """(model, boxes, set_image s, predict s) medians for the head and the zero-shot recognizers."""
    import numpy as np

    from regionspot.model.loader import load
    from regionspot.model.zero_shot import ZeroShotCLIP
    from regionspot.ops.image import load_image
    from regionspot.vocab import builtin_vocabulary

    image = load_image(REPO / "docs/examples/kitchen.jpg")
    few = json.loads((REPO / "docs/examples/kitchen_boxes.json").read_text())["boxes"]
    rng = np.random.default_rng(0)
    sizes = rng.uniform(40, 300, (20, 2))
    corners = rng.uniform(0, 1, (20, 2)) * (np.array([640, 480]) - sizes)
    many = np.concatenate([corners, corners + sizes], axis=1)
    head = load(untrained=True, sam=str(sam), clip=str(clip), log=None)
    vocabulary = builtin_vocabulary("coco")
    rows = []
    for model in (head, ZeroShotCLIP.from_model(head), ZeroShotCLIP.from_model(head, "clip-crop")):
        model.text_embeddings(vocabulary)
        predictor = model.predictor()
        for label, boxes in (("4", few), ("20", many)):
            runs = []
            for _ in range(3):
                start = time.perf_counter()
                predictor.set_image(image)
                encoded = time.perf_counter()
                predictor.predict(boxes, vocabulary, with_masks=True)
                runs.append((encoded - start, time.perf_counter() - encoded))
            rows.append((model.method, label, statistics.median(r[0] for r in runs),
                         statistics.median(r[1] for r in runs)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", default=str(REPO.parent / "shared/data/clip-tokenizer"),
                        help="folder with CLIP's vocab.json and merges.txt")
    parser.add_argument("--work", default="bench-results/first-answer", help="folder for the saved backbones")
    args = parser.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    sam, clip = build_backbones(work, Path(args.tokenizer))
    cache = work / "regionspot-cache"
    subprocess.run(["rm", "-rf", str(cache)], check=True)
    cold = time_cli(sam, clip, cache, work / "cold.json")
    warm = time_cli(sam, clip, cache, work / "warm.json")
    print(f"README first command (zero-shot, COCO vocabulary): {cold:.1f} s with an empty text cache, "
          f"{warm:.1f} s with it filled")
    os.environ.update(REGIONSPOT_CACHE=str(cache), TQDM_DISABLE="1")  # the text cache the commands filled
    print(f"{'model':16} {'boxes':>5} {'set_image s':>12} {'predict s':>10} {'per image s':>12}")
    for method, boxes, encode, predict in time_per_image(sam, clip):
        print(f"{method:16} {boxes:>5} {encode:>12.2f} {predict:>10.2f} {encode + predict:>12.2f}")


if __name__ == "__main__":
    main()
