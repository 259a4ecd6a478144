"""``regionspot extract-tokens --data CONFIG_OR_JSON --out CACHE``: the SAM token cache.

``--data`` is either a training config (YAML or JSON of a ``TrainConfig``: SAM settings come
from its ``model.sam`` unless given here, and every dataset is extracted, to its ``token_cache``
when set, else to ``--out/<dataset name>``; the eval dataset too when its ``token_cache`` is
set) or a COCO-format annotation JSON (then ``--images``, ``--sam`` and ``--out`` are needed and
``--out`` is the cache folder itself). Interrupted runs resume: run the same command again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from regionspot.cli.arguments import add_overrides_argument, add_progress_argument, positive_int
from regionspot.config import TOKEN_PLACES, ClipBackboneConfig, ConfigError, SamBackboneConfig

if TYPE_CHECKING:
    from regionspot.backbones.protocols import ImageMemoryEncoder, RegionTokenizer
    from regionspot.cache.filling import FillStats
    from regionspot.cache.parts import Part
    from regionspot.datasets.coco_format import CocoDataset

# an annotation JSON bigger than this is never a training config: do not parse it twice
CONFIG_MAX_BYTES = 8 << 20


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "extract-tokens", help="cache the SAM token of every annotated box (resumable)",
        description="Compute SAM's position-aware token of every annotated box once (original and "
                    "left-right flipped image) into a sharded, resumable, checked on-disk cache.",
    )
    parser.add_argument("--data", required=True,
                        help="training config (.yaml/.json TrainConfig) or a COCO-format annotation JSON")
    parser.add_argument("--images", help="image folder (needed with a COCO JSON)")
    parser.add_argument("--out", help="cache folder (COCO JSON), or the parent of one folder per dataset (config; "
                                      "datasets with token_cache set go there instead)")
    parser.add_argument("--sam", help="SAM weights: Hub id, save_pretrained folder or .pt checkpoint "
                                      "(default with a config: its model.sam.name_or_path)")
    parser.add_argument("--token-place", choices=TOKEN_PLACES, help="where the token is read (default: config's, "
                                                                     "else transformer)")
    parser.add_argument("--multimask", action=argparse.BooleanOptionalAction, default=None,
                        help="SAM multi-mask mode (default: config's, else off)")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                        help="also cache tokens of the flipped image (default: on; with a config, its augment.flip)")
    parser.add_argument("--shard-size", type=positive_int, default=32, help="images per shard")
    parser.add_argument("--memories", action="store_true",
                        help="also cache CLIP memories of the un-augmented images (augmentation-free runs only)")
    parser.add_argument("--clip", help="CLIP weights for --memories (default with a config: its model.clip)")
    parser.add_argument("--memory-out", help="memory cache folder with a COCO JSON (default: OUT-memories)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default: config's device, else auto")
    parser.add_argument("--part", metavar="I/N",
                        help="fill only part I of N of the shards (e.g. one task of a job array); run every part, "
                             "on any machines sharing the folder, and the cache is whole when the last one ends. "
                             "Under torchrun each rank is one part (default: the whole cache)")
    add_progress_argument(parser)
    add_overrides_argument(parser, help="training-config overrides (with a config as --data), "
                                        "e.g. --set datasets.0.images=/data/o365/train")
    parser.set_defaults(handler=run)


@dataclass(frozen=True)
class Job:
    """One dataset to extract: where its annotations/images are and where its caches go
    (``memory_out`` None: no CLIP memories)."""

    name: str
    annotations: str
    images: str
    token_out: Path
    memory_out: Path | None


@dataclass(frozen=True)
class Plan:
    jobs: list[Job]
    sam: SamBackboneConfig
    clip: ClipBackboneConfig | None
    flip: bool
    device: str


def is_coco_json(path: Path) -> bool:
    """True for a COCO-format annotation file, False for a training config."""
    if path.suffix.lower() in (".yaml", ".yml"):
        return False
    if path.stat().st_size > CONFIG_MAX_BYTES:
        return True
    try:
        data = json.loads(path.read_text())
    except (ValueError, RecursionError) as exc:  # bad JSON, text that is not UTF-8, a 5000-digit number
        raise ConfigError(f"--data {path}: not valid JSON ({exc})") from None
    return isinstance(data, dict) and "images" in data and "annotations" in data


def make_plan(args: argparse.Namespace) -> Plan:
    """What to extract, read off the arguments (no model is loaded here)."""
    data = Path(args.data)
    if not data.is_file():
        raise FileNotFoundError(f"--data file not found: {data}")
    if (args.clip or args.memory_out) and not args.memories:
        raise ConfigError("--clip and --memory-out go with --memories")
    plan = _plan_from_json(args, data) if is_coco_json(data) else _plan_from_config(args, data)
    writers: dict[Path, tuple[Job, str]] = {}
    for job in plan.jobs:
        for folder, kind in ((job.token_out, "tokens"), (job.memory_out, "memories")):
            if folder is None:
                continue
            other, other_kind = writers.setdefault(folder.resolve(), (job, kind))
            if (other.annotations, other.images, other_kind) != (job.annotations, job.images, kind):
                raise ConfigError(f"{other.name} {other_kind} and {job.name} {kind} would both be written to "
                                  f"{folder}; give each cache its own folder")
    return plan


def _plan_from_json(args: argparse.Namespace, data: Path) -> Plan:
    missing = [flag for flag, value in (("--images", args.images), ("--sam", args.sam), ("--out", args.out))
               if not value]
    if missing:
        raise ConfigError(f"with a COCO JSON as --data, {' and '.join(missing)} must be given")
    if args.overrides:
        raise ConfigError("--set applies to a training config, not to a COCO JSON")
    if args.memories and not args.clip:
        raise ConfigError("--memories with a COCO JSON needs --clip")
    memory_out = Path(args.memory_out) if args.memory_out else Path(f"{Path(args.out)}-memories")
    job = Job(data.stem, str(data), args.images, Path(args.out), memory_out if args.memories else None)
    sam = SamBackboneConfig(args.sam, args.token_place or "transformer", bool(args.multimask))
    clip = ClipBackboneConfig(name_or_path=args.clip) if args.memories else None
    return Plan([job], sam, clip, True if args.flip is None else args.flip, args.device or "auto")


def _plan_from_config(args: argparse.Namespace, data: Path) -> Plan:
    from regionspot.config import apply_overrides, load_config
    from regionspot.train.config import TrainConfig

    config = apply_overrides(load_config(TrainConfig, data), args.overrides)
    if args.images:
        raise ConfigError("--images applies to a COCO JSON; a config names each dataset's images")
    specs = list(config.datasets) + ([config.eval_dataset] if config.eval_dataset and
                                     config.eval_dataset.token_cache else [])
    if not specs:
        raise ConfigError(f"{data}: no datasets to extract")
    jobs = []
    for spec in specs:
        if not spec.token_cache and not args.out:
            raise ConfigError(f"datasets {spec.name}: no token_cache in {data}; give --out")
        token_out = Path(spec.token_cache) if spec.token_cache else Path(args.out) / spec.name
        memory_out = None
        if args.memories:
            if not spec.memory_cache and not args.out:
                raise ConfigError(f"datasets {spec.name}: no memory_cache in {data}; give --out")
            memory_out = Path(spec.memory_cache) if spec.memory_cache else Path(args.out) / f"{spec.name}-memories"
        jobs.append(Job(spec.name, spec.annotations, spec.images, token_out, memory_out))
    sam = config.model.sam
    sam = SamBackboneConfig(args.sam or sam.name_or_path, args.token_place or sam.token_place,
                            sam.multimask if args.multimask is None else args.multimask)
    for key in ("token_place", "multimask"):
        if getattr(sam, key) != getattr(config.model.sam, key):
            print(f"warning: SAM {key} {getattr(sam, key)!r} differs from the config's "
                  f"{getattr(config.model.sam, key)!r}: training with {data} will refuse this cache", file=sys.stderr)
    clip = None
    if args.memories:
        if not config.model.clip.enabled and not args.clip:
            raise ConfigError(f"--memories: {data} has no CLIP vision (model.clip.enabled is false)")
        clip = replace(config.model.clip, name_or_path=args.clip or config.model.clip.name_or_path, enabled=True)
        if config.augment.flip or config.augment.crop:
            print(f"warning: {data} augments (flip/crop); training refuses CLIP memory caches unless "
                  "augment.flip and augment.crop are false", file=sys.stderr)
    flip = config.augment.flip if args.flip is None else args.flip
    return Plan(jobs, sam, clip, flip, args.device or config.device)


def run(args: argparse.Namespace) -> int:
    from regionspot.backbones.sam import build_region_tokenizer
    from regionspot.cache.parts import parse_part, part_from_environment
    from regionspot.datasets.coco_format import CocoDataset

    plan = make_plan(args)
    part = parse_part(args.part) if args.part else part_from_environment()
    # the category names do not matter here (the records and their order do not depend on them)
    datasets = [CocoDataset(job.annotations, job.images, name=job.name) for job in plan.jobs]
    from regionspot.devices import choose_device

    device = choose_device(plan.device)
    tokenizer = build_region_tokenizer(plan.sam)
    _to_device(tokenizer, device)
    encoder = None
    if plan.clip is not None:
        from regionspot.backbones.clip_vision import build_image_memory_encoder

        encoder = build_image_memory_encoder(plan.clip)
        _to_device(encoder, device)
    started = time.perf_counter()
    current: Path | None = None
    done: set[Path] = set()  # datasets sharing a folder (e.g. train and eval) are extracted once
    try:
        for job, dataset in zip(plan.jobs, datasets, strict=True):
            if job.token_out.resolve() not in done:
                current = job.token_out
                _extract_tokens(job, dataset, tokenizer, plan, not args.no_progress, args.shard_size, part)
                done.add(job.token_out.resolve())
            if encoder is not None and job.memory_out is not None and job.memory_out.resolve() not in done:
                current = job.memory_out
                _extract_memories(job, dataset, encoder, not args.no_progress, args.shard_size, part)
                done.add(job.memory_out.resolve())
    except KeyboardInterrupt:
        print(f"\ninterrupted: the finished shards in {current} are kept; run the same command again to "
              "resume (finished shards are skipped)", file=sys.stderr)
        return 130
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


def _to_device(module: Any, device: Any) -> None:
    import torch

    if isinstance(module, torch.nn.Module):
        module.to(device)


def _extract_tokens(job: Job, dataset: CocoDataset, tokenizer: RegionTokenizer, plan: Plan, progress: bool,
                    shard_size: int, part: Part | None) -> None:
    from regionspot.cache.token_cache import extract_tokens

    flips = (False, True) if plan.flip else (False,)
    cache = extract_tokens(dataset, tokenizer, job.token_out, flips=flips, shard_size=shard_size, progress=progress,
                           part=part)
    print(summary_line(f"{job.name} SAM tokens", cache.meta["dataset"], cache.extract_stats, job.token_out,
                       f"flips {list(flips)}, {plan.sam.name_or_path}, {plan.sam.token_place}", part))


def _extract_memories(job: Job, dataset: CocoDataset, encoder: ImageMemoryEncoder, progress: bool,
                      shard_size: int, part: Part | None) -> None:
    from regionspot.cache.memory_cache import extract_memories

    assert job.memory_out is not None
    cache = extract_memories(dataset, encoder, job.memory_out, shard_size=shard_size, progress=progress, part=part)
    print(summary_line(f"{job.name} CLIP memories", cache.meta["dataset"], cache.extract_stats, job.memory_out,
                       "un-augmented images only", part))


def summary_line(what: str, dataset_meta: Mapping[str, Any], stats: FillStats | None, folder: Path,
                 note: str, part: Part | None = None) -> str:
    """``coco SAM tokens: 96 images, 682 boxes; 3/3 shards (1 skipped, 2 computed) in 12.3 s -> OUT``
    (with a part: its share of the shards, and whether the cache is whole or which parts still run)."""
    assert stats is not None
    share = "" if part is None else f" of part {part.label}"
    line = (f"{what}: {dataset_meta['images']} images, {dataset_meta['boxes']} boxes; "
            f"{stats.shards_done}/{stats.shards_total} shards{share} ({stats.shards_skipped} skipped, "
            f"{stats.shards_computed} computed) in {stats.seconds:.1f} s -> {folder} ({note})")
    if part is None:
        return line
    missing = stats.missing_after_merge
    if not missing:
        return line + "; every part has ended: the cache is whole"
    waiting = sorted({index % part.count + 1 for index in missing})
    return line + (f"; {len(missing)} shards are still to be made by part(s) "
                   f"{', '.join(f'{i}/{part.count}' for i in waiting)}")
