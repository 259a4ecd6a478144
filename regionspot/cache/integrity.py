"""What lets a shard vouch for itself, so a lost or damaged manifest costs no recomputation.

Every shard file written by :class:`~regionspot.cache.shards.ShardWriter` carries, in the
safetensors header's ``__metadata__`` (key ``regionspot-shard``, sorted JSON), what the manifest
would say about it: its index, the layout (``shard_size``, ``num_shards``), the image ids, a
digest of the cache's settings (``meta_sha256``, see :func:`meta_digest`) and a digest of its
tensors (``tensors_sha256``). When the manifest is unreadable, :func:`recover_shards` rebuilds
its entries from the shard files that prove intact and made with the same settings; everything
else is recomputed. Shards written before this metadata existed cannot be verified and are
recomputed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors

SHARD_PATTERN = re.compile(r"^shard-(\d{5,})\.safetensors$")
METADATA_KEY = "regionspot-shard"


def update_tensors_digest(digest: Any, tensors: Mapping[str, torch.Tensor]) -> None:
    """Feed ``tensors`` to ``digest`` (a hashlib object) in name order: name, dtype, shape, raw bytes."""
    for name in sorted(tensors):
        tensor = tensors[name].detach()
        digest.update(f"\n{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        flat = tensor.cpu().contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy() if flat.numel() else b"")


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """Hex sha256 of ``tensors`` (see :func:`update_tensors_digest`)."""
    digest = hashlib.sha256()
    update_tensors_digest(digest, tensors)
    return digest.hexdigest()


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


def json_normal(value: Any) -> Any:
    """``value`` after a JSON round trip (tuples become lists, keys strings)."""
    return json.loads(json.dumps(value))


def meta_digest(meta: Mapping[str, Any], ignore: Sequence[str] = ()) -> str:
    """sha256 of a cache's settings, the dotted keys in ``ignore`` (informational) left out: two
    runs whose :func:`~regionspot.cache.shards.meta_differences` is empty have the same digest."""
    flat = {key: value for key, value in flatten(json_normal(dict(meta))).items() if key not in ignore}
    return hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()


def shard_metadata(index: int, layout: Mapping[str, int], meta_sha256: str, image_ids: Sequence[int],
                   tensors: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """The safetensors ``__metadata__`` of shard ``index``: one key holding sorted JSON, so the
    file's bytes do not depend on the order a hash map lists its keys in."""
    record = {"index": index, "shard_size": int(layout["shard_size"]), "num_shards": int(layout["num_shards"]),
              "meta_sha256": meta_sha256, "image_ids": [int(i) for i in image_ids],
              "tensors_sha256": tensors_digest(tensors)}
    return {METADATA_KEY: json.dumps(record, sort_keys=True)}


def shard_record(data: bytes) -> dict[str, Any] | None:
    """What :func:`shard_metadata` wrote into safetensors bytes; None for a file without it (or
    one written before it existed); ValueError when the header cannot be parsed."""
    if len(data) < 8:
        raise ValueError("shorter than a safetensors header")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8:
        raise ValueError("header runs past the end of the file")
    header = json.loads(data[8:8 + size])
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    text = metadata.get(METADATA_KEY) if isinstance(metadata, dict) else None
    record = json.loads(text) if isinstance(text, str) else None
    return record if isinstance(record, dict) else None


@dataclass
class Recovery:
    """What :func:`recover_shards` found: manifest entries of the intact shards (by index, as
    strings), names of files that could not be verified (recomputed), and names of files
    made with other settings or another layout (never to be overwritten)."""

    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    unverified: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)


def recover_shards(folder: Path, layout: Mapping[str, int], meta_sha256: str) -> Recovery:
    """Check every ``shard-*.safetensors`` of ``folder`` against ``layout`` (``shard_size``,
    ``num_shards``) and the settings digest ``meta_sha256``; see :class:`Recovery`."""
    found = Recovery()
    expected = (meta_sha256, int(layout["shard_size"]), int(layout["num_shards"]))
    for path in sorted(folder.iterdir()):
        match = SHARD_PATTERN.match(path.name)
        if match is None or not path.is_file():
            continue
        data = path.read_bytes()
        try:
            record = shard_record(data)
        except ValueError:
            record = None
        if record is None:
            found.unverified.append(path.name)
        elif (record.get("meta_sha256"), record.get("shard_size"), record.get("num_shards")) != expected:
            found.foreign.append(path.name)
        else:
            entry = _verified_entry(path.name, int(match.group(1)), data, record, layout)
            if entry is None:
                found.unverified.append(path.name)
            else:
                found.entries[str(record["index"])] = entry
    return found


def _verified_entry(name: str, index: int, data: bytes, record: Mapping[str, Any],
                    layout: Mapping[str, int]) -> dict[str, Any] | None:
    """The manifest entry of a shard whose index, tensors and image ids check out; else None."""
    if record.get("index") != index or not 0 <= index < int(layout["num_shards"]):
        return None
    try:
        tensors = load_safetensors(data)
        image_ids = [int(i) for i in record["image_ids"]]
    except Exception:  # noqa: BLE001 - any parse failure means the shard cannot be trusted
        return None
    if tensors_digest(tensors) != record.get("tensors_sha256"):
        return None
    return {"file": name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "image_ids": image_ids}
