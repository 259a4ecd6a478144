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
sha256 is skipped, everything else is recomputed. Each shard also records in its own header what
the manifest says of it (:mod:`regionspot.cache.integrity`), so a manifest that no longer parses
is rebuilt from the intact shards instead of forcing a full recompute. A full disk or an
unwritable folder ends as a CacheError naming the file and why; finished shards stay. Readers
(:class:`ShardReader`) check a shard's sha256 and that its tensors parse the first time they
open it, and raise :class:`CacheError` naming the shard and saying how to repair it.

Only one writer per folder at a time (there is no lock).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from regionspot.cache.integrity import (
    SHARD_PATTERN,
    flatten,
    json_normal,
    meta_digest,
    recover_shards,
    shard_metadata,
)
from regionspot.fileio import (
    atomic_write_bytes,
    remove_stale_temporaries,
    write_failure,
)

MANIFEST = "manifest.json"
#: The manifest of the whole cache, or of one part of a split run (``manifest.part-2-of-8.json``).
MANIFEST_PATTERN = re.compile(r"^manifest(\.part-\d+-of-\d+)?\.json$")
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


def meta_differences(stored: Mapping[str, Any], wanted: Mapping[str, Any],
                     ignore: Sequence[str] = ()) -> list[str]:
    """Human-readable ``"key: cache has A, now B"`` for every dotted key whose values differ
    (after a JSON round trip, so tuples equal lists); keys in ``ignore`` are skipped."""
    a, b = flatten(json_normal(stored)), flatten(json_normal(wanted))
    lines = []
    for key in sorted(set(a) | set(b)):
        if key in ignore or a.get(key) == b.get(key):
            continue
        lines.append(f"{key}: cache has {a.get(key, '<absent>')!r}, now {b.get(key, '<absent>')!r}")
    return lines


