"""CLIP text tower as the category embedder: the text side of the paper's region-text alignment
(paper Fig. 2a).

A category's embedding: embed every template prompt, L2-normalise each, average, L2-normalise
again. Embeddings are cached on disk, one safetensors file per (model fingerprint, template
set) holding a name -> row table, so a vocabulary is encoded once and later vocabularies reuse
the names they share. The fingerprint hashes the text tower's weights, config and tokenizer,
so changed weights never reuse stale rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoTokenizer,
    CLIPModel,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    PreTrainedTokenizerBase,
)

from regionspot.backbones.clip_vision import TINY_VOCAB_SIZE, check_loading_info, tiny_clip_config
from regionspot.backbones.loading import BackboneLoadError, load_hf_pretrained, load_hf_pretrained_with_info
from regionspot.backbones.protocols import freeze
from regionspot.backbones.templates import build_prompts, official_name, resolve_templates
from regionspot.backbones.text_cache import NameRowTable, TextEmbeddingDiskCache
from regionspot.hub import TEXT_ROLE
from regionspot.ops.memory import release_free_memory
from regionspot.vocab import MAX_NAME_CHARS, VocabularyError, clean_category_name

PROGRESS_MIN_PROMPTS = 512
_IGNORED_CONFIG_KEYS = {"transformers_version", "architectures", "torch_dtype", "dtype", "output_hidden_states",
                        "output_attentions", "return_dict", "use_return_dict"}


def default_text_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``cache_dir`` if given, else ``$REGIONSPOT_CACHE/text``, else ``~/.cache/regionspot/text``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    root = os.environ.get("REGIONSPOT_CACHE")
    return Path(root).expanduser() / "text" if root else Path.home() / ".cache" / "regionspot" / "text"


class ClipTextEmbedder(torch.nn.Module):
    """Frozen CLIP text tower: category names -> ``[N, embed_dim]`` unit rows (float32, CPU).

    ``templates``: ``"single"``, ``"ensemble"`` or an explicit sequence of ``{}`` templates: names
    are cleaned (:func:`~regionspot.vocab.clean_category_name`), each prompt's embedding is
    normalised, and a name's row is their normalised mean. ``"official"``: the authors' recipe
    for their released heads instead: their 81 templates, names as given (only
    ``-other``/``-merged``/``-stuff`` dropped), raw prompt embeddings averaged, then normalised.
    Build it with :meth:`from_pretrained` or :meth:`from_clip_model`.
    """

    def __init__(
        self,
        text_model: CLIPTextModel,
        projection: torch.nn.Linear,
        tokenizer: PreTrainedTokenizerBase,
        *,
        templates: str | Sequence[str] = "ensemble",
        cache_dir: str | os.PathLike[str] | None = None,
        name: str = "<in-memory>",
        batch_size: int = 256,
        lru_size: int = 8,
        memory_names: int = 10_000,
        disk_names: int = 20_000,
    ) -> None:
        super().__init__()
        self.text_model = text_model
        self.projection = projection
        self.tokenizer = tokenizer
        self.templates: tuple[str, ...] = resolve_templates(templates)
        self.template_set = templates if isinstance(templates, str) else "custom"
        self.official = self.template_set == "official"
        self.embed_dim: int = int(projection.out_features)
        self.cache_dir = default_text_cache_dir(cache_dir)
        self.name = name
        self.batch_size = batch_size
        self.lru_size = lru_size
        self._lru: OrderedDict[tuple[str, ...], torch.Tensor] = OrderedDict()
        self._lru_lock = threading.Lock()
        self._encode_lock = threading.Lock()
        self._table = NameRowTable(memory_names)
        self.disk_names = disk_names
        self._fingerprint: str | None = None
        freeze(self)

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs: Any) -> ClipTextEmbedder:
        """Load the text tower and tokenizer from a Hub id or a folder saved from ``CLIPModel``
        or ``CLIPTextModelWithProjection``; ``kwargs`` go to the constructor."""
        text_model, projection = _load_text_tower(name_or_path)
        # AutoTokenizer.from_pretrained returns the concrete tokenizer class, not an AutoTokenizer
        tokenizer = cast(PreTrainedTokenizerBase, load_hf_pretrained(AutoTokenizer, name_or_path, what=TEXT_ROLE))
        return cls(text_model, projection, tokenizer, name=name_or_path, **kwargs)

    @classmethod
    def from_clip_model(
        cls, model: CLIPModel | CLIPTextModelWithProjection, tokenizer: PreTrainedTokenizerBase, **kwargs: Any
    ) -> ClipTextEmbedder:
        """Wrap an in-memory model's text tower (shared, not copied; it becomes frozen)."""
        return cls(model.text_model, model.text_projection, tokenizer, **kwargs)

    @property
    def cache_path(self) -> Path:
        """The disk cache file of this (model, template set)."""
        recipe = ["official", *self.templates] if self.official else self.templates
        templates_hash = hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:12]
        return self.cache_dir / f"clip-text_{self.fingerprint()[:24]}_{templates_hash}.safetensors"

    def fingerprint(self) -> str:
        """sha256 over the text config, the tokenizer and every text-tower tensor's bytes."""
        if self._fingerprint is None:
            self._fingerprint = text_tower_fingerprint(self.text_model, self.projection, self.tokenizer)
        return self._fingerprint

    def encode_prompts(self, prompts: Sequence[str], normalize: bool = True) -> torch.Tensor:
        """``prompts`` (P) -> ``[P, embed_dim]`` float32 CPU, each row L2-normalised unless
        ``normalize`` is False (the raw projected embeddings). No cache."""
        parameter = next(self.text_model.parameters())
        max_length = min(int(self.tokenizer.model_max_length), int(self.text_model.config.max_position_embeddings))
        outputs = []
        for start in range(0, len(prompts), self.batch_size):
            batch = list(prompts[start:start + self.batch_size])
            tokens = self.tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            with torch.no_grad():
                hidden = self.text_model(input_ids=tokens["input_ids"].to(parameter.device),
                                         attention_mask=tokens["attention_mask"].to(parameter.device))
                embedded = self.projection(hidden.pooler_output).float().cpu()
            outputs.append(torch.nn.functional.normalize(embedded, dim=-1) if normalize else embedded)
        if not outputs:
            return torch.zeros(0, self.embed_dim)
        return torch.cat(outputs)

    def encode_text(self, names: Sequence[str]) -> torch.Tensor:
        """``names`` (N) -> ``[N, embed_dim]`` float32 CPU, unit rows: normalised mean of the
        normalised embeddings of every template prompt of the cleaned name.

        Cached in memory (an LRU of whole vocabularies and a bounded LRU of names) and on disk
        (a bounded file of names). Safe to call from several threads; the model runs outside
        any lock. A name longer than ``MAX_NAME_CHARS`` or empty once cleaned raises
        ``VocabularyError``/``ValueError`` before anything is encoded or cached.
        """
        key = tuple(names)
        with self._lru_lock:
            if key in self._lru:
                self._lru.move_to_end(key)
                return self._lru[key].clone()
        for index, name in enumerate(names):
            if len(name) > MAX_NAME_CHARS:
                raise VocabularyError(f"name {index} is {len(name)} characters long; a name may have at most "
                                      f"{MAX_NAME_CHARS}")
        cleaned = [self.prompt_name(name) for name in names]
        table = self._rows_for(cleaned)
        rows = torch.stack([table[name] for name in cleaned]) if cleaned else torch.zeros(0, self.embed_dim)
        with self._lru_lock:
            self._lru[key] = rows
            while len(self._lru) > self.lru_size:
                self._lru.popitem(last=False)
        return rows.clone()

    def _rows_for(self, cleaned: Sequence[str]) -> dict[str, torch.Tensor]:
        """A row for every cleaned name: from memory, then from disk, then from the model (new
        rows are added to both caches)."""
        unique = list(dict.fromkeys(cleaned))
        found = self._table.get_many(unique)
        missing = [name for name in unique if name not in found]
        if not missing:
            return found
        cache = TextEmbeddingDiskCache(self.cache_path, capacity=self.disk_names)
        stored = cache.load()
        from_disk = {name: stored[name] for name in missing if name in stored}
        del stored
        missing = [name for name in missing if name not in from_disk]
        new_rows = self._encode_names(missing) if missing else {}
        self._table.put_many({**from_disk, **new_rows})
        if new_rows:
            try:
                cache.save(new_rows, metadata={"model": self.name, "fingerprint": self.fingerprint(),
                                               "templates": json.dumps(self.templates)}, used=unique)
            except OSError as exc:
                warnings.warn(f"could not write the text-embedding cache {cache.path}: {exc}", stacklevel=3)
        return {**found, **from_disk, **new_rows}

    def _encode_names(self, cleaned: Sequence[str]) -> dict[str, torch.Tensor]:
        """Cleaned names -> {name: ``[D]`` unit row} through the model (template ensemble).

        One vocabulary is encoded at a time (``_encode_lock``), a few names per step, so the
        prompt embeddings held at once stay near ``batch_size`` rows whatever the vocabulary size.
        """
        per_name = len(self.templates)
        names_per_step = max(1, self.batch_size // per_name)
        steps = range(0, len(cleaned), names_per_step)
        rows: dict[str, torch.Tensor] = {}
        # a small job shows no bar, nor does any under TQDM_DISABLE (--no-progress), read now: tqdm
        # itself reads it only when imported
        quiet = len(cleaned) * per_name <= PROGRESS_MIN_PROMPTS or bool(os.environ.get("TQDM_DISABLE"))
        bar = tqdm(steps, desc="CLIP text", unit="step", disable=True) if quiet else \
            tqdm(steps, desc="CLIP text", unit="step")
        with self._encode_lock:
            for start in bar:
                names = cleaned[start:start + names_per_step]
                prompts = [p for name in names for p in build_prompts(name, self.templates, clean=False)]
                embedded = self.encode_prompts(prompts, normalize=not self.official).view(
                    len(names), per_name, self.embed_dim)
                averaged = torch.nn.functional.normalize(embedded.mean(dim=1), dim=-1)
                rows.update((name, averaged[i].clone()) for i, name in enumerate(names))
                release_free_memory()  # tokenizer and activations fragment the heap, step after step
        return rows

    def prompt_name(self, name: str) -> str:
        """``name`` as it goes into the templates (cleaned; official: only suffixes dropped).
        ValueError when nothing is left."""
        if not self.official:
            return clean_category_name(name)
        spelled = official_name(name)
        if not spelled.strip():
            raise ValueError(f"category name {name!r} is empty once its dataset suffixes are dropped")
        return spelled

    def describe(self) -> dict[str, object]:
        """What this embedder is (model, templates, fingerprint, cache file)."""
        return {
            "kind": "clip_text",
            "name": self.name,
            "embed_dim": self.embed_dim,
            "templates": self.template_set,
            "averaging": "raw prompt embeddings, then normalised" if self.official else "normalised prompt embeddings",
            "num_templates": len(self.templates),
            "fingerprint": self.fingerprint(),
            "cache_file": str(self.cache_path),
        }


def text_tower_fingerprint(
    text_model: CLIPTextModel, projection: torch.nn.Linear, tokenizer: PreTrainedTokenizerBase
) -> str:
    """sha256 hex digest of what decides a text embedding: config, tokenizer, tensor bytes."""
    digest = hashlib.sha256()
    config = {k: v for k, v in text_model.config.to_dict().items()
              if not k.startswith("_") and k not in _IGNORED_CONFIG_KEYS}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocab_text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    digest.update(f"{type(tokenizer).__name__}|{tokenizer.model_max_length}|".encode())
    digest.update(vocab_text.encode())
    tensors = [*text_model.state_dict().items(), ("text_projection", projection.weight)]
    for key, tensor in tensors:
        flat = tensor.detach().cpu().contiguous().view(-1)
        digest.update(f"{key}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _load_text_tower(name_or_path: str) -> tuple[CLIPTextModel, torch.nn.Linear]:
    """Text tower and text projection of a CLIP folder/Hub id (refusing incomplete weights)."""
    config = load_hf_pretrained(AutoConfig, name_or_path, what=TEXT_ROLE)
    model_type = getattr(config, "model_type", None)
    if model_type == "clip":
        model, info = load_hf_pretrained_with_info(CLIPModel, name_or_path, what=TEXT_ROLE)
        check_loading_info(name_or_path, info, prefixes=("text_model.", "text_projection."))
        return model.text_model, model.text_projection
    architectures = getattr(config, "architectures", None) or []
    if model_type == "clip_text_model" and "CLIPTextModelWithProjection" in architectures:
        projected, info = load_hf_pretrained_with_info(CLIPTextModelWithProjection, name_or_path, what=TEXT_ROLE)
        check_loading_info(name_or_path, info, prefixes=("",))
        return projected.text_model, projected.text_projection
    raise BackboneLoadError(f"{name_or_path!r} ({model_type!r}) has no CLIP text tower with a projection "
                            "(expected a CLIPModel or CLIPTextModelWithProjection)")


def tiny_clip_tokenizer() -> CLIPTokenizer:
    """A byte-level CLIP tokenizer with a 1024-id vocabulary for tests: 256 bytes, 256 word-final
    bytes, a few merges, ``<|startoftext|>``/``<|endoftext|>`` as the last two ids (as in CLIP)."""
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = sorted(ByteLevel.alphabet())
    vocab = {char: i for i, char in enumerate(alphabet)}
    vocab.update({char + "</w>": len(alphabet) + i for i, char in enumerate(alphabet)})
    merges = [("t", "h"), ("th", "e</w>"), ("o", "f</w>"), ("p", "h"), ("o", "t"), ("ph", "ot"),
              ("phot", "o</w>"), ("i", "n</w>")]
    for left, right in merges:
        vocab[left + right] = len(vocab)
    vocab["<|startoftext|>"] = TINY_VOCAB_SIZE - 2
    vocab["<|endoftext|>"] = TINY_VOCAB_SIZE - 1
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)  # type: ignore[arg-type]  # BPE takes pairs


def save_tiny_clip(folder: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write a random tiny ``CLIPModel`` (``tiny_clip_config``) and its tokenizer to ``folder``,
    loadable like a Hub id by :meth:`ClipTextEmbedder.from_pretrained` and the vision side."""
    folder = Path(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(tiny_clip_config())
    model.save_pretrained(folder)
    tiny_clip_tokenizer().save_pretrained(folder)
    return folder
