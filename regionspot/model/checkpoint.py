"""Self-describing checkpoints: ``model.safetensors`` (trainable weights only) + ``config.json``.

The JSON holds the full :class:`~regionspot.config.RegionSpotConfig`, which names the frozen
backbones, so a checkpoint folder is enough to rebuild the model. No pickle is ever read.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors

from regionspot.config import ConfigError, RegionSpotConfig, from_dict, to_dict
from regionspot.fileio import atomic_write_bytes, file_sha256, write_failure
from regionspot.weights import CheckpointError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FUSION_PREFIX = "fusion."  # the head's weights are stored as fusion.*
FORMAT_NAME = "regionspot"
FORMAT_VERSION = 1


def write_checkpoint(folder: str | Path, config: RegionSpotConfig, state: dict[str, torch.Tensor],
                     extra: dict[str, Any] | None = None) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``folder`` atomically (each file is
    written to a temporary name first, then renamed). CheckpointError naming the file and why
    when it cannot be written (full disk, read-only folder)."""
    from regionspot import __version__

    folder = Path(folder)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    weights = save_safetensors(tensors, metadata={"format": "pt"})
    document = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "regionspot_version": __version__,
                "config": to_dict(portable_backbones(config)), "weights_sha256": hashlib.sha256(weights).hexdigest(),
                **(extra or {})}
    target = folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for target, data in ((folder / WEIGHTS_NAME, weights),
                             (folder / CONFIG_NAME, (json.dumps(document, indent=2) + "\n").encode())):
            atomic_write_bytes(target, data)
    except OSError as exc:  # a full disk, a read-only folder
        raise CheckpointError(f"{write_failure(target, exc)}; the checkpoint {folder} was not written") from None
    return folder


def _backbone_fields(config: RegionSpotConfig) -> list[tuple[Any, str]]:
    """(section, field) of every backbone location in ``config``."""
    return [(config.sam, "name_or_path"), (config.clip, "name_or_path"), (config.text, "name_or_path"),
            (config.text, "bank")]


def portable_backbones(config: RegionSpotConfig) -> RegionSpotConfig:
    """``config`` with every backbone that is a local file or folder named by its absolute path,
    so the checkpoint loads from any working folder (Hub ids are kept as they are)."""
    config = copy.deepcopy(config)
    for section, name in _backbone_fields(config):
        value = getattr(section, name)
        if value and Path(value).exists():
            setattr(section, name, str(Path(value).resolve()))
    return config


def locate_backbones(config: RegionSpotConfig, folder: Path) -> RegionSpotConfig:
    """A relative backbone path that does not exist from the working folder but does from the
    checkpoint ``folder`` (a checkpoint shipped with its backbones beside it) is taken from there."""
    for section, name in _backbone_fields(config):
        value = getattr(section, name)
        if value and not Path(value).is_absolute() and not Path(value).exists() and (folder / value).exists():
            setattr(section, name, str(folder / value))
    return config


def resolve_checkpoint(name_or_path: str | Path, extra_files: tuple[str, ...] = (),
                       extra_patterns: tuple[str, ...] = ()) -> Path:
    """A local checkpoint folder, or a Hugging Face Hub repo id downloaded to the local cache.
    Returns the folder holding ``config.json`` and ``model.safetensors`` (and ``extra_files``,
    and from the Hub also the files matching ``extra_patterns``, e.g. an ONNX export's graphs).

    A Hub id never waits on an unusable Hub: with ``HF_HUB_OFFLINE`` or an unreachable Hub the
    cached copy is used, and without one a one-line :class:`CheckpointError` says what to do."""
    path = Path(name_or_path)
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{path} is a file; a RegionSpot checkpoint is a folder with "
                                  f"{CONFIG_NAME} and {WEIGHTS_NAME}")
        for name in (CONFIG_NAME, WEIGHTS_NAME, *extra_files):
            if not (path / name).is_file():
                raise CheckpointError(f"{path} is not a RegionSpot checkpoint: {name} is missing")
        return path
    from regionspot.hub import CHECKPOINT_ROLE, HubUnavailableError, prepare_hub_load

    try:
        hub_kwargs = prepare_hub_load(name_or_path, CHECKPOINT_ROLE, files=(CONFIG_NAME, WEIGHTS_NAME, *extra_files))
    except HubUnavailableError as exc:
        raise CheckpointError(str(exc)) from None
    try:
        from huggingface_hub import snapshot_download

        patterns = [CONFIG_NAME, WEIGHTS_NAME, *extra_files, *extra_patterns]
        return Path(snapshot_download(str(name_or_path), allow_patterns=patterns, **hub_kwargs))
    except Exception as exc:  # hub errors come in many types; all mean "not found"
        raise CheckpointError(
            f"{name_or_path!r} is neither a local checkpoint folder nor a reachable Hugging Face Hub "
            f"repo ({type(exc).__name__}: {' '.join(str(exc).split())})"
        ) from exc


