"""``regionspot download [--checkpoint CKPT | --sam ID --clip ID] [--set KEY=VALUE ...] [--dry-run]``.

Fetches every Hugging Face Hub model a command would load into the standard Hugging Face cache,
so that the cache (``$HF_HOME``, by default ``~/.cache/huggingface``) can be copied to a machine
without network and used there (with ``HF_HUB_OFFLINE=1``, or simply as it is: regionspot reads
cached models when the Hub cannot be reached). Only what transformers reads is fetched: configs,
tokenizer files and the PyTorch weights (safetensors, else ``pytorch_model.bin``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from regionspot.cli.arguments import add_overrides_argument, add_progress_argument
from regionspot.cli.model_args import add_model_arguments
from regionspot.hub import (
    CHECKPOINT_ROLE,
    hub_cache_dir,
    hub_models_for_config,
    is_cached,
    is_local,
    offline_cause,
    unavailable_message,
)

if TYPE_CHECKING:
    from regionspot.config import RegionSpotConfig, ZeroShotConfig

# configs (*.json), vocabularies and BPE merges (*.txt), sentencepiece models (*.model)
SMALL_FILE_SUFFIXES = (".json", ".txt", ".model")
OTHER_FRAMEWORK_PREFIXES = ("tf_", "flax_", "rust_", "onnx", "openvino", "coreml")
OTHER_FRAMEWORK_MARKERS = (".msgpack", ".h5", ".onnx", ".tflite", ".mlmodel", ".ot")


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "download", help="fetch the Hub models a command needs into the Hugging Face cache, for offline use",
        description="Download the backbones (and a Hub checkpoint) that a command would load into the standard "
                    "Hugging Face cache. Without options: the default SAM and CLIP backbones. Copy the cache "
                    "($HF_HOME, by default ~/.cache/huggingface) to a machine without network to use them there.",
    )
    add_model_arguments(parser, runtime=False)
    add_overrides_argument(parser, "model config overrides with dotted keys, e.g. --set clip.name_or_path=ID")
    parser.add_argument("--dry-run", action="store_true", help="only print what would be fetched")
    add_progress_argument(parser)
    parser.set_defaults(handler=run)


def select_files(files: Iterable[str]) -> list[str]:
    """The files of a Hub repo that transformers reads, sorted: top-level configs, tokenizer files
    and PyTorch weights (``*.safetensors`` when the repo has any, else ``pytorch_model*.bin`` and
    its index); never TensorFlow, Flax, ONNX or other frameworks' files, nor subfolders."""
    top = [name for name in files if "/" not in name]
    has_safetensors = any(name.lower().endswith(".safetensors") for name in top)
    chosen = []
    for name in sorted(top):
        lower = name.lower()
        if lower.startswith(OTHER_FRAMEWORK_PREFIXES) or any(mark in lower for mark in OTHER_FRAMEWORK_MARKERS):
            continue
        if lower.endswith((".safetensors", ".safetensors.index.json")):
            chosen.append(name)
        elif lower.startswith("pytorch_model") and lower.endswith((".bin", ".bin.index.json")):
            if not has_safetensors:
                chosen.append(name)
        elif lower.endswith(SMALL_FILE_SUFFIXES):
            chosen.append(name)
    return chosen


def config_for_args(args: argparse.Namespace) -> tuple[RegionSpotConfig | ZeroShotConfig, str | None]:
    """The model config the options describe (as :func:`regionspot.model.loader.source_config`
    reads it, so exactly what a command with these options would load), and the checkpoint's Hub
    id when it is one (to be fetched too). A Hub checkpoint is fetched here (its config.json alone
    with ``--dry-run``)."""
    from regionspot.cli.model_args import model_source_from_args
    from regionspot.config import apply_overrides
    from regionspot.model.loader import backbone_overrides, check_source, source_config

    source = model_source_from_args(args, args.overrides)
    checkpoint = source.checkpoint
    if checkpoint is None or is_local(checkpoint):
        return source_config(source), None
    check_source(source)
    config = _hub_checkpoint_config(checkpoint, args.dry_run)
    return apply_overrides(config, [*backbone_overrides(source), *source.overrides]), checkpoint