class DamagedManifestError(CacheError):
    """A manifest that cannot be parsed (truncated or corrupt); ``reason`` says how. Writers
    rebuild it from the shards (see :mod:`regionspot.cache.integrity`)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path} is not a valid regionspot cache manifest ({reason}); {REPAIR_HINT}: it rebuilds "
                         "the manifest from the intact shards and computes only the missing ones")
        self.reason = reason


def read_manifest(folder: Path, name: str = MANIFEST) -> dict[str, Any]:
    """The parsed manifest ``name`` of ``folder``; CacheError when missing, unreadable, of another
    format or version, or :class:`DamagedManifestError` when it does not parse."""
    path = folder / name
    if not path.is_file():
        raise CacheError(f"no cache at {folder} ({name} is missing); create it with "
                         "`regionspot extract-tokens` (a run split in parts writes it when the last part ends)")
    try:
        manifest = json.loads(path.read_text())
    except OSError as exc:
        raise CacheError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, RecursionError) as exc:  # truncated or garbled JSON, bytes that are not UTF-8
        raise DamagedManifestError(path, str(exc)) from None
    if isinstance(manifest, dict) and manifest.get("format") not in (None, STORE_FORMAT):
        raise CacheError(f"{path} is not a regionspot cache manifest (format {manifest['format']!r}, expected "
                         f"{STORE_FORMAT!r}); choose another folder")
    if isinstance(manifest, dict) and manifest.get("format") and manifest.get("version") != STORE_VERSION:
        raise CacheError(f"{path}: store version {manifest.get('version')!r}, this regionspot reads {STORE_VERSION}; "
                         "choose another folder, or delete it to start over")
    try:
        if manifest.get("format") != STORE_FORMAT or not isinstance(manifest.get("shards"), dict):
            raise ValueError("no format or no shards")
        int(manifest["num_shards"]), int(manifest["shard_size"]), dict(manifest["meta"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DamagedManifestError(path, f"{type(exc).__name__}: {exc}") from None
    return manifest


def write_manifest(folder: Path, manifest: Mapping[str, Any], name: str = MANIFEST) -> None:
    """Write ``folder``'s manifest ``name`` atomically, shards in index order (the same cache gives
    the same bytes whatever order its shards were finished in); CacheError naming it when that fails."""
    document = {**manifest, "shards": dict(sorted(manifest["shards"].items(), key=lambda item: int(item[0])))}
    with reported_writes(folder, folder / name):
        atomic_write_bytes(folder / name, (json.dumps(document, indent=1) + "\n").encode())


@contextmanager
def reported_writes(folder: Path, target: Path | None = None, kept: int | None = None) -> Iterator[None]:
    """OSError while writing ``target`` (default: ``folder``) in cache ``folder`` -> one
    CacheError naming the file (see :func:`~regionspot.fileio.write_failure`), why, and
    that the finished shards (``kept`` of them, when known) are kept."""
    try:
        yield
    except OSError as exc:
        what = "finished shards" if kept is None else f"the {kept} finished shard(s)"
        raise CacheError(f"{write_failure(target or folder, exc)}; {what} in {folder} are kept: run the same "
                         "command again to resume") from None


class ShardWriter:
    """Fills the shards of one cache folder; see :func:`open_for_writing`. ``settings_digest``:
    the :func:`meta_digest` written into every shard (so a lost manifest can be rebuilt)."""

    def __init__(self, folder: Path, manifest: dict[str, Any], settings_digest: str | None = None,
                 manifest_name: str = MANIFEST, owned: Callable[[int], bool] | None = None) -> None:
        self.folder = folder
        self.manifest = manifest
        self.settings_digest = settings_digest or meta_digest(manifest["meta"])
        self.manifest_name = manifest_name  # a part's own manifest when the work is split (cache/parts.py)
        self.owned = owned or (lambda index: True)  # the shards this writer fills

    @property
    def num_shards(self) -> int:
        return int(self.manifest["num_shards"])

    def finished(self) -> set[int]:
        """Indices of the shards recorded in the manifest (checked by :func:`open_for_writing`)."""
        return {int(key) for key in self.manifest["shards"]}

    def write(self, index: int, tensors: Mapping[str, torch.Tensor], image_ids: Sequence[int]) -> None:
        """Store shard ``index`` (atomically), then record it in the manifest (atomically). A
        full disk or an unwritable folder raises CacheError; the shards finished before stay."""
        if not 0 <= index < self.num_shards:
            raise IndexError(f"shard {index} out of range 0..{self.num_shards - 1}")
        cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        metadata = shard_metadata(index, self.manifest, self.settings_digest, image_ids, cpu)
        data = save_safetensors(cpu, metadata=metadata)
        name = shard_file_name(index)
        kept = len(self.manifest["shards"])
        with reported_writes(self.folder, self.folder / name, kept):
            atomic_write_bytes(self.folder / name, data)
        self.manifest["shards"][str(index)] = {"file": name, "sha256": sha256_bytes(data), "bytes": len(data),
                                               "image_ids": [int(i) for i in image_ids]}
        write_manifest(self.folder, self.manifest, self.manifest_name)


def open_for_writing(folder: Path, meta: Mapping[str, Any], *, num_shards: int, shard_size: int,
                     ignore: Sequence[str] = (), manifest_name: str = MANIFEST,
                     owned: Callable[[int], bool] | None = None) -> ShardWriter:
    """Start or resume filling ``folder``.

    A new (or empty) folder gets a fresh manifest; a non-empty folder without one is refused. A
    folder with a manifest must have been made with the same ``meta`` (dotted keys in ``ignore``
    excepted, e.g. informational paths), ``num_shards`` and ``shard_size``, else CacheError (never
    overwrite another cache). Finished shards whose file is missing or whose sha256 no longer
    matches are dropped from the manifest (they will be recomputed); orphan temporary files of a
    killed run are removed. A manifest that does not parse (or is missing beside shard files) is
    rebuilt from the shards that prove intact and made with these settings, with one warning line on
    stderr. Writing problems (full disk, read-only folder) raise CacheError naming the file and why.
    ``manifest_name`` / ``owned``: a part of a split run keeps its own manifest and fills, and
    cleans up after, only the shards it owns (:mod:`regionspot.cache.parts`).
    """
    wanted = {"format": STORE_FORMAT, "version": STORE_VERSION, "meta": json_normal(dict(meta)),
              "shard_size": shard_size, "num_shards": num_shards, "shards": {}}
    digest = meta_digest(meta, ignore)
    with reported_writes(folder):
        folder.mkdir(parents=True, exist_ok=True)
        manifest = _existing_manifest(folder, wanted, digest, manifest_name)
        if manifest is None:
            write_manifest(folder, wanted, manifest_name)
            return ShardWriter(folder, wanted, digest, manifest_name, owned)
        _check_same_settings(folder, manifest, wanted, ignore)
        owns = owned or (lambda index: True)
        remove_stale_temporaries(folder, [shard_file_name(i) for i in range(num_shards) if owns(i)] + [manifest_name])
        damaged = [key for key, entry in manifest["shards"].items()
                   if not (folder / entry["file"]).is_file()
                   or sha256_bytes((folder / entry["file"]).read_bytes()) != entry["sha256"]]
        if damaged:
            for key in damaged:
                del manifest["shards"][key]
            write_manifest(folder, manifest, manifest_name)
    return ShardWriter(folder, manifest, digest, manifest_name, owned)


def _existing_manifest(folder: Path, wanted: dict[str, Any], digest: str,
                       name: str = MANIFEST) -> dict[str, Any] | None:
    """The manifest ``name`` of ``folder``: read, or rebuilt from its shards when damaged or missing
    beside shard files; None for an empty folder; CacheError for a folder holding something else."""
    if not (folder / name).exists():
        strangers = sorted(p.name for p in folder.iterdir()
                           if not p.name.startswith(".") and not MANIFEST_PATTERN.match(p.name))  # parts' own
        if strangers and all(SHARD_PATTERN.match(shard) for shard in strangers):
            return _rebuild_manifest(folder, wanted, digest, f"{name} is missing", name)
        if strangers:
            listed = ", ".join(strangers[:3]) + (", ..." if len(strangers) > 3 else "")
            raise CacheError(f"{folder} is not empty ({listed})"
                             f" but holds no cache ({MANIFEST} is missing); give a new or empty folder")
        return None
    try:
        return read_manifest(folder, name)
    except DamagedManifestError as exc:
        return _rebuild_manifest(folder, wanted, digest, exc.reason, name)


def _rebuild_manifest(folder: Path, wanted: dict[str, Any], digest: str, reason: str,
                      name: str = MANIFEST) -> dict[str, Any]:
    """A new manifest listing the shards of ``folder`` that verify (see
    :func:`~regionspot.cache.integrity.recover_shards`), written, with one warning line."""
    found = recover_shards(folder, wanted, digest)
    if found.foreign:
        raise CacheError(f"{folder / name} is unusable ({reason}) and {folder} holds shards made with other "
                         f"settings or another shard size ({', '.join(found.foreign[:3])}); choose another output "
                         f"folder, or delete {folder} to start over")
    manifest = {**wanted, "shards": found.entries}
    write_manifest(folder, manifest, name)
    unverified = (f"; {len(found.unverified)} shard file(s) that could not be verified will be recomputed"
                  if found.unverified else "")
    print(f"warning: {folder / name} was unusable ({' '.join(reason.split())[:200]}); rebuilt it from the "
          f"shards: {len(found.entries)} of {wanted['num_shards']} shards recovered, "
          f"{wanted['num_shards'] - len(found.entries)} to compute{unverified}", file=sys.stderr)
    return manifest


def _check_same_settings(folder: Path, manifest: Mapping[str, Any], wanted: Mapping[str, Any],
                         ignore: Sequence[str]) -> None:
    """CacheError listing every setting in which ``folder``'s cache differs from ``wanted``."""
    differences = meta_differences(manifest["meta"], wanted["meta"], ignore)
    for key in ("num_shards", "shard_size"):
        if int(manifest[key]) != wanted[key]:
            differences.append(f"{key}: cache has {manifest[key]}, now {wanted[key]}")
    if differences:
        raise CacheError(f"{folder} already holds a cache made with other settings:\n  "
                         + "\n  ".join(differences)
                         + f"\nchoose another output folder, or delete {folder} to start over")


class ShardReader:
    """Read access to a cache folder: image id -> shard, shards loaded on demand, verified the
    first time they are opened, the ``max_open`` most recently used kept in memory."""

    def __init__(self, folder: str | Path, *, max_open: int = 8, manifest_name: str = MANIFEST) -> None:
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder, manifest_name)
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
