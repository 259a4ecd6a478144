"""Text banks: the real CLIP text embeddings in ../shared/data/text-banks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from regionspot.backbones.protocols import TextEmbedder
from regionspot.backbones.text_bank import TextBankEmbedder, UnknownCategoryError, find_names_file


@pytest.fixture(scope="module")
def banks(shared_data: Path) -> Path:
    return shared_data / "text-banks"


@pytest.fixture(scope="module")
def coco(banks: Path) -> TextBankEmbedder:
    return TextBankEmbedder(banks / "coco_clip-vit-b32_a-name.npy")


@pytest.fixture(scope="module")
def lvis(banks: Path) -> TextBankEmbedder:
    return TextBankEmbedder(banks / "lvis_v1_clip-vit-b32_a-name.npy")


def test_coco_bank_rows_and_names(coco: TextBankEmbedder, banks: Path) -> None:
    assert isinstance(coco, TextEmbedder)
    assert coco.names_path == banks / "coco_names.json"
    assert len(coco.names) == 80 and coco.embed_dim == 512
    rows = coco.encode_text(["person", "zebra", "toothbrush"])
    assert rows.shape == (3, 512) and rows.dtype == torch.float32
    torch.testing.assert_close(rows.norm(dim=-1), torch.ones(3))
    raw = np.load(banks / "coco_clip-vit-b32_a-name.npy").astype(np.float32)
    assert np.linalg.norm(raw[0]) > 2  # the file is not normalised; the embedder normalises
    torch.testing.assert_close(rows[0], torch.from_numpy(raw[0] / np.linalg.norm(raw[0])))
    torch.testing.assert_close(coco.encode_text(coco.names), coco.rows)
    info = coco.describe()
    assert info["rows"] == 80 and info["embed_dim"] == 512 and len(str(info["sha256"])) == 64


def test_cleaned_name_match(coco: TextBankEmbedder, lvis: TextBankEmbedder) -> None:
    torch.testing.assert_close(coco.encode_text(["Traffic_Light"]), coco.encode_text(["traffic light"]))
    torch.testing.assert_close(lvis.encode_text(["aerosol can"]), lvis.encode_text(["aerosol_can"]))
    torch.testing.assert_close(lvis.encode_text(["bow (weapon)"]), lvis.encode_text(["bow_(weapon)"]))
    assert not torch.allclose(lvis.encode_text(["bow (weapon)"]), lvis.encode_text(["bow_(decorative_ribbons)"]))


def test_unknown_names_raise_a_clear_error(coco: TextBankEmbedder) -> None:
    with pytest.raises(UnknownCategoryError, match=r"1 name\(s\) not in text bank .*'unicorn'"):
        coco.encode_text(["person", "unicorn"])
    many = [f"thing{i}" for i in range(15)]
    with pytest.raises(KeyError) as info:
        coco.encode_text(many)
    message = str(info.value)
    assert "15 name(s)" in message and "'thing9'" in message and "'thing10'" not in message and "..." in message


def test_identical_names_give_identical_rows_across_banks(coco: TextBankEmbedder, lvis: TextBankEmbedder) -> None:
    shared = sorted(set(coco.names) & set(lvis.names))
    assert len(shared) == 51
    a, b = coco.encode_text(shared), lvis.encode_text(shared)
    # Identical up to float16 rounding of the stored matrices, not bit for bit.
    assert (a * b).sum(dim=-1).min() > 0.99999
    torch.testing.assert_close(a, b, rtol=0, atol=1e-3)
    # ...whereas different names are far apart, so the check above can fail.
    cat_dog = (coco.encode_text(["cat"]) @ lvis.encode_text(["dog"]).T).item()
    assert cat_dog < 0.99


def test_names_file_lookup_and_mismatch(banks: Path, tmp_path: Path) -> None:
    assert find_names_file(banks / "lvis_v1_clip-vit-b32_a-name.npy") == banks / "lvis_v1_names.json"
    assert find_names_file(banks / "objects365_clip-vit-b32_a-name.npy") == banks / "objects365_names.json"
    shutil.copy(banks / "coco_clip-vit-b32_a-name.npy", tmp_path / "mine.npy")
    with pytest.raises(FileNotFoundError, match=r"mine_names\.json"):
        TextBankEmbedder(tmp_path / "mine.npy")
    names = json.loads((banks / "coco_names.json").read_text())
    (tmp_path / "mine_names.json").write_text(json.dumps(names))
    assert TextBankEmbedder(tmp_path / "mine.npy").encode_text(["dog"]).shape == (1, 512)
    (tmp_path / "short.json").write_text(json.dumps(names[:-1]))
    with pytest.raises(ValueError, match="80 rows but"):
        TextBankEmbedder(tmp_path / "mine.npy", names_path=tmp_path / "short.json")
    with pytest.raises(FileNotFoundError):
        TextBankEmbedder(tmp_path / "missing.npy")
