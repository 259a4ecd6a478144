"""A sharded on-disk tensor store that survives being killed at any moment.

Layout of a cache folder::

    manifest.json              # {"format", "version", "meta", "shard_size", "num_shards", "shards"}
    shard-00000.safetensors    # tensors of images 0 .. shard_size-1 (in the dataset's order)
    shard-00001.safetensors
    ...

``manifest["shards"]`` maps the index of every *finished* shard (as a string) to its file name,
sha256 and image ids. Both shard files and the manifest are written to a temporary file in the
same folder, flushed to disk and moved into place with ``os.replace``, so a process killed at any
moment (even SIGKILL) leaves the previous, valid state: at worst the shard being computed is
lost and an orphan ``.tmp`` file stays behind (removed by the next writer).

Writers (:func:`open_for_writing`) resume: a finished shard whose file still has its recorded
sha256 is skipped, everything else is recomputed. Readers (:class:`ShardReader`) check a shard's
sha256 and that its tensors parse the first time they open it, and raise :class:`CacheError`
naming the shard and saying how to repair it.

Only one writer per folder at a time (there is no lock).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from regionspot.fileio import atomic_write_bytes, remove_stale_temporaries

MANIFEST = "manifest.json"
STORE_FORMAT = "regionspot-shards"
STORE_VERSION = 1
REPAIR_HINT = "re-run `regionspot extract-tokens` with the same arguments"

T = TypeVar("T")


class CacheError(ValueError):
    """A cache folder is missing, unfinished, corrupt, or was made from other backbones/data."""


def shard_file_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def flatten(meta: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> ``{"a.b.c": value}`` (lists are kept as values)."""
    flat: dict[str, Any] = {}
    for key, value in meta.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def meta_differences(stored: Mapping[str, Any], wanted: Mapping[str, Any],
                     ignore: Sequence[str] = ()) -> list[str]:
    """Human-readable ``"key: cache has A, now B"`` for every dotted key whose values differ
    (after a JSON round trip, so tuples equal lists); keys in ``ignore`` are skipped."""
    a, b = flatten(_json_normal(stored)), flatten(_json_normal(wanted))
    lines = []
    for key in sorted(set(a) | set(b)):
        if key in ignore or a.get(key) == b.get(key):
            continue
        lines.append(f"{key}: cache has {a.get(key, '<absent>')!r}, now {b.get(key, '<absent>')!r}")
    return lines


def _json_normal(value: Any) -> Any:
    return json.loads(json.dumps(value))


