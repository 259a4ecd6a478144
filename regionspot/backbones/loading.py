"""Loading Hugging Face models from a Hub id or a local folder, with errors a user can act on."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, TypeVar

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


def load_hf_pretrained(cls: type[M], name_or_path: str, **kwargs: Any) -> M:
    """``cls.from_pretrained(name_or_path)`` for a Hub id or a local folder.

    Raises :class:`BackboneLoadError` naming what was tried instead of the library's own
    traceback (for example when a Hub id cannot be reached offline).
    """
    where = "local folder" if Path(name_or_path).exists() else "Hugging Face Hub id"
    try:
        with quiet_weight_loading():
            return cls.from_pretrained(name_or_path, **kwargs)  # type: ignore[attr-defined]
    except (OSError, ValueError, EnvironmentError) as exc:
        hint = ""
        if where.startswith("Hugging Face"):
            hint = (" If you are offline, download the model once and pass its local folder, "
                    "or set HF_HUB_OFFLINE=1 with the model in your Hugging Face cache.")
        raise BackboneLoadError(
            f"could not load {cls.__name__} from {where} {name_or_path!r}: {str(exc).rstrip('. ')}.{hint}"
        ) from exc
