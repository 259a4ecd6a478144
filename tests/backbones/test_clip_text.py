"""CLIP text embedder: template averaging, unit rows, on-disk cache keyed by weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, CLIPModel

from regionspot.backbones.clip_text import (
    ClipTextEmbedder,
    default_text_cache_dir,
    save_tiny_clip,
)
from regionspot.backbones.protocols import TextEmbedder
from regionspot.backbones.templates import ENSEMBLE, OFFICIAL, SINGLE
from regionspot.backbones.text import build_text_embedder
from regionspot.backbones.text_bank import TextBankEmbedder
from regionspot.backbones.text_cache import TextEmbeddingDiskCache
from regionspot.config import TextConfig


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("tiny_clip_text"), seed=0)


def _counting(embedder: ClipTextEmbedder) -> dict[str, int]:
    counts = {"calls": 0, "prompts": 0}

    def hook(module: torch.nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        counts["calls"] += 1
        counts["prompts"] += int(kwargs["input_ids"].shape[0])

    embedder.text_model.register_forward_hook(hook, with_kwargs=True)
    return counts


def _reference_embedding(folder: Path, prompts: list[str]) -> torch.Tensor:
    """Normalised mean of normalised prompt embeddings, straight from transformers."""
    model = CLIPModel.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokens = tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        features = model.get_text_features(**tokens).pooler_output
    mean = torch.nn.functional.normalize(features, dim=-1).mean(dim=0)
    return torch.nn.functional.normalize(mean, dim=-1)


def test_rows_are_unit_and_match_transformers(tiny_folder: Path, tmp_path: Path) -> None:
    embedder = ClipTextEmbedder.from_pretrained(str(tiny_folder), templates="ensemble", cache_dir=tmp_path)
    assert isinstance(embedder, TextEmbedder) and embedder.embed_dim == 16
    rows = embedder.encode_text(["traffic_light", "dog"])
    assert rows.shape == (2, 16) and rows.dtype == torch.float32
    torch.testing.assert_close(rows.norm(dim=-1), torch.ones(2))
    expected = _reference_embedding(tiny_folder, [t.format("traffic light") for t in ENSEMBLE])
    torch.testing.assert_close(rows[0], expected, rtol=1e-4, atol=1e-5)
    single = ClipTextEmbedder.from_pretrained(str(tiny_folder), templates="single", cache_dir=tmp_path)
    torch.testing.assert_close(single.encode_text(["dog"])[0],
                               _reference_embedding(tiny_folder, [SINGLE[0].format("dog")]), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(single.encode_text(["dog"]), rows[1:], atol=1e-3)


def test_batching_does_not_change_rows(tiny_folder: Path, tmp_path: Path) -> None:
    big = ClipTextEmbedder.from_pretrained(str(tiny_folder), cache_dir=tmp_path / "a")
    small = ClipTextEmbedder.from_pretrained(str(tiny_folder), cache_dir=tmp_path / "b", batch_size=7)
    counts = _counting(small)
    names = ["cat", "hot dog", "bow_(weapon)"]
    torch.testing.assert_close(small.encode_text(names), big.encode_text(names), rtol=1e-4, atol=1e-5)
    assert counts["calls"] == 3 * -(-81 // 7)  # names go a few at a time (here one) so memory stays bounded


def test_cache_hits_skip_the_model_and_survive_new_instances(tiny_folder: Path, tmp_path: Path) -> None:
    first = ClipTextEmbedder.from_pretrained(str(tiny_folder), cache_dir=tmp_path)
    counts = _counting(first)
    rows = first.encode_text(["cat", "dog"])
    assert counts["prompts"] == 2 * 81
    again = first.encode_text(["cat", "dog"])
    assert counts["prompts"] == 2 * 81
    torch.testing.assert_close(again, rows)
    again[0] = 0  # callers get a copy
    torch.testing.assert_close(first.encode_text(["cat", "dog"]), rows)
    first.encode_text(["dog", "horse", "cat"])  # only the new name is encoded
    assert counts["prompts"] == 3 * 81

    second = ClipTextEmbedder.from_pretrained(str(tiny_folder), cache_dir=tmp_path)
    counts2 = _counting(second)
    torch.testing.assert_close(second.encode_text(["cat", "dog"]), rows)
    second.encode_text(["traffic light", "traffic_light", "horse"])
    assert counts2["prompts"] == 81  # "traffic light" once; "horse" came from disk
    assert not list(tmp_path.glob("*.tmp")) and len(list(tmp_path.glob("*.safetensors"))) == 1


def test_template_sets_use_separate_cache_files(tiny_folder: Path, tmp_path: Path) -> None:
    ensemble = ClipTextEmbedder.from_pretrained(str(tiny_folder), cache_dir=tmp_path)
    single = ClipTextEmbedder.from_pretrained(str(tiny_folder), templates="single", cache_dir=tmp_path)
    assert ensemble.cache_path != single.cache_path
    ensemble.encode_text(["cat"])
    counts = _counting(single)
    single.encode_text(["cat"])
    assert counts["prompts"] == 1


def test_cache_invalidates_when_weights_change(tiny_folder: Path, tmp_path: Path) -> None:
    original = ClipTextEmbedder.from_pretrained(str(tiny_folder), cache_dir=tmp_path / "cache")
    rows = original.encode_text(["cat"])
    model = CLIPModel.from_pretrained(tiny_folder)
    with torch.no_grad():
        model.text_model.encoder.layers[0].mlp.fc1.bias[0] += 0.5
    changed_folder = tmp_path / "changed"
    model.save_pretrained(changed_folder)
    AutoTokenizer.from_pretrained(tiny_folder).save_pretrained(changed_folder)
    changed = ClipTextEmbedder.from_pretrained(str(changed_folder), cache_dir=tmp_path / "cache")
    assert changed.fingerprint() != original.fingerprint()
    counts = _counting(changed)
    new_rows = changed.encode_text(["cat"])
    assert counts["prompts"] == 81
    assert not torch.allclose(new_rows, rows, atol=1e-6)
    # Same weights under another folder name: same fingerprint, the cache is reused.
    copy_folder = tmp_path / "copy"
    CLIPModel.from_pretrained(tiny_folder).save_pretrained(copy_folder)
    AutoTokenizer.from_pretrained(tiny_folder).save_pretrained(copy_folder)
    assert ClipTextEmbedder.from_pretrained(str(copy_folder)).fingerprint() == original.fingerprint()


def test_unreadable_cache_file_is_recomputed(tiny_folder: Path, tmp_path: Path) -> None:
    embedder = ClipTextEmbedder.from_pretrained(str(tiny_folder), cache_dir=tmp_path)
    embedder.cache_path.parent.mkdir(parents=True, exist_ok=True)
    embedder.cache_path.write_bytes(b"not a safetensors file")
    with pytest.warns(UserWarning, match="unreadable"):
        rows = embedder.encode_text(["cat"])
    assert set(TextEmbeddingDiskCache(embedder.cache_path).load()) == {"cat"}
    torch.testing.assert_close(TextEmbeddingDiskCache(embedder.cache_path).load()["cat"], rows[0])


def test_frozen_and_empty_vocabulary(tiny_folder: Path, tmp_path: Path) -> None:
    embedder = ClipTextEmbedder.from_pretrained(str(tiny_folder), cache_dir=tmp_path)
    embedder.train()
    assert all(not m.training for m in embedder.modules())
    assert all(not p.requires_grad for p in embedder.parameters())
    assert embedder.encode_text([]).shape == (0, 16)
    info = embedder.describe()
    assert info["templates"] == "ensemble" and info["num_templates"] == 81 and info["embed_dim"] == 16


def test_cache_dir_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("REGIONSPOT_CACHE", raising=False)
    assert default_text_cache_dir() == Path.home() / ".cache" / "regionspot" / "text"
    monkeypatch.setenv("REGIONSPOT_CACHE", str(tmp_path / "root"))
    assert default_text_cache_dir() == tmp_path / "root" / "text"
    assert default_text_cache_dir(tmp_path / "explicit") == tmp_path / "explicit"


def test_build_text_embedder(tiny_folder: Path, tmp_path: Path, shared_data: Path) -> None:
    config = TextConfig(templates="single", cache_dir=str(tmp_path))
    embedder = build_text_embedder(config, str(tiny_folder))
    assert isinstance(embedder, ClipTextEmbedder) and len(embedder.templates) == 1
    assert embedder.cache_dir == tmp_path
    bank = shared_data / "text-banks" / "coco_clip-vit-b32_a-name.npy"
    from_bank = build_text_embedder(TextConfig(bank=str(bank)), str(tiny_folder))
    assert isinstance(from_bank, TextBankEmbedder) and from_bank.embed_dim == 512


def _raw_mean_embedding(folder: Path, prompts: list[str]) -> torch.Tensor:
    """The authors' recipe straight from transformers: raw projected prompt embeddings
    averaged, then normalised."""
    model = CLIPModel.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokens = tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        features = model.get_text_features(**tokens).pooler_output
    return torch.nn.functional.normalize(features.mean(dim=0), dim=-1)


def test_official_recipe_averages_raw_embeddings_of_raw_names(tiny_folder: Path, tmp_path: Path) -> None:
    official = ClipTextEmbedder.from_pretrained(str(tiny_folder), templates="official", cache_dir=tmp_path)
    rows = official.encode_text(["aerosol_can", "wall-other-merged"])
    for row, spelled in zip(rows, ["aerosol_can", "wall"], strict=True):
        expected = _raw_mean_embedding(tiny_folder, [t.format(spelled) for t in OFFICIAL])
        torch.testing.assert_close(row, expected, rtol=1e-4, atol=1e-5)
    assert official.describe()["averaging"] == "raw prompt embeddings, then normalised"
    native = ClipTextEmbedder.from_pretrained(str(tiny_folder), templates=list(OFFICIAL), cache_dir=tmp_path)
    assert native.cache_path != official.cache_path  # same templates, another recipe: another cache file
    cosine = float(native.encode_text(["aerosol_can"])[0] @ rows[0])
    assert cosine < 1 - 1e-4  # cleaned name and per-prompt normalisation give another embedding
    with pytest.raises(ValueError, match="empty once its dataset suffixes are dropped"):
        official.encode_text(["-other"])
