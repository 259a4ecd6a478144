"""Training-state checkpoints for ``--resume``: crash-safe files of plain tensors and containers.

A folder holds ``step-000100.pt``, ``step-000200.pt``, ... and ``latest.json`` naming the newest
committed one. :func:`save_training_state` writes in this order, every file atomically (a
temporary file in the same folder, flushed and fsynced, then ``os.replace``, then the folder
fsynced):

1. the new state file;
2. ``latest.json`` pointing at it - the commit point;
3. pruning: only the newest ``keep`` state files are kept.

A process killed (even with SIGKILL) at any point therefore leaves ``latest.json`` naming a
complete file: the previous one until step 2 has happened, the new one afterwards. Leftover
temporary files (``.step-*.tmp``) are removed by the next save; one writer per folder is assumed
(under DDP only rank 0 writes).

Files are read with ``torch.load(weights_only=True)``: no pickle of arbitrary objects is ever
executed, so a state may only hold tensors, dicts (str/int keys), lists, tuples, str, int, float,
bool, None and torch dtypes. :func:`save_training_state` checks this before writing, so a state
that could not be loaded again is refused at save time rather than at resume time. Model,
``optimizer.state_dict()`` and ``LambdaLR.state_dict()`` qualify; RNG states are converted by
:func:`capture_rng_state`.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from regionspot.fileio import atomic_write, remove_stale_temporaries
from regionspot.weights import CheckpointError

LATEST_NAME = "latest.json"
STATE_PATTERN = re.compile(r"^step-(\d+)\.pt$")
_LEAVES = (str, int, float, bool, type(None))  # exact types: numpy scalars subclass float/int


def state_filename(step: int) -> str:
    """The conventional file name of the state after ``step`` steps: ``step-000100.pt``."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return f"step-{step:06d}.pt"


# ----------------------------------------------------------------------------- RNG