def read_checkpoint(folder: Path) -> tuple[RegionSpotConfig, dict[str, torch.Tensor]]:
    """Read and validate ``config.json`` + ``model.safetensors`` from a checkpoint folder."""
    try:
        document = json.loads((folder / CONFIG_NAME).read_text())
    except (ValueError, RecursionError) as exc:  # bad JSON, text that is not UTF-8, a 5000-digit number
        raise CheckpointError(f"{folder / CONFIG_NAME} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise CheckpointError(f"{folder / CONFIG_NAME} holds a JSON {type(document).__name__}, not a RegionSpot config")
    if document.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{folder / CONFIG_NAME} is not a RegionSpot config (format={document.get('format')!r})")
    if document.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint format {document['format_version']} is newer than this "
                              f"regionspot understands ({FORMAT_VERSION}); upgrade regionspot")
    try:
        config = from_dict(RegionSpotConfig, document["config"])
    except (KeyError, ConfigError) as exc:
        raise CheckpointError(f"{folder / CONFIG_NAME}: bad config: {exc}") from None
    check_weights_hash(folder, document.get("weights_sha256"))
    try:
        state = load_file(str(folder / WEIGHTS_NAME))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for corrupt files
        raise CheckpointError(f"{folder / WEIGHTS_NAME} could not be read: {exc}") from None
    check_finite(folder, config, state)
    check_widths(folder, config, state)
    return locate_backbones(config, folder), state


def check_weights_hash(folder: Path, expected: Any) -> None:
    """The sha256 recorded at save time (checkpoints written before it was recorded have none)."""
    if expected is None:
        return
    actual = file_sha256(folder / WEIGHTS_NAME)
    if actual != expected:
        raise CheckpointError(f"{folder / WEIGHTS_NAME} is not the file this checkpoint was saved with (sha256 "
                              f"{actual[:12]}..., config.json records {str(expected)[:12]}...): damaged or replaced")


def check_finite(folder: Path, config: RegionSpotConfig, state: dict[str, torch.Tensor]) -> None:
    """Refuse NaN or infinite weights and logit scale: they would only ever print NaN scores."""
    bad = sorted(key for key, tensor in state.items()
                 if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()))
    if bad or not math.isfinite(config.fusion.logit_scale):
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        what = f"weights {bad[:5]}{more}" if bad else f"fusion.logit_scale {config.fusion.logit_scale}"
        raise CheckpointError(f"{folder}: {what} are not finite (NaN or infinite); this head cannot score anything")


def check_widths(folder: Path, config: RegionSpotConfig, state: dict[str, torch.Tensor]) -> None:
    """CheckpointError when ``config.json``'s fusion widths or depth do not fit the tensors of
    ``model.safetensors``, naming the field, the parameter and both shapes (missing or unexpected
    keys are left to the strict load, which lists them)."""
    fusion = config.fusion
    weights = {key.removeprefix(FUSION_PREFIX): tensor for key, tensor in state.items()}
    # parameter -> the fields setting each of its dimensions
    layout = {"token_projector.weight": ("width", "token_dim"), "text_projector.weight": ("text_dim", "width"),
              "blocks.0.ffn.0.weight": ("ffn_dim", "width")}
    for name, fields in layout.items():
        if name not in weights:
            continue
        found, expected = tuple(weights[name].shape), tuple(getattr(fusion, field) for field in fields)
        if found != expected:
            wrong = [f for i, f in enumerate(fields) if i >= len(found) or found[i] != expected[i]] or list(fields)
            raise CheckpointError(
                f"{folder / CONFIG_NAME}: fusion.{wrong[0]} {getattr(fusion, wrong[0])} does not fit the weights in "
                f"{folder / WEIGHTS_NAME}: {FUSION_PREFIX}{name} has shape {found}, the config expects {expected} "
                f"(fusion.{fields[0]} x fusion.{fields[1]})")
    blocks = {int(key.split(".")[1]) for key in weights if key.startswith("blocks.") and key.split(".")[1].isdigit()}
    if blocks and len(blocks) != fusion.depth:
        raise CheckpointError(f"{folder / CONFIG_NAME}: fusion.depth {fusion.depth} does not fit the weights in "
                              f"{folder / WEIGHTS_NAME}, which hold {len(blocks)} fusion block(s)")