def _hub_checkpoint_config(repo_id: str, dry_run: bool) -> RegionSpotConfig:
    """The config of a checkpoint on the Hub: the whole checkpoint fetched (config.json alone
    for a dry run), or read from the cache when the Hub cannot be used."""
    from regionspot.model.checkpoint import CONFIG_NAME, read_checkpoint, resolve_checkpoint

    if not dry_run:
        folder = resolve_checkpoint(repo_id)
        cause = offline_cause()
        note = "" if cause is None else f" (from the cache, not refreshed: {cause})"
        print(f"{CHECKPOINT_ROLE} {repo_id}: {_describe_folder(folder)}{note}")
        return read_checkpoint(folder)[0]
    from huggingface_hub import hf_hub_download

    from regionspot.config import ConfigError, RegionSpotConfig, from_dict
    from regionspot.hub import HubUnavailableError, prepare_hub_load
    from regionspot.weights import CheckpointError

    try:
        hub_kwargs = prepare_hub_load(repo_id, CHECKPOINT_ROLE, files=(CONFIG_NAME,))
    except HubUnavailableError as exc:
        raise CheckpointError(str(exc)) from None
    try:
        document = json.loads(Path(hf_hub_download(repo_id, CONFIG_NAME, **hub_kwargs)).read_text())
        return from_dict(RegionSpotConfig, document["config"])
    except (KeyError, TypeError, ConfigError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{repo_id}: {CONFIG_NAME} is not a RegionSpot config ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - hub errors come in many types; all mean "cannot get it"
        raise CheckpointError(f"could not fetch {CONFIG_NAME} of {CHECKPOINT_ROLE} {repo_id!r} "
                              f"({type(exc).__name__}: {' '.join(str(exc).split())})") from None


def fetch_model(repo_id: str, role: str) -> Path:
    """Download the files of ``repo_id`` that :func:`select_files` keeps into the Hugging Face
    cache and return its snapshot folder. Raises BackboneLoadError when the Hub cannot be used
    (a model already in the cache is then kept as it is) or the repo cannot be fetched."""
    from huggingface_hub import HfApi, snapshot_download

    from regionspot.backbones.loading import BackboneLoadError

    cause = offline_cause()
    if cause is not None:
        if is_cached(repo_id):
            print(f"{role} {repo_id}: not refreshed ({cause}); in the cache already")
            return Path(snapshot_download(repo_id, local_files_only=True))
        raise BackboneLoadError(unavailable_message(repo_id, role, cause, verb="download"))
    try:
        files = select_files(HfApi().list_repo_files(repo_id))
        if not files:
            raise BackboneLoadError(f"the {role} {repo_id!r} has no files transformers can read")
        folder = Path(snapshot_download(repo_id, allow_patterns=files))
    except BackboneLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - hub errors come in many types; all mean "cannot fetch it"
        raise BackboneLoadError(f"could not download the {role} {repo_id!r}: {type(exc).__name__}: "
                                f"{' '.join(str(exc).split())}") from None
    print(f"{role} {repo_id}: {_describe_folder(folder)}")
    return folder


def _describe_folder(folder: Path) -> str:
    """``N files (a, b, ...), S MB -> folder`` for a snapshot folder."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in files)
    names = ", ".join(str(p.relative_to(folder)) for p in files)
    return f"{len(files)} files ({names}), {size / 1e6:.1f} MB -> {folder}"


def run(args: argparse.Namespace) -> int:
    config, checkpoint_repo = config_for_args(args)
    models = hub_models_for_config(config)
    if args.dry_run:
        return _print_plan(models, checkpoint_repo)
    if not models:
        print("nothing to download: every model named is a local path")
        return 0
    for role, repo_id in models:
        fetch_model(repo_id, role)
    _print_cache_advice()
    return 0


def _print_plan(models: list[tuple[str, str]], checkpoint_repo: str | None) -> int:
    """The ``--dry-run`` listing: each Hub repo, its role, and whether it is cached already."""
    plan = ([(CHECKPOINT_ROLE, checkpoint_repo)] if checkpoint_repo else []) + models
    if not plan:
        print("nothing to download: every model named is a local path")
        return 0
    print("would fetch (configs, tokenizer files and weights: *.safetensors, else pytorch_model.bin):")
    for role, repo_id in plan:
        print(f"  {role}: {repo_id}{' (in the cache already)' if is_cached(repo_id) else ''}")
    print(f"into the Hugging Face cache {hub_cache_dir()}")
    return 0


def _print_cache_advice() -> None:
    from huggingface_hub import constants

    print(f"Hugging Face cache: {hub_cache_dir()}. For a machine without network, copy {constants.HF_HOME} "
          "to its $HF_HOME (by default ~/.cache/huggingface); set HF_HUB_OFFLINE=1 there to skip the Hub check.")
