"""Loading Hugging Face models from a Hub id or a local folder, with errors a user can act on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

from regionspot.hub import (
    CLIP_ROLE,
    SAM_ROLE,
    TEXT_ROLE,
    HubUnavailableError,
    fix_hint,
    offline_cause,
    prepare_hub_load,
)

M = TypeVar("M")


class BackboneLoadError(RuntimeError):
    """A backbone could not be found or loaded (bad id, missing folder, offline, wrong type)."""


@contextmanager
def quiet_weight_loading() -> Iterator[None]:
    """Hide transformers' per-file "Loading weights" bars (our own errors say what went wrong);
    the global setting is restored afterwards."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def backbone_role(cls: type) -> str:
    """The human role of a ``from_pretrained`` class, for error messages."""
    name = cls.__name__
    if name.startswith("Sam"):
        return SAM_ROLE
    if "Tokenizer" in name or name.startswith("CLIPText"):
        return TEXT_ROLE
    return CLIP_ROLE


def load_hf_pretrained(cls: type[M], name_or_path: str, *, what: str | None = None, **kwargs: Any) -> M:
    """``cls.from_pretrained(name_or_path)`` for a Hub id or a local folder.

    A Hub id never waits on an unusable Hub (see :mod:`regionspot.hub`): with ``HF_HUB_OFFLINE``
    or an unreachable Hub it loads from the local cache, or fails at once. Raises
    :class:`BackboneLoadError` (one line) naming what was tried instead of the library's own
    traceback; ``what`` is the role named in it (default: guessed from ``cls``).
    """
    role = what or backbone_role(cls)
    probe_file = "tokenizer_config.json" if "Tokenizer" in cls.__name__ else "config.json"
    try:
        hub_kwargs = prepare_hub_load(name_or_path, role, files=(probe_file,))
    except HubUnavailableError as exc:
        raise BackboneLoadError(str(exc)) from None
    from_hub = not Path(name_or_path).exists()
    where = f"{'Hugging Face Hub id' if from_hub else 'local folder'} {name_or_path!r}"
    try:
        with quiet_weight_loading():
            return cls.from_pretrained(name_or_path, **{**hub_kwargs, **kwargs})  # type: ignore[attr-defined]  # a transformers class
    except (OSError, ValueError) as exc:
        hint = ""
        if hub_kwargs.get("local_files_only"):
            where += f" in the local Hugging Face cache ({offline_cause()})"
            hint = f" Fix: {fix_hint(name_or_path, role)}."
        elif from_hub:
            hint = f" If this machine cannot reach the Hub: {fix_hint(name_or_path, role)}."
        detail = " ".join(str(exc).split()).rstrip(". ")
        raise BackboneLoadError(f"could not load {cls.__name__} from {where}: {detail}.{hint}") from exc



def load_hf_pretrained_with_info(cls: type[M], name_or_path: str, *, what: str | None = None,
                                 **kwargs: Any) -> tuple[M, dict[str, Any]]:
    """:func:`load_hf_pretrained` that also returns transformers' loading info (its
    ``missing_keys``, ``unexpected_keys`` and ``mismatched_keys``), for a strict check."""
    loaded = load_hf_pretrained(cls, name_or_path, what=what, output_loading_info=True, **kwargs)
    return cast("tuple[M, dict[str, Any]]", loaded)
