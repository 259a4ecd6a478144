"""Self-describing checkpoints: ``model.safetensors`` (trainable weights only) + ``config.json``.

The JSON holds the full :class:`~regionspot.config.RegionSpotConfig`, which names the frozen
backbones, so a checkpoint folder is enough to rebuild the model. No pickle is ever read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors

from regionspot.config import ConfigError, RegionSpotConfig, from_dict, to_dict
from regionspot.fileio import atomic_write_bytes
from regionspot.weights import CheckpointError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_NAME = "regionspot"
FORMAT_VERSION = 1


def write_checkpoint(folder: str | Path, config: RegionSpotConfig, state: dict[str, torch.Tensor],
                     extra: dict[str, Any] | None = None) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``folder`` atomically (each file is
    written to a temporary name first, then renamed)."""
    from regionspot import __version__

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    document = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "regionspot_version": __version__,
                "config": to_dict(config), **(extra or {})}
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    atomic_write_bytes(folder / WEIGHTS_NAME, save_safetensors(tensors, metadata={"format": "pt"}))
    atomic_write_bytes(folder / CONFIG_NAME, (json.dumps(document, indent=2) + "\n").encode())
    return folder


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """A local checkpoint folder, or a Hugging Face Hub repo id downloaded to the local cache.
    Returns the folder holding ``config.json`` and ``model.safetensors``.

    A Hub id never waits on an unusable Hub: with ``HF_HUB_OFFLINE`` or an unreachable Hub the
    cached copy is used, and without one a one-line :class:`CheckpointError` says what to do."""
    path = Path(name_or_path)
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{path} is a file; a RegionSpot checkpoint is a folder with "
                                  f"{CONFIG_NAME} and {WEIGHTS_NAME}")
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (path / name).is_file():
                raise CheckpointError(f"{path} is not a RegionSpot checkpoint: {name} is missing")
        return path
    from regionspot.hub import CHECKPOINT_ROLE, HubUnavailableError, prepare_hub_load

    try:
        hub_kwargs = prepare_hub_load(name_or_path, CHECKPOINT_ROLE, files=(CONFIG_NAME, WEIGHTS_NAME))
    except HubUnavailableError as exc:
        raise CheckpointError(str(exc)) from None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(name_or_path), allow_patterns=[CONFIG_NAME, WEIGHTS_NAME], **hub_kwargs))
    except Exception as exc:  # noqa: BLE001 - hub errors come in many types; all mean "not found"
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
    if document.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{folder / CONFIG_NAME} is not a RegionSpot config (format={document.get('format')!r})")
    if document.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint format {document['format_version']} is newer than this "
                              f"regionspot understands ({FORMAT_VERSION}); upgrade regionspot")
    try:
        config = from_dict(RegionSpotConfig, document["config"])
    except (KeyError, ConfigError) as exc:
        raise CheckpointError(f"{folder / CONFIG_NAME}: bad config: {exc}") from None
    try:
        state = load_file(str(folder / WEIGHTS_NAME))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for corrupt files
        raise CheckpointError(f"{folder / WEIGHTS_NAME} could not be read: {exc}") from None
    return config, state
