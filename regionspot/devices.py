"""Where and in which precision a model runs: one home for device and precision choices, used
by the model loader, the predictor, evaluation, training and token extraction.

Devices: ``auto`` (a GPU when there is one: CUDA, else Apple's MPS, else the CPU), ``cpu``,
``cuda``, ``cuda:N``, ``mps``. Precisions: ``fp32`` (default), ``bf16``, ``fp16``: half
precision runs the towers and the head under ``torch.autocast``; scores and boxes stay float32.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class DeviceError(ValueError):
    """A device or precision that is unknown or not available on this machine."""


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def choose_device(preference: str | torch.device = "auto") -> torch.device:
    """The device for ``preference`` (see the module docstring). Raises :class:`DeviceError`
    for an unknown name or a GPU that this machine does not have, saying which."""
    if isinstance(preference, torch.device):
        preference = str(preference)
    choice = preference.strip().lower()
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "mps":
        if not _mps_available():
            raise DeviceError("device 'mps' was asked for but Apple's MPS backend is not available here")
        return torch.device("mps")
    if choice == "cuda" or choice.startswith("cuda:"):
        return _cuda_device(preference, choice)
    raise DeviceError(f"unknown device {preference!r}; use one of {', '.join(DEVICE_CHOICES)}")


def _cuda_device(preference: str, choice: str) -> torch.device:
    try:
        device = torch.device(choice)
    except RuntimeError:
        raise DeviceError(f"device {preference!r} is not a valid device; use one of "
                          f"{', '.join(DEVICE_CHOICES)}") from None
    if not torch.cuda.is_available():
        raise DeviceError(f"device {preference!r} was asked for but CUDA is not available (torch "
                          f"{torch.__version__}, built for CUDA {torch.version.cuda}); choose the device cpu or auto")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"device {preference!r} was asked for but only {torch.cuda.device_count()} "
                          "CUDA device(s) are visible")
    return device


def check_precision(precision: str, device: torch.device) -> str:
    """``precision`` when it is one of :data:`PRECISIONS` and ``device`` can run it (fp16 needs
    a GPU; bf16 runs on CUDA and on CPUs); else :class:`DeviceError`."""
    if precision not in PRECISIONS:
        raise DeviceError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type == "cpu":
        raise DeviceError("precision fp16 needs a GPU; on the CPU use fp32 or bf16")
    return precision


def autocast(device: torch.device, precision: str) -> AbstractContextManager[object]:
    """``torch.autocast`` in ``precision`` on ``device`` (a no-op context for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def full_precision(device: torch.device) -> AbstractContextManager[object]:
    """A region inside :func:`autocast` that computes in float32 again (final scores)."""
    return torch.autocast(device_type=device.type, enabled=False)
