"""Fetch MobileSAM into .cache/ (or the path given): python scripts/fetch_mobile_sam.py [OUT.pt]"""

import sys
from pathlib import Path

from regionspot.assets import fetch_mobile_sam

if __name__ == "__main__":
    fetch_mobile_sam(Path(sys.argv[1] if len(sys.argv) > 1 else ".cache/mobile_sam.pt"))