def capture_rng_state() -> dict[str, Any]:
    """The global RNG states of Python ``random``, NumPy (``np.random``), torch CPU and, when
    CUDA is in use, every CUDA device, as tensors and numbers (loadable with weights_only).

    Not covered: ``np.random.Generator`` objects and generators of DataLoader workers (which
    are re-seeded from the torch RNG when an iterator starts)."""
    version, internal, gauss_next = random.getstate()
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "position": int(position), "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Set the global RNGs to a state made by :func:`capture_rng_state`. A CUDA state that
    cannot be restored (no GPU now, or fewer GPUs) is reported with a warning."""
    missing = [k for k in ("python", "numpy", "torch") if k not in state]
    if missing:
        raise CheckpointError(f"RNG state lacks {missing}; it was not made by capture_rng_state")
    python = state["python"]
    random.setstate((python["version"], tuple(int(v) for v in python["state"].tolist()), python["gauss_next"]))
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32),
                         numpy_state["position"], numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"].to(torch.uint8).cpu())
    cuda_states = state.get("cuda")
    if cuda_states:
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if available < len(cuda_states):
            warnings.warn(f"the saved RNG state covers {len(cuda_states)} CUDA device(s) but {available} "
                          f"are available; CUDA random numbers will differ from the original run", stacklevel=2)
        for index, cuda_state in enumerate(cuda_states[:available]):
            torch.cuda.set_rng_state(cuda_state.to(torch.uint8).cpu(), device=index)


# ----------------------------------------------------------------------------- saving


def save_training_state(path: str | Path, state: dict[str, Any], keep: int | None = 2) -> Path:
    """Write ``state`` to ``path`` (conventionally ``folder / state_filename(step)``) atomically,
    point ``folder/latest.json`` at it, then delete all but the newest ``keep`` ``step-*.pt``
    files of the folder (``None``: keep all). Files of a later step than ``path`` (left by an
    abandoned run that was resumed from an earlier state) are neither counted nor deleted.
    Returns ``path``. Raises ``TypeError`` naming the entry that could not be loaded back."""
    path = Path(path)
    if keep is not None and keep < 1:
        raise ValueError(f"keep must be >= 1 or None, got {keep}")
    _check_storable(state, "state")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    atomic_write(path, lambda handle: torch.save(state, handle))
    pointer = json.dumps({"file": path.name}) + "\n"
    atomic_write(path.parent / LATEST_NAME, lambda handle: handle.write(pointer.encode()))
    if keep is not None:
        _prune(path, keep)
    return path


def _prune(saved: Path, keep: int) -> None:
    saved_step = _step_of(saved)
    files = _state_files(saved.parent)
    if saved_step is not None:
        files = [f for f in files if (_step_of(f) or 0) <= saved_step]
    for old in files[:-keep]:
        if old.name != saved.name:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()


def _check_storable(value: Any, where: str) -> None:
    if type(value) in _LEAVES or isinstance(value, (torch.Tensor, torch.dtype)):
        return
    if type(value) in (dict, OrderedDict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: key {key!r} is a {type(key).__name__}; only str/int keys load back")
            _check_storable(item, f"{where}[{key!r}]")
        return
    if type(value) in (list, tuple, torch.Size):
        for index, item in enumerate(value):
            _check_storable(item, f"{where}[{index}]")
        return
    raise TypeError(f"{where} is a {type(value).__module__}.{type(value).__name__}, which torch.load("
                    f"weights_only=True) would refuse; store tensors, containers, str, int, float, bool or None")


# ----------------------------------------------------------------------------- loading


def latest_training_state(folder: str | Path) -> Path | None:
    """The committed state file of ``folder``: the one ``latest.json`` names, or without a
    usable ``latest.json`` the ``step-*.pt`` of the highest step; ``None`` if there is none.
    Does not read the file; :func:`load_training_state` on the folder also falls back to older
    files should this one be unreadable."""
    candidates = _candidates(Path(folder))
    return candidates[0] if candidates else None


def load_training_state(folder_or_file: str | Path) -> dict[str, Any]:
    """Read a training state (on the CPU) with ``torch.load(weights_only=True)``.

    A file is read as is. A folder is read at its latest committed state; if that file is
    unreadable (corrupted storage) the next older ``step-*.pt`` is tried, with a warning.
    Raises :class:`~regionspot.weights.CheckpointError` when nothing can be read."""
    path = Path(folder_or_file)
    if not path.is_dir():
        return _load_file(path)
    candidates = _candidates(path)
    if not candidates:
        raise CheckpointError(f"{path} holds no training state ({LATEST_NAME} or step-*.pt)")
    failures = []
    for candidate in candidates:
        try:
            state = _load_file(candidate)
        except CheckpointError as exc:
            failures.append(str(exc))
            warnings.warn(f"{exc}; trying an older training state", stacklevel=2)
            continue
        return state
    raise CheckpointError(f"no training state in {path} could be read: " + "; ".join(failures))


def _load_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"training state {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated/corrupt files raise many types
        raise CheckpointError(f"training state {path} could not be read ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"training state {path} holds a {type(state).__name__}, not a dict")
    return state


def _candidates(folder: Path) -> list[Path]:
    """State files to try, newest committed first."""
    files = _state_files(folder)
    latest = _read_latest(folder)
    if latest is None:
        return files[::-1]
    latest_step = _step_of(latest)
    older = [f for f in files if f.name != latest.name and (latest_step is None or (_step_of(f) or 0) < latest_step)]
    return [latest, *older[::-1]]


def _read_latest(folder: Path) -> Path | None:
    pointer = folder / LATEST_NAME
    if not pointer.is_file():
        return None
    try:
        name = json.loads(pointer.read_text())["file"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        warnings.warn(f"{pointer} is unreadable ({exc}); using the newest step-*.pt instead", stacklevel=3)
        return None
    target = folder / name
    if Path(name).name != name or not target.is_file():
        warnings.warn(f"{pointer} names {name!r}, which is not a file in {folder}; using the newest step-*.pt",
                      stacklevel=3)
        return None
    return target


def _state_files(folder: Path) -> list[Path]:
    """``step-*.pt`` files of ``folder``, oldest step first."""
    if not folder.is_dir():
        return []
    files = [f for f in folder.iterdir() if STATE_PATTERN.match(f.name) and f.is_file()]
    return sorted(files, key=lambda f: _step_of(f) or 0)


def _step_of(path: Path) -> int | None:
    match = STATE_PATTERN.match(path.name)
    return int(match.group(1)) if match else None