def read_manifest(folder: Path) -> dict[str, Any]:
    """The parsed manifest of ``folder``; CacheError when missing or malformed."""
    path = folder / MANIFEST
    if not path.is_file():
        raise CacheError(f"no cache at {folder} ({MANIFEST} is missing); create it with "
                         "`regionspot extract-tokens`")
    try:
        manifest = json.loads(path.read_text())
        if manifest.get("format") != STORE_FORMAT or not isinstance(manifest.get("shards"), dict):
            raise ValueError(f"format is {manifest.get('format')!r}, expected {STORE_FORMAT!r}")
        if manifest.get("version") != STORE_VERSION:
            raise ValueError(f"store version {manifest.get('version')!r}, this regionspot reads {STORE_VERSION}")
        int(manifest["num_shards"]), int(manifest["shard_size"]), dict(manifest["meta"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CacheError(f"{path} is not a valid regionspot cache manifest ({exc}); delete {folder} and "
                         f"{REPAIR_HINT}") from None
    return manifest


def write_manifest(folder: Path, manifest: Mapping[str, Any]) -> None:
    atomic_write_bytes(folder / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())


class ShardWriter:
    """Fills the shards of one cache folder; see :func:`open_for_writing`."""

    def __init__(self, folder: Path, manifest: dict[str, Any]) -> None:
        self.folder = folder
        self.manifest = manifest

    @property
    def num_shards(self) -> int:
        return int(self.manifest["num_shards"])

    def finished(self) -> set[int]:
        """Indices of the shards recorded in the manifest (checked by :func:`open_for_writing`)."""
        return {int(key) for key in self.manifest["shards"]}

    def write(self, index: int, tensors: Mapping[str, torch.Tensor], image_ids: Sequence[int]) -> None:
        """Store shard ``index`` (atomically), then record it in the manifest (atomically)."""
        if not 0 <= index < self.num_shards:
            raise IndexError(f"shard {index} out of range 0..{self.num_shards - 1}")
        data = save_safetensors({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
        name = shard_file_name(index)
        atomic_write_bytes(self.folder / name, data)
        self.manifest["shards"][str(index)] = {"file": name, "sha256": sha256_bytes(data), "bytes": len(data),
                                               "image_ids": [int(i) for i in image_ids]}
        write_manifest(self.folder, self.manifest)


def open_for_writing(folder: Path, meta: Mapping[str, Any], *, num_shards: int, shard_size: int,
                     ignore: Sequence[str] = ()) -> ShardWriter:
    """Start or resume filling ``folder``.

    A new (or empty) folder gets a fresh manifest; a non-empty folder without one is refused. A folder with a manifest must have been made
    with the same ``meta`` (dotted keys in ``ignore`` excepted, e.g. informational paths),
    ``num_shards`` and ``shard_size``, else CacheError (never overwrite another cache). Finished
    shards whose file is missing or whose sha256 no longer matches are dropped from the manifest
    (they will be recomputed); orphan temporary files of a killed run are removed.
    """
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {"format": STORE_FORMAT, "version": STORE_VERSION, "meta": _json_normal(dict(meta)),
              "shard_size": shard_size, "num_shards": num_shards, "shards": {}}
    if not (folder / MANIFEST).exists():
        strangers = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        if strangers:
            raise CacheError(f"{folder} is not empty ({', '.join(strangers[:3])}{', ...' if len(strangers) > 3 else ''})"
                             f" but holds no cache ({MANIFEST} is missing); give a new or empty folder")
        write_manifest(folder, wanted)
        return ShardWriter(folder, wanted)
    manifest = read_manifest(folder)
    differences = meta_differences(manifest["meta"], meta, ignore)
    for key in ("num_shards", "shard_size"):
        if int(manifest[key]) != wanted[key]:
            differences.append(f"{key}: cache has {manifest[key]}, now {wanted[key]}")
    if differences:
        raise CacheError(f"{folder} already holds a cache made with other settings:\n  "
                         + "\n  ".join(differences)
                         + f"\nchoose another output folder, or delete {folder} to start over")
    remove_stale_temporaries(folder)
    damaged = [key for key, entry in manifest["shards"].items()
               if not (folder / entry["file"]).is_file()
               or sha256_bytes((folder / entry["file"]).read_bytes()) != entry["sha256"]]
    if damaged:
        for key in damaged:
            del manifest["shards"][key]
        write_manifest(folder, manifest)
    return ShardWriter(folder, manifest)


class ShardReader:
    """Read access to a cache folder: image id -> shard, shards loaded on demand, verified the
    first time they are opened, the ``max_open`` most recently used kept in memory."""

    def __init__(self, folder: str | Path, *, max_open: int = 8) -> None:
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        self.meta: dict[str, Any] = self.manifest["meta"]
        self.num_shards = int(self.manifest["num_shards"])
        self.shard_size = int(self.manifest["shard_size"])
        self.shard_of: dict[int, int] = {int(image_id): int(key) for key, entry in self.manifest["shards"].items()
                                         for image_id in entry["image_ids"]}
        self.max_open = max_open
        self._open: OrderedDict[int, dict[str, torch.Tensor]] = OrderedDict()
        self._verified: set[int] = set()

    @property
    def missing(self) -> list[int]:
        """Indices of the shards not finished yet."""
        done = {int(key) for key in self.manifest["shards"]}
        return [i for i in range(self.num_shards) if i not in done]

    def require_complete(self, what: str = "cache") -> None:
        """CacheError unless every shard is finished."""
        missing = self.missing
        if missing:
            raise CacheError(f"{what} {self.folder} is unfinished: {len(missing)} of {self.num_shards} shards are "
                             f"missing (first: {shard_file_name(missing[0])}); the extraction was interrupted or "
                             f"is still running; {REPAIR_HINT} to finish it")

    def load(self, index: int) -> dict[str, torch.Tensor]:
        """All tensors of finished shard ``index`` (a dict shared with later calls: do not modify)."""
        if index in self._open:
            self._open.move_to_end(index)
            return self._open[index]
        tensors = self._read(index)
        self._open[index] = tensors
        while len(self._open) > self.max_open:
            self._open.popitem(last=False)
        return tensors

    def _read(self, index: int) -> dict[str, torch.Tensor]:
        entry = self.manifest["shards"].get(str(index))
        if entry is None:
            raise CacheError(f"shard {index} of {self.folder} is not finished; {REPAIR_HINT}")
        path = self.folder / entry["file"]
        fix = f"delete {path} and {REPAIR_HINT}: only that shard is recomputed"
        if not path.is_file():
            raise CacheError(f"cache shard {path} is missing; {REPAIR_HINT}: only that shard is recomputed")
        data = path.read_bytes()
        if index not in self._verified:
            digest = sha256_bytes(data)
            if digest != entry["sha256"]:
                raise CacheError(f"cache shard {path} is corrupt: its sha256 {digest[:12]}... does not match "
                                 f"the manifest's {entry['sha256'][:12]}... ({len(data)} bytes, expected "
                                 f"{entry.get('bytes', '?')}); {fix}")
        try:
            tensors = load_safetensors(data)
        except Exception as exc:  # noqa: BLE001 - any parse failure means a corrupt shard
            raise CacheError(f"cache shard {path} cannot be read ({exc}); {fix}") from None
        self._verified.add(index)
        return tensors

    def tensors_of(self, image_id: int) -> tuple[dict[str, torch.Tensor], int]:
        """(tensors of the shard holding ``image_id``, shard index); KeyError if absent."""
        index = self.shard_of.get(int(image_id))
        if index is None:
            raise KeyError(f"image {image_id} is not in the cache at {self.folder}")
        return self.load(index), index

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers: ship no open shards
        state = dict(self.__dict__)
        state["_open"] = OrderedDict()
        return state


@dataclass
class FillStats:
    """What one :func:`fill_shards` call did. ``stopped``: it ended early (``stop_after_shards``)."""

    shards_total: int = 0
    shards_skipped: int = 0
    shards_computed: int = 0
    images_computed: int = 0
    seconds: float = 0.0
    stopped: bool = False

    @property
    def shards_done(self) -> int:
        return self.shards_skipped + self.shards_computed


def fill_shards(writer: ShardWriter, items: Sequence[T], image_id: Callable[[T], int],
                compute: Callable[[Sequence[T], Callable[[], None]], Mapping[str, torch.Tensor]], *,
                progress: bool = True, desc: str = "extract", stop_after_shards: int | None = None) -> FillStats:
    """Compute every unfinished shard of ``writer``: shard k holds ``items[k*S:(k+1)*S]``
    (S = the manifest's shard size). ``compute(items_of_shard, tick)`` returns the shard's
    tensors and calls ``tick()`` once per item (progress bar over items, with ETA). Stops after
    ``stop_after_shards`` newly computed shards when given (tests simulate interruptions so)."""
    from tqdm.auto import tqdm

    size = int(writer.manifest["shard_size"])
    done = writer.finished()
    stats = FillStats(shards_total=writer.num_shards, shards_skipped=len(done))
    start = time.perf_counter()
    skipped_items = sum(len(items[i * size:(i + 1) * size]) for i in done)
    with tqdm(total=len(items), initial=skipped_items, desc=desc, unit="img", disable=not progress,
              dynamic_ncols=True) as bar:
        for index in range(writer.num_shards):
            if index in done:
                continue
            if stop_after_shards is not None and stats.shards_computed >= stop_after_shards:
                stats.stopped = True
                break
            chunk = items[index * size:(index + 1) * size]
            tensors = compute(chunk, lambda: bar.update(1))
            writer.write(index, tensors, [image_id(item) for item in chunk])
            stats.shards_computed += 1
            stats.images_computed += len(chunk)
    stats.seconds = time.perf_counter() - start
    return stats


def plan_shards(num_items: int, shard_size: int) -> int:
    """Number of shards for ``num_items`` items, ``shard_size`` (>= 1) per shard."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    return (num_items + shard_size - 1) // shard_size


class CacheView:
    """What every cache over a :class:`ShardReader` offers: completeness, membership, and the
    per-image entries (raising ``error``, the cache kind's exception, naming a damaged shard)."""

    error: type[CacheError] = CacheError

    def __init__(self, reader: ShardReader) -> None:
        self.reader = reader
        self.folder = reader.folder
        self.meta: dict[str, Any] = reader.meta

    @property
    def missing_shards(self) -> list[int]:
        return self.reader.missing

    @property
    def complete(self) -> bool:
        return not self.reader.missing

    @property
    def image_ids(self) -> list[int]:
        return sorted(self.reader.shard_of)

    def __len__(self) -> int:
        return len(self.reader.shard_of)

    def __contains__(self, image_id: object) -> bool:
        return isinstance(image_id, (int, np.integer)) and int(image_id) in self.reader.shard_of

    def _entry(self, image_id: int, suffix: str) -> torch.Tensor:
        """Tensor ``"{image_id}/{suffix}"``; KeyError for an image not in the cache."""
        tensors, index = self.reader.tensors_of(image_id)
        key = f"{int(image_id)}/{suffix}"
        if key not in tensors:
            raise self.error(f"cache shard {index} of {self.folder} lacks {key!r}; delete that shard and "
                             f"{REPAIR_HINT}")
        return tensors[key]

