"""Strict weight loading shared by every part that loads tensors (backbones and the head)."""

from __future__ import annotations

from collections.abc import Mapping

import torch


class CheckpointError(ValueError):
    """Weights cannot be read, or their keys/shapes are not those the module expects (the
    message names them)."""


def load_strict(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    """``module.load_state_dict(state_dict, strict=True)`` with an error that names the missing,
    unexpected and wrongly shaped keys of ``what`` (a human name for the weights)."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state_dict) if state_dict[k].shape != expected[k].shape
    )
    if missing or unexpected or shapes:
        parts = [f"{label} {preview(items)}" for label, items in
                 (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)) if items]
        raise CheckpointError(f"cannot load {what}: " + "; ".join(parts))
    module.load_state_dict(dict(state_dict), strict=True)


def preview(items: list[str], limit: int = 12) -> str:
    """``[a, b, ...] (N in all)``: a bounded list of names for error messages."""
    shown = ", ".join(items[:limit])
    return f"[{shown}{', ...' if len(items) > limit else ''}] ({len(items)} in all)"
